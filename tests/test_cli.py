"""The commands that edit and read the job file, through typer's CliRunner: output, JSON shapes, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from datetime import date, datetime, timedelta, timezone

import pytest

from crawlsched.cli import app

TODAY = date.today()
START = TODAY + timedelta(days=5)
END = TODAY + timedelta(days=35)
URL = "https://example.com/news"


def add_daily(cli, name="Daily Morning Crawl", *extra):
    return cli("add", name, "--start", START, "--end", END, "--at", "09:05", "--url", URL,
               "--max-retries", 3, "--retry-delay", 300, *extra)  # fmt: skip


def jobs_of(home):
    return tomllib.loads(home.jobs_file.read_text())["jobs"]


# --- add ---------------------------------------------------------------------------------


def test_add_prints_the_id_and_writes_the_spec_table(cli, tmp_home):
    result = add_daily(cli)
    assert result.exit_code == 0, result.output
    assert result.stdout == "daily-morning-crawl\n"
    [table] = jobs_of(tmp_home)
    assert table["id"] == "daily-morning-crawl"
    assert table["name"] == "Daily Morning Crawl"
    assert table["at"] == "09:05"
    assert table["start_date"] == START and table["end_date"] == END  # TOML dates, not strings
    assert table["url"] == [URL]
    assert table["max_retries"] == 3 and isinstance(table["max_retries"], int)
    assert table["retry_delay"] == 300 and isinstance(table["retry_delay"], int)
    assert table["timezone"] == "UTC"
    assert isinstance(table["created_at"], datetime)
    text = tmp_home.jobs_file.read_text()
    assert text.index("id =") < text.index("name =") < text.index("at =") < text.index("url =")


def test_add_json_is_the_seeds_answer(cli):
    result = add_daily(cli, "Crawl Pagi Hari", "--json")
    assert result.exit_code == 0
    assert result.json() == {
        "success": True,
        "message": "✅ Job 'Crawl Pagi Hari' berhasil ditambahkan",
        "job_id": "crawl-pagi-hari",
    }


def test_add_writes_only_given_retry_settings_and_today_as_start(cli, tmp_home):
    assert cli("add", "Plain", "--cron", "0 10 * * 1", "--url", URL).exit_code == 0
    [table] = jobs_of(tmp_home)
    assert "max_retries" not in table and "retry_delay" not in table
    assert table["start_date"] == datetime.now(timezone.utc).date()
    assert table["cron"] == "0 10 * * 1"


@pytest.mark.parametrize(
    ("args", "at"),
    [(["--hour", "7"], "07:00"), (["--hour", "9", "--minute", "5"], "09:05"), (["--at", "9:05"], "09:05")],
    ids=["hour-alone-is-on-the-hour", "hour-and-minute", "at-is-normalized"],
)
def test_add_daily_time_forms(cli, tmp_home, args, at):
    assert cli("add", "J", *args, "--url", URL).exit_code == 0
    assert jobs_of(tmp_home)[0]["at"] == at


def test_add_writes_every_optional_key(cli, tmp_home):
    result = cli(
        "add", "Full", "--every", "15m", "--url", URL, "--url", "https://example.org/b",
        "--retry-backoff", 2, "--retry-max-delay", 600, "--timeout", 60, "--tz", "Asia/Jakarta",
        "--catch-up", "all", "--on-failure", "notify-send failed", "--max-bytes", 1000,
        "--header", "Authorization: Bearer ${TOKEN}", "--header", "X-Team: crawl",
        "--user-agent", "bot/1", "--keep-runs", 5, "--insecure",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [t] = jobs_of(tmp_home)
    assert t["every"] == "15m"
    assert t["url"] == [URL, "https://example.org/b"]
    assert (t["retry_backoff"], t["retry_max_delay"], t["timeout"]) == (2, 600, 60)
    assert t["timezone"] == "Asia/Jakarta"
    assert t["catch_up"] == "all" and t["on_failure"] == "notify-send failed"
    assert t["max_bytes"] == 1000 and t["keep_runs"] == 5 and t["user_agent"] == "bot/1"
    assert t["headers"] == {"Authorization": "Bearer ${TOKEN}", "X-Team": "crawl"}  # stored unexpanded
    assert t["verify"] is False


def test_add_command_job(cli, tmp_home):
    assert cli("add", "Scrapy", "--at", "01:00", "--command", "scrapy crawl news").exit_code == 0
    assert jobs_of(tmp_home)[0]["command"] == "scrapy crawl news"


def test_add_without_crawl_uses_the_defaults_crawl(cli, tmp_home):
    tmp_home.jobs_file.write_text('[defaults]\nurl = "https://example.com/"\n')
    assert cli("add", "Uses default", "--at", "06:00").exit_code == 0
    assert "url" not in jobs_of(tmp_home)[0]


def test_add_never_reuses_an_id_the_history_knows(cli):
    assert cli("add", "News", "--at", "09:00", "--url", URL).stdout == "news\n"
    assert cli("rm", "news", "--yes").exit_code == 0
    assert cli("add", "News", "--at", "09:00", "--url", URL).stdout == "news-2\n"


def test_add_names_that_make_the_same_id_get_suffixes(cli):
    assert cli("add", "News!", "--at", "09:00", "--url", URL).stdout == "news\n"
    assert cli("add", "news?", "--at", "09:00", "--url", URL).stdout == "news-2\n"


# --- list ----------------------------------------------------------------------------------


def test_list_json_job_object_field_by_field(cli):
    add_daily(cli)
    result = cli("list", "--json")
    assert result.exit_code == 0
    data = result.json()
    assert data["success"] is True
    [job] = data["jobs"]
    assert job["id"] == "daily-morning-crawl"
    assert job["name"] == "Daily Morning Crawl"
    assert job["schedule"] == "09:05"
    assert job["kind"] == "at"
    assert job["start_date"] == START.isoformat()
    assert job["end_date"] == END.isoformat()
    assert job["timezone"] == "UTC"
    assert job["next_run"] == f"{START.isoformat()} 09:05:00"
    assert job["next_run_iso"] == f"{START.isoformat()}T09:05:00+00:00"
    assert job["last_run"] is None and job["last_run_iso"] is None
    assert job["status"] == "active"
    assert job["max_retries"] == 3 and job["retry_delay"] == 300
    assert job["retry_backoff"] == 1 and job["retry_max_delay"] is None
    assert job["last_message"] is None
    assert job["paused"] is False
    assert job["url"] == [URL]
    assert job["command"] is None
    assert job["timeout"] == 300
    assert job["catch_up"] == "latest"
    assert job["headers"] == []
    assert len(job["created_at"]) == 19
    assert job["created_at_iso"].endswith("+00:00")


@pytest.mark.parametrize(
    ("args", "schedule"),
    [(["--cron", "0 10 * * 1"], "0 10 * * 1"), (["--every", "15m"], "every 15m"), (["--at", "07:30"], "07:30")],
    ids=["cron", "every", "at"],
)
def test_list_schedule_text(cli, args, schedule):
    cli("add", "J", *args, "--url", URL)
    assert cli("list", "--json").json()["jobs"][0]["schedule"] == schedule


def test_a_new_interval_job_is_due_now(cli):
    cli("add", "Often", "--every", "1h", "--url", URL)
    job = cli("list", "--json").json()["jobs"][0]
    due = datetime.fromisoformat(job["next_run_iso"])
    assert abs((due - datetime.now(timezone.utc)).total_seconds()) < 5


def test_secrets_never_shown(cli, tmp_home, monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cr3t-token")
    cli("add", "Secret", "--at", "09:00", "--url", "https://alice:hunter2@example.com/x",
        "--header", "Authorization: Bearer ${TOKEN}", "--header", "X-Key: literal-key-value")  # fmt: skip
    listed = cli("list", "--json").json()["jobs"][0]
    assert listed["url"] == ["https://alice:***@example.com/x"]
    assert listed["headers"] == ["Authorization", "X-Key"]
    outputs = [cli("list").stdout, cli("list", "--json").stdout, cli("show", "secret").stdout, cli("show", "secret", "--json").stdout]
    for out in outputs:
        assert "hunter2" not in out and "literal-key-value" not in out and "s3cr3t-token" not in out
    assert "${TOKEN}" in tmp_home.jobs_file.read_text()  # the file keeps the template, unexpanded


def test_list_table_is_plain_text_when_not_a_terminal(cli):
    add_daily(cli)
    cli("add", "Forever", "--every", "30m", "--url", URL)
    out = cli("list").stdout
    assert "\x1b[" not in out  # no colour codes
    assert not set("│─┃━╭╮╰╯┏┓") & set(out)  # no box drawing
    for text in ("Daily Morning Crawl", "daily-morning-crawl", "active", "09:05", f"{START} → {END}",
                 f"{START} 09:05:00", "3 × 300s", "every 30m", "→ no end"):  # fmt: skip
        assert text in out


def test_list_without_a_job_file_is_empty_and_creates_nothing(cli, tmp_home):
    result = cli("list", "--json")
    assert result.exit_code == 0
    assert result.json() == {"success": True, "jobs": []}
    assert cli("list").exit_code == 0
    assert sorted(p.name for p in tmp_home.path.iterdir()) == []


def test_list_watch_and_json_together_are_refused(cli):
    result = cli("list", "--watch", "--json")
    assert result.exit_code == 2
    assert result.json()["success"] is False


# --- show, rm, pause, resume ------------------------------------------------------------------


def test_show_and_list_never_send_a_commands_control_characters_to_the_terminal(cli):
    assert cli("add", "Tty", "--every", "1h", "--command", "echo \x1b]0;pwned\x07").exit_code == 0
    for args in (["show", "tty"], ["list"]):
        out = cli(*args).stdout
        assert "\x1b" not in out and "\x07" not in out, args
    assert "\\x1b]0;pwned\\x07" in cli("show", "tty").stdout


def test_show_by_id_and_by_name(cli):
    add_daily(cli)
    by_id = cli("show", "daily-morning-crawl", "--json")
    by_name = cli("show", "Daily Morning Crawl", "--json")
    assert by_id.exit_code == by_name.exit_code == 0
    assert by_id.json()["job"]["id"] == by_name.json()["job"]["id"] == "daily-morning-crawl"
    assert by_id.json()["runs"] == []
    assert set(by_id.json()) == {"success", "job", "runs"}
    text = cli("show", "daily-morning-crawl").stdout
    assert "Daily Morning Crawl" in text and "no runs yet" in text


@pytest.mark.parametrize("command", ["show", "rm", "pause", "resume", "run-now", "history", "edit"])
def test_unknown_job_is_exit_1(cli, command):
    add_daily(cli)
    extra = ["--at", "10:00"] if command == "edit" else []
    result = cli(command, "no-such-job", *extra)
    assert result.exit_code == 1
    assert result.stderr.startswith("crawlsched: error: ") and '"no-such-job"' in result.stderr
    assert result.stderr.count("\n") == 1
    as_json = cli(command, "no-such-job", *extra, "--json")
    assert as_json.exit_code == 1
    assert as_json.json() == {"success": False, "error": 'no job with id or name "no-such-job"'}


def test_rm_with_yes(cli, tmp_home):
    add_daily(cli)
    add_daily(cli, "Other")
    result = cli("rm", "daily-morning-crawl", "--yes", "--json")
    assert result.exit_code == 0
    data = result.json()
    assert data["success"] is True and data["removed"] == ["daily-morning-crawl"] and data["message"]
    assert data["job"]["id"] == "daily-morning-crawl"
    assert [t["id"] for t in jobs_of(tmp_home)] == ["other"]


def test_rm_asks_on_a_terminal(cli, tmp_home, monkeypatch):
    monkeypatch.setattr("crawlsched.cli._stdin_is_tty", lambda: True)
    add_daily(cli)
    before = tmp_home.jobs_file.read_bytes()
    declined = cli("rm", "daily-morning-crawl", input="n\n")
    assert declined.exit_code == 1
    assert tmp_home.jobs_file.read_bytes() == before
    accepted = cli("rm", "daily-morning-crawl", input="y\n")
    assert accepted.exit_code == 0
    assert "Delete job 'Daily Morning Crawl'" in accepted.stdout
    assert tomllib.loads(tmp_home.jobs_file.read_text()).get("jobs", []) == []


def test_pause_and_resume_write_paused_in_the_file(cli, tmp_home):
    add_daily(cli)
    paused = cli("pause", "daily-morning-crawl", "--json")
    assert paused.exit_code == 0
    assert paused.json()["job"]["status"] == "paused" and paused.json()["job"]["paused"] is True
    assert paused.json()["job"]["next_run"] is not None  # a paused job still shows its next run
    assert jobs_of(tmp_home)[0]["paused"] is True
    resumed = cli("resume", "Daily Morning Crawl", "--json")
    assert resumed.exit_code == 0
    assert resumed.json()["job"]["status"] == "active"
    assert "paused" not in jobs_of(tmp_home)[0]


# --- retry-config, edit, validate, prune -------------------------------------------------------


def test_retry_config_shows_and_sets_the_defaults(cli, tmp_home):
    cli("add", "Inherits", "--at", "09:00", "--url", URL)
    shown = cli("retry-config", "--json").json()
    assert shown["success"] is True
    assert shown["defaults"]["max_retries"] == 3 and shown["defaults"]["retry_delay"] == 300
    assert not tmp_home.jobs_file.read_text().startswith("[defaults]")  # showing writes nothing
    result = cli("retry-config", "--max-retries", 5, "--retry-delay", 600, "--retry-backoff", 2, "--retry-max-delay", 3600, "--json")
    assert result.exit_code == 0
    d = result.json()["defaults"]
    assert (d["max_retries"], d["retry_delay"], d["retry_backoff"], d["retry_max_delay"]) == (5, 600, 2, 3600)
    assert tomllib.loads(tmp_home.jobs_file.read_text())["defaults"] == {
        "max_retries": 5, "retry_delay": 600, "retry_backoff": 2, "retry_max_delay": 3600,
    }  # fmt: skip
    job = cli("list", "--json").json()["jobs"][0]
    assert (job["max_retries"], job["retry_delay"]) == (5, 600)  # reaches a job that sets none
    assert "max_retries = 5" in cli("retry-config").stdout


def test_defaults_sets_the_default_crawl_and_a_job_without_one_uses_it(cli, tmp_home):
    tmp_home.jobs_file.write_text("# my jobs\n[defaults]\nmax_retries = 2  # kept\n")
    result = cli("defaults", "--url", URL, "--url", "https://example.com/b", "--tz", "Asia/Jakarta", "--timeout", 60,
                 "--catch-up", "none", "--max-concurrent", 4, "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["message"] == "✅ Defaults updated"
    assert result.json()["keys_set"] == ["catch_up", "max_concurrent", "max_retries", "timeout", "timezone", "url"]
    text = tmp_home.jobs_file.read_text()
    assert text.startswith("# my jobs\n[defaults]\nmax_retries = 2  # kept\n")  # written through the style-preserving editor
    assert tomllib.loads(text)["defaults"] == {
        "max_retries": 2, "url": [URL, "https://example.com/b"], "timezone": "Asia/Jakarta", "timeout": 60,
        "catch_up": "none", "max_concurrent": 4,
    }  # fmt: skip
    assert cli("add", "Plain", "--at", "09:00").exit_code == 0  # no --url: the default crawl
    job = cli("show", "plain", "--json").json()["job"]
    assert (job["url"], job["timezone"], job["timeout"]) == ([URL, "https://example.com/b"], "Asia/Jakarta", 60)


def test_defaults_without_options_shows_the_keys_and_writes_nothing(cli, tmp_home):
    assert cli("defaults").stdout.startswith("Defaults: [defaults] sets nothing")
    assert not tmp_home.jobs_file.exists()
    tmp_home.jobs_file.write_text('[defaults]\nurl = "https://user:pw@example.com/x"\npaused = true\n')
    before = tmp_home.jobs_file.read_bytes()
    shown = cli("defaults")
    assert shown.exit_code == 0
    assert shown.stdout.splitlines() == ["Defaults:", '  url = ["https://user:***@example.com/x"]', "  paused = true"]
    data = cli("defaults", "--json").json()
    assert data["defaults"]["url"] == ["https://user:***@example.com/x"] and data["defaults"]["paused"] is True
    assert tmp_home.jobs_file.read_bytes() == before


def test_defaults_unset_of_keys_not_set_leaves_the_file_byte_for_byte(cli, tmp_home):
    add_daily(cli)
    before = tmp_home.jobs_file.read_bytes()
    result = cli("defaults", "--unset", "timeout", "--unset", "catch_up")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Defaults unchanged (timeout, catch_up are not set)")
    assert cli("defaults", "--unset", "timeout", "--json").json()["message"] == "Defaults unchanged (timeout is not set)"
    assert tmp_home.jobs_file.read_bytes() == before  # no empty [defaults] table added


def test_defaults_url_replaces_a_default_command_and_unset_removes_a_key(cli, tmp_home):
    tmp_home.jobs_file.write_text('[defaults]\ncommand = "scrapy crawl news"\ntimezone = "UTC"\n')
    assert cli("defaults", "--url", URL).exit_code == 0
    assert tomllib.loads(tmp_home.jobs_file.read_text())["defaults"] == {"timezone": "UTC", "url": [URL]}
    assert cli("defaults", "--unset", "timezone", "--unset", "paused").exit_code == 0
    assert tomllib.loads(tmp_home.jobs_file.read_text())["defaults"] == {"url": [URL]}


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "ftp://x/"], 'defaults.url: "ftp://x/" is not an http(s) URL'),
    (["--url", URL, "--command", "echo"], 'command: "echo" cannot be given together with --url'),
    (["--tz", "Mars/Base"], 'defaults.timezone: "Mars/Base" is not a known IANA time zone'),
    (["--timeout", "-5"], "timeout: \"-5\" must be at least 0s"),
    (["--catch-up", "some"], 'defaults.catch_up: "some" must be one of latest, none, all'),
    (["--max-concurrent", "0"], "defaults.max_concurrent: 0 must be at least 1"),
    (["--unset", "colour"], '--unset: "colour" is not a key of [defaults]'),
    (["--tz", "UTC", "--unset", "timezone"], '--unset: "timezone" is set by another option too'),
    (["--unset", "url"], "defaults: refused, the job file would not validate after this change (job 1: url: missing"),
], ids=["url", "url-and-command", "tz", "timeout", "catch-up", "max-concurrent", "unknown-key", "set-and-unset", "needed-crawl"])
def test_bad_defaults_are_refused_with_exit_2_and_change_nothing(cli, tmp_home, args, message):
    tmp_home.jobs_file.write_text(f'[defaults]\nurl = "{URL}"\n\n[[jobs]]\nid = "a"\nat = "09:00"\ntimezone = "UTC"\n')
    before = tmp_home.jobs_file.read_bytes()
    result = cli("defaults", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"crawlsched: error: {message}"), result.stderr
    assert tmp_home.jobs_file.read_bytes() == before


def test_retry_config_zero_disables_retry(cli, tmp_home):
    assert cli("retry-config", "--max-retries", 0).exit_code == 0
    assert tomllib.loads(tmp_home.jobs_file.read_text())["defaults"]["max_retries"] == 0


def test_edit_changes_only_the_given_fields(cli, tmp_home):
    add_daily(cli)
    result = cli("edit", "daily-morning-crawl", "--at", "07:30", "--max-retries", 5, "--name", "Early Crawl", "--json")
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["success"] is True and data["message"]
    assert data["job"]["schedule"] == "07:30" and data["job"]["name"] == "Early Crawl"
    assert data["job"]["id"] == "daily-morning-crawl"
    [t] = jobs_of(tmp_home)
    assert (t["at"], t["max_retries"], t["retry_delay"], t["url"]) == ("07:30", 5, 300, [URL])


def test_edit_new_schedule_kind_and_crawl_replace_the_old(cli, tmp_home):
    add_daily(cli)
    assert cli("edit", "daily-morning-crawl", "--cron", "0 10 * * 1", "--command", "scrapy crawl news").exit_code == 0
    [t] = jobs_of(tmp_home)
    assert "at" not in t and t["cron"] == "0 10 * * 1"
    assert "url" not in t and t["command"] == "scrapy crawl news"


def test_edit_no_end_removes_the_end_date(cli, tmp_home):
    add_daily(cli)
    result = cli("edit", "daily-morning-crawl", "--no-end", "--json")
    assert result.exit_code == 0
    assert result.json()["job"]["end_date"] is None
    assert "end_date" not in jobs_of(tmp_home)[0]


def test_edit_insecure_and_back(cli, tmp_home):
    add_daily(cli)
    cli("edit", "daily-morning-crawl", "--insecure")
    assert jobs_of(tmp_home)[0]["verify"] is False
    cli("edit", "daily-morning-crawl", "--verify-tls")
    assert "verify" not in jobs_of(tmp_home)[0]


def test_edit_with_nothing_to_change_is_refused(cli, tmp_home):
    add_daily(cli)
    before = tmp_home.jobs_file.read_bytes()
    result = cli("edit", "daily-morning-crawl")
    assert result.exit_code == 2 and "nothing to change" in result.stderr
    assert tmp_home.jobs_file.read_bytes() == before


def test_validate(cli, tmp_home):
    missing = cli("validate", "--json")
    assert missing.exit_code == 0 and missing.json()["job_count"] == 0
    assert not tmp_home.jobs_file.exists()
    add_daily(cli)
    ok = cli("validate", "--json")
    assert ok.exit_code == 0
    assert ok.json()["success"] is True and ok.json()["job_count"] == 1 and "OK" in ok.json()["message"]
    assert "OK, 1 job" in cli("validate").stdout


def test_prune_removes_finished_jobs_only(cli, tmp_home):
    add_daily(cli)
    old = date.today() - timedelta(days=40)
    with tmp_home.jobs_file.open("a") as fh:
        fh.write(f'\n[[jobs]]\nid = "old"\nname = "Old"\nat = "09:00"\nstart_date = {old}\n'
                 f'end_date = {old + timedelta(days=7)}\nurl = ["{URL}"]\ntimezone = "UTC"\n')  # fmt: skip
    assert cli("list", "--json").json()["jobs"][1]["status"] == "finished"
    assert cli("list", "--json").json()["jobs"][1]["next_run"] is None
    result = cli("prune", "--json")
    assert result.exit_code == 0
    assert result.json()["removed"] == ["old"] and result.json()["success"] is True
    assert [t["id"] for t in jobs_of(tmp_home)] == ["daily-morning-crawl"]
    assert cli("prune", "--json").json()["removed"] == []


# --- help and start-up --------------------------------------------------------------------------


def registered_commands():
    return [info.name for info in app.registered_commands]


def test_every_command_has_help_with_an_example(cli):
    names = registered_commands()
    assert {"add", "edit", "list", "show", "rm", "pause", "resume", "retry-config", "history",
            "status", "stop", "run-now", "validate", "prune"} <= set(names)  # fmt: skip
    for info in app.registered_commands:
        doc = info.callback.__doc__ or ""
        assert doc.strip(), f"{info.name} has no docstring"
        assert "crawlsched " in doc, f"{info.name}'s help has no example"
        result = cli(info.name, "--help")
        assert result.exit_code == 0, info.name
        assert doc.strip().splitlines()[0][:30] in result.stdout


def test_help_reads_well_no_braces_no_range_types_no_cut_summaries(cli):
    import re

    top = cli("--help").stdout
    summaries = " ".join(top.split("Commands:", 1)[1].split())
    for info in app.registered_commands:
        text = cli(info.name, "--help").stdout
        usage = text.splitlines()[0]
        assert "{" not in usage and "}" not in usage, usage  # `show JOB`, not `show {JOB}`
        assert not re.search(r"<(int|float|integer|text|path)[^>]*>", text), f"{info.name}: {text}"
        first = " ".join((info.callback.__doc__ or "").strip().split("\n\n", 1)[0].split())
        assert f"{info.name} {first}" in summaries, f"{info.name}'s summary is cut in --help"
    assert "..." not in summaries


def test_top_level_help_lists_the_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in registered_commands():
        assert name in result.stdout


HEAVY = ("requests", "schedule", "flask", "crawlsched.daemon", "crawlsched.crawl", "pydantic",
         "psycopg", "psycopg_pool", "procrastinate")  # the PostgreSQL state: loaded only for one


@pytest.mark.parametrize("args", [["--help"], ["list", "--json"], ["status", "--json"]], ids=["help", "list", "status"])
def test_the_cli_path_imports_nothing_heavy(tmp_home, args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "crawlsched", *args],
                          capture_output=True, text=True, env={**os.environ}, timeout=60)  # fmt: skip
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY}


@pytest.mark.parametrize("args, absent", [
    (["list", "--json"], {"crawlsched.cli.edit", "crawlsched.cli.settings", "crawlsched.cli.logs"}),
    (["-f", "jobs.toml", "validate"], {"crawlsched.cli.show", "crawlsched.cli.settings", "crawlsched.cli.daemon"}),
    (["--help"], {"crawlsched.cli.edit", "crawlsched.cli.settings", "crawlsched.cli.show", "crawlsched.cli.logs",
                  "crawlsched.cli.daemon", "crawlsched.cli.worker"}),  # the summaries' table is enough
], ids=["list", "validate", "help"])
def test_a_command_imports_only_the_module_of_its_own_commands(tmp_home, args, absent):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "crawlsched", *args], cwd=tmp_home.jobs_file.parent,
                          capture_output=True, text=True, env={**os.environ}, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    commands = {m for m in imported if m.startswith("crawlsched.cli.") and m != "crawlsched.cli.options"}
    assert not commands & absent


@pytest.mark.parametrize("columns", ["80", "60"])
def test_the_root_help_without_the_commands_loaded_is_the_full_apps_help(tmp_home, columns):
    """`crawlsched --help` prints the summaries' table (crawlsched.cli.summaries), not the commands'
    docstrings: the same text as the app with every command loaded, word for word and wrapped
    alike, or the table is stale."""
    full_app = "from crawlsched.cli import app; app(['--help'], prog_name='crawlsched')"
    texts = []
    for argv in (["-m", "crawlsched", "--help"], ["-c", full_app]):
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": columns}, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        texts.append(proc.stdout)
    assert "validate      Check the job file." in texts[0]
    assert texts[0] == texts[1]


def test_console_script_and_python_m_both_work(tmp_home):
    script = os.path.join(os.path.dirname(sys.executable), "crawlsched")
    for argv in ([script, "--help"], [sys.executable, "-m", "crawlsched", "--help"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "Usage: crawlsched" in proc.stdout


def test_defaults_on_a_broken_job_file_is_exit_2_naming_its_line(cli, tmp_home):
    tmp_home.jobs_file.write_text('[defaults]\ntimezone = "UTC\n')
    before = tmp_home.jobs_file.read_bytes()
    result = cli("defaults", "--url", URL)
    assert result.exit_code == 2
    assert result.stderr.startswith("crawlsched: error: jobs.toml:2: not valid TOML")
    assert tmp_home.jobs_file.read_bytes() == before


def test_readme_demo_and_unit_agree_on_how_soon_edits_are_noticed():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = " ".join((root / "README.md").read_text().split())
    assert "picked up within 2 s" in readme and "within about a second" not in readme
    assert "picks up changes within 2 s" in (root / "crawlsched" / "demo.py").read_text()
    assert "within 2 s" in (root / "contrib" / "crawlsched.service").read_text()


def help_example(text: str) -> list[str]:
    """The example command of a --help text, continuation lines (``\\``) joined, as argv."""
    import shlex

    lines = text.split("Example:", 1)[1].strip().splitlines()
    command = ""
    for line in lines:
        command += line.strip()
        if not command.endswith("\\"):
            break
        command = command[:-1] + " "
    return shlex.split(command)


def test_help_fits_an_80_column_terminal(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for info in app.registered_commands:
        text = cli(info.name, "--help").stdout
        too_wide = [line for line in text.splitlines() if len(line) > 80]
        assert not too_wide, f"{info.name} --help: {too_wide}"


def test_the_add_example_in_help_works_as_printed_next_year_too(cli, tmp_home):
    import time_machine

    argv = help_example(cli("add", "--help").stdout)
    assert argv[:2] == ["crawlsched", "add"]
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(days=400), tick=False):
        result = cli(*argv[1:])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "daily-morning-crawl\n"
