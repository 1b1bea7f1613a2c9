"""``executor = "workers"``: the daemon queues attempts in the PostgreSQL state, ``crawlsched worker``s run them.

- :mod:`crawlsched.workers.queue`: the procrastinate queue in the state's database (its schema is
  migration 008), the ``crawlsched_attempt`` task, and the SQL that defers a job inside a store
  transaction;
- :mod:`crawlsched.workers.executor`: :class:`WorkersExecutor`, the daemon's side of
  ``crawlsched.executor.Executor``;
- :mod:`crawlsched.workers.worker`: the ``crawlsched worker`` process, with
  :mod:`~crawlsched.workers.runner` (its fenced crawl), :mod:`~crawlsched.workers.takeover` (grouped
  take-overs, held commands let go at the instant), :mod:`~crawlsched.workers.stopping` (SIGTERM)
  and :mod:`~crawlsched.workers.queuelogs` (procrastinate's log lines);
- :mod:`crawlsched.workers.leases`: a worker's per-attempt leases, renewed every few seconds; a lost
  one stops its command's process group at once.

The store operations (portable SQL) are in :mod:`crawlsched.state.queue`. Nothing here is imported
on the CLI's or the SQLite daemon's path.
"""
