"""Which addresses ``http_targets = "public"`` lets a crawl reach."""

from __future__ import annotations

import pytest

from crawlsched.targets import describe, is_public

NOT_PUBLIC = ["127.0.0.1", "127.8.9.1", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
              "fe80::1", "fe80::1%eth0", "fd00::1", "fc00::1", "100.64.0.1", "0.0.0.0", "::", "192.0.2.1",
              "2001:db8::1", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
              "", "not-an-address"]  # fmt: skip
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_private_loopback_link_local_and_unique_local_addresses_are_not_public(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_public(address):
    assert is_public(address)


@pytest.mark.parametrize(("address", "kind"), [("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
                                               ("10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback")])
def test_describe_names_the_kind_of_address(address, kind):
    assert kind in describe(address)
