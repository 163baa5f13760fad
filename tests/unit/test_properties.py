"""Property-based tests (hypothesis): parse -> decide, the threading rules, agent tokens.

Four groups, each stating what the code promises for *every* input, not for examples:

1. ``parse_message`` is total on bytes: it returns a :class:`ParsedMessage` or raises
   :class:`ParseError`, nothing else, for arbitrary bytes, for a soup of mail syntax and for
   generated messages (random header fields, multipart trees of random depth and width,
   transfer encodings, charsets, RFC 2047/2231 words, CR/LF/NUL sprinkled in). The result's
   text fields hold no CR and no NUL, the subject is one stripped line, every address has
   exactly one "@" and every message id is ``<left@right>`` in printable ASCII.
2. The pure decide path (``classify_auto``, ``new_text``, ``clean_subject``/``find_token``,
   ``correlate`` and the rules engine's ``decide`` with the shipped rules.yaml) never raises
   on a parsed message, gives the same answer twice, and keeps the engine's documented
   invariants (who gets an automatic answer, and who never does).
3. Threading: the subject token round trip, ``clean_subject`` / ``strip_prefixes``
   idempotence, and the order of evidence in ``correlate`` (In-Reply-To, then References
   newest first, then a subject token from a participant, then new/none).
4. Agent tokens: sign/verify and every carrier round trip; an altered signature, a
   signature moved to another ticket or a token of another key is rejected;
   ``find_ticket_token`` is total and finds no ticket in text not made by the signer.

Every test sets its own ``settings`` (no profile is registered, other tests are unaffected)
with ``deadline=None`` and ``database=None``: no example database is kept, a failure prints
its input. The defects these properties found in the parser (a NUL charset that crashed
it, a folded or NUL-spiked MIME type that lost the body) are kept as regression tests with
their minimal inputs.
"""

from __future__ import annotations

import base64
import functools
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbot.agents.tokens import (
    CARRIER_ADDRESS,
    CARRIER_BODY,
    MAX_ID_DIGITS,
    SIGNATURE_CHARS,
    TokenSigner,
    find_ticket_token,
    footer_line,
    notification_message_id,
    reply_address,
    token_from_address,
    token_from_message_id,
    tokens_in_text,
)
from mailbot.domain import (
    Address,
    ParsedMessage,
    ReplyKind,
    ThreadMatch,
    TicketAction,
    TicketStatus,
)
from mailbot.errors import ParseError
from mailbot.ingest.autogen import classify_auto
from mailbot.ingest.correlate import (
    Grace,
    TicketFacts,
    clean_subject,
    correlate,
    find_token,
    format_token,
    strip_prefixes,
    ticket_ref,
    token_pattern,
)
from mailbot.ingest.parse import parse_message
from mailbot.ingest.quotes import new_text
from mailbot.policy import Policy, load_policy
from mailbot.rules.engine import MessageView, decide

REPO = Path(__file__).resolve().parents[2]


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@functools.cache
def _policy() -> Policy:
    return load_policy(REPO / "rules.yaml", REPO / "templates")


# =============================================================================================
# Strategies: mail syntax
# =============================================================================================

_EOLS = (b"\r\n", b"\n", b"\r")
_CHARSETS = (
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "iso-8859-15",
    "koi8-r",
    "shift_jis",
    "iso-2022-jp",
    "euc-kr",
    "gb2312",
    "big5",
    "utf-16",
    "utf-7",
    "x-unknown-charset",
    "",
    "UTF8",
)
_ENCODINGS = ("7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus", "")

# Any character except surrogates (they cannot be encoded), control characters included.
_chars = st.characters(exclude_categories=("Cs",))
_words = st.text(_chars, max_size=24)
_plain_words = st.text(string.ascii_letters + string.digits + " .,!?-", max_size=24)


