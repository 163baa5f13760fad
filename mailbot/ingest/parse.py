"""Parse raw RFC 5322 bytes into a frozen :class:`~mailbot.domain.ParsedMessage`.

This is the only module that imports ``mailparser`` (the mail-parser package). It is pure and
synchronous; the intake runs big messages in a worker thread. Public API:
:func:`parse_message`, plus the helpers :func:`parse_addresses`, :func:`normalise_ids` and
:func:`html_to_text`.

How a message is read
    1. The bytes go to ``mailparser.parse_from_bytes`` first. mail-parser guards against
       recursion bombs and adds its own header diagnostics (address, date and Received
       defects, kept in ``defects``); its date parser is the fallback for ``date``.
    2. If mail-parser raises (it does on real mail, e.g. sisimai ``lhost-sendgrid-01.eml``),
       the bytes are parsed again by the standard library alone (``email.message_from_bytes``
       with ``policy.compat32``) and ``defects`` records ``mailparser-failed: <class>``.
    3. A broken header block gets one repair attempt, used only when it yields more header
       fields (``defects``: ``header-block-repaired``): up to 5 leading lines of text before the
       first well-known field are dropped ("---- Original email message ----"), obsolete
       RFC 822 ``Name  : value`` fields lose the white space before the colon, and lines
       inside the header block that are neither fields nor indented (continuation lines that
       lost their indentation) are indented, provided a well-known field follows them
       before the blank line.
    4. Both parsers produce the same ``email.message.Message`` type, read by the code below,
       so a message gives the same result whichever parser built it.
    5. :class:`~mailbot.errors.ParseError` is raised only when nothing usable is left: empty
       or whitespace-only input, or input without a single header field (binary garbage, an
       OLE ``.msg`` file, a bare body), or a stdlib failure in the fallback path.

    Input with CR-only line endings (no LF at all) is converted to LF before parsing.

Why bodies and attachments are not taken from mail-parser's own lists
    mail-parser names unnamed attachments with random strings (the same bytes would not parse
    to the same value twice), folds the text of attached messages into the body and decodes an
    unknown charset only as UTF-8 with replacement characters. The walk here keeps unnamed
    attachments unnamed, treats an attached ``message/rfc822`` as one attachment and decodes
    text with a charset ladder.

Fields
    * Header values with raw 8-bit bytes are decoded as UTF-8, then with the charsets the
      message declares (multi-byte ones and their family first, e.g. ISO-2022-JP -> cp932,
      EUC-JP), then cp1252, then latin-1. No charset detection library is used.
    * Addresses are parsed with ``email.headerregistry`` (RFC 2047 display names decoded;
      an encoded word that its declared charset cannot decode is first re-encoded as UTF-8
      after our charset ladder, so mislabelled Shift_JIS still reads right) and
      then checked strictly: an entry counts only with a dot-atom local part and a valid domain
      (or address literal); a header whose parentheses or quotes do not balance is dropped
      whole, as Python 3.12's ``getaddresses(strict=True)`` does (3.11.7 has no ``strict``).
      ``from_`` is the first valid From address, ``sender`` the first valid Sender address;
      ``reply_to``, ``to`` and ``cc`` are de-duplicated case-insensitively, in order.
    * ``message_id``, ``in_reply_to`` and ``references`` are ``<left@right>`` in printable
      ASCII with white space removed (folded ids are joined); fragments without ``@`` (such as
      ``<yes>``) are skipped because they would thread unrelated mail together; duplicates are
      removed keeping the first. Bare ``left@right`` tokens count only when the header holds no
      angle brackets at all.
    * ``subject``: RFC 2047 decoded, unfolded, runs of CR/LF/tab collapsed to one space,
      stripped. ``date``: aware, in UTC, or None.
    * ``text``: the body ``text/plain`` parts joined by a blank line; when there are none (or
      they are blank), the HTML converted with html2text (images ignored, no wrapping, links
      kept as ``[text](url)``, mailto links as their text, layout tables flattened, no
      Markdown escaping). ``html``: the body ``text/html`` parts joined, or None. A body part
      is a ``text/plain`` or ``text/html`` leaf without a file name, not marked ``attachment``
      and not inside an attachment; a ``multipart/*`` part whose boundary never appears counts
      as ``text/plain``. Charset ladder: the declared charset (with aliases such as gb2312 ->
      gb18030, then its family such as ISO-2022-JP -> cp932, EUC-JP), then UTF-8, cp1252 and
      latin-1 (which cannot fail); a fallback is recorded in ``defects``. Line endings become
      ``\\n`` and NUL characters are removed (PostgreSQL text cannot store them).
    * ``attachments``: every other leaf part, and each ``message/*`` part (an attached mail)
      as one attachment. ``filename`` is RFC 2231 and RFC 2047 decoded, None when the part has
      none (no name is invented); ``size`` is the decoded payload size in bytes (serialised
      size for an attached mail); ``content_id`` is the Content-ID without angle brackets (as
      ``cid:`` URLs use it); ``inline`` is true for ``Content-Disposition: inline`` or for a
      part with a Content-ID and no disposition. Machine-readable report parts
      (delivery-status, disposition-notification, feedback-report) are not attachments.
    * ``content_type`` is the top-level MIME type, ``size`` is ``len(raw)``. ``defects`` are
      short names: the stdlib defect class names of every part, mail-parser's ``*HeaderDefect``
      categories, and ours (``mailparser-failed: X``, ``header-block-repaired``,
      ``charset-fallback: a->b``, ``unparseable-date``, ``too-many-parts``).
    * At most ``MAX_PARTS`` MIME parts are walked and html2text sees at most
      ``MAX_HTML_CHARS`` characters (denial-of-service guards).

Headers kept in ``headers`` (names lower-cased, values unfolded, in message order)
    loop and auto-reply markers: auto-submitted, precedence, x-precedence, x-autoreply,
    x-autorespond, x-autogenerated, x-auto-response-suppress, x-loop, x-cron-env,
    x-mailbot-loop, x-mailbot-ticket, x-ms-exchange-generated-message-source,
    x-ms-exchange-inbox-rules-loop, x-ms-exchange-message-is-ndr;
    bounces and complaints: return-path, x-failed-recipients, feedback-type;
    mailing lists: list-id, list-unsubscribe, list-post, mailing-list, x-mailman-version,
    x-beenthere; delivery: delivered-to, x-original-to;
    client and structure: content-type, x-mailer, user-agent, thread-index, thread-topic.

    Two entries are computed here from the MIME tree and appended after the message's own
    headers (an incoming header with either name is dropped, so a sender cannot forge them):
    ``x-mailbot-report-types``: the report part types found anywhere, space-separated
    (``delivery-status``, ``disposition-notification``, ``feedback-report``, ...);
    ``x-mailbot-failed-recipients``: comma-separated recipients of the delivery-status parts
    whose Action is ``failed`` (or absent), Original-Recipient preferred over
    Final-Recipient. :mod:`mailbot.ingest.autogen` reads both.
"""

