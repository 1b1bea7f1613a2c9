"""The daemons and workers on a state, as ``status`` shows them (crawlsched.roster, SPEC §10)."""

from __future__ import annotations

import os
import time

import pytest

from crawlsched.roster import roster, roster_lines
from crawlsched.state import DaemonEntry, State


@pytest.fixture
def state(tmp_home):
    st = State(tmp_home.db).open()
    yield st
    st.close()


def _daemons(state, now, *digests, host="a-rather-long-host-name.example.internal"):
    for n, digest in enumerate(digests):
        state.register_daemon(DaemonEntry(f"d{n}", host, 4_000_000 + n, now - 3600, now - n, "standby", digest, "/srv/h"))
    state.elect("d0", now)


def test_status_json_lists_the_daemons_with_their_roles_and_the_workers(cli, state):
    now = time.time()
    _daemons(state, now, "aaa", "aaa")
    data = cli("status", "--json").json()
    assert [(d["id"], d["role"], d["pid"]) for d in data["daemons"]] == [("d0", "leader", 4_000_000),
                                                                         ("d1", "standby", 4_000_001)]
    for key in ("host", "pid", "started_at", "heartbeat", "role"):
        assert key in data["daemons"][0]
    assert data["workers"] == []
    assert not any(d["job_file_differs"] for d in data["daemons"])


def test_status_flags_a_daemon_whose_job_file_differs_from_the_leaders(cli, state):
    now = time.time()
    _daemons(state, now, "aaa", "bbb", "aaa")
    data = cli("status", "--json").json()
    assert [d["job_file_differs"] for d in data["daemons"]] == [False, True, False]
    text = cli("status").stdout
    assert text.count("job file differs") == 1
    table = text[text.index("daemons:"):].splitlines()
    assert len(table) == 5 and all(len(line) <= 80 for line in table), table
    assert "leader" in table[2] and "standby" in table[3]


def test_a_lone_leader_adds_no_table_to_status(state):
    now = time.time()
    _daemons(state, now, "aaa")
    assert roster_lines(roster(state, now), now) == []


def test_stopped_daemons_are_not_listed(state):
    now = time.time()
    _daemons(state, now, "aaa", "aaa")
    state.daemon_beat("d1", now, stopped=True)
    assert [d["id"] for d in roster(state, now)["daemons"]] == ["d0"]


def test_a_daemon_or_worker_of_this_host_whose_process_is_gone_is_not_alive_despite_a_fresh_heartbeat():
    import subprocess
    import sys

    from crawlsched.roster import daemon_dicts, worker_dicts
    from crawlsched.state import WorkerEntry
    from crawlsched.state.leases import HOST

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process (SIGKILL leaves the same)
    now = time.time()
    here = [DaemonEntry("dead", HOST, gone.pid, now - 60, now - 1, "standby"),
            DaemonEntry("live", HOST, os.getpid(), now - 60, now - 1, "leader"),
            DaemonEntry("far", "another-host.example", gone.pid, now - 60, now - 1, "standby")]
    assert {d["id"]: d["alive"] for d in daemon_dicts(here, now)} == {"dead": False, "live": True, "far": True}
    workers = [WorkerEntry("w-dead", HOST, gone.pid, now - 60, now - 1), WorkerEntry("w-live", HOST, os.getpid(), now - 60, now - 1)]
    assert [w["alive"] for w in worker_dicts(workers, now)] == [False, True]