def _encode(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset or "utf-8", errors="replace")
    except LookupError:
        return text.encode("utf-8")


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word: random charset, B or Q, sometimes broken."""
    text = draw(_words)
    charset = draw(st.sampled_from(_CHARSETS)) or "utf-8"
    data = _encode(text, charset)
    if draw(st.booleans()):
        payload = base64.b64encode(data).decode("ascii")
        if draw(st.integers(0, 9)) == 0:
            payload = payload[: draw(st.integers(0, len(payload)))]  # truncated base64
        return f"=?{charset}?B?{payload}?="
    q = "".join(
        chr(b) if chr(b).isalnum() and b < 128 else "_" if b == 32 else f"={b:02X}" for b in data
    )
    return f"=?{charset}?Q?{q}?="


_header_text = st.one_of(_words, _plain_words, encoded_words())
_header_texts = st.lists(_header_text, max_size=4).map(" ".join)

_atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
_local = st.one_of(
    st.text(_atext + ".", min_size=1, max_size=12),
    st.sampled_from(["anna", "mailer-daemon", "postmaster", "noreply", "support", "Maria"]),
    st.text(_chars, min_size=1, max_size=6),
)
_domain = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "butiken.se",
            "nordicdecor.se",
            "bigretail.example",
            "eu.bigretail.example",
            "[127.0.0.1]",
        ]
    ),
    st.text(string.ascii_lowercase + string.digits + "-.", min_size=1, max_size=12),
    st.text(_chars, min_size=1, max_size=6),
)
_addr_spec = st.one_of(
    st.builds(lambda lo, do: f"{lo}@{do}", _local, _domain),
    st.sampled_from(
        [
            "support@example.com",
            "maria@example.com",
            "anna.berg@nordicdecor.se",
            "giulia@modacasa.it",
            "a@b@c",
            "@x",
            "x@",
            "",
        ]
    ),
)


@st.composite
def mailbox(draw: st.DrawFn) -> str:
    spec = draw(_addr_spec)
    shape = draw(st.integers(0, 7))
    name = draw(_header_texts)
    if shape == 0:
        return spec
    if shape == 1:
        return f"<{spec}>"
    if shape == 2:
        return f"{name} <{spec}>"
    if shape == 3:
        return f'"{name}" <{spec}>'
    if shape == 4:
        return f"{spec} ({name})"
    if shape == 5:
        return f"{draw(encoded_words())} <{spec}>"
    if shape == 6:
        return f"Group: {spec}, {draw(_addr_spec)};"
    return name  # no address at all, or garbage


_address_list = st.lists(mailbox(), min_size=1, max_size=4).map(", ".join)

_id_part = st.one_of(
    st.text(string.ascii_letters + string.digits + ".-_$", min_size=1, max_size=12),
    st.text(_chars, max_size=6),
)


@st.composite
def message_ids(draw: st.DrawFn) -> str:
    left, right = draw(_id_part), draw(_id_part)
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return f"<{left}@{right}>"
    if shape == 1:
        return f"{left}@{right}"
    if shape == 2:
        return f"<{left}>"
    if shape == 3:
        return f"< {left} @ {right} >"
    if shape == 4:
        return f"<mb.{draw(st.integers(1, 99))}.{left}.ab@example.com>"
    return f"<{left}@{right}> (comment)"


_id_list = st.lists(message_ids(), min_size=1, max_size=5).map(" ".join)


@st.composite
def subjects(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(
                _header_text,
                st.sampled_from(["Re:", "AW:", "SV: VS:", "Fwd:", "R: I:", "Re[2]:", "TR:"]),
                st.integers(0, 10**13).map(lambda n: f"[#{n}]"),
                st.sampled_from(
                    [
                        "Out of Office",
                        "Undeliverable:",
                        "How do I reset my password?",
                        "Kassan fungerar inte",
                        "[AUTO GENERATED]",
                    ]
                ),
            ),
            max_size=5,
        )
    )
    return " ".join(parts)


_DATES = st.one_of(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S +0000")),
    _words,
    st.sampled_from(["Mon, 32 Foo 99999 99:99:99 +9999", "Tue, 1 Jan 0001 00:00:00 -2359"]),
)

_KEPT = st.sampled_from(
    [
        ("Auto-Submitted", st.sampled_from(["auto-replied", "no", "auto-generated; x=1", ""])),
        ("Precedence", st.sampled_from(["bulk", "list", "junk", "first-class"])),
        ("List-Id", _plain_words),
        ("Return-Path", st.sampled_from(["<>", "< >", "<a@b.c>", ""])),
        ("X-Mailbot-Loop", st.sampled_from(["mailbot-0000", "", "x"])),
        ("X-Failed-Recipients", _address_list),
        ("X-Loop", _plain_words),
        ("X-Autoreply", st.sampled_from(["yes", "no", "0"])),
        ("X-Priority", st.sampled_from(["1 (Highest)", "5"])),
        ("Importance", st.sampled_from(["high", "low"])),
        ("Authentication-Results", _words),
        ("Delivered-To", _address_list),
        ("X-Mailbot-Report-Types", st.just("delivery-status")),
        ("Received", _words),
        ("X-Random", _words),
    ]
)


@st.composite
def header_fields(draw: st.DrawFn) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    pool: list[tuple[str, st.SearchStrategy[str]]] = [
        ("From", _address_list),
        ("To", _address_list),
        ("Cc", _address_list),
        ("Reply-To", _address_list),
        ("Sender", mailbox()),
        ("Subject", subjects()),
        ("Message-ID", message_ids()),
        ("In-Reply-To", _id_list),
        ("References", _id_list),
        ("Date", _DATES),
    ]
    for name, values in pool:
        if draw(st.integers(0, 4)) > 0:
            fields.append((name, draw(values)))
    for name, values in draw(st.lists(_KEPT, max_size=4)):
        fields.append((name, draw(values)))
    if draw(st.integers(0, 9)) == 0:  # a field of random name
        fields.append((draw(st.text(_chars, min_size=1, max_size=10)), draw(_words)))
    return draw(st.permutations(fields))


# --- MIME parts ------------------------------------------------------------------------------

_boundary = st.text(string.ascii_letters + string.digits + "'()+_,-./:=? ", min_size=1, max_size=20)
_param_value = st.one_of(_plain_words, _words, encoded_words())


@st.composite
def content_params(draw: st.DrawFn) -> list[str]:
    params: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 5))
        value = draw(_param_value)
        if kind == 0:
            params.append(f'name="{value}"')
        elif kind == 1:
            params.append(f"filename={value}")
        elif kind == 2:  # RFC 2231, one piece
            data = _encode(value, "utf-8")
            params.append("filename*=utf-8''" + "".join(f"%{b:02X}" for b in data))
        elif kind == 3:  # RFC 2231, continuations
            params.append(f'name*0="{value[:5]}"; name*1="{value[5:]}"')
        elif kind == 4:
            params.append(f"{draw(st.text(_chars, max_size=6))}={value}")
        else:
            params.append(draw(st.sampled_from(["format=flowed", "delsp=yes", "report-type=x"])))
    return params


def _encode_body(data: bytes, cte: str, eol: bytes) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", eol)
    if cte == "quoted-printable":
        return b"".join(
            bytes([b]) if 33 <= b <= 126 and b != 61 else b"=%02X" % b for b in data
        ).replace(b"=0A", eol)
    return data


_LEAF_TYPES = (
    "text/plain",
    "text/plain",
    "text/html",
    "application/octet-stream",
    "image/png",
    "message/delivery-status",
    "message/disposition-notification",
    "message/feedback-report",
    "text/rfc822-headers",
    "application/ms-tnef",
    "text/calendar",
    "garbage",
    "",
)
_HTML_BODIES = st.sampled_from(
    [
        "<p>Hello <b>there</b></p>",
        "<html><body><table><tr><td>a</td><td>b</td></tr></table></body></html>",
        "<a href='mailto:x@y'>mail</a> <img src=x> <script>x</script>",
        "<p>unclosed <div><span>",
        "&#0; &#x0D; &nbsp; &amp",
    ]
)
_DSN_BODY = (
    "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; {addr}\nAction: failed\n"
    "Status: 5.1.1\n"
)


@st.composite
def mime_parts(draw: st.DrawFn, depth: int, eol: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(header fields, body bytes) of one MIME entity, possibly a multipart tree."""
    kind = draw(st.integers(0, 9)) if depth > 0 else 0
    if kind >= 7:  # multipart
        boundary = draw(_boundary)
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "digest"]))
        quoted = draw(st.booleans())
        ctype = f"multipart/{subtype}; boundary=" + (f'"{boundary}"' if quoted else boundary)
        if draw(st.integers(0, 9)) == 0:
            ctype = f"multipart/{subtype}"  # no boundary at all
        children = draw(st.lists(mime_parts(depth - 1, eol), max_size=4))
        delimiter = b"--" + boundary.encode("ascii")
        chunks = [_encode(draw(_plain_words), "utf-8")]  # preamble
        for child_headers, child_body in children:
            chunks.append(delimiter + eol + _header_block(child_headers, eol) + eol + child_body)
        if draw(st.integers(0, 4)) > 0:
            chunks.append(delimiter + b"--" + eol + _encode(draw(_plain_words), "utf-8"))
        return [("Content-Type", ctype)], eol.join(chunks)
    if kind == 6:  # an attached message
        inner = draw(raw_messages(depth=depth - 1, eol=eol, sprinkle=False))
        return [("Content-Type", "message/rfc822")], inner
    ctype = draw(st.sampled_from(_LEAF_TYPES))
    charset = draw(st.sampled_from(_CHARSETS))
    params = draw(content_params())
    if charset and draw(st.booleans()):
        params.insert(0, f"charset={charset}")
    cte = draw(st.sampled_from(_ENCODINGS))
    headers = [("Content-Type", "; ".join([ctype, *params]))]
    if cte:
        headers.append(("Content-Transfer-Encoding", cte))
    disposition = draw(st.sampled_from([None, "inline", "attachment", "attachment; filename=a"]))
    if disposition:
        headers.append(("Content-Disposition", disposition))
    if draw(st.integers(0, 5)) == 0:
        headers.append(("Content-ID", draw(message_ids())))
    if ctype == "text/html":
        text = draw(_HTML_BODIES) + draw(_words)
    elif ctype == "message/delivery-status":
        text = _DSN_BODY.format(addr=draw(_addr_spec))
    else:
        text = draw(st.text(_chars, max_size=200))
    if ctype == "application/ms-tnef":
        data = b"\x78\x9f\x3e\x22" + draw(st.binary(max_size=64))
    else:
        data = _encode(text, charset)
    if draw(st.integers(0, 5)) > 0:  # otherwise: the encoding lies about the body
        data = _encode_body(data, cte, eol)
    return headers, data


