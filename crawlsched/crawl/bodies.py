"""A URL job's bodies on disk: their names, how one is saved, and whether a run has them all.

A body is streamed to ``.<name>.part``, fsynced, and renamed to its final name;
the rename is the commit point, so a body file either is whole or is not there
(SPEC §4). :func:`bodies_complete` is how recovery knows an interrupted attempt
had in fact finished. The names come from the URL *template*, so they are the
same for every attempt of a run and never hold a secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence


def body_name(index: int, url_template: str) -> str:
    """The final file name of URL number ``index``: ``00-example.com-news.body``.

    Built from the *template* (never the expanded URL, which may hold a secret)
    and from host + path only (a query may hold one too). Deterministic, so a
    retry of the same run finds what an earlier attempt saved.
    """
    rest = url_template.partition("://")[2] or url_template
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    host = host.rpartition("@")[2]  # drop user:password@
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{host}/{path}")
    slug = re.sub(r"[-.]{2,}", "-", slug).strip("-.")[:60].rstrip("-.")
    return f"{index:02d}-{slug or 'url'}.body"


def url_output(urls: Sequence[str], run_dir: Path) -> str:
    """A URL run's ``output``: the body file when the job fetches one URL, else the run's folder."""
    return str(run_dir / body_name(0, urls[0])) if len(urls) == 1 else str(run_dir)


def bodies_complete(urls: Sequence[str], run_dir: Path) -> bool:
    """True when every URL's final body file is in ``run_dir`` (the rename is the commit point)."""
    return all((run_dir / body_name(i, url)).is_file() for i, url in enumerate(urls))


def save_body(final: Path, chunks: Iterable[bytes], disk_error: Callable[[OSError], BaseException]) -> int:
    """Write ``chunks`` to ``.<final>.part``, fsync, rename to ``final``; returns the bytes written.

    No partial file survives: whatever stops the writing (an exception from ``chunks``,
    a full disk, Ctrl-C) removes the part file. An ``OSError`` is raised as
    ``disk_error(exc)``; anything else is re-raised as it is.
    """
    part = final.with_name(f".{final.name}.part")
    written = 0
    try:
        with open(part, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, final)
        fsync_dir(final.parent)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise disk_error(exc) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def fsync_dir(path: Path) -> None:
    """Make the rename itself durable: it is the commit point after a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def drop_if_empty(run_dir: Path) -> None:
    """An attempt that saved nothing leaves no empty ``data/<job>/<run>/`` behind (a retry makes it again)."""
    try:
        run_dir.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass


def remove_partial_bodies(run_dir: Path) -> int:
    """Delete the ``.<body>.part`` files of a run whose chain ended: no attempt will finish them.

    An attempt removes its own part file on any error; only a process killed mid-body leaves
    one, and the next attempt of the same run overwrites it. Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".body.part"):
            try:
                entry.unlink()
                removed += 1
            except OSError:
                pass
    return removed
