"""The hand-written SQL of the per-message path (mailbot.tickets.raw_sql and its callers)
against real SQLite and PostgreSQL (``MAILBOT_TEST_DB_URL``): the same rows and answers as
the ORM calls it replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from mailbot.domain import TicketStatus
from mailbot.rules.loader import load_rules
from mailbot.rules.schema import AutoReplyLimits, Rules, Window
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.assignment import _take_turn
from mailbot.tickets.limits import AUTOMATIC_KINDS, auto_reply_refusal, suppress
from mailbot.tickets.models import (
    AssignmentCursor,
    Direction,
    Message,
    OutboxRow,
    Participant,
    Ticket,
    TicketClock,
)
from mailbot.tickets.notices import agents_thread, customer_thread, ticket_summary
from mailbot.tickets.raw_sql import insert_row, insert_rows
from mailbot.tickets.service import _add_participant, thread_facts

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules() -> Rules:
    limits = AutoReplyLimits(per_address=Window(count=2, per="1h"), total=Window(count=4, per="1h"))
    return load_rules(ROOT / "rules.yaml").model_copy(update={"auto_reply_limits": limits})


async def _ticket(**changes: object) -> Ticket:
    fields: dict[str, object] = {
        "plan": "core",
        "customer": "c@example.com",
        "language": "en",
        "subject": "s",
        "created_at": NOW,
        "updated_at": NOW,
        **changes,
    }
    return await Ticket.create(**fields)


async def _outbox(rcpt: str, kind: str, at: datetime) -> None:
    message = await Message.create(
        direction=Direction.OUT, content_hash="h", raw_bytes=b"x", received_at=at
    )
    await OutboxRow.create(
        message_id=message.id,
        kind=kind,
        mail_from="support@example.com",
        rcpt_to=rcpt,
        next_attempt_at=at,
        created_at=at,
    )


async def test_insert_row_stores_what_create_stores(database: str) -> None:
    ticket = await _ticket()
    values: dict[str, object] = {
        "ticket_id": ticket.id,
        "direction": Direction.IN,
        "message_id": "<a@x>",
        "content_hash": "abc",
        "raw_bytes": b"raw \x00 bytes",
        "subject": "Hello",
        "sent_date": NOW - timedelta(minutes=5),
        "received_at": NOW,
        "auto_generated": True,
        "rules_version": "v1",
    }
    by_orm = await Message.create(**values)
    async with in_transaction() as conn:
        by_hand = await insert_row(conn, Message, **values)
    assert by_hand == by_orm.id + 1
    rows = await Message.filter(id__in=[by_orm.id, by_hand]).order_by("id").values()
    assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == [
        {k: v for k, v in rows[0].items() if k != "id"}
    ] * 2
    assert rows[1]["sent_date"] == NOW - timedelta(minutes=5)
    assert rows[1]["direction"] is Direction.IN and rows[1]["role"] == "customer"
    with pytest.raises(TypeError, match="no column"):
        async with in_transaction() as conn:
            await insert_row(conn, Message, nonsense=1)


async def test_insert_rows_writes_what_bulk_create_writes(database: str) -> None:
    ticket = await _ticket()
    rows: list[dict[str, object]] = [
        {"ticket_id": ticket.id, "name": name, "status": ClockStatus.RUNNING,
         "started_at": NOW, "due_at": NOW + timedelta(hours=hours)}
        for name, hours in (("first_response", 4), ("resolution", 40))
    ]  # fmt: skip
    await TicketClock.bulk_create([TicketClock(**row) for row in rows])
    async with in_transaction() as conn:
        await insert_rows(
            conn, TicketClock, [{**row, "ticket_id": (await _ticket()).id} for row in rows]
        )
        await insert_rows(conn, TicketClock, [])  # nothing to do
    written = await TicketClock.all().order_by("id").values()
    assert len(written) == 4
    strip = ("id", "ticket_id")
    by_orm = [{k: v for k, v in row.items() if k not in strip} for row in written[:2]]
    by_hand = [{k: v for k, v in row.items() if k not in strip} for row in written[2:]]
    assert by_hand == by_orm
    assert by_hand[0]["breached_at"] is None and by_hand[1]["status"] is ClockStatus.RUNNING
    with pytest.raises(TypeError, match="no column"):
        async with in_transaction() as conn:
            await insert_rows(conn, TicketClock, [{"nonsense": 1}])


async def test_refusal_counts_only_automatic_answers_in_the_window(
    database: str, rules: Rules
) -> None:
    async with in_transaction() as conn:
        assert await auto_reply_refusal(conn, rules, "a@example.com", NOW) is None
    await _outbox("a@example.com", AUTOMATIC_KINDS[0], NOW - timedelta(minutes=10))
    await _outbox("a@example.com", "notify", NOW - timedelta(minutes=5))  # not automatic
    await _outbox("a@example.com", AUTOMATIC_KINDS[0], NOW - timedelta(hours=2))  # too old
    async with in_transaction() as conn:
        assert await auto_reply_refusal(conn, rules, "a@example.com", NOW) is None
        await _outbox("a@example.com", AUTOMATIC_KINDS[-1], NOW - timedelta(minutes=1))
        # Rows queued earlier in the same transaction count.
        refusal = await auto_reply_refusal(conn, rules, "a@example.com", NOW)
    assert refusal == "rate limit: 2 automatic answers to a@example.com within 1h"
    async with in_transaction() as conn:
        assert await auto_reply_refusal(conn, rules, "b@example.com", NOW) is None
    await _outbox("c@example.com", AUTOMATIC_KINDS[0], NOW)
    await _outbox("d@example.com", AUTOMATIC_KINDS[0], NOW)
    async with in_transaction() as conn:
        refusal = await auto_reply_refusal(conn, rules, "b@example.com", NOW)
    assert refusal == "rate limit: 4 automatic answers in all within 1h"
    # Each count stops at its limit: past it, how many more there are is never read.
    for extra in ("e", "f", "g"):
        await _outbox(f"{extra}@example.com", AUTOMATIC_KINDS[0], NOW)
    await _outbox("a@example.com", AUTOMATIC_KINDS[0], NOW)
    async with in_transaction() as conn:
        assert await auto_reply_refusal(conn, rules, "b@example.com", NOW) == refusal
        refusal = await auto_reply_refusal(conn, rules, "a@example.com", NOW)
    assert refusal == "rate limit: 2 automatic answers to a@example.com within 1h"


async def test_refusal_of_a_suppressed_address_comes_first(database: str, rules: Rules) -> None:
    async with in_transaction() as conn:
        await suppress(conn, ["Bounced@Example.com"], reason="bounce", now=NOW, ticket_id=None)
        refusal = await auto_reply_refusal(conn, rules, "BOUNCED@example.com", NOW)
    assert refusal == (
        "BOUNCED@example.com hard-bounced (1x since 2026-03-02T10:00+00:00): no automatic mail"
    )


async def test_round_robin_takes_turns_in_one_statement(database: str) -> None:
    members = ("ann", "bob", "cid")
    async with in_transaction() as conn:
        turns = [await _take_turn(conn, "support", members) for _ in range(5)]
    assert turns == ["ann", "bob", "cid", "ann", "bob"]
    assert (await AssignmentCursor.get(team="support")).last_agent == "bob"
    await AssignmentCursor.filter(team="support").update(last_agent="gone")
    async with in_transaction() as conn:
        assert await _take_turn(conn, "support", members) == "ann"  # the last one left
        assert await _take_turn(conn, "support", ("dan",)) == "dan"
        assert await _take_turn(conn, "support", ("dan",)) == "dan"


async def test_participants_are_added_once(database: str) -> None:
    ticket = await _ticket()
    async with in_transaction() as conn:
        await _add_participant(conn, ticket.id, "c@example.com", new=True)
        await _add_participant(conn, ticket.id, "c@example.com")
        await _add_participant(conn, ticket.id, "d@example.com")
        await _add_participant(conn, ticket.id, "")
    addresses = (
        await Participant.filter(ticket_id=ticket.id)
        .order_by("id")
        .values_list("address", flat=True)
    )
    assert addresses == ["c@example.com", "d@example.com"]


async def test_thread_facts_read_tickets_and_participants(database: str) -> None:
    resolved = await _ticket(status=TicketStatus.RESOLVED, resolved_at=NOW, spam=True, plan="x")
    other = await _ticket(language="sv")
    for ticket, address in ((resolved, "c@example.com"), (other, "o@example.com")):
        await Participant.create(ticket_id=ticket.id, address=address)
    await Participant.create(ticket_id=resolved.id, address="e@example.com")
    for ticket, mid in ((resolved, "<1@x>"), (other, "<2@x>"), (None, "<3@x>")):
        await Message.create(
            ticket_id=ticket.id if ticket else None,
            direction=Direction.IN,
            message_id=mid,
            content_hash=mid,
            raw_bytes=b"",
            received_at=NOW,
        )
    async with in_transaction() as conn:
        known, token = await thread_facts(conn, ("<1@x>", "<2@x>", "<3@x>", "<4@x>"), other.id)
        nothing = await thread_facts(conn, ("<9@x>",), 999_999)
    assert nothing == ({}, None)
    assert set(known) == {"<1@x>", "<2@x>"}
    facts = known["<1@x>"]
    assert (facts.ticket_id, facts.status, facts.plan, facts.spam) == (
        resolved.id,
        TicketStatus.RESOLVED,
        "x",
        True,
    )
    assert facts.resolved_at == NOW
    assert facts.participants == frozenset({"c@example.com", "e@example.com"})
    assert token is not None and token == known["<2@x>"]
    assert (token.language, token.spam, token.resolved_at) == ("sv", False, None)
    assert token.participants == frozenset({"o@example.com"})


async def test_the_agents_and_customers_threads_end_with_the_latest_message(
    database: str,
) -> None:
    ticket = await _ticket()
    other = await _ticket()

    async def message(mid: str | None, source: str, role: str, on: Ticket = ticket) -> None:
        await Message.create(
            ticket_id=on.id,
            direction=Direction.OUT if source.startswith("outbox") else Direction.IN,
            message_id=mid,
            source=source,
            role=role,
            content_hash=mid or "none",
            raw_bytes=b"",
            received_at=NOW,
        )

    await message("<c1@x>", "imap", "customer")
    for n in range(1, 24):  # more than the chain keeps
        await message(f"<n{n}@x>", "outbox:notify", "internal")
    await message(None, "outbox:notify", "internal")  # no Message-ID: not part of it
    await message("<a1@x>", "outbox:ack", "system")
    await message("<c2@x>", "imap", "customer")
    await message("<z@x>", "outbox:notify", "internal", on=other)
    async with in_transaction() as conn:
        agents = await agents_thread(conn, ticket.id)
        customers = await customer_thread(conn, ticket.id)
        empty = await agents_thread(conn, 999_999)
    assert agents.parent == "<n23@x>"
    assert agents.references == tuple(f"<n{n}@x>" for n in range(4, 23))  # 19 before it
    assert customers.parent == "<c2@x>"
    assert customers.references == ("<c1@x>", "<a1@x>")
    assert (empty.parent, empty.references) == (None, ())


async def test_a_summary_reads_the_clocks_as_the_orm_would(database: str) -> None:
    from mailbot.policy import load_policy

    policy = load_policy(ROOT / "rules.yaml", ROOT / "templates")
    ticket = await _ticket()
    due = NOW + timedelta(hours=4)
    await TicketClock.create(ticket_id=ticket.id, name="first_response", started_at=NOW, due_at=due)
    await TicketClock.create(
        ticket_id=ticket.id,
        name="resolution",
        status=ClockStatus.CLOSED,
        started_at=NOW,
        due_at=None,
    )
    async with in_transaction() as conn:
        summary = await ticket_summary(conn, policy, ticket, NOW, "en")
        given = await ticket_summary(
            conn, policy, ticket, NOW, "en", [("first_response", ClockStatus.RUNNING, due)]
        )
    assert summary.deadlines == given.deadlines
    assert [d.clock for d in summary.deadlines] == ["first_response"]  # closed: not shown
