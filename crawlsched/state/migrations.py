"""The schema, built by numbered migrations: SQLite counts them in ``PRAGMA user_version``,
PostgreSQL records their names in ``crawlsched_migrations`` (crawlsched.state.pgmigrations).

Adding one (numbers are handed out: never take another helper's):
1. append ``("NNN_what", "<SQLite text>")`` to :data:`MIGRATIONS`; its number is its
   place in the list (checked below), since SQLite knows only how many ran;
2. add ``"NNN_what": "<PostgreSQL text>"`` to ``PG_MIGRATIONS`` in pgmigrations.py
   (``BIGINT`` identities, ``DOUBLE PRECISION`` instants; a callable ``fn(conn)`` may stand
   instead of a text; importing it fails while a name lacks its PostgreSQL text);
3. SQL the store's operations run stays portable (crawlsched.state.portable).
A migration one engine does not need is a comment alone there (nothing runs, it counts).
"""

from __future__ import annotations

import sqlite3

from crawlsched.state.metrics import DURATION_BUCKETS, LATENESS_BUCKETS, bucket_case

_MIGRATION_COUNTERS = f"""
        -- What /metrics reports, kept as running totals in the transaction that writes the history
        -- row, so a scrape reads O(jobs) rows (never the history) and retention can delete history
        -- without moving a counter back. Filled once here from the history there is.
        CREATE TABLE job_counters (
            job_id TEXT PRIMARY KEY,
            success INTEGER NOT NULL DEFAULT 0,        -- finished attempts, by outcome
            failed INTEGER NOT NULL DEFAULT 0,
            interrupted INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,        -- fires not run: overlap
            missed INTEGER NOT NULL DEFAULT 0,         -- fires not run: daemon down (fires, not rows)
            last_success REAL,                         -- end of the newest successful attempt
            last_failure REAL,                         -- end of the newest failed or interrupted one
            seq INTEGER NOT NULL DEFAULT 0             -- bumped by every change: a scrape reads only what changed
        );
        CREATE INDEX job_counters_seq ON job_counters(seq);
        CREATE TABLE histograms (
            name TEXT NOT NULL,                        -- attempt_duration, fire_lateness
            le REAL NOT NULL,                          -- the bucket's upper bound (9e999: +Inf)
            n INTEGER NOT NULL,                        -- values in this bucket alone (not cumulative)
            total REAL NOT NULL,                       -- their sum
            PRIMARY KEY (name, le)
        );
        INSERT INTO job_counters(job_id, success, failed, interrupted, skipped, missed, last_success, last_failure)
            SELECT job_id, sum(attempt > 0 AND status = 'success'), sum(attempt > 0 AND status = 'failed'),
                   sum(attempt > 0 AND status = 'interrupted'), sum(attempt = 0 AND status = 'skipped'),
                   sum(CASE WHEN attempt = 0 AND status = 'missed' THEN coalesce(missed_count, 1) ELSE 0 END),
                   max(CASE WHEN attempt > 0 AND status = 'success' THEN finished_at END),
                   max(CASE WHEN attempt > 0 AND status IN ('failed', 'interrupted') THEN finished_at END)
            FROM runs GROUP BY job_id;
        UPDATE job_counters SET seq = rowid;
        INSERT INTO histograms(name, le, n, total)
            SELECT 'attempt_duration', {bucket_case("d", DURATION_BUCKETS)} AS b, count(*), sum(d)
            FROM (SELECT max(finished_at - started_at, 0) AS d FROM runs
                  WHERE attempt > 0 AND status IN ('success', 'failed', 'interrupted')
                  AND started_at IS NOT NULL AND finished_at IS NOT NULL) GROUP BY b;
        INSERT INTO histograms(name, le, n, total)
            SELECT 'fire_lateness', {bucket_case("l", LATENESS_BUCKETS)} AS b, count(*), sum(l)
            FROM (SELECT max(started_at - scheduled_for, 0) AS l FROM runs
                  WHERE attempt = 1 AND trigger = 'schedule' AND status IN ('success', 'failed', 'interrupted')
                  AND started_at IS NOT NULL) GROUP BY b;
        """

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_initial",
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            scheduled_for REAL NOT NULL,
            attempt INTEGER NOT NULL,          -- 0 for skipped and missed fires
            max_attempts INTEGER NOT NULL,
            trigger TEXT NOT NULL DEFAULT 'schedule',  -- schedule, catch_up, manual, run
            status TEXT NOT NULL,
            started_at REAL,
            finished_at REAL,
            message TEXT,
            http_status INTEGER,
            exit_code INTEGER,
            bytes INTEGER,
            output TEXT,
            owner_pid INTEGER,
            missed_count INTEGER,
            first_missed REAL,
            last_missed REAL
        );
        -- Nothing runs twice for the same (job, scheduled time, attempt).
        CREATE UNIQUE INDEX runs_once ON runs(job_id, scheduled_for, attempt) WHERE attempt > 0;
        CREATE INDEX runs_by_job ON runs(job_id, id);
        CREATE INDEX runs_running ON runs(status) WHERE status = 'running';

        CREATE TABLE retries (
            job_id TEXT PRIMARY KEY,
            scheduled_for REAL NOT NULL,
            next_attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            due_at REAL NOT NULL,
            trigger TEXT NOT NULL DEFAULT 'schedule'
        );

        -- Every id ever seen (ids are never reused) and what the loop needs per job.
        CREATE TABLE jobs_seen (
            job_id TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,         -- by anyone (the CLI's add, or the daemon)
            daemon_seen REAL,                  -- by the daemon: nothing before it counts as missed
            anchor REAL,                       -- an `every` job's first fire
            last_fire REAL,                    -- newest scheduled time handled (run, skipped or missed)
            last_attempt_id INTEGER            -- newest attempt row, for list and show
        );

        CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER,
            host TEXT,
            version TEXT,
            started_at REAL,
            ready_at REAL,
            heartbeat REAL,
            stopped_at REAL,
            config_ok INTEGER,
            config_error TEXT,
            next_job TEXT,
            next_due REAL,
            http TEXT
        );

        CREATE TABLE requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            requested_at REAL NOT NULL,
            taken_at REAL,
            source TEXT
        );
        """,
    ),
    (
        "002_handled_until",
        """
        -- Every fire due before this instant has a row (or a saved retry): catch-up starts here.
        ALTER TABLE daemon ADD COLUMN handled_until REAL;
        """,
    ),
    (
        "003_process_identity",
        """
        -- A pid is reused (after a reboot, on a busy machine): who owns a running row, and
        -- which process group its command runs in, are known by '<boot id>/<start ticks>'.
        ALTER TABLE runs ADD COLUMN owner_ident TEXT;
        ALTER TABLE runs ADD COLUMN child_pgid INTEGER;
        ALTER TABLE runs ADD COLUMN child_ident TEXT;
        """,
    ),
    ("004_metrics_counters", _MIGRATION_COUNTERS),
    # Migrations apply in list order (PRAGMA user_version counts them): a new one is appended,
    # numbered by its place in this list.
    (
        "005_chain_claims",
        """
        -- Who runs a job's chain now (a job never overlaps itself, across processes): the
        -- daemon from a chain's first attempt until it ends (its retry waits included), or a
        -- `crawlsched run` for its whole chain. A claim whose owner is dead is stale.
        CREATE TABLE chain_claims (
            job_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,               -- 'daemon' or 'run'
            owner_pid INTEGER NOT NULL,
            owner_ident TEXT,                  -- crawlsched.procs.identity of the owner
            claimed_at REAL NOT NULL
        );
        """,
    ),
    (
        "006_leases",
        """
        -- Ownership is a lease with a fencing epoch (crawlsched.state.records): a chain's claim
        -- and a running attempt name their owner (its id and host) and when the lease ends; a
        -- claim's row stays when it is released (``lease_until`` NULL), so its epoch only grows;
        -- an attempt keeps the epoch it was started under, and a write with an older epoch than
        -- the job's claim is refused.
        ALTER TABLE chain_claims ADD COLUMN owner_id TEXT;
        ALTER TABLE chain_claims ADD COLUMN owner_host TEXT;
        ALTER TABLE chain_claims ADD COLUMN lease_until REAL;
        ALTER TABLE chain_claims ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
        UPDATE chain_claims SET lease_until = claimed_at + 90;
        ALTER TABLE runs ADD COLUMN owner_id TEXT;
        ALTER TABLE runs ADD COLUMN owner_host TEXT;
        ALTER TABLE runs ADD COLUMN lease_until REAL;
        ALTER TABLE runs ADD COLUMN epoch INTEGER;
        """,
    ),
    ("007_postgresql", "-- The PostgreSQL store joins (pgmigrations.py): nothing changes in SQLite."),
    (
        "008_workers",
        """
        -- executor = "workers" (crawlsched.workers, PostgreSQL only; harmless and unused in SQLite).
        -- An attempt handed to the queue: its row says which queue job carries it and, once a
        -- worker took it over, that worker's home (where its bodies and run logs are).
        ALTER TABLE runs ADD COLUMN queue_job INTEGER;
        ALTER TABLE runs ADD COLUMN run_home TEXT;
        -- The workers alive (``crawlsched worker``): one row each, its heartbeat renewed with its leases.
        CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat REAL NOT NULL,
            concurrency INTEGER NOT NULL,
            home TEXT
        );
        -- Queued attempts whose row was closed (by their worker, or settled after its lease
        -- lapsed), written in the closing transaction (a trigger in PostgreSQL, with a NOTIFY);
        -- the leading daemon drains them as the executor's outcomes.
        CREATE TABLE attempt_outcomes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL
        );
        """,
    ),
    ("009_daemons", """
        -- Many daemons on one state (SPEC §10): each daemon's row, and the one leader lease.
        -- The leader fires; the others stand by. ``epoch`` only grows: each new leader takes
        -- the next one, and a fire written with an older epoch is refused (fencing).
        CREATE TABLE daemons (
            id TEXT PRIMARY KEY,               -- the daemon's owner id (crawlsched.state.records.Owner.id)
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat REAL NOT NULL,
            role TEXT NOT NULL,                -- 'leader' or 'standby'
            jobs_digest TEXT,                  -- sha256 of the job file it applied
            home TEXT,
            stopped_at REAL
        );
        CREATE TABLE leader (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            owner TEXT,                        -- the leading daemon's id
            lease_until REAL,                  -- by the database's clock; NULL: resigned
            epoch INTEGER NOT NULL
        );
        """),
]
_misnumbered = [name for n, (name, _) in enumerate(MIGRATIONS, 1) if not name.startswith(f"{n:03d}_")]
assert not _misnumbered, f"a migration's number is its place in MIGRATIONS: {_misnumbered}"


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this file lacks, all in one immediate transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, len(MIGRATIONS)):
            for statement in statements(MIGRATIONS[number][1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def statements(script: str) -> list[str]:
    """A migration's statements, one by one (its comments dropped)."""
    out, buf = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0]
        buf.append(stripped)
        if stripped.rstrip().endswith(";"):
            statement = "\n".join(buf).strip()
            if statement.strip(";").strip():
                out.append(statement)
            buf = []
    return out
