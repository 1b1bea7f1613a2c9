"""The options `add`, `edit` and `retry-config` share (SPEC §5): durations, cron macros; and `--version`."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from crawlsched import __version__

URL = "https://example.com/news"


def _table(tmp_home) -> dict:
    return tomllib.loads(tmp_home.jobs_file.read_text())["jobs"][0]


@pytest.mark.parametrize(("option", "key"), [("--retry-delay", "retry_delay"), ("--retry-max-delay", "retry_max_delay"),
                                             ("--timeout", "timeout")])
@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("1h30m", 5400), ("2d", 172800), ("45", 45), ("30s", 30),
                                               ("1.5", 1.5)])
def test_duration_options_take_what_every_takes_and_write_seconds(cli, tmp_home, option, key, text, seconds):
    result = cli("add", "News", "--every", "1h", "--url", URL, option, text)
    assert result.exit_code == 0, result.output
    assert _table(tmp_home)[key] == seconds
    assert type(_table(tmp_home)[key]) is type(seconds)  # whole seconds stay integers in the file


def test_edit_and_retry_config_take_durations_too(cli, tmp_home):
    assert cli("add", "News", "--every", "1h", "--url", URL).exit_code == 0
    assert cli("edit", "news", "--retry-delay", "10m", "--timeout", "2m").exit_code == 0
    assert (_table(tmp_home)["retry_delay"], _table(tmp_home)["timeout"]) == (600, 120)
    result = cli("retry-config", "--retry-delay", "5m", "--retry-max-delay", "1h", "--json")
    assert result.exit_code == 0, result.output
    defaults = tomllib.loads(tmp_home.jobs_file.read_text())["defaults"]
    assert (defaults["retry_delay"], defaults["retry_max_delay"]) == (300, 3600)


@pytest.mark.parametrize("macro", ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"])
def test_cron_takes_crons_macros(cli, tmp_home, macro):
    result = cli("add", "News", "--cron", macro, "--url", URL)
    assert result.exit_code == 0, result.output
    assert _table(tmp_home)["cron"] == macro
    listed = cli("list", "--json").json()["jobs"][0]
    assert listed["schedule"] == macro and listed["next_run"] is not None


def test_a_macro_in_the_file_validates(cli, tmp_home):
    tmp_home.jobs_file.write_text(f'[[jobs]]\nid = "a"\ncron = "@weekly"\nurl = ["{URL}"]\n')
    assert cli("validate").exit_code == 0


def test_version_prints_the_program_and_its_version(tmp_path):
    env = {**os.environ, "CRAWLSCHED_JOBS": str(tmp_path / "jobs.toml")}
    result = subprocess.run([sys.executable, "-m", "crawlsched", "--version"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"crawlsched {__version__}\n", "")
    assert not (tmp_path / "jobs.toml").exists()
