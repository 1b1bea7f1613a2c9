"""Tables alike (``crawlsched.alike``): a ``[[jobs]]`` table like an earlier one but for its id and
name is built from that job, never read again, and the parse gives exactly what the whole-text
parse gives — jobs, lines, errors."""

from __future__ import annotations

import random

import pytest

import crawlsched.jobcache as jobcache
from crawlsched.errors import JobFileError
from crawlsched.jobcache import parse_segmented
from crawlsched.jobfile import parse_text

HEAD = '[defaults]\ntimezone = "UTC"\ncommand = "true"\nmax_retries = 0\n\n'

# The rest of a table: plain ones (fasttoml reads them) and unusual ones (tomllib does).
BODIES = [
    'cron = "47 0 * * *"\nstart_date = 2025-01-01\n',
    'cron = "5 1 * * *"\nstart_date = 2025-01-01\n',
    'every = "15m"\n',
    'every = "15m"\n# a comment\ncommand = "echo hi"\n',
    'at = "09:05"\nmax_retries = 2\npaused = true\n',
    'at = "09:05"\ncreated_at = "2025-03-01 10:00:00"\n',
    'every = "1h"\nurl = ["https://example.com/a", "https://example.com/b"]\n',
    'every = "1h"\nheaders = { X-A = "1" }\nurl = "https://example.com/"\n',
    'every = "1h"\ncommand = """\nid = "trap"\nname = "trap"\n"""\n',  # own lines inside a multi-line string
    "every = '1h'\n",
    'every = "1h" # a comment after\n',
    'every = "1h"\n[jobs.headers]\nX-B = "2"\n',
]
BAD_BODIES = [
    'every = "1h"\nend_date = 2024-01-01\nstart_date = 2025-01-01\n',  # end before start
    'every = "1h"\nfrequency = "often"\n',  # an unknown key
]
GOOD_NAMES = ["{id}", "Job {id}", "  padded {id}  ", "ünïcode {id}"]
BAD_NAMES = ["", "   ", "tab\\there", "x" * 201]
BAD_IDS = ["Upper", "-dash", "sp ace", "x" * 65]


def _table(rng: random.Random, i: int, bad: bool) -> str:
    job_id = f"j{i:04d}"
    name = rng.choice(GOOD_NAMES).format(id=job_id)
    body = rng.choice(BODIES[:4]) if rng.random() < 0.8 else rng.choice(BODIES)
    style = rng.random() * 0.95
    if bad:  # one problem in the file
        choice = rng.randrange(4)
        if choice == 0:
            job_id = rng.choice(BAD_IDS)
        elif choice == 1:
            name = rng.choice(BAD_NAMES)
        elif choice == 2:
            body = rng.choice(BAD_BODIES)
        else:
            style = 0.97
    lines = [f'id = "{job_id}"']
    if style < 0.55:
        lines.append(f'name = "{name}"')
    elif style < 0.7:
        lines.insert(0, f'name = "{name}"')  # the name first
    elif style < 0.8:
        pass  # no name: the name is the id
    elif style < 0.85:
        lines = [f'id="{job_id}"', f'name = "{name}"']  # written another way
    elif style < 0.9:
        lines.append(f"name = '{name}'")  # a literal string
    elif style < 0.95:
        lines.append(f'name = "{name}" # the name')
    else:
        lines.append(f'name = "{name}"\nname = "{name}"')  # twice: an error
    # the own lines before, between or after the body's lines (not in a string or a sub-table)
    where = rng.randrange(3) if '"""' not in body and '[' not in body else 0
    body_lines = body.splitlines()
    text_lines = body_lines[:where] + lines + body_lines[where:]
    return "[[jobs]]\n" + "\n".join(text_lines) + "\n\n"


def _file(seed: int, tables: int = 200) -> str:
    rng = random.Random(seed)
    bad_at = rng.randrange(tables) if seed % 4 == 0 else None
    text = HEAD + "".join(_table(rng, i, i == bad_at) for i in range(tables))
    if seed % 7 == 0:
        text = text.replace("\n", "\r\n")
    if seed % 11 == 0:  # a duplicate id
        text += '[[jobs]]\nid = "j0000"\nname = "again"\nevery = "1h"\n'
    return text


def _same_as_whole_text(text: str) -> None:
    try:
        whole = parse_text(text, "jobs.toml", "UTC")
    except JobFileError:
        assert parse_segmented(text, "UTC") is None  # the caller then parses the whole text: the same error
        return
    result = parse_segmented(text, "UTC")
    if result is None:
        return  # parsed whole: the same result by definition
    jobfile = result[0]
    assert jobfile.defaults == whole.defaults
    assert jobfile.jobs == whole.jobs
    assert [(j.line, j.explicit, j.created_at) for j in jobfile.jobs] == [
        (j.line, j.explicit, j.created_at) for j in whole.jobs]