from __future__ import annotations

import base64
import codecs
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors as email_errors
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.header import decode_header
from email.headerregistry import Address as HeaderAddress
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

import html2text
import mailparser

from mailbot.domain import Address, Attachment, ParsedMessage
from mailbot.errors import ParseError

log = logging.getLogger(__name__)

KEPT_HEADERS = frozenset(
    {
        # loop and auto-reply markers
        "auto-submitted",
        "precedence",
        "x-precedence",
        "x-autoreply",
        "x-autorespond",
        "x-autogenerated",
        "x-auto-response-suppress",
        "x-loop",
        "x-cron-env",
        "x-mailbot-loop",
        "x-mailbot-ticket",
        "x-ms-exchange-generated-message-source",
        "x-ms-exchange-inbox-rules-loop",
        "x-ms-exchange-message-is-ndr",
        # bounces and complaints
        "return-path",
        "x-failed-recipients",
        "feedback-type",
        # mailing lists
        "list-id",
        "list-unsubscribe",
        "list-post",
        "mailing-list",
        "x-mailman-version",
        "x-beenthere",
        # delivery
        "delivered-to",
        "x-original-to",
        # client and structure
        "content-type",
        "x-mailer",
        "user-agent",
        "thread-index",
        "thread-topic",
    }
)
REPORT_TYPES_HEADER = "x-mailbot-report-types"
FAILED_RECIPIENTS_HEADER = "x-mailbot-failed-recipients"

