"""The queue: procrastinate's jobs table in the state's own PostgreSQL database.

An attempt's ``running`` row and its queue job commit in one transaction: the daemon calls
procrastinate's SQL function (``procrastinate_defer_jobs_v1``) through the store's write
connection (:func:`defer`), so a job exists exactly when its row does. Workers fetch jobs with
procrastinate (``FOR UPDATE SKIP LOCKED``, LISTEN/NOTIFY wake-ups) and take the row over before
they crawl (crawlsched.state.queue). Migration 008 (crawlsched.state.pgmigrations) adds crawlsched's
worker tables and procrastinate's own schema, under the store's migration lock.
"""

from __future__ import annotations

import json
from typing import Any

QUEUE = "crawlsched"  #: the procrastinate queue every attempt goes to
TASK = "crawlsched_attempt"  #: the task a worker runs: ``crawlsched_attempt(run_id, spec, grace)``
OUTCOMES_CHANNEL = "crawlsched_outcomes"  #: NOTIFY channel: a queued attempt's row was closed

def defer(c: Any, items: list[dict[str, Any]]) -> list[int]:
    """Queue one job per item (the task's keyword arguments) through procrastinate's SQL function,
    in the transaction of ``c`` (a store write connection); their ids, in order."""
    if not items:
        return []
    rows = ", ".join("ROW(?, ?, 0, NULL, NULL, CAST(? AS jsonb), NULL)::procrastinate_job_to_defer_v1" for _ in items)
    params: list[Any] = []
    for item in items:
        params += [QUEUE, TASK, json.dumps(item)]
    found = c.execute(f"SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[{rows}])) AS id", tuple(params)).fetchall()
    return [int(r[0]) for r in found]


def make_app(dsn: str, *, max_size: int = 4) -> Any:
    """procrastinate's App over the state's database, with the ``crawlsched_attempt`` task unset
    (a worker registers its own function: ``app.task(name=TASK, queue=QUEUE)``)."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=max_size))
