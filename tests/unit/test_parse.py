"""parse_message with inline fixtures: addresses, ids, subjects, bodies, charsets, attachments."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import mailparser
import pytest

from mailbot.domain import Address
from mailbot.errors import ParseError
from mailbot.ingest.parse import html_to_text, normalise_ids, parse_addresses, parse_message


def mail(headers: str, body: str = "Hello.\n", *, newline: str = "\n") -> bytes:
    text = headers.strip("\n") + "\n\n" + body
    return text.replace("\n", newline).encode("utf-8")


SIMPLE = mail(
    """
From: Anna Svensson <anna@example.se>
To: support@example.com, "Bo, Olsson" <bo@example.com>
Cc: carl@example.org
Reply-To: anna.private@example.se
Subject: Printer broken
Date: Tue, 05 Mar 2024 10:15:00 +0100
Message-ID: <abc.123@mail.example.se>
In-Reply-To: <parent@example.com>
References: <root@example.com> <parent@example.com>
Content-Type: text/plain; charset=utf-8
""",
    "The printer on floor 2 is broken.\n",
)


# --- ParseError -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty message (0 bytes"),
        (b" \r\n\t\n", "empty message (5 bytes"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 4, "no header field"),
        (b"Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit.\n", "no header field"),
    ],
    ids=["zero-bytes", "whitespace", "binary-garbage", "bare-body"],
)
def test_unusable_input_raises_parse_error_with_reason(raw: bytes, fragment: str) -> None:
    with pytest.raises(ParseError, match=fragment.replace("(", r"\(")):
        parse_message(raw)


# --- the basic fields ------------------------------------------------------------------------


def test_simple_message_fields() -> None:
    msg = parse_message(SIMPLE)
    assert msg.from_ == Address("anna@example.se", "Anna Svensson")
    assert msg.sender is None
    assert msg.to == (Address("support@example.com"), Address("bo@example.com", "Bo, Olsson"))
    assert msg.cc == (Address("carl@example.org"),)
    assert msg.reply_to == (Address("anna.private@example.se"),)
    assert msg.subject == "Printer broken"
    assert msg.date == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    assert msg.message_id == "<abc.123@mail.example.se>"
    assert msg.in_reply_to == ("<parent@example.com>",)
    assert msg.references == ("<root@example.com>", "<parent@example.com>")
    assert msg.text == "The printer on floor 2 is broken.\n"
    assert msg.html is None
    assert msg.attachments == ()
    assert msg.content_type == "text/plain"
    assert msg.size == len(SIMPLE)
    assert msg.header("content-type") == "text/plain; charset=utf-8"


def test_crlf_and_cr_only_input_parse_like_lf() -> None:
    body = "Line one.\nLine two.\n"
    headers = "From: a@example.com\nSubject: Line\n endings\nContent-Type: text/plain"
    lf = parse_message(mail(headers, body))
    for newline in ("\r\n", "\r"):
        other = parse_message(mail(headers, body, newline=newline))
        assert other.text == lf.text == "Line one.\nLine two.\n"
        assert other.subject == lf.subject == "Line endings"
        assert other.from_ == lf.from_
        assert "\r" not in other.text


# --- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "MAILER-DAEMON (Mail Delivery System)",
        "John Doe john@example.com",
        '"Millions Lottery"@example.com>',
        "alice@example.org)<bob@example.org>",
        "someone@",
        "@example.com",
        "<>",
        "a@b@c.com",
        "user@example.com.",
        "user@-bad-.example",
        "",
    ],
)
def test_garbage_from_gives_no_sender(value: str) -> None:
    msg = parse_message(mail(f"From: {value}\nSubject: x"))
    assert msg.from_ is None


def test_rfc2047_display_names_are_decoded() -> None:
    raw = mail(
        "From: =?utf-8?q?Per_=C3=85berg?= <per@example.se>\n"
        "To: =?iso-8859-1?q?Fran=E7oise_M=FCller?= <fm@example.fr>\nSubject: x"
    )
    msg = parse_message(raw)
    assert msg.from_ == Address("per@example.se", "Per Åberg")
    assert msg.to == (Address("fm@example.fr", "Françoise Müller"),)


def test_mislabelled_encoded_display_name_is_decoded_with_the_charset_family() -> None:
    # Shift_JIS bytes in a word labelled ISO-2022-JP (seen in real Japanese mail).
    word = base64.b64encode("ツール".encode("cp932")).decode()
    assert parse_addresses(f"=?ISO-2022-JP?B?{word}?= <bar@example.org>") == [
        Address("bar@example.org", "ツール")
    ]
    assert parse_addresses('"=?utf-8?q?Doe=2C_J?=" <j@example.org>') == [
        Address("j@example.org", "Doe, J")
    ]


def test_multiple_addresses_keep_valid_ones_in_order_without_duplicates() -> None:
    found = parse_addresses(
        "a@example.com, broken, B <b@example.com>, undisclosed-recipients:;, "
        "A Again <A@EXAMPLE.COM>, team: c@example.com, d@example.com;"
    )
    assert [a.email for a in found] == [
        "a@example.com",
        "b@example.com",
        "A@EXAMPLE.COM",
        "c@example.com",
        "d@example.com",
    ]
    msg = parse_message(
        mail("From: x@example.com\nTo: a@example.com, B <b@example.com>, A <a@EXAMPLE.com>")
    )
    assert [a.email for a in msg.to] == ["a@example.com", "b@example.com"]


def test_first_valid_from_and_sender() -> None:
    msg = parse_message(
        mail("From: garbage, Real <real@example.com>\nSender: list-bounces@lists.example.org")
    )
    assert msg.from_ == Address("real@example.com", "Real")
    assert msg.sender == Address("list-bounces@lists.example.org")


def test_address_key_and_local_part_case() -> None:
    msg = parse_message(mail("From: John.Smith@Example.COM"))
    assert msg.from_ is not None
    assert msg.from_.email == "John.Smith@Example.COM"
    assert msg.from_.key == "john.smith@example.com"


# --- message ids -----------------------------------------------------------------------------


def test_ids_are_normalised_deduplicated_and_invalid_fragments_skipped() -> None:
    value = "<a@b.example>  <c@d.example>\n\t<a@b.example>, junk <yes> <e @ f.example> <broken"
    assert normalise_ids(value) == [
        "<a@b.example>",
        "<c@d.example>",
        "<a@b.example>",
        "<e@f.example>",
    ]
    msg = parse_message(mail(f"From: x@example.com\nReferences: {value}"))
    assert msg.references == ("<a@b.example>", "<c@d.example>", "<e@f.example>")


def test_message_id_without_brackets_and_empty_in_reply_to() -> None:
    msg = parse_message(
        mail("From: x@example.com\nMessage-Id: 20180802.58E7@mail.example.cz\nIn-Reply-To: ")
    )
    assert msg.message_id == "<20180802.58E7@mail.example.cz>"
    assert msg.in_reply_to == ()


def test_message_id_without_at_sign_is_dropped() -> None:
    msg = parse_message(mail("From: x@example.com\nMessage-ID: <11107978796724623>"))
    assert msg.message_id is None


def test_folded_reference_is_joined_and_comments_dropped() -> None:
    assert normalise_ids("<1234   @   local(blah)  .machine .example>") == [
        "<1234@local.machine.example>"
    ]
    assert normalise_ids("<long-id-part-one\n part-two@example.com>") == [
        "<long-id-part-onepart-two@example.com>"
    ]


# --- subject and date ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?iso-8859-1?q?Fr=E5nvaro_f=F6r_Anna?=", "Frånvaro för Anna"),
        (
            "Re: =?utf-8?b?U2tyaXZhcmVuIGZ1bmdlcmFyIGludGUgaSBrw6RsbGFyZW4=?=",
            "Re: Skrivaren fungerar inte i källaren",
        ),
        (
            "=?utf-8?q?Perch=C3=A9_la_stampante_non_funziona=3F?=",
            "Perché la stampante non funziona?",
        ),
        ("R: =?iso-8859-15?q?Fattura_n=B0_42_=A4_scaduta?=", "R: Fattura n° 42 € scaduta"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=\n =?utf-8?q?_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        ("A very long\n\tsubject\r\n  folded   twice", "A very long subject folded   twice"),
        ("=?x-unknown?q?caf=C3=A9?= menu", "café menu"),
        ("=?utf-8?B?broken", "=?utf-8?B?broken"),
    ],
    ids=["sv-q", "sv-b", "it-q", "it-latin9", "de-split-words", "folding", "unknown", "broken"],
)
def test_subject_decoding(header: str, expected: str) -> None:
    assert parse_message(mail(f"From: x@example.com\nSubject: {header}")).subject == expected


def test_raw_utf8_and_8bit_headers_are_decoded() -> None:
    raw = ("From: Åsa Öberg <asa@example.se>\nSubject: Hälsningar från Göteborg\n\nHej\n").encode()
    msg = parse_message(raw)
    assert msg.subject == "Hälsningar från Göteborg"
    assert msg.from_ == Address("asa@example.se", "Åsa Öberg")


def test_8bit_header_uses_declared_charset_as_hint() -> None:
    subject = "ツール".encode("shift_jis")
    raw = (
        b"From: x@example.jp\nSubject: " + subject + b"\n"
        b"Content-Type: text/plain; charset=iso-2022-jp\n\nbody\n"
    )
    assert parse_message(raw).subject == "ツール"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Mon, 22 Aug 2016 19:03:15 +0200", datetime(2016, 8, 22, 17, 3, 15, tzinfo=UTC)),
        ("Mon, 22 Aug 2016 19:03:15 -0000", datetime(2016, 8, 22, 19, 3, 15, tzinfo=UTC)),
        ("22 Aug 16 19:03 EST", datetime(2016, 8, 23, 0, 3, tzinfo=UTC)),
        ("not a date", None),
        ("Thu, 31 Feb 2016 10:00:00 +0000", None),
    ],
)
def test_date_is_aware_utc_or_none(header: str, expected: datetime | None) -> None:
    msg = parse_message(mail(f"From: x@example.com\nDate: {header}"))
    assert msg.date == expected
    if expected is not None:
        assert msg.date is not None and msg.date.utcoffset() is not None
    else:
        assert "unparseable-date" in msg.defects


# --- bodies ----------------------------------------------------------------------------------

HTML_ONLY = mail(
    "From: x@example.com\nSubject: html\nContent-Type: text/html; charset=utf-8",
    "<html><body><p>Hej <b>Anna</b>,</p><p>"
    + "lorem ipsum " * 20
    + '</p><p>See <a href="https://wiki.example.com/printer">the wiki</a>.'
    '<img src="cid:logo" alt="Logo"></p></body></html>',
)


def test_html_only_mail_is_converted_to_text() -> None:
    msg = parse_message(HTML_ONLY)
    assert msg.html is not None and "<b>Anna</b>" in msg.html
    assert msg.text.startswith("Hej Anna,")
    assert "[the wiki](https://wiki.example.com/printer)" in msg.text
    assert "Logo" not in msg.text and "cid:" not in msg.text
    assert ("lorem ipsum " * 20).strip() in msg.text  # no line wrapping
    assert "<" not in msg.text


def test_html_to_text_is_plain_not_markdown() -> None:
    html = (
        "<p>1. Restart</p><p>- then wait</p><p>C:\\Temp\\log_1.txt</p>"
        "<table><tr><td>Model</td><td>HP 4250</td></tr></table>Line<br>break"
    )
    assert html_to_text(html) == (
        "1. Restart\n\n- then wait\n\nC:\\Temp\\log_1.txt\n\nModel HP 4250\nLine\nbreak"
    )


def test_alternative_prefers_plain_and_keeps_html() -> None:
    raw = mail(
        'From: x@example.com\nContent-Type: multipart/alternative; boundary="b"',
        "--b\nContent-Type: text/plain; charset=utf-8\n\nPlain version\n"
        "--b\nContent-Type: text/html; charset=utf-8\n\n<p>HTML version</p>\n--b--\n",
    )
    msg = parse_message(raw)
    assert msg.text.strip() == "Plain version"
    assert msg.html is not None and "HTML version" in msg.html
    assert msg.content_type == "multipart/alternative"


def test_blank_plain_part_falls_back_to_html() -> None:
    raw = mail(
        'From: x@example.com\nContent-Type: multipart/alternative; boundary="b"',
        "--b\nContent-Type: text/plain\n\n \n"
        "--b\nContent-Type: text/html\n\n<p>Only here</p>\n--b--\n",
    )
    assert parse_message(raw).text == "Only here"


@pytest.mark.parametrize(
    ("charset", "payload", "expected", "defect"),
    [
        ("x-unknown", "Grüße".encode(), "Grüße", "charset-fallback: x-unknown->utf-8"),
        (
            "us-ascii",
            "Frånvaro".encode("latin-1"),
            "Frånvaro",
            "charset-fallback: us-ascii->cp1252",
        ),
        ("utf-8", b"caf\xe9 \x81", "café \x81", "charset-fallback: utf-8->iso8859-1"),
        ("windows-1252", "“quoted” – €".encode("cp1252"), "“quoted” – €", None),
        ("gb2312", "你好".encode("gb18030"), "你好", None),
        ("iso-2022-jp", "日本語".encode("iso-2022-jp"), "日本語", None),
    ],
    ids=["unknown", "ascii-with-latin1", "bad-utf8", "cp1252", "gb2312-alias", "iso-2022-jp"],
)
def test_charset_fallback(charset: str, payload: bytes, expected: str, defect: str | None) -> None:
    raw = (
        f"From: x@example.com\nContent-Type: text/plain; charset={charset}\n"
        "Content-Transfer-Encoding: 8bit\n\n"
    ).encode() + payload
    msg = parse_message(raw)
    assert msg.text == expected
    if defect is None:
        assert not any(d.startswith("charset-fallback") for d in msg.defects)
    else:
        assert defect in msg.defects


def test_nul_characters_are_removed() -> None:
    msg = parse_message(b"From: x@example.com\nSubject: a\x00b\n\nbo\x00dy\n")
    assert msg.text == "body\n"
    assert msg.subject == "ab"


def test_multipart_without_its_boundary_keeps_the_text() -> None:
    raw = mail(
        'From: x@example.com\nContent-Type: multipart/mixed; boundary="never"\n'
        "Content-Transfer-Encoding: quoted-printable",
        "=E4=F6=FC ad asd\n",
    )
    msg = parse_message(raw)
    assert msg.text.strip() == "äöü ad asd"
    assert msg.attachments == ()


# --- attachments -----------------------------------------------------------------------------

ATTACHMENTS = mail(
    'From: x@example.com\nContent-Type: multipart/mixed; boundary="m"',
    """--m
