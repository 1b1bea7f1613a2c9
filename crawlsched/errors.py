"""The few exceptions crawlsched raises on purpose.

Each builds its own message; the CLI prints it as one line on stderr and exits
with the class's ``exit_code`` (SPEC §5); the web API maps ``http_status``.
"""

from __future__ import annotations


class CrawlschedError(Exception):
    """Base of every deliberate crawlsched error."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidValue(CrawlschedError, ValueError):
    """A value a user gave is not allowed: names the field, the value and what is allowed."""

    exit_code = 2
    http_status = 422

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = _show(value)
        super().__init__(f"{field}: {shown} {allowed}")


class DuplicateName(InvalidValue):
    """A job with that name exists already (HTTP 409)."""

    http_status = 409

    def __init__(self, name: str) -> None:
        super().__init__("name", name, "is taken by another job; names are unique")


class JobFileError(CrawlschedError):
    """The job file does not parse or does not validate: ``jobs.toml:LINE: …``."""

    exit_code = 2
    http_status = 500

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        self.path = path
        self.line = line
        self.detail = detail
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {detail}")


class JobNotFound(CrawlschedError, LookupError):
    """No job has that id or exact name."""

    exit_code = 1
    http_status = 404

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no job with id or name {_show(ref)}")


class RunNotFound(CrawlschedError, LookupError):
    """The job has no run of that name, or no run at all (``logs``, exit 1)."""

    exit_code = 1
    http_status = 404


class DaemonNotRunning(CrawlschedError):
    """The command needs the daemon and none is up."""

    exit_code = 3
    http_status = 503


class JobBusy(CrawlschedError):
    """The job is running elsewhere (``run`` refuses, SPEC §5)."""

    exit_code = 1
    http_status = 409


class ChainBusy(JobBusy):
    """Another live process holds the job's chain (SPEC §5: a job never overlaps itself).

    ``claim`` is the ``crawlsched.state.Claim`` that holds it: who, and whether it waits for a retry.
    """

    def __init__(self, claim: object, message: str) -> None:
        self.claim = claim
        super().__init__(message)


class DemoFailed(CrawlschedError):
    """``crawlsched demo``: its daemon stopped on its own; ``tail`` holds its last lines."""

    exit_code = 1

    def __init__(self, message: str, tail: list[str]) -> None:
        self.tail = tail
        super().__init__(message)


class StateError(CrawlschedError):
    """The state database cannot be used."""

    exit_code = 1


def _show(value: object) -> str:
    """Quote a value for a message, short and on one line (NUL and newlines escaped)."""
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        # Control characters (NUL, newlines, escape sequences) are shown escaped
        # so one bad value cannot break the one-line error or the terminal.
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        return '"' + text.replace('"', '\\"') + '"'
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits
        text = "a number of thousands of digits"
    return text if len(text) <= 80 else text[:77] + "..."
