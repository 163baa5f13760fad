"""Lifecycle: one TaskGroup owns the poller, the sender, the reminder sweep and the rules
watcher; APScheduler only wakes the sweeps.

``run_once`` (``mailbot run --once``, tests, the demo) processes what is in the mailbox, then
drains the outbox and returns. ``run`` loops until SIGTERM/SIGINT; SIGHUP, and a change of
rules.yaml or a template, reload the rules (``mailbot.reload``). With a ``status_file`` the
daemon keeps ``mailbot status``'s state file up to date (``mailbot.status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from tortoise.transactions import in_transaction

from mailbot.agents.secret_key import signer_for
from mailbot.clock import Clock, SystemClock
from mailbot.domain import Disposition
from mailbot.endpoints import Endpoint
from mailbot.errors import ConfigError, ImapPermanentError, OAuthGrantError
from mailbot.ingest.parse_workers import close_shared_workers, shared_workers
from mailbot.ingest.pipeline import Intake
from mailbot.mailbox.imap import ImapSession
from mailbot.mailbox.lease import LeaseState, MailboxLeaseKeeper, fetch_while_leased
from mailbot.mailbox.poller import MailboxPoller
from mailbot.metrics import MeteredIntake, Metrics
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.reload import RELOAD_POLL_SECONDS, ReloadOutcome, RulesReloader
from mailbot.reminders import ReminderSweeper
from mailbot.settings import Settings
from mailbot.status import status_path, write_status
from mailbot.systemd_notify import notify, watchdog_seconds
from mailbot.tickets.database import close_database, missing_columns, open_database, redact
from mailbot.tickets.models import OutboxRow, Ticket
from mailbot.tickets.notices import notify_agents
from mailbot.tickets.scope import MAILBOX, served
from mailbot.tickets.wiki_followup import WikiFollowupSweeper
from mailbot.web_endpoint import EndpointServer, start_endpoint

log = logging.getLogger(__name__)

# Outbox kinds that go to customers: their final failure is reported to the ticket's agents.
CUSTOMER_KINDS = ("ack", "wiki", "relay")
# The outbox is swept at least this often, for retries whose backoff has run out.
SWEEP_SECONDS = 30.0
# A standby daemon (another holds the mailbox's lease) looks at the outbox this often.
STANDBY_SEND_SECONDS = 2.0
# Reminders: the scheduler wakes the sweep at the next due row; this is the safety net.
REMINDER_SWEEP_SECONDS = 60.0
# A wiki follow-up sweep that failed is tried again this much later (or at the next mail).
WIKI_FOLLOWUP_RETRY_SECONDS = 60.0


@dataclass
class RunReport:
    ingested: dict[Disposition, int] = field(default_factory=dict)
    sent: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


class WatchedPoller(MailboxPoller):
    """The poller, remembering when each IMAP sync ended and how (for ``mailbot status``)."""

    def __init__(
        self,
        endpoint: Endpoint,
        intake: Intake,
        settings: Settings,
        clock: Clock,
        *,
        on_stored: Callable[[], None],
        on_synced: Callable[[], None],
    ) -> None:
        super().__init__(
            endpoint,
            intake,
            settings,
            clock,
            on_stored=on_stored,
            parsers=shared_workers(settings.parse_workers),
        )
        self.on_synced = on_synced
        self.last_sync: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        #: Whether the last error is one a retry will not cure (login refused, no such folder).
        self.last_error_permanent = False
        #: IMAP sessions opened; each after the first is a reconnect, told to on_reconnect.
        self.opened = 0
        self.on_reconnect: Callable[[], None] = lambda: None

    async def open(self) -> ImapSession:
        try:
            session = await super().open()
        except Exception as exc:  # refused login, unreachable server: shown, then raised
            self._failed(exc)
            raise
        self.opened += 1
        if self.opened > 1:
            self.on_reconnect()
        return session

    async def sync(self, session: ImapSession) -> int:
        try:
            handled = await super().sync(session)
        except Exception as exc:
            self._failed(exc)
            raise
        self.last_sync = _now()
        self.on_synced()
        return handled

    def _failed(self, exc: Exception) -> None:
        self.last_error, self.last_error_at = f"{type(exc).__name__}: {exc}", _now()
        # The server (or the account's token grant) refused us: waiting will not cure it.
        self.last_error_permanent = isinstance(exc, (ImapPermanentError, OAuthGrantError))
        self.on_synced()

    @property
    def refused(self) -> str | None:
        """The permanent error of the last attempt when no sync has succeeded since."""
        if not self.last_error_permanent or self.last_error_at is None:
            return None
        if self.last_sync is not None and self.last_sync >= self.last_error_at:
            return None
        return self.last_error


class Daemon:
    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        clock: Clock | None = None,
        *,
        status_file: Path | None = None,
        name: str = "",
        default: bool = True,
        metrics: Metrics | None = None,
        standalone: bool = True,
    ) -> None:
        imap, smtp = settings.require_servers()
        self.settings = settings
        self.policy = policy
        self.clock = clock or SystemClock()
        #: The mailbox's name when one daemon serves several (mailbot.daemon_group), stored
        #: on its tickets and outbox rows (mailbot.tickets.scope); "" for a single mailbox.
        self.name = name
        mailboxes = served(name, default=default)
        #: False under a DaemonGroup, which handles signals, systemd, the HTTP endpoint.
        self.standalone = standalone
        #: Called once this mailbox is serving or standing by (the group's READY).
        self.on_announced: Callable[[], None] = lambda: None
        #: Prometheus figures (mailbot.metrics), served by mailbot.web_endpoint.
        self.metrics = metrics or Metrics(self.clock, ingested=lambda: self.poller.stats)
        self.intake = MeteredIntake(
            policy, self.clock, signer=signer_for(settings), metrics=self.metrics
        )
        self.wake_sender = asyncio.Event()
        self.wake_reminders = asyncio.Event()
        self.poller = WatchedPoller(
            imap,
            self.intake,
            settings,
            self.clock,
            on_stored=self._on_stored,
            on_synced=self._synced,
        )
        self.poller.on_reconnect = lambda: self.metrics.reconnected(self.poller.label)
        self.metrics.watch_mailbox(self.poller.label)
        #: The /metrics and /healthz server while ``run`` runs (``web.port``: its port).
        self.web: EndpointServer | None = None
        #: Only the holder of the mailbox's lease fetches it (several daemons, one database).
        self.lease = MailboxLeaseKeeper(self.poller.key, self.clock, seconds=settings.lease_seconds)
        self.standby: LeaseState | None = None
        self.sender = OutboxSender(
            SmtpTransport(smtp),
            self.clock,
            on_failed=self._undeliverable,
            on_sent=self.metrics.sent,
            mailboxes=mailboxes,
        )
        self.reminders = ReminderSweeper(
            lambda: self.policy,
            self.clock,
            mailboxes=mailboxes,
            on_decided=self.metrics.reminder_decided,
        )
        #: Resolves wiki redirects nobody came back to (mailbot.tickets.wiki_followup).
        self.wiki_followup = WikiFollowupSweeper(
            lambda: self.policy, self.clock, mailboxes=mailboxes
        )
        self.wake_wiki_followup = asyncio.Event()
        self.reloader = RulesReloader(
            settings.rules_path,
            settings.templates_dir,
            current=lambda: self.policy,
            swap=self.swap_policy,
            on_outcome=self._reloaded,
        )
        #: SIGHUP sets it; the watcher reloads. Files are looked at this often.
        self.wake_reload = asyncio.Event()
        self.reload_poll_seconds = RELOAD_POLL_SECONDS
        self.stop = asyncio.Event()
        #: A second SIGTERM/SIGINT: stop flushing the outbox and exit.
        self.abandon_flush = asyncio.Event()
        self._stop_deadline: float | None = None  # event-loop time; set by the stop signal
        #: Set once ``run`` handles signals and its tasks are started.
        self.ready = asyncio.Event()
        self.status_file = status_file
        self.started = _now()
        self.stopped: datetime | None = None
        self.mode = "run"
        self._status_failed = False
        self._announced = False

    def swap_policy(self, policy: Policy) -> None:
        """Install a new ruleset. One synchronous step on the event loop: every reader (intake,
        reminders, this daemon) sees the old or the new one; messages in hand keep theirs."""
        self.policy = policy
        self.intake.policy = policy

    def request_reload(self) -> None:
        """The SIGHUP handler: the watcher task reloads at once."""
        self.wake_reload.set()

    def _synced(self) -> None:
        """After each IMAP sync: the state file; after the first good one, systemd's READY
        (the database is open and the mailbox answered)."""
        self._write_status()
        # Alone, READY waits for a good sync (systemd then reports a failed start); in a
        # group the first attempt's outcome will do: one broken mailbox must not keep the
        # others from starting (the group's STATUS names it).
        tried = self.poller.last_sync is not None or (
            not self.standalone and self.poller.last_error is not None
        )
        if not self._announced and tried:
            self._announced = True
            self.on_announced()
            if self.standalone:
                notify(
                    "READY=1", f"STATUS=serving {self.poller.label}, rules {self.policy.version}"
                )

    def _standby(self, state: LeaseState) -> None:
        """The lease is another daemon's: this one sends and sweeps, but does not fetch.
        That is a healthy state, so systemd hears READY."""
        if self.standby is None or self.standby.holder != state.holder:
            log.info(
                "mailbox %s is fetched by %s: standing by (taking over when its lease of %g s"
                " lapses)",
                self.poller.label,
                state.holder or "another daemon",
                self.lease.seconds,
            )
        if self.standby is None:
            self.wake_sender.set()  # its loop now looks at the outbox every few seconds
        self.standby = state
        self._write_status()
        if not self._announced:
            self._announced = True
            self.on_announced()
            if self.standalone:
                notify(
                    "READY=1",
                    f"STATUS=standby: {self.poller.label} is fetched by {state.holder}",
                )

    async def _fetch(self, until: asyncio.Event) -> None:
        self.standby = None
        await self.poller.run(until)

    def _request_stop(self) -> None:
        """SIGTERM/SIGINT: tell systemd at once, then finish the batch in hand, flush the
        outbox (``stop_timeout``) and stop. A second signal gives up the flush."""
        if self.stop.is_set():
            log.warning("second stop signal: not waiting for the outbox any more")
            self.abandon_flush.set()
            return
        notify("STOPPING=1", "STATUS=stopping")
        self.start_stop_clock()
        self.stop.set()

    def start_stop_clock(self) -> None:
        """The outbox may be flushed until ``stop_timeout`` seconds from now."""
        self._stop_deadline = asyncio.get_running_loop().time() + self.settings.stop_timeout

    def _out_of_time(self) -> bool:
        """Whether a stopping daemon must leave the rest of the outbox queued."""
        if self.abandon_flush.is_set():
            return True
        deadline = self._stop_deadline
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    async def flush_outbox(self) -> int:
        """After the tasks have stopped: send what is due until ``stop_timeout`` seconds
        after the stop signal (checked between mails: one in flight is never cut off).
        Returns the number sent; what is left stays queued for the next start."""
        if self._stop_deadline is None:
            self.start_stop_clock()
        out_of_time = self._out_of_time
        sent = 0
        while not out_of_time():
            try:
                batch = await self.sender.run_once(until=out_of_time)
            except Exception:
                log.exception("flushing the outbox at stop failed; the rest stays queued")
                break
            sent += batch
            if batch == 0:
                break
        left = await self.sender.queued().filter(next_attempt_at__lte=self.clock.now()).count()
        if left:
            log.warning(
                "stopping with %d due outbox rows unsent (flush %s); they go out at the next start",
                left,
                "abandoned" if self.abandon_flush.is_set() else "timed out or SMTP unavailable",
            )
        log.info("outbox flushed at stop: %d sent, %d due left", sent, left)
        return sent

    async def _watchdog_loop(self) -> None:
        """``WATCHDOG=1`` from the event loop at half ``WatchdogSec=``: a blocked loop misses
        it and systemd restarts the service. Nothing to do without a watchdog."""
        interval = watchdog_seconds()
        if interval is None:
            return
        while not self.stop.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), interval)

    def _reloaded(self, outcome: ReloadOutcome) -> None:
        self.metrics.reloaded(outcome.ok)
        self.wake_wiki_followup.set()  # wiki_followup.resolve_after may have changed
        self._write_status()

    def status(self) -> dict[str, object]:
        """What ``mailbot status`` reads from the state file."""
        last = self.reloader.last
        policy = self.policy
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "mode": self.mode,
            "started": _iso(self.started),
            "stopped": _iso(self.stopped),
            "updated": _iso(_now()),
            "rules": {
                "version": policy.version,
                "loaded_at": _iso(policy.loaded_at),
                # Absolute: `mailbot status` may run in another directory.
                "files": [os.path.abspath(path) for path in policy.files],
                "templates": os.path.abspath(self.settings.templates_dir),
            },
            "reloads": {"ok": self.reloader.succeeded, "failed": self.reloader.failed},
            "last_reload": last.as_json() if last else None,
            "imap": {
                "mailbox": self.poller.label,
                "last_sync": _iso(self.poller.last_sync),
                "last_error": self.poller.last_error,
                "last_error_at": _iso(self.poller.last_error_at),
                "lease": {
                    "held": self.lease.held,
                    "holder": self.lease.holder if self.lease.held else None,
                    "standby_for": self.standby.holder if self.standby else None,
                },
            },
            "parsing": (
                self.poller.parsers.status() if self.poller.parsers is not None else {"workers": 0}
            ),
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.status())
        except OSError as exc:
            if not self._status_failed:
                log.warning("cannot write the state file %s: %s", self.status_file, exc)
            self._status_failed = True
        else:
            self._status_failed = False

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
        self.wake_wiki_followup.set()  # a first redirect: nothing may be scheduled yet

    async def run_once(self) -> RunReport:
        token = MAILBOX.set(self.name)
        try:
            return await self._run_once()
        finally:
            MAILBOX.reset(token)

    async def _run_once(self) -> RunReport:
        self.mode = "once"
        self._write_status()
        before = dict(self.poller.stats)
        state = await self.lease.acquire()
        if state.held:
            try:
                await self.poller.run_once()
            finally:
                await self.lease.release()
        else:
            log.warning(
                "%s is being fetched by %s (lease until %s): not fetching, only sending",
                self.poller.label,
                state.holder,
                _iso(state.expires_at),
            )
        ingested = {k: v - before.get(k, 0) for k, v in self.poller.stats.items()}
        await self.wiki_followup.run_once()
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
                sent = await self.sender.run_once(until=self._out_of_time)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying at the next sweep")
            else:
                if sent:
                    # One drain takes at most a page of due rows: after a burst, go on at
                    # once rather than leave the rest to the next sweep.
                    self.wake_sender.set()
            # A standby daemon hears of no new mail (the lease holder stores it): it looks at
            # the outbox every few seconds, so it shares the sending, not only the failover.
            await self._wait(
                self.wake_sender, STANDBY_SEND_SECONDS if self.standby is not None else None
            )

    async def _wait(self, event: asyncio.Event, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Until ``event`` or ``stop`` is set (or ``timeout`` seconds have passed)."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _reminder_loop(self, scheduler: AsyncIOScheduler) -> None:
        async def sweep() -> None:
            report = await self.reminders.run_once()
            if report.sent:
                self.wake_sender.set()

        await self._sweep_loop(
            scheduler,
            self.wake_reminders,
            sweep,
            self.reminders.next_due,
            job_id="reminder-next",
            what="reminder sweep",
            retry_seconds=None,
        )

    async def _wiki_followup_loop(self, scheduler: AsyncIOScheduler) -> None:
        """Woken as the reminder loop, and also when new mail is stored or the rules are
        reloaded."""

        async def sweep() -> None:
            await self.wiki_followup.run_once()

        await self._sweep_loop(
            scheduler,
            self.wake_wiki_followup,
            sweep,
            self.wiki_followup.next_due,
            job_id="wiki-followup-next",
            what="wiki follow-up sweep",
            retry_seconds=WIKI_FOLLOWUP_RETRY_SECONDS,
        )

    async def _sweep_loop(
        self,
        scheduler: AsyncIOScheduler,
        wake: asyncio.Event,
        sweep: Callable[[], Awaitable[None]],
        next_due: Callable[[], Awaitable[datetime | None]],
        *,
        job_id: str,
        what: str,
        retry_seconds: float | None,
    ) -> None:
        """Run ``sweep``, then sleep until ``wake``: set by a scheduler job at the next due
        row, or at once when more were due than one sweep takes. After a failure the next
        try is ``retry_seconds`` later (None: at the next wake)."""
        while not self.stop.is_set():
            wake.clear()
            try:
                await sweep()
                due = await next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", what)
                due = (
                    None
                    if retry_seconds is None
                    else self.clock.now() + timedelta(seconds=retry_seconds)
                )
            if due is not None and due <= self.clock.now():
                wake.set()  # more were due than one sweep takes: go on now
            elif due is not None:
                scheduler.add_job(wake.set, "date", run_date=due, id=job_id, replace_existing=True)
            await self._wait(wake)

    async def _reload_loop(self) -> None:
        """SIGHUP reloads at once; otherwise the files are looked at every few seconds (the
        first look compares them with what was loaded at start)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait(self.wake_reload), self.reload_poll_seconds)
            if self.stop.is_set():
                return
            try:
                if self.wake_reload.is_set():
                    self.wake_reload.clear()
                    if self.standalone:
                        notify("RELOADING=1", "STATUS=reloading the rules")
                    try:
                        await self.reloader.reload("SIGHUP")
                    finally:
                        if self.standalone:
                            notify("READY=1", f"STATUS=rules {self.policy.version}")
                else:
                    await self.reloader.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for changed rules failed; trying again")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.mode = "run"
        MAILBOX.set(self.name)  # this task's and its children's tickets and mail
        if self.standalone:
            self.web = await start_endpoint(self)  # /metrics and /healthz, if http_listen
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        scheduler = AsyncIOScheduler(event_loop=loop)
        scheduler.add_job(
            self.wake_sender.set, "interval", seconds=SWEEP_SECONDS, id="outbox-sweep"
        )
        scheduler.start()
        log.info(
            "mailbot running%s: %s -> %s, rules version %s",
            f" mailbox {self.name}" if self.name else "",
            self.poller.label,
            self.sender.transport.endpoint.redacted(),
            self.policy.version,
        )
        self._write_status()
        try:
            async with asyncio.TaskGroup() as group:
                if self.poller.parsers is not None:
                    # Booted now, beside the first sync, not when the first batch needs it.
                    group.create_task(self.poller.parsers.start())
                group.create_task(
                    fetch_while_leased(self.lease, self._fetch, self.stop, on_standby=self._standby)
                )
                group.create_task(self._sender_loop())
                group.create_task(self._reminder_loop(scheduler))
                group.create_task(self._wiki_followup_loop(scheduler))
                group.create_task(self._reload_loop())
                if self.standalone:
                    group.create_task(self._watchdog_loop())
                self.ready.set()
            await self.flush_outbox()
        finally:
            scheduler.shutdown(wait=False)
            if self.standalone:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                notify("STOPPING=1")
                if self.web is not None:
                    await self.web.close()
            self.finish()
        log.info("mailbot stopped%s", f" (mailbox {self.name})" if self.name else "")

    def finish(self) -> None:
        """Record in the state file that this daemon has stopped."""
        self.stopped = _now()
        self._write_status()


