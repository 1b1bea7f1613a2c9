"""The job file's watch (``crawlsched.watch``): inotify on a local folder, polling on a network one."""

from __future__ import annotations

import pytest

from crawlsched import watch


@pytest.mark.parametrize("magic", [0x6969, 0xFF534D42, 0x65735546])
def test_no_inotify_watch_on_a_network_file_system(tmp_path, monkeypatch, magic):
    monkeypatch.setattr(watch, "fs_type", lambda libc, folder: magic)
    assert watch.start(tmp_path / "jobs.toml", lambda: None) is None


def test_a_local_folder_is_watched_with_inotify(tmp_path):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    assert watch.network_fs(libc, bytes(tmp_path)) is None
    w = watch.start(tmp_path / "jobs.toml", lambda: None)
    assert w is not None
    w.close()
