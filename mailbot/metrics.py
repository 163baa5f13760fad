"""Prometheus metrics of one daemon (``GET /metrics``, served by ``mailbot.web_endpoint``).

Each :class:`Metrics` has a registry of its own, never prometheus_client's global one (a
process may run several daemons: the tests do). Two kinds of figures:

* **What this daemon did**, counted as it happens: messages taken in by outcome (the
  poller's own tally of committed batches), intake latency, IMAP reconnects, rules reloads.
* **What the database holds**, read at each scrape (the database is the truth, and several
  daemons may share it): outbox rows still in play by status and the age of the oldest
  queued one, reminders not yet decided, open tickets, tickets in breach of an SLA clock,
  quarantined mail. Each is one aggregate query (COUNT, GROUP BY, MIN), the same on SQLite
  and PostgreSQL, awaited before the exposition is rendered (:meth:`Metrics.render`), and
  each reads only the rows in play through an index: never the history, which grows for
  as long as mailbot runs (a million sent rows cost a GROUP BY of ~85 ms on the event
  loop's thread at every scrape). Sent mail and decided reminders are counted as this
  daemon sends and decides them instead (the Prometheus way: ``rate()`` of a counter, summed
  over the daemons). When the database does not answer, ``mailbot_database_up`` is 0 and
  those families are left out.

Names (``_total`` is added to counters in the exposition):

==========================================  =====================================================
mailbot_messages_ingested_total{outcome}    stored, duplicate, quarantined (oversized included)
mailbot_ingest_latency_seconds              histogram: intake of one message (parse, decide,
                                            store in its savepoint), 1 ms to 10 s
mailbot_imap_reconnects_total{mailbox}      IMAP sessions opened after the first one
mailbot_rules_reloads_total{result}         ok, failed
mailbot_database_up                         1 when this scrape's queries answered
mailbot_mail_sent_total{kind}               mail this daemon handed to the SMTP server, by
                                            outbox kind (ack, wiki, notify, reminder, ...)
mailbot_reminders_decided_total{outcome}    reminders this daemon's sweeps decided: sent,
                                            skipped, missed
mailbot_outbox_rows{status}                 queued, sending, failed
mailbot_outbox_oldest_queued_age_seconds    0 when nothing is queued
mailbot_reminders{status}                   due (pending, due now), pending (not yet due)
mailbot_tickets_open{status}                new, open, waiting
mailbot_sla_breached_tickets                open tickets with a breached clock
mailbot_sla_breached_clocks{clock}          the breached clocks of open tickets, by clock
mailbot_quarantined_messages                inbound mail in quarantine now
==========================================  =====================================================

A clock is breached as ``mailbot tickets`` shows it (``ClockSummary.breached``): stored as
breached, or with a ``breached_at``, or still running past its ``due_at``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from tortoise import connections
from tortoise.exceptions import BaseORMException
from tortoise.functions import Count, Min

from mailbot.agents.tokens import TokenSigner
from mailbot.clock import Clock
from mailbot.domain import Disposition, TicketStatus
from mailbot.ingest.parse_workers import Parsed
from mailbot.ingest.pipeline import Intake, Outcome
from mailbot.policy import Policy
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.models import (
    Direction,
    Message,
    MessageState,
    OutboxRow,
    OutboxStatus,
    Reminder,
    ReminderStatus,
    Ticket,
    TicketClock,
)
from mailbot.tickets.raw_sql import db_value, dialect_sql, table
from mailbot.tickets.service import Origin

log = logging.getLogger(__name__)

#: Seconds for one message's intake: 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A scrape whose database figures take longer reports the database as down.
DATABASE_TIMEOUT_SECONDS = 10.0
#: What ``generate_latest`` writes: the text format 0.0.4 (prometheus_client's
#: CONTENT_TYPE_LATEST names 1.0.0 since 0.22, for UTF-8 names mailbot does not use).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.WAITING)
#: Outbox rows in play (sent rows are history: ``mailbot_mail_sent_total`` counts them).
LIVE_OUTBOX = (OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.FAILED)
#: How a sweep decides a reminder (``mailbot_reminders_decided_total``).
DECIDED_REMINDERS = (ReminderStatus.SENT, ReminderStatus.SKIPPED, ReminderStatus.MISSED)
REMINDER_DUE = "due"


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """What the database holds, as of ``now``."""

    outbox: dict[str, int]
    oldest_queued_age: float
    reminders: dict[str, int]
    open_tickets: dict[str, int]
    breached_tickets: int
    breached_clocks: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0


async def _breached(now: datetime) -> tuple[int, list[dict[str, Any]]]:
    """Open tickets with a breached clock, and breached clocks of open tickets per clock
    name. Breached as ``ClockSummary.breached`` says: status breached, a breach stamped, or
    running past its due time. Read from the open tickets (an index) to their clocks, not
    through every clock of every ticket ever closed; written out, as the ORM joins from the
    clocks' side."""
    conn = connections.get("default")
    statuses = [status.value for status in OPEN_STATUSES]
    where = (
        f"FROM {table(Ticket)} AS t JOIN {table(TicketClock)} AS c ON c.ticket_id = t.id "
        f"WHERE t.status IN ({', '.join('?' for _ in statuses)}) "
        "AND (c.status = ? OR c.breached_at IS NOT NULL OR (c.status = ? AND c.due_at < ?))"
    )
    values = [
        *statuses,
        ClockStatus.BREACHED.value,
        ClockStatus.RUNNING.value,
        db_value(TicketClock, "due_at", now),
    ]
    tickets = await conn.execute_query_dict(
        dialect_sql(conn, f"SELECT COUNT(DISTINCT t.id) AS n {where}"), values
    )
    clocks = await conn.execute_query_dict(
        dialect_sql(conn, f"SELECT c.name AS name, COUNT(*) AS n {where} GROUP BY c.name"), values
    )
    return int(tickets[0]["n"]), list(clocks)


