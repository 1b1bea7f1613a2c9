"""Editing TOML text in place (crawlsched/tomledit.py): tables written in one form, other bytes kept."""

from __future__ import annotations

import tomllib
from datetime import date

import pytest

from crawlsched.errors import CrawlschedError
from crawlsched.jobfile import parse_text
from crawlsched.tomledit import (
    _toml_inline,
    append_text,
    edit_defaults,
    edit_job_table,
    remove_job_table,
    render_table,
)

TWO = ('# mine\n[defaults]\ntimezone = "UTC"  # zone\nurl = "https://example.com/"\n\n'
       '# first\n[[jobs]]\nid = "a"\nat = "09:00"  # a comment\n\n'
       '# second\n[[jobs]]\nid = "b"\nat = "10:00"\n')


def test_toml_keys_with_a_trailing_newline_are_quoted():
    text = "h = " + _toml_inline({"a\n": "v"})
    assert tomllib.loads(text) == {"h": {"a\n": "v"}}


def test_a_table_is_written_in_the_specs_key_order_and_reads_back_the_same():
    table = {"paused": True, "name": "Daily", "id": "daily", "at": "09:05", "start_date": date(2025, 11, 8),
             "url": ("https://a/", "https://b/"), "headers": {"X-Api": "${TOKEN}"}, "end_date": None}
    text = render_table(table)
    assert text.splitlines()[:4] == ["[[jobs]]", 'id = "daily"', 'name = "Daily"', 'at = "09:05"']
    [read] = tomllib.loads(text)["jobs"]
    assert read == {**{k: v for k, v in table.items() if v is not None}, "url": ["https://a/", "https://b/"]}


@pytest.mark.parametrize("text, joined", [("", "X"), ("a\n", "a\n\nX"), ("a\n\n", "a\n\nX"), ("a", "a\n\nX")])
def test_an_appended_table_is_one_blank_line_after_the_text(text, joined):
    assert append_text(text, "X") == joined


def test_editing_one_table_keeps_every_other_byte():
    current = parse_text(TWO)
    new = edit_job_table(TWO, current, "b", lambda t: t.__setitem__("max_retries", 4))
    assert new.startswith(TWO[: TWO.index("# second")]) and "max_retries = 4" in new
    assert [j.max_retries for j in parse_text(new).jobs] == [current.jobs[0].max_retries, 4]


def test_removing_a_table_leaves_the_comments_of_what_follows():
    new = remove_job_table(TWO, parse_text(TWO), "a")
    assert [j.id for j in parse_text(new).jobs] == ["b"]
    assert "# second\n[[jobs]]" in new and "# mine\n" in new and "a comment" not in new


def test_defaults_are_edited_in_place_keeping_their_comments():
    new = edit_defaults(TWO, {"max_retries": 2, "url": None})
    assert 'timezone = "UTC"  # zone' in new and "max_retries = 2" in new and "https://example.com/" not in new
    assert new.endswith(TWO[TWO.index("\n# first"):])


def test_defaults_missing_are_added_above_the_first_table():
    text = '# mine\n[[jobs]]\nid = "a"\nat = "09:00"\nurl = "https://example.com/"\n'
    new = edit_defaults(text, {"max_retries": 2})
    assert new.startswith("# mine\n[defaults]\nmax_retries = 2\n") and new.endswith(text[len("# mine\n"):])
    assert parse_text(new).defaults.max_retries == 2


def test_jobs_written_as_an_inline_array_are_not_edited_in_place():
    text = 'jobs = [{ id = "a", at = "09:00", url = "https://example.com/" }]\n'
    with pytest.raises(CrawlschedError, match="inline"):
        edit_job_table(text, parse_text(text), "a", lambda t: None)
