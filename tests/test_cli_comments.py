"""A job file written by hand keeps every comment and blank line through CLI edits (SPEC §2)."""

from __future__ import annotations

import tomllib
from datetime import date, timedelta

END = date.today() + timedelta(days=400)

HAND_WRITTEN = f"""\
# crawlsched jobs for the newsroom
# (kept in git; edit by hand or with the CLI)

[defaults]                 # optional; `retry-config` writes here
max_retries = 3
retry_delay = 300          # seconds
timezone = "Asia/Jakarta"  # IANA name; default: the machine's zone
max_concurrent = 8

[[jobs]]
id = "crawl-pagi-hari"     # unique, [a-z0-9][a-z0-9_-]*, made from the name
name = "Crawl Pagi Hari"   # unique too; a duplicate name is refused (exit 2)
at = "09:05"               # exactly one of: at, cron, every
start_date = 2025-11-08    # TOML dates; optional
end_date = {END}    # optional; inclusive
url = ["https://example.com/news"]   # exactly one of: url (string or list), command
max_retries = 3            # optional overrides of [defaults]; `add` writes
retry_delay = 300          # them only when given, so `retry-config` reaches
timezone = "Asia/Jakarta"  # every other job. `add` always writes the zone
                           # (--tz, else [defaults], else the machine's), so
                           # a later change of the machine's zone moves nothing

# The weekly report: Mondays at 10:00.
[[jobs]]
id = "weekly-report"
name = "Weekly Report"     # shown in `list`
cron = "0 10 * * 1"        # minute hour day month weekday

# it runs the spider, not a plain fetch
command = "scrapy crawl weekly"
timeout = 1800             # half an hour is plenty
"""

COMMENT_LINES = [line for line in HAND_WRITTEN.splitlines() if line.lstrip().startswith("#")]
INLINE_COMMENTS = [line.split("#", 1)[1] for line in HAND_WRITTEN.splitlines() if "#" in line and not line.lstrip().startswith("#")]


def assert_comments_survive(text: str, *, except_in: str | None = None) -> None:
    """Every comment and blank-line run outside the one table that was touched is still there."""
    lines = text.splitlines()
    for comment in COMMENT_LINES:
        assert comment in lines, f"lost: {comment!r}"
    for comment in INLINE_COMMENTS:
        if except_in and comment in except_in:
            continue
        assert comment in text, f"lost inline comment: {comment!r}"
    assert "\n\n[[jobs]]" in text  # blank lines between tables stay


def test_hand_written_file_survives_every_edit(cli, tmp_home):
    tmp_home.jobs_file.write_text(HAND_WRITTEN)
    assert cli("validate").exit_code == 0

    steps = [
        ["add", "Evening Crawl", "--at", "18:00", "--url", "https://example.com/evening"],
        ["pause", "weekly-report"],
        ["resume", "weekly-report"],
        ["retry-config", "--max-retries", "5", "--retry-delay", "600"],
        ["edit", "weekly-report", "--timeout", "900"],
        ["edit", "crawl-pagi-hari", "--max-retries", "4"],
        ["rm", "evening-crawl", "--yes"],
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, (step, result.output)
        text = tmp_home.jobs_file.read_text()
        assert_comments_survive(text)
        assert cli("validate").exit_code == 0, step

    data = tomllib.loads(tmp_home.jobs_file.read_text())
    assert data["defaults"]["max_retries"] == 5 and data["defaults"]["retry_delay"] == 600
    assert data["defaults"]["max_concurrent"] == 8
    weekly = next(j for j in data["jobs"] if j["id"] == "weekly-report")
    assert weekly["timeout"] == 900 and "paused" not in weekly
    pagi = next(j for j in data["jobs"] if j["id"] == "crawl-pagi-hari")
    assert pagi["max_retries"] == 4
    assert [j["id"] for j in data["jobs"]] == ["crawl-pagi-hari", "weekly-report"]


def test_add_leaves_every_byte_before_it(cli, tmp_home):
    tmp_home.jobs_file.write_text(HAND_WRITTEN)
    assert cli("add", "Evening Crawl", "--at", "18:00", "--url", "https://example.com/evening").exit_code == 0
    text = tmp_home.jobs_file.read_text()
    assert text.startswith(HAND_WRITTEN)
    added = tomllib.loads(text)["jobs"][-1]
    assert added["timezone"] == "Asia/Jakarta"  # the [defaults] zone, written explicitly
    assert "max_retries" not in added  # only given values are written, so retry-config reaches it


def test_pause_touches_only_its_table(cli, tmp_home):
    tmp_home.jobs_file.write_text(HAND_WRITTEN)
    assert cli("pause", "crawl-pagi-hari").exit_code == 0
    text = tmp_home.jobs_file.read_text()
    head, _, _ = HAND_WRITTEN.partition("[[jobs]]")
    assert text.startswith(head)
    weekly = HAND_WRITTEN[HAND_WRITTEN.index("# The weekly report"):]
    assert text.endswith(weekly)  # the other job, with its comments, byte for byte
    assert "paused = true" in text