# Denial-of-service guards.
MAX_PARTS = 2000
MAX_HTML_CHARS = 2_000_000

# Header-block repair: how many leading lines may be dropped, and how far to look.
_MAX_SKIPPED_LINES = 5
_REPAIR_WINDOW = 256 * 1024
_OBS_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_FIELD_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_WELL_KNOWN_FIELDS = frozenset(
    {
        b"return-path",
        b"received",
        b"from",
        b"sender",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"delivered-to",
    }
)

_REPORT_PART_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "message/feedback-report",
    }
)
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
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
_CELL_END = re.compile(r"(</t[dh]\s*>)", re.IGNORECASE)
_LINE_END_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_ID_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_VALID_ID = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]+@[\x21-\x3b\x3d\x3f\x41-\x7e]+")
_BARE_ID = re.compile(r"[^\s<>,;()\"]+@[^\s<>,;()\"]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL_CHAR = r"[A-Za-z0-9\u0080-\U0010ffff]"
_LABEL = rf"{_LABEL_CHAR}(?:[A-Za-z0-9\-\u0080-\U0010ffff]*{_LABEL_CHAR})?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")


@dataclass
class _Body:
    """What the walk over the MIME tree collects."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    report_types: list[str] = field(default_factory=list)
    failed_recipients: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


@dataclass
class _Built:
    """A parsed ``Message`` and what the parser said about it."""

    msg: Message
    date: datetime | None
    defects: list[str]


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw``; raise :class:`ParseError` only when nothing usable can be recovered."""
    if not raw.strip():
        raise ParseError(f"empty message ({len(raw)} bytes, nothing but white space)")
    data = _normalise_newlines(raw)
    built = _build(data)
    if _needs_repair(built.msg):
        built = _repaired(data, built)
    if not built.msg.keys():
        raise ParseError(
            f"no header field found in {len(raw)} bytes, not an RFC 5322 message "
            f"(starts with {raw[:16]!r})"
        )
    return _to_parsed(built, raw)


# --- building the Message --------------------------------------------------------------------


def _normalise_newlines(raw: bytes) -> bytes:
    """CR-only input (old Mac) becomes LF; CRLF and LF are left to the parser."""
    if b"\n" not in raw and b"\r" in raw:
        return raw.replace(b"\r", b"\n")
    return raw


def _build(data: bytes) -> _Built:
    """mail-parser first, the standard library alone if mail-parser raises."""
    try:
        parsed = mailparser.parse_from_bytes(data)
    except Exception as exc:  # any mail-parser bug falls back to the stdlib
        log.warning("mail-parser failed (%r); using the stdlib parser", exc, exc_info=True)
        return _Built(_stdlib_message(data), None, [f"mailparser-failed: {type(exc).__name__}"])
    message = parsed.message
    if not isinstance(message, Message):
        return _Built(_stdlib_message(data), None, ["mailparser-failed: no message"])
    date = parsed.date if isinstance(parsed.date, datetime) else None
    categories = sorted(str(c) for c in parsed.defects_categories)
    return _Built(message, date, [c for c in categories if c.endswith("HeaderDefect")])


def _stdlib_message(data: bytes) -> Message:
    try:
        return message_from_bytes(data, policy=email_policy.compat32)
    except RecursionError as exc:
        raise ParseError("MIME structure nested too deeply to parse") from exc
    except (email_errors.MessageError, ValueError, LookupError, IndexError) as exc:
        raise ParseError(f"the standard library parser failed: {exc!r}") from exc


def _needs_repair(msg: Message) -> bool:
    if not msg.keys():
        return True
    return any(isinstance(d, email_errors.MissingHeaderBodySeparatorDefect) for d in msg.defects)


