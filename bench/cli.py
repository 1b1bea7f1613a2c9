#!/usr/bin/env python3
"""CLI timings only: `crawlsched --help`, `list --json` and `add` at 1,000 and 10,000 jobs,
next to the floor `python -c "import typer, rich"`, warm, medians.

    .venv/bin/python bench/cli.py [--runs N]

The same measurement as `bench/run.py --only cli` (this is a shortcut to it).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "cli", *sys.argv[1:]]))
