"""Hostile customer input on every outbound path: no header injection, no unescaped HTML,
no template evaluation.

Every composed mail is parsed back with the standard library (``email.policy.default``)
and checked on its bytes: CRLF line ends only, lines within 998 octets, exactly the header
fields we write (each once), one address per address field, header values on one line
without control characters, the subject and display names round-tripping to the intended
single-line text, HTML parts holding customer text escaped, template syntax shown literally.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from email import errors, message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage, Message
from pathlib import Path

import jinja2
import pytest
from jinja2 import meta

from mailbot.agents.commands import help_text
from mailbot.agents.tokens import TokenSigner, footer_line, reply_address
from mailbot.agents.verdict import AgentVerdict, MailRole
from mailbot.domain import Address, AutoVerdict, ReplyKind, ThreadMatch, TicketAction
from mailbot.ingest.autogen import classify_auto
from mailbot.ingest.correlate import clean_subject
from mailbot.ingest.parse import parse_message
from mailbot.ingest.pipeline import Analysis, answer_for
from mailbot.ingest.quotes import new_text
from mailbot.outbound.agent_mail import (
    Thread,
    TicketSummary,
    compose_agent_error,
    compose_notification,
    compose_relay,
)
from mailbot.outbound.attachments import FileAttachment
from mailbot.outbound.compose import compose, loop_marker
from mailbot.outbound.render import TemplateRenderer
from mailbot.outbound.reply import build_reply
from mailbot.policy import Policy, load_policy
from mailbot.rules.engine import MessageView, decide

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Stockholm
TICKET = 42
TOKEN = "[#42]"
SUPPORT = "support@example.com"
CUSTOMER = "evil@example.org"
AGENT = "erik@example.com"
LANGUAGES = ("en", "sv", "it")
SIGNER = TokenSigner(b"hostile-output-test-secret")
PARENT = "<orig.1@example.org>"
ROOT_ID = "<root.1@example.org>"

# --- hostile values --------------------------------------------------------------------------

# (value, the single-line text it must come back as)
HEADER_CASES = [
    pytest.param(
        "Order 17\r\nBcc: victim@example.org", "Order 17 Bcc: victim@example.org", id="crlf-bcc"
    ),
    pytest.param("Order 17\nX-Injected: 1", "Order 17 X-Injected: 1", id="lf-field"),
    pytest.param("Order 17\rX-Injected: 1", "Order 17 X-Injected: 1", id="bare-cr"),
    pytest.param(
        "Order 17\r\n\r\n<script>alert(1)</script>",
        "Order 17 <script>alert(1)</script>",
        id="blank-line-then-body",
    ),
    pytest.param(
        "Order 17\r\n Bcc: victim@example.org", "Order 17 Bcc: victim@example.org", id="fold"
    ),
    pytest.param("Order\x0017\x00", "Order 17", id="nul"),
    pytest.param(
        "Order 17\u2028Bcc: victim@example.org", "Order 17 Bcc: victim@example.org", id="u2028"
    ),
    pytest.param("Order 17\u2029X-Injected: 1", "Order 17 X-Injected: 1", id="u2029"),
    pytest.param("Order 17\x85X-Injected: 1", "Order 17 X-Injected: 1", id="nel-u0085"),
    pytest.param("Order\x0b17\x0cX\x1cY\x1eZ", "Order 17 X Y Z", id="vt-ff-fs-rs"),
    pytest.param("Order 17\x9b31m red\x1b[0m", "Order 17 31m red [0m", id="c1-c0-escapes"),
    pytest.param("=?utf-8?q?a=0D=0ABcc:_x@y?=", "=?utf-8?q?a=0D=0ABcc:_x@y?=", id="2047-q-crlf"),
    pytest.param("=?utf-8?b?YQ0KQmNjOiB4QHk=?=", "=?utf-8?b?YQ0KQmNjOiB4QHk=?=", id="2047-b-crlf"),
    pytest.param(
        "Hi =?UTF-8?Q?=0D=0AX-Injected:=201?= there",
        "Hi =?UTF-8?Q?=0D=0AX-Injected:=201?= there",
        id="2047-between-words",
    ),
    pytest.param(
        "Åsa =?utf-8?q?a=0D=0ABcc:_x@y?=", "Åsa =?utf-8?q?a=0D=0ABcc:_x@y?=", id="2047-non-ascii"
    ),
    pytest.param(
        'Doe, "John" <boss@example.com>; (CEO) \\',
        'Doe, "John" <boss@example.com>; (CEO) \\',
        id="specials",
    ),
    pytest.param('"', '"', id="lone-quote"),
    pytest.param("Åsa\r\nBcc: victim@example.org", "Åsa Bcc: victim@example.org", id="utf8-crlf"),
    pytest.param(
        "{{ 7*7 }} {% for x in range(3) %}X{% endfor %} {{ config }} ${7*7} #{7*7}",
        "{{ 7*7 }} {% for x in range(3) %}X{% endfor %} {{ config }} ${7*7} #{7*7}",
        id="template",
    ),
    pytest.param(
        "<script>alert(1)</script> <img src=x onerror=alert(1)> &amp;",
        "<script>alert(1)</script> <img src=x onerror=alert(1)> &amp;",
        id="html",
    ),
]

# (value, the single-line text whose prefix it must come back as)
LONG_CASES = [
    pytest.param("x" * 10_000, "x" * 10_000, id="one-long-word"),
    pytest.param("word " * 2_000, ("word " * 2_000).strip(), id="many-words"),
    pytest.param("é" * 10_000, "é" * 10_000, id="non-ascii"),
    pytest.param("\U0001d11e" * 10_000, "\U0001d11e" * 10_000, id="astral"),
    pytest.param(
        "Bcc: v@example.org\r\n" * 500, ("Bcc: v@example.org " * 500).strip(), id="crlf-repeated"
    ),
    pytest.param(
        "=?utf-8?q?=0D=0A?=" * 600, "=?utf-8?q?=0D=0A?=" * 600, id="encoded-words-repeated"
    ),
]

TEMPLATE_SYNTAX = (
    "{{ 7*7 }}",
    "{% for x in range(3) %}X{% endfor %}",
    "{{ config }}",
    "{{ ''.__class__.__mro__ }}",
    "${7*7}",
    "#{7*7}",
)
HTML_ATTACKS = {
    # raw text -> how an HTML part must show it
    "<script>alert(1)</script>": "&lt;script&gt;alert(1)&lt;/script&gt;",
    '<img src=x onerror="alert(document.cookie)">': (
        "&lt;img src=x onerror=&#34;alert(document.cookie)&#34;&gt;"
    ),
    "Fish &amp; chips": "Fish &amp;amp; chips",
}
BODY_LINES = (
    *HTML_ATTACKS,
    *TEMPLATE_SYNTAX,
    "Bcc: victim@example.org",
    "X-Injected: 1",
)
BODY = "Hello,\n\n" + "\n".join(BODY_LINES) + "\n\nThanks\n"
# What evaluating the template syntax above would print.
EVALUATED = ("49", "XXX", "<class", "Config")

# --- fields we write --------------------------------------------------------------------------

BASE_FIELDS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "X-Mailbot-Loop",
    "X-Mailbot-Ticket",
    "Content-Language",
    "MIME-Version",
    "Content-Type",
)
TEXT_ONLY_FIELDS = (*BASE_FIELDS, "Content-Transfer-Encoding")  # no HTML part: one text part
NOTIFY_FIELDS = (*TEXT_ONLY_FIELDS, "Reply-To")
RELAY_FIELDS = tuple(f for f in BASE_FIELDS if f != "Auto-Submitted")
PART_FIELDS = {"content-type", "content-transfer-encoding", "content-disposition"}
ADDRESS_FIELDS = ("from", "to", "reply-to")
_FIELD_NAME = re.compile(rb"([!-9;-~]+):")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "rules.yaml", REPO / "templates")


def one_line(value: str) -> str:
    """The intended form of a header value: line breaks and control characters are spaces,
    runs of white space one space."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", value).split())


