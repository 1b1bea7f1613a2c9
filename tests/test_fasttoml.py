"""The fast path for plain ``[[jobs]]`` tables (crawlsched/fasttoml.py): what it reads is exactly
what ``tomllib`` reads; what it does not recognise is left to ``tomllib`` (None), never guessed."""

from __future__ import annotations

import tomllib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawlsched.fasttoml import jobs_table

PLAIN = [
    '[[jobs]]\nid = "a"\nname = "A b"\ncron = "0 3 * * *"\nstart_date = 2025-01-01\n\n',
    '[[jobs]]\r\nid = "a"\r\nmax_retries = 0\r\npaused = true\r\n',
    '  [[ jobs ]]  # the first\n\tid=\"a\"  # trailing\n# a comment\n\n   \nkeep_runs = -12\nverify = false',
    '[[jobs]]\nid = "é ☃ \t tab"\nname = ""\ntimeout = +5\n# last line, no newline',
    '[[jobs]]\nid = "x"\nname = "# not a comment"\nend_date = 9999-12-30\n',
    '[[jobs]]\n',
]

NOT_PLAIN = [
    '[[jobs]]\nid = "a\\tb"\n',  # an escape
    '[[jobs]]\nid = \'a\'\n',  # a literal string
    '[[jobs]]\nretry_delay = 1.5\n',  # a float
    '[[jobs]]\nmax_bytes = 1_000\n',  # underscores
    '[[jobs]]\nurl = ["http://a"]\n',  # an array
    '[[jobs]]\nheaders = { A = "b" }\n',  # an inline table
    '[[jobs]]\n"id" = "a"\n',  # a quoted key
    '[[jobs]]\nheaders.A = "b"\n',  # a dotted key
    '[[jobs]]\nid = "a"\nid = "b"\n',  # a repeated key: tomllib refuses it
    '[[jobs]]\nstart_date = 2025-02-30\n',  # no such day: tomllib refuses it
    '[[jobs]]\ncreated_at = 2025-01-01 10:00:00\n',  # a date-time
    '[[jobs]]\nkeep_runs = 012\n',  # a leading zero: tomllib refuses it
    '[[jobs]]\nid = "a"\rname = "b"\n',  # a lone carriage return
    '[[jobs]]\nid = "a\x01"\n',  # a control character
    '[[jobs]]\nid = "a" x\n',  # something after the value
    '[[jobs]]\n[jobs.headers]\nA = "b"\n',  # a sub-table
    '[jobs]\nid = "a"\n',  # not an array of tables
    '[[jobs]]\nid = """a"""\n',  # a multi-line string
    '[[jobs]]\npaused = True\n',  # not TOML's boolean
    '[[jobs]]\nmax_bytes = ' + "9" * 5000 + "\n",  # int() refuses it: tomllib's error
]


@pytest.mark.parametrize("text", PLAIN)
def test_a_plain_table_reads_as_tomllib_reads_it(text):
    table = jobs_table(text)
    assert table == tomllib.loads(text)["jobs"][0]
    assert [type(v) for v in table.values()] == [type(v) for v in tomllib.loads(text)["jobs"][0].values()]


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_is_left_to_tomllib(text):
    assert jobs_table(text) is None


def test_equal_values_of_one_parse_are_one_object():
    shared: dict = {}
    a = jobs_table('[[jobs]]\nid = "j1"\nname = "j1"\ncommand = "true"\nstart_date = 2025-01-01\n', shared)
    b = jobs_table('[[jobs]]\nid = "j2"\nname = "j2"\ncommand = "true"\nstart_date = 2025-01-01\n', shared)
    assert a["id"] is a["name"]
    assert a["command"] is b["command"] and a["start_date"] is b["start_date"] == date(2025, 1, 1)


_keys = st.sampled_from(["id", "name", "cron", "max_retries", "paused", "start_date", "a-b", "9"])
_values = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8).map(lambda s: '"' + s + '"'),
    st.integers(-10**6, 10**6).map(str), st.sampled_from(["true", "false", "1.0", "0x1f", "+0", "-0", "00"]),
    st.dates(date(1, 1, 1), date(9999, 12, 31)).map(lambda d: d.isoformat()),
    st.sampled_from(["2025-02-29", "2024-02-29", "2025-13-01", "2025-1-1", "[]", "{}", "'x'"]),
)
_line = st.one_of(st.tuples(_keys, _values, st.sampled_from(["", " ", " # c", "\t#"])).map(lambda t: f"{t[0]} = {t[1]}{t[2]}"),
                  st.sampled_from(["", "   ", "# note", "\t# é"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, max_size=6), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_whatever_the_text_the_fast_path_agrees_with_tomllib(lines, newline, final):
    text = "[[jobs]]" + newline + newline.join(lines) + (newline if final else "")
    table = jobs_table(text)
    try:
        expected = tomllib.loads(text)["jobs"][0]
    except (tomllib.TOMLDecodeError, ValueError):
        assert table is None
        return
    if table is not None:
        assert table == expected
        assert [type(v) for v in table.values()] == [type(v) for v in expected.values()]