def _fold(value: bytes, eol: bytes) -> bytes:
    return value.replace(b", ", b"," + eol + b" ")


def _header_block(fields: list[tuple[str, str]], eol: bytes) -> bytes:
    return b"".join(
        name.encode("utf-8") + b": " + _fold(value.encode("utf-8"), eol) + eol
        for name, value in fields
    )


def _sprinkle(data: bytes, inserts: list[tuple[float, bytes]]) -> bytes:
    for where, what in inserts:
        pos = int(where * len(data))
        data = data[:pos] + what + data[pos:]
    return data


_sprinkles = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n", b"\n\n", b"\r\r", b"\xff", b" "]),
    ),
    max_size=6,
)


@st.composite
def raw_messages(
    draw: st.DrawFn, depth: int = 3, eol: bytes | None = None, sprinkle: bool = True
) -> bytes:
    """A generated message: random header fields, a MIME tree, CR/LF/NUL sprinkled in."""
    eol = eol if eol is not None else draw(st.sampled_from(_EOLS))
    fields = draw(header_fields())
    part_headers, body = draw(mime_parts(depth, eol))
    if draw(st.booleans()):
        fields.append(("MIME-Version", "1.0"))
    head = _header_block([*fields, *part_headers], eol)
    if draw(st.integers(0, 19)) == 0:
        head = b"From someone@example.com Mon Jan  1 00:00:00 2024" + eol + head
    if draw(st.integers(0, 9)) == 0:  # raw 8-bit header bytes in a legacy charset
        head = head.decode("utf-8").encode("latin-1", errors="replace")
    raw = head + eol + body
    return _sprinkle(raw, draw(_sprinkles)) if sprinkle else raw


_SOUP = st.sampled_from(
    [
        b"From: ",
        b"To: ",
        b"Subject: ",
        b"Content-Type: ",
        b"multipart/mixed; boundary=b",
        b"message/rfc822",
        b"text/html",
        b"Content-Transfer-Encoding: base64",
        b"quoted-printable",
        b"--b",
        b"--b--",
        b"=?utf-8?b?",
        b"=?iso-2022-jp?q?=1B",
        b"?=",
        b"<",
        b">",
        b"@",
        b'"',
        b"(",
        b")",
        b",",
        b";",
        b":",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b"\x00",
        b"\xff\xfe",
        b"=0D",
        b"a@b.c",
        b"charset=utf-16",
        b"filename*0*=utf-8''%00",
    ]
)
soup = st.lists(st.one_of(_SOUP, st.binary(max_size=4)), max_size=60).map(b"".join)


# =============================================================================================
# 1. parse_message: total, and clean text fields
# =============================================================================================

_MESSAGE_ID = re.compile(r"<[!-;=?A-~]+@[!-;=?A-~]+>")


