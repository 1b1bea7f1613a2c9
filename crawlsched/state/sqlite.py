"""``SqliteStore``: the state store in one SQLite file in the home folder (the default).

The operations live in focused parts, each over this store's :class:`Database`
(crawlsched.state.database: connections, transactions, storage trouble):
attempts (crawlsched.state.attempts), chain leases (leases), per-job records
(jobs), the daemon's row and requests (daemonrow), the daemons and leader lease (daemons), history reads (queries) and
the /metrics totals (metrics). Nothing outside the package sees SQL or a row.
"""

from __future__ import annotations

from pathlib import Path

from crawlsched.state import trouble
from crawlsched.state.attempts import AttemptWrites
from crawlsched.state.daemonrow import DaemonRows
from crawlsched.state.daemons import DaemonRegistry
from crawlsched.state.database import Database
from crawlsched.state.jobs import JobRecords
from crawlsched.state.leases import ChainLeases
from crawlsched.state.metrics import MetricQueries
from crawlsched.state.queries import HistoryQueries
from crawlsched.state.records import DaemonInfo, Owner


class SqliteStore(AttemptWrites, ChainLeases, JobRecords, DaemonRows, DaemonRegistry, HistoryQueries, MetricQueries):
    """The state database of one home folder (implements ``crawlsched.state.protocol.StateStore``)."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0, write_deadline: float = 300.0) -> None:
        self.db = Database(path, busy_timeout=busy_timeout, write_deadline=write_deadline)
        self._daemon: DaemonInfo | None = None  # this process's daemon row, to write it again whole
        self.daemon_owner: Owner | None = None

    @property
    def path(self) -> Path:
        return self.db.path

    def open(self, *, recover_corrupt: bool = False) -> SqliteStore:
        """Open, switch to WAL and migrate. In the daemon (``recover_corrupt``) a corrupt file is moved
        aside and a fresh one started, and storage trouble holds what must be written."""
        self.db.open(recover_corrupt=recover_corrupt)
        return self

    def close(self) -> None:
        self.db.close()

    def move_aside(self) -> Path:
        return trouble.move_aside(self.path)

    @property
    def held(self) -> int:
        """How many writes wait for the storage to come back."""
        return self.db.held

    @property
    def replaced(self) -> int:
        """How many times a corrupt file was replaced under this store."""
        return self.db.replaced

    def flush_held(self) -> bool:
        """Try to write what is held; True when nothing is held any more."""
        return self.db.flush_held()

    @staticmethod
    def unsafe_to_close() -> bool:
        """Connections are set aside on read-only files: the process must exit without closing them."""
        return bool(trouble.SET_ASIDE)


State = SqliteStore  # the name every caller knew
