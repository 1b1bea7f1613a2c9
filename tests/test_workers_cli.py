"""``crawlsched worker`` refuses to start without a PostgreSQL state (the queue lives in it)."""

from __future__ import annotations

from helpers.process import cli


def test_worker_without_a_postgresql_state_is_refused_with_exit_2(home):
    result = cli(home, "worker", env={"CRAWLSCHED_STATE": ""})
    assert result.returncode == 2
    assert "crawlsched worker needs a PostgreSQL state" in result.stderr
    assert "CRAWLSCHED_STATE" in result.stderr
