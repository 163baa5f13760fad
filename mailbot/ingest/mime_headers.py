"""Header values, charset decoding, message ids and addresses for :mod:`mailbot.ingest.parse`.

Pure helpers over ``email.message.Message`` header values; the rules they follow are described
in the :mod:`mailbot.ingest.parse` module docstring ("Fields"). Public:
:func:`normalise_ids` and :func:`parse_addresses` (re-exported by ``parse``).
"""

from __future__ import annotations

import base64
import codecs
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email import errors as email_errors
from email import policy as email_policy
from email.header import decode_header
from email.headerregistry import Address as HeaderAddress
from email.message import Message
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from mailbot.domain import Address

log = logging.getLogger(__name__)

_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
    "unicode-1-1-utf-7": "utf-7",
    "x-user-defined": "cp1252",
}
# Spelled as codecs.lookup(...).name spells them.
_FALLBACK_CODECS = ("utf-8", "cp1252", "iso8859-1")
_HINT_SKIP = frozenset({"ascii", "utf-8"})
# Multi-byte charsets and what else to try when one is declared (codecs.lookup names).
_CHARSET_FAMILIES: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("cp932", "euc_jp"),
    "shift_jis": ("cp932", "euc_jp"),
    "cp932": ("euc_jp",),
    "euc_jp": ("cp932",),
    "gb18030": (),
    "big5": ("big5hkscs",),
    "big5hkscs": (),
    "euc_kr": ("cp949",),
    "cp949": (),
    "iso2022_kr": ("cp949",),
}

_FOLD = re.compile(r"[ \t]*(?:\r\n|\r|\n)[ \t]+")
_SPACE_RUN = re.compile(r"[ \t]*[\r\n\t]+[ \t]*")
_WS = re.compile(r"\s+")
_COMMENT = re.compile(r"\([^()]*\)")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_ID_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_VALID_ID = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]+@[\x21-\x3b\x3d\x3f\x41-\x7e]+")
_BARE_ID = re.compile(r"[^\s<>,;()\"]+@[^\s<>,;()\"]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL_CHAR = r"[A-Za-z0-9\u0080-\U0010ffff]"
_LABEL = rf"{_LABEL_CHAR}(?:[A-Za-z0-9\-\u0080-\U0010ffff]*{_LABEL_CHAR})?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")


# --- header values ---------------------------------------------------------------------------


def _all(msg: Message, name: str, hints: tuple[str, ...] = ()) -> list[str]:
    """Every value of a header, 8-bit bytes decoded; folding is kept."""
    wanted = name.lower()
    return [_header_text(v, hints) for k, v in msg.raw_items() if k.strip().lower() == wanted]


def _first(msg: Message, name: str, hints: tuple[str, ...] = ()) -> str | None:
    values = _all(msg, name, hints)
    return values[0] if values else None


def _header_text(value: object, hints: tuple[str, ...]) -> str:
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
        for codec in ("utf-8", *hints, "cp1252"):
            try:
                return data.decode(codec)
            except (UnicodeError, LookupError):
                continue
        return data.decode("iso8859-1")
    return text


