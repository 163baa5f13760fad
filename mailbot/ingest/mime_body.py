"""The MIME walk for :mod:`mailbot.ingest.parse`: body text, HTML to text, attachments, reports.

Pure helpers over an ``email.message.Message`` tree; the rules they follow are described in
the :mod:`mailbot.ingest.parse` module docstring ("Fields"). Public: :func:`html_to_text`
(re-exported by ``parse``) and the denial-of-service guards ``MAX_PARTS`` and ``MAX_HTML_CHARS``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import errors as email_errors
from email import message_from_string
from email.message import Message

import html2text

from mailbot.domain import Attachment
from mailbot.ingest.mime_headers import (
    _CHARSET_FAMILIES,
    _HINT_SKIP,
    _VALID_ID,
    _clean_text,
    _codec_name,
    _decode_bytes,
    _decode_words,
    _first,
    _unfold,
    _unique,
)
from mailbot.ingest.tnef import TNEF_NAME, TNEF_TYPES, TnefError, read_tnef

log = logging.getLogger(__name__)

# Denial-of-service guards.
MAX_PARTS = 2000
MAX_HTML_CHARS = 2_000_000

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
_CELL_END = re.compile(r"(</t[dh]\s*>)", re.IGNORECASE)
_LINE_END_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_TYPE_NOISE = re.compile(r"[\s\x00-\x1f\x7f]+")
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


@dataclass
class _Body:
    """What the walk over the MIME tree collects."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    report_types: list[str] = field(default_factory=list)
    failed_recipients: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    # The body found inside TNEF parts (winmail.dat): used when the mail itself has none.
    tnef_plain: list[str] = field(default_factory=list)
    tnef_html: list[str] = field(default_factory=list)


# --- charset hints ---------------------------------------------------------------------------


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
        children = _children(part)
        if _part_type(part).startswith("message/") or children is None:
            continue
        inner = in_attachment or _disposition(part) == "attachment"
        stack.extend((child, inner) for child in reversed(children))


def _every_part(msg: Message, *, limit: int) -> Iterator[Message]:
    """Parts in order, attached messages included, at most ``limit``; no recursion."""
    stack = [msg]
    for _ in range(limit):
        if not stack:
            return
        part = stack.pop()
        yield part
        stack.extend(reversed(_children(part) or []))


def _children(part: Message) -> list[Message] | None:
    """The sub-parts of a multipart or ``message/*`` part, None for a leaf. Never decodes
    (``get_payload()`` of a leaf decodes 8-bit text with the declared charset, and raises on
    one such as ``"\x00"``)."""
    if not part.is_multipart():
        return None
    payload = part.get_payload()
    return [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else None


def _raw_payload(part: Message) -> str:
    """A leaf's payload as the parser left it (8-bit bytes as surrogate escapes)."""
    payload = vars(part).get("_payload")
    return payload if isinstance(payload, str) else ""


def _visit(part: Message, in_attachment: bool, body: _Body, hints: tuple[str, ...]) -> None:
    ctype = _part_type(part)
    if ctype in _REPORT_PART_TYPES:
        body.report_types.append(ctype.partition("/")[2])
        if ctype in _DSN_TYPES:
            body.failed_recipients.extend(_dsn_failed_recipients(part))
        return
    is_container = part.is_multipart()
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
    attachment = _attachment(part, ctype, disposition, filename)
    if _is_tnef(ctype, filename):
        _unpack_tnef(part, attachment, body)
    else:
        body.attachments.append(attachment)


def _part_type(part: Message, default: str = "application/octet-stream") -> str:
    """The part's MIME type, lower case, with white space and control characters (a folded
    or NUL-spiked value) taken out; a type that is still invalid reads as ``text/plain``, as
    RFC 2045 §5.2 says (and the standard library does for one without a slash)."""
    try:
        value = part.get_content_type().lower()
    except (ValueError, IndexError, AttributeError, TypeError):
        return default
    value = _TYPE_NOISE.sub("", value)
    return value if _MIME_TYPE.fullmatch(value) else "text/plain"


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
    cid = _clean_text(_unfold(content_id)).strip("<> \t") if content_id else ""
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
        payload = _raw_payload(part).encode("utf-8", "surrogateescape")
    charset = _content_charset(part)
    text, used = _decode_bytes(payload, charset)
    defect = None
    if charset and used != _codec_name(charset):
        defect = f"charset-fallback: {charset[:40]}->{used}"
    return _normalise_text(text), defect


def _normalise_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


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
    children = _children(part)
    if children is not None:
        blocks = children
    else:
        chunks = re.split(r"\n[ \t]*\n", _normalise_text(_raw_payload(part)))
        blocks = [message_from_string(chunk.strip("\n")) for chunk in chunks]
    return [b for b in blocks if b.get("final-recipient") or b.get("original-recipient")]


def _dsn_address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com``; None when it is no address."""
    if not value:
        return None
    address = _unfold(value).rpartition(";")[2].strip().strip("<>").strip()
    if _VALID_ID.fullmatch(address) and address.count("@") == 1:
        return address
    return None


# --- TNEF (winmail.dat): read by mailbot.ingest.tnef ---------------------------------------


def _is_tnef(ctype: str, filename: str | None) -> bool:
    if ctype in TNEF_TYPES:
        return True
    return (filename or "").lower() == TNEF_NAME


def _unpack_tnef(part: Message, container: Attachment, body: _Body) -> None:
    """List the TNEF part and, when it can be read, the files inside it; its body text."""
    try:
        payload = part.get_payload(decode=True)
        tnef = read_tnef(payload if isinstance(payload, bytes) else b"")
    except TnefError as exc:
        body.attachments.append(container)
        body.defects.append(f"tnef-unreadable: {exc}")
        return
    except Exception as exc:  # a reader bug must not lose the message
        log.warning("TNEF part could not be read", exc_info=True)
        body.attachments.append(container)
        body.defects.append(f"tnef-unreadable: {type(exc).__name__}")
        return
    body.attachments.append(replace(container, container=True))
    source = container.filename or TNEF_NAME
    body.attachments.extend(
        Attachment(
            filename=f.name(), content_type=f.content_type(), size=f.size(), unpacked_from=source
        )
        for f in tnef.files
    )
    text = _normalise_text(tnef.text or "")
    html = _normalise_text(tnef.html or "")
    if text.strip():
        body.tnef_plain.append(text)
    if html.strip():
        body.tnef_html.append(html)
    if tnef.rtf and not (tnef.text or tnef.html):
        tnef.defects.append("tnef-rtf-body-not-read")
    body.defects.extend(tnef.defects)
