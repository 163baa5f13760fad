"""Lifecycle: one TaskGroup owns the poller and the sender; APScheduler only wakes the sender.

``run_once`` (``mailbot run --once``, tests, the demo) processes what is in the mailbox, then
drains the outbox and returns. ``run`` loops both until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from tortoise.transactions import in_transaction

from mailbot.agents.secret_key import signer_for
from mailbot.clock import Clock, SystemClock
from mailbot.domain import Disposition
from mailbot.ingest.pipeline import Intake
from mailbot.mailbox.poller import MailboxPoller
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.reminders import ReminderSweeper
from mailbot.settings import Settings
from mailbot.tickets.database import close_database, open_database
from mailbot.tickets.models import OutboxRow, Ticket
from mailbot.tickets.notices import notify_agents

log = logging.getLogger(__name__)

# Outbox kinds that go to customers: their final failure is reported to the ticket's agents.
CUSTOMER_KINDS = ("ack", "wiki", "relay")
# The outbox is swept at least this often, for retries whose backoff has run out.
SWEEP_SECONDS = 30.0
# Reminders: the scheduler wakes the sweep at the next due row; this is the safety net.
REMINDER_SWEEP_SECONDS = 60.0


@dataclass
class RunReport:
    ingested: dict[Disposition, int] = field(default_factory=dict)
    sent: int = 0


class Daemon:
    def __init__(self, settings: Settings, policy: Policy, clock: Clock | None = None) -> None:
        imap, smtp = settings.require_servers()
        self.settings = settings
        self.policy = policy
        self.clock = clock or SystemClock()
        self.intake = Intake(policy, self.clock, signer=signer_for(settings))
        self.wake_sender = asyncio.Event()
        self.wake_reminders = asyncio.Event()
        self.poller = MailboxPoller(
            imap, self.intake, settings, self.clock, on_stored=self._on_stored
        )
        self.sender = OutboxSender(SmtpTransport(smtp), self.clock, on_failed=self._undeliverable)
        self.reminders = ReminderSweeper(lambda: self.policy, self.clock)
        self.stop = asyncio.Event()

    async def _undeliverable(self, row: OutboxRow, reason: str) -> None:
        """A mail to a customer failed for good: the ticket's agents are told (recorded on
        the ticket as that notification). Mail to agents that fails is only logged."""
        if row.ticket_id is None or row.kind not in CUSTOMER_KINDS:
            return
        async with in_transaction() as conn:
            ticket = await Ticket.get(id=row.ticket_id, using_db=conn)
            await notify_agents(
                conn,
                self.policy,
                self.intake.signer,
                ticket,
                event="undeliverable",
                author=row.rcpt_to,
                text=reason,
                now=self.clock.now(),
            )
        self.wake_sender.set()

    def _on_stored(self) -> None:
        self.wake_sender.set()
        self.wake_reminders.set()  # new rows may be due earlier than the scheduled wake-up

    async def run_once(self) -> RunReport:
        before = dict(self.poller.stats)
        await self.poller.run_once()
        ingested = {k: v - before.get(k, 0) for k, v in self.poller.stats.items()}
        await self.reminders.run_once()
        sent = 0
        while True:
            batch = await self.sender.run_once()
            sent += batch
            if batch == 0:
                break
        return RunReport(ingested=ingested, sent=sent)

    async def _sender_loop(self) -> None:
        while not self.stop.is_set():
            self.wake_sender.clear()
            try:
                await self.sender.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying at the next sweep")
            await self._wait(self.wake_sender)

    async def _wait(self, event: asyncio.Event) -> None:
        """Until ``event`` or ``stop`` is set."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _reminder_loop(self, scheduler: AsyncIOScheduler) -> None:
        while not self.stop.is_set():
            self.wake_reminders.clear()
            try:
                report = await self.reminders.run_once()
                if report.sent:
                    self.wake_sender.set()
                due = await self.reminders.next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reminder sweep failed; retrying at the next sweep")
                due = None
            if due is not None and due <= self.clock.now():
                self.wake_reminders.set()  # more were due than one sweep takes: go on now
            elif due is not None:
                scheduler.add_job(
                    self.wake_reminders.set,
                    "date",
                    run_date=due,
                    id="reminder-next",
                    replace_existing=True,
                )
            await self._wait(self.wake_reminders)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        scheduler = AsyncIOScheduler(event_loop=loop)
        scheduler.add_job(
            self.wake_sender.set, "interval", seconds=SWEEP_SECONDS, id="outbox-sweep"
        )
        scheduler.start()
        log.info(
            "mailbot running: %s -> %s",
            self.poller.label,
            self.sender.transport.endpoint.redacted(),
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.poller.run(self.stop))
                group.create_task(self._sender_loop())
                group.create_task(self._reminder_loop(scheduler))
        finally:
            scheduler.shutdown(wait=False)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("mailbot stopped")


async def run_daemon(settings: Settings, *, once: bool) -> RunReport | None:
    policy = load_policy(settings.rules_path, settings.templates_dir)
    await open_database(settings.db_url)
    try:
        daemon = Daemon(settings, policy)
        if once:
            return await daemon.run_once()
        await daemon.run()
        return None
    finally:
        await close_database()
