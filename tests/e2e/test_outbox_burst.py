"""A burst larger than one drain's page (100 due rows) goes out at once: the sender loop goes
on while a drain sent something, instead of leaving the rest to the 30 s outbox sweep."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import mailbot.daemon
from mailbot.daemon import Daemon
from mailbot.policy import Policy
from tests.e2e.conftest import make_settings
from tests.e2e.test_spine import append, mail

BURST = 130


async def test_a_burst_beyond_one_page_is_sent_without_waiting_for_the_sweep(
    imap_server: Any,
    smtp_sink: Any,
    rules_file: Path,
    policy: Policy,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mailbot.daemon, "SWEEP_SECONDS", 3600.0)  # no safety sweep to help
    raws = [mail(f"C{n} <c{n}@burst{n}.test>", f"Order {n}", "Stuck.")[1] for n in range(BURST)]
    await append(imap_server, *raws)
    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_BATCH=str(BURST))
    daemon = Daemon(settings, policy)
    task = asyncio.create_task(daemon.run())
    try:
        await smtp_sink.wait_for(BURST, timeout=90)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 30)
    assert len({m.rcpt_tos for m in smtp_sink.messages}) == BURST
