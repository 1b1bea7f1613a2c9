"""PostgreSQL connection strings (``[defaults] state``, ``$CRAWLSCHED_STATE``): check, show, expand.

A state DSN is a libpq URL (``postgresql://`` or ``postgres://``) or a libpq
``key=value`` conninfo string, and may hold ``${VAR}`` templates (SPEC §10).
It is a *template*: kept and shown as written, expanded only when the state is
opened (:func:`expand_dsn`), and never shown with a password —
:func:`redact_dsn` is the one way a DSN reaches a message, a log line or
``status``. Text only, no parsing library: this module sits on the CLI's path.
"""

from __future__ import annotations

import re
from typing import Mapping

from crawlsched.errors import InvalidValue, MissingVariable

__all__ = ["URL_SCHEMES", "check_dsn", "dsn_variables", "expand_dsn", "is_conninfo", "redact_dsn", "secrets_of"]

URL_SCHEMES = ("postgresql://", "postgres://")
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# One conninfo pair: key = value, where value is a bare word or a single-quoted text (\' and \\ escaped).
_PAIR_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)\s*", re.DOTALL)
_QUERY_PASSWORD_RE = re.compile(r"(?i)(^|&)password=[^&#]*")
ALLOWED = ('takes a PostgreSQL connection string: a libpq URL (postgresql://user@host/db or postgres://…) or '
           'key=value pairs (host=db.internal dbname=crawlsched); ${VAR} is read from the environment')
HIDDEN = "(a connection string; not shown: its password could not be told apart)"


def is_conninfo(text: str) -> bool:
    """``host=… dbname=…``: one or more ``key=value`` pairs and nothing else."""
    return _pairs(text) is not None


def _pairs(text: str) -> list[tuple[str, str, str]] | None:
    """The conninfo's pairs as (key, value as written, the pair's text), or None when it is not conninfo."""
    out, pos = [], 0
    while pos < len(text):
        match = _PAIR_RE.match(text, pos)
        if match is None or match.end() == pos:
            return None
        out.append((match.group(1), match.group(2), match.group(0)))
        pos = match.end()
    return out or None


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for every message: ``postgresql://u:pw@h/db?password=x`` → ``postgresql://u@h/db``.

    A URL loses its userinfo password and any ``password`` query parameter; a
    conninfo string loses its ``password=`` pair. ``${VAR}`` templates stay as
    written (a template in the password place goes too). Text that is neither
    but mentions a password is not shown at all.
    """
    text = dsn.strip()
    if text.lower().startswith(URL_SCHEMES):
        scheme, _, rest = text.partition("://")
        before_query, qmark, query = rest.partition("?")
        query, hash_, fragment = query.partition("#")
        userinfo, at, hosts = before_query.rpartition("@")  # the last @: a password's own unencoded @ stays hidden
        if at:
            before_query = userinfo.split(":", 1)[0] + ("@" if userinfo.split(":", 1)[0] else "") + hosts
        if qmark:
            query = _QUERY_PASSWORD_RE.sub("", query).lstrip("&")
        tail = (f"?{query}" if query else "") + (f"#{fragment}" if hash_ else "")
        return f"{scheme}://{before_query}{tail}"
    pairs = _pairs(text)
    if pairs is not None:
        return " ".join(f"{key}={value}" for key, value, _ in pairs if key.lower() != "password")
    return HIDDEN if "password" in text.lower() or "@" in text else text


def dsn_variables(dsn: str) -> list[str]:
    """The names of the ``${VAR}`` templates in ``dsn``, in order."""
    return VAR_RE.findall(dsn)


def check_dsn(value: object, field_name: str = "defaults.state") -> str:
    """A PostgreSQL connection string as written (not expanded). The value is shown redacted when refused."""
    if not isinstance(value, str):
        raise InvalidValue(field_name, value, ALLOWED)
    shown = redact_dsn(value)
    text = value.strip()
    if not text or any(c in text for c in "\x00\r\n"):
        raise InvalidValue(field_name, shown, ALLOWED + " (one line, not empty)")
    if "${" in VAR_RE.sub("", text):
        raise InvalidValue(field_name, shown, "has a ${ that is not a ${NAME} template (letters, digits, _)")
    if text.lower().startswith(URL_SCHEMES):
        if not text.partition("://")[2].strip():
            raise InvalidValue(field_name, shown, ALLOWED)
        return value
    if is_conninfo(text):
        return value
    raise InvalidValue(field_name, shown, ALLOWED)


def expand_dsn(dsn: str, environ: Mapping[str, str]) -> str:
    """Fill the ``${VAR}`` templates from ``environ`` (only when opening); a missing one names the variable."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise MissingVariable(name)
        return environ[name]

    return VAR_RE.sub(value, dsn)


def secrets_of(dsn: str, environ: Mapping[str, str]) -> list[str]:
    """What must never be shown once ``dsn`` is expanded: its password(s) and every ``${VAR}``'s value."""
    found = [environ[name] for name in dsn_variables(dsn) if name in environ]
    try:
        text = expand_dsn(dsn, environ).strip()
    except MissingVariable:
        return [s for s in found if s]
    if text.lower().startswith(URL_SCHEMES):
        rest = text.partition("://")[2]
        before_query, _, query = rest.partition("?")
        userinfo, at, _hosts = before_query.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD_RE.finditer(query.partition("#")[0])]
    else:
        for key, value, _ in _pairs(text) or []:
            if key.lower() == "password":
                found.append(value.strip("'"))
    return [s for s in found if s]
