"""The daemons and workers on a state, as ``status`` shows them (SPEC §10). Prints nothing.

``roster(state, now)`` reads the rows and gives ``status --json``'s ``daemons`` and
``workers`` lists (``host``, ``pid``, ``started_at``, ``heartbeat``, for daemons
``role``; times as the rest of ``status`` writes them, plus ``…_iso``). A daemon
whose job file differs from the leader's says so (``job_file_differs``): on a
shared state every daemon should run the same file. ``roster_lines`` is the
people's table of them, at most 80 columns wide.
"""

from __future__ import annotations

from typing import Any, Mapping

from crawlsched import timing
from crawlsched.procs import pid_alive
from crawlsched.state import LEADER, DaemonEntry, WorkerEntry
from crawlsched.state.leases import HOST

__all__ = ["FRESH", "roster", "roster_lines"]

FRESH = 90.0  # seconds: a row whose heartbeat is older is not counted alive (control.DAEMON_FRESH)


def _alive(host: str, pid: int, heartbeat: float | None, now: float) -> bool:
    """A fresh heartbeat, and on this host a live process: one killed with SIGKILL is dead at once,
    not after FRESH (another host's process is judged by its heartbeat alone)."""
    if heartbeat is None or now - heartbeat > FRESH:
        return False
    return host != HOST or pid_alive(pid)


def _times(name: str, at: float | None, local: str) -> dict[str, str | None]:
    instant = timing.from_epoch(at) if at is not None else None
    return {name: timing.format_local(instant, local), name + "_iso": timing.iso_local(instant, local)}


def daemon_dicts(entries: list[DaemonEntry], now: float) -> list[dict[str, Any]]:
    """The daemons not stopped, the leader first; each says whether its job file is the leader's."""
    local = timing.machine_timezone()
    live = [d for d in entries if d.stopped_at is None]
    leader = next((d for d in live if d.role == LEADER), None)
    out = []
    for d in live:
        out.append({
            "id": d.id, "host": d.host, "pid": d.pid, "role": d.role,
            **_times("started_at", d.started_at, local), **_times("heartbeat", d.heartbeat, local),
            "alive": _alive(d.host, d.pid, d.heartbeat, now), "home": d.home, "jobs_digest": d.jobs_digest,
            "job_file_differs": bool(leader is not None and d.jobs_digest and leader.jobs_digest
                                     and d.jobs_digest != leader.jobs_digest),
        })
    return out


def worker_dicts(entries: list[WorkerEntry], now: float) -> list[dict[str, Any]]:
    local = timing.machine_timezone()
    return [{"id": w.id, "host": w.host, "pid": w.pid, **_times("started_at", w.started_at, local),
             **_times("heartbeat", w.heartbeat, local), "alive": _alive(w.host, w.pid, w.heartbeat, now),
             "concurrency": w.concurrency} for w in entries]


def roster(state: Any, now: float) -> dict[str, list[dict[str, Any]]]:
    """``{"daemons": [...], "workers": [...]}`` from the state (empty lists when it cannot say)."""
    return {"daemons": daemon_dicts(state.daemons(), now), "workers": worker_dicts(state.workers(), now)}


def _age(iso: str | None, now: float) -> str:
    from datetime import datetime

    if not iso:
        return "-"
    seconds = max(0, int(now - datetime.fromisoformat(iso).timestamp()))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def roster_lines(status: Mapping[str, Any], now: float) -> list[str]:
    """The daemons (when more than the one leader) and workers, as fixed-width lines of at most 80 columns."""
    lines: list[str] = []
    daemons, workers = status.get("daemons") or [], status.get("workers") or []
    if len(daemons) > 1 or any(d["role"] != LEADER for d in daemons):
        lines.append("daemons:")
        lines.append(f"  {'role':<7} {'host':<14} {'pid':>7} {'started':<16} {'heartbeat':<10} note")
        for d in daemons:
            note = "job file differs" if d["job_file_differs"] else ("" if d["alive"] else "no heartbeat")
            started = (d["started_at"] or "-")[:16]
            lines.append(f"  {d['role']:<7} {_cut(d['host'], 14):<14} {d['pid']:>7} {started:<16} "
                         f"{_age(d['heartbeat_iso'], now):<10} {note}".rstrip())
    if workers:
        lines.append("workers:")
        lines.append(f"  {'host':<25} {'pid':>7} {'started':<16} {'heartbeat':<10} concurrency")
        for w in workers:
            started = (w["started_at"] or "-")[:16]
            concurrency = "" if w["concurrency"] is None else str(w["concurrency"])
            lines.append(f"  {_cut(w['host'], 25):<25} {w['pid']:>7} {started:<16} "
                         f"{_age(w['heartbeat_iso'], now):<10} {concurrency}".rstrip())
    return lines
