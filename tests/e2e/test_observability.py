"""The running daemon's /metrics and /healthz on real servers: mail in over IMAP, answers out
over SMTP, the IMAP link cut under it, a broken rules.yaml reloaded by SIGHUP — each seen in
the figures a scrape returns."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailbot.daemon import Daemon
from mailbot.policy import Policy
from tests.e2e.conftest import RULES, make_settings
from tests.e2e.test_reload import ANNA_PRO, write_atomically
from tests.e2e.test_spine import append, mail
from tests.integration.test_metrics_endpoint import get, scrape, value
from tests.servers.proxy import cuttable_proxy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_until(port: int, done: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``done`` holds (the daemon works on its own schedule), at most 30 s."""
    samples: Samples = {}
    try:
        async with asyncio.timeout(30):
            while True:
                samples = await scrape(port)
                if done(samples):
                    return samples
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never saw {what}; last scrape: {samples}") from None


async def test_metrics_of_a_running_daemon(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    async with cuttable_proxy(imap_server.host, imap_server.port) as proxy:
        settings = make_settings(
            imap_server, smtp_sink, rules_file, database, MAILBOT_HTTP_LISTEN="127.0.0.1:0"
        )
        assert settings.imap is not None and settings.http_listen == ("127.0.0.1", 0)
        settings = dataclasses.replace(
            settings, imap=dataclasses.replace(settings.imap, port=proxy.port)
        )
        daemon = Daemon(settings, policy)
        daemon.reload_poll_seconds = 3600.0  # here only the signal reloads
        running = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            assert daemon.web is not None
            port = daemon.web.port
            mailbox = daemon.poller.label

            health = await get(port, "/healthz")
            assert health.status == 200, health.body
            assert health.json()["rules_version"] == policy.version

            # Three new requests: stored, answered, sent.
            await append(
                imap_server,
                mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")[1],
                mail("Mario <mario@negozio.it>", "Carrello", "Il carrello non funziona.")[1],
                mail("Eve <eve@example.org>", "Invoice", "My invoice is wrong, please fix it.")[1],
            )
            await smtp_sink.wait_for(3, timeout=30)
            samples = await scrape_until(
                port,
                lambda s: value(s, "mailbot_mail_sent_total", kind="ack") == 3,
                "3 acknowledgements sent",
            )
            assert value(samples, "mailbot_messages_ingested_total", outcome="stored") == 3
            assert value(samples, "mailbot_messages_ingested_total", outcome="duplicate") == 0
            assert value(samples, "mailbot_messages_ingested_total", outcome="quarantined") == 0
            assert value(samples, "mailbot_ingest_latency_seconds_count") == 3
            assert 0 < value(samples, "mailbot_ingest_latency_seconds_sum") < 30
            assert value(samples, "mailbot_ingest_latency_seconds_bucket", le="+Inf") == 3
            assert value(samples, "mailbot_outbox_rows", status="queued") == 0
            assert value(samples, "mailbot_outbox_oldest_queued_age_seconds") == 0
            assert value(samples, "mailbot_tickets_open", status="new") == 3
            assert value(samples, "mailbot_imap_reconnects_total", mailbox=mailbox) == 0
            last_sync = (await get(port, "/healthz")).json()["last_imap_sync"]
            assert last_sync is not None

            # The IMAP connection dies under the daemon: it reconnects, and the counter says so.
            assert proxy.cut() >= 1
            samples = await scrape_until(
                port,
                lambda s: value(s, "mailbot_imap_reconnects_total", mailbox=mailbox) >= 1,
                "an IMAP reconnect",
            )
            assert proxy.connections >= 2
            reconnects = value(samples, "mailbot_imap_reconnects_total", mailbox=mailbox)
            assert reconnects == proxy.connections - 1 == daemon.poller.opened - 1
            await append(imap_server, mail("Anna <anna@butiken.se>", "Kvitto", "Inget kvitto.")[1])
            samples = await scrape_until(
                port,
                lambda s: value(s, "mailbot_messages_ingested_total", outcome="stored") == 4,
                "the message after the reconnect",
            )
            assert value(samples, "mailbot_ingest_latency_seconds_count") == 4

            # A broken rules.yaml: the reload fails, the old rules stay.
            write_atomically(
                rules_file, RULES.replace(ANNA_PRO, "{match: anna@butiken.se, plan: prp,")
            )
            os.kill(os.getpid(), signal.SIGHUP)  # what `systemctl reload` does
            samples = await scrape_until(
                port,
                lambda s: value(s, "mailbot_rules_reloads_total", result="failed") == 1,
                "a failed reload",
            )
            assert value(samples, "mailbot_rules_reloads_total", result="ok") == 0
            health = await get(port, "/healthz")
            assert health.status == 200
            assert health.json()["rules_version"] == policy.version

            # A good file again: that reload counts as ok.
            write_atomically(rules_file, RULES)
            os.kill(os.getpid(), signal.SIGHUP)
            samples = await scrape_until(
                port,
                lambda s: value(s, "mailbot_rules_reloads_total", result="ok") == 1,
                "a good reload",
            )
            assert value(samples, "mailbot_rules_reloads_total", result="failed") == 1
        finally:
            daemon.stop.set()
            await asyncio.wait_for(running, 30)
    # Stopped: the endpoint is closed with the daemon.
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        pass
    else:
        writer.close()
        raise AssertionError("the endpoint still listens after the daemon stopped")
