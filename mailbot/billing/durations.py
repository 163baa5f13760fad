"""Durations as people write them in rules.yaml and ``#time`` commands, as whole minutes.

Accepted: ``25m``, ``25 min``, ``1h``, ``1h30``, ``1h 30m``, ``1 h 30 min``, ``1:30``,
``1.5h`` / ``1,5h`` (a whole number of minutes only), ``90`` (minutes). Swedish and Italian
unit words are accepted too (``tim``, ``timmar``, ``ore``, ``minuti``...). Pure.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: The longest duration accepted anywhere (a year), so a typo cannot book 10^9 minutes.
MAX_MINUTES = 366 * 24 * 60

_HOURS = r"(?:h|hr|hrs|hour|hours|t|tim|timme|timmar|ora|ore)"
_MINUTES = r"(?:m|min|mins|minute|minutes|minut|minuter|minuto|minuti)"
_NUMBER = r"\d+(?:[.,]\d+)?"
_FORM = re.compile(
    rf"""^\s*(?:
        (?P<clock_h>\d{{1,4}}):(?P<clock_m>[0-5]\d)                       # 1:30
      | (?P<h>{_NUMBER})\s*{_HOURS}\.?
        (?:\s*(?P<hm>\d{{1,3}})\s*(?:{_MINUTES}\.?)?)?                  # 1h, 1h30, 1h 30m
      | (?P<m>\d{{1,6}})\s*(?:{_MINUTES}\.?)?                             # 25m, 90
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def parse_duration(text: str) -> int:
    """Whole minutes in ``text``; ``ValueError`` with a readable message otherwise."""
    match = _FORM.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a duration: write e.g. 25m, 1h, 1h30, 1:30 or 90 (minutes)"
        )
    if match.group("clock_h") is not None:
        minutes = int(match.group("clock_h")) * 60 + int(match.group("clock_m"))
    elif match.group("h") is not None:
        try:
            hours = Decimal(match.group("h").replace(",", "."))
        except InvalidOperation:  # pragma: no cover - the regex admits only numbers
            raise ValueError(f"{text!r} is not a duration") from None
        whole = hours * 60
        if whole != whole.to_integral_value():
            raise ValueError(f"{text!r} is not a whole number of minutes")
        minutes = int(whole) + int(match.group("hm") or 0)
        if match.group("hm") is not None and int(match.group("hm")) >= 60:
            raise ValueError(f"{text!r}: the minutes after the hours must be below 60")
    else:
        minutes = int(match.group("m"))
    if minutes <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    if minutes > MAX_MINUTES:
        raise ValueError(f"{text!r} is longer than a year")
    return minutes


def format_minutes(minutes: int | Decimal) -> str:
    """``90`` -> ``1 h 30 min``; ``45`` -> ``45 min``; ``82.5`` -> ``1 h 22.5 min``."""
    value = Decimal(minutes)
    sign = "-" if value < 0 else ""
    value = abs(value)
    hours = int(value // 60)
    rest = value - hours * 60
    rest_text = f"{rest.normalize():f}" if rest != rest.to_integral_value() else str(int(rest))
    if hours and rest:
        return f"{sign}{hours} h {rest_text} min"
    if hours:
        return f"{sign}{hours} h"
    return f"{sign}{rest_text} min"
