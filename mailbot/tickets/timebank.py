"""Time logged on tickets and the accounts' time banks, in the database.

``log_time`` turns an agent's ``#time`` into a :class:`TimeEntry` row: rounded up to the
started increment, surcharged (urgent in or outside office hours, the category's own
surcharge), free when the category is. Balances are never stored: they are computed from
the account's entries and top-ups by :mod:`mailbot.billing.bank`, so a changed rules.yaml
(a bigger package, another cycle day) is reflected at once and nothing drifts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.billing.bank import TopUp as BankTopUp
from mailbot.billing.bank import Usage, balance_at
from mailbot.billing.charge import Charge, charge
from mailbot.billing.schema import TimeBankSpec
from mailbot.rules.schema import Rules
from mailbot.tickets.models import Ticket, TimeEntry, TopUp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedTime:
    entry_id: int
    charge: Charge
    bank: TimeBankSpec | None
    balance_before: Decimal | None
    balance_after: Decimal | None

    @property
    def crossed_warning(self) -> bool:
        """This entry took the balance below the bank's ``warn_below`` threshold."""
        if self.bank is None or self.bank.warn_below is None:
            return False
        if self.balance_before is None or self.balance_after is None:
            return False
        threshold = Decimal(self.bank.warn_below)
        return self.balance_before >= threshold > self.balance_after


async def ledger(
    conn: BaseDBAsyncClient | None, account: str
) -> tuple[list[Usage], list[BankTopUp]]:
    """The account's chargeable usage and top-ups, oldest first."""
    entries = (
        await TimeEntry.filter(account=account, chargeable=True)
        .using_db(conn)
        .order_by("at", "id")
        .values_list("at", "billed")
    )
    topups = (
        await TopUp.filter(account=account)
        .using_db(conn)
        .order_by("at", "id")
        .values_list("at", "minutes")
    )
    return (
        [Usage(at=at, billed=Decimal(billed)) for at, billed in entries],
        [BankTopUp(at=at, minutes=int(minutes)) for at, minutes in topups],
    )


async def account_balance(
    conn: BaseDBAsyncClient | None, rules: Rules, account: str, plan: str, at: datetime
) -> Decimal | None:
    """Minutes left in the account's time bank at ``at``; None when it has no bank."""
    bank = rules.time_bank(account, plan)
    if bank is None:
        return None
    usages, topups = await ledger(conn, account)
    return balance_at(bank, usages, topups, at, rules.tz)


async def log_time(
    conn: BaseDBAsyncClient,
    rules: Rules,
    *,
    ticket: Ticket,
    agent: str,
    minutes: int,
    description: str,
    at: datetime,
    message_row: int | None,
) -> LoggedTime:
    """Record ``minutes`` worked on ``ticket`` by ``agent`` at ``at`` (see module docstring)."""
    category = ticket.category or rules.billing.default_category
    if category not in rules.billing.categories:
        log.warning(
            "ticket #%d: category %r is no longer in billing.categories; billing it as %r",
            ticket.id,
            category,
            rules.billing.default_category,
        )
        category = rules.billing.default_category
    outside = not rules.plan_calendar(ticket.plan).is_open(at)
    priced = charge(
        minutes,
        billing=rules.billing,
        category=category,
        urgent=ticket.urgent,
        outside_office_hours=outside,
    )
    account = ticket.account or ticket.customer
    bank = rules.time_bank(account, ticket.plan)
    before = after = None
    if bank is not None:
        usages, topups = await ledger(conn, account)
        before = balance_at(bank, usages, topups, at, rules.tz)
        if priced.chargeable and priced.billed:
            usages.append(Usage(at=at, billed=priced.billed))
            usages.sort(key=lambda usage: usage.at)
        after = balance_at(bank, usages, topups, at, rules.tz)
    row = await TimeEntry.create(
        using_db=conn,
        ticket_id=ticket.id,
        account=account,
        agent=agent,
        at=at,
        worked=priced.worked,
        rounded=priced.rounded,
        surcharge_percent=priced.surcharge_percent,
        billed=priced.billed,
        chargeable=priced.chargeable,
        category=category,
        urgent=ticket.urgent,
        outside_office_hours=outside,
        description=description[:2000],
        reasons="; ".join(priced.reasons),
        message_id=message_row,
    )
    log.info(
        "ticket #%d: %s logged %d min (%s), billed %s min%s",
        ticket.id,
        agent,
        minutes,
        "; ".join(priced.reasons) or "no surcharge",
        priced.billed,
        f", balance {after} min" if after is not None else "",
    )
    return LoggedTime(row.id, priced, bank, before, after)


async def top_up(
    conn: BaseDBAsyncClient | None, account: str, minutes: int, at: datetime, note: str = ""
) -> int:
    row = await TopUp.create(using_db=conn, account=account, minutes=minutes, at=at, note=note)
    log.info("account %s: topped up %d min (%s)", account, minutes, note or "no note")
    return row.id
