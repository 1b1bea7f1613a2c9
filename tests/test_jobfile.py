"""Job file text to a validated JobFile (crawlsched/jobfile.py): every error names ``jobs.toml:LINE``."""

from __future__ import annotations

import pytest

from crawlsched.errors import JobFileError
from crawlsched.jobfile import BOM, defaults_line, parse_text, segment_end

HEAD = '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/"\n'


def error_of(text: str) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        parse_text(text)
    return info.value


def test_jobs_come_in_file_order_each_with_its_header_line():
    jf = parse_text(HEAD + '\n[[jobs]]\nid = "b"\nat = "09:00"\n\n[[jobs]]\nid = "a"\nevery = "1h"\n')
    assert [(j.id, j.line) for j in jf.jobs] == [("b", 5), ("a", 9)]
    assert jf.defaults.timezone == "UTC" and jf.raw_defaults == {"timezone": "UTC", "url": "https://example.com/"}


def test_an_empty_file_has_no_jobs_and_the_default_defaults():
    jf = parse_text("")
    assert jf.jobs == () and jf.defaults.max_retries == parse_text("[defaults]\n").defaults.max_retries


def test_a_byte_order_mark_is_not_part_of_the_toml():
    assert [j.id for j in parse_text(BOM + HEAD + '[[jobs]]\nid = "a"\nat = "09:00"\n').jobs] == ["a"]


def test_a_toml_syntax_error_names_its_line():
    err = error_of(HEAD + '\n[[jobs]]\nid = "a"\nat = 09:00:00:00\n')
    assert (err.path, err.line) == ("jobs.toml", 7) and "not valid TOML" in err.detail
    assert "(at line" not in err.detail  # the line is in the prefix, once


def test_a_bad_value_names_the_line_of_its_key_and_the_jobs_number():
    err = error_of(HEAD + '\n[[jobs]]\nid = "a"\nat = "09:00"\n\n[[jobs]]\nid = "b"\nname = "b"\nmax_retries = -1\nat = "09:00"\n')
    assert err.line == 12 and err.detail.startswith("job 2: max_retries")


def test_a_bad_default_names_the_line_in_defaults():
    err = error_of('# top\n[defaults]\ntimezone = "Mars/Base"\n')
    assert err.line == 3 and "timezone" in err.detail


def test_an_unknown_top_level_key_is_refused_with_its_line():
    err = error_of('# mine\ndeafults = 1\n' + HEAD)
    assert err.line == 2 and "unknown top-level key" in err.detail


@pytest.mark.parametrize("second, what", [('id = "a"\nname = "other"', "id"), ('id = "b"\nname = "a"', "name")])
def test_two_jobs_with_one_id_or_one_name_are_refused_pointing_at_both(second, what):
    err = error_of(HEAD + f'\n[[jobs]]\nid = "a"\nat = "09:00"\n\n[[jobs]]\n{second}\nat = "10:00"\n')
    assert err.line == 9 and err.detail.startswith(f"{what}:") and "the other at line 5" in err.detail


def test_a_number_longer_than_python_converts_is_refused_with_its_line():
    err = error_of(HEAD + '[[jobs]]\nid = "a"\nat = "09:00"\nmax_retries = ' + "9" * 5000 + "\n")
    assert err.line == 7 and "4300 digits" in err.detail and "9999" not in err.detail


def test_a_control_character_in_a_quoted_key_is_shown_escaped_on_one_line():
    err = error_of(HEAD + '[[jobs]]\nid = "a"\nat = "09:00"\n"bad\\nkey" = 1\n')
    assert "\n" not in str(err) and "\\n" in str(err)


def test_jobs_as_something_else_than_tables_are_refused():
    err = error_of('jobs = "all"\n' + HEAD)
    assert err.line == 1 and "array of tables" in err.detail


def test_a_tables_segment_ends_at_the_next_header_but_not_at_its_own_sub_table():
    lines = ["[[jobs]]", 'id = "a"', "[jobs.headers]", 'X = "1"', "", "[[jobs]]", 'id = "b"']
    assert segment_end(lines, 0) == 5 and segment_end(lines, 5) == 7
    assert defaults_line(["# x", "  [ defaults ]  # mine"]) == 1 and defaults_line(["[[jobs]]"]) is None
