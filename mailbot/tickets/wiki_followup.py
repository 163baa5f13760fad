"""After a wiki redirect: the ticket waits on the customer, and either they come back or it
is resolved by itself.

A new ticket whose automatic answer is a wiki redirect (``ReplyKind.WIKI``: the plan's
``howto: wiki`` or an action-table ``wiki`` row) and that answer is actually queued:

* is **redirected** (:func:`start_waiting`, by intake in the ticket's transaction):
  ``wiki_redirect = pending``, status ``waiting``, and a ``paused`` clock event, exactly what
  an agent's ``#wait`` records, so its SLA clocks stop and its reminders are skipped;
* **comes back** (:func:`customer_mail`, by intake): a customer's mail threaded on it that is
  not auto-generated (an out-of-office or a bounce never counts) records ``came_back``;
  intake's usual path already makes a waiting ticket ``open`` again, resumes its clocks and
  sends the agents the "reply" notification (or "reopened", for a reply after it was
  resolved within ``agent_mail.reopen_within_days``, which also counts as coming back);
* or is **resolved unanswered** (:class:`WikiFollowupSweeper`, run by the daemon) when
  ``wiki_followup.resolve_after`` (rules.yaml) has passed since the redirect with no reply:
  status ``resolved``, ``resolved_at`` set, the clocks closed the way ``#close`` closes them
  (the resolution clock met, then every clock closed). The time is calendar time (``7d`` is
  7 × 24 hours from the redirect), not working days. Without ``wiki_followup`` redirected
  tickets stay waiting until the customer or an agent acts.

A ticket an agent resolved or closed while it was pending is recorded as
``resolved_unanswered`` at the same moment (its status is left alone); one an agent re-opened
(``#close`` then ``#reopen``) stays ``pending`` and is the agent's: it is never resolved by
itself. An agent's answer on a waiting redirected ticket leaves it waiting on the customer.

The sweep claims each ticket with a conditional UPDATE (``pending`` and ``waiting`` ->
``resolved_unanswered`` and ``resolved``) in the transaction that closes its clocks, so two
sweeps or two daemons on one database never both resolve it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from mailbot.clock import Clock
from mailbot.domain import TicketAction, TicketStatus
from mailbot.policy import Policy
from mailbot.rules.schema import Rules
from mailbot.sla.clocks import ClockStatus, EventKind
from mailbot.sla.plan import SlaStatus
from mailbot.tickets.clocks import record_event
from mailbot.tickets.models import Ticket, TicketClock, WikiRedirect

log = logging.getLogger(__name__)

#: At most this many tickets are settled per sweep (the daemon sweeps again at once when
#: more are due).
BATCH = 200
#: The statuses a pending redirect is settled from: still waiting (resolved by itself), or
#: resolved or closed by an agent meanwhile (only recorded).
_SETTLED_FROM = (TicketStatus.WAITING, TicketStatus.RESOLVED, TicketStatus.CLOSED)


class Settlement(StrEnum):
    RESOLVE = "resolve"  # resolve the ticket: status, resolved_at, clocks
    RECORD = "record"  # an agent already resolved or closed it: record the outcome only


def resolve_after(rules: Rules) -> timedelta | None:
    """How long a redirected ticket waits for the customer (calendar time); None: forever."""
    followup = rules.wiki_followup
    return timedelta(seconds=followup.seconds) if followup is not None else None


def comes_back(state: WikiRedirect | None, action: TicketAction, auto_generated: bool) -> bool:
    """Whether a customer's mail on a ticket in ``state`` records ``came_back``: a person's
    mail (not auto-generated) threaded onto a pending redirect, or re-opening one that was
    resolved unanswered (or resolved by an agent)."""
    if auto_generated or action not in (TicketAction.APPEND, TicketAction.REOPEN):
        return False
    if state is WikiRedirect.PENDING:
        return True
    return state is WikiRedirect.RESOLVED_UNANSWERED and action is TicketAction.REOPEN


def settlement(status: TicketStatus) -> Settlement | None:
    """What the sweep does with a pending redirect past ``resolve_after``, by the ticket's
    status (None: an agent made it theirs; it stays pending)."""
    if status is TicketStatus.WAITING:
        return Settlement.RESOLVE
    if status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        return Settlement.RECORD
    return None


async def start_waiting(
    conn: BaseDBAsyncClient, rules: Rules, ticket: Ticket, now: datetime
) -> SlaStatus | None:
    """The new ``ticket`` was answered with a wiki redirect: it waits on the customer with its
    clocks paused (as ``#wait`` does). Returns its clocks as they are now (None if its plan
    is gone). ``ticket`` is updated in memory too (notifications show it waiting)."""
    await (
        Ticket.filter(id=ticket.id)
        .using_db(conn)
        .update(status=TicketStatus.WAITING, wiki_redirect=WikiRedirect.PENDING, updated_at=now)
    )
    ticket.status, ticket.wiki_redirect = TicketStatus.WAITING, WikiRedirect.PENDING
    log.info("ticket #%d: wiki redirect, waiting on the customer", ticket.id)
    return await record_event(conn, rules, ticket.id, EventKind.PAUSED, now)


async def customer_mail(
    conn: BaseDBAsyncClient,
    ticket: Ticket,
    action: TicketAction,
    *,
    auto_generated: bool,
    now: datetime,
) -> bool:
    """A customer's mail was threaded onto ``ticket`` (after intake applied it): record
    ``came_back`` when it counts (:func:`comes_back`). Intake resumes the clocks itself."""
    if not comes_back(ticket.wiki_redirect, action, auto_generated):
        return False
    updated = (
        await Ticket.filter(id=ticket.id, wiki_redirect=ticket.wiki_redirect)
        .using_db(conn)
        .update(wiki_redirect=WikiRedirect.CAME_BACK)
    )
    if updated:
        ticket.wiki_redirect = WikiRedirect.CAME_BACK
        log.info(
            "ticket #%d: the customer came back after the wiki redirect (%s at %s)",
            ticket.id,
            action.value,
            now.isoformat(),
        )
    return bool(updated)


@dataclass
class FollowupReport:
    resolved: int = 0  # resolved by itself
    recorded: int = 0  # an agent had resolved or closed it: outcome recorded
    lost_races: int = 0  # another sweep or daemon settled it first


class WikiFollowupSweeper:
    """Resolves redirected tickets nobody came back to (module docstring). ``policy`` is read
    at every sweep, so a reload that changes ``resolve_after`` applies at the next one."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        mailboxes: Sequence[str] | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        #: Tickets of these mailboxes only (mailbot.tickets.scope); None: every ticket.
        self.mailboxes = mailboxes

    def _pending(self) -> QuerySet[Ticket]:
        query = Ticket.filter(wiki_redirect=WikiRedirect.PENDING, status__in=_SETTLED_FROM)
        return query if self.mailboxes is None else query.filter(mailbox__in=self.mailboxes)

    async def next_due(self) -> datetime | None:
        """When the next pending redirect falls due (None: none, or no ``resolve_after``)."""
        after = resolve_after(self.policy().rules)
        if after is None:
            return None
        row = await self._pending().order_by("created_at", "id").only("id", "created_at").first()
        return row.created_at + after if row is not None else None

    async def run_once(self) -> FollowupReport:
        report = FollowupReport()
        rules = self.policy().rules
        after = resolve_after(rules)
        if after is None:
            return report
        now = self.clock.now()
        cutoff = now - after
        due = (
            await self._pending()
            .filter(created_at__lte=cutoff)
            .order_by("created_at", "id")
            .only("id", "status")
            .limit(BATCH)
        )
        for row in due:
            outcome = settlement(row.status)
            if outcome is None:
                continue
            if not await self._settle(rules, row.id, row.status, outcome, cutoff, now):
                report.lost_races += 1
            elif outcome is Settlement.RESOLVE:
                report.resolved += 1
            else:
                report.recorded += 1
        return report

    async def _settle(
        self,
        rules: Rules,
        ticket_id: int,
        status: TicketStatus,
        outcome: Settlement,
        cutoff: datetime,
        now: datetime,
    ) -> bool:
        async with in_transaction() as conn:
            claim = Ticket.filter(
                id=ticket_id,
                wiki_redirect=WikiRedirect.PENDING,
                status=status,
                created_at__lte=cutoff,
            ).using_db(conn)
            if outcome is Settlement.RESOLVE:
                claimed = await claim.update(
                    wiki_redirect=WikiRedirect.RESOLVED_UNANSWERED,
                    status=TicketStatus.RESOLVED,
                    resolved_at=now,
                    updated_at=now,
                )
                if claimed:
                    await _close_clocks(conn, rules, ticket_id, now)
            else:
                claimed = await claim.update(wiki_redirect=WikiRedirect.RESOLVED_UNANSWERED)
        if not claimed:
            return False  # the customer, an agent, or another sweep got there first
        log.info(
            "ticket #%d: no reply to the wiki redirect within %s: %s",
            ticket_id,
            rules.wiki_followup.resolve_after if rules.wiki_followup else "?",
            "resolved" if outcome is Settlement.RESOLVE else f"recorded ({status.value})",
        )
        return True


async def _close_clocks(
    conn: BaseDBAsyncClient, rules: Rules, ticket_id: int, now: datetime
) -> None:
    """As ``#close`` does: the resolution clock is met if it still runs (or is paused), then
    every clock is closed."""
    resolution = (
        await TicketClock.filter(ticket_id=ticket_id, name="resolution").using_db(conn).first()
    )
    if resolution is not None and resolution.status in (ClockStatus.RUNNING, ClockStatus.PAUSED):
        await record_event(conn, rules, ticket_id, EventKind.MET, now, clock="resolution")
    await record_event(conn, rules, ticket_id, EventKind.CLOSED, now)