def html_escape(value: str) -> str:
    """How an autoescaped HTML template must show ``value``."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;")):
        value = value.replace(char, entity)
    return value.replace("'", "&#39;")


def unescape_8bit(value: str) -> str:
    """Header text the stdlib parser kept as surrogates (raw UTF-8, RFC 6532) decoded."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8")


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=email_policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _field_names(block: bytes) -> list[str]:
    names = []
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a continuation line of the field before
        match = _FIELD_NAME.match(line)
        assert match is not None, f"not a header field line: {line[:80]!r}"
        names.append(match.group(1).decode("ascii").lower())
    return names


def _part_blocks(msg: Message) -> Iterable[Message]:
    for part in msg.walk():
        if part is not msg:
            yield part


def check_wire(raw: bytes, fields: Iterable[str]) -> EmailMessage:
    """Assert the structural safety of one composed mail; return it parsed."""
    wanted = sorted(f.lower() for f in fields)
    bad_ending = re.search(rb"\r(?!\n)|(?<!\r)\n", raw)
    assert bad_ending is None, f"bare CR or LF at {bad_ending.start() if bad_ending else 0}"
    assert b"\x00" not in raw
    long_lines = [line[:40] for line in raw.split(b"\r\n") if len(line) > 998]
    assert long_lines == [], "lines over 998 octets"
    head, blank, _ = raw.partition(b"\r\n\r\n")
    assert blank, "no header/body separator"
    assert sorted(_field_names(head)) == wanted

    # The stdlib parser reads raw UTF-8 (RFC 6532, SMTPUTF8 mail only) as a defect.
    utf8_only = () if head.isascii() else (errors.UndecodableBytesDefect,)
    msg = parse(raw)
    assert sorted(k.lower() for k in msg) == wanted
    assert msg.defects == []
    for name in msg:
        assert len(msg.get_all(name, [])) == 1, f"{name} repeated"
        header = msg[name]
        defects = [d for d in header.defects if not isinstance(d, utf8_only)]
        assert defects == [], f"{name}: {defects}"
        value = unescape_8bit(str(header))
        assert _LINE_BREAKS.search(value) is None, f"{name} has a line break: {value[:80]!r}"
        assert not any(unicodedata.category(c) == "Cc" for c in value), f"{name}: {value!r}"
    for name in ADDRESS_FIELDS:
        if name in msg:
            assert len(msg[name].addresses) == 1, f"{name}: {msg[name].addresses}"
    for part in _part_blocks(msg):
        assert {k.lower() for k in part} <= PART_FIELDS, part.keys()
    return msg