def _repaired(data: bytes, built: _Built) -> _Built:
    """The repaired parse if the repair finds more header fields, else ``built``."""
    fixed = _repair_header_block(data, skip_leading=not built.msg.keys())
    if fixed is None:
        return built
    try:
        again = _build(fixed)
    except ParseError:
        return built
    if len(again.msg.keys()) <= len(built.msg.keys()):
        return built
    again.defects.append("header-block-repaired")
    return again


def _repair_header_block(data: bytes, *, skip_leading: bool) -> bytes | None:
    """The bytes with the header block repaired (see the module docstring), or None."""
    lines = data[:_REPAIR_WINDOW].splitlines(keepends=True)
    start = _first_field_line(lines) if skip_leading else 0
    if start is None:
        return None
    repaired: list[bytes] = []
    garbage = resumed = False
    for index in range(start, len(lines)):
        line = lines[index]
        if not line.rstrip(b"\r\n"):
            if not (skip_leading or resumed):
                return None
            rest = data[sum(len(x) for x in lines[:index]) :]
            return b"".join(repaired) + rest
        name = _field_name(line)
        if name is not None:
            resumed = resumed or (garbage and name in _WELL_KNOWN_FIELDS)
            repaired.append(_OBS_FIELD.sub(rb"\1:", line))
        elif line[:1] in (b" ", b"\t") or (index == 0 and line.startswith(b"From ")):
            repaired.append(line)
        else:
            garbage = True
            repaired.append(b" " + line)
    return None


def _first_field_line(lines: list[bytes]) -> int | None:
    for index, line in enumerate(lines[: _MAX_SKIPPED_LINES + 1]):
        if _field_name(line) in _WELL_KNOWN_FIELDS:
            return index
    return None


def _field_name(line: bytes) -> bytes | None:
    match = _FIELD_LINE.match(_OBS_FIELD.sub(rb"\1:", line))
    return match.group(1).lower() if match else None


# --- the ParsedMessage -----------------------------------------------------------------------


def _to_parsed(built: _Built, raw: bytes) -> ParsedMessage:
    msg = built.msg
    hints = _charset_hints(msg)
    body = _walk(msg, hints)
    defects = list(built.defects)
    date_value = _first(msg, "date", hints)
    date = _parse_date(date_value)
    if date is None and built.date is not None and built.date.tzinfo is not None:
        date = built.date.astimezone(UTC)
    if date_value and date is None:
        defects.append("unparseable-date")
    text = "\n\n".join(p for p in body.plain if p.strip())
    html = "\n".join(body.html) if body.html else None
    if not text.strip() and html:
        text = html_to_text(html)
    froms = _addresses(msg, "from", hints)
    senders = _addresses(msg, "sender", hints)
    return ParsedMessage(
        message_id=next(iter(_ids(msg, "message-id")), None),
        in_reply_to=_ids(msg, "in-reply-to"),
        references=_ids(msg, "references"),
        from_=froms[0] if froms else None,
        sender=senders[0] if senders else None,
        reply_to=_addresses(msg, "reply-to", hints),
        to=_addresses(msg, "to", hints),
        cc=_addresses(msg, "cc", hints),
        subject=_subject(msg, hints),
        date=date,
        text=text,
        html=html,
        attachments=tuple(body.attachments),
        headers=_kept_headers(msg, body, hints),
        content_type=_part_type(msg, default="text/plain"),
        size=len(raw),
        defects=_unique([*defects, *body.defects]),
    )


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


def _charset_hints(msg: Message) -> tuple[str, ...]:
    """Charsets to try on raw 8-bit header bytes after UTF-8, from the charsets declared.

    Multi-byte charsets come first (a strict multi-byte decode that succeeds is evidence,
    a single-byte one always succeeds), each with its family: a message that declares
    ISO-2022-JP often carries Shift_JIS bytes in its headers.
    """
    multi: list[str] = []
    single: list[str] = []
    for part in _every_part(msg, limit=50):
        codec = _codec_name(_content_charset(part))
        if codec is None or codec in _HINT_SKIP:
            continue
        family = _CHARSET_FAMILIES.get(codec)
        if family is not None:
            multi.extend((codec, *family))
        else:
            single.append(codec)
    return _unique([*multi, *single])


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


