"""``http_targets = "public"``: a requests adapter that refuses, once connected, any non-public peer.

The check is on the connected socket (``crawlsched.targets`` says what is public),
so DNS rebinding and redirects to a private address are both caught, before a
byte of the request is sent. Built on first use: ``requests`` and ``urllib3`` are
imported only on the path that fetches.
"""

from __future__ import annotations

from typing import Any

from crawlsched import targets

_PUBLIC_ONLY: list[Any] = []  # the adapter class, built once on first use (requests is imported lazily)


def public_only_adapter() -> Any:
    """A requests adapter whose connections refuse, once connected and before sending, a non-public peer.

    The peer is checked on the socket itself, so what DNS answered at that moment (rebinding)
    and where a redirect led are both covered. Through a proxy the peer is the proxy.
    """
    if not _PUBLIC_ONLY:
        from requests.adapters import HTTPAdapter  # noqa: PLC0415
        from urllib3.connection import HTTPConnection, HTTPSConnection  # noqa: PLC0415
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool  # noqa: PLC0415

        def checked(base: type) -> type:
            class Checked(base):  # type: ignore[misc, valid-type]
                def _new_conn(self) -> Any:
                    sock = super()._new_conn()
                    try:
                        address = str(sock.getpeername()[0])
                    except OSError:
                        address = ""
                    if not targets.is_public(address):
                        sock.close()
                        raise targets.NonPublicAddress(str(self.host), address)
                    return sock

            return Checked

        class Pool(HTTPConnectionPool):
            ConnectionCls = checked(HTTPConnection)

        class TLSPool(HTTPSConnectionPool):
            ConnectionCls = checked(HTTPSConnection)

        pools = {"http": Pool, "https": TLSPool}

        class PublicOnly(HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                super().init_poolmanager(*args, **kwargs)
                self.poolmanager.pool_classes_by_scheme = pools

            def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
                manager = super().proxy_manager_for(proxy, **kwargs)
                manager.pool_classes_by_scheme = pools
                return manager

        _PUBLIC_ONLY.append(PublicOnly)
    return _PUBLIC_ONLY[0]()
