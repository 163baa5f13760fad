"""The parsing stage against real mail from ../shared/corpus (read at test time, never copied).

1. Every raw message parses to a ParsedMessage or raises ParseError, nothing else escapes.
2. Zammad's expected parses: from_email, subject and attachment names.
3. Auto-reply and bounce labels: Zammad, Discourse, sisimai, SpamAssassin.
4. Quote stripping on reply bodies whose expected result is easy to state.

Misses of the rate-based checks are printed (run with ``-s`` to see them) and recorded as
test properties (``record_property``, visible in JUnit XML).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailbot.domain import AutoVerdict, ParsedMessage
from mailbot.errors import ParseError
from mailbot.ingest.autogen import classify_auto
from mailbot.ingest.parse import parse_message
from mailbot.ingest.quotes import new_text
from tests.corpus import (
    body_files,
    body_params,
    load_json,
    message_files,
    message_params,
    need,
    relative,
    require_corpus,
    require_file,
)

pytestmark = pytest.mark.corpus

RecordProperty = Callable[[str, Any], None]

# Files that hold nothing usable; each must raise ParseError (and nothing else may).
EXPECTED_PARSE_ERRORS = {
    "cpython-test_email/messages/msg_19.txt": "a mailing-list digest body without any header",
    "request-tracker/messages/emails/lorem-ipsum": "body text only, no header field",
    "sisimai/messages/mailbox/size-0": "0 bytes",
    "sisimai/messages/mailbox/size-1": "1 byte (a space)",
    "sisimai/messages/mailbox/size-2": "3 bytes, no header",
    "spamassassin/messages/t/data/spam/bsmtpnull": "1 byte",
    "spamscope-mail-parser/messages/mail_outlook_1": "an OLE .msg binary, not RFC 5322",
}
_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")


@functools.cache
def parsed(path: Path) -> ParsedMessage:
    return parse_message(path.read_bytes())


def verdict(path: Path) -> AutoVerdict:
    return classify_auto(
        parsed(path), own_addresses=frozenset({"support@example.com"}), loop_marker="mailbot-x"
    )


def report(record_property: RecordProperty, name: str, lines: list[str]) -> None:
    record_property(name, "\n".join(lines))
    print(f"\n{name}: {len(lines)}")
    for line in lines:
        print(f"  {line}")


# --- 1. never crash ------------------------------------------------------------------------


@pytest.mark.parametrize("path", message_params())
def test_message_parses_or_raises_parse_error(path: Path | None) -> None:
    path = need(path)
    rel = relative(path)
    raw = path.read_bytes()
    if rel in EXPECTED_PARSE_ERRORS:
        with pytest.raises(ParseError):
            parse_message(raw)
        return
    msg = parse_message(raw)
    assert isinstance(msg, ParsedMessage)
    assert msg.size == len(raw)
    if msg.date is not None:
        offset = msg.date.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
    for msg_id in (msg.message_id, *msg.in_reply_to, *msg.references):
        assert msg_id is None or _ID.fullmatch(msg_id), msg_id
    assert len(set(msg.references)) == len(msg.references)
    assert all(name == name.lower() for name, _ in msg.headers)
    assert not re.search(r"[\r\n\t]", msg.subject)
    assert "\r" not in msg.text and "\x00" not in msg.text
    assert all(a.size >= 0 and a.content_type for a in msg.attachments)
    for address in (msg.from_, msg.sender, *msg.to, *msg.cc, *msg.reply_to):
        assert address is None or "@" in address.email
    assert msg.content_type == msg.content_type.lower() and "/" in msg.content_type


@pytest.mark.parametrize(
    "rel",
    [
        "sisimai/messages/maildir/bsd/lhost-sendgrid-01.eml",
        "sisimai/messages/maildir/dos/lhost-sendgrid-01.eml",
        "sisimai/messages/maildir/mac/lhost-sendgrid-01.eml",
    ],
)
def test_mailparser_crash_falls_back_to_the_stdlib(rel: str) -> None:
    msg = parse_message(require_file(rel).read_bytes())
    assert "mailparser-failed: AttributeError" in msg.defects
    assert msg.from_ is not None
    assert msg.subject


# --- 2. Zammad's expected parses -----------------------------------------------------------

# Genuine, defensible differences; a stale entry (the field now matches) fails the test.
FROM_DIFFERENCES = {
    "mail016": "no From header at all; Zammad falls back to Reply-To, from_ is the From only",
    "mail019": "From is '<>' (empty); Zammad falls back to Reply-To",
    "mail044": "'Claudia.Shu@yahoo.com.' ends with a dot: not a valid RFC 5322 addr-spec",
    "mail053": "'MAILER-DAEMON (Mail Delivery System)' has no domain",
    "mail076": "'\"Millions Lottery Spain transfer\"@example.com>' is garbage",
    "mail087": "'Test test@example.com' is not an address (Zammad keeps the raw text)",
}
SUBJECT_DIFFERENCES = {
    "mail018": "the subject is UTF-7 ('+ANw-'); Zammad left it undecoded, we decode it",
}
ATTACHMENT_DIFFERENCES = {
    "mail062": "Zammad keeps the 2nd and 3rd unnamed text/html parts as document.html and "
    "document1.html; we join all body text/html parts into html",
    "mail087": "the second part has no Content-Type, so it is text/plain body (RFC 2045 "
    "default); Zammad attaches it as 'file'",
    "mail102": "two images share one file name; Zammad renames the second "
    "('... at 091.00.38.png'), we report names as sent",
}


def zammad_cases() -> list[Any]:
    if message_files("zammad") == []:
        return [pytest.param(None, id="corpus-missing")]
    root = require_corpus() / "zammad" / "expected" / "json"
    return [pytest.param(p, id=p.stem) for p in sorted(root.glob("mail*.json"))]


def zammad_box(name: str) -> Path:
    boxes = [p for p in message_files("zammad") if p.name == f"{name}.box"]
    assert len(boxes) == 1, f"expected one {name}.box, found {boxes}"
    return boxes[0]


def _words(value: str) -> str:
    return " ".join(value.split())


def _expected_names(
    expected: list[dict[str, Any]], ours: list[tuple[str | None, str]]
) -> list[str]:
    """Zammad's attachment names minus the ones it invents.

    Zammad adds the HTML body as 'message.html' (preferences 'original-format'), lists the
    delivery-status part of a report (we treat it as report data, not an attachment) and
    names unnamed parts itself ("image.jpg", "<subject>.eml", a Content-ID). An unnamed part
    of ours pairs with one such entry of the same MIME type that has no name parameter.
    """
    unnamed = [ctype for name, ctype in ours if name is None]
    names: list[str] = []
    for entry in expected:
        prefs = entry.get("preferences", {})
        mime = str(prefs.get("Mime-Type", "")).lower()
        if prefs.get("original-format") or mime == "message/delivery-status":
            continue
        if mime in unnamed and "name=" not in str(prefs.get("Content-Type", "")):
            unnamed.remove(mime)
            continue
        names.append(str(entry["filename"]))
    return sorted(names)


@pytest.mark.parametrize("expected_path", zammad_cases())
def test_zammad_expected_fields(expected_path: Path | None) -> None:
    expected_path = need(expected_path)
    name = expected_path.stem
    expected = load_json(relative(expected_path))
    msg = parsed(zammad_box(name))
    checks: dict[str, tuple[bool, dict[str, str]]] = {}
    if "from_email" in expected:
        ours = msg.from_.email.lower() if msg.from_ else None
        checks["from"] = (ours == expected["from_email"].lower(), FROM_DIFFERENCES)
    if "subject" in expected:
        checks["subject"] = (
            _words(msg.subject) == _words(expected["subject"]),
            SUBJECT_DIFFERENCES,
        )
    if "attachments" in expected:
        ours_att = [(a.filename, a.content_type) for a in msg.attachments]
        want = _expected_names(expected["attachments"], ours_att)
        have = sorted(n for n, _ in ours_att if n is not None)
        checks["attachments"] = (have == want, ATTACHMENT_DIFFERENCES)
    for field, (same, differences) in checks.items():
        if name in differences:
            assert not same, f"stale allow-list entry {name} for {field}: it matches now"
        else:
            assert same, f"{field} of {name} differs from Zammad's expectation"


# --- 3. auto-reply and bounce labels --------------------------------------------------------


def test_zammad_auto_response_labels() -> None:
    cases = load_json("zammad/expected/auto_response_expected.json")["cases"]
    assert len(cases) == 6
    for case in cases:
        result = verdict(require_file(f"zammad/{case['file']}"))
        if case["file"].endswith("auto_response_05.eml"):
            # X-Auto-Response-Suppress: All is a request not to auto-answer, put by Outlook on
            # human mail too. Zammad honours it by suppressing its reply; we keep it a human
            # mail on purpose (the header is in ParsedMessage.headers for the rules to honour).
            assert case["x_zammad_send_auto_response"] is False
            assert result.auto_generated is False
            continue
        assert result.auto_generated is (not case["x_zammad_send_auto_response"]), case["file"]


def test_discourse_autogenerated_labels() -> None:
    labels = load_json("discourse-autogen/expected/labels.json")["labels"]
    assert len(labels) == 4
    for file_name, label in labels.items():
        result = verdict(require_file(f"discourse-autogen/messages/{file_name}"))
        assert result.auto_generated is label["auto_generated"], file_name


def _sisimai_kind(path: Path, expected: dict[str, Any]) -> str:
    entry = expected.get(path.name)
    if entry is None:  # not covered by the expectations: the file name names the engine
        if path.name.startswith("rfc3834-"):
            return "vacation"
        return "complaint" if path.name.startswith("arf-") else "bounce"
    if entry["engine"] == "ARF":
        return "complaint"
    if entry["engine"] == "RFC3834" or any(
        r.get("reason") == "vacation" for r in entry["recipients"]
    ):
        return "vacation"
    return "bounce"


def test_sisimai_bounces_and_auto_replies(record_property: RecordProperty) -> None:
    expected = load_json("sisimai/expected/p5-sisimai-expected.json")["expected"]
    files = [
        p
        for d in ("bsd", "dos", "mac", "err", "tmp")
        for p in message_files("sisimai", f"maildir/{d}")
    ]
    assert len(files) >= 800
    kinds = {p: _sisimai_kind(p, expected) for p in files}
    results = {p: verdict(p) for p in files}
    not_auto = [relative(p) for p in files if not results[p].auto_generated]
    bounces = [p for p in files if kinds[p] == "bounce"]
    missed = [f"{relative(p)} ({results[p].reason})" for p in bounces if not results[p].bounce]
    wrong_bounce = [relative(p) for p in files if kinds[p] != "bounce" and results[p].bounce]
    report(record_property, "sisimai_not_auto", not_auto)
    report(record_property, "sisimai_bounce_missed", missed)
    auto_rate = 1 - len(not_auto) / len(files)
    bounce_rate = 1 - len(missed) / len(bounces)
    print(
        f"auto rate {auto_rate:.1%} of {len(files)}, bounce rate {bounce_rate:.1%} "
        f"of {len(bounces)}"
    )
    assert auto_rate >= 0.99, not_auto
    assert bounce_rate >= 0.97, missed
    assert wrong_bounce == [], "auto-replies and complaints must not be bounces"


def test_sisimai_not_bounces() -> None:
    require_corpus()
    files = message_files("sisimai", "maildir/not")
    assert len(files) == 3
    results = {p.name: verdict(p) for p in files}
    assert not any(r.bounce for r in results.values()), results
    assert not results["is-not-bounce-01.eml"].auto_generated
    assert not results["is-not-bounce-02.eml"].auto_generated
    # rb-issue-368-bug.eml carries Auto-Submitted: auto-replied (a postmaster notice):
    # machine-made, but not a bounce we can act on.
    assert results["rb-issue-368-bug.eml"].auto_generated


def test_spamassassin_ham_is_never_a_bounce() -> None:
    require_corpus()
    files = message_files("spamassassin", "t/data/nice") + message_files(
        "spamassassin", "t.rules/FORGED_MUA_OUTLOOK"
    )
    assert len(files) >= 60
    for path in files:
        if relative(path) in EXPECTED_PARSE_ERRORS:
            continue
        result = verdict(path)
        assert not result.bounce, relative(path)
        # Ham is only "auto" when it is list or bulk mail.
        if result.auto_generated:
            assert result.reason is not None
            assert result.reason.startswith(("Precedence:", "list mail")), (
                relative(path),
                result.reason,
            )
    outlook = message_files("spamassassin", "t.rules/FORGED_MUA_OUTLOOK")
    assert len(outlook) == 17


# SpamAssassin's "fp" files for BOUNCE_MESSAGE must not hit *its* rule, which is about
# backscatter; three of them are genuine bounces of mail the user did send (SpamAssassin
# tells them apart with whitelist_bounce_relays), so for us they are bounces.
SA_GENUINE_BOUNCES = {
    "fp-bug5900-1": "qmail 'failure notice' from postmaster with Return-Path <>",
    "fp_bug5912_att4321": "Postfix DSN with a message/delivery-status part",
    "fp_bug5912_att4322": "Postfix DSN with a message/delivery-status part",
}
# SpamAssassin "hit" files that are auto-generated but not bounces for us.
SA_NOT_BOUNCES = {
    "10": "a challenge-response verification request (Precedence: auto_reply)",
}


def test_spamassassin_bounce_labels() -> None:
    labels = load_json("spamassassin/expected/t.rules_labels.json")["labels"]
    checked = 0
    for key, label in sorted(labels.items()):
        if label["rule"] not in ("BOUNCE_MESSAGE", "VBOUNCE_MESSAGE", "CHALLENGE_RESPONSE"):
            continue
        path = require_file(f"spamassassin/{key}")
        name = path.name
        result = verdict(path)
        checked += 1
        if label["expected"] == "hit":
            assert result.auto_generated, key
            if label["rule"] == "BOUNCE_MESSAGE":
                assert result.bounce is (name not in SA_NOT_BOUNCES), key
        else:
            assert result.bounce is (name in SA_GENUINE_BOUNCES), key
    assert checked == 29


# --- 4. quote stripping --------------------------------------------------------------------

QUOTE_CASES = [
    ("github-email_reply_parser/bodies/email_1_1.txt", "Hi folks", ["riak-users mailing list"]),
    ("github-email_reply_parser/bodies/email_1_2.txt", "Hi,", ["Abhishek Kona wrote:", "> Hi"]),
    ("github-email_reply_parser/bodies/email_1_3.txt", "Oh thanks.", ["Russell Brown wrote:"]),
    ("github-email_reply_parser/bodies/email_1_4.txt", "Awesome! I haven't had", ["wrote:"]),
    (
        "github-email_reply_parser/bodies/email_1_8.txt",
        "I will reply under this one",
        ["> okay.  Well"],
    ),
    (
        "github-email_reply_parser/bodies/email_2_1.txt",
        "Outlook with a reply",
        ["Google Apps Sync"],
    ),
    (
        "github-email_reply_parser/bodies/email_BlackBerry.txt",
        "Here is another email",
        ["BlackBerry"],
    ),
    ("github-email_reply_parser/bodies/email_iPhone.txt", "Here is another email", ["iPhone"]),
    (
        "zapier-email-reply-parser/bodies/email_gmail.txt",
        "This is a test for inbox replying",
        ["wrote:"],
    ),
    (
        "alfonsrv-mail-parser-reply/bodies/email_swedish_1.txt",
        "Hej Person A,\n\nUrsäkta mitt sena svar!",
        ["skrev", "Jag har försökt"],
    ),
    ("alfonsrv-mail-parser-reply/bodies/email_sv_anon_1.txt", "Hej\n\nBerättar gärna.", ["skrev"]),
    (
        "crisp-email-reply-parser/bodies/email_italian.txt",
        "Fusce bibendum",
        ["ha scritto", "Buongiorno!"],
    ),
    ("crisp-email-reply-parser/bodies/email_german.txt", "Fusce bibendum", ["schrieb"]),
    (
        "crisp-email-reply-parser/bodies/email_german_outlook.txt",
        "Fusce bibendum",
        ["Von:", "Gesendet:"],
    ),
]


@pytest.mark.parametrize(
    ("rel", "first", "forbidden"),
    QUOTE_CASES,
    ids=[Path(c[0]).parent.parent.name + "/" + Path(c[0]).name for c in QUOTE_CASES],
)
def test_quote_stripping_fixtures(rel: str, first: str, forbidden: list[str]) -> None:
    result = new_text(require_file(rel).read_text(encoding="utf-8", errors="replace"))
    assert result.startswith(first), result[:200]
    for fragment in forbidden:
        assert fragment not in result


def test_long_quote_is_fast() -> None:
    text = require_file("github-email_reply_parser/bodies/email_long_quote.txt").read_text()
    started = time.perf_counter()
    result = new_text(text)
    assert time.perf_counter() - started < 1.0
    assert result.startswith("Hi folks")


def _all_bodies() -> list[Any]:
    sources = (
        "github-email_reply_parser",
        "zapier-email-reply-parser",
        "alfonsrv-mail-parser-reply",
        "crisp-email-reply-parser",
    )
    params = [p for s in sources for p in body_params(s) if p.values[0] is not None]
    return params or body_params("github-email_reply_parser")


@pytest.mark.parametrize("path", _all_bodies())
def test_every_reply_body_gives_non_empty_new_text(path: Path | None) -> None:
    path = need(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    started = time.perf_counter()
    result = new_text(text)
    assert time.perf_counter() - started < 2.0
    assert result.strip() == result
    assert bool(result) is bool(text.strip())
    assert len(result) <= len(text)


def test_reply_bodies_exist() -> None:
    require_corpus()
    assert len(body_files("crisp-email-reply-parser")) >= 80
