"""Several mailboxes in one daemon (``MAILBOT_MAILBOXES``, see ``mailbot.mailboxes``).

Each mailbox is a :class:`~mailbot.daemon.Daemon` of its own (its poller, lease, rules with
hot reload, sender through its SMTP server, reminder and wiki sweeps of its tickets), all in
one event loop, one database and one process. This group does what belongs to the process:
signals (SIGTERM/SIGINT stop every mailbox, SIGHUP reloads every mailbox's rules), systemd's
READY (once every mailbox serves or stands by), WATCHDOG and STOPPING, one ``/metrics`` (shared
counters; a ``mailbox`` label where it matters) and one ``/healthz`` (healthy when every
mailbox is). One mailbox in trouble (its IMAP server down, its rules file broken on reload)
never stops the others: each retries on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from mailbot.clock import Clock, SystemClock
from mailbot.daemon import Daemon, RunReport
from mailbot.domain import Disposition
from mailbot.errors import ConfigError
from mailbot.mailboxes import MailboxEntry, load_mailboxes
from mailbot.metrics import Metrics
from mailbot.policy import Policy, load_policy
from mailbot.settings import Settings, load_settings
from mailbot.systemd_notify import notify, watchdog_seconds
from mailbot.web_endpoint import EndpointServer, start_endpoint

log = logging.getLogger(__name__)


def mailbox_settings(
    base: Settings, env: Mapping[str, str] | None = None
) -> list[tuple[MailboxEntry, Settings]]:
    """Each mailbox's settings: its entry's variables over the daemon's environment, with
    the daemon's database. A problem names the mailbox and where it is defined."""
    env = os.environ if env is None else env
    if base.mailboxes_file is None:
        raise ConfigError("MAILBOT_MAILBOXES is not set")
    clash = [v for v in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL") if env.get(v)]
    if clash:
        raise ConfigError(
            f"MAILBOT_MAILBOXES={base.mailboxes_file} and {' and '.join(clash)} are both set:"
            " with a mailboxes file, each mailbox's servers are named there"
        )
    found: list[tuple[MailboxEntry, Settings]] = []
    for entry in load_mailboxes(base.mailboxes_file):
        try:
            settings = load_settings(entry.environment(env), db_url=base.db_url)
            settings.require_servers()
        except ConfigError as exc:
            raise ConfigError(f"{entry.where}: mailbox {entry.name}: {exc}") from exc
        found.append((entry, settings))
    return found


def status_file_of(state_dir: Path, name: str) -> Path:
    return state_dir / f"status.{name}.json"


class DaemonGroup:
    def __init__(
        self,
        mailboxes: list[tuple[MailboxEntry, Settings, Policy]],
        clock: Clock | None = None,
    ) -> None:
        if not mailboxes:
            raise ConfigError("no mailboxes")
        self.clock = clock or SystemClock()
        self.metrics = Metrics(self.clock, ingested=self._ingested)
        self.daemons = [
            Daemon(
                settings,
                policy,
                self.clock,
                status_file=status_file_of(settings.state_dir, entry.name),
                name=entry.name,
                default=index == 0,
                metrics=self.metrics,
                standalone=False,
            )
            for index, (entry, settings, policy) in enumerate(mailboxes)
        ]
        self.stop = asyncio.Event()
        self.abandon_flush = asyncio.Event()
        for daemon in self.daemons:
            daemon.stop = self.stop  # one stop for all
            daemon.abandon_flush = self.abandon_flush
            daemon.on_announced = self._announced
        self.web: EndpointServer | None = None
        self._waiting = len(self.daemons)

    def _ingested(self) -> Mapping[Disposition, int]:
        total: Counter[Disposition] = Counter()
        for daemon in self.daemons:
            total.update(daemon.poller.stats)
        return total

    def _announced(self) -> None:
        """A mailbox serves, stands by or failed its first try; READY once every one has."""
        self._waiting -= 1
        if self._waiting == 0:
            failing = [
                d.name for d in self.daemons if d.poller.last_sync is None and d.standby is None
            ]
            names = ", ".join(d.name for d in self.daemons)
            status = f"STATUS=serving {len(self.daemons)} mailboxes: {names}"
            if failing:
                status += f"; failing: {', '.join(failing)} (see the log)"
                log.error("mailboxes failing at start: %s; the others serve", ", ".join(failing))
            notify("READY=1", status)

    def _request_stop(self) -> None:
        if self.stop.is_set():
            log.warning("second stop signal: not waiting for the outbox any more")
            self.abandon_flush.set()
            return
        notify("STOPPING=1", "STATUS=stopping")
        for daemon in self.daemons:
            daemon.start_stop_clock()
        self.stop.set()

    def _request_reload(self) -> None:
        for daemon in self.daemons:
            daemon.request_reload()

    async def _watchdog(self) -> None:
        interval = watchdog_seconds()
        if interval is None:
            return
        while not self.stop.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), interval)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        first, *others = self.daemons
        self.web = await start_endpoint(first, others)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        log.info(
            "mailbot running %d mailboxes: %s",
            len(self.daemons),
            ", ".join(f"{d.name} ({d.poller.label})" for d in self.daemons),
        )
        try:
            async with asyncio.TaskGroup() as group:
                for daemon in self.daemons:
                    group.create_task(daemon.run(), name=f"mailbox {daemon.name}")
                group.create_task(self._watchdog())
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            notify("STOPPING=1")
            if self.web is not None:
                await self.web.close()

    async def run_once(self) -> RunReport:
        """Each mailbox in turn: fetch, sweep, send."""
        total = RunReport()
        for daemon in self.daemons:
            try:
                report = await daemon.run_once()
            finally:
                daemon.finish()
            for disposition, count in report.ingested.items():
                total.ingested[disposition] = total.ingested.get(disposition, 0) + count
            total.sent += report.sent
        return total


def load_group(settings: Settings, clock: Clock | None = None) -> DaemonGroup:
    found = mailbox_settings(settings)
    with_policies = []
    for entry, mailbox in found:
        try:
            policy = load_policy(mailbox.rules_path, mailbox.templates_dir)
        except ConfigError as exc:
            raise ConfigError(f"{entry.where}: mailbox {entry.name}: {exc}") from exc
        with_policies.append((entry, mailbox, policy))
    return DaemonGroup(with_policies, clock)