def _unfold(value: str) -> str:
    """Remove folding, then collapse CR, LF and tab runs to one space."""
    return _SPACE_RUN.sub(" ", _FOLD.sub(" ", value)).strip()


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; undecodable words are left as they are."""
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except (email_errors.HeaderParseError, ValueError, LookupError, AssertionError):
        return value
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            # decode_header returns plain runs as raw-unicode-escape bytes, spaces included.
            out.append(_plain_run(chunk))
        else:
            out.append(_decode_bytes(chunk, charset)[0])
    return "".join(out)


def _plain_run(chunk: bytes) -> str:
    try:
        return chunk.decode("raw-unicode-escape")
    except UnicodeError:
        return chunk.decode("iso8859-1")


def _clean_text(value: str) -> str:
    return _SPACE_RUN.sub(" ", value.replace("\x00", "")).strip()


def _subject(msg: Message, hints: tuple[str, ...]) -> str:
    value = _first(msg, "subject", hints)
    if not value:
        return ""
    return _clean_text(_decode_words(_unfold(value)))


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(_unfold(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# --- charset decoding ------------------------------------------------------------------------


def _codec_name(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, str]:
    """Decode with the declared charset (and its family), then UTF-8, cp1252, latin-1.

    Returns (text, codec used).
    """
    declared = _codec_name(charset)
    family = _CHARSET_FAMILIES.get(declared or "", ())
    for codec in (declared, *family, *_FALLBACK_CODECS):
        if codec:
            try:
                return data.decode(codec), codec
            except (UnicodeError, LookupError):
                continue
    return data.decode("iso8859-1"), "iso8859-1"  # pragma: no cover - latin-1 cannot fail


# --- message ids -----------------------------------------------------------------------------


def _ids(msg: Message, name: str) -> tuple[str, ...]:
    found: list[str] = []
    for value in _all(msg, name):
        found.extend(normalise_ids(value))
    return _unique(found)


def normalise_ids(value: str) -> list[str]:
    """The valid ``<left@right>`` ids in a header value, white space removed, in order."""
    bracketed = _ID_IN_BRACKETS.findall(value)
    if bracketed:
        candidates = [_WS.sub("", _COMMENT.sub("", c)) for c in bracketed]
    elif "<" in value or ">" in value:
        candidates = []
    else:
        candidates = _BARE_ID.findall(value)
    return [f"<{c}>" for c in candidates if _VALID_ID.fullmatch(c)]


# --- addresses -------------------------------------------------------------------------------


def _addresses(msg: Message, name: str, hints: tuple[str, ...]) -> tuple[Address, ...]:
    found: dict[str, Address] = {}
    for value in _all(msg, name, hints):
        for address in parse_addresses(value):
            found.setdefault(address.key, address)
    return tuple(found.values())


#: Header values up to this long are remembered (``_parse_address_value``): the same To and
#: From values come back with every message, and the stdlib parser takes ~0.1 ms a value.
_CACHED_ADDRESS_CHARS = 200


def parse_addresses(value: str) -> list[Address]:
    """Strictly parse one address-list header value; invalid entries are skipped."""
    if len(value) <= _CACHED_ADDRESS_CHARS:
        return list(_parse_address_value(value))
    return _parse_addresses(value)


@lru_cache(maxsize=2048)
def _parse_address_value(value: str) -> tuple[Address, ...]:
    return tuple(_parse_addresses(value))


def _parse_addresses(value: str) -> list[Address]:
    value = _reencode_words(_unfold(value))
    if not value or not _balanced(value):
        return []
    try:
        header: Any = email_policy.default.header_factory("to", value)
        candidates: list[HeaderAddress] = list(header.addresses)
    except Exception:  # the stdlib header parser has crashed on fuzzed input before
        log.debug("address header could not be parsed: %r", value[:200], exc_info=True)
        return []
    return [a for a in map(_valid_address, candidates) if a is not None]


def _reencode_words(value: str) -> str:
    """Re-encode as UTF-8 the encoded words the stdlib would decode badly.

    ``email.headerregistry`` decodes an encoded word with its declared charset only, so
    Shift_JIS bytes labelled ISO-2022-JP, or an unknown charset, end up as replacement
    characters. Such a word is decoded with our charset ladder and written back as a UTF-8
    encoded word, which keeps the header's tokens (commas, quotes) as they were.
    """
    if "=?" not in value:
        return value
    return _ENCODED_WORD.sub(_reencode_word, value)


def _reencode_word(match: re.Match[str]) -> str:
    word = match.group(0)
    try:
        ((data, charset),) = decode_header(word)
    except (ValueError, LookupError, email_errors.HeaderParseError, AssertionError):
        return word
    if not isinstance(data, bytes) or charset is None:
        return word
    try:
        data.decode(_codec_name(charset) or "unknown-charset")
    except (UnicodeError, LookupError):
        text = _decode_bytes(data, charset)[0]
        return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="
    return word


def _balanced(value: str) -> bool:
    """Parentheses (outside quotes) and double quotes balance, as strict getaddresses demands."""
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def _valid_address(candidate: HeaderAddress) -> Address | None:
    local, domain = candidate.username, candidate.domain
    if not local or not domain or not _LOCAL_PART.fullmatch(local):
        return None
    if not (_DOMAIN.fullmatch(domain) or _ADDRESS_LITERAL.fullmatch(domain)):
        return None
    email = f"{local}@{domain}"
    name = _clean_text(candidate.display_name or "")
    if name.lower() == email.lower():
        name = ""
    return Address(email=email, name=name)


# --- helpers ---------------------------------------------------------------------------------


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _unique_ci(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return tuple(seen.values())
