"""``${VAR}`` templates: expanded only right before a request, and kept out of every message.

URLs and header values are *templates*. :func:`expand_vars` fills them from the
environment at the last moment; messages are built from the template (with a
userinfo password masked by :func:`redact_url`), never from the expanded text,
and as a last guard :func:`scrub` blanks any expanded value that still slipped
into one (SPEC §7).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from crawlsched.errors import MissingVariable  # noqa: F401 - re-exported: expand_vars raises it
from crawlsched.urls import redact_url  # noqa: F401 - the masking of a URL for display lives in urls.py

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_vars(template: str, env: Mapping[str, str]) -> str:
    """Replace each ``${VAR}`` with ``env[VAR]``; other ``$`` text is left alone."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise MissingVariable(name)
        return env[name]

    return VAR_RE.sub(value, template)


def expanded_values(templates: Any, env: Mapping[str, str]) -> list[str]:
    """The values the ``${VAR}``s of ``templates`` expand to: what :func:`scrub` must blank."""
    return [env[name] for t in templates for name in VAR_RE.findall(t) if name in env]


def scrub(message: str, secrets: list[str]) -> str:
    """Last guard: blank any expanded value that reached a message (short ones would blank noise)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
