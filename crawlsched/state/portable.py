"""SQL that means the same on SQLite (3.40) and PostgreSQL (15): the few spellings the two differ in.

Every SQL string of the store's operation mixins runs on both (crawlsched.state.database for
SQLite, crawlsched.state.pgdatabase for PostgreSQL, whose connection turns ``?`` into ``%s``).
So the mixins write ``INSERT ... ON CONFLICT ... DO NOTHING/UPDATE`` (not ``INSERT OR
IGNORE/REPLACE``), ``INSERT ... RETURNING id`` (not ``lastrowid``), :func:`greatest` (not
SQLite's scalar ``max(a, b)``, which PostgreSQL lacks), no ``rowid``, ``group_concat`` or
``total``, and no literal ``?`` or ``%`` in SQL text.
"""

from __future__ import annotations

from typing import Any


def greatest(a: str, b: str) -> str:
    """The larger of two SQL expressions (neither NULL): SQLite's ``max(a, b)``, PostgreSQL's
    ``greatest(a, b)``. A ``?`` in ``b`` appears twice: pass its value twice."""
    return f"(CASE WHEN {a} >= {b} THEN {a} ELSE {b} END)"


def one(cursor: Any) -> Any:
    """The first row of a statement's answer (None without one), the statement run to its end
    (an ``INSERT ... RETURNING`` left unfinished would hold SQLite's statement open)."""
    rows = cursor.fetchall()
    return rows[0] if rows else None