@pytest.mark.parametrize("seed", range(60))
def test_a_file_of_tables_alike_parses_as_the_whole_text(seed):
    _same_as_whole_text(_file(seed))


@pytest.mark.parametrize("seed", range(2))
def test_two_texts_of_200_tables_alike_parse_as_the_whole_text_with_every_id_and_name_their_own(seed):
    rng = random.Random(seed)
    text = HEAD + "".join(
        f'[[jobs]]\nid = "j{i}"\nname = "{rng.choice(GOOD_NAMES).format(id=i)}"\n{rng.choice(BODIES[:3])}\n'
        for i in range(200))
    _same_as_whole_text(text)
    jobs = parse_segmented(text, "UTC")[0].jobs
    assert [j.id for j in jobs] == [f"j{i}" for i in range(200)]
    assert len({j.name for j in jobs}) == 200


@pytest.mark.parametrize(("own", "message"), [
    ('id = "Bad"\nname = "x"', "id"),
    ('id = "ok9"\nname = "   "', "name"),
    ('id = "ok9"\nname = "a\\tb"', "name"),
    ('id = "ok9"\nname = "' + "x" * 201 + '"', "name"),
])
def test_a_bad_id_or_name_in_a_table_alike_is_refused_with_the_whole_text_error(tmp_path, own, message):
    body = 'every = "15m"\nstart_date = 2025-01-01\n'
    text = HEAD + "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\n{body}\n' for i in range(50))
    text += f"[[jobs]]\n{own}\n{body}" + "#" * jobcache.CACHE_MIN_BYTES  # large enough for the cache
    assert parse_segmented(text, "UTC") is None
    with pytest.raises(JobFileError) as whole:
        parse_text(text, "jobs.toml", "UTC")
    cache = jobcache.ParseCache(tmp_path, tmp_path / "jobs.toml", "UTC")
    with pytest.raises(JobFileError) as cached:
        cache.parse(text, None, "jobs.toml")
    assert message in str(whole.value)
    assert str(cached.value) == str(whole.value)


def test_tables_alike_are_read_once(monkeypatch):
    reads = []
    real = jobcache.jobs_table

    def counting(segment, shared=None):
        reads.append(segment)
        return real(segment, shared)

    monkeypatch.setattr(jobcache, "jobs_table", counting)
    text = HEAD + "".join(f'[[jobs]]\nid = "j{i}"\nname = "Job {i}"\ncron = "{i % 2} 1 * * *"\n\n' for i in range(200))
    jobs = parse_segmented(text, "UTC")[0].jobs
    assert len(reads) == 2  # one table of each of the two schedules
    assert [j.name for j in jobs] == [f"Job {i}" for i in range(200)]
    assert [j.spec for j in jobs] == [f"{i % 2} 1 * * *" for i in range(200)]
    assert [j.line for j in jobs] == [6 + 5 * i for i in range(200)]


def test_a_table_alike_shares_only_what_cannot_change():
    text = HEAD + "".join(f'[[jobs]]\nid = "j{i}"\nname = "Job {i}"\nevery = "1h"\n\n' for i in range(3))
    a, b, _ = parse_segmented(text, "UTC")[0].jobs
    for field in ("spec", "kind", "urls", "explicit", "timezone", "command"):
        value = getattr(b, field)
        assert value is getattr(a, field) and hash(value) is not None  # one immutable object
    assert b.headers is a.headers == {}  # the [defaults] headers, shared by every job as before
    with pytest.raises(AttributeError):
        b.name = "x"  # type: ignore[misc]


def test_an_own_line_inside_a_multi_line_string_is_the_string_s_not_the_job_s():
    text = HEAD + "".join(f'[[jobs]]\nid = "j{i}"\nevery = "1h"\ncommand = """\nname = "n{i}"\n"""\n\n'
                          for i in range(5))
    _same_as_whole_text(text)
    assert [j.command for j in parse_segmented(text, "UTC")[0].jobs] == [f'name = "n{i}"\n' for i in range(5)]


def test_a_name_written_as_its_id_is_the_id_s_text_as_a_whole_parse_makes_it():
    text = HEAD + "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nevery = "1h"\n\n' for i in range(3))
    assert all(j.name is j.id for j in parse_segmented(text, "UTC")[0].jobs)  # one object: memory