def subject_of(msg: EmailMessage) -> str:
    return unescape_8bit(str(msg["Subject"]))


def mailbox(msg: EmailMessage, field: str) -> tuple[str, str]:
    """(display name, address) of the single address in ``field``."""
    (address,) = msg[field].addresses
    return unescape_8bit(address.display_name), unescape_8bit(address.addr_spec)


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None and part.get_content_type() == "text/plain"
    return str(part.get_content()).replace("\r\n", "\n")


def html_of(msg: EmailMessage) -> str | None:
    part = msg.get_body(preferencelist=("html",))
    if part is None or part.get_content_type() != "text/html":
        return None
    return str(part.get_content()).replace("\r\n", "\n")


def assert_never_evaluated(text: str, *, html: bool = False) -> None:
    for syntax in TEMPLATE_SYNTAX:
        shown = html_escape(syntax) if html else syntax
        assert shown in text, f"template syntax {syntax!r} not shown literally"
    assert_no_evaluation(text)


def assert_no_evaluation(text: str) -> None:
    for result in EVALUATED:
        assert result not in text, f"{result!r}: customer text was evaluated"


def assert_html_escaped(html: str) -> None:
    for raw_text, escaped in HTML_ATTACKS.items():
        assert escaped in html, f"{raw_text!r} not escaped as {escaped!r}"
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert 'onerror="' not in html


def assert_body_literal(msg: EmailMessage, *, html_expected: bool) -> None:
    """The plain part shows the hostile body as written; the HTML part (if any) escaped."""
    text = text_of(msg)
    for line in BODY_LINES:
        assert f"{line}\n" in text, f"{line!r} missing from the text part"
    assert_never_evaluated(text)
    html = html_of(msg)
    assert (html is not None) == html_expected
    if html is not None:
        assert_html_escaped(html)
        assert_never_evaluated(html, html=True)


def encoded_word(text: str) -> str:
    """``text`` as one RFC 2047 base64 word: how a sender smuggles CR/LF into a header."""
    return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="


