"""Folder trees, to see that a test wrote nothing where it must not; a text file's lines."""

from __future__ import annotations

import os
from pathlib import Path


def snapshot(root: Path, exclude: Path | None = None) -> set[str]:
    """Every path under ``root`` (relative), except those under ``exclude``."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if exclude is not None and (path == exclude or exclude in path.parents):
                continue
            out.add(str(path.relative_to(root)))
    return out


def lines(path: Path) -> list[str]:
    """A UTF-8 text file (a log, say) as its lines."""
    return path.read_text(encoding="utf-8").splitlines()
