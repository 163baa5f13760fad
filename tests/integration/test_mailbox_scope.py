"""One daemon, several mailboxes: each mailbox's sender, reminder sweep and wiki follow-up
take only its own rows (the first, default mailbox also the unnamed ones); rows get the name
of the mailbox whose task queued them."""

from __future__ import annotations

from datetime import timedelta

from mailbot.clock import FixedClock
from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.policy import Policy
from mailbot.reminders import ReminderSweeper
from mailbot.tickets.models import OutboxRow, OutboxStatus, Ticket
from mailbot.tickets.scope import MAILBOX, served
from tests.integration.test_reminders import T0, shipped_policy, ticket_with_reminders
from tests.integration.test_sender import queue, sender_for

__all__ = ["shipped_policy"]


def test_served_names() -> None:
    assert served("", default=True) is None  # one unnamed mailbox: every row
    assert served("shop", default=True) == ("shop", "")
    assert served("agency", default=False) == ("agency",)


async def test_rows_carry_the_mailbox_of_the_task_that_queued_them(database: str) -> None:
    clock = FixedClock(T0)
    unnamed = await queue("a@x.test", clock, 0)
    token = MAILBOX.set("agency")
    try:
        agency = await queue("b@x.test", clock, 1)
    finally:
        MAILBOX.reset(token)
    assert (await OutboxRow.get(id=unnamed)).mailbox == ""
    assert (await OutboxRow.get(id=agency)).mailbox == "agency"


async def test_each_sender_sends_only_its_mailboxes_rows(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as shop_sink, running_smtp_sink() as agency_sink:
        ids = [await queue(f"c{n}@x.test", clock, n) for n in range(4)]
        await OutboxRow.filter(id__in=ids[2:]).update(mailbox="agency")
        await OutboxRow.filter(id=ids[1]).update(mailbox="shop")
        agency = sender_for(agency_sink, clock)
        agency.mailboxes = served("agency", default=False)
        shop = sender_for(shop_sink, clock)
        shop.mailboxes = served("shop", default=True)
        assert await agency.run_once() == 2
        assert await shop.run_once() == 2  # its own and the unnamed one
        assert sorted(m.rcpt_tos[0] for m in agency_sink.messages) == ["c2@x.test", "c3@x.test"]
        assert sorted(m.rcpt_tos[0] for m in shop_sink.messages) == ["c0@x.test", "c1@x.test"]
        assert await OutboxRow.exclude(status=OutboxStatus.SENT).count() == 0


async def test_each_sweep_takes_only_its_mailboxes_reminders(
    database: str, shipped_policy: Policy
) -> None:
    shop_ticket = await ticket_with_reminders()
    agency_ticket = await ticket_with_reminders()
    await Ticket.filter(id=shop_ticket).update(mailbox="shop")
    await Ticket.filter(id=agency_ticket).update(mailbox="agency")
    clock = FixedClock(T0 + timedelta(hours=2))  # the 50 % reminders are due
    agency = ReminderSweeper(lambda: shipped_policy, clock, mailboxes=("agency",))
    assert (await agency.run_once()).sent == 1
    rows = await OutboxRow.filter(kind="reminder").values_list("ticket_id", "mailbox")
    assert rows == [(agency_ticket, "")]  # sent by the test's (unnamed) task
    shop = ReminderSweeper(lambda: shipped_policy, clock, mailboxes=("shop", ""))
    assert (await shop.run_once()).sent == 1
    assert (await agency.run_once()).sent == 0
