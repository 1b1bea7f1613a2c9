"""What a run left on disk: a command's logs, a URL job's saved bodies (``crawlsched logs``).

A run is one fire of a job, named by its scheduled time (``20261201T020500Z``,
``…_123Z-manual`` for run-now, ``…-run`` for ``crawlsched run``; see
``crawl.runs.run_name``). Its files are ``logs/runs/<job>/<run>-a<n>.log`` (one per
attempt of a command job) and ``data/<job>/<run>/NN-<host-path>.body`` (a URL
job's bodies). The runs are those the history knows and those on disk (a run
whose history rows were pruned still has its files), newest first by name,
which sorts by time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawlsched.errors import RunNotFound

if TYPE_CHECKING:
    from crawlsched.state import Run, State

TEXT_LIMIT = 1024 * 1024  # bytes of a log put in --json (the whole file stays on disk)
_SNIFF = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"\x1f\x8b", "application/gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"<?xml", "application/xml"),
)


@dataclass(frozen=True)
class OutputFile:
    """One file of a run: a body (``attempt`` None) or an attempt's log."""

    path: Path
    size: int
    attempt: int | None = None
    content_type: str | None = None


@dataclass
class RunOutput:
    job_id: str
    run: str
    status: str | None = None  #: the newest attempt's status, when the history knows the run
    attempts: int = 0
    logs: list[OutputFile] = field(default_factory=list)
    bodies: list[OutputFile] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``logs --json``: the files, and each log's text (up to 1 MiB, ``truncated`` past it)."""
        logs = []
        for f in self.logs:
            text, cut = read_text(f.path)
            logs.append({"attempt": f.attempt, "path": str(f.path), "size": f.size, "text": text, "truncated": cut})
        return {
            "success": True, "job_id": self.job_id, "run": self.run, "status": self.status, "attempts": self.attempts,
            "logs": logs,
            "bodies": [{"path": str(f.path), "size": f.size, "content_type": f.content_type} for f in self.bodies],
        }


def read_text(path: Path, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def sniff(path: Path) -> str | None:
    """The content type a body's first bytes show (HTML, JSON, XML, a few binary formats), else None."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    for magic, kind in _SNIFF:
        if head.startswith(magic):
            return kind
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        return "text/html"
    if text[:1] in (b"{", b"["):
        return "application/json"
    if text and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "text/plain"
    return None


def _disk_runs(home: Path, job_id: str) -> set[str]:
    from crawlsched.crawl.runs import STAMP_RE, run_key

    names: set[str] = set()
    for folder in (home / "data" / job_id, home / "logs" / "runs" / job_id):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not STAMP_RE.match(entry.name):
                continue
            if entry.is_dir():
                names.add(entry.name)
            elif entry.name.endswith(".log") and not entry.name.endswith("-on_failure.log"):
                names.add(run_key(entry.name))
    return names


def _history_runs(state: State | None, job_id: str) -> dict[str, list[Run]]:
    from crawlsched.crawl.runs import run_name

    out: dict[str, list[Run]] = {}
    if state is None:
        return out
    for row in state.runs(job_id, limit=10_000):
        if row.attempt > 0:
            out.setdefault(run_name(row.scheduled_for, row.trigger), []).append(row)
    return out


def run_names(home: Path, state: State | None, job_id: str) -> list[str]:
    """Every run of the job the history or the disk knows, newest first."""
    return sorted(set(_history_runs(state, job_id)) | _disk_runs(home, job_id), reverse=True)


def _run_status(state: State | None, rows: list[Any]) -> str | None:
    """The run's outcome: its newest attempt's status, or ``retrying`` while the retry it saved is
    pending (as crawlsched.fires.Fire says it; that module sits above this one)."""
    if not rows:
        return None
    last = rows[-1]
    if state is not None and last.status != "running":
        if any((r.job_id, r.scheduled_for) == (last.job_id, last.scheduled_for) for r in state.retries()):
            return "retrying"
    return last.status


def run_output(home: Path, state: State | None, job_id: str, run: str | None = None) -> RunOutput:
    """The newest run's files, or those of the run named ``run``; ``RunNotFound`` when there is none."""
    home = Path(home)
    history = _history_runs(state, job_id)
    names = sorted(set(history) | _disk_runs(home, job_id), reverse=True)
    if run is None:
        if not names:
            raise RunNotFound(f"job {job_id} has no runs yet")
        run = names[0]
    elif run not in names:
        newest = ", ".join(names[:3])
        raise RunNotFound(f"job {job_id} has no run {run!r}" + (f"; its newest: {newest}" if newest else "; it has no runs yet"))
    rows = sorted(history.get(run, []), key=lambda r: r.attempt)
    out = RunOutput(job_id, run, status=_run_status(state, rows), attempts=len(rows))
    # A worker (executor = "workers") wrote under its own home, which its rows name: read there
    # too when that path is reachable from here (the same host, or a shared folder).
    homes = [home, *dict.fromkeys(Path(r.run_home) for r in rows if getattr(r, "run_home", None))]
    logs = {}
    for folder in homes:
        for path in (folder / "logs" / "runs" / job_id).glob(f"{run}-a*.log"):
            number = _attempt_of(path, run)
            if number is not None and number not in logs:
                logs[number] = OutputFile(path, path.stat().st_size, attempt=number)
    out.logs = [logs[n] for n in sorted(logs)]
    for folder in homes:
        body_dir = folder / "data" / job_id / run
        if body_dir.is_dir():
            for path in sorted(body_dir.iterdir()):
                if path.is_file() and not path.name.startswith("."):  # .part files are unfinished bodies
                    out.bodies.append(OutputFile(path, path.stat().st_size, content_type=sniff(path)))
            break
    return out


def _attempt_of(path: Path, run: str) -> int | None:
    rest = path.name[len(run):]  # "-a2.log"
    digits = rest.removeprefix("-a").removesuffix(".log")
    return int(digits) if digits.isdigit() else None
