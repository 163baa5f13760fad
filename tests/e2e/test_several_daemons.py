"""Several daemons on one database and one mailbox (PostgreSQL in CI's second run, a SQLite
file otherwise): only the lease holder fetches, nothing is done twice, and when the holder
freezes or dies another daemon takes over within the lease time.

The daemons are real processes (``python -m mailbot.cli run``). On PostgreSQL the test freezes
the holder with SIGSTOP (alive but silent: the lease must expire) and later kills one with
SIGKILL (same host, pid gone: taken over at once). On SQLite only the kill: a process frozen
inside a write transaction keeps SQLite's lock, which no lease can take from it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from mailbot.devservers.smtp_sink import SmtpSink
from mailbot.tickets.models import Direction, Message, OutboxRow, OutboxStatus, Ticket
from tests.e2e.conftest import REPO, RULES
from tests.e2e.test_spine import append, mail
from tests.servers import ImapTestServer

LEASE = 2.0  # seconds; renewed every LEASE / 3


class Daemon:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def wait_for(self, needle: str, within: float = 30.0) -> float:
        """Seconds until ``needle`` appears in the log (counted from the call)."""
        start = time.monotonic()
        while needle not in self.text():
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() - start > within:
                raise AssertionError(f"{self.name} never logged {needle!r}:\n{self.text()}")
            await asyncio.sleep(0.02)
        return time.monotonic() - start


async def _spawn(name: str, env: dict[str, str], tmp_path: Path) -> Daemon:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailbot.cli",
            "run",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return Daemon(name, proc, log)


async def _outbox_idle(within: float = 30.0) -> None:
    start = time.monotonic()
    while await OutboxRow.exclude(status=OutboxStatus.SENT).count():
        assert time.monotonic() - start < within, await OutboxRow.all().values()
        await asyncio.sleep(0.05)


def _customers(start: int, count: int) -> list[bytes]:
    return [
        mail(f"Customer {n} <c{n}@shop{n}.test>", f"Order {n} is stuck", "Please help.")[1]
        for n in range(start, start + count)
    ]


async def test_one_fetcher_and_takeover_within_the_lease(
    imap_server: ImapTestServer, smtp_sink: SmtpSink, database: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        {
            "MAILBOT_IMAP_URL": (
                f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX"
            ),
            "MAILBOT_IMAP_PASSWORD": imap_server.password,
            "MAILBOT_SMTP_URL": smtp_sink.url,
            "MAILBOT_DB_URL": database,
            "MAILBOT_RULES": str(rules),
            "MAILBOT_TEMPLATES": str(REPO / "templates"),
            "MAILBOT_STATE_DIR": str(tmp_path / "state"),
            "MAILBOT_SECRET": "e2e-test-token-key-0123456789",
            "MAILBOT_LEASE_SECONDS": str(LEASE),
            "MAILBOT_IDLE_SECONDS": "1",
            "MAILBOT_POLL_SECONDS": "1",
        }
    )
    first = await _spawn("first", env, tmp_path)
    daemons = [first]
    try:
        await first.wait_for("fetches it now")
        second = await _spawn("second", env, tmp_path)
        daemons.append(second)
        await second.wait_for("standing by")

        # 1. Both run; only the holder fetches.
        await append(imap_server, *_customers(0, 10))
        await smtp_sink.wait_for(10, timeout=30)
        assert "fetches it now" not in second.text()

        if database.startswith("sqlite"):
            # SQLite's write lock lives in the writing process: one frozen mid-transaction
            # (SIGSTOP) holds it, and every other process waits. So on SQLite only a dead
            # holder is replaced; freezing is PostgreSQL's part below.
            await _outbox_idle()
            first.proc.kill()
            await first.proc.wait()
            killed = time.monotonic()
            await second.wait_for("fetches it now", within=LEASE + 5)
            assert time.monotonic() - killed < LEASE + 5
            assert "taken over from" in second.text()
            await append(imap_server, *_customers(10, 5))
            await smtp_sink.wait_for(15, timeout=30)
            survivor, total = second, 15
        else:
            # 2. The holder freezes (alive, silent): the other takes over once the lease
            # lapses (renewals are single autocommitted statements: nothing of the lease
            # stays locked by the frozen process).
            first.proc.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await second.wait_for("fetches it now", within=LEASE * 5)
            took = time.monotonic() - frozen
            assert took < LEASE + LEASE / 3 + 4.0, took
            await append(imap_server, *_customers(10, 5))
            await smtp_sink.wait_for(15, timeout=30)

            # 3. It wakes up, finds its lease gone and stops fetching; nothing twice.
            first.proc.send_signal(signal.SIGCONT)
            await first.wait_for("fetching stops", within=LEASE * 5)
            await append(imap_server, *_customers(15, 5))
            await smtp_sink.wait_for(20, timeout=30)

            # 4. The holder dies: the survivor, on the same host, takes over at once.
            # (Killed when idle: a kill between the SMTP server's 250 and the commit leaves
            # a row in "sending", the at-least-once window that bench/chaos.py measures.)
            await _outbox_idle()
            before = first.text().count("fetches it now")
            second.proc.kill()
            await second.proc.wait()
            killed = time.monotonic()
            while first.text().count("fetches it now") == before:
                assert time.monotonic() - killed < LEASE + 5, first.text()
                await asyncio.sleep(0.02)
            assert "taken over from" in first.text()
            await append(imap_server, *_customers(20, 5))
            await smtp_sink.wait_for(25, timeout=30)
            survivor, total = first, 25

        survivor.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.proc.wait(), 30) == 0
    finally:
        for daemon in daemons:
            if daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGCONT)
                daemon.proc.kill()
                await daemon.proc.wait()

    # Every message stored once, one ticket each, one acknowledgement each.
    inbound = await Message.filter(direction=Direction.IN).values_list("message_id", flat=True)
    assert len(inbound) == total and len(set(inbound)) == total
    assert await Ticket.all().count() == total
    unsent = await OutboxRow.exclude(status=OutboxStatus.SENT).values_list(
        "id", "status", "rcpt_to", "kind", "attempts", "last_error"
    )
    assert unsent == [], unsent
    acks = Counter(m.rcpt_tos for m in smtp_sink.messages)
    assert len(acks) == total and set(acks.values()) == {1}, acks