def customer_mail(*, name_field: str, subject_field: str, body: str = BODY) -> bytes:
    lines = [
        f"From: {name_field} <{CUSTOMER}>",
        f"To: Ashop Support <{SUPPORT}>",
        f"Subject: {subject_field}",
        "Date: Mon, 23 Nov 2026 09:55:00 +0100",
        f"Message-ID: {PARENT}",
        f"References: {ROOT_ID}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def analyse_offline(policy: Policy, raw: bytes) -> Analysis:
    """What intake's ``analyse`` makes of a new customer mail, without a database."""
    parsed = parse_message(raw)
    rules = policy.rules
    auto = classify_auto(parsed, own_addresses=policy.own_addresses, loop_marker=policy.marker)
    subject = clean_subject(parsed.subject, rules.identity.ticket_prefix)
    text = new_text(parsed.text, languages=tuple(rules.languages))
    thread = ThreadMatch(None, TicketAction.NEW, "no known reference or token")
    decision = decide(MessageView.of(parsed, text, subject), thread, auto, rules, NOW)
    agent = AgentVerdict(MailRole.CUSTOMER, None, None, "no token key")
    return Analysis(parsed=parsed, subject=subject, text=text, decision=decision, agent=agent)


def summary(subject: str, customer_name: str, language: str = "en") -> TicketSummary:
    return TicketSummary(
        id=TICKET,
        subject=subject,
        customer=CUSTOMER,
        customer_name=customer_name,
        plan="core",
        plan_name="Core",
        severity="L4",
        urgent=False,
        status="new",
        language=language,
        category="general",
    )


def compose_raw(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "sender": Address(SUPPORT, "Ashop Support"),
        "to": Address(CUSTOMER, "Eve"),
        "subject": "Order 17 [#42]",
        "text": "Hello\n",
        "html": "<p>Hello</p>",
        "message_id": "<out.t42@example.com>",
        "date": NOW,
        "in_reply_to": PARENT,
        "references": (ROOT_ID, PARENT),
        "marker": loop_marker(SUPPORT),
        "ticket_ref": "#42",
        "language": "en",
    }
    args.update(overrides)
    return compose(**args).raw  # type: ignore[arg-type]


def assert_prefix_of(got: str, intended: str, *, at_least: int) -> None:
    assert intended.startswith(got), f"{got[:60]!r}... is not a prefix of the intended text"
    assert len(got) >= at_least


def assert_name_prefix_of(got: str, intended: str, *, at_least: int) -> None:
    """A cut display name: a name too long for one encoded word is written as several, and
    the stdlib's address parser puts a space between them (RFC 2047 §6.2 says ignore it)."""
    assert_prefix_of("".join(got.split()), "".join(intended.split()), at_least=at_least)


UTF8_RECIPIENT = pytest.mark.parametrize(
    "recipient", [CUSTOMER, "evil@exämple.se"], ids=["ascii-mail", "smtputf8-mail"]
)


# --- compose() itself -------------------------------------------------------------------------


@UTF8_RECIPIENT
@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_compose_subject_is_one_field_on_one_line(
    recipient: str, value: str, intended: str
) -> None:
    msg = check_wire(compose_raw(subject=value, to=Address(recipient)), BASE_FIELDS)
    assert subject_of(msg) == intended


@UTF8_RECIPIENT
@pytest.mark.parametrize(("value", "intended"), LONG_CASES)
def test_compose_long_subject_is_cut_never_broken(
    recipient: str, value: str, intended: str
) -> None:
    msg = check_wire(compose_raw(subject=value, to=Address(recipient)), BASE_FIELDS)
    assert_prefix_of(subject_of(msg), intended, at_least=200)


@UTF8_RECIPIENT
@pytest.mark.parametrize("field", ["To", "From", "Reply-To"])
@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_compose_display_name_stays_one_mailbox(
    recipient: str, field: str, value: str, intended: str
) -> None:
    args: dict[str, object] = {"to": Address(recipient, "Eve")}
    addresses = {"To": recipient, "From": SUPPORT, "Reply-To": "reply@example.com"}
    key = {"To": "to", "From": "sender", "Reply-To": "reply_to"}[field]
    args[key] = Address(addresses[field], value)
    fields = (*BASE_FIELDS, "Reply-To") if field == "Reply-To" else BASE_FIELDS
    msg = check_wire(compose_raw(**args), fields)
    assert mailbox(msg, field) == (intended, addresses[field])
    assert subject_of(msg) == "Order 17 [#42]"


@UTF8_RECIPIENT
@pytest.mark.parametrize(("value", "intended"), LONG_CASES)
def test_compose_long_display_name_is_cut_never_broken(
    recipient: str, value: str, intended: str
) -> None:
    msg = check_wire(compose_raw(to=Address(recipient, value)), BASE_FIELDS)
    name, email = mailbox(msg, "To")
    assert email == recipient
    assert_name_prefix_of(name, intended, at_least=64)


@pytest.mark.parametrize(
    "hostile",
    [
        "<a@example.org>\n",
        "<a@example.org>\r\nBcc: victim@example.org",
        "<a@example.org>\r\n\r\n<script>alert(1)</script>",
        "<a@example.org> <b@example.org>",
        "<a@example.org>\x00",
        "<a@exämple.org>",
    ],
    ids=["trailing-lf", "crlf-bcc", "blank-line", "two-ids", "nul", "non-ascii"],
)
def test_compose_threading_ids_are_dropped_unless_one_plain_id(hostile: str) -> None:
    raw = compose_raw(in_reply_to=hostile, references=(ROOT_ID, hostile, PARENT))
    fields = [f for f in BASE_FIELDS if f != "In-Reply-To"]
    msg = check_wire(raw, fields)
    assert str(msg["References"]).split() == [ROOT_ID, PARENT]


@pytest.mark.parametrize(
    "email",
    [
        "victim@example.org>\r\nBcc: x@example.org",
        "victim@example.org\nX-Injected: 1",
        "a@example.org>, <b@example.org",
        "victim@exa\u2028mple.org",
        "victim@example.org\x00",
    ],
    ids=["crlf", "lf", "second-address", "u2028", "nul"],
)
@pytest.mark.parametrize("field", ["to", "sender", "reply_to"])
def test_compose_refuses_an_address_that_could_break_out(email: str, field: str) -> None:
    with pytest.raises(ValueError):
        compose_raw(**{field: Address(email, "Eve")})


def test_compose_carries_bodies_as_given_without_new_fields() -> None:
    text = BODY.replace("\n", "\r\n") + "\r\nBcc: victim@example.org\r\n.\r\nFrom me\x00\r"
    html = "<p>already escaped by the template</p>"
    msg = check_wire(compose_raw(text=text, html=html), BASE_FIELDS)
    assert text_of(msg) == text.replace("\r\n", "\n").replace("\r", "\n")
    assert html_of(msg) == html


@pytest.mark.parametrize(
    ("filename", "intended"),
    [
        ("a.pdf\r\nBcc: victim@example.org", "a.pdf Bcc: victim@example.org"),
        ('a.pdf"; filename="evil.exe', 'a.pdf"; filename="evil.exe'),
        ("a\r\n\r\n<script>.pdf", "a <script>.pdf"),
        ("=?utf-8?q?a=0D=0ABcc:_x@y?=.pdf", "=?utf-8?q?a=0D=0ABcc:_x@y?=.pdf"),
        ("Åsa\u2028Bcc: v@x.pdf", "Åsa Bcc: v@x.pdf"),
    ],
    ids=["crlf", "quote-param", "blank-line", "2047", "u2028-utf8"],
)
def test_compose_attachment_name_stays_one_parameter(filename: str, intended: str) -> None:
    file = FileAttachment(filename, 'text/plain\r\nBcc: x@y"', b"data")
    msg = check_wire(compose_raw(files=(file,)), BASE_FIELDS)
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == intended
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == b"data"


# --- the automatic answer (ack, wiki) ---------------------------------------------------------


@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_auto_reply_to_parsed_hostile_subject(policy: Policy, value: str, intended: str) -> None:
    raw = customer_mail(name_field="Eve", subject_field=encoded_word(value))
    analysis = analyse_offline(policy, raw)
    answer = answer_for(policy, analysis, TICKET, NOW)
    assert answer is not None
    msg = check_wire(answer[0].raw, BASE_FIELDS)
    # What intake understood as the subject (it may drop a NUL), on one line.
    assert subject_of(msg) == f"Re: {one_line(analysis.subject)} {TOKEN}"
    assert one_line(analysis.subject).replace(" ", "") == intended.replace(" ", "")
    assert mailbox(msg, "To") == ("Eve", CUSTOMER)
    assert mailbox(msg, "From") == ("Ashop Support", SUPPORT)
    assert str(msg["In-Reply-To"]) == PARENT
    assert str(msg["References"]).split() == [ROOT_ID, PARENT]
    assert_no_evaluation(text_of(msg) + (html_of(msg) or ""))


@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_auto_reply_to_parsed_hostile_name(policy: Policy, value: str, intended: str) -> None:
    raw = customer_mail(name_field=encoded_word(value), subject_field="Order 17")
    analysis = analyse_offline(policy, raw)
    answer = answer_for(policy, analysis, TICKET, NOW)
    sender = analysis.parsed.from_
    if sender is None:
        # Intake refused the sender (a name that decodes to CR/LF): nothing is answered.
        assert answer is None
        assert "\r" in value or "\n" in value
        return
    assert answer is not None
    msg = check_wire(answer[0].raw, BASE_FIELDS)
    assert mailbox(msg, "To") == (one_line(sender.name), CUSTOMER)
    assert one_line(sender.name).replace(" ", "") == intended.replace(" ", "")
    assert subject_of(msg) == f"Re: Order 17 {TOKEN}"
    # The greeting shows the name: as written in the text part, escaped in the HTML part.
    assert f" {sender.name}," in text_of(msg)
    html = html_of(msg)
    assert html is not None
    assert f" {html_escape(sender.name)}," in html
    assert "<script" not in html and "<img" not in html
    assert_no_evaluation(text_of(msg) + html)


@pytest.mark.parametrize(
    ("name_field", "subject_field", "name", "subject"),
    [
        pytest.param(
            '"Doe, \\"John\\" <boss@example.com>"',
            "Invoice\r\n Bcc: victim@example.org",
            'Doe, "John" <boss@example.com>',
            "Invoice Bcc: victim@example.org",
            id="quoted-name-folded-subject",
        ),
        pytest.param(
            encoded_word("<script>alert(1)</script> & {{ 7*7 }}"),
            encoded_word("{% for x in range(3) %}X{% endfor %} ${7*7} #{7*7}"),
            "<script>alert(1)</script> & {{ 7*7 }}",
            "{% for x in range(3) %}X{% endfor %} ${7*7} #{7*7}",
            id="html-and-template-name",
        ),
        pytest.param(
            "=?utf-8?q?Eve=09Bcc:_victim@example.org?=",
            "=?utf-8?q?a=0D=0ABcc:_x@y?=",
            "Eve Bcc: victim@example.org",
            "a Bcc: x@y",
            id="2047-crlf-decoded",
        ),
        pytest.param(
            encoded_word("=?utf-8?q?Eve=0D=0ABcc:_victim@example.org?="),
            encoded_word("=?utf-8?q?a=0D=0ABcc:_x@y?="),
            "=?utf-8?q?Eve=0D=0ABcc:_victim@example.org?=",
            "=?utf-8?q?a=0D=0ABcc:_x@y?=",
            id="2047-double-encoded",
        ),
        pytest.param(
            encoded_word("Eve\u2028Bcc: victim@example.org"),
            encoded_word("Hej\x85X-Injected: 1"),
            "Eve Bcc: victim@example.org",
            "Hej X-Injected: 1",
            id="unicode-line-breaks",
        ),
    ],
)
def test_auto_reply_round_trips_what_the_customer_wrote(
    policy: Policy, name_field: str, subject_field: str, name: str, subject: str
) -> None:
    analysis = analyse_offline(
        policy, customer_mail(name_field=name_field, subject_field=subject_field)
    )
    answer = answer_for(policy, analysis, TICKET, NOW)
    assert answer is not None
    msg = check_wire(answer[0].raw, BASE_FIELDS)
    assert subject_of(msg) == f"Re: {subject} {TOKEN}"
    assert mailbox(msg, "To") == (name, CUSTOMER)
    sender = analysis.parsed.from_
    assert sender is not None
    text = text_of(msg)
    assert f" {sender.name}," in text
    html = html_of(msg)
    assert html is not None
    assert f" {html_escape(sender.name)}," in html
    assert "<script" not in html
    assert_no_evaluation(text + html)


HOWTO = {
    "en": "How do I reset my password?",
    "sv": "Hur återställer jag lösenordet?",
    "it": "Come reimpostare la password?",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [ReplyKind.ACK, ReplyKind.WIKI])
def test_auto_reply_in_every_language_escapes_and_never_evaluates(
    policy: Policy, language: str, kind: ReplyKind
) -> None:
    name = " ".join((*HTML_ATTACKS, *TEMPLATE_SYNTAX))
    subject = "\r\nBcc: victim@example.org ".join(TEMPLATE_SYNTAX)
    rules = policy.rules
    view = MessageView(Address(CUSTOMER, name), HOWTO[language], HOWTO[language])
    thread = ThreadMatch(None, TicketAction.NEW, "no known reference or token")
    decision = decide(view, thread, AutoVerdict(False), rules, NOW, ticket_language=language)
    assert decision.reply is not None and decision.reply.kind is ReplyKind.WIKI
    reply = decision.reply
    if kind is ReplyKind.ACK:
        reply = dataclasses.replace(reply, kind=kind, template=rules.templates.ack, articles=())
    out, _ = build_reply(
        policy,
        decision=decision,
        reply=reply,
        ticket_id=TICKET,
        subject=subject,
        parent_id=PARENT,
        parent_references=(ROOT_ID,),
        now=NOW,
    )
    msg = check_wire(out.raw, BASE_FIELDS)
    assert subject_of(msg) == f"Re: {one_line(subject)} {TOKEN}"
    assert mailbox(msg, "To") == (name, CUSTOMER)
    text = text_of(msg)
    assert f" {name}" in text
    assert_never_evaluated(text)
    html = html_of(msg)
    assert html is not None
    assert f" {html_escape(name)}" in html
    assert_html_escaped(html)
    assert_never_evaluated(html, html=True)
    assert_no_evaluation(subject_of(msg))


@pytest.mark.parametrize(("value", "intended"), LONG_CASES)
def test_auto_reply_to_a_huge_subject_keeps_its_ticket_token(
    policy: Policy, value: str, intended: str
) -> None:
    raw = customer_mail(name_field="Eve", subject_field=encoded_word(value))
    analysis = analyse_offline(policy, raw)
    answer = answer_for(policy, analysis, TICKET, NOW)
    assert answer is not None
    msg = check_wire(answer[0].raw, BASE_FIELDS)
    shown = subject_of(msg)
    assert shown.startswith("Re: ") and shown.endswith(f" {TOKEN}")
    assert_prefix_of(shown[4 : -len(TOKEN) - 1], intended, at_least=200)
    assert mailbox(msg, "To") == ("Eve", CUSTOMER)


# --- notifications to agents ------------------------------------------------------------------


def notification(
    policy: Policy, analysis: Analysis, name: str, language: str = "en"
) -> EmailMessage:
    out = compose_notification(
        policy,
        SIGNER,
        ticket=summary(analysis.subject, name, language),
        event="new",
        author=CUSTOMER,
        text=analysis.text,
        to=AGENT,
        language=language,
        thread=Thread(PARENT, (ROOT_ID,)),
        now=NOW,
        commands_help=help_text(),
    )
    return check_wire(out.raw, NOTIFY_FIELDS)


@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_notification_of_parsed_hostile_mail(policy: Policy, value: str, intended: str) -> None:
    raw = customer_mail(name_field=encoded_word(value), subject_field=encoded_word(value))
    analysis = analyse_offline(policy, raw)
    # The name intake stored; where it refused the sender, the raw value (worse).
    name = analysis.parsed.from_.name if analysis.parsed.from_ else value
    msg = notification(policy, analysis, name)
    assert subject_of(msg) == f"{one_line(analysis.subject)} {TOKEN}"
    assert one_line(analysis.subject).replace(" ", "") == intended.replace(" ", "")
    assert mailbox(msg, "From") == (f"{one_line(name)} via Ashop Support", SUPPORT)
    assert mailbox(msg, "To") == ("", AGENT)
    token = SIGNER.sign(TICKET)
    assert mailbox(msg, "Reply-To") == ("", reply_address(SUPPORT, TICKET, token))
    assert_body_literal(msg, html_expected=False)
    assert footer_line(token) in text_of(msg)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("value", "intended"), LONG_CASES)
