"""Monthly reports: time banks per account, SLA results and wiki redirects per plan (read
only).

A period is a calendar month in the rules' timezone (``2026-11``: from 1 November 00:00 to
1 December 00:00 local time). Time-bank figures come from :func:`mailbot.billing.bank.
statement` over the account's whole history, so carried-over and expiring hours are right
whatever the period.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from mailbot.billing.bank import statement
from mailbot.errors import ConfigError
from mailbot.rules.schema import Rules
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.models import Ticket, TicketClock, TimeEntry, TopUp, WikiRedirect
from mailbot.tickets.timebank import ledger

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")
_ZERO = Decimal(0)


def _exact(minutes: Decimal) -> str:
    """Minutes as an exact decimal string, one way for every figure: ``202.5``, ``0``."""
    return f"{minutes.normalize():f}"


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    start: datetime
    end: datetime


def parse_period(text: str, tz: ZoneInfo) -> Period:
    match = _PERIOD.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"--period {text!r}: write a month as YYYY-MM, e.g. 2026-11")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return Period(text.strip(), start, end)


@dataclass(frozen=True, slots=True)
class TimebankRow:
    account: str
    name: str
    bank: str  # "monthly 4 h", "prepaid", "none"
    worked: int
    billed: Decimal
    surcharged: Decimal
    free: int
    allotment: Decimal
    used: Decimal
    expired: Decimal
    overage: Decimal
    balance: Decimal | None

    def as_json(self) -> dict[str, object]:
        return {
            "account": self.account,
            "name": self.name,
            "bank": self.bank,
            "worked_minutes": self.worked,
            "billed_minutes": _exact(self.billed),
            "surcharge_minutes": _exact(self.surcharged),
            "free_minutes": self.free,
            "allotment_minutes": _exact(self.allotment),
            "used_minutes": _exact(self.used),
            "expired_minutes": _exact(self.expired),
            "overage_minutes": _exact(self.overage),
            "balance_minutes": None if self.balance is None else _exact(self.balance),
        }


async def timebank_report(rules: Rules, period: Period) -> list[TimebankRow]:
    accounts: set[str] = {
        str(a)
        for a in await TimeEntry.filter(at__lt=period.end)
        .distinct()
        .values_list("account", flat=True)
    }
    accounts |= {
        str(a)
        for a in await TopUp.filter(at__lt=period.end).distinct().values_list("account", flat=True)
    }
    accounts |= {a for a, spec in rules.accounts.items() if spec.time_bank is not None}
    rows = []
    for account in sorted(str(a) for a in accounts):
        rows.append(await _timebank_row(rules, account, period))
    return rows


async def _timebank_row(rules: Rules, account: str, period: Period) -> TimebankRow:
    last = await Ticket.filter(account=account).order_by("-id").only("plan").first()
    plan = last.plan if last is not None else rules.default_plan
    spec = rules.time_bank(account, plan)
    entries = await TimeEntry.filter(account=account, at__gte=period.start, at__lt=period.end)
    worked = sum(e.worked for e in entries)
    charged = [e for e in entries if e.chargeable]
    billed = sum((Decimal(e.billed) for e in charged), _ZERO)
    surcharged = sum((Decimal(e.billed) - e.rounded for e in charged), _ZERO)
    free = sum(e.rounded for e in entries if not e.chargeable)
    declared = rules.accounts.get(account)
    name = declared.name if declared is not None else account
    if spec is None:
        return TimebankRow(
            account, name, "none", worked, billed, surcharged, free,
            _ZERO, _ZERO, _ZERO, billed, None,
        )  # fmt: skip
    usages, topups = await ledger(None, account)
    result = statement(spec, usages, topups, start=period.start, end=period.end, tz=rules.tz)
    kind = "prepaid" if spec.prepaid else f"monthly {spec.monthly} min"
    return TimebankRow(
        account,
        name,
        kind,
        worked,
        billed,
        surcharged,
        free,
        result.allotment,
        result.used,
        result.expired,
        result.overage,
        result.balance,
    )


@dataclass(frozen=True, slots=True)
class SlaRow:
    plan: str
    name: str
    tickets: int
    met: int
    breached: int
    open: int
    median_first_response: timedelta | None

    def as_json(self) -> dict[str, object]:
        median = self.median_first_response
        return {
            "plan": self.plan,
            "name": self.name,
            "tickets": self.tickets,
            "met": self.met,
            "breached": self.breached,
            "open": self.open,
            "median_first_response_minutes": (
                None if median is None else round(median.total_seconds() / 60, 1)
            ),
        }


async def sla_report(rules: Rules, period: Period) -> list[SlaRow]:
    """Per plan: tickets opened in the period; met = every clock met or still in time and the
    first response given; breached = any clock breached; median time to the first response."""
    tickets = await Ticket.filter(created_at__gte=period.start, created_at__lt=period.end).only(
        "id", "plan", "created_at"
    )
    by_ticket: dict[int, list[TicketClock]] = {}
    ids = [t.id for t in tickets]
    for start in range(0, len(ids), 500):
        for clock in await TicketClock.filter(ticket_id__in=ids[start : start + 500]):
            by_ticket.setdefault(clock.ticket_id, []).append(clock)
    plans: dict[str, list[Ticket]] = {}
    for ticket in tickets:
        plans.setdefault(ticket.plan, []).append(ticket)
    rows = []
    for plan_id in sorted(
        plans, key=lambda p: (-(rules.plans[p].priority if p in rules.plans else 0), p)
    ):
        met = breached = still_open = 0
        durations: list[timedelta] = []
        for ticket in plans[plan_id]:
            clocks = by_ticket.get(ticket.id, [])
            statuses = {c.status for c in clocks}
            first = next((c for c in clocks if c.name == "first_response"), None)
            if first is not None and first.stopped_at is not None:
                durations.append(first.stopped_at - ticket.created_at)
            if ClockStatus.BREACHED in statuses:
                breached += 1
            elif first is not None and first.status is ClockStatus.MET:
                met += 1
            else:
                still_open += 1
        median = (
            timedelta(seconds=statistics.median(d.total_seconds() for d in durations))
            if durations
            else None
        )
        plan = rules.plans.get(plan_id)
        rows.append(
            SlaRow(
                plan_id,
                plan.name if plan is not None else plan_id,
                len(plans[plan_id]),
                met,
                breached,
                still_open,
                median,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class WikiRow:
    """Per plan: new tickets of the period answered with a wiki redirect, and what came of
    them so far (mailbot.tickets.wiki_followup)."""

    plan: str
    name: str
    redirected: int
    came_back: int
    resolved_unanswered: int
    pending: int

    def as_json(self) -> dict[str, object]:
        return {
            "plan": self.plan,
            "name": self.name,
            "redirected": self.redirected,
            "came_back": self.came_back,
            "resolved_unanswered": self.resolved_unanswered,
            "pending": self.pending,
        }


def wiki_rows(rules: Rules, redirects: list[tuple[str, WikiRedirect]]) -> list[WikiRow]:
    """Pure: the rows for (plan, outcome) pairs, plans by priority then id."""
    counts: dict[str, dict[WikiRedirect, int]] = {}
    for plan_id, outcome in redirects:
        by_outcome = counts.setdefault(plan_id, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    rows = []
    for plan_id in sorted(
        counts, key=lambda p: (-(rules.plans[p].priority if p in rules.plans else 0), p)
    ):
        by_outcome = counts[plan_id]
        plan = rules.plans.get(plan_id)
        rows.append(
            WikiRow(
                plan_id,
                plan.name if plan is not None else plan_id,
                sum(by_outcome.values()),
                by_outcome.get(WikiRedirect.CAME_BACK, 0),
                by_outcome.get(WikiRedirect.RESOLVED_UNANSWERED, 0),
                by_outcome.get(WikiRedirect.PENDING, 0),
            )
        )
    return rows


async def wiki_report(rules: Rules, period: Period) -> list[WikiRow]:
    """Per plan: tickets opened in the period with a wiki redirect; how many customers came
    back, how many were resolved unanswered, how many still wait (as of now)."""
    found = await Ticket.filter(
        created_at__gte=period.start, created_at__lt=period.end, wiki_redirect__not_isnull=True
    ).values_list("plan", "wiki_redirect")
    return wiki_rows(rules, [(str(plan), WikiRedirect(state)) for plan, state in found])
