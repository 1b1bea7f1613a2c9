"""The seed's web page and JSON API, served by the daemon (``daemon --http``, SPEC §8).

A sibling of ``crawlsched.cli``: every write goes through ``JobStore`` (same validation,
lock and atomic write as the CLI), every job and run is shown through
``render``'s serializers, and after a write the daemon is told to reload at
once, so a job added here can be run right away.

Safety (SPEC §8): loopback only unless a token is configured; with a token,
every ``/api`` route and ``/metrics`` needs ``Authorization: Bearer``; without
one, a Host header that is not this server's loopback name is refused (DNS
rebinding). A write whose ``Origin`` (else ``Sec-Fetch-Site``) names another
origin is refused (403), body or no body. A POST with a body must be
``application/json``: a cross-site form can only send other types, and a
cross-site ``fetch`` of JSON needs a CORS preflight, which is never answered.
Wrong tokens are counted per address (429 past ten a minute); a ``${VAR}`` in
a URL or header sent here needs ``allow_http_env``; ``http_targets =
"public"`` keeps crawls off private addresses. The page itself and its assets load
without a token (it asks for the token) and under a strict
Content-Security-Policy.

Imported only by ``run_daemon`` (flask is not loaded for other commands).

The package: ``app`` builds the Flask app and its route table, ``guards``
checks every request, ``api`` handles the endpoints with ``payload`` turning
request bodies into job fields, ``ops`` answers status, health and metrics,
``responses`` makes the replies and ``server`` runs waitress.
"""

from crawlsched.web.app import create_app
from crawlsched.web.guards import MAX_BODY
from crawlsched.web.server import WebServer, check_token, load_token, parse_bind, read_token_file, start_server

__all__ = ["MAX_BODY", "WebServer", "check_token", "create_app", "load_token", "parse_bind", "read_token_file", "start_server"]
