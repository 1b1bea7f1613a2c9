"""The workers' registry: one row per running ``crawlsched worker`` (``status --json``'s ``workers``).

Moved out of crawlsched.state.queue, which holds the queued attempts themselves. Portable SQL
(SQLite and PostgreSQL); the heartbeat is the database's clock (``db.lease_now``).
"""

from __future__ import annotations

from typing import Any

from crawlsched.state.records import Owner


def register_worker(store: Any, owner: Owner, *, concurrency: int, home: str, started_at: float) -> None:
    db = store.db
    with db.write() as c:
        now = db.lease_now(c, started_at)
        c.execute("INSERT INTO workers(id, host, pid, started_at, heartbeat, concurrency, home) VALUES (?, ?, ?, ?, ?, ?, ?)"
                  " ON CONFLICT(id) DO UPDATE SET heartbeat = excluded.heartbeat, concurrency = excluded.concurrency,"
                  " home = excluded.home", (owner.id, owner.host, owner.pid or 0, started_at, now, concurrency, home))


def unregister_worker(store: Any, owner: Owner) -> None:
    with store.db.write() as c:
        c.execute("DELETE FROM workers WHERE id = ?", (owner.id,))


def list_workers(store: Any) -> list[dict[str, Any]]:
    """The registry (``status --json``'s ``workers``): id, host, pid, started_at, heartbeat, concurrency, home."""
    return [{k: r[k] for k in ("id", "host", "pid", "started_at", "heartbeat", "concurrency", "home")}
            for r in store.db.read("SELECT * FROM workers ORDER BY started_at")]
