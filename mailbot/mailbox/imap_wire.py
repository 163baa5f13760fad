"""Pure IMAP wire helpers for :mod:`mailbot.mailbox.imap`: no I/O, no aioimaplib.

UID sets (:func:`uid_set`, :func:`uid_sets`), mailbox names in modified UTF-7
(:func:`encode_mailbox`), quoting, and reading aioimaplib responses: the completion text,
SEARCH results and FETCH records tokenized into nested items (atoms, strings, lists).
The public names are re-exported by :mod:`mailbot.mailbox.imap`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from typing import Any

_MAX_UID_SET_LEN = 4000  # characters per UID set: far below any server's command-line limit

_FETCH_START_RE = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
_TOKEN_RE = re.compile(
    rb"""\s*(?:
        (?P<open>\() | (?P<close>\)) |
        "(?P<quoted>(?:[^"\\]|\\.)*)" |
        (?P<literal>~?\{\d+\+?\})\s*$ |
        (?P<atom>[^\s()"{\[]+(?:\[[^\]]*\][^\s()"{]*)?)
    )""",
    re.VERBOSE | re.DOTALL,
)


# --------------------------------------------------------------------------- UID sets and names


def uid_set(uids: Iterable[int]) -> str:
    """Compress UIDs into an IMAP sequence set: ``[1, 2, 3, 7]`` -> ``"1:3,7"``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    ranges: list[str] = []
    start = prev = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
        if uid is not None:
            start = prev = uid
    return ",".join(ranges)


def uid_sets(uids: Iterable[int], max_len: int = _MAX_UID_SET_LEN) -> list[str]:
    """Like :func:`uid_set`, split into several sets when one would get too long."""
    parts = uid_set(uids).split(",") if uids else []
    out: list[str] = []
    current: list[str] = []
    length = 0
    for part in parts:
        if current and length + len(part) + 1 > max_len:
            out.append(",".join(current))
            current, length = [], 0
        current.append(part)
        length += len(part) + 1
    if current:
        out.append(",".join(current))
    return out


def encode_mailbox(name: str) -> str:
    """A mailbox name as a quoted IMAP string in modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            b64 = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    encoded = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{encoded}"'


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- responses


def _text(response: Any) -> str:
    """The human-readable text of the tagged completion (the last response line)."""
    lines = getattr(response, "lines", None) or [b""]
    last = lines[-1]
    return bytes(last).decode("utf-8", "replace").strip()


def _is_ok(response: Any) -> bool:
    return getattr(response, "result", None) == "OK"


def _data_lines(response: Any) -> list[bytes | bytearray]:
    """Untagged lines and literals of a response, without the tagged completion text."""
    lines: list[bytes | bytearray] = list(getattr(response, "lines", []) or [])
    return lines[:-1]


def _parse_search(response: Any, minimum: int = 1) -> list[int]:
    uids: set[int] = set()
    for line in _data_lines(response):
        if isinstance(line, bytearray):
            continue
        tokens = line.split()
        if tokens and all(token.isdigit() for token in tokens):
            uids.update(int(token) for token in tokens)
    return sorted(uid for uid in uids if uid >= minimum)


# A FETCH response item: an atom (str), a string (bytes) or a parenthesised list.
_Item = str | bytes | list["_Item"]


def _tokenize(chunks: Sequence[bytes | bytearray]) -> list[_Item]:
    """Turn the text lines and literals of one FETCH response into nested items."""
    stack: list[list[_Item]] = [[]]
    for chunk in chunks:
        if isinstance(chunk, bytearray):  # literal data, already cut to size by aioimaplib
            stack[-1].append(bytes(chunk))
            continue
        for match in _TOKEN_RE.finditer(chunk):
            if match.group("open"):
                stack.append([])
            elif match.group("close"):
                if len(stack) > 1:
                    inner = stack.pop()
                    stack[-1].append(inner)
            elif match.group("quoted") is not None:
                quoted = re.sub(rb"\\(.)", rb"\1", match.group("quoted"))
                stack[-1].append(quoted)
            elif match.group("atom"):
                stack[-1].append(match.group("atom").decode("utf-8", "replace"))
            # a literal marker: the literal itself is the next chunk
    while len(stack) > 1:  # tolerate a truncated response
        inner = stack.pop()
        stack[-1].append(inner)
    return stack[0]


def _fetch_records(response: Any) -> list[dict[str, _Item]]:
    """Every ``n FETCH (...)`` in a response as a dict of upper-cased attribute names."""
    groups: list[list[bytes | bytearray]] = []
    for line in _data_lines(response):
        if isinstance(line, bytes) and _FETCH_START_RE.match(line):
            groups.append([])
        if groups:
            groups[-1].append(line)
    records: list[dict[str, _Item]] = []
    for group in groups:
        items = _tokenize(group)
        attrs = next((item for item in items if isinstance(item, list)), [])
        record: dict[str, _Item] = {}
        for i in range(0, len(attrs) - 1, 2):
            key = attrs[i]
            if isinstance(key, str):
                record[key.upper()] = attrs[i + 1]
        records.append(record)
    return records


def _as_int(item: _Item | None) -> int | None:
    if isinstance(item, str) and item.isdigit():
        return int(item)
    return None


def _as_bytes(item: _Item | None) -> bytes | None:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str) and item.upper() == "NIL":
        return b""
    return None


#: How long to stay away from a server that asks us to slow down without saying for how long.
THROTTLE_DEFAULT_SECONDS = 300.0
_THROTTLE = re.compile(
    r"\[(?:UNAVAILABLE|LIMIT|INUSE|THROTTLED|OVERQUOTA)\]|too many (?:simultaneous )?"
    r"(?:connections|logins|commands|requests)|throttl|rate limit|try again later|"
    r"bandwidth limit",
    re.IGNORECASE,
)
_RETRY_IN = re.compile(
    r"(?:in|after)\s+(\d{1,6})\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\b",
    re.IGNORECASE,
)


def throttle_delay(text: str) -> float | None:
    """Seconds to wait when a server response asks us to slow down, else None."""
    if not _THROTTLE.search(text):
        return None
    match = _RETRY_IN.search(text)
    if match is None:
        return THROTTLE_DEFAULT_SECONDS
    amount, unit = int(match.group(1)), match.group(2).lower()
    factor = 3600 if unit.startswith("h") else 60 if unit.startswith("m") else 1
    return float(min(amount * factor, 6 * 3600))
