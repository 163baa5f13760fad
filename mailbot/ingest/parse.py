"""Parse raw RFC 5322 bytes into a frozen :class:`~mailbot.domain.ParsedMessage`.

This is the only module that imports ``mailparser`` (the mail-parser package). It is pure and
synchronous; the intake runs big messages in a worker thread. Public API:
:func:`parse_message`, plus the helpers :func:`parse_addresses`, :func:`normalise_ids` and
:func:`html_to_text`.

The work is split over two helper modules, both re-exported here where public:
:mod:`mailbot.ingest.mime_headers` (header values, charset decoding, message ids, addresses)
and :mod:`mailbot.ingest.mime_body` (the MIME walk, body text, HTML to text, attachments,
delivery-status reports, ``MAX_PARTS`` and ``MAX_HTML_CHARS``). This module builds the
``Message`` (mail-parser, stdlib fallback, header-block repair) and assembles the result.

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

Caps on hostile header blocks (denial-of-service guards; raw bytes are stored whole anyway)
    * Every top-level header field is cut to ``MAX_HEADER_FIELD_BYTES`` (64 KiB, folded lines
      included; ``header-truncated: <name>``); after ``MAX_HEADER_FIELDS`` (2,000) fields only
      the first field of each name in ``_ALWAYS_KEPT`` (From, Subject, Message-ID, ..., and
      every loop or auto-reply marker of ``KEPT_HEADERS``) is kept
      (``too-many-header-fields``). A header block below both limits is not touched.
    * A header block with more than ``MAILPARSER_MAX_ADDRESS_SIGNS`` (2,000) ``@`` signs is
      not given to mail-parser, which parses every address header eagerly
      (``mailparser-skipped: too many addresses``); the standard library parses it.
    * From, Sender, Reply-To, To and Cc: at most ``MAX_ADDRESSES`` (200) entries and
      ``MAX_ADDRESS_CHARS`` (8,192) characters of each are read, over all its fields, ended
      at an entry boundary where possible. 10,000 recipients parse in well under a second and
      ``to``/``cc`` keep the first 200.
    * A MIME structure nested deeper than the standard library's parser can recurse (about
      900 levels) raises :class:`~mailbot.errors.ParseError` (the message is quarantined, its
      raw bytes kept); 200 levels parse normally.

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

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors as email_errors
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.message import Message

import mailparser
from mailparser.const import EPILOGUE_DEFECTS
from mailparser.utils import (
    decode_header_part,
    find_between,
    mime_header_view,
    ported_string,
    raw_payload,
)

from mailbot.domain import Address, ParsedMessage
from mailbot.errors import ParseError
from mailbot.ingest.mime_body import MAX_HTML_CHARS as MAX_HTML_CHARS
from mailbot.ingest.mime_body import MAX_PARTS as MAX_PARTS
from mailbot.ingest.mime_body import _Body, _charset_hints, _every_part, _part_type, _walk
from mailbot.ingest.mime_body import html_to_text as html_to_text
from mailbot.ingest.mime_headers import (
    _all,
    _clean_text,
    _first,
    _header_text,
    _ids,
    _parse_date,
    _subject,
    _unfold,
    _unique,
    _unique_ci,
)
from mailbot.ingest.mime_headers import normalise_ids as normalise_ids
from mailbot.ingest.mime_headers import parse_addresses as parse_addresses

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
        # sender authentication by our own server (agent mail, agent_mail.require_auth)
        "authentication-results",
        # delivery
        "delivered-to",
        "x-original-to",
        # client and structure
        "content-type",
        "x-mailer",
        "user-agent",
        "thread-index",
        "thread-topic",
        # the sender's own urgency marks (for classification rules on headers)
        "x-priority",
        "x-msmail-priority",
        "importance",
        "priority",
    }
)
REPORT_TYPES_HEADER = "x-mailbot-report-types"
FAILED_RECIPIENTS_HEADER = "x-mailbot-failed-recipients"

# Denial-of-service guards for the top-level header block (see "How a message is read").
MAX_HEADER_FIELD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 2000
MAILPARSER_MAX_ADDRESS_SIGNS = 2000
MAX_PART_HEADER_BYTES = 8 * 1024
_PARAMETER_FIELDS = frozenset({"content-type", "content-disposition"})
# Up to this size a message cannot be costly: mail-parser parses it straight from the bytes.
_DIRECT_BYTES = 32 * 1024
# Address fields (From, Sender, Reply-To, To, Cc): at most this many entries, and this many
# characters, are read of each.
MAX_ADDRESSES = 200
MAX_ADDRESS_CHARS = 8 * 1024
_BLANK_LINE = re.compile(rb"\n\r?\n")
# Beyond MAX_HEADER_FIELDS, the first field of each of these names is still kept.
_ALWAYS_KEPT = frozenset(
    {
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"in-reply-to",
        b"references",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"content-disposition",
        b"return-path",
        # the loop and auto-reply markers, so loop protection sees them whatever comes first
        *(name.encode("ascii") for name in KEPT_HEADERS),
    }
)
# email.feedparser's headerRE: what the standard library takes for a header line.
_STDLIB_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")

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


# The mail-parser internals _Diagnostics runs (mail-parser 4.x); without them it parses whole.
_LIGHT_MAILPARSER = all(
    callable(getattr(mailparser.MailParser, name, None)) for name in ("_reset", "_append_defects")
)


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
    """mail-parser first, the standard library alone if mail-parser raises.

    Header fields are capped first (:func:`_cap_header_block`). A message of up to
    ``_DIRECT_BYTES`` goes to ``mailparser.parse_from_bytes`` as it is: it is too small to
    be costly. A larger one is built by the standard library (what mail-parser does first
    anyway) and checked before mail-parser reads it: mail-parser is skipped
    (``mailparser-skipped: <why>``) for a header block with more than
    ``MAILPARSER_MAX_ADDRESS_SIGNS`` addresses, a tree of more than ``MAX_PARTS`` parts, or
    a part header cut by :func:`_cap_part_headers` (it reads every address header, and
    decodes and re-encodes every part, eagerly; the stdlib's parameter parser is quadratic).
    """
    data, defects = _cap_header_block(data)
    many_addresses = _header_block(data).count(b"@") > MAILPARSER_MAX_ADDRESS_SIGNS
    if len(data) <= _DIRECT_BYTES and not many_addresses:
        return _mailparser_from_bytes(data, defects)
    msg = _stdlib_message(data)
    skip: str | None = "too many addresses" if many_addresses else None
    if _cap_part_headers(msg):
        defects.append("part-header-truncated")
        skip = skip or "oversized part header"
    if sum(1 for _ in _every_part(msg, limit=MAX_PARTS + 1)) > MAX_PARTS:
        skip = skip or "too many parts"
    if skip is not None:
        return _Built(msg, None, [*defects, f"mailparser-skipped: {skip}"])
    try:
        parsed = _Diagnostics(msg)
    except Exception as exc:  # any mail-parser bug: the stdlib's tree is used as it is
        log.warning("mail-parser failed (%r); using the stdlib parser", exc, exc_info=True)
        return _Built(msg, None, [*defects, f"mailparser-failed: {type(exc).__name__}"])
    return _read_by_mailparser(parsed, defects)


def _mailparser_from_bytes(data: bytes, defects: list[str]) -> _Built:
    try:
        parsed = _Diagnostics.from_bytes(data)
    except Exception as exc:  # any mail-parser bug falls back to the stdlib
        log.warning("mail-parser failed (%r); using the stdlib parser", exc, exc_info=True)
        failed = f"mailparser-failed: {type(exc).__name__}"
        return _Built(_stdlib_message(data), None, [*defects, failed])
    if not isinstance(parsed.message, Message):
        failed = "mailparser-failed: no message"
        return _Built(_stdlib_message(data), None, [*defects, failed])
    return _read_by_mailparser(parsed, defects)


class _Diagnostics(mailparser.MailParser):  # type: ignore[misc]
    """mail-parser reduced to what is read of it here: the ``Message``, its date and its
    defect categories, with the same side effects on the ``Message``.

    ``MailParser.parse`` also builds its own body and attachment lists (re-encoding every
    attachment to base64, building its ``mail`` dicts twice): most of its time, all of it
    thrown away, since :mod:`mailbot.ingest.mime_body` reads the bodies. This runs
    ``parse`` as it is up to what it stores: ``_reset`` (address, date and Received
    diagnostics), the part walk collecting defects, the epilogue recovery, each part's MIME
    header view, and the payload reads of the parts it would extract (a base64 payload that
    does not decode cleanly adds its defect to the part, which the walk in ``mime_body``
    reports). A mail-parser without these internals is used whole.
    """

    def parse(self) -> _Diagnostics:
        if not _LIGHT_MAILPARSER:
            return super().parse()  # type: ignore[no-any-return]
        self._reset()
        if self.message is None:
            return self
        parts: list[tuple[Message, bool]] = []
        attached: set[int] = set()  # id() of the parts inside an attachment
        for part in self.message.walk():
            self._append_defects(part, part.get_content_type())
            inside = id(part) in attached
            parts.append((part, inside))
            if part.is_multipart():
                disposition = part.get_content_disposition()
                if (
                    inside
                    or disposition not in (None, "inline")
                    or (disposition != "inline" and bool(part.get_filename()))
                ):
                    attached.update(id(child) for child in part.get_payload())
        if self.defects_categories & EPILOGUE_DEFECTS:
            boundary = self.message.get_boundary()
            epilogue = find_between(self.message.epilogue, f"--{boundary}", f"--{boundary}--")
            if epilogue is not None:
                try:
                    parts.append((message_from_string(epilogue), True))
                except Exception:  # as mail-parser does: an unreadable epilogue is skipped
                    log.debug("epilogue part unreadable", exc_info=True)
        for index, (part, inside) in enumerate(parts):
            self._read_part(index, part, inside)
        return self

    def _read_part(self, index: int, part: Message, inside: bool) -> None:
        """``MailParser.parse``'s loop body without what it stores."""
        metadata, metadata_defects = mime_header_view(part)
        filename = decode_header_part(metadata.get_filename(), defects=metadata_defects)
        if metadata_defects:
            self._has_defects = True
            self._defects_categories.add("MimeHeaderDefect")
            self._defects.append(
                {"mime-headers": [f"MimeHeaderDefect: part {index}, {d}" for d in metadata_defects]}
            )
        disposition = ported_string(metadata.get_content_disposition()).lower()
        if part.is_multipart() and disposition != "attachment":
            return
        subtype = ported_string(metadata.get_content_subtype())
        # mail-parser tests ``subtype in ("rtf")``: a substring test, kept as it is.
        is_attachment = bool(filename) or disposition == "attachment" or subtype in "rtf"
        if not filename and ported_string(metadata.get("content-id")):
            is_attachment = is_attachment or subtype not in ("html", "plain")
        if is_attachment and not part.is_multipart():
            encoding = ported_string(metadata.get("content-transfer-encoding", ""))
            if encoding.strip().lower() == "base64":
                raw_payload(part)
            else:
                part.get_payload(decode=True)
        is_inline_body = (
            not inside
            and not part.is_multipart()
            and disposition == "inline"
            and part.get_content_type() in ("text/plain", "text/html")
        )
        if not is_attachment or is_inline_body:
            self._decode_body_payload(part, metadata.get_content_charset("utf-8"), index)


def _read_by_mailparser(parsed: mailparser.MailParser, defects: list[str]) -> _Built:
    date = parsed.date if isinstance(parsed.date, datetime) else None
    categories = sorted(str(c) for c in parsed.defects_categories)
    header_defects = [c for c in categories if c.endswith("HeaderDefect")]
    return _Built(parsed.message, date, [*defects, *header_defects])


def _cap_part_headers(msg: Message) -> bool:
    """Cut the Content-Type and Content-Disposition fields of the MIME parts below the top
    to ``MAX_PART_HEADER_BYTES`` characters (the standard library's parameter parser is
    quadratic) and keep the first ``MAX_HEADER_FIELDS`` fields; True when anything was cut.
    """
    capped = False
    for part in _every_part(msg, limit=MAX_PARTS + 1):
        if part is msg:
            continue
        items = list(part.raw_items())
        if len(items) <= MAX_HEADER_FIELDS and not any(_oversized(k, v) for k, v in items):
            continue
        kept = [(k, str(v)[:MAX_PART_HEADER_BYTES] if _oversized(k, v) else v) for k, v in items]
        # Message keeps its fields in the list ``_headers``: replacing it is linear, where
        # ``del part[name]`` for every name would be quadratic in the number of fields.
        vars(part)["_headers"] = kept[:MAX_HEADER_FIELDS]
        capped = True
    return capped


def _oversized(name: str, value: object) -> bool:
    return name.strip().lower() in _PARAMETER_FIELDS and len(str(value)) > MAX_PART_HEADER_BYTES


def _header_block(data: bytes) -> bytes:
    """The bytes before the first blank line (an upper bound of the parser's header block)."""
    end = _BLANK_LINE.search(data)
    return data if end is None else data[: end.start()]


def _cap_header_block(data: bytes) -> tuple[bytes, list[str]]:
    """The bytes with every top-level header field cut to ``MAX_HEADER_FIELD_BYTES`` and the
    fields after the first ``MAX_HEADER_FIELDS`` dropped, and the defects that records.

    The header block ends where the standard library's parser ends it: at a blank line, or
    at a line that is neither a field nor a continuation. The body is never touched.
    """
    head = _header_block(data)
    if len(head) <= MAX_HEADER_FIELD_BYTES and head.count(b"\n") < MAX_HEADER_FIELDS:
        return data, []
    out: list[bytes] = []
    truncated: list[str] = []
    seen: set[bytes] = set()
    fields = size = 0
    name = b""
    keep = True
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline + 1
        line = data[pos:stop]
        if not line.rstrip(b"\r\n"):
            break
        if line[:1] not in (b" ", b"\t"):
            if not _STDLIB_HEADER_LINE.match(line):
                break
            fields += 1
            size = 0
            name = line.split(b":", 1)[0][:40].strip().lower()
            keep = fields <= MAX_HEADER_FIELDS or (name in _ALWAYS_KEPT and name not in seen)
            seen.add(name)
        pos = stop
        if not keep:
            continue
        room = MAX_HEADER_FIELD_BYTES - size
        size += len(line)
        if len(line) <= room:
            out.append(line)
            continue
        if room > 0:
            ending = line[len(line.rstrip(b"\r\n")) :]
            out.append(line[:room].rstrip(b"\r\n") + (ending or b"\n"))
        truncated.append(name.decode("ascii", "replace"))
    defects = [f"header-truncated: {n}" for n in _unique(truncated)]
    if fields > MAX_HEADER_FIELDS:
        defects.append("too-many-header-fields")
    return b"".join(out) + data[pos:], defects


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
    if not text.strip() and (body.tnef_plain or body.tnef_html):
        tnef_html = "\n".join(body.tnef_html) or None
        text = "\n\n".join(body.tnef_plain) or html_to_text(tnef_html or "")
        html = html or tnef_html
    froms = _capped_addresses(msg, "from", hints)
    senders = _capped_addresses(msg, "sender", hints)
    return ParsedMessage(
        message_id=next(iter(_ids(msg, "message-id")), None),
        in_reply_to=_ids(msg, "in-reply-to"),
        references=_ids(msg, "references"),
        from_=froms[0] if froms else None,
        sender=senders[0] if senders else None,
        reply_to=_capped_addresses(msg, "reply-to", hints),
        to=_capped_addresses(msg, "to", hints),
        cc=_capped_addresses(msg, "cc", hints),
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


def _capped_addresses(msg: Message, name: str, hints: tuple[str, ...]) -> tuple[Address, ...]:
    """The valid addresses of every ``name`` field, de-duplicated, read from at most
    ``MAX_ADDRESSES`` entries and ``MAX_ADDRESS_CHARS`` characters: the standard library's
    address parser takes 0.3 ms an entry and is quadratic in the defects of one value."""
    found: dict[str, Address] = {}
    entries, chars = MAX_ADDRESSES, MAX_ADDRESS_CHARS
    for value in _all(msg, name, hints):
        if entries <= 0 or chars <= 0:
            break
        head, count = _first_entries(value, entries, chars)
        entries -= count
        chars -= len(head)
        for address in parse_addresses(head):
            found.setdefault(address.key, address)
    return tuple(found.values())


def _first_entries(value: str, limit: int, max_chars: int) -> tuple[str, int]:
    """The value up to its ``limit``-th top-level comma (outside quotes, comments and angle
    brackets) and at most ``max_chars`` long, ended at a top-level comma where possible;
    and how many entries that is at most."""
    if len(value) <= max_chars and value.count(",") < limit:
        return value, value.count(",") + 1
    depth = commas = last = 0
    quoted = escaped = angle = False
    for index, char in enumerate(value[: max_chars + 1]):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif depth:
            continue
        elif char == '"':
            quoted = True
        elif char in "<>":
            angle = char == "<"
        elif char == "," and not angle:
            commas += 1
            last = index
            if commas >= limit:
                return value[:index], limit
    if len(value) <= max_chars:
        return value, commas + 1
    return (value[:last], commas) if last else (value[:max_chars], 1)


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
