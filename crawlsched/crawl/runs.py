"""What a run's files are called, and which runs a job keeps.

A run is one fire of a job, named by its scheduled time in UTC (:func:`run_stamp`,
plus the trigger for run-now and ``crawlsched run``: :func:`run_name`):
its bodies go to ``data/<job>/<run>/`` and each attempt's command log to
``logs/runs/<job>/<run>-a<n>.log``. Names sort by time, so the newest runs are
the last names, and :func:`prune_runs` can keep them without reading a database.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from crawlsched import timing
from crawlsched.model import Trigger
from crawlsched.crawl.bodies import remove_partial_bodies

if TYPE_CHECKING:
    from crawlsched.model import Job

#: Triggers whose time is not a schedule's: their run folder / log name carries the
#: trigger (``20251108T020500_123Z-manual``), so they never share one with a scheduled fire.
UNSCHEDULED_TRIGGERS = (Trigger.MANUAL, Trigger.RUN)
STAMP_RE = re.compile(r"^\d{8}T\d{6}(?:_\d{3})?Z")
#: What follows a run's key in a run-log name: ``-a2.log``, ``-a3-on_failure.log``.
ATTEMPT_SUFFIX_RE = re.compile(r"-a\d+(?:-on_failure)?$")


def run_stamp(scheduled_for: datetime) -> str:
    """A run's folder / log name: ``20251108T020500Z`` (UTC, sorts by time, file-safe).

    A time with a fractional second (a manual fire, ``crawlsched run``) gets its
    milliseconds: ``20251108T020500_123Z``. The separator is ``_`` rather than
    ``.`` so that names still sort by time: ``_`` sorts after ``Z``, so the
    whole second ``…020500Z`` comes before ``…020500_123Z``.
    """
    if scheduled_for.tzinfo is None or scheduled_for.utcoffset() is None:
        raise ValueError(f"scheduled_for: {scheduled_for.isoformat()} has no time zone (an aware datetime is needed)")
    utc = scheduled_for.astimezone(timezone.utc)
    if utc.microsecond:
        return utc.strftime("%Y%m%dT%H%M%S") + f"_{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y%m%dT%H%M%SZ")


def run_name(scheduled_for: float, trigger: str = Trigger.SCHEDULE) -> str:
    """The one place a run's name is built: its stamp, plus the trigger when it is not a schedule's."""
    stamp = run_stamp(timing.from_epoch(scheduled_for))
    return f"{stamp}-{trigger}" if trigger in UNSCHEDULED_TRIGGERS else stamp


def run_dir(home: Path, job: Job, scheduled_for: float, trigger: str = Trigger.SCHEDULE) -> Path:
    """``data/<job>/<run name>``; pass the run's trigger (recovery: ``run.trigger``) to find a manual run's."""
    return home / "data" / job.id / run_name(scheduled_for, trigger)


def run_log(home: Path, job: Job, scheduled_for: float, attempt: int, trigger: str = Trigger.SCHEDULE) -> Path:
    """``logs/runs/<job>/<run name>-a<attempt>.log``: one command attempt's output."""
    return home / "logs" / "runs" / job.id / f"{run_name(scheduled_for, trigger)}-a{attempt}.log"


def end_run(home: Path, job_id: str, scheduled_for: float, trigger: str = Trigger.SCHEDULE) -> None:
    """A run's chain ended (whatever ended it): its half-written bodies go (:func:`remove_partial_bodies`)."""
    remove_partial_bodies(home / "data" / job_id / run_name(scheduled_for, trigger))


def run_key(name: str) -> str:
    """The run an entry of a data or run-log folder belongs to: its name without ``-aN[-on_failure].log``."""
    return ATTEMPT_SUFFIX_RE.sub("", name.removesuffix(".log"))


def prune_runs(job_dir: Path, keep: int) -> int:
    """Delete all but the newest ``keep`` runs (body folders and ``.log`` files) in ``job_dir``.

    Runs are ordered by name, which starts with the run stamp. Only entries
    whose name starts with a run stamp are touched, so nothing else a person
    put there is lost. Every file of one run counts once: a folder, and the
    logs of each attempt and of ``on_failure`` (``<stamp>-a1.log``,
    ``<stamp>-a2.log``, ``<stamp>-a2-on_failure.log``). Returns the number of
    entries deleted.
    """
    if keep < 0:
        raise ValueError(f"keep: {keep} must be 0 or more")
    try:
        entries = [p for p in job_dir.iterdir() if STAMP_RE.match(p.name)]
    except FileNotFoundError:
        return 0
    runs = sorted({run_key(p.name) for p in entries if p.is_dir() or p.name.endswith(".log")})
    doomed = set(runs[: max(len(runs) - keep, 0)])
    deleted = 0
    for entry in entries:
        if run_key(entry.name) not in doomed:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.endswith(".log"):
            entry.unlink(missing_ok=True)
        else:
            continue
        deleted += 1
    return deleted