def test_notification_with_huge_subject_and_name(
    policy: Policy, language: str, value: str, intended: str
) -> None:
    raw = customer_mail(name_field=encoded_word(value), subject_field=encoded_word(value))
    analysis = analyse_offline(policy, raw)
    name = analysis.parsed.from_.name if analysis.parsed.from_ else value
    msg = notification(policy, analysis, name, language)
    shown = subject_of(msg)
    assert shown.endswith(f" {TOKEN}")
    assert_prefix_of(shown[: -len(TOKEN) - 1], intended, at_least=200)
    shown_name, email = mailbox(msg, "From")
    assert email == SUPPORT
    assert_name_prefix_of(shown_name, intended, at_least=64)
    assert_body_literal(msg, html_expected=False)


# --- relays of agents' answers and explanations to agents -------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_relay_to_hostile_customer_quotes_hostile_text_safely(
    policy: Policy, language: str, value: str, intended: str
) -> None:
    out = compose_relay(
        policy,
        ticket=summary(value, value, language),
        agent_name="Erik Sand",
        text="You wrote:\n\n" + BODY,
        to=Address(CUSTOMER, value),
        thread=Thread(PARENT, (ROOT_ID,)),
        now=NOW,
    )
    msg = check_wire(out.raw, RELAY_FIELDS)
    assert subject_of(msg) == f"Re: {intended} {TOKEN}"
    assert mailbox(msg, "To") == (intended, CUSTOMER)
    assert mailbox(msg, "From") == ("Ashop Support", SUPPORT)
    assert_body_literal(msg, html_expected=True)