def _parse(raw: bytes) -> ParsedMessage | None:
    """The parsed message, or None for a ParseError; any other exception fails the test."""
    try:
        parsed = parse_message(raw)
    except ParseError:
        return None
    assert isinstance(parsed, ParsedMessage)
    return parsed


def _addresses(msg: ParsedMessage) -> Iterator[Address]:
    if msg.from_ is not None:
        yield msg.from_
    if msg.sender is not None:
        yield msg.sender
    yield from (*msg.reply_to, *msg.to, *msg.cc)


def _text_fields(msg: ParsedMessage) -> Iterator[tuple[str, str]]:
    yield "subject", msg.subject
    yield "text", msg.text
    if msg.html is not None:
        yield "html", msg.html
    yield "content_type", msg.content_type
    for address in _addresses(msg):
        yield "address", address.email
        yield "display name", address.name
    for msg_id in (msg.message_id or "", *msg.in_reply_to, *msg.references):
        yield "message id", msg_id
    for name, value in msg.headers:
        yield "header name", name
        yield f"header {name}", value
    for attachment in msg.attachments:
        yield "attachment type", attachment.content_type
        yield "attachment name", attachment.filename or ""
        yield "attachment content-id", attachment.content_id or ""
        yield "attachment unpacked from", attachment.unpacked_from or ""


def check_parsed(msg: ParsedMessage, raw: bytes) -> None:
    for field, value in _text_fields(msg):
        assert "\r" not in value and "\x00" not in value, (field, value)
    assert "\n" not in msg.subject and msg.subject == msg.subject.strip(), msg.subject
    for address in _addresses(msg):
        assert address.email.count("@") == 1, address
        local, _, domain = address.email.partition("@")
        assert local and domain, address
        assert "\n" not in address.name, address
    for msg_id in (*([msg.message_id] if msg.message_id else []), *msg.in_reply_to):
        assert _MESSAGE_ID.fullmatch(msg_id), msg_id
    for msg_id in msg.references:
        assert _MESSAGE_ID.fullmatch(msg_id), msg_id
    assert len(set(msg.references)) == len(msg.references)
    for group in (msg.to, msg.cc, msg.reply_to):
        assert len({a.key for a in group}) == len(group)
    assert msg.date is None or msg.date.utcoffset() == timedelta(0)
    assert msg.size == len(raw)


@_settings(400)
@given(raw=st.binary(max_size=2000))
def test_parse_arbitrary_bytes_returns_a_message_or_raises_parse_error(raw: bytes) -> None:
    parsed = _parse(raw)
    if parsed is not None:
        check_parsed(parsed, raw)


@_settings(400)
@given(raw=soup)
def test_parse_mail_syntax_soup_returns_a_message_or_raises_parse_error(raw: bytes) -> None:
    parsed = _parse(raw)
    if parsed is not None:
        check_parsed(parsed, raw)


@_settings(130)
@given(raw=raw_messages())
def test_parse_generated_messages_is_total_clean_and_deterministic(raw: bytes) -> None:
    parsed = _parse(raw)
    if parsed is not None:
        check_parsed(parsed, raw)
        assert parse_message(raw) == parsed  # the same bytes parse to the same value


def test_a_nul_charset_does_not_crash_the_parser() -> None:
    """Found by the properties: ``get_payload()`` of a leaf decodes its 8-bit payload with
    the declared charset and raised ``ValueError('embedded null character')`` here."""
    raw = b'From: a@b.c\nContent-Type: text/plain; charset="\x00"\n\n\xff'
    parsed = _parse(raw)
    assert parsed is not None
    check_parsed(parsed, raw)
    nested = (
        b'From: a@b.c\nContent-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b'Content-Type: text/plain; charset="\x00"\n\n\xe9t\xe9\n--b--\n'
    )
    parsed = _parse(nested)
    assert parsed is not None and "t" in parsed.text


@pytest.mark.parametrize(
    ("raw", "content_type", "text"),
    [
        # A folded Content-Type read as "text/\r\n plain": the body became an attachment.
        (b"From: a@b.c\r\nContent-Type: text/\r\n plain\r\n\r\nhi", "text/plain", "hi"),
        # NUL in the type: the same.
        (b"From: a@b.c\r\nContent-Type: tex\x00t/plain\r\n\r\nhi", "text/plain", "hi"),
        # A type that stays invalid reads as text/plain (RFC 2045 5.2).
        (b"From: a@b.c\r\nContent-Type: te(x)t/pl;ain\r\n\r\nhi", "text/plain", "hi"),
        # NUL in a Content-ID was kept in the attachment's content_id.
        (
            b"From: a@b.c\r\nContent-Type: image/png\r\nContent-ID: <a\x00@b>\r\n\r\nx",
            "image/png",
            "",
        ),
    ],
    ids=["folded-content-type", "nul-in-content-type", "invalid-content-type", "nul-in-content-id"],
)
def test_mime_types_and_content_ids_are_clean(raw: bytes, content_type: str, text: str) -> None:
    parsed = _parse(raw)
    assert parsed is not None
    check_parsed(parsed, raw)
    assert parsed.content_type == content_type
    assert parsed.text.strip() == text
    assert all(a.content_id in (None, "a@b") for a in parsed.attachments)


# =============================================================================================
# 2. the pure decide path
# =============================================================================================

_NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_nows = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


_senders = st.sampled_from(
    ["anna@butiken.se", "maria@example.com", "mallory@evil.test", "anna.berg@nordicdecor.se"]
)


