"""/metrics and /healthz over real loopback HTTP, against the test database (a SQLite file, or
PostgreSQL with MAILBOT_TEST_DB_URL) filled through the models, with an injected clock."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import SmtpSink
from mailbot.domain import TicketStatus
from mailbot.errors import ConfigError, ImapPermanentError
from mailbot.metrics import CONTENT_TYPE
from mailbot.policy import load_policy
from mailbot.settings import Settings, load_settings
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.database import close_database
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
from mailbot.web_endpoint import EndpointServer, Response, start_endpoint
from tests.e2e.conftest import REPO, RULES

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


async def http(port: int, request: bytes, *, eof: bool = False) -> Reply | None:
    """Send ``request`` as is (``eof``: then close our side), read until the server closes;
    None when it sent nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if eof:
            writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert status_line.startswith("HTTP/1.1 ")
    assert int(headers["content-length"]) == len(body)
    return Reply(int(status_line.split()[1]), headers, body)


async def get(port: int, path: str, method: str = "GET") -> Reply:
    reply = await http(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert reply is not None
    return reply


def figures(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, parsed back by prometheus_client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = await get(port, "/metrics")
    assert reply.status == 200 and reply.headers["content-type"] == CONTENT_TYPE
    return figures(reply.body)


def settings_for(
    tmp_path: Path, database: str, imap_url: str, smtp_url: str, **env: str
) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    base = {
        "MAILBOT_TEMPLATES": str(REPO / "templates"),
        "MAILBOT_SECRET": "metrics-test-token-key-0123456789",
        "MAILBOT_STATE_DIR": str(tmp_path / "state"),
        "MAILBOT_HTTP_LISTEN": "127.0.0.1:0",
        "MAILBOT_IMAP_PASSWORD": "pymap-secret",
    }
    base.update(env)
    return load_settings(
        base, imap_url=imap_url, smtp_url=smtp_url, db_url=database, rules=str(rules)
    )


def offline_daemon(tmp_path: Path, database: str, clock: FixedClock | None = None) -> Daemon:
    """A daemon that is never run: its servers are never contacted."""
    settings = settings_for(
        tmp_path, database, "imap+plain://support@127.0.0.1:9/INBOX", "smtp+plain://127.0.0.1:9"
    )
    return Daemon(settings, load_policy(settings.rules_path, settings.templates_dir), clock)


async def serving(daemon: Daemon) -> EndpointServer:
    server = await start_endpoint(daemon)
    assert server is not None and server.port > 0
    return server


async def fill(now: datetime) -> None:
    """Rows of every kind the metrics count, with known ages."""
    out = await Message.create(
        direction=Direction.OUT, content_hash="h", raw_bytes=b"", received_at=now
    )
    for age, status in [
        (120, OutboxStatus.QUEUED),
        (60, OutboxStatus.QUEUED),
        (5, OutboxStatus.QUEUED),
        (3600, OutboxStatus.SENT),
        (3000, OutboxStatus.SENT),
        (900, OutboxStatus.FAILED),
        (30, OutboxStatus.SENDING),
    ]:
        await OutboxRow.create(
            message=out,
            kind="ack",
            mail_from="support@example.com",
            rcpt_to="anna@butiken.se",
            status=status,
            next_attempt_at=now,
            created_at=now - timedelta(seconds=age),
        )

    async def ticket(status: TicketStatus) -> Ticket:
        return await Ticket.create(
            plan="pro",
            customer="anna@butiken.se",
            language="sv",
            subject="s",
            status=status,
            created_at=now - timedelta(days=1),
            updated_at=now,
        )

    overdue = await ticket(TicketStatus.OPEN)  # running past its deadline: breached
    await TicketClock.create(
        ticket=overdue,
        name="first_response",
        started_at=now - timedelta(days=1),
        due_at=now - timedelta(minutes=1),
    )
    await TicketClock.create(
        ticket=overdue,
        name="resolution",
        started_at=now - timedelta(days=1),
        status=ClockStatus.BREACHED,
        due_at=now - timedelta(hours=1),
        breached_at=now - timedelta(hours=1),
    )
    waiting = await ticket(TicketStatus.WAITING)  # stored as breached, then paused
    await TicketClock.create(
        ticket=waiting,
        name="resolution",
        started_at=now - timedelta(days=1),
        status=ClockStatus.PAUSED,
        breached_at=now - timedelta(hours=2),
    )
    in_time = await ticket(TicketStatus.NEW)
    await TicketClock.create(
        ticket=in_time, name="first_response", started_at=now, due_at=now + timedelta(hours=4)
    )
    await TicketClock.create(
        ticket=in_time,
        name="resolution",
        started_at=now,
        status=ClockStatus.MET,
        due_at=now + timedelta(hours=4),
    )
    await ticket(TicketStatus.NEW)
    closed = await ticket(TicketStatus.CLOSED)  # breached, but no longer open
    await TicketClock.create(
        ticket=closed,
        name="first_response",
        started_at=now - timedelta(days=1),
        status=ClockStatus.BREACHED,
        breached_at=now - timedelta(hours=3),
    )
    for kind, status, due in [
        ("percent:50", ReminderStatus.PENDING, now - timedelta(minutes=10)),
        ("percent:80", ReminderStatus.PENDING, now),
        ("breach", ReminderStatus.PENDING, now + timedelta(minutes=1)),
        ("before:30", ReminderStatus.SENT, now - timedelta(hours=1)),
        ("before:60", ReminderStatus.MISSED, now - timedelta(hours=2)),
        ("percent:90", ReminderStatus.SKIPPED, now - timedelta(hours=3)),
    ]:
        await Reminder.create(
            ticket=in_time,
            clock="first_response",
            kind=kind,
            recipient="a@x",
            due_at=due,
            status=status,
        )
    for state in (MessageState.QUARANTINED, MessageState.QUARANTINED, MessageState.RELEASED):
        await Message.create(
            direction=Direction.IN,
            state=state,
            content_hash=f"q{state}",
            raw_bytes=b"x",
            received_at=now,
        )


async def test_metrics_show_the_database_as_it_is(tmp_path: Path, database: str) -> None:
    clock = FixedClock(NOW)
    daemon = offline_daemon(tmp_path, database, clock)
    await fill(NOW)
    server = await serving(daemon)
    try:
        samples = await scrape(server.port)
        assert value(samples, "mailbot_database_up") == 1
        # Rows in play only: the sent rows and the decided reminders are history, read by
        # no scrape (this daemon counts what it sends and decides).
        outbox = {
            labels: n for (name, labels), n in samples.items() if name == "mailbot_outbox_rows"
        }
        assert outbox == {
            frozenset({("status", "queued")}): 3,
            frozenset({("status", "sending")}): 1,
            frozenset({("status", "failed")}): 1,
        }
        assert value(samples, "mailbot_outbox_oldest_queued_age_seconds") == 120
        reminders = {
            labels: n for (name, labels), n in samples.items() if name == "mailbot_reminders"
        }
        assert reminders == {
            frozenset({("status", "due")}): 2,
            frozenset({("status", "pending")}): 1,
        }
        tickets = {
            s: value(samples, "mailbot_tickets_open", status=s) for s in ("new", "open", "waiting")
        }
        assert tickets == {"new": 2, "open": 1, "waiting": 1}
        assert value(samples, "mailbot_sla_breached_tickets") == 2  # not the closed one
        assert value(samples, "mailbot_sla_breached_clocks", clock="first_response") == 1
        assert value(samples, "mailbot_sla_breached_clocks", clock="resolution") == 2
        assert value(samples, "mailbot_quarantined_messages") == 2  # not the released one
        # Counted by this daemon, which has done nothing yet: there, at zero.
        for outcome in ("stored", "duplicate", "quarantined"):
            assert value(samples, "mailbot_messages_ingested_total", outcome=outcome) == 0
        assert value(samples, "mailbot_ingest_latency_seconds_count") == 0
        assert value(samples, "mailbot_rules_reloads_total", result="failed") == 0
        for outcome in ("sent", "skipped", "missed"):
            assert value(samples, "mailbot_reminders_decided_total", outcome=outcome) == 0
        assert not [name for name, _ in samples if name == "mailbot_mail_sent_total"]
        label = daemon.poller.label
        assert value(samples, "mailbot_imap_reconnects_total", mailbox=label) == 0
        assert "pymap-secret" not in label

        # The clock moves on: ages and due reminders follow it; nothing is cached.
        clock.set(NOW + timedelta(minutes=2))
        await OutboxRow.filter(created_at=NOW - timedelta(seconds=120)).update(
            status=OutboxStatus.SENT
        )
        samples = await scrape(server.port)
        assert value(samples, "mailbot_outbox_oldest_queued_age_seconds") == 180  # the 60 s one
        assert value(samples, "mailbot_outbox_rows", status="queued") == 2
        assert value(samples, "mailbot_reminders", status="due") == 3
        assert value(samples, "mailbot_reminders", status="pending") == 0
    finally:
        await server.close()


async def test_mail_sent_and_reminders_decided_are_counted_by_the_daemon_that_did_it(
    tmp_path: Path, database: str, smtp_sink: SmtpSink
) -> None:
    settings = settings_for(
        tmp_path,
        database,
        "imap+plain://support@127.0.0.1:9/INBOX",
        f"smtp+plain://{smtp_sink.host}:{smtp_sink.port}",
    )
    policy = load_policy(settings.rules_path, settings.templates_dir)
    daemon = Daemon(settings, policy, FixedClock(NOW))
    await fill(NOW)
    server = await serving(daemon)
    try:
        sent = await daemon.sender.run_once()  # the three queued rows
        report = await daemon.reminders.run_once()  # the two due reminders
        samples = await scrape(server.port)
    finally:
        await server.close()
    assert sent == 3 == len(smtp_sink.messages)
    assert value(samples, "mailbot_mail_sent_total", kind="ack") == 3
    assert report.sent + report.skipped + report.missed == 2
    assert value(samples, "mailbot_reminders_decided_total", outcome="sent") == report.sent
    assert value(samples, "mailbot_reminders_decided_total", outcome="skipped") == report.skipped
    assert value(samples, "mailbot_reminders_decided_total", outcome="missed") == report.missed
    # What is left in play is what the scrape reads.
    assert value(samples, "mailbot_outbox_rows", status="queued") == report.sent
    assert value(samples, "mailbot_reminders", status="due") == 0
    assert value(samples, "mailbot_reminders", status="pending") == 1


async def test_an_empty_database_reports_zeros(tmp_path: Path, database: str) -> None:
    daemon = offline_daemon(tmp_path, database, FixedClock(NOW))
    server = await serving(daemon)
    try:
        samples = await scrape(server.port)
    finally:
        await server.close()
    assert value(samples, "mailbot_outbox_oldest_queued_age_seconds") == 0
    assert value(samples, "mailbot_outbox_rows", status="queued") == 0
    assert value(samples, "mailbot_sla_breached_tickets") == 0
    assert not [k for k in samples if k[0] == "mailbot_sla_breached_clocks"]


async def test_health_follows_the_sync_the_stop_and_the_database(
    tmp_path: Path, database: str, smtp_sink: SmtpSink
) -> None:
    async with running_pymap("support", "pymap-secret") as imap:
        settings = settings_for(
            tmp_path,
            database,
            f"imap+plain://support@{imap.host}:{imap.port}/INBOX",
            f"smtp+plain://{smtp_sink.host}:{smtp_sink.port}",
            MAILBOT_IDLE_SECONDS="30",
            MAILBOT_POLL_SECONDS="10",
        )
        daemon = Daemon(settings, load_policy(settings.rules_path, settings.templates_dir))
        server = await serving(daemon)
        try:
            before = await get(server.port, "/healthz")
            assert before.status == 200 and before.headers["content-type"] == "application/json"
            assert before.json()["last_imap_sync"] is None  # just started: fine so far

            await daemon.run_once()  # a real sync with the server
            ok = await get(server.port, "/healthz")
            assert ok.status == 200, ok.body
            report = ok.json()
            assert report["status"] == "ok" and report["problems"] == []
            assert report["database_reachable"] is True and report["stopping"] is False
            assert report["rules_version"] == daemon.policy.version
            assert report["last_imap_sync"] is not None
            assert 0 <= report["last_imap_sync_age_seconds"] < 30
            assert report["max_imap_sync_age_seconds"] == 3 * 30 + 60

            synced = daemon.poller.last_sync
            assert synced is not None
            daemon.poller.last_sync = synced - timedelta(seconds=151)  # 3 IDLE renewals + 60 s
            stale = await get(server.port, "/healthz")
            assert stale.status == 503
            assert stale.json()["problems"][0].startswith("the last IMAP sync was 15")
            daemon.poller.last_sync = synced

            daemon.stop.set()
            stopping = await get(server.port, "/healthz")
            assert stopping.status == 503
            assert stopping.json()["stopping"] is True
            assert stopping.json()["problems"] == ["stopping"]
            daemon.stop.clear()
            assert (await get(server.port, "/healthz")).status == 200

            await close_database()
            down = await get(server.port, "/healthz")
            assert down.status == 503
            assert down.json()["database_reachable"] is False
            assert down.json()["problems"][0].startswith("database: ")
            # /metrics still answers, without the database's figures.
            samples = await scrape(server.port)
            assert value(samples, "mailbot_database_up") == 0
            assert not [k for k in samples if k[0] == "mailbot_outbox_rows"]
            assert value(samples, "mailbot_messages_ingested_total", outcome="stored") == 0
        finally:
            await server.close()


async def test_health_reports_a_refused_login_at_once(
    tmp_path: Path, database: str, smtp_sink: SmtpSink
) -> None:
    """A refused login is not healed by waiting: /healthz says so at the first refusal, not
    after the sync-age limit (here 3 × 600 s + 60 s), and is healthy again after a good sync."""
    async with running_pymap("support", "pymap-secret") as imap:
        settings = settings_for(
            tmp_path,
            database,
            f"imap+plain://support@{imap.host}:{imap.port}/INBOX",
            f"smtp+plain://{smtp_sink.host}:{smtp_sink.port}",
            MAILBOT_IMAP_PASSWORD="a-rotated-password",
        )
        daemon = Daemon(settings, load_policy(settings.rules_path, settings.templates_dir))
        server = await serving(daemon)
        try:
            with pytest.raises(ImapPermanentError):
                await daemon.run_once()
            refused = await get(server.port, "/healthz")
            assert refused.status == 503, refused.body
            report = refused.json()
            assert len(report["problems"]) == 1
            assert report["problems"][0].startswith("IMAP refused: ImapPermanentError: ")
            assert report["last_imap_error_permanent"] is True
            assert "a-rotated-password" not in refused.body.decode()

            daemon.poller.endpoint = replace(daemon.poller.endpoint, password="pymap-secret")
            await daemon.run_once()
            healed = await get(server.port, "/healthz")
            assert healed.status == 200, healed.body
            assert healed.json()["problems"] == []
        finally:
            await server.close()


async def test_paths_methods_and_bad_requests(tmp_path: Path, database: str) -> None:
    server = await serving(offline_daemon(tmp_path, database))
    try:
        assert (await get(server.port, "/metrics?name[]=x")).status == 200  # a query is ignored
        missing = await get(server.port, "/")
        assert missing.status == 404 and missing.body == b"not found\n"
        assert (await get(server.port, "/metrics/")).status == 404
        assert (await get(server.port, "/healthz", method="DELETE")).status == 405
        posted = await http(
            server.port,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        assert posted is not None and posted.status == 405
        assert posted.headers["allow"] == "GET"
        bad = await http(server.port, b"GET /metrics\r\n\r\n")
        assert bad is not None and bad.status == 400
        # The client gave up half-way: nothing to answer, the connection is closed.
        assert await http(server.port, b"GET /metrics HTTP/1.1\r\n", eof=True) is None
    finally:
        await server.close()


async def test_an_oversized_or_slow_request_is_cut_off(tmp_path: Path, database: str) -> None:
    server = await serving(offline_daemon(tmp_path, database))
    server.read_timeout = 0.5
    try:
        huge = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 12_000 + b"\r\n\r\n"
        reply = await http(server.port, huge)
        assert reply is not None and reply.status == 431

        started = time.monotonic()
        slow = await http(server.port, b"GET /metrics HTTP/1.1\r\nHost: loc")  # never finished
        assert slow is not None and slow.status == 408
        silent = await http(server.port, b"")  # connects, sends nothing
        assert time.monotonic() - started < 5
        assert silent is not None and silent.status == 408

        # A client that stalls does not hold up another one.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert (await get(server.port, "/healthz")).status == 200
        finally:
            writer.close()
        del reader
    finally:
        await server.close()


async def test_close_drops_clients_in_progress(tmp_path: Path, database: str) -> None:
    server = await serving(offline_daemon(tmp_path, database))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # unfinished: the server is waiting on it
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # cut, no answer
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_a_taken_port_is_a_configuration_error_naming_the_address() -> None:
    async def hello() -> Response:
        return Response.text(200, "hi\n")

    first = EndpointServer({"/": hello})
    await first.start("127.0.0.1", 0)
    try:
        second = EndpointServer({"/": hello})
        with pytest.raises(ConfigError) as caught:
            await second.start("127.0.0.1", first.port)
        assert f"cannot listen on 127.0.0.1:{first.port}: " in str(caught.value)
        assert "in use" in str(caught.value).lower()
    finally:
        await first.close()


async def test_ipv6_loopback(tmp_path: Path, database: str) -> None:
    async def hello() -> Response:
        return Response.text(200, "hi\n")

    server = EndpointServer({"/": hello})
    try:
        await server.start("::1", 0)
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.address == f"[::1]:{server.port}"
        reader, writer = await asyncio.open_connection("::1", server.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nhi\n")
    finally:
        await server.close()


async def test_beyond_loopback_only_when_named_and_with_a_warning(
    tmp_path: Path, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = offline_daemon(tmp_path, database)
    caplog.set_level(logging.INFO, logger="mailbot.web_endpoint")
    server = await serving(daemon)  # 127.0.0.1:0
    await server.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    settings = settings_for(
        tmp_path,
        database,
        "imap+plain://support@127.0.0.1:9/INBOX",
        "smtp+plain://127.0.0.1:9",
        MAILBOT_HTTP_LISTEN="0.0.0.0:0",
    )
    exposed = Daemon(settings, daemon.policy)
    server = await serving(exposed)
    try:
        assert (await get(server.port, "/healthz")).status == 200  # reached over 127.0.0.1
    finally:
        await server.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "metrics and health are exposed beyond loopback on"
        f" http://0.0.0.0:{server.port} (MAILBOT_HTTP_LISTEN)"
    ]

    quiet = Daemon(
        settings_for(
            tmp_path,
            database,
            "imap+plain://support@127.0.0.1:9/INBOX",
            "smtp+plain://127.0.0.1:9",
            MAILBOT_HTTP_LISTEN="off",
        ),
        daemon.policy,
    )
    assert await start_endpoint(quiet) is None
