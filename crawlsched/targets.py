"""Which addresses a crawl may reach under ``[defaults] http_targets = "public"`` (SSRF).

Two checks use it: the web API resolves the host of a URL it is sent and refuses a private one
(a 422 at once), and the crawler checks the address of every connection it opens, right after
connecting and before a byte of the request is sent. The second is the one that holds: DNS can
answer a public address when a job is added and 127.0.0.1 when it runs (DNS rebinding), and a
public server can redirect to ``http://169.254.169.254/``; each hop is a new connection, checked.
"""

from __future__ import annotations

import ipaddress
import socket

POLICIES = ("any", "public")


class NonPublicAddress(OSError):
    """A connection reached an address that ``http_targets = "public"`` refuses."""

    def __init__(self, host: str, address: str) -> None:
        self.host = host
        self.address = address
        super().__init__(f"{host} is {address}, {describe(address)}; http_targets = \"public\" fetches only "
                         "public addresses")


def is_public(address: str) -> bool:
    """A globally routable unicast address: not private, loopback, link-local (169.254/16, cloud
    metadata), unique-local (fc00::/7), shared (100.64/10), reserved, documentation or multicast;
    an IPv4-mapped IPv6 address is judged as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def describe(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, name in (("is_loopback", "a loopback address"), ("is_link_local", "a link-local address"),
                       ("is_multicast", "a multicast address"), ("is_private", "a private address")):
        if getattr(ip, test):
            return name
    return "not a public address"


def non_public(host: str, port: int) -> str | None:
    """The first address ``host`` resolves to that is not public, or None (also when it does not resolve now)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # unresolvable now: the check at connect time decides when it runs
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            return address
    return None