@st.composite
def ticket_facts(draw: st.DrawFn, ticket_id: int | None = None) -> TicketFacts:
    policy = _policy()
    return TicketFacts(
        ticket_id=ticket_id if ticket_id is not None else draw(st.integers(1, 50)),
        status=draw(st.sampled_from(TicketStatus)),
        participants=frozenset(draw(st.lists(_senders, max_size=3))),
        plan=draw(st.sampled_from(["", *policy.rules.plans])),
        language=draw(st.sampled_from(["", *policy.rules.languages])),
        resolved_at=draw(st.none() | st.just(_NOW - timedelta(days=draw(st.integers(0, 60))))),
        spam=draw(st.booleans()),
    )


def _same_line_text(result: str, source: str) -> bool:
    """Every non-blank line of ``result`` is a line of ``source``, white space (and the
    zero-width spaces new_text removes at line ends) ignored: the result is stripped, and
    the library puts blank lines between the pieces it keeps."""

    def bare(line: str) -> str:
        return re.sub(r"[\s\u200b\x00]", "", line)

    lines = {bare(line) for line in source.replace("\r", "\n").split("\n")}
    return all(bare(line) in lines for line in result.split("\n") if bare(line))


def check_new_text(text: str, languages: tuple[str, ...]) -> str:
    result = new_text(text, languages=languages)
    assert new_text(text, languages=languages) == result  # deterministic
    assert "\r" not in result and "\x00" not in result
    assert result == result.strip()
    # Never empty when the input had text (NUL, white space and zero-width spaces are none).
    assert bool(result) == bool(re.sub(r"[\s\x00\u200b]", "", text)), (text, result)
    # Never invents text: every line of the result is a line of the input.
    assert _same_line_text(result, text), (text, result)
    return result


@_settings(130)
@given(raw=raw_messages(), data=st.data())
def test_decide_path_never_raises_and_is_deterministic(raw: bytes, data: st.DataObject) -> None:
    parsed = _parse(raw)
    if parsed is None:
        return
    check_parsed(parsed, raw)
    policy = _policy()
    rules = policy.rules
    prefix = rules.identity.ticket_prefix

    own, marker = policy.own_addresses, policy.marker
    verdict = classify_auto(parsed, own_addresses=own, loop_marker=marker)
    assert classify_auto(parsed, own_addresses=own, loop_marker=marker) == verdict
    assert verdict.auto_generated == (verdict.reason is not None)
    assert not verdict.bounce or verdict.auto_generated
    assert not verdict.failed_recipients or verdict.bounce
    assert all("@" in a for a in verdict.failed_recipients)
    if parsed.from_ is not None and parsed.from_.key in policy.own_addresses:
        assert verdict.auto_generated  # never answer ourselves
    if parsed.header("list-id") is not None or parsed.header("x-loop") is not None:
        assert verdict.auto_generated

    text = check_new_text(parsed.text, tuple(rules.languages))
    subject = clean_subject(parsed.subject, prefix)
    assert clean_subject(parsed.subject, prefix) == subject
    token = find_token(parsed.subject, prefix)

    ids = (*parsed.in_reply_to, *parsed.references)
    known = {i: data.draw(ticket_facts()) for i in ids if data.draw(st.booleans())}
    token_ticket = (
        data.draw(ticket_facts(ticket_id=token))
        if token is not None and token > 0 and data.draw(st.booleans())
        else None
    )
    sender = parsed.from_.key if parsed.from_ else None
    grace = Grace(_NOW, timedelta(days=rules.agent_mail.reopen_within_days))
    arguments = {
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "subject": parsed.subject,
        "sender": sender,
        "auto_generated": verdict.auto_generated,
        "known_ids": known,
        "token_ticket": token_ticket,
        "token": token,
        "grace": grace,
    }
    thread = correlate(**arguments)  # type: ignore[arg-type]
    assert correlate(**arguments) == thread  # type: ignore[arg-type]
    facts = next(
        (f for f in [*known.values(), token_ticket] if f and f.ticket_id == thread.ticket_id),
        None,
    )
    now = data.draw(_nows)
    view = MessageView.of(parsed, text, subject)
    options = {
        "ticket_language": facts.language if facts else None,
        "ticket_plan": facts.plan if facts else None,
    }
    decision = decide(view, thread, verdict, rules, now, **options)  # type: ignore[arg-type]
    assert decide(view, thread, verdict, rules, now, **options) == decision  # type: ignore[arg-type]

    # The engine's documented order (mailbot/rules/engine.py).
    assert decision.thread == thread and decision.auto == verdict
    assert decision.plan in rules.plans
    assert decision.language in rules.languages
    assert decision.customer == (sender or "")
    if thread.action is not TicketAction.NEW:
        assert decision.reply is None and decision.deadline is None
    else:
        assert decision.deadline is not None and decision.deadline >= now
    answered = (
        thread.action is TicketAction.NEW
        and not verdict.auto_generated
        and parsed.from_ is not None
        and rules.agent_for(parsed.from_.key) is None
    )
    assert (decision.reply is not None) == answered, decision.rule_hits
    if decision.reply is not None:
        assert decision.reply.to == parsed.from_
        assert decision.reply.language == decision.language
        assert decision.reply.kind in (ReplyKind.ACK, ReplyKind.WIKI)
        assert decision.reply.kind is ReplyKind.ACK or decision.reply.articles


_REPLY_LINES = st.sampled_from(
    [
        "On Mon, 4 Mar 2024 at 10:15, Support <support@example.com> wrote:",
        "Den 4 mars 2024 kl. 10:15 skrev Support <support@example.com>:",
        "Il giorno lun 4 mar 2024 alle ore 10:15 Support <support@example.com> ha scritto:",
        "In data 4 marzo 2024 10:15:31 ha scritto:",
        "Am Mo., 4. März 2024 um 10:15 Uhr schrieb Support <support@example.com>:",
        "-----Original Message-----",
        "From: Support <support@example.com>",
        "Sent: Monday, March 4, 2024 10:15 AM",
        "> quoted line",
        "> > deeper",
        ">",
        "-- ",
        "--",
        "Thanks,",
        "Best regards,",
        "- a bullet",
        "_____",
        "",
        "  ",
        "\u200b",
        "On " + "x" * 600,
    ]
)
reply_bodies = st.lists(st.one_of(_REPLY_LINES, _words), max_size=25).map("\n".join)


