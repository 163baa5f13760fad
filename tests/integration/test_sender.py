"""The outbox sender against a real aiosmtpd server: TLS, auth, retries, failures, claims."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mailbot.clock import FixedClock
from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.domain import Address
from mailbot.endpoints import Security, parse_endpoint
from mailbot.outbound.compose import compose, loop_marker
from mailbot.outbound.sender import OutboxSender, RetryPolicy, SmtpTransport
from mailbot.tickets.models import OutboxRow, OutboxStatus, Ticket
from mailbot.tickets.service import queue_outgoing

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def queue(rcpt: str, clock: FixedClock, n: int = 0, ticket_id: int | None = None) -> int:
    out = compose(
        sender=Address("support@example.com", "Support"),
        to=Address(rcpt),
        subject=f"Re: test {n} [#1]",
        text="Hello\n",
        html=None,
        message_id=f"<m{n}.{rcpt}@example.com>",
        date=clock.now(),
        in_reply_to=None,
        references=(),
        marker=loop_marker("support@example.com"),
        ticket_ref="#1",
        language="en",
    )
    return await queue_outgoing(None, ticket_id=ticket_id, kind="ack", out=out, now=clock.now())


def sender_for(sink: SmtpSink, clock: FixedClock, url: str | None = None) -> OutboxSender:
    if url is None:
        endpoint = sink.endpoint()
    else:
        endpoint = parse_endpoint(url, protocol="smtp", verify_tls=False)
    retry = RetryPolicy(base=timedelta(minutes=1), cap=timedelta(minutes=30))
    return OutboxSender(SmtpTransport(endpoint, timeout=10), clock, retry=retry)


async def test_sends_over_required_starttls_with_login(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink(security=Security.STARTTLS, credentials=("bot", "s3cret")) as sink:
        for n in range(3):
            await queue(f"customer{n}@shop.example", clock, n)
        url = f"smtp://bot:s3cret@{sink.host}:{sink.port}"
        sent = await sender_for(sink, clock, url).run_once()
        assert sent == 3
        assert [m.tls for m in sink.messages] == [True, True, True]
        assert {m.auth_user for m in sink.messages} == {"bot"}
        assert [m.rcpt_tos for m in sink.messages] == [
            (f"customer{n}@shop.example",) for n in range(3)
        ]
    rows = await OutboxRow.all()
    assert {r.status for r in rows} == {OutboxStatus.SENT}
    assert all(r.sent_at == T0 and r.attempts == 1 for r in rows)


async def test_starttls_is_never_downgraded_to_plain_text(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink(security=Security.PLAIN) as sink:
        await queue("anna@shop.example", clock)
        sender = sender_for(sink, clock, f"smtp://{sink.host}:{sink.port}")
        assert await sender.run_once() == 0
        assert sink.messages == []
    row = await OutboxRow.get()
    # The mail is not at fault: it waits (and fails only after give_up_after).
    assert row.status is OutboxStatus.QUEUED and row.attempts == 1
    assert row.last_error is not None and "STARTTLS" in row.last_error.upper()


async def test_temporary_refusal_is_retried_with_backoff(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        await queue("tempfail@shop.example", clock)
        sender = sender_for(sink, clock)
        assert await sender.run_once() == 0
        row = await OutboxRow.get()
        assert row.status is OutboxStatus.QUEUED and row.attempts == 1
        assert row.last_error is not None and "451" in row.last_error
        first_retry = row.next_attempt_at
        assert timedelta(seconds=40) <= first_retry - T0 <= timedelta(seconds=80)
        assert await sender.run_once() == 0  # not due yet: nothing is tried
        assert (await OutboxRow.get()).attempts == 1
        clock.set(first_retry)
        await sender.run_once()
        row = await OutboxRow.get()
        assert row.attempts == 2 and row.next_attempt_at - first_retry >= timedelta(seconds=90)


async def test_data_refusal_then_success(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        await queue("anna@shop.example", clock)
        sink.fail_next_data(1, 451)
        sender = sender_for(sink, clock)
        assert await sender.run_once() == 0
        clock.set(T0 + timedelta(hours=1))
        assert await sender.run_once() == 1
        assert len(sink.messages) == 1
    row = await OutboxRow.get()
    assert row.status is OutboxStatus.SENT and row.attempts == 2


async def test_permanent_refusal_fails_the_row_with_the_reason(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        await queue("reject@shop.example", clock)
        await queue("anna@shop.example", clock, 1)
        assert await sender_for(sink, clock).run_once() == 1
        assert [m.rcpt_tos for m in sink.messages] == [("anna@shop.example",)]
    failed = await OutboxRow.get(rcpt_to="reject@shop.example")
    assert failed.status is OutboxStatus.FAILED
    assert failed.last_error is not None and "550" in failed.last_error


async def test_gives_up_after_the_configured_age(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        await queue("tempfail@shop.example", clock)
        clock.set(T0 + timedelta(days=4))
        await sender_for(sink, clock).run_once()
    row = await OutboxRow.get()
    assert row.status is OutboxStatus.FAILED
    assert row.last_error is not None and row.last_error.startswith("gave up after")


async def test_rows_left_sending_by_a_crash_are_requeued_and_sent(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        row_id = await queue("anna@shop.example", clock)
        await OutboxRow.filter(id=row_id).update(
            status=OutboxStatus.SENDING, claimed_at=T0 - timedelta(hours=1)
        )
        assert await sender_for(sink, clock).run_once() == 1
        assert len(sink.messages) == 1


async def test_two_senders_never_send_a_row_twice(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        for n in range(20):
            await queue(f"c{n}@shop.example", clock, n)
        first, second = sender_for(sink, clock), sender_for(sink, clock)
        counts = await asyncio.gather(first.run_once(), second.run_once())
        assert sum(counts) == 20
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
            f"c{n}@shop.example" for n in range(20)
        )


async def test_rows_claimed_by_a_drain_cut_short_go_back_to_the_queue(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        ids = [await queue(f"c{n}@shop.example", clock, n) for n in range(6)]
        sink.fail_next_data(1, code=421)  # 421: the server closes the connection
        assert await sender_for(sink, clock).run_once() == 0
        rows = {r.id: r for r in await OutboxRow.filter(id__in=ids)}
        # The first was tried and waits for its retry; the rest were claimed with it in one
        # chunk and never tried: queued and due now, not left "sending" for ten minutes.
        assert rows[ids[0]].status is OutboxStatus.QUEUED and rows[ids[0]].attempts == 1
        assert all(rows[i].status is OutboxStatus.QUEUED and rows[i].attempts == 0 for i in ids[1:])
        assert await sender_for(sink, clock).run_once() == 5
        assert [m.rcpt_tos[0] for m in sink.messages] == [f"c{n}@shop.example" for n in range(1, 6)]


async def test_internationalised_address_is_sent_with_smtputf8(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        await queue("jdöe@mächine.example", clock)
        assert await sender_for(sink, clock).run_once() == 1
        assert sink.messages[0].rcpt_tos == ("jdöe@mächine.example",)
        assert "jdöe@mächine.example".encode() in sink.messages[0].raw


async def _ticket(customer: str) -> int:
    ticket = await Ticket.create(
        plan="core",
        customer=customer,
        language="en",
        subject="test",
        created_at=T0,
        updated_at=T0,
    )
    return ticket.id


def _subjects(sink: SmtpSink, rcpt: str) -> list[str]:
    found = []
    for message in sink.messages:
        if message.rcpt_tos == (rcpt,):
            head = message.raw.split(b"\r\n\r\n", 1)[0].decode()
            found += [line[9:] for line in head.split("\r\n") if line.startswith("Subject: ")]
    return found


async def test_a_deferred_mail_holds_back_the_later_ones_of_its_conversation(
    database: str,
) -> None:
    clock = FixedClock(T0)
    ticket = await _ticket("anna@shop.example")
    async with running_smtp_sink() as sink:
        for n in range(3):
            await queue("anna@shop.example", clock, n, ticket_id=ticket)
        await queue("bo@shop.example", clock, 9, ticket_id=ticket)  # another conversation
        sink.fail_next_data(1, 451)
        sender = sender_for(sink, clock)
        assert await sender.run_once() == 1  # only bo's: anna's first waits, so do the rest
        assert _subjects(sink, "anna@shop.example") == []
        clock.set(T0 + timedelta(hours=1))
        assert await sender.run_once() == 3
        assert _subjects(sink, "anna@shop.example") == [
            "Re: test 0 [#1]",
            "Re: test 1 [#1]",
            "Re: test 2 [#1]",
        ]


async def test_an_hour_long_outage_delivers_everything_afterwards_in_order(
    database: str, unused_tcp_port: int
) -> None:
    clock = FixedClock(T0)
    tickets = [await _ticket(f"c{i}@shop.example") for i in range(3)]
    for n in range(4):
        for i, ticket in enumerate(tickets):
            await queue(f"c{i}@shop.example", clock, n, ticket_id=ticket)
    down = sender_for(
        SmtpSink(host="127.0.0.1", port=unused_tcp_port),
        clock,
        f"smtp+plain://127.0.0.1:{unused_tcp_port}",
    )
    tries = 0
    while clock.now() < T0 + timedelta(hours=1):
        assert await down.run_once() == 0
        tries += 1
        clock.set(clock.now() + timedelta(minutes=5))
    rows = await OutboxRow.all().order_by("id")
    assert all(r.status is OutboxStatus.QUEUED and r.attempts >= 1 for r in rows), tries
    # c0's first mail happens to be due last (jittered backoff can do that): its later
    # mails, though due, must not overtake it.
    recovered = T0 + timedelta(hours=3)
    await OutboxRow.filter(rcpt_to="c0@shop.example").update(next_attempt_at=recovered)
    first_of_c0 = min(r.id for r in rows if r.rcpt_to == "c0@shop.example")
    await OutboxRow.filter(id=first_of_c0).update(next_attempt_at=recovered + timedelta(minutes=10))
    await OutboxRow.filter(rcpt_to__in=["c1@shop.example", "c2@shop.example"]).update(
        next_attempt_at=recovered
    )
    clock.set(recovered)
    async with running_smtp_sink() as sink:
        sender = sender_for(sink, clock)
        assert await sender.run_once() == 8
        assert _subjects(sink, "c0@shop.example") == []
        clock.set(recovered + timedelta(minutes=10))
        assert await sender.run_once() == 4
        for i in range(3):
            assert _subjects(sink, f"c{i}@shop.example") == [f"Re: test {n} [#1]" for n in range(4)]


async def test_a_final_failure_is_reported(database: str) -> None:
    clock = FixedClock(T0)
    reports: list[tuple[int, str]] = []

    async def report(row: OutboxRow, reason: str) -> None:
        reports.append((row.id, reason))

    async with running_smtp_sink() as sink:
        row_id = await queue("reject@shop.example", clock)
        sender = OutboxSender(SmtpTransport(sink.endpoint(), timeout=10), clock, on_failed=report)
        await sender.run_once()
    assert len(reports) == 1 and reports[0][0] == row_id and "550" in reports[0][1]
