"""Threading: prefixes, tokens and the order of evidence."""

from __future__ import annotations

import pytest

from mailbot.domain import TicketAction, TicketStatus
from mailbot.ingest.correlate import (
    TicketFacts,
    clean_subject,
    correlate,
    find_token,
    format_token,
    strip_prefixes,
)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Hello", "Hello"),
        ("RE: Fwd: Hello", "Hello"),
        ("AW: WG: Bestellung", "Bestellung"),
        ("SV: VS: Kassan fungerar inte", "Kassan fungerar inte"),
        ("R: I: Errore importazione", "Errore importazione"),
        ("RIF: problema", "problema"),
        ("Odp: pytanie", "pytanie"),
        ("Re[2]: Re(3): nested", "nested"),
        ("Fw:   spaced\tout", "spaced out"),
        ("TR: question", "question"),
        ("Antw: vraag", "vraag"),
        ("Re:Hello", "Hello"),
        ("Reset password", "Reset password"),  # "Re" inside a word is not a prefix
        ("Ideas: new feature", "Ideas: new feature"),
        ("Service outage", "Service outage"),
    ],
)
def test_strip_prefixes(subject: str, expected: str) -> None:
    assert strip_prefixes(subject) == expected


def test_tokens_with_and_without_prefix() -> None:
    assert find_token("Re: Help [#1042]", "") == 1042
    assert find_token("Re: Help [ashop#7]", "ASHOP") == 7
    assert find_token("Re: Help [#7]", "ASHOP") is None
    assert find_token("Order #1042 missing", "") is None
    assert format_token("ASHOP", 7) == "[ASHOP#7]"
    assert clean_subject("SV: Kassan [#12] fungerar inte", "") == "Kassan fungerar inte"


OPEN = TicketFacts(5, TicketStatus.OPEN, frozenset({"anna@butiken.se"}))
CLOSED = TicketFacts(6, TicketStatus.CLOSED, frozenset({"anna@butiken.se"}))


def _correlate(**overrides: object) -> object:
    args: dict[str, object] = {
        "in_reply_to": (),
        "references": (),
        "subject": "Hello",
        "sender": "anna@butiken.se",
        "auto_generated": False,
        "known_ids": {},
        "token_ticket": None,
        "token": None,
    }
    args.update(overrides)
    return correlate(**args)  # type: ignore[arg-type]


def test_in_reply_to_joins() -> None:
    match = _correlate(in_reply_to=("<a@x>",), known_ids={"<a@x>": OPEN})
    assert match.action is TicketAction.APPEND and match.ticket_id == 5  # type: ignore[attr-defined]


def test_references_newest_first() -> None:
    match = _correlate(
        references=("<old@x>", "<new@x>"), known_ids={"<old@x>": CLOSED, "<new@x>": OPEN}
    )
    assert match.ticket_id == 5  # type: ignore[attr-defined]


def test_reply_to_closed_ticket_reopens_but_auto_never_does() -> None:
    human = _correlate(in_reply_to=("<a@x>",), known_ids={"<a@x>": CLOSED})
    assert human.action is TicketAction.REOPEN  # type: ignore[attr-defined]
    auto = _correlate(in_reply_to=("<a@x>",), known_ids={"<a@x>": CLOSED}, auto_generated=True)
    assert auto.action is TicketAction.APPEND  # type: ignore[attr-defined]


def test_token_from_participant_joins() -> None:
    match = _correlate(subject="Re: x [#5]", token=5, token_ticket=OPEN, sender="ANNA@butiken.se")
    assert match.action is TicketAction.APPEND and match.ticket_id == 5  # type: ignore[attr-defined]


def test_token_from_stranger_gets_new_linked_ticket() -> None:
    match = _correlate(subject="Re: x [#5]", token=5, token_ticket=OPEN, sender="mallory@evil.test")
    assert match.action is TicketAction.NEW  # type: ignore[attr-defined]
    assert match.ticket_id is None and match.linked_ticket_id == 5  # type: ignore[attr-defined]


def test_unknown_references_make_a_new_ticket() -> None:
    match = _correlate(in_reply_to=("<unknown@x>",))
    assert match.action is TicketAction.NEW  # type: ignore[attr-defined]


def test_auto_generated_without_thread_opens_nothing() -> None:
    match = _correlate(auto_generated=True)
    assert match.action is TicketAction.NONE and match.ticket_id is None  # type: ignore[attr-defined]
