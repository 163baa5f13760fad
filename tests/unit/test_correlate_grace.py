"""Replies to resolved tickets: reopen within the grace period, a new linked ticket after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailbot.domain import ThreadMatch, TicketAction, TicketStatus
from mailbot.ingest.correlate import Grace, TicketFacts, correlate

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
WITHIN = timedelta(days=14)
GRACE = Grace(now=NOW, reopen_within=WITHIN)
CUSTOMER = "anna@butiken.se"
REPLIED_ID = "<notice-1@example.com>"


def _resolved(
    ago: timedelta,
    *,
    status: TicketStatus = TicketStatus.RESOLVED,
    spam: bool = False,
    resolution_known: bool = True,
) -> TicketFacts:
    """Ticket 41, resolved ``ago`` before NOW."""
    resolved_at = NOW - ago if resolution_known else None
    return TicketFacts(41, status, frozenset({CUSTOMER}), resolved_at=resolved_at, spam=spam)


def _by_reply(
    facts: TicketFacts,
    *,
    grace: Grace | None = GRACE,
    auto: bool = False,
    references: bool = False,
) -> ThreadMatch:
    """A reply that names the ticket's message in In-Reply-To (or only in References)."""
    return correlate(
        in_reply_to=() if references else (REPLIED_ID,),
        references=("<older@example.com>", REPLIED_ID) if references else (),
        subject="Re: Kassan fungerar inte",
        sender=CUSTOMER,
        auto_generated=auto,
        known_ids={REPLIED_ID: facts},
        token_ticket=None,
        token=None,
        grace=grace,
    )


def _by_token(
    facts: TicketFacts,
    *,
    sender: str = CUSTOMER,
    grace: Grace | None = GRACE,
    auto: bool = False,
) -> ThreadMatch:
    """A mail whose only link is the subject token, e.g. a new mail with ``[#41]``."""
    return correlate(
        in_reply_to=("<unknown@elsewhere.se>",),
        references=(),
        subject=f"Again [#{facts.ticket_id}]",
        sender=sender,
        auto_generated=auto,
        known_ids={},
        token_ticket=facts,
        token=facts.ticket_id,
        grace=grace,
    )


# -- by In-Reply-To / References ------------------------------------------------------------


@pytest.mark.parametrize("status", [TicketStatus.RESOLVED, TicketStatus.CLOSED])
def test_reply_within_the_grace_reopens(status: TicketStatus) -> None:
    match = _by_reply(_resolved(timedelta(days=3), status=status))
    assert match.action is TicketAction.REOPEN
    assert match.ticket_id == 41
    assert match.linked_ticket_id is None
    assert match.by_reference


@pytest.mark.parametrize("status", [TicketStatus.RESOLVED, TicketStatus.CLOSED])
def test_reply_after_the_grace_opens_a_new_linked_ticket(status: TicketStatus) -> None:
    match = _by_reply(_resolved(WITHIN + timedelta(days=1), status=status))
    assert match.action is TicketAction.NEW
    assert match.ticket_id is None
    assert match.linked_ticket_id == 41
    assert match.by_reference


def test_reply_found_through_references_follows_the_grace_too() -> None:
    late = _by_reply(_resolved(WITHIN + timedelta(hours=1)), references=True)
    early = _by_reply(_resolved(timedelta(hours=1)), references=True)
    assert (late.action, late.linked_ticket_id, late.by_reference) == (
        TicketAction.NEW,
        41,
        True,
    )
    assert (early.action, early.ticket_id, early.by_reference) == (TicketAction.REOPEN, 41, True)


def test_boundary_exactly_at_the_end_of_the_grace_still_reopens() -> None:
    # "within the grace period" includes its last instant; one microsecond later is after it.
    at_edge = _by_reply(_resolved(WITHIN))
    just_after = _by_reply(_resolved(WITHIN + timedelta(microseconds=1)))
    assert at_edge.action is TicketAction.REOPEN
    assert just_after.action is TicketAction.NEW
    assert just_after.linked_ticket_id == 41


def test_zero_grace_reopens_only_at_the_very_instant() -> None:
    grace = Grace(now=NOW, reopen_within=timedelta(0))
    assert _by_reply(_resolved(timedelta(0)), grace=grace).action is TicketAction.REOPEN
    assert _by_reply(_resolved(timedelta(seconds=1)), grace=grace).action is TicketAction.NEW


def test_resolution_time_unknown_reopens() -> None:
    match = _by_reply(_resolved(timedelta(days=400), resolution_known=False))
    assert match.action is TicketAction.REOPEN
    assert match.ticket_id == 41


@pytest.mark.parametrize("ago", [timedelta(days=1), WITHIN + timedelta(days=30)])
def test_auto_generated_never_reopens(ago: timedelta) -> None:
    match = _by_reply(_resolved(ago), auto=True)
    assert match.action is TicketAction.APPEND
    assert match.ticket_id == 41
    assert match.linked_ticket_id is None


