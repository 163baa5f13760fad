"""Outbound composition: threading headers, loop markers, no header injection."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

from mailbot.domain import Address
from mailbot.outbound.compose import (
    MAX_REFERENCES,
    compose,
    loop_marker,
    new_message_id,
    reference_chain,
    single_line,
    subject_with_token,
)


def _compose(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "sender": Address("support@example.com", "Exämple Support"),
        "to": Address("anna@butiken.se", "Anna Lindqvist"),
        "subject": "Re: Kassan fungerar inte [#5]",
        "text": "Hej Anna,\nvi har tagit emot ditt ärende.\n",
        "html": "<p>Hej Anna</p>",
        "message_id": "<abc.t5@example.com>",
        "date": datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        "in_reply_to": "<orig@butiken.se>",
        "references": ("<root@butiken.se>", "<orig@butiken.se>"),
        "marker": loop_marker("support@example.com"),
        "ticket_ref": "#5",
        "language": "sv",
    }
    args.update(overrides)
    return compose(**args).raw  # type: ignore[arg-type]


def _headers(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")
    return dict(line.split(": ", 1) for line in unfolded.split("\r\n"))


def test_threading_and_loop_headers_are_plain() -> None:
    headers = _headers(_compose())
    assert headers["Message-ID"] == "<abc.t5@example.com>"
    assert headers["In-Reply-To"] == "<orig@butiken.se>"
    assert headers["References"] == "<root@butiken.se> <orig@butiken.se>"
    assert headers["Auto-Submitted"] == "auto-replied"
    assert headers["X-Auto-Response-Suppress"] == "All"
    assert headers["X-Mailbot-Loop"] == loop_marker("support@example.com")
    for name in ("Message-ID", "In-Reply-To", "References"):
        assert "=?" not in headers[name]


def test_header_injection_through_subject_and_name_is_impossible() -> None:
    raw = _compose(
        subject="Hello\r\nBcc: victim@example.net",
        to=Address("anna@butiken.se", "Anna\nBcc: victim@example.net"),
    )
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Bcc"] is None
    assert "\n" not in str(parsed["Subject"])
    assert [k for k in parsed if k.lower() == "bcc"] == []


def test_multipart_alternative_round_trips_utf8() -> None:
    parsed = message_from_bytes(_compose(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and "ärende" in body.get_content()


def test_reference_chain_trims_and_skips_non_ascii() -> None:
    refs = (*(f"<r{i}@x>" for i in range(40)), "<bad\u00e9@x>")
    chain = reference_chain("<parent@x>", refs)
    assert len(chain) == MAX_REFERENCES
    assert chain[0] == "<r0@x>" and chain[-1] == "<parent@x>"
    assert all(ref.isascii() for ref in chain)
    assert reference_chain(None, ()) == ()


def test_small_helpers() -> None:
    assert single_line("a\r\nb\tc\x00d") == "a b c d"
    assert subject_with_token("Re: Hello", "[#5]") == "Re: Hello [#5]"
    assert subject_with_token("Re: Hello [#5]", "[#5]") == "Re: Hello [#5]"
    assert new_message_id("example.com", 5).endswith(".t5@example.com>")
    assert loop_marker("Support@Example.com") == loop_marker("support@example.com")


def test_non_ascii_names_and_subject_round_trip_and_lines_stay_short() -> None:
    raw = _compose(
        to=Address("kund@shop.se", 'Åsa Öberg, "VD"'),
        subject="Re: Hjälp med kassan som inte fungerar när kunderna betalar med kort [#5] " * 3,
    )
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["To"].addresses[0].display_name == 'Åsa Öberg, "VD"'
    assert str(parsed["Subject"]).startswith("Re: Hjälp med kassan")
    assert parsed.as_bytes().count(b"MIME-Version") == 1


def test_internationalised_address_gets_utf8_headers() -> None:
    out = compose(
        sender=Address("support@example.com", "Support"),
        to=Address("jdöe@mächine.example", "Jöhn"),
        subject="Re: Grüße",
        text="Hallo\n",
        html=None,
        message_id="<a@example.com>",
        date=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        in_reply_to=None,
        references=(),
        marker="m",
        ticket_ref="#1",
        language="de",
    )
    assert out.needs_smtputf8
    assert "To: Jöhn <jdöe@mächine.example>".encode() in out.raw
    assert "Subject: Re: Grüße".encode() in out.raw
    parsed = message_from_bytes(out.raw, policy=policy.default)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == "Hallo\n"
