"""The state: runs, pending retries, chain leases, the daemon's heartbeat (SPEC §4, §6).

``StateStore`` (protocol) is what callers use; ``SqliteStore`` (alias ``State``)
is the SQLite file in the home folder. Records are plain dataclasses (records).
"""

from crawlsched.procs import pid_alive
from crawlsched.state.metrics import COUNTED_OUTCOMES, DURATION_BUCKETS, HISTOGRAMS, LATENESS_BUCKETS, METRIC_COUNTER_COLUMNS
from crawlsched.state.migrations import MIGRATIONS, statements
from crawlsched.state.protocol import StateStore
from crawlsched.state.records import (
    CLAIM_DAEMON, CLAIM_RUN, LEADER, LEADER_TTL, LEASE_SECONDS, RUN_COLUMNS, STANDBY, AttemptId, AttemptKey, Claim,
    DaemonEntry, DaemonInfo, FireMark, JobSeen, JobState, Lease, Leadership, Owner, Retry, Run, RunRequest, Saved, StripRow,
    WorkerEntry,
)
from crawlsched.state.sqlite import SqliteStore, State
from crawlsched.state.trouble import StorageUnavailable, storage_trouble

__all__ = [
    "CLAIM_DAEMON", "CLAIM_RUN", "COUNTED_OUTCOMES", "DURATION_BUCKETS", "HISTOGRAMS", "LATENESS_BUCKETS", "LEADER",
    "LEADER_TTL", "LEASE_SECONDS", "STANDBY", "DaemonEntry", "Leadership", "WorkerEntry",
    "METRIC_COUNTER_COLUMNS", "MIGRATIONS", "RUN_COLUMNS", "AttemptId", "AttemptKey", "Claim", "DaemonInfo", "FireMark",
    "JobSeen", "JobState", "Lease", "Owner", "Retry", "Run", "RunRequest", "Saved", "SqliteStore", "State", "StateStore",
    "StorageUnavailable", "StripRow", "pid_alive", "statements", "storage_trouble",
]