def test_relay_files_cannot_add_fields(policy: Policy) -> None:
    files = (
        FileAttachment("report.pdf\r\nBcc: victim@example.org", "application/pdf", b"%PDF"),
        FileAttachment('x"; name="evil.exe', "text/html\r\nX-Injected: 1", b"<script>"),
    )
    out = compose_relay(
        policy,
        ticket=summary("Order 17", "Eve"),
        agent_name="Erik Sand",
        text=BODY,
        to=Address(CUSTOMER, "Eve"),
        thread=Thread(PARENT, (ROOT_ID,)),
        now=NOW,
        files=files,
    )
    msg = check_wire(out.raw, RELAY_FIELDS)
    names = [(p.get_filename(), p.get_content_type()) for p in msg.iter_attachments()]
    assert names == [
        ("report.pdf Bcc: victim@example.org", "application/pdf"),
        ('x"; name="evil.exe', "application/octet-stream"),
    ]
    assert_body_literal(msg, html_expected=True)


@pytest.mark.parametrize(("value", "intended"), HEADER_CASES)
def test_agent_error_with_hostile_subject_and_errors(
    policy: Policy, value: str, intended: str
) -> None:
    out = compose_agent_error(
        policy,
        ticket_id=TICKET,
        to=AGENT,
        language="en",
        subject=value,
        reason=value,
        errors=BODY_LINES,
        commands_help=help_text(),
        parent=PARENT,
        now=NOW,
    )
    msg = check_wire(out.raw, TEXT_ONLY_FIELDS)
    assert subject_of(msg) == f"Not sent: {intended} {TOKEN}"
    assert mailbox(msg, "To") == ("", AGENT)
    text = text_of(msg)
    for line in BODY_LINES:
        assert f"  - {line}\n" in text
    assert_never_evaluated(text)
    assert html_of(msg) is None