@_settings(300)
@given(text=st.one_of(reply_bodies, st.text(_chars, max_size=300)))
def test_new_text_is_total_deterministic_and_never_invents_text(text: str) -> None:
    check_new_text(text, ("en", "sv", "it"))


# =============================================================================================
# 3. threading rules
# =============================================================================================

_prefixes = st.one_of(st.just(""), st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True))
_ticket_numbers = st.integers(0, 10**MAX_ID_DIGITS - 1)
_subject_text = st.one_of(
    _words,
    st.lists(
        st.one_of(
            _words,
            st.sampled_from(["[", "]", "#", "[#", "#1]", "Re:", "AW:", " ", "[ASHOP#", "ashop"]),
            st.integers(0, 10**13).map(str),
        ),
        max_size=8,
    ).map("".join),
)


@_settings(400)
@given(
    prefix=_prefixes,
    number=_ticket_numbers,
    before=_subject_text,
    after=_subject_text,
    other=st.none() | _ticket_numbers,
    other_first=st.booleans(),
)
def test_token_round_trip(
    prefix: str, number: int, before: str, after: str, other: int | None, other_first: bool
) -> None:
    """``find_token(before + format_token(p, n) + after, p)`` is ``n`` unless ``before``
    already holds a token of ``p``; then it is the number of ``before``'s first token (the
    leftmost token wins, whatever ``after`` holds). Precisely, with
    ``first = token_pattern(p).search(before)``: ``n if first is None else int(first[1])``.

    No token can straddle the boundary: a token starts with ``[`` and its other characters
    are the prefix's letters, ``#`` and digits, so one that starts in ``before`` ends there.
    ``other`` puts a second token of the same prefix into ``before`` or ``after``.
    """
    if other is not None:
        if other_first:
            before = f"{before} {format_token(prefix, other)} "
        else:
            after = f" {format_token(prefix, other)}{after}"
    token = format_token(prefix, number)
    assert token == f"[{ticket_ref(prefix, number)}]"
    subject = before + token + after
    first = token_pattern(prefix).search(before)
    expected = number if first is None else int(first.group(1))
    assert find_token(subject, prefix) == expected
    assert find_token(before + token.lower() + after, prefix) == expected  # prefix case-blind
    cleaned = clean_subject(subject, prefix)
    assert find_token(cleaned, prefix) is None
    assert token_pattern(prefix).search(cleaned) is None


@_settings(200)
@given(prefix=_prefixes, number=st.integers(10**MAX_ID_DIGITS, 10**20), before=_words)
def test_token_of_more_than_twelve_digits_is_not_found(
    prefix: str, number: int, before: str
) -> None:
    subject = before + format_token(prefix, number)
    assert find_token(subject, prefix) == find_token(before, prefix)


@_settings(400)
@given(subject=_subject_text, prefix=_prefixes)
def test_clean_subject_and_strip_prefixes_are_idempotent_and_never_longer(
    subject: str, prefix: str
) -> None:
    stripped = strip_prefixes(subject)
    assert strip_prefixes(stripped) == stripped
    assert len(stripped) <= len(subject)
    assert stripped == stripped.strip() and "  " not in stripped
    cleaned = clean_subject(subject, prefix)
    assert clean_subject(cleaned, prefix) == cleaned
    assert len(cleaned) <= len(subject)


_REPLY_PREFIXES = st.sampled_from(
    (
        *("Re", "RE", "re", "Fwd", "Fw", "AW", "WG", "SV", "VS", "VB", "R", "RIF", "I", "Odp"),
        *("PD", "TR", "Antw", "Doorst", "RES", "ENC", "RV", "YNT", "Vá", "Re[2]", "Re(3)"),
        "Re [12]",
    )
)


@_settings(300)
@given(
    prefixes=st.lists(_REPLY_PREFIXES, max_size=4),
    separators=st.sampled_from([": ", ":", " : ", "：", ":\t"]),
    subject=_subject_text,
    token=st.none() | st.integers(0, 10**6),
)
def test_reply_prefixes_and_tokens_do_not_change_the_clean_subject(
    prefixes: list[str], separators: str, subject: str, token: int | None
) -> None:
    """A client's prefixes before a subject, and our token between words, leave the ticket's
    subject as it was: ``clean_subject("AW: Re: [#7] " + s) == clean_subject(s)``."""
    base = strip_prefixes(subject)
    prefixed = "".join(p + separators for p in prefixes) + base
    assert strip_prefixes(prefixed) == base
    if token is not None:
        tagged = "".join(p + separators for p in prefixes) + f"{format_token('', token)} {base}"
        assert clean_subject(tagged, "") == clean_subject(base, "")


_ids = st.sampled_from([f"<m{i}@x>" for i in range(6)])


@st.composite
def correlate_inputs(draw: st.DrawFn) -> dict[str, object]:
    known_pool = draw(st.lists(_ids, unique=True, max_size=4))
    token = draw(st.none() | st.integers(1, 60))
    return {
        "in_reply_to": tuple(draw(st.lists(_ids, max_size=2))),
        "references": tuple(draw(st.lists(_ids, max_size=4))),
        "subject": draw(_subject_text),
        "sender": draw(st.none() | _senders | _senders.map(str.upper)),
        "auto_generated": draw(st.booleans()),
        "known_ids": {i: draw(ticket_facts()) for i in known_pool},
        "token_ticket": draw(st.none() | ticket_facts(ticket_id=token)) if token else None,
        "token": token,
        "grace": draw(
            st.none()
            | st.builds(Grace, st.just(_NOW), st.integers(0, 30).map(lambda d: timedelta(days=d)))
        ),
    }


