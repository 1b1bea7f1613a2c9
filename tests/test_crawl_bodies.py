"""crawl/bodies.py: a body's file name, its all-or-nothing save, and a run's completeness."""

from __future__ import annotations

import errno
import os

import pytest

from crawlsched.crawl.bodies import bodies_complete, body_name, remove_partial_bodies, save_body


@pytest.mark.parametrize("url", [
    "https://example.com/../../etc/passwd", "http://h/a b/c\\d/%00/é?x=1", "http://../..", "https://" + "x" * 500,
], ids=["dotdot", "odd-chars", "only-dots", "long"])
def test_body_name_is_a_safe_file_name(url):
    name = body_name(0, url)
    assert name.startswith("00-") and name.endswith(".body") and len(name) <= 70
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert ".." not in name
    assert body_name(0, url) == name



def test_a_saved_body_appears_only_under_its_final_name(tmp_path):
    final = tmp_path / body_name(0, "https://example.com/news")
    assert save_body(final, iter([b"hello ", b"world"]), OSError) == 11
    assert final.read_bytes() == b"hello world"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert bodies_complete(["https://example.com/news"], tmp_path)


def test_a_body_whose_chunks_fail_leaves_no_part_file_and_the_error_passes_through(tmp_path):
    final = tmp_path / "00-x.body"

    def chunks():
        yield b"half"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_body(final, chunks(), OSError)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_error_while_saving_is_raised_as_the_callers_error_and_leaves_nothing(tmp_path):
    final = tmp_path / "00-x.body"

    def chunks():
        yield b"half"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(LookupError, match="disk: 28"):
        save_body(final, chunks(), lambda exc: LookupError(f"disk: {exc.errno}"))
    assert list(tmp_path.iterdir()) == []


def test_partial_bodies_of_an_ended_run_are_removed_and_finished_ones_kept(tmp_path):
    (tmp_path / "00-a.body").write_text("whole")
    (tmp_path / ".01-b.body.part").write_text("half")
    (tmp_path / ".notes").write_text("mine")
    assert remove_partial_bodies(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes", "00-a.body"]
    assert remove_partial_bodies(tmp_path / "missing") == 0
