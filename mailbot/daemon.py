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

from mailbot.clock import Clock, SystemClock
from mailbot.domain import Disposition
from mailbot.ingest.pipeline import Intake
from mailbot.mailbox.poller import MailboxPoller
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.settings import Settings
from mailbot.tickets.database import close_database, open_database

log = logging.getLogger(__name__)

# The outbox is swept at least this often, for retries whose backoff has run out.
SWEEP_SECONDS = 30.0


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
        self.intake = Intake(policy, self.clock)
        self.wake_sender = asyncio.Event()
        self.poller = MailboxPoller(
            imap, self.intake, settings, self.clock, on_stored=self.wake_sender.set
        )
        self.sender = OutboxSender(SmtpTransport(smtp), self.clock)
        self.stop = asyncio.Event()

    async def run_once(self) -> RunReport:
        before = dict(self.poller.stats)
        await self.poller.run_once()
        ingested = {k: v - before.get(k, 0) for k, v in self.poller.stats.items()}
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
            waiters = [
                asyncio.ensure_future(self.wake_sender.wait()),
                asyncio.ensure_future(self.stop.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

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