@pytest.mark.parametrize("ago", [timedelta(days=1), WITHIN + timedelta(days=30)])
def test_spam_ticket_takes_replies_without_reopening(ago: timedelta) -> None:
    match = _by_reply(_resolved(ago, status=TicketStatus.CLOSED, spam=True))
    assert match.action is TicketAction.APPEND
    assert match.ticket_id == 41
    assert match.linked_ticket_id is None


@pytest.mark.parametrize("status", [TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.WAITING])
def test_grace_does_not_apply_to_tickets_that_are_not_resolved(status: TicketStatus) -> None:
    # A ticket reopened long ago keeps its old resolved_at; replies simply append.
    match = _by_reply(_resolved(WITHIN * 10, status=status))
    assert match.action is TicketAction.APPEND
    assert match.ticket_id == 41


# -- by subject token -----------------------------------------------------------------------


def test_token_from_a_participant_within_the_grace_reopens() -> None:
    match = _by_token(_resolved(timedelta(days=2)))
    assert match.action is TicketAction.REOPEN
    assert match.ticket_id == 41
    assert not match.by_reference


def test_token_from_a_participant_after_the_grace_opens_a_linked_ticket() -> None:
    match = _by_token(_resolved(WITHIN + timedelta(days=2)))
    assert match.action is TicketAction.NEW
    assert match.ticket_id is None
    assert match.linked_ticket_id == 41
    assert not match.by_reference


def test_token_from_a_participant_matches_case_blind() -> None:
    match = _by_token(_resolved(timedelta(days=2)), sender=CUSTOMER.upper())
    assert (match.action, match.ticket_id) == (TicketAction.REOPEN, 41)


def test_token_at_the_boundary_still_reopens() -> None:
    assert _by_token(_resolved(WITHIN)).action is TicketAction.REOPEN


def test_token_from_a_stranger_never_joins_whatever_the_grace() -> None:
    match = _by_token(_resolved(timedelta(days=1)), sender="mallory@evil.example")
    assert match.action is TicketAction.NEW
    assert match.ticket_id is None
    assert match.linked_ticket_id == 41
    assert not match.by_reference


def test_auto_generated_token_mail_from_a_participant_appends_after_the_grace() -> None:
    match = _by_token(_resolved(WITHIN * 3), auto=True)
    assert (match.action, match.ticket_id) == (TicketAction.APPEND, 41)


# -- without a grace: the behaviour before it existed ---------------------------------------


@pytest.mark.parametrize("ago", [timedelta(days=1), timedelta(days=3650)])
def test_without_grace_a_reply_always_reopens(ago: timedelta) -> None:
    by_reply = _by_reply(_resolved(ago), grace=None)
    by_token = _by_token(_resolved(ago), grace=None)
    assert (by_reply.action, by_reply.ticket_id) == (TicketAction.REOPEN, 41)
    assert (by_token.action, by_token.ticket_id) == (TicketAction.REOPEN, 41)
    assert by_reply.linked_ticket_id is None
    assert by_token.linked_ticket_id is None


# -- by_reference ---------------------------------------------------------------------------


def test_by_reference_only_for_the_message_id_path() -> None:
    open_ticket = TicketFacts(7, TicketStatus.OPEN, frozenset({CUSTOMER}))
    by_reply = _by_reply(open_ticket)
    by_refs = _by_reply(open_ticket, references=True)
    by_token = _by_token(open_ticket)
    fresh = correlate(
        in_reply_to=(),
        references=(),
        subject="Hello",
        sender=CUSTOMER,
        auto_generated=False,
        known_ids={},
        token_ticket=None,
        token=None,
        grace=GRACE,
    )
    stray = correlate(
        in_reply_to=(),
        references=(),
        subject="Out of office",
        sender=CUSTOMER,
        auto_generated=True,
        known_ids={},
        token_ticket=None,
        token=None,
        grace=GRACE,
    )
    assert (by_reply.action, by_reply.by_reference) == (TicketAction.APPEND, True)
    assert (by_refs.action, by_refs.by_reference) == (TicketAction.APPEND, True)
    assert (by_token.action, by_token.by_reference) == (TicketAction.APPEND, False)
    assert (fresh.action, fresh.by_reference) == (TicketAction.NEW, False)
    assert (stray.action, stray.by_reference) == (TicketAction.NONE, False)


def test_grace_expired_counts_strictly_after_the_period() -> None:
    assert not GRACE.expired(None)
    assert not GRACE.expired(NOW)
    assert not GRACE.expired(NOW - WITHIN)
    assert GRACE.expired(NOW - WITHIN - timedelta(seconds=1))
    assert not GRACE.expired(NOW + timedelta(days=1))  # a clock a little ahead: not expired
