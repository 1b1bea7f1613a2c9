"""Durations and whole numbers as users write them: ``5m``, ``1h30m``, ``90``, ``"09"``, 2^53.

The one parser of every duration (``parse_duration``, ``parse_every``) and the
checks of whole numbers and seconds (``check_int``, ``check_seconds``), each
bounded by SPEC §7 and refusing with a message that names the field, the value
and what is allowed (``InvalidValue``). A number too long to hold is a
``HugeNumber``, shown by its length. The lowest of the validators: it needs no
job type, so ``model`` can use it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from crawlsched.errors import InvalidValue

# SPEC §7: bounds the whole program can hold. Ten years of seconds fits any deadline,
# sleep and timestamp; 2^53 is the largest whole number a float (JSON, JavaScript)
# and every TOML parser hold exactly. (The bounds of dates are in ``model``.)
MAX_SECONDS = 10 * 365 * 86400
MAX_INT = 2**53
MAX_DIGITS = 30  # longer digit strings are refused before Python converts them (its limit is 4300)
INT_TEXT_RE = re.compile(r"[+-]?[0-9]+")
EVERY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd])")
SECONDS_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")  # a sign, so that "-5" is refused as below the minimum
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any, field_name: str, minimum: float = 0) -> float:
    """Seconds from a number, or text: ``"90"``, ``"1.5"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``.

    The one parser of ``--every``, ``--retry-delay``, ``--retry-max-delay`` and
    ``--timeout`` (SPEC §5). At most ten years: the text is summed as floats, so
    a 4,000-digit number is refused by the bound, never an OverflowError.
    """
    if isinstance(value, str) and SECONDS_RE.fullmatch(value.strip()):
        seconds: float | None = float(value.strip())
    elif isinstance(value, str) and value.strip() and EVERY_RE.sub("", value).strip() == "":
        seconds = sum(float(n) * UNITS[u] for n, u in EVERY_RE.findall(value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _seconds_of_number(value)
    else:
        seconds = None
    if isinstance(value, int):
        value = _shown_int(value)
    if seconds is None or seconds != seconds:
        raise InvalidValue(field_name, value, "is not a duration (seconds, or a number with s, m, h or d: 30s, 5m, 1h30m, 2d)")
    if seconds < minimum:
        raise InvalidValue(field_name, value, f"must be at least {minimum:g}s")
    if seconds > MAX_SECONDS:
        raise InvalidValue(field_name, value, f"is longer than ten years ({MAX_SECONDS} seconds), the longest allowed")
    return seconds


def _seconds_of_number(value: int | float) -> float:
    """A number of seconds as a float; one too large for a float is infinite (and refused by the bound)."""
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        return math.inf if value > 0 else -math.inf
    return float(value)


def parse_every(value: Any, field_name: str = "every") -> float:
    """``"15m"``, ``"1h30m"``, ``"90s"``, ``"2d"`` or a number of seconds → seconds (1 s to ten years)."""
    return parse_duration(value, field_name, minimum=1)


class HugeNumber(int):
    """A JSON integer of more digits than any bound allows (Python refuses to convert past 4300).

    It stands for the number where it was written (``json.loads(parse_int=parse_json_int)``)
    so that the field's own check refuses it by name; its value is beyond every
    bound, and it is shown by its length.
    """

    digits: int

    def __new__(cls, digits: int, negative: bool = False) -> HugeNumber:
        number = super().__new__(cls, -(10**MAX_DIGITS) if negative else 10**MAX_DIGITS)
        number.digits = digits
        return number

    def __repr__(self) -> str:
        return f"a {self.digits}-digit {'negative ' if self < 0 else ''}number"

    __str__ = __repr__


def parse_json_int(text: str) -> int:
    """``json.loads``'s ``parse_int``: a number too long to hold becomes a ``HugeNumber``, refused by its field."""
    digits = len(text.lstrip("-"))
    return HugeNumber(digits, text.startswith("-")) if digits > MAX_DIGITS else int(text)


def _shown_int(value: int) -> int:
    """An int for a message: a long one by its length (``repr`` of 4300+ digits raises)."""
    if isinstance(value, HugeNumber) or value.bit_length() <= 3 * MAX_DIGITS + 10:
        return value
    bits = value.bit_length()
    digits = len(str(abs(value))) if bits < 14000 else int(bits * math.log10(2)) + 1
    return HugeNumber(digits, value < 0)


def check_int(field_name: str, value: Any, low: int | None = 0, high: int | None = MAX_INT) -> int:
    """A whole number from ``low`` to ``high`` (never beyond 2^53); a decimal text such as ``"09"`` too."""
    if isinstance(value, str):
        text = value.strip()
        if INT_TEXT_RE.fullmatch(text):
            value = parse_json_int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field_name, value, "must be a whole number")
    high = MAX_INT if high is None else min(high, MAX_INT)
    low = -MAX_INT if low is None else low
    if value < low:
        raise InvalidValue(field_name, _shown_int(value), f"must be at least {low}")
    if value > high:
        raise InvalidValue(field_name, _shown_int(value), f"must be at most {high}")
    return int(value)


def _number_of(value: Any) -> Any:
    """A decimal text as its float; anything else as it is (the checks refuse what is no number)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def check_multiplier(field_name: str, value: Any, low: float, high: float, what: str) -> float:
    """A plain number from ``low`` to ``high`` (a decimal text too), not a duration: every refusal,
    NaN, infinity and a 309-digit number included, says ``what`` is allowed, never seconds."""
    shown, value = value, _number_of(value)
    if isinstance(shown, int) and not isinstance(shown, bool):
        shown = _shown_int(shown)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN fails too
        raise InvalidValue(field_name, shown, what)
    return float(value)


def check_seconds(field_name: str, value: Any, low: float = 0, allow_none: bool = False) -> float | None:
    """A number of seconds from ``low`` to ten years; a decimal text too."""
    if value is None and allow_none:
        return None
    shown, value = value, _number_of(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidValue(field_name, shown, "must be a number of seconds")
    if isinstance(shown, int):
        shown = _shown_int(shown)
    seconds = _seconds_of_number(value)
    if seconds < low:
        raise InvalidValue(field_name, shown, f"must be at least {low:g} seconds")
    if seconds > MAX_SECONDS:
        raise InvalidValue(field_name, shown, f"must be at most ten years ({MAX_SECONDS} seconds)")
    return seconds
