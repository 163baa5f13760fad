"""Graceful stop: SIGTERM stops fetching after the batch in hand, flushes the outbox within
``MAILBOT_STOP_TIMEOUT`` and returns normally (exit 0); what does not fit stays queued and
goes out at the next start, never twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from mailbot.daemon import Daemon
from mailbot.endpoints import parse_endpoint
from mailbot.mailbox.imap import ImapSession
from mailbot.policy import Policy
from mailbot.settings import DONE_KEYWORD
from mailbot.tickets.models import Message, OutboxRow, OutboxStatus
from tests.e2e.conftest import make_settings
from tests.e2e.test_spine import append, mail


def _customers(count: int) -> list[bytes]:
    return [
        mail(f"Customer {n} <customer{n}@shop{n}.test>", f"Order {n} is stuck", "Please help.")[1]
        for n in range(count)
    ]


async def _unacknowledged(imap_server: Any) -> int:
    endpoint = parse_endpoint(
        f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX",
        protocol="imap",
        password=imap_server.password,
    )
    async with await ImapSession.open(endpoint) as session:
        return len(await session.search(f"UNKEYWORD {DONE_KEYWORD}"))


async def test_sigterm_flushes_the_outbox_and_returns(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    smtp_sink.data_delay = 0.3  # a slow server: most acks are still queued at SIGTERM
    await append(imap_server, *_customers(6))
    daemon = Daemon(make_settings(imap_server, smtp_sink, rules_file, database), policy)
    task = asyncio.create_task(daemon.run())
    try:
        await smtp_sink.wait_for(1, timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)  # systemctl stop
        await asyncio.wait_for(task, timeout=30)
    finally:
        daemon.stop.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=30)
    assert task.exception() is None
    assert len(smtp_sink.messages) == 6
    assert await OutboxRow.filter(status=OutboxStatus.SENT).count() == 6
    assert await OutboxRow.exclude(status=OutboxStatus.SENT).count() == 0
    assert await _unacknowledged(imap_server) == 0


async def test_stop_timeout_leaves_the_rest_queued_for_the_next_start(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    smtp_sink.data_delay = 0.8
    await append(imap_server, *_customers(6))
    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_STOP_TIMEOUT="1")
    daemon = Daemon(settings, policy)
    task = asyncio.create_task(daemon.run())
    try:
        await smtp_sink.wait_for(1, timeout=30)
        started = time.monotonic()
        daemon._request_stop()
        await asyncio.wait_for(task, timeout=30)
        took = time.monotonic() - started
    finally:
        daemon.stop.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=30)
    assert task.exception() is None
    # The timeout is checked between mails: at most the one in flight runs over it.
    assert took < 1.0 + 0.8 + 1.5, took
    sent_before = len(smtp_sink.messages)
    assert 1 <= sent_before < 6
    # Nothing is left half-claimed: the rest is queued, not "sending".
    assert await OutboxRow.filter(status=OutboxStatus.SENDING).count() == 0
    assert await OutboxRow.filter(status=OutboxStatus.QUEUED).count() == 6 - sent_before

    smtp_sink.data_delay = 0.0
    report = await Daemon(settings, policy).run_once()
    assert report.sent == 6 - sent_before
    recipients = [m.rcpt_tos for m in smtp_sink.messages]
    assert len(recipients) == 6 and len(set(recipients)) == 6  # each customer once


async def test_stop_during_a_sync_finishes_the_batch_in_hand_only(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    await append(imap_server, *_customers(10))
    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_BATCH="2")
    daemon = Daemon(settings, policy)
    stored_hook = daemon.poller.on_stored

    def stored_then_stop() -> None:  # SIGTERM arriving while the first batch commits
        stored_hook()
        if not daemon.stop.is_set():
            daemon._request_stop()

    daemon.poller.on_stored = stored_then_stop
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(task, timeout=30)
    finally:
        daemon.stop.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=30)
    assert task.exception() is None
    assert await Message.filter(direction="in").count() == 2  # the batch in hand, no more
    assert len(smtp_sink.messages) == 2  # and its answers were flushed
    assert await _unacknowledged(imap_server) == 8  # the rest wait on the server

    report = await Daemon(settings, policy).run_once()
    assert sum(report.ingested.values()) == 8
    assert len(smtp_sink.messages) == 10