def _counts(rows: Iterable[Mapping[str, object]], key: str, names: Iterable[str]) -> dict[str, int]:
    """``{name: n}`` for every name (0 when absent) from GROUP BY rows ``{key, n}``."""
    result = dict.fromkeys(names, 0)
    for row in rows:
        result[str(row[key])] = cast(int, row["n"])
    return result


async def database_figures(now: datetime) -> DatabaseFigures:
    """Aggregate queries only, over the rows in play: no row is loaded, no history read."""
    outbox_rows = (
        await OutboxRow.filter(status__in=LIVE_OUTBOX)
        .annotate(n=Count("id"))
        .group_by("status")
        .values("status", "n")
    )
    oldest_rows = (
        await OutboxRow.filter(status=OutboxStatus.QUEUED)
        .annotate(oldest=Min("created_at"))
        .values("oldest")
    )
    oldest = oldest_rows[0]["oldest"] if oldest_rows else None
    age = max(0.0, (now - oldest).total_seconds()) if isinstance(oldest, datetime) else 0.0
    pending = await Reminder.filter(status=ReminderStatus.PENDING).count()
    due = await Reminder.filter(status=ReminderStatus.PENDING, due_at__lte=now).count()
    reminders = {REMINDER_DUE: due, ReminderStatus.PENDING.value: pending - due}
    ticket_rows = (
        await Ticket.filter(status__in=OPEN_STATUSES)
        .annotate(n=Count("id"))
        .group_by("status")
        .values("status", "n")
    )
    breached_tickets, clock_rows = await _breached(now)
    quarantined = await Message.filter(
        direction=Direction.IN, state=MessageState.QUARANTINED
    ).count()
    return DatabaseFigures(
        outbox=_counts(outbox_rows, "status", (s.value for s in LIVE_OUTBOX)),
        oldest_queued_age=age,
        reminders=reminders,
        open_tickets=_counts(ticket_rows, "status", (s.value for s in OPEN_STATUSES)),
        breached_tickets=breached_tickets,
        breached_clocks=_counts(clock_rows, "name", ()),
        quarantined=quarantined,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class _ScrapeCollector(Collector):
    """Yields the figures :meth:`Metrics.render` gathered just before ``generate_latest``
    (no await in between: two scrapes at once each render their own)."""

    def __init__(self, ingested: Callable[[], Mapping[Disposition, int]] | None) -> None:
        self.ingested = ingested
        self.figures: DatabaseFigures | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # the names vary with the database's answer: not checked at registration

    def collect(self) -> Iterable[Metric]:
        tally = self.ingested() if self.ingested is not None else {}
        counter = CounterMetricFamily(
            "mailbot_messages_ingested",
            "Messages taken in from the mailbox and committed, by outcome",
            labels=["outcome"],
        )
        for disposition in Disposition:
            counter.add_metric([disposition.value], tally.get(disposition, 0))
        yield counter
        figures = self.figures
        yield _gauge(
            "mailbot_database_up",
            "1 when the database answered this scrape's queries",
            0 if figures is None else 1,
        )
        if figures is None:
            return
        yield _labelled(
            "mailbot_outbox_rows",
            "Outbox rows in play by status (sent rows: mailbot_mail_sent_total)",
            "status",
            figures.outbox,
        )
        yield _gauge(
            "mailbot_outbox_oldest_queued_age_seconds",
            "Age of the oldest queued outbox row (0 when none is queued)",
            figures.oldest_queued_age,
        )
        yield _labelled(
            "mailbot_reminders",
            "Reminders not yet decided (due: due now; pending: not yet due)",
            "status",
            figures.reminders,
        )
        yield _labelled(
            "mailbot_tickets_open", "Open tickets by status", "status", figures.open_tickets
        )
        yield _gauge(
            "mailbot_sla_breached_tickets",
            "Open tickets with a breached SLA clock",
            figures.breached_tickets,
        )
        yield _labelled(
            "mailbot_sla_breached_clocks",
            "Breached SLA clocks of open tickets, by clock",
            "clock",
            figures.breached_clocks,
        )
        yield _gauge(
            "mailbot_quarantined_messages",
            "Inbound messages in quarantine",
            figures.quarantined,
        )


class Metrics:
    """The registry of one daemon and what feeds it.

    ``ingested``: the poller's tally of committed messages by outcome (read at each scrape).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        ingested: Callable[[], Mapping[Disposition, int]] | None = None,
    ) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingest_latency = Histogram(
            "mailbot_ingest_latency_seconds",
            "Seconds intake took for one message (parse, decide, store in its savepoint)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.imap_reconnects = Counter(
            "mailbot_imap_reconnects",
            "IMAP sessions opened after the first one, by mailbox",
            ["mailbox"],
            registry=self.registry,
        )
        self.rules_reloads = Counter(
            "mailbot_rules_reloads",
            "Reloads of rules.yaml and the templates, by result",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "failed"):
            self.rules_reloads.labels(result)
        self.mail_sent = Counter(
            "mailbot_mail_sent",
            "Mail this daemon handed to the SMTP server, by outbox kind",
            ["kind"],
            registry=self.registry,
        )
        self.reminders_decided = Counter(
            "mailbot_reminders_decided",
            "Reminders this daemon's sweeps decided, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for status in DECIDED_REMINDERS:
            self.reminders_decided.labels(status.value)
        self._scrape = _ScrapeCollector(ingested)
        self.registry.register(self._scrape)
        self._database_failing = False

    def watch_mailbox(self, mailbox: str) -> None:
        """Show the mailbox's reconnect counter (at 0) before its first reconnect."""
        self.imap_reconnects.labels(mailbox)

    def observe_ingest(self, seconds: float) -> None:
        self.ingest_latency.observe(seconds)

    def reconnected(self, mailbox: str) -> None:
        self.imap_reconnects.labels(mailbox).inc()

    def reloaded(self, ok: bool) -> None:
        self.rules_reloads.labels("ok" if ok else "failed").inc()

    def sent(self, kind: str) -> None:
        self.mail_sent.labels(kind).inc()

    def reminder_decided(self, status: ReminderStatus) -> None:
        self.reminders_decided.labels(status.value).inc()

    async def database_figures(self) -> DatabaseFigures | None:
        """The database's figures, or None (logged once per outage) when it does not answer."""
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                figures = await database_figures(self.clock.now())
        except (BaseORMException, OSError) as exc:  # OSError: timeouts, connections
            if not self._database_failing:
                log.warning("metrics: the database did not answer: %s", exc)
            self._database_failing = True
            return None
        self._database_failing = False
        return figures

    async def render(self) -> bytes:
        """The text exposition: the database's figures first (awaited), then the rest."""
        figures = await self.database_figures()
        self._scrape.figures = figures
        return generate_latest(self.registry)


class MeteredIntake(Intake):
    """The intake, timing each message into :class:`Metrics`."""

    def __init__(self, policy: Policy, clock: Clock, *, signer: TokenSigner, metrics: Metrics):
        super().__init__(policy, clock, signer=signer)
        self.metrics = metrics

    async def accept(self, raw: bytes, origin: Origin, parsed: Parsed | None = None) -> Outcome:
        started = time.perf_counter()
        outcome = await super().accept(raw, origin, parsed)
        self.metrics.observe_ingest(time.perf_counter() - started)
        return outcome
