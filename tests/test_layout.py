"""Tables that fit a width, and times relative to an injected now (crawlsched.layout)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from crawlsched.layout import Column, Step, cut, fit, relative
from crawlsched.tables import jobs_table, status_text

NOW = datetime(2026, 12, 1, 2, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("delta, text", [
    (timedelta(0), "now"), (timedelta(seconds=0.4), "now"), (timedelta(seconds=45), "in 45s"),
    (timedelta(minutes=5), "in 5m"), (timedelta(minutes=5, seconds=59), "in 5m"), (timedelta(hours=3), "in 3h"),
    (timedelta(hours=3, minutes=20), "in 3h 20m"), (timedelta(days=2, hours=4, minutes=9), "in 2d 4h"),
    (timedelta(days=45), "in 45d"), (-timedelta(hours=3), "3h ago"), (-timedelta(seconds=90), "1m ago"),
], ids=["zero", "under-a-second", "seconds", "minutes", "minutes-floor", "hours", "hours-minutes", "days-hours",
        "many-days", "hours-ago", "minute-ago"])
def test_relative_reads_like_systemctl_list_timers(delta, text):
    assert relative(NOW + delta, NOW) == text


def test_relative_of_no_time_is_a_dash():
    assert relative(None, NOW) == "-"


def test_cut_shows_what_a_terminal_would_act_on_escaped():
    assert cut("echo \x1b]0;pwned\x07 done", 80) == "echo \\x1b]0;pwned\\x07 done"
    assert "\x1b" not in cut("\x1b[2J" * 40, 20) and cut("\x1b[2J" * 40, 20).endswith("…")


def test_cut_ends_with_an_ellipsis_and_joins_lines():
    assert cut("short", 10) == "short"
    assert cut("a much longer message", 10) == "a much lo…"
    assert cut("two\nlines", 20) == "two lines"
    assert cut("✅ wide emoji here", 6) == "✅ wi…"  # cells, not characters: the emoji takes two


COLUMNS = [Column("name", "name", required=True, short=("name_only",)), Column("status", "status", required=True),
           Column("extra", "extra"), Column("message", "message")]
ROWS = [{"name": "Daily Morning Crawl (daily-morning-crawl)", "name_only": "Daily Morning Crawl",
         "status": "failed", "extra": "x" * 10, "message": "m" * 40}]
STEPS = [Step("shrink", "message", 12), Step("drop", "extra"), Step("short", "name"), Step("drop", "message")]


@pytest.mark.parametrize("width, kept, short", [
    (200, ["name", "status", "extra", "message"], set()),
    (90, ["name", "status", "extra", "message"], set()),  # the message shrinks first
    (70, ["name", "status", "message"], set()),  # then the extra column goes
    (50, ["name", "status", "message"], {"name"}),  # then the id beside the name
    (30, ["name", "status"], {"name"}),  # then the message; required columns stay
], ids=["200", "90", "70", "50", "30"])
def test_fit_applies_the_steps_in_order_until_the_row_fits(width, kept, short):
    layout = fit(COLUMNS, ROWS, width, STEPS)
    assert [c.key for c in layout.columns] == kept and set(layout.short) == short
    assert layout.total <= width
    if width <= 90 and "message" in kept:  # cut, to its step's 12 at least, and given what the row leaves free
        assert 12 <= layout.widths["message"] < 40 and layout.total == width


def test_a_column_shrunk_more_than_needed_gets_back_the_cells_left_free():
    """history at 80 columns cut its message to 20 while 9 columns stayed empty: the shrink step
    came before drops that made room."""
    layout = fit(COLUMNS, ROWS, 70, STEPS)  # shrink message to 12, then drop extra: 22 cells were free
    assert [c.key for c in layout.columns] == ["name", "status", "message"]
    assert layout.total == 70 and layout.widths["message"] == 70 - 41 - 6 - 2 * layout.gap


def test_fit_cuts_a_required_column_only_when_nothing_else_is_left():
    layout = fit(COLUMNS, ROWS, 16, STEPS)
    assert [c.key for c in layout.columns] == ["name", "status"] and layout.total <= 16


def test_a_name_longer_than_its_id_gives_way_to_the_id_before_anything_is_cut():
    job = {"id": "news", "name": "The crawl of every news site we care about, in full", "status": "active",
           "timezone": "UTC", "next_run_iso": None, "last_run_iso": None, "schedule": "09:05", "start_date": None,
           "end_date": None, "max_retries": 3, "retry_delay": 300, "retry_backoff": 1, "last_message": None}
    console = Console(width=40, record=True, file=io.StringIO())
    console.print(jobs_table([job], now=NOW, width=40, plain=True, machine_tz="UTC"))
    [row] = [line for line in console.export_text().splitlines() if "active" in line]
    assert row.split()[0] == "news" and "…" not in row


def test_a_long_id_stays_whole_at_80_columns_the_status_and_times_give_way_first():
    job_id = "jakarta-morning-with-a-really-long-name-for-news"  # 48 characters
    job = {"id": job_id, "name": job_id, "status": "retrying", "next_retry_iso": (NOW + timedelta(seconds=8)).isoformat(),
           "attempt": 2, "timezone": "UTC", "next_run_iso": (NOW + timedelta(hours=23)).isoformat(),
           "last_run_iso": (NOW - timedelta(minutes=3)).isoformat(), "schedule": "09:05", "start_date": None,
           "end_date": None, "max_retries": 2, "retry_delay": 300, "retry_backoff": 1, "last_message": "HTTP 503"}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(jobs_table([job], now=NOW, width=80, plain=True, machine_tz="UTC"))
    [row] = [line for line in console.export_text().splitlines() if job_id[:20] in line]
    assert row.split()[0] == job_id and len(row) <= 80
    assert "retrying" in row and "in 23h" in row and "3m ago" in row


@pytest.mark.parametrize("due, text", [(240.5, "retrying 2/4 in 4m"), (0, "retrying 2/4 due now"),
                                       (-20, "retrying 2/4 due now"), (-300, "retrying 2/4 due 5m ago")],
                         ids=["ahead", "now", "seconds-late", "minutes-late"])
def test_a_retrying_status_says_which_attempt_and_when(due, text):
    job = {"status": "retrying", "attempt": 2, "max_retries": 3,
           "next_retry_iso": (NOW + timedelta(seconds=due)).isoformat()}
    assert status_text(job, NOW) == text