def _correlate(args: dict[str, object], **overrides: object) -> ThreadMatch:
    return correlate(**{**args, **overrides})  # type: ignore[arg-type]


def _joined_action(facts: TicketFacts, auto: bool, grace: Grace | None) -> TicketAction:
    """What joining ``facts`` does (correlate's docstring, last paragraph)."""
    closed = facts.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED)
    if not closed or auto or facts.spam:
        return TicketAction.APPEND
    resolved = facts.resolved_at
    if grace is not None and resolved is not None and grace.now - resolved > grace.reopen_within:
        return TicketAction.NEW  # resolved longer ago than the grace period: a new ticket
    return TicketAction.REOPEN


@_settings(300)
@given(args=correlate_inputs(), extra=st.lists(st.text(_chars, max_size=8), max_size=3))
def test_correlate_order_of_evidence(args: dict[str, object], extra: list[str]) -> None:
    match = _correlate(args)
    known: dict[str, TicketFacts] = args["known_ids"]  # type: ignore[assignment]
    in_reply_to: tuple[str, ...] = args["in_reply_to"]  # type: ignore[assignment]
    references: tuple[str, ...] = args["references"]  # type: ignore[assignment]
    auto: bool = args["auto_generated"]  # type: ignore[assignment]
    grace: Grace | None = args["grace"]  # type: ignore[assignment]
    sender: str | None = args["sender"]  # type: ignore[assignment]
    token_ticket: TicketFacts | None = args["token_ticket"]  # type: ignore[assignment]

    # Shape of every answer.
    if match.action in (TicketAction.APPEND, TicketAction.REOPEN):
        assert match.ticket_id is not None and match.linked_ticket_id is None
    elif match.action is TicketAction.NEW:
        assert match.ticket_id is None
    else:
        assert match.ticket_id is None and match.linked_ticket_id is None
    # Auto-generated mail never opens or reopens a ticket.
    if auto:
        assert match.action in (TicketAction.APPEND, TicketAction.NONE)
    # Unknown ids and the subject text are no evidence; the sender's case does not matter.
    noise = tuple(e for e in extra if e not in known)
    assert _correlate(args, in_reply_to=(*noise, *in_reply_to)) == match
    assert _correlate(args, references=(*references, *noise)) == match
    assert _correlate(args, subject="") == match
    if sender is not None:
        assert _correlate(args, sender=sender.swapcase()) == match

    # 1. In-Reply-To (in order), then References newest first: the first known id decides,
    #    whatever the token says.
    first = next((i for i in (*in_reply_to, *reversed(references)) if i in known), None)
    if first is not None:
        facts = known[first]
        assert match.by_reference
        assert facts.ticket_id in (match.ticket_id, match.linked_ticket_id)
        assert match.action is _joined_action(facts, auto, grace)
        assert _correlate(args, token=None, token_ticket=None) == match
        if any(i in known for i in in_reply_to):
            assert _correlate(args, references=()) == match
        return
    assert not match.by_reference
    # 2. The subject token joins only when the sender is a participant of its ticket.
    if token_ticket is not None:
        if sender is not None and sender.lower() in token_ticket.participants:
            assert token_ticket.ticket_id in (match.ticket_id, match.linked_ticket_id)
            assert match.action is _joined_action(token_ticket, auto, grace)
            return
        # A stranger never lands on the ticket, whatever its number.
        assert match.ticket_id is None
        if not auto:
            assert match.action is TicketAction.NEW
            assert match.linked_ticket_id == token_ticket.ticket_id
            return
    # 3. Otherwise a new ticket, or nothing for auto-generated mail.
    assert match.action is (TicketAction.NONE if auto else TicketAction.NEW)
    if token_ticket is None:
        assert match.linked_ticket_id is None


# =============================================================================================
# 4. agent tokens
# =============================================================================================

_secrets = st.binary(min_size=16, max_size=80)
_ticket_ids = st.integers(1, 10**MAX_ID_DIGITS - 1)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_support = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12),
    st.from_regex(r"[a-zA-Z0-9]{1,10}(\.[a-zA-Z]{2,5}){1,2}", fullmatch=True),
)
_nonce = st.text("0123456789abcdef", min_size=1, max_size=32)


def _wrap_footer(footer: str, cuts: list[int], quote: str) -> str:
    """The footer as a mail client may return it: broken over quoted lines at ``cuts``."""
    pieces: list[str] = []
    last = 0
    for cut in sorted(set(cuts)):
        pieces.append(footer[last:cut])
        last = cut
    pieces.append(footer[last:])
    return quote + ("\n" + quote).join(pieces)


@_settings(300)
@given(
    secret=_secrets,
    ticket_id=_ticket_ids,
    support=_support,
    nonce=_nonce,
    before=_words,
    after=_words,
    cuts=st.lists(st.integers(1, 40), max_size=3),
    quote=st.sampled_from(["", "> ", ">> ", "> > ", "| ", "\t"]),
    brackets=st.booleans(),
)
def test_token_round_trip_through_every_carrier(
    secret: bytes,
    ticket_id: int,
    support: str,
    nonce: str,
    before: str,
    after: str,
    cuts: list[int],
    quote: str,
    brackets: bool,
) -> None:
    signer = TokenSigner(secret)
    token = signer.sign(ticket_id)
    assert re.fullmatch(rf"{ticket_id}-[a-z2-7]{{{SIGNATURE_CHARS}}}", token)
    assert signer.verify(token) == ticket_id
    assert signer.verify(f" {token.upper()}\n") == ticket_id

    address = reply_address(support, ticket_id, token)
    assert token_from_address(address) == token
    assert token_from_address(f'"Support" <{address.upper()}>') == token
    found = find_ticket_token(signer, recipients=[f"Support <{address}>"], ids=[], text="")
    assert (found.ticket_id, found.carriers, found.invalid) == (ticket_id, (CARRIER_ADDRESS,), ())

    domain = support.rpartition("@")[2]
    message_id = notification_message_id(domain, ticket_id, token, nonce=nonce)
    assert token_from_message_id(message_id) == token
    references = f"<a@b> {message_id}\n <c@d>"
    found = find_ticket_token(signer, recipients=[], ids=[("References", references)], text="")
    assert (found.ticket_id, found.carriers, found.invalid) == (ticket_id, ("References",), ())

    footer = footer_line(token)
    if brackets:
        footer = f"<{footer}>"
    text = f"{before}\n{_wrap_footer(footer, cuts, quote)}\n{after}"
    assert token in tokens_in_text(text)
    found = find_ticket_token(signer, recipients=[], ids=[], text=text)
    assert found.ticket_id == ticket_id and CARRIER_BODY in found.carriers, (text, found)
    assert not found.conflict


