"""What the CLI and the web share (crawlsched.control): one lock file, one freshness rule, one set of words."""

from __future__ import annotations

from pathlib import Path

import crawlsched
from crawlsched import control


def _sources() -> dict[str, str]:
    root = Path(crawlsched.__file__).parent
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.py")}


def test_the_daemon_lock_file_is_named_in_one_place():
    naming = [name for name, text in _sources().items() if control.LOCK_FILE in text]
    assert naming == ["control.py"]


def test_the_shared_messages_are_written_in_one_place():
    for message in (control.UPDATED, control.DELETED, control.PAUSED, control.RESUMED, control.HANDED_OVER):
        literal = message.split("}")[1]  # "' updated": after the name, as an f-string or a format writes it
        writing = [name for name, text in _sources().items() if literal in text]
        assert writing == ["control.py"], message


def test_the_lock_file_is_in_the_home(tmp_path):
    assert control.lock_path(tmp_path) == tmp_path / ".crawlsched-daemon.lock"


def _running_since(started_at: float):
    from crawlsched.state.records import JobState, Run

    row = Run(1, "news", started_at, 1, 4, "schedule", "running", started_at=started_at)
    return JobState("news", last_attempt=row, running=True)


def test_a_run_now_refused_for_a_fire_about_to_begin_says_when_it_begins():
    import time

    from crawlsched.model import Job, ScheduleKind

    job = Job(id="news", name="news", kind=ScheduleKind.EVERY, spec="1h", timezone="UTC", command="true")
    soon = control.busy_reason(job, _running_since(time.time() + 0.8))
    assert soon.startswith("job news starts at its scheduled time ") and "(attempt 1/4)" in soon
    running = control.busy_reason(job, _running_since(time.time() - 5))
    assert running.startswith("job news is running (attempt 1/4, since ")
