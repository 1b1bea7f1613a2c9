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
        # A missing value (None) is not shown: "url: missing: …", never "url: None is missing: …".
        super().__init__(f"{field}: {allowed.removeprefix('is ')}" if value is None else f"{field}: {_show(value)} {allowed}")


class DuplicateName(InvalidValue):
    """A job with that name exists already (HTTP 409)."""

    http_status = 409

    def __init__(self, name: str) -> None:
        super().__init__("name", name, "is taken by another job; names are unique")


class JobFileError(CrawlschedError):
    """The job file does not parse or does not validate: ``jobs.toml:LINE: …``."""

    exit_code = 2
    http_status = 422  # a write through the API while the file is broken: refused, naming the line

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


# ``StorageUnavailable`` (the database cannot be written now) stays in ``crawlsched.state``: it is
# also a ``sqlite3.OperationalError``, and this module is on the path of ``crawlsched --help``,
# which does not load sqlite3.


class DaemonLockError(CrawlschedError):
    """Another daemon holds this home's lock, or the lock file cannot be taken."""

    exit_code = 1


class Refused(CrawlschedError):
    """A command that will not go ahead as asked (bad combination of options): exit 2."""

    exit_code = 2


class MissingVariable(CrawlschedError, KeyError, ValueError):
    """A ``${VAR}`` in a URL or header is not set in the environment.

    A KeyError (a lookup that failed) and a ValueError (a bad template) at once,
    so callers catching either builtin see it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} is not set (used as ${{{name}}})")


class SeedFileError(CrawlschedError):
    """The seed file cannot be imported; nothing was written (exit 2)."""

    exit_code = 2
    http_status = 422


class WebConfigError(CrawlschedError):
    """``--http`` cannot be served as asked (non-loopback without a token, a bad address): exit 2."""

    exit_code = 2


class BadRequest(CrawlschedError):
    """The body is not a JSON object (HTTP 400)."""

    exit_code = 2
    http_status = 400


class Forbidden(CrawlschedError):
    """A request this server will not serve: a foreign Host, a command without permission (403)."""

    exit_code = 2
    http_status = 403


class Unsupported(CrawlschedError):
    """A PATCH whose body is not JSON (415)."""

    exit_code = 2
    http_status = 415


def _show(value: object) -> str:
    """Quote a value for a message, short and on one line (NUL and newlines escaped).

    Values are written as JSON and TOML write them (``true``, ``null``, ``["a"]``), never
    as Python's ``True``, ``None`` or ``['a']``: the reader typed JSON, TOML or a shell word.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, dict)):
        import json

        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = "{…}" if isinstance(value, dict) else "[…]"
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:77] + "..."
        # Control characters (NUL, newlines, escape sequences) are shown escaped
        # so one bad value cannot break the one-line error or the terminal.
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        return '"' + text.replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        try:
            text = repr(value)
        except ValueError:  # an int of more than 4300 digits
            text = "a number of thousands of digits"
    elif hasattr(value, "isoformat"):  # a date or a date-time, as TOML writes it
        text = value.isoformat()  # type: ignore[attr-defined]
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def json_kind(value: object) -> str:
    """A JSON value's kind as JSON names it (``an array``, ``null``), for "must be …, not …" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "another kind of value"
