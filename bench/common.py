"""Helpers shared by bench/run.py and bench/crawlsched_bench.py (project venv, stdlib only)."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path


def cpu_ns(pid: int) -> int:
    """CPU time (ns) consumed so far by all live threads of `pid` (/proc/<pid>/task/*/schedstat)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass  # thread exited meanwhile
    return total


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def measure_idle(pid: int, settle: float, idle_seconds: float, must_end_by: float | None = None) -> dict:
    """Sleep `settle`, then measure the CPU `pid` burns over `idle_seconds` of wall time.

    `must_end_by` (epoch): shorten the window so that it ends by then (the burst must not be
    inside it); the actual window is reported and the percentage computed over it.
    """
    time.sleep(settle)
    window = idle_seconds
    shortened = False
    if must_end_by is not None:
        left = must_end_by - time.time()
        if left < window:
            window, shortened = max(0.0, left), True
    if window < 0.5:
        return {"idle_window_s": window, "idle_cpu_ns": None, "idle_cpu_pct": None,
                "idle_shortened": True, "rss_kb": vm_rss_kb(pid), "threads": thread_count(pid)}
    c0, t0 = cpu_ns(pid), time.perf_counter()
    time.sleep(window)
    c1, t1 = cpu_ns(pid), time.perf_counter()
    wall = t1 - t0
    return {
        "idle_window_s": wall,
        "idle_cpu_ns": c1 - c0,
        "idle_cpu_pct": 100.0 * (c1 - c0) / (wall * 1e9),
        "idle_shortened": shortened,
        "rss_kb": vm_rss_kb(pid),
        "threads": thread_count(pid),
    }


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def lateness_summary(lateness_ms: list[float]) -> dict:
    return {
        "n": len(lateness_ms),
        "p50_ms": percentile(lateness_ms, 50),
        "p99_ms": percentile(lateness_ms, 99),
        "max_ms": max(lateness_ms) if lateness_ms else None,
        "min_ms": min(lateness_ms) if lateness_ms else None,
    }


class Watcher:
    """Drains a child's stdout/stderr into a log file; signals when a line contains `needle`."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, needle: str) -> None:
        self.needle = needle
        self.found = threading.Event()
        self.found_at: float | None = None  # perf_counter
        self.tail: list[str] = []
        self._lock = threading.Lock()
        self._log = open(log_path, "w", buffering=1)
        self._threads = []
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            if stream is None:
                continue
            th = threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            th.start()
            self._threads.append(th)

    def _pump(self, name: str, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            with self._lock:
                self._log.write(f"[{name}] {line}")
                self.tail.append(line.rstrip("\n"))
                del self.tail[:-40]
            if not self.found.is_set() and self.needle in line:
                self.found_at = time.perf_counter()
                self.found.set()

    def close(self, timeout: float = 2.0) -> None:
        for th in self._threads:
            th.join(timeout)
        with self._lock:
            self._log.close()

    def tail_text(self, n: int = 15) -> str:
        with self._lock:
            return "\n".join(self.tail[-n:])


def stop_process(proc: subprocess.Popen, term_timeout: float = 10.0) -> dict:
    """SIGTERM, wait, then SIGKILL. Returns how it went."""
    if proc.poll() is not None:
        return {"already_exited": True, "returncode": proc.returncode}
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(term_timeout)
        return {"stop_s": time.perf_counter() - t0, "returncode": proc.returncode, "killed": False}
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return {"stop_s": time.perf_counter() - t0, "returncode": proc.returncode, "killed": True}


def sleep_until(epoch: float) -> None:
    while True:
        left = epoch - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 1.0))


def next_minute(earliest: float) -> int:
    """The first whole minute (epoch) at or after `earliest`."""
    m = int(earliest)
    m += (-m) % 60
    return m if m >= earliest else m + 60


def next_second(earliest: float) -> int:
    s = int(earliest)
    return s if s >= earliest else s + 1


def machine_info() -> dict:
    info = {
        "cpu_model": None,
        "cores": os.cpu_count(),
        "ram_gib": None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["ram_gib"] = round(int(line.split()[1]) / 1024**2, 1)
                    break
    except OSError:
        pass
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info
