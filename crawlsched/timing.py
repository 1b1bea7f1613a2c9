"""When jobs fire: pure functions of a job and an instant. Nothing here reads the clock.

All instants going in and out are aware datetimes; UTC inside. Cron math is
done by cronsim in the job's own zone, because only there do "09:05" and
daylight saving mean anything; the result is converted back to UTC at once,
since adding a timedelta to a local time across a DST change goes wrong.

Daylight saving follows cronie (and cronsim): a fixed wall time that does not
exist (spring forward) fires once, right after the jump; one that happens
twice (fall back) fires once; a job whose hour is a wildcard or a step fires
in both passes of the repeated hour. ``every`` jobs run on real elapsed time.
"""

from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from crawlsched.model import Job, ScheduleKind, zone

UTC = timezone.utc
_TINY = timedelta(microseconds=1)


def local_midnight(day: date, job: Job) -> datetime:
    """00:00 of ``day`` in the job's zone, as UTC (a zone may skip midnight: take the first instant after)."""
    return datetime.combine(day, time(0, 0), tzinfo=job.tz).astimezone(UTC)


def window(job: Job) -> tuple[datetime | None, datetime | None]:
    """The half-open span ``[start, end)`` in which the job may fire; ``end_date`` is inclusive."""
    return _window(job.start_date, job.end_date, job.timezone)


@lru_cache(maxsize=4096)
def _window(start_date: date | None, end_date: date | None, tz_name: str) -> tuple[datetime | None, datetime | None]:
    tz = zone(tz_name)
    start = datetime.combine(start_date, time(0, 0), tzinfo=tz).astimezone(UTC) if start_date else None
    end = datetime.combine(end_date + timedelta(days=1), time(0, 0), tzinfo=tz).astimezone(UTC) if end_date else None
    return start, end


def next_fire(job: Job, after: datetime, anchor: datetime | None = None) -> datetime | None:
    """The first fire strictly after ``after``, inside the job's window; None when there is none.

    ``anchor`` is an ``every`` job's first fire (SPEC §3: the later of the
    window's start and the moment the daemon first saw the job). Without one,
    the window's start is used, or ``after`` itself for a job with no start.
    """
    after = after.astimezone(UTC)
    start, end = window(job)
    if job.kind is ScheduleKind.EVERY:
        base = anchor or start or after
        if start and base < start:
            base = start
        fire = _every_after(base, job.every_seconds or 1, after)
    else:
        if start and after < start:
            after = start - _TINY
        fire = _cron_after(job, after)
    if fire is None or (end and fire >= end):
        return None
    return fire


