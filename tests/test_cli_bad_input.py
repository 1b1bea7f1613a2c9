"""Every refusal: the exit code, a one-line message naming the field and the value, and nothing changed.

SPEC §5: bad input never changes anything; the job file stays byte for byte
the same (or still absent), and no state database appears either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest

URL = "https://example.com/news"
TODAY = date.today()
START = TODAY + timedelta(days=5)
END = TODAY + timedelta(days=35)
PAST = TODAY - timedelta(days=60)

ONE_JOB = f"""\
# jobs written by hand
[[jobs]]
id = "taken"
name = "Taken"
at = "09:00"
end_date = {END}
url = ["https://example.com/"]
timezone = "UTC"
"""

SYNTAX_ERROR = """\
[[jobs]]
id = "a"
name = "A"
at = "09:00"
timezone = UTC
url = ["https://example.com/"]
"""  # line 5: a bare word is not a TOML value

BAD_VALUE = """\
# retries by hand
[[jobs]]
id = "a"
name = "A"
at = "09:00"
max_retries = -2
url = ["https://example.com/"]
"""  # line 6

DUPLICATE_ID = """\
[[jobs]]
id = "a"
name = "A"
at = "09:00"
url = ["https://example.com/"]

[[jobs]]
id = "a"
name = "Another A"
at = "10:00"
url = ["https://example.com/"]
"""  # the second table starts at line 7

TWO_JOBS = ONE_JOB + """
[[jobs]]
id = "other"
name = "Other"
every = "1h"
url = ["https://example.com/"]
"""

# Values beyond what the program can hold (SPEC §7), written by hand: `validate`, `list` and `add` say where.
EVERY_TOO_LONG = '[[jobs]]\nid = "a"\nname = "A"\nevery = "3000000000d"\nurl = ["https://example.com/"]\n'  # line 4
END_TOO_LATE = '[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nend_date = 9999-12-31\nurl = ["https://example.com/"]\n'  # line 5
BYTES_TOO_MANY = '[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nmax_bytes = 18446744073709551616\nurl = ["https://example.com/"]\n'
DELAY_INFINITE = '[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nretry_delay = inf\nurl = ["https://example.com/"]\n'
RETRIES_5000_DIGITS = '[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nmax_retries = ' + "9" * 5000 + '\nurl = ["https://example.com/"]\n'
GRACE_TOO_LONG = '[defaults]\ngrace_period = 1e400\n'
EXECUTOR_UNKNOWN = '[defaults]\nexecutor = "celery"\n'
STATE_NOT_POSTGRESQL = '[defaults]\nstate = "mysql://u:hunter2@db/x"\n'
WORKERS_ON_POSTGRESQL = '[defaults]\nstate = "postgresql://crawlsched@db.internal/crawlsched"\nexecutor = "workers"\n'

FILES = {"none": None, "one job": ONE_JOB, "two jobs": TWO_JOBS, "syntax error": SYNTAX_ERROR, "bad value": BAD_VALUE, "duplicate id": DUPLICATE_ID,
         "every too long": EVERY_TOO_LONG, "end too late": END_TOO_LATE, "bytes too many": BYTES_TOO_MANY,
         "delay infinite": DELAY_INFINITE, "retries 5000 digits": RETRIES_5000_DIGITS, "grace too long": GRACE_TOO_LONG,
         "executor unknown": EXECUTOR_UNKNOWN, "state not postgresql": STATE_NOT_POSTGRESQL,
         "workers on postgresql": WORKERS_ON_POSTGRESQL}


@dataclass
class Case:
    id: str
    args: list[object]
    expect: list[str]  # substrings of the one-line message: the field and the value
    code: int = 2
    file: str = "none"
    absent: list[str] = field(default_factory=list)  # must not appear (secrets)


def add(*args: object) -> list[object]:
    return ["add", "New Job", *args]


CASES = [
    Case("two-schedule-kinds", add("--at", "09:05", "--cron", "0 1 * * *", "--url", URL), ["schedule", "--at", "--cron"]),
    Case("at-and-hour", add("--at", "09:05", "--hour", "9", "--url", URL), ["schedule", "--at", "--hour"]),
    Case("every-and-cron", add("--every", "5m", "--cron", "0 1 * * *", "--url", URL), ["schedule", "--cron", "--every"]),
    Case("no-schedule", add("--url", URL), ["schedule", "missing", "--at"]),
    Case("url-and-command", add("--at", "09:05", "--url", URL, "--command", "scrapy crawl x"), ["command", "scrapy crawl x", "--url"]),
    Case("no-crawl-and-no-defaults-crawl", add("--at", "09:05"), ["url", "command", "[defaults]"]),
    Case("ftp-url", add("--at", "09:05", "--url", "ftp://example.com/f"), ["url", '"ftp://example.com/f"', "http"]),
    Case("javascript-url", add("--at", "09:05", "--url", "javascript:alert(1)"), ["url", '"javascript:alert(1)"']),
    Case("url-without-host", add("--at", "09:05", "--url", "http://"), ["url", '"http://"']),
    Case("url-password-is-masked", add("--at", "09:05", "--url", "ftp://bob:hunter2@example.com/"),
         ["url", "bob:***@example.com"], absent=["hunter2"]),  # fmt: skip
    Case("url-with-a-space-is-masked", add("--at", "09:05", "--url", "https://bob:hunter2@example.com/a b"),
         ["url", "bob:***@example.com"], absent=["hunter2"]),  # fmt: skip
    Case("url-that-does-not-parse", add("--at", "09:05", "--url", "http://bob:hunter2@[bad"),
         ["url", "bob:***@[bad", "not an http(s) URL"], absent=["hunter2"]),  # fmt: skip
    Case("unknown-time-zone", add("--at", "09:05", "--url", URL, "--tz", "Mars/Olympus"), ["timezone", '"Mars/Olympus"']),
    Case("empty-time-zone", add("--at", "09:05", "--url", URL, "--tz", ""), ["timezone", '""', "IANA"]),
    Case("edit-empty-time-zone", ["edit", "taken", "--tz", ""], ["timezone", '""', "IANA"], file="one job"),
    Case("negative-retries", add("--at", "09:05", "--url", URL, "--max-retries", "-1"), ["max_retries", "-1", "at least 0"]),
    Case("negative-delay", add("--at", "09:05", "--url", URL, "--retry-delay", "-5"), ["retry_delay", "-5", "at least 0"]),
    Case("interval-under-1s", add("--every", "0s", "--url", URL), ["every", '"0s"', "1s"]),
    Case("interval-not-a-duration", add("--every", "soon", "--url", URL), ["every", '"soon"']),
    Case("at-25:00", add("--at", "25:00", "--url", URL), ["at", '"25:00"', "HH:MM"]),
    Case("at-9:60", add("--at", "9:60", "--url", URL), ["at", '"9:60"']),
    Case("at-nine", add("--at", "nine", "--url", URL), ["at", '"nine"']),
    Case("hour-24", add("--hour", "24", "--url", URL), ["hour", "24", "at most 23"]),
    Case("minute-60", add("--hour", "9", "--minute", "60", "--url", URL), ["minute", "60", "at most 59"]),
    Case("minute-without-hour", add("--minute", "5", "--url", URL), ["minute", "5", "--hour"]),
    Case("start-after-end", add("--at", "09:05", "--url", URL, "--start", END, "--end", START),
         ["end_date", f'"{START}"', str(END)]),  # fmt: skip
    Case("end-date-in-the-past", add("--at", "09:05", "--url", URL, "--start", PAST, "--end", PAST + timedelta(days=3)),
         ["end_date", f'"{PAST + timedelta(days=3)}"', "in the past"]),  # fmt: skip
    Case("cron-that-never-fires", add("--cron", "0 0 31 2 *", "--url", URL), ["cron", '"0 0 31 2 *"']),
    Case("cron-with-6-fields", add("--cron", "0 0 * * * *", "--url", URL), ["cron", '"0 0 * * * *"', "five-field"]),
    Case("bad-start-date", add("--at", "09:05", "--url", URL, "--start", "2026-13-01"), ["start_date", '"2026-13-01"', "YYYY-MM-DD"]),
    Case("bad-end-date", add("--at", "09:05", "--url", URL, "--end", "tomorrow"), ["end_date", '"tomorrow"']),
    Case("bad-catch-up", add("--at", "09:05", "--url", URL, "--catch-up", "sometimes"), ["catch_up", '"sometimes"', "latest"]),
    Case("header-without-colon-hides-its-text", add("--at", "09:05", "--url", URL, "--header", "Bearer-abc123"),
         ["header", "Name: value"], absent=["abc123"]),  # fmt: skip
    Case("duplicate-name", ["add", "Taken", "--at", "10:00", "--url", URL], ["name", '"Taken"', "unique"], file="one job"),
    Case("edit-bad-value", ["edit", "taken", "--at", "25:00"], ["at", '"25:00"'], file="one job"),
    Case("edit-negative-retries", ["edit", "taken", "--max-retries", "-3"], ["max_retries", "-3"], file="one job"),
    Case("edit-start-after-the-existing-end", ["edit", "taken", "--start", END + timedelta(days=1)],
         ["end_date", f'"{END}"', str(END + timedelta(days=1))], file="one job", absent=["jobs.toml"]),  # fmt: skip
    Case("edit-end-and-no-end", ["edit", "taken", "--end", END, "--no-end"], ["end_date", str(END), "--no-end"], file="one job"),
    Case("edit-rename-to-a-taken-name", ["edit", "other", "--name", "Taken"], ["name", '"Taken"', "unique"], file="two jobs"),
    Case("retry-config-negative-retries", ["retry-config", "--max-retries", "-1"], ["max_retries", "-1"], file="one job"),
    Case("retry-config-negative-delay", ["retry-config", "--retry-delay", "-10"], ["retry_delay", "-10"], file="one job"),
    Case("edit-unknown-job", ["edit", "nope", "--at", "10:00"], ['"nope"'], code=1, file="one job"),
    Case("rm-unknown-job", ["rm", "nope", "--yes"], ['"nope"'], code=1, file="one job"),
    Case("pause-unknown-job", ["pause", "nope"], ['"nope"'], code=1, file="one job"),
    # Bounds (SPEC §7): refused where the value is built, naming the field, the value and what is allowed.
    Case("every-beyond-ten-years", add("--every", "3000000000d", "--url", URL), ["every", '"3000000000d"', "ten years"]),
    Case("every-of-4000-digits", add("--every", "9" * 4000 + "s", "--url", URL), ["every", '"999', "ten years"]),
    Case("end-date-9999-12-31", add("--at", "09:05", "--url", URL, "--end", "9999-12-31"), ["end_date", '"9999-12-31"', "9999-12-30"]),
    Case("start-date-year-1", add("--at", "09:05", "--url", URL, "--start", "0001-01-01"), ["start_date", '"0001-01-01"', "1900-01-01"]),
    Case("max-bytes-beyond-2^53", add("--at", "09:05", "--url", URL, "--max-bytes", 2 ** 63), ["max_bytes", str(2 ** 63), str(2 ** 53)]),
    Case("keep-runs-beyond-2^53", add("--at", "09:05", "--url", URL, "--keep-runs", 10 ** 30), ["keep_runs", str(10 ** 30), str(2 ** 53)]),
    Case("retry-delay-beyond-ten-years", add("--at", "09:05", "--url", URL, "--retry-delay", "3651d"), ["retry_delay", '"3651d"', "ten years"]),
    Case("retry-delay-not-a-duration", add("--at", "09:05", "--url", URL, "--retry-delay", "soon"), ["retry_delay", '"soon"', "5m"]),
    Case("timeout-infinite", add("--at", "09:05", "--url", URL, "--timeout", "1e400"), ["timeout", '"1e400"']),
    Case("retry-max-delay-beyond-ten-years", add("--at", "09:05", "--url", URL, "--retry-max-delay", "100000000000"),
         ["retry_max_delay", '"100000000000"', "ten years"]),  # fmt: skip
    Case("cron-reboot-macro", add("--cron", "@reboot", "--url", URL), ["cron", '"@reboot"', "@daily"]),
    Case("edit-every-beyond-ten-years", ["edit", "taken", "--every", "3000000000d"], ["every", '"3000000000d"'], file="one job"),
    Case("retry-config-delay-beyond-ten-years", ["retry-config", "--retry-delay", "3651d"], ["retry_delay", '"3651d"'], file="one job"),
    # [defaults] state and executor (SPEC §10): a password is never echoed; workers need PostgreSQL.
    Case("defaults-unknown-executor", ["defaults", "--executor", "celery"], ["defaults.executor", '"celery"', '"local"', '"workers"'],
         file="one job"),
    Case("defaults-state-not-postgresql", ["defaults", "--state", "mysql://u:hunter2@db/x"],
         ["defaults.state", "postgresql://", "key=value"], file="one job", absent=["hunter2"]),
    Case("defaults-state-sqlite-path", ["defaults", "--state", "/srv/crawlsched.db"],
         ["defaults.state", '"/srv/crawlsched.db"', "postgresql://"], file="one job"),
    Case("defaults-workers-without-postgresql", ["defaults", "--executor", "workers"],
         ["defaults.executor", '"workers"', "needs a PostgreSQL state", "CRAWLSCHED_STATE"], file="one job"),
    Case("defaults-unset-the-state-workers-need", ["defaults", "--unset", "state"],
         ["defaults.executor", '"workers"', "needs a PostgreSQL state"], file="workers on postgresql"),
    Case("rm-without-yes-when-not-a-tty", ["rm", "taken"], ["--yes", '"taken"', "not a terminal"], file="one job"),
]

# A broken job file: every command that reads it says where, and writes nothing.
for name, content_key, expect in [
    ("syntax-error", "syntax error", ["jobs.toml:5:", "not valid TOML"]),
    ("bad-value", "bad value", ["jobs.toml:6:", "max_retries", "-2"]),
    ("duplicate-id", "duplicate id", ["jobs.toml:7:", "id", '"a"', "line 1"]),
    ("every-beyond-ten-years", "every too long", ["jobs.toml:4:", "every", '"3000000000d"', "ten years"]),
    ("end-date-9999-12-31", "end too late", ["jobs.toml:5:", "end_date", "9999-12-30"]),
    ("max-bytes-2^64", "bytes too many", ["jobs.toml:5:", "max_bytes", "18446744073709551616", str(2 ** 53)]),
    ("retry-delay-inf", "delay infinite", ["jobs.toml:5:", "retry_delay", "inf", "ten years"]),
    ("max-retries-of-5000-digits", "retries 5000 digits", ["jobs.toml:5:", "4300 digits"]),
    ("grace-period-1e400", "grace too long", ["jobs.toml:2:", "grace_period", "ten years"]),
    ("executor-celery", "executor unknown", ["jobs.toml:2:", "defaults.executor", '"celery"', '"workers"']),
    ("state-not-postgresql", "state not postgresql", ["jobs.toml:2:", "defaults.state", "postgresql://"]),
]:
    for command in (["list"], ["add", "X", "--at", "09:00", "--url", URL], ["validate"]):
        CASES.append(Case(f"broken-file-{name}-{command[0]}", command, expect, file=content_key, absent=["hunter2"]))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_refused(cli, tmp_home, case: Case, as_json: bool):
    content = FILES[case.file]
    if content is not None:
        tmp_home.jobs_file.write_text(content)
    before = tmp_home.jobs_file.read_bytes() if content is not None else None
    result = cli(*case.args, *(["--json"] if as_json else []))

    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    if as_json:
        data = result.json()
        assert data["success"] is False
        message = data["error"]
    else:
        assert result.stdout == ""
        assert result.stderr.startswith("crawlsched: error: ")
        assert result.stderr.count("\n") == 1, "one line"
        message = result.stderr
    for text in case.expect:
        assert text in message
    for text in case.absent:
        assert text not in result.output

    if before is None:
        assert not tmp_home.jobs_file.exists()
    else:
        assert tmp_home.jobs_file.read_bytes() == before
    assert not tmp_home.db.exists(), "refused input leaves no state database behind"


# --- usage errors Click finds before a command runs: JSON too, with --json ----------------------

USAGE_ERRORS = [
    (["history", "--limit", "abc"], ["--limit", "abc"]),
    (["add", "--at", "09:05", "--url", URL], ["NAME"]),
    (["list", "--colour"], ["--colour"]),
    (["show"], ["JOB"]),
]


@pytest.mark.parametrize(("args", "expect"), USAGE_ERRORS, ids=[a[0] + "-" + e[0] for a, e in USAGE_ERRORS])
def test_a_usage_error_is_one_line_or_a_json_error_and_changes_nothing(tmp_path, args, expect):
    import json
    import os
    import subprocess
    import sys

    jobs = tmp_path / "jobs.toml"
    jobs.write_text(ONE_JOB)
    env = {**os.environ, "CRAWLSCHED_JOBS": str(jobs), "CRAWLSCHED_HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = [sys.executable, "-m", "crawlsched", *args]
    as_json = subprocess.run(run + ["--json"], env=env, capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 2, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["success"] is False and data["error"].startswith("crawlsched ")
    for text in expect:
        assert text in data["error"]
    assert "\n" not in data["error"]
    text = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 2 and text.stdout == "", text.stderr
    [line] = text.stderr.splitlines()  # without --json: one line, as every other error
    assert line.startswith("crawlsched: error: crawlsched ") and all(t in line for t in expect), line
    assert jobs.read_text() == ONE_JOB
    assert not (tmp_path / "home" / "crawlsched.db").exists()


@pytest.mark.parametrize("args, line", [
    (["nope"], "crawlsched: error: No such command 'nope'. (see 'crawlsched --help')"),
    (["--bogus"], "crawlsched: error: No such option: --bogus (see 'crawlsched --help')"),
])
def test_an_unknown_command_or_root_option_is_one_line_naming_it_once(tmp_path, args, line):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CRAWLSCHED_JOBS": str(tmp_path / "jobs.toml"), "CRAWLSCHED_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "crawlsched", *args], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


@pytest.mark.parametrize("args", [["status"], ["list"], ["history", "--json"]])
def test_a_reader_that_closed_the_pipe_ends_the_command_quietly_with_141(tmp_path, args):
    """`crawlsched status | head -1`: no "Broken pipe" error line, and the exit code a shell gives a
    writer killed by SIGPIPE (128 + 13), as git does."""
    import os
    import subprocess
    import sys

    (tmp_path / "jobs.toml").write_text("".join(f'[[jobs]]\nid = "j{n}"\nname = "j{n}"\nevery = "1h"\ncommand = "true"\n\n'
                                                for n in range(50)))
    env = {**os.environ, "CRAWLSCHED_JOBS": str(tmp_path / "jobs.toml"), "CRAWLSCHED_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read()
    assert (proc.wait(timeout=60), err) == (141, b"")


def test_import_of_a_seed_file_with_a_number_of_5000_digits_is_refused_naming_the_field(cli, tmp_home):
    seed = tmp_home.path / "scheduler_jobs.json"
    seed.write_text('[{"id": "a", "name": "A", "hour": 9, "minute": 5, "max_retries": ' + "9" * 5000 + "}]")
    result = cli("import", seed, "--url", URL, "--json")
    assert result.exit_code == 2, result.output
    error = result.json()["error"]
    assert "max_retries" in error and "5000-digit number" in error and len(error) < 300
    assert not tmp_home.jobs_file.exists()
