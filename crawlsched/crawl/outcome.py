"""What one attempt returns (:class:`Outcome`) and the wording its messages share.

Every path of a crawl ends in an Outcome, never in an exception: the daemon's
retry loop stays a loop over outcomes. The message is forced to one short line
here, so no path can put a traceback or a megabyte of output into the state
database.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

MAX_MESSAGE = 300
#: The errors of a full disk (or a file-size limit): the other URLs of the attempt cannot fare better.
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class Outcome:
    """What one attempt did. ``message`` is one line of at most 300 characters."""

    ok: bool
    message: str
    permanent: bool = False  #: retrying cannot help (4xx, malformed URL, missing ${VAR}, …)
    interrupted: bool = False  #: stopped by the cancel event (shutdown, job removed)
    http_status: int | None = None  #: the last HTTP status seen
    exit_code: int | None = None
    bytes: int | None = None  #: bytes of the bodies saved by this attempt
    output: str | None = None  #: the body file (one URL), the run's folder (several), or the command's log
    retry_after: float | None = None  #: seconds, from a Retry-After header

    def __post_init__(self) -> None:
        # Enforced here, not at each call site, so no path can put a multi-line
        # traceback or a megabyte of output into the state database.
        object.__setattr__(self, "message", one_line(self.message))


def one_line(text: str) -> str:
    """Collapse to one line of at most MAX_MESSAGE characters (control characters removed)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def secs(value: float) -> str:
    """A number of seconds as messages show it: ``2``, ``0.5``."""
    return f"{value:g}"


def disk_message(exc: OSError, what: str) -> str:
    """``disk full (ENOSPC): cannot write …``, or ``cannot write …: Permission denied``."""
    if exc.errno in DISK_FULL:
        return f"disk full ({errno.errorcode.get(exc.errno, exc.errno)}): {what}"
    return f"{what}: {exc.strerror or type(exc).__name__}"