def prev_fire(job: Job, at_or_before: datetime, anchor: datetime | None = None) -> datetime | None:
    """The newest fire at or before ``at_or_before``, inside the window; None when there is none."""
    until = at_or_before.astimezone(UTC)
    start, end = window(job)
    if end and until >= end:
        until = end - _TINY
    if job.kind is ScheduleKind.EVERY:
        base = anchor or start
        if base is None:
            return None
        if start and base < start:
            base = start
        if until < base:
            return None
        step = timedelta(seconds=job.every_seconds or 1)
        fire = base + step * ((until - base) // step)
    else:
        from cronsim import CronSim

        # cronsim's reverse walk yields times strictly before its start; nudge by
        # one second so a fire exactly at ``until`` is found. Fires are whole
        # seconds, so drop ``until``'s fraction first: cronsim drops it too, and
        # 23:59:59.999999 + 1 s would otherwise start the walk at 00:00:00.
        local = (until.replace(microsecond=0) + timedelta(seconds=1)).astimezone(job.tz)
        try:
            walk = CronSim(job.cron or "", local, reverse=True)
            fire = next(walk).astimezone(UTC)
            for _ in range(24 * 60):
                if fire <= until:
                    break
                fire = next(walk).astimezone(UTC)
        except (StopIteration, OverflowError):  # OverflowError: walked back before year 1
            return None
        if fire > until:
            return None
        # From inside a fall-back's second pass the naive reverse walk of a fixed-time
        # job steps over today's first-pass fire (its wall time is later than ours):
        # walk forward to the newest fire that is not after ``until``.
        for _ in range(24 * 60):
            following = _cron_after(job, fire)
            if following is None or following > until:
                break
            fire = following
    if start and fire < start:
        return None
    return fire


def fires_between(job: Job, after: datetime, until: datetime, anchor: datetime | None = None,
                  limit: int = 100_000) -> Iterator[datetime]:
    """Fires in ``(after, until]``, oldest first, at most ``limit`` of them."""
    count = 0
    fire = next_fire(job, after, anchor)
    while fire is not None and fire <= until and count < limit:
        yield fire
        count += 1
        fire = next_fire(job, fire, anchor)


def count_fires(job: Job, after: datetime, until: datetime, anchor: datetime | None = None,
                limit: int = 100_000) -> int:
    """How many fires fall in ``(after, until]``; interval jobs are counted without walking."""
    if job.kind is ScheduleKind.EVERY:
        first = next_fire(job, after, anchor)
        last = prev_fire(job, until, anchor)
        if first is None or last is None or last < first:
            return 0
        return int(round((last - first).total_seconds() / (job.every_seconds or 1))) + 1
    return sum(1 for _ in fires_between(job, after, until, anchor, limit))


def is_finished(job: Job, now: datetime, anchor: datetime | None = None) -> bool:
    """A job is finished when its window has an end and no fire is left in it."""
    if job.end_date is None:
        return False
    return next_fire(job, now, anchor) is None


def first_fire_on_sight(job: Job, now: datetime) -> datetime:
    """An ``every`` job's anchor when the daemon first sees it: later of window start and now, whole seconds."""
    start, _ = window(job)
    base = now.astimezone(UTC)
    if base.microsecond:
        base = base.replace(microsecond=0) + timedelta(seconds=1)
    return max(base, start) if start else base


def _every_after(base: datetime, seconds: float, after: datetime) -> datetime | None:
    if after < base:
        return base
    step = timedelta(seconds=seconds)
    try:
        return base + step * ((after - base) // step + 1)
    except OverflowError:  # past year 9999: there is no next fire
        return None


# Known answers: for (expression, zone), the first fire after any instant in
# [since, fire) is ``fire`` (nothing fires in between). Pure data; a caller may
# save it and load it again (``known_fires`` / ``learn_fires``) so that a
# process started later does not walk cronsim for every schedule again.
_known: dict[tuple[str, str], tuple[float, float]] = {}
_learned = 0


def _cron_after(job: Job, after: datetime) -> datetime | None:
    global _learned
    expr, tz_name = job.cron or "", job.timezone
    ts = after.timestamp()
    known = _known.get((expr, tz_name))
    if known is not None and known[0] <= ts < known[1]:
        return datetime.fromtimestamp(known[1], UTC)
    # Cron fires fall on whole UTC minutes (every zone's offset is whole minutes),
    # so the first fire after any instant of one minute is the same: cache on that.
    minute = int(ts // 60)
    fire = _cron_after_minute(expr, tz_name, minute)
    if fire is not None and fire <= after:  # pragma: no cover - guarded by the reasoning above
        return _cron_walk(expr, tz_name, after)
    if fire is not None:
        since = float(minute * 60)
        if known is None or known[1] != fire.timestamp() or known[0] > since:
            _known[(expr, tz_name)] = (since, fire.timestamp())
            _learned += 1
    return fire


def known_fires() -> tuple[int, dict[tuple[str, str], tuple[float, float]]]:
    """How many answers were learned since the last ``learn_fires``, and all of them."""
    return _learned, dict(_known)


def learn_fires(known: dict[tuple[str, str], tuple[float, float]]) -> None:
    """Load answers saved by ``known_fires`` (from another process); they are exact forever."""
    global _learned
    for key, (since, fire) in known.items():
        if isinstance(key, tuple) and isinstance(since, float) and isinstance(fire, float) and since < fire:
            _known.setdefault(key, (since, fire))
    _learned = 0


@lru_cache(maxsize=16384)
def _cron_after_minute(expr: str, tz_name: str, minute: int) -> datetime | None:
    after = datetime.fromtimestamp(minute * 60, UTC) + timedelta(seconds=59, microseconds=999999)
    return _cron_walk(expr, tz_name, after)


def _cron_walk(expr: str, tz_name: str, after: datetime) -> datetime | None:
    from cronsim import CronSim

    job_tz = zone(tz_name)
    after = after.astimezone(UTC)
    # For a fixed-time job cronsim walks naive wall times and answers with the
    # first pass (fold=0) of a repeated hour. Asked from inside the second pass
    # it would answer with a first-pass instant, which lies *before* ``after``:
    # such answers were already due, so walk on to the first one after it.
    try:
        fires = CronSim(expr, after.astimezone(job_tz))
        for _ in range(24 * 60 + 1):
            fire = next(fires).astimezone(UTC)
            if fire > after:
                return fire
    except (StopIteration, OverflowError):  # OverflowError: the next fire would be past year 9999
        pass
    return None


def today_in(job_tz: str, now: datetime) -> date:
    """The calendar date at ``now`` in a zone."""
    return now.astimezone(zone(job_tz)).date()


def machine_timezone(environ: dict[str, str] | None = None) -> str:
    """The IANA name of this machine's zone: ``$TZ``, ``/etc/timezone``, the ``/etc/localtime`` link, else UTC."""
    env = os.environ if environ is None else environ
    candidates = []
    tz = env.get("TZ", "").lstrip(":")
    if tz:
        candidates.append(tz)
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        try:
            zone(name)
            return name
        except Exception:
            continue
    return "UTC"


def format_local(instant: datetime | None, job_tz: str) -> str | None:
    """``"YYYY-MM-DD HH:MM:SS"`` in the job's zone (the seed's format), or None."""
    if instant is None:
        return None
    return instant.astimezone(zone(job_tz)).strftime("%Y-%m-%d %H:%M:%S")


def local_pair(instant: datetime | None, job_tz: str) -> tuple[str | None, str | None]:
    """``format_local`` and ``iso_local`` from one conversion (``list`` does this 10,000 times)."""
    if instant is None:
        return None, None
    iso = instant.astimezone(zone(job_tz)).isoformat(timespec="seconds")
    return iso[:10] + " " + iso[11:19], iso


def iso_local(instant: datetime | None, job_tz: str) -> str | None:
    """ISO 8601 with offset in the job's zone: exact even in a fall-back's repeated hour."""
    if instant is None:
        return None
    return instant.astimezone(zone(job_tz)).isoformat(timespec="seconds")


def from_epoch(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
