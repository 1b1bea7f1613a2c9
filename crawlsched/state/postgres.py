"""``PostgresStore``: the state store in a PostgreSQL database shared by hosts (SPEC §10).

The same operations as ``SqliteStore`` (the same mixins: attempts, chain leases, per-job
records, the daemon's row and requests, history reads, the /metrics totals), over
:class:`~crawlsched.state.pgdatabase.PgDatabase` instead of one file: portable SQL,
write transactions serialized by an advisory lock, leases by the database's clock, and
losing the database held through as storage trouble in the daemon. psycopg is imported
only when this module is (crawlsched.state.open imports it for a PostgreSQL state).
"""

from __future__ import annotations

from crawlsched.state.attempts import AttemptWrites
from crawlsched.state.daemonrow import DaemonRows
from crawlsched.state.daemons import DaemonRegistry
from crawlsched.state.jobs import JobRecords
from crawlsched.state.leases import ChainLeases
from crawlsched.state.metrics import MetricQueries
from crawlsched.state.pgdatabase import PgDatabase, redact_dsn
from crawlsched.state.queries import HistoryQueries
from crawlsched.state.records import DaemonInfo, Owner


class PostgresStore(AttemptWrites, ChainLeases, JobRecords, DaemonRows, DaemonRegistry, HistoryQueries, MetricQueries):
    """The state in one PostgreSQL database (implements ``crawlsched.state.protocol.StateStore``)."""

    path = None  # no file: ``where`` names the database

    def __init__(self, dsn: str, *, pool_timeout: float = 5.0, connect_timeout: float = 5.0, max_size: int = 8) -> None:
        self.db = PgDatabase(dsn, pool_timeout=pool_timeout, connect_timeout=connect_timeout, max_size=max_size)
        self._daemon: DaemonInfo | None = None
        self.daemon_owner: Owner | None = None

    @property
    def where(self) -> str:
        """The database, shown without its password."""
        return redact_dsn(self.db.dsn)

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"

    def open(self, *, recover_corrupt: bool = False) -> PostgresStore:
        """Connect and migrate. In the daemon (``recover_corrupt``) losing the database is storage
        trouble: what must be written is held, in order, until it is back."""
        self.db.open(recover_corrupt=recover_corrupt)
        return self

    def close(self) -> None:
        self.db.close()

    @property
    def held(self) -> int:
        return self.db.held

    @property
    def replaced(self) -> int:
        return 0  # a server's database is never replaced under us

    def flush_held(self) -> bool:
        return self.db.flush_held()

    def clock(self) -> float:
        """The database's clock (epoch seconds), which decides every lease."""
        return self.db.clock()

    @staticmethod
    def unsafe_to_close() -> bool:
        return False