# --- every shipped template ------------------------------------------------------------------


def _shipped() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "templates").glob("*/*.subject.j2")):
        found.append((path.parent.name, path.name.removesuffix(".subject.j2")))
    return found


def _variables(language: str, name: str) -> set[str]:
    env = jinja2.Environment()
    names: set[str] = set()
    for path in (REPO / "templates" / language).glob(f"{name}.*.j2"):
        names |= meta.find_undeclared_variables(env.parse(path.read_text(encoding="utf-8")))
    return names


@pytest.mark.parametrize(("language", "name"), _shipped())
def test_no_shipped_template_evaluates_or_unescapes_a_value(language: str, name: str) -> None:
    hostile = " ".join((*HTML_ATTACKS, *TEMPLATE_SYNTAX))
    structured: dict[str, object] = {
        "articles": [{"title": hostile, "url": hostile}],
        "deadlines": [{"clock": hostile, "name": hostile, "due_text": hostile, "status": hostile}],
        "errors": [hostile],
        "urgent": True,
    }
    context = {var: structured.get(var, hostile) for var in _variables(language, name)}
    assert context, "a template without variables proves nothing here"
    out = TemplateRenderer(REPO / "templates").render(name, language, context)
    for part in (out.subject, out.text):
        assert hostile in part, "the value is not shown literally"
        assert_no_evaluation(part)
    if out.html is not None:
        assert_html_escaped(out.html)
        assert_no_evaluation(out.html)