Content-Type: multipart/related; boundary="r"

--r
Content-Type: text/html; charset=utf-8

<p>See <img src="cid:logo@x"></p>
--r
Content-Type: image/png
Content-ID: <logo@x>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--r--
--m
Content-Type: application/pdf; name="ignored.pdf"
Content-Disposition: attachment; filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--m
Content-Type: text/plain; name="=?utf-8?q?Fr=C3=A5nvaro.txt?="
Content-Disposition: attachment

plain attachment
--m
Content-Type: application/octet-stream
Content-Disposition: inline

abc
--m
Content-Type: message/rfc822
Content-Disposition: attachment

From: inner@example.com
Subject: inner

Inner text must not become body text.
--m--
""",
)


def test_attachment_metadata() -> None:
    msg = parse_message(ATTACHMENTS)
    assert msg.text == "See"
    found = [(a.filename, a.content_type, a.content_id, a.inline) for a in msg.attachments]
    assert found == [
        (None, "image/png", "logo@x", True),
        ("naïve résumé.pdf", "application/pdf", None, False),
        ("Frånvaro.txt", "text/plain", None, False),
        (None, "application/octet-stream", None, True),
        (None, "message/rfc822", None, False),
    ]
    sizes = [a.size for a in msg.attachments]
    # The line break before a boundary belongs to the boundary (RFC 2046), not the part.
    assert sizes[:4] == [8, 9, len(b"plain attachment"), len(b"abc")]
    assert sizes[4] > 40
    assert "Inner text" not in msg.text


def test_raw_8bit_filename_uses_the_message_charset() -> None:
    name = "绩效管理.xls".encode("gb2312")
    raw = (
        b'From: x@example.cn\nContent-Type: multipart/mixed; boundary="m"\n\n'
        b"--m\nContent-Type: text/plain; charset=gb2312\n\nhi\n"
        b'--m\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename="'
        + name
        + b'"\nContent-Transfer-Encoding: base64\n\nAAAA\n--m--\n'
    )
    assert [a.filename for a in parse_message(raw).attachments] == ["绩效管理.xls"]


# --- headers, reports and defects ------------------------------------------------------------

DSN = mail(
    "From: MAILER-DAEMON@mx.example.com\nSubject: Undelivered Mail Returned to Sender\n"
    "Return-Path: <>\nX-Mailbot-Failed-Recipients: forged@example.com\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="d"',
    """--d
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.
--d
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; gone@example.net
Original-Recipient: rfc822;Gone@Example.NET
Action: failed
Status: 5.1.1