async def require_schema(url: str) -> None:
    """Refuse a database this mailbot cannot use: one behind its migrations (or ahead of
    them), or one lacking a column of the models although its migration history says it is
    current (changed by hand): every message would fail to store."""
    from mailbot.tickets.schema_migrate import behind_error, read_state

    state = await read_state()
    error = behind_error(url, state)
    if error is not None:
        raise error
    missing = await missing_columns()
    if missing:
        raise ConfigError(
            f"database {redact(url)} lacks the columns {', '.join(missing)} although its"
            f" migration history says {state.level}: it was changed outside `mailbot migrate`;"
            " restore it from a backup, or add them as mailbot/tickets/migrations/ define them"
        )


async def run_daemon(settings: Settings, *, once: bool) -> RunReport | None:
    if settings.mailboxes_file is not None:
        return await _run_group(settings, once=once)
    policy = load_policy(settings.rules_path, settings.templates_dir)
    await open_database(settings.db_url)
    try:
        await require_schema(settings.db_url)
        daemon = Daemon(settings, policy, status_file=status_path(settings.state_dir))
        if once:
            try:
                return await daemon.run_once()
            finally:
                daemon.finish()
        await daemon.run()
        return None
    finally:
        await close_shared_workers()
        await close_database()


async def _run_group(settings: Settings, *, once: bool) -> RunReport | None:
    """``MAILBOT_MAILBOXES``: every mailbox in one daemon (mailbot.daemon_group)."""
    from mailbot.daemon_group import load_group

    group = load_group(settings)  # every mailbox's settings and rules, before the database
    await open_database(settings.db_url)
    try:
        await require_schema(settings.db_url)
        if once:
            return await group.run_once()
        await group.run()
        return None
    finally:
        await close_shared_workers()
        await close_database()
