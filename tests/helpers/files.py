"""Folder trees, to see that a test wrote nothing where it must not."""

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