Final-Recipient: rfc822; late@example.net
Action: delayed
Status: 4.4.7

Final-Recipient: rfc822; <other@example.org>
Action: failed
Status: 5.2.2
--d
Content-Type: message/rfc822

From: support@example.com
Subject: Your ticket

Hello
--d--
""",
)


def test_delivery_status_becomes_synthetic_headers_and_forgeries_are_dropped() -> None:
    msg = parse_message(DSN)
    assert msg.content_type == "multipart/report"
    assert msg.header("x-mailbot-report-types") == "delivery-status"
    assert msg.header_all("x-mailbot-failed-recipients") == ("Gone@Example.NET, other@example.org",)
    assert msg.header("return-path") == "<>"
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]
    assert msg.text.startswith("I'm sorry")


def test_only_loop_relevant_headers_are_kept_lower_cased_and_unfolded() -> None:
    raw = mail(
        "From: x@example.com\nAuto-Submitted: auto-replied\nX-Spam-Score: 5\n"
        "List-Unsubscribe: <mailto:leave@example.com>,\n <https://example.com/leave>\n"
        "PRECEDENCE: bulk\nReceived: from somewhere"
    )
    assert parse_message(raw).headers == (
        ("auto-submitted", "auto-replied"),
        ("list-unsubscribe", "<mailto:leave@example.com>, <https://example.com/leave>"),
        ("precedence", "bulk"),
    )


def test_mailparser_failure_falls_back_to_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: mailparser.MailParser) -> None:
        raise AttributeError("'NoneType' object has no attribute 'index'")

    monkeypatch.setattr(mailparser.MailParser, "_reset", broken)
    msg = parse_message(SIMPLE)
    assert msg.from_ == Address("anna@example.se", "Anna Svensson")
    assert msg.text == "The printer on floor 2 is broken.\n"
    assert "mailparser-failed: AttributeError" in msg.defects


def test_header_block_repair_for_leading_text_and_obsolete_syntax() -> None:
    leading = b"---- Original email message ----\nFrom: a@example.com\nSubject: Hi\n\nBody\n"
    msg = parse_message(leading)
    assert (msg.subject, msg.from_) == ("Hi", Address("a@example.com"))
    assert "header-block-repaired" in msg.defects

    obsolete = b"From  : John Doe <jdoe@example.org>\nSubject     : Saying Hello\n\nHi\n"
    msg = parse_message(obsolete)
    assert (msg.subject, msg.from_) == ("Saying Hello", Address("jdoe@example.org", "John Doe"))


def test_header_block_repair_for_unindented_continuation_lines() -> None:
    raw = b"Received: from a\nby b with SMTP\nFrom: c@example.com\nSubject: repaired\n\nBody\n"
    msg = parse_message(raw)
    assert (msg.subject, msg.text) == ("repaired", "Body\n")


def test_missing_separator_body_is_not_folded_into_headers() -> None:
    msg = parse_message(b"From: a@example.com\nSubject: hi\nThis is the body\n\nMore\n")
    assert msg.subject == "hi"
    assert "This is the body" in msg.text
    assert "MissingHeaderBodySeparatorDefect" in msg.defects
