"""The loop's periodic duties (crawlsched.duties): what they log when the state database is in trouble."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from crawlsched.duties import Duties
from crawlsched.state import StorageUnavailable


def _loop(log: logging.Logger) -> SimpleNamespace:
    def lost(*_args, **_kwargs):
        raise StorageUnavailable("postgresql://u@db/x: connection refused")

    return SimpleNamespace(log=log, defaults=object(), retention=SimpleNamespace(sweep=lost),
                           write_heartbeat=lost, take_requests=lost, busy_soon=lambda: False)


def test_duties_log_nothing_of_their_own_while_the_state_database_is_lost(caplog):
    log = logging.getLogger("crawlsched.test-duties")
    duties = Duties(_loop(log))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="crawlsched.test-duties"):
        for _ in range(3):  # three minutes of an outage: the episode's one ERROR line is the state's
            duties.heartbeat()
            duties.requests()
            duties.retention()
    assert [r.getMessage() for r in caplog.records] == []