def _kept_headers(msg: Message, body: _Body, hints: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    kept: list[tuple[str, str]] = []
    for name, value in msg.raw_items():
        key = name.strip().lower()
        if key in KEPT_HEADERS:
            kept.append((key, _clean_text(_unfold(_header_text(value, hints)))))
    if body.report_types:
        kept.append((REPORT_TYPES_HEADER, " ".join(_unique(body.report_types))))
    if body.failed_recipients:
        kept.append((FAILED_RECIPIENTS_HEADER, ", ".join(_unique_ci(body.failed_recipients))))
    return tuple(kept)


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


def parse_addresses(value: str) -> list[Address]:
    """Strictly parse one address-list header value; invalid entries are skipped."""
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


# --- the MIME walk ---------------------------------------------------------------------------


def _walk(msg: Message, hints: tuple[str, ...]) -> _Body:
    body = _Body()
    for count, (part, in_attachment) in enumerate(_parts(msg), start=1):
        if count > MAX_PARTS:
            body.defects.append("too-many-parts")
            break
        body.defects.extend(type(d).__name__ for d in getattr(part, "defects", ()))
        _visit(part, in_attachment, body, hints)
    return body


def _parts(msg: Message) -> Iterator[tuple[Message, bool]]:
    """Depth first, in order, without recursion; ``message/*`` parts are not entered."""
    stack: list[tuple[Message, bool]] = [(msg, False)]
    while stack:
        part, in_attachment = stack.pop()
        yield part, in_attachment
        children = part.get_payload()
        if _part_type(part).startswith("message/") or not isinstance(children, list):
            continue
        inner = in_attachment or _disposition(part) == "attachment"
        stack.extend((child, inner) for child in reversed(children) if isinstance(child, Message))


def _every_part(msg: Message, *, limit: int) -> Iterator[Message]:
    """Parts in order, attached messages included, at most ``limit``; no recursion."""
    stack = [msg]
    for _ in range(limit):
        if not stack:
            return
        part = stack.pop()
        yield part
        children = part.get_payload()
        if isinstance(children, list):
            stack.extend(c for c in reversed(children) if isinstance(c, Message))


def _visit(part: Message, in_attachment: bool, body: _Body, hints: tuple[str, ...]) -> None:
    ctype = _part_type(part)
    if ctype in _REPORT_PART_TYPES:
        body.report_types.append(ctype.partition("/")[2])
        if ctype in _DSN_TYPES:
            body.failed_recipients.extend(_dsn_failed_recipients(part))
        return
    is_container = isinstance(part.get_payload(), list)
    if is_container and not ctype.startswith("message/"):
        return
    if ctype.startswith("multipart/"):
        ctype = "text/plain"  # a multipart whose boundary never appears: its text is the body
    disposition = _disposition(part)
    filename = _filename(part, hints)
    if (
        ctype in ("text/plain", "text/html")
        and not in_attachment
        and disposition != "attachment"
        and filename is None
    ):
        text, defect = _decode_part_text(part)
        if defect:
            body.defects.append(defect)
        (body.plain if ctype == "text/plain" else body.html).append(text)
        return
    body.attachments.append(_attachment(part, ctype, disposition, filename))


def _part_type(part: Message, default: str = "application/octet-stream") -> str:
    try:
        return part.get_content_type().lower()
    except (ValueError, IndexError, AttributeError, TypeError):
        return default


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except (ValueError, IndexError, AttributeError, TypeError, email_errors.HeaderParseError):
        return None
    return value.lower() if isinstance(value, str) else None


def _content_charset(part: Message) -> str | None:
    try:
        value = part.get_content_charset()
    except (ValueError, IndexError, LookupError, UnicodeError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _filename(part: Message, hints: tuple[str, ...]) -> str | None:
    """The RFC 2231 / RFC 2047 decoded file name, read from 8-bit-safe header copies."""
    view = Message()
    own = _codec_name(_content_charset(part))
    part_hints = (own, *hints) if own else hints
    for name in ("content-disposition", "content-type"):
        value = _first(part, name, part_hints)
        if value is not None:
            view[name] = value
    try:
        value = view.get_filename()
    except (ValueError, IndexError, LookupError, UnicodeError, TypeError) as exc:
        log.debug("unreadable file name parameter: %r", exc)
        return None
    if not isinstance(value, str):
        return None
    text = _clean_text(_decode_words(_unfold(value)))
    return text or None


def _attachment(
    part: Message, ctype: str, disposition: str | None, filename: str | None
) -> Attachment:
    content_id = _first(part, "content-id")
    cid = _unfold(content_id).strip("<> \t") if content_id else ""
    return Attachment(
        filename=filename,
        content_type=ctype,
        size=_payload_size(part),
        content_id=cid or None,
        inline=disposition == "inline" or (disposition is None and bool(cid)),
    )


def _payload_size(part: Message) -> int:
    try:
        payload = part.get_payload()
        if isinstance(payload, list):
            return sum(len(m.as_bytes()) for m in payload if isinstance(m, Message))
        decoded = part.get_payload(decode=True)
    except (RecursionError, ValueError, LookupError, UnicodeError, TypeError, IndexError):
        return 0
    return len(decoded) if isinstance(decoded, bytes) else 0


# --- body text -------------------------------------------------------------------------------


def _decode_part_text(part: Message) -> tuple[str, str | None]:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, LookupError, UnicodeError, TypeError):
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        payload = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    charset = _content_charset(part)
    text, used = _decode_bytes(payload, charset)
    defect = None
    if charset and used != _codec_name(charset):
        defect = f"charset-fallback: {charset[:40]}->{used}"
    return _normalise_text(text), defect


def _normalise_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


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


class _PlainText(html2text.HTML2Text):
    """html2text without Markdown escaping ("1\\." and "\\-" are noise in plain text)."""

    def handle_data(self, data: str, entity_char: bool = False) -> None:
        super().handle_data(data, entity_char=True)


def html_to_text(html: str) -> str:
    """Readable plain text from HTML: images ignored, no wrapping, links as ``[text](url)``.

    Layout tables are flattened (no Markdown table syntax) and text is not Markdown-escaped.
    """
    converter = _PlainText()
    converter.ignore_images = True
    converter.body_width = 0
    converter.ignore_links = False
    converter.ignore_mailto_links = True
    converter.skip_internal_links = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    html = _CELL_END.sub(r" \1", html[:MAX_HTML_CHARS])
    try:
        text = str(converter.handle(html))
    except Exception:  # an html2text bug must not lose the message
        log.warning("html2text failed; stripping tags instead", exc_info=True)
        text = re.sub(r"<[^>]*>", " ", html)
    text = _LINE_END_SPACE.sub("", _normalise_text(text))
    return _BLANK_LINES.sub("\n\n", text).strip()


# --- delivery status notifications -----------------------------------------------------------


def _dsn_failed_recipients(part: Message) -> list[str]:
    failed: list[str] = []
    for block in _dsn_blocks(part):
        action = (_first(block, "action") or "").strip().lower()
        if action and not action.startswith("failed"):
            continue
        address = _dsn_address(_first(block, "original-recipient")) or _dsn_address(
            _first(block, "final-recipient")
        )
        if address:
            failed.append(address)
    return failed


def _dsn_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [b for b in payload if isinstance(b, Message)]
    elif isinstance(payload, str):
        chunks = re.split(r"\n[ \t]*\n", _normalise_text(payload))
        blocks = [message_from_string(chunk.strip("\n")) for chunk in chunks]
    else:
        blocks = []
    return [b for b in blocks if b.get("final-recipient") or b.get("original-recipient")]


def _dsn_address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com``; None when it is no address."""
    if not value:
        return None
    address = _unfold(value).rpartition(";")[2].strip().strip("<>").strip()
    if _VALID_ID.fullmatch(address) and address.count("@") == 1:
        return address
    return None


# --- helpers ---------------------------------------------------------------------------------


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _unique_ci(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return tuple(seen.values())