@_settings(300)
@given(
    secret=_secrets,
    ticket_id=_ticket_ids,
    other_id=_ticket_ids,
    position=st.integers(0, SIGNATURE_CHARS - 1),
    replacement=st.sampled_from(_B32 + "0189" + _B32.upper()),
    support=_support,
    nonce=_nonce,
)
def test_altered_or_moved_tokens_are_rejected_by_every_carrier(
    secret: bytes,
    ticket_id: int,
    other_id: int,
    position: int,
    replacement: str,
    support: str,
    nonce: str,
) -> None:
    signer = TokenSigner(secret)
    token = signer.sign(ticket_id)
    number, _, signature = token.partition("-")
    if replacement.lower() == signature[position]:
        replacement = "9"  # never part of a base32 signature: always a change
    altered = f"{number}-{signature[:position]}{replacement}{signature[position + 1 :]}"
    moved = f"{other_id}-{signature}"
    candidates = [altered, token[:-1], token + "a"]
    if other_id != ticket_id:
        candidates.append(moved)
        assert signer.verify(signer.sign(other_id)) != ticket_id
    for bad in candidates:
        assert signer.verify(bad) is None, bad
    # The same forgeries in the carriers: nothing found, and every one reported invalid.
    domain = support.rpartition("@")[2]
    local = support.rpartition("@")[0]
    for bad in (altered, moved if other_id != ticket_id else altered):
        bad_number, _, bad_signature = bad.partition("-")
        found = find_ticket_token(
            signer,
            recipients=[f"{local}+mb-{bad}@{domain}"],
            ids=[("In-Reply-To", f"<mb.{bad_number}.{bad_signature}.{nonce}@{domain}>")],
            text=f"> [ref:mb-{bad}]",
        )
        assert found.ticket_id is None and found.tickets == () and found.carriers == ()
        assert found.invalid == (bad.lower(),), found


@_settings(200)
@given(secret=_secrets, ticket_id=_ticket_ids, flip=st.integers(0, 79), data=st.data())
def test_tokens_of_another_key_are_rejected(
    secret: bytes, ticket_id: int, flip: int, data: st.DataObject
) -> None:
    """A key of the same length differing in one bit signs differently.

    (Keys of different lengths are not compared: HMAC pads short keys with zero bytes, so
    ``k`` and ``k + b"\\0"`` are the same key. mailbot's keys are stripped text, never that.)
    """
    index = flip % len(secret)
    bit = data.draw(st.integers(0, 7))
    other = secret[:index] + bytes([secret[index] ^ (1 << bit)]) + secret[index + 1 :]
    assert TokenSigner(other).verify(TokenSigner(secret).sign(ticket_id)) is None


_token_soup = st.lists(
    st.one_of(
        _words,
        st.sampled_from(
            ["+mb-", "@", "<mb.", ".", ">", "ref:mb-", "[", "]", "-", "\n> ", "\n", " "]
        ),
        st.integers(0, 10**21).map(str),
        st.text(_B32, min_size=1, max_size=20),
    ),
    max_size=20,
).map("".join)


@_settings(250)
@given(
    secret=_secrets,
    recipients=st.lists(_token_soup, max_size=3),
    ids=st.lists(st.tuples(st.sampled_from(["In-Reply-To", "References"]), _token_soup)),
    text=st.one_of(_token_soup, st.text(_chars, max_size=200)),
)
def test_find_ticket_token_is_total_and_finds_nothing_unsigned(
    secret: bytes, recipients: list[str], ids: list[tuple[str, str]], text: str
) -> None:
    """Whatever the text, no exception and no ticket: only the signer makes valid tokens."""
    signer = TokenSigner(secret)
    found = find_ticket_token(signer, recipients=recipients, ids=ids, text=text)
    assert found.ticket_id is None and found.tickets == () and found.carriers == ()
    assert not found.conflict
    for candidate in found.invalid:
        assert re.fullmatch(r"[0-9]+-[a-z0-9]+", candidate), candidate
        assert signer.verify(candidate) is None
    for value in (*recipients, *(v for _, v in ids), text):
        result = signer.verify(value)
        assert result is None or signer.sign(result) == value.strip().lower()


@_settings(200)
@given(secret=_secrets, ticket_ids=st.lists(_ticket_ids, min_size=1, max_size=4, unique=True))
def test_tokens_of_several_tickets_are_a_conflict(secret: bytes, ticket_ids: list[int]) -> None:
    signer = TokenSigner(secret)
    text = "\n".join(footer_line(signer.sign(t)) for t in ticket_ids)
    found = find_ticket_token(signer, recipients=[], ids=[], text=text)
    assert found.tickets == tuple(ticket_ids)
    assert found.conflict == (len(ticket_ids) > 1)
    assert found.ticket_id == (ticket_ids[0] if len(ticket_ids) == 1 else None)
