"""The throwaway PostgreSQL cluster the store's contract suite and the cluster tests stand on."""

from __future__ import annotations

import os

import pytest

from helpers.postgres import find_binaries, remove_cluster, start_cluster

pytestmark = pytest.mark.skipif(find_binaries() is None, reason="PostgreSQL's server binaries are not installed "
                                "(Debian: apt-get install postgresql)")


def test_a_cluster_starts_on_a_loopback_port_keeps_data_through_a_fast_restart_and_stops_by_pid():
    cluster = start_cluster()
    try:
        assert cluster.psql("SELECT 1") == "1"
        cluster.psql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        first = cluster.pid()
        cluster.restart()
        assert cluster.pid() != first
        assert cluster.psql("SELECT n FROM kept") == "7"
        assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
        pid = cluster.pid()
    finally:
        remove_cluster(cluster)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not cluster.root.exists()
