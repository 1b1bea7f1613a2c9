"""The daemon's first start on a fresh home, in this process, for a CPU profile or callgrind.

    valgrind --tool=callgrind --callgrind-out-file=cg.out .venv/bin/python bench/start_to_ready.py
    .venv/bin/python bench/start_to_ready.py --until load --jobs 100000     # only the parse of the file

The job file is the bench's (``crawlsched_bench.write_jobs_toml``: 200 jobs due together, the
rest spread over a day), or ``--file``. ``--until ready`` stops the process at the daemon's
ready line, before the parse cache is written after it; ``turn`` at its first loop turn; ``load``
after parsing the file as the daemon's first load does (no parse cache). It prints the CPU time
(all threads) to stderr. Set PYTHONHASHSEED=0 for repeatable instruction counts, and run once
first so that the byte code is compiled.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--file", type=Path, help="this job file instead of the bench's")
    p.add_argument("--until", choices=("load", "ready", "turn"), default="ready")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="crawlsched-start-"))
    jobs_file = home / "jobs.toml"
    if args.file:
        shutil.copy(args.file, jobs_file)
    else:
        from crawlsched_bench import write_jobs_toml

        write_jobs_toml(jobs_file, args.jobs, 200, (int(time.time()) // 60 + 60) * 60)
    os.environ.update(CRAWLSCHED_JOBS=str(jobs_file), CRAWLSCHED_HOME=str(home), TZ="UTC",
                      XDG_CACHE_HOME=str(home / "xdg-cache"))
    start = time.process_time()

    def stop(*_a: object, **_k: object) -> None:
        print(f"{args.until}: {time.process_time() - start:.3f} s of CPU", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        shutil.rmtree(home, ignore_errors=True)
        os._exit(0)

    if args.until == "load":
        from crawlsched.jobcache import ParseCache

        ParseCache(home / "cache", jobs_file, "UTC").parse(jobs_file.read_text(), None, jobs_file.name)
        stop()
    import crawlsched.daemon
    import crawlsched.jobread

    if args.until == "ready":
        crawlsched.jobread.JobReads.save_cache_later = stop  # type: ignore[method-assign]
    else:
        crawlsched.daemon.Daemon.turn = stop  # type: ignore[method-assign]
    from crawlsched.cli import main as cli

    sys.argv = ["crawlsched", "daemon"]
    cli()


if __name__ == "__main__":
    main()
