"""The benchmark's harness (bench/crawlsched_bench.py): it keeps its own CLI cache and reports cold and warm."""

from __future__ import annotations


def test_bench_cli_uses_the_work_folders_cache_and_reports_cold(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    import crawlsched_bench

    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent/user-cache")
    env = crawlsched_bench.crawlsched_env(tmp_path, tmp_path / "jobs.toml")
    assert env["XDG_CACHE_HOME"] == str(tmp_path / "xdg-cache")
    r = crawlsched_bench._time_cmd([sys.executable, "-c", "pass"], env, 2)
    assert r["cold_ms"] > 0 and len(r["ms"]) == 2 and r["median_ms"] > 0
