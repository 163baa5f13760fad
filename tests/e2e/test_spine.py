"""The whole path on real servers: APPEND over IMAP -> tickets in SQLite -> mail at the SMTP server.

Runs against every IMAP server the ``imap_server`` fixture offers (pymap always, Dovecot when
installed; in CI Dovecot is mandatory).
"""

from __future__ import annotations

import asyncio
import dataclasses
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from mailbot.clock import SystemClock
from mailbot.daemon import Daemon
from mailbot.domain import Disposition, TicketStatus
from mailbot.endpoints import parse_endpoint
from mailbot.ingest.parse_workers import close_shared_workers
from mailbot.mailbox.imap import ImapSession, append_messages
from mailbot.outbound.compose import loop_marker
from mailbot.policy import Policy
from mailbot.settings import DONE_KEYWORD
from mailbot.tickets.models import MailboxState, MessageState, OutboxRow, OutboxStatus, Ticket
from mailbot.tickets.models import Message as MessageRow
from mailbot.tickets.queries import list_tickets
from mailbot.tickets.service import Origin, ensure_mailbox_state
from tests.e2e.conftest import make_settings
from tests.servers.proxy import cuttable_proxy


def mail(
    sender: str,
    subject: str,
    body: str,
    *,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(SystemClock().now())
    msg_id = make_msgid(domain="customer.test")
    msg["Message-ID"] = msg_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg_id, msg.as_bytes()


async def append(imap_server: Any, *raws: bytes) -> None:
    endpoint = parse_endpoint(
        f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX",
        protocol="imap",
        password=imap_server.password,
    )
    await append_messages(endpoint, raws)


def received(sink: Any) -> list[Message]:
    return [message_from_bytes(m.raw, policy=policy.default) for m in sink.messages]


async def test_new_mail_becomes_tickets_and_answers_are_threaded(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    anna_id, anna = mail(
        "Anna Lindqvist <anna@butiken.se>",
        "Kassan visar fel vid betalning",
        "Hej! Kassan ger ett felmeddelande när kunderna betalar. Kan ni titta på det?",
    )
    john_id, john = mail(
        "John Carter <john@example.org>",
        "How do I reset my password?",
        "Hi, how do I reset the password of my admin login? I cannot find it.",
    )
    ooo_id, ooo = mail(
        "Bob <bob@example.org>",
        "Out of office",
        "I am away until Monday.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    await append(imap_server, anna, john, ooo)

    daemon = Daemon(settings, policy)
    report = await daemon.run_once()

    assert report.ingested[Disposition.STORED] == 3
    assert report.sent == 2
    tickets = {t.customer: t for t in await list_tickets("")}
    assert set(tickets) == {"anna@butiken.se", "john@example.org"}  # no ticket for the OOO
    anna_ticket, john_ticket = tickets["anna@butiken.se"], tickets["john@example.org"]
    assert (anna_ticket.plan, anna_ticket.language) == ("pro", "sv")
    assert (john_ticket.plan, john_ticket.language) == ("core", "en")
    assert anna_ticket.deadline is not None
    # John got a wiki redirect: his ticket waits on him, its clocks paused (no deadline).
    assert (john_ticket.status, john_ticket.deadline) == ("waiting", None)
    ooo_row = await MessageRow.get(message_id=ooo_id)
    assert ooo_row.ticket_id is None and ooo_row.auto_generated  # type: ignore[attr-defined]
    assert ooo_row.raw_bytes == ooo

    by_rcpt = {str(m["To"].addresses[0].addr_spec): m for m in received(smtp_sink)}
    assert set(by_rcpt) == {"anna@butiken.se", "john@example.org"}
    ack = by_rcpt["anna@butiken.se"]
    assert ack["In-Reply-To"] == anna_id
    assert anna_id in str(ack["References"])
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Mailbot-Loop"] == loop_marker("support@example.com")
    assert f"[#{anna_ticket.id}]" in str(ack["Subject"])
    assert ack["From"].addresses[0].addr_spec == "support@example.com"
    assert ack["Message-ID"] in anna_ticket.message_ids
    ack_body = ack.get_body(preferencelist=("plain",))
    assert ack_body is not None and f"#{anna_ticket.id}" in ack_body.get_content()
    wiki = by_rcpt["john@example.org"]
    wiki_body = wiki.get_body(preferencelist=("plain",))
    assert wiki_body is not None
    assert "https://wiki.example.com/password" in wiki_body.get_content()
    assert wiki["In-Reply-To"] == john_id

    # The customer answers our acknowledgement: same ticket, no second acknowledgement.
    follow_id, follow = mail(
        "Anna Lindqvist <anna@butiken.se>",
        "SV: " + str(ack["Subject"]),
        "Felet kommer bara i Firefox.\n\n> quoted text from the acknowledgement\n",
        in_reply_to=str(ack["Message-ID"]),
    )
    # Our own acknowledgement delivered back into the support mailbox is not a new ticket.
    await append(imap_server, follow, smtp_sink.messages[0].raw)
    report = await daemon.run_once()
    assert report.sent == 0
    assert report.ingested[Disposition.DUPLICATE] == 1  # the looped-back acknowledgement
    assert len(smtp_sink.messages) == 2
    updated = {t.customer: t for t in await list_tickets("")}
    assert len(updated) == 2
    assert follow_id in updated["anna@butiken.se"].message_ids
    follow_row = await MessageRow.get(message_id=follow_id)
    assert "Firefox" in follow_row.text and "quoted text" not in follow_row.text

    # Nothing new: a restarted daemon on the same database does nothing twice.
    again = await Daemon(settings, policy).run_once()
    assert sum(again.ingested.values()) == 0 and again.sent == 0
    assert await MessageRow.filter(direction="in").count() == 4
    assert await OutboxRow.filter(status=OutboxStatus.SENT).count() == 2


async def test_messages_are_acknowledged_on_the_server_only_after_commit(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    _, first = mail("Anna <anna@butiken.se>", "Help", "Something is broken in the cart.")
    await append(imap_server, first)
    await Daemon(settings, policy).run_once()
    endpoint = settings.imap
    assert endpoint is not None
    session = await ImapSession.open(endpoint)
    try:
        done = await session.search(f"KEYWORD {DONE_KEYWORD}")
        unseen = await session.search("UNSEEN")
    finally:
        await session.close()
    assert len(done) == 1 and unseen == []


async def test_move_ack_mode_moves_processed_mail(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(
        imap_server, smtp_sink, rules_file, database, MAILBOT_ACK="move:Processed"
    )
    _, first = mail("Anna <anna@butiken.se>", "Help", "Something is broken in the cart.")
    _, second = mail("Mario <mario@negozio.it>", "Aiuto", "Il carrello non funziona più.")
    await append(imap_server, first, second)
    report = await Daemon(settings, policy).run_once()
    assert report.ingested[Disposition.STORED] == 2
    assert settings.imap is not None
    session = await ImapSession.open(settings.imap)
    try:
        assert await session.search("ALL") == []
    finally:
        await session.close()
    moved = await ImapSession.open(
        parse_endpoint(
            f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/Processed",
            protocol="imap",
            password=imap_server.password,
        )
    )
    try:
        assert len(await moved.search("ALL")) == 2
    finally:
        await moved.close()


async def test_stranger_quoting_a_token_gets_a_new_linked_ticket(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    daemon = Daemon(settings, policy)
    _, first = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
    await append(imap_server, first)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna@butiken.se")
    _, stranger = mail("Mallory <mallory@evil.test>", f"Re: Kassan [#{ticket.id}]", "Add me.")
    _, owner = mail("Anna <anna@butiken.se>", f"Re: Kassan [#{ticket.id}]", "More details.")
    await append(imap_server, stranger, owner)
    await daemon.run_once()
    mallory = await Ticket.get(customer="mallory@evil.test")
    assert mallory.id != ticket.id
    assert mallory.linked_ticket_id == ticket.id  # type: ignore[attr-defined]
    assert await MessageRow.filter(ticket_id=ticket.id, direction="in").count() == 2
    assert (await Ticket.get(id=ticket.id)).status is TicketStatus.NEW


async def test_unparseable_mail_is_stored_and_quarantined_not_dropped(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    # No NUL byte: IMAP servers replace NUL with 0x80 (Dovecot documents it). A blank line
    # after the "header": pymap drops the last line ending of a message without one.
    garbage = b"\x01\x02 not a mail at all \xff\xfe\r\n\r\n\xff\xfe binary tail\r\n"
    await append(imap_server, garbage)
    report = await Daemon(settings, policy).run_once()
    assert report.ingested[Disposition.QUARANTINED] == 1
    row = await MessageRow.get(state=MessageState.QUARANTINED)
    assert row.raw_bytes == garbage
    assert row.error
    assert report.sent == 0


@pytest.mark.parametrize("workers", ["0", "1"])
async def test_a_batch_is_the_same_whether_a_worker_parses_it_or_not(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str, workers: str
) -> None:
    settings = make_settings(
        imap_server, smtp_sink, rules_file, database, MAILBOT_PARSE_WORKERS=workers
    )
    garbage = b"\x01\x02 not a mail at all \xff\xfe\r\n\r\n\xff\xfe binary tail\r\n"
    raws = [
        mail(f"Customer {i} <customer{i}@example.org>", f"Checkout fails ({i})", "It fails.")[1]
        for i in range(10)
    ]
    raws.insert(4, garbage)
    await append(imap_server, *raws)
    daemon = Daemon(settings, policy)
    try:
        report = await daemon.run_once()
        assert daemon.poller.parsers is not None or workers == "0"
        if daemon.poller.parsers is not None:
            assert daemon.poller.parsers.worker_pids()  # the batch went to a worker
    finally:
        await close_shared_workers()
    assert report.ingested == {
        Disposition.STORED: 10,
        Disposition.QUARANTINED: 1,
        Disposition.DUPLICATE: 0,
    }
    assert report.sent == 10
    assert len(await list_tickets("")) == 10
    row = await MessageRow.get(state=MessageState.QUARANTINED)
    assert row.raw_bytes == garbage
    assert row.error is not None and row.error.startswith("unparseable: ")


def _fetches_and_acks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The poller's downloads and acknowledgements, in order, from the debug log."""
    return [
        word
        for record in caplog.records
        for word in ("fetched", "acknowledged")
        if record.name.startswith("mailbot.mailbox") and f"{word} " in record.getMessage()
    ]


async def test_a_batch_of_big_mail_is_fetched_committed_and_acknowledged_in_parts(
    imap_server: Any,
    smtp_sink: Any,
    rules_file: Path,
    policy: Policy,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        imap_server,
        smtp_sink,
        rules_file,
        database,
        MAILBOT_BATCH_BYTES="9000",  # two of the 4 KB messages a part
        MAILBOT_MAX_MESSAGE_BYTES="20000",
    )
    raws = [
        mail(f"C{n} <c{n}@example.org>", f"Screenshot {n}", f"See below.\n{'x' * 4000}")[1]
        for n in range(5)
    ]
    raws.insert(2, mail("Big <big@example.org>", "Huge", "y" * 30000)[1])  # left on the server
    await append(imap_server, *raws)
    caplog.set_level("DEBUG", logger="mailbot.mailbox")
    report = await Daemon(settings, policy).run_once()
    assert report.ingested[Disposition.STORED] == 5
    assert report.ingested[Disposition.QUARANTINED] == 1
    fetches = [r.getMessage() for r in caplog.records if "fetched" in r.getMessage()]
    assert [f.split("fetched ")[1] for f in fetches] == [
        "2 of 2 messages",
        "2 of 2 messages",
        "1 of 1 messages",
    ]
    # Two parts would not fit in MAILBOT_BATCH_BYTES together: none downloads ahead.
    assert _fetches_and_acks(caplog) == ["fetched", "acknowledged"] * 3
    assert settings.imap is not None
    session = await ImapSession.open(settings.imap)
    try:
        done = await session.search(f"KEYWORD {DONE_KEYWORD}")
        uids = await session.search_uids(1)
    finally:
        await session.close()
    assert len(done) == 6  # the oversized one too: recorded, acknowledged, left there
    state = await MailboxState.get()
    assert state.last_uid == max(uids)


async def test_the_next_part_downloads_while_one_is_stored(
    imap_server: Any,
    smtp_sink: Any,
    rules_file: Path,
    policy: Policy,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_BATCH="2")
    raws = [mail(f"C{n} <c{n}@example.org>", f"Question {n}", "It fails.")[1] for n in range(5)]
    await append(imap_server, *raws)
    caplog.set_level("DEBUG", logger="mailbot.mailbox")
    report = await Daemon(settings, policy).run_once()
    assert report.ingested[Disposition.STORED] == 5 and report.sent == 5
    # Each part's download was under way before the part before it was acknowledged (a
    # sync that fetched only after acknowledging would log fetched, acknowledged, ...).
    assert _fetches_and_acks(caplog) == [
        "fetched",
        "fetched",
        "acknowledged",
        "fetched",
        "acknowledged",
        "acknowledged",
    ]


async def test_a_stop_leaves_the_part_downloaded_ahead_on_the_server_and_the_session_usable(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_BATCH="2")
    raws = [mail(f"C{n} <c{n}@example.org>", f"Question {n}", "It fails.")[1] for n in range(4)]
    await append(imap_server, *raws)
    daemon = Daemon(settings, policy)
    stop = asyncio.Event()
    daemon.poller._stop = stop  # as ``run`` sets it
    daemon.poller.on_stored = stop.set  # SIGTERM while the first part is stored
    session = await daemon.poller.open()
    try:
        assert await daemon.poller.sync(session) == 2
        # The second part was downloaded but neither stored nor acknowledged, and the
        # session is still good for the next command.
        assert len(await session.search(f"KEYWORD {DONE_KEYWORD}")) == 2
        assert not session.broken
    finally:
        await session.close()
    assert await Ticket.all().count() == 2
    daemon.poller.on_stored = lambda: None
    report = await daemon.run_once()
    assert report.ingested[Disposition.STORED] == 2
    assert await Ticket.all().count() == 4


async def test_oversized_mail_is_recorded_and_left_on_the_server(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(
        imap_server, smtp_sink, rules_file, database, MAILBOT_MAX_MESSAGE_BYTES="2000"
    )
    _, big = mail("Anna <anna@butiken.se>", "Huge", "x" * 5000)
    _, small = mail("Anna <anna@butiken.se>", "Small", "Kassan fungerar inte.")
    await append(imap_server, big, small)
    daemon = Daemon(settings, policy)
    report = await daemon.run_once()
    assert report.ingested[Disposition.QUARANTINED] == 1
    assert report.ingested[Disposition.STORED] == 1
    row = await MessageRow.get(state=MessageState.QUARANTINED)
    assert row.raw_bytes == b"" and row.error is not None and "exceeds" in row.error
    # Nothing is recorded twice when the same UIDs are seen again.
    assert sum((await daemon.run_once()).ingested.values()) == 0


async def test_commit_without_ack_is_acknowledged_once_after_a_crash(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    """State after a kill right after the commit: not checkpointed, not acknowledged."""
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    _, first = mail("Anna <anna@butiken.se>", "Help", "Something is broken in the cart.")
    await append(imap_server, first)
    daemon = Daemon(settings, policy)
    session = await daemon.poller.open()
    try:
        async with in_transaction() as conn:
            await ensure_mailbox_state(conn, daemon.poller.key, session.uidvalidity)
        uids = await session.search_uids(1)
        fetched = await session.fetch(uids)
        for message in fetched:
            origin = Origin(
                label="crash test",
                mailbox=daemon.poller.key,
                uidvalidity=session.uidvalidity,
                uid=message.uid,
            )
            await daemon.intake.accept(message.raw, origin)
        assert await session.search(f"KEYWORD {DONE_KEYWORD}") == []
    finally:
        await session.close()

    report = await Daemon(settings, policy).run_once()  # the restarted daemon
    assert report.ingested[Disposition.STORED] == 0  # nothing stored twice:
    assert report.ingested[Disposition.DUPLICATE] == 1  # known by (mailbox, UIDVALIDITY, UID)
    assert await MessageRow.filter(direction="in").count() == 1
    assert report.sent == 1  # the acknowledgement queued before the crash goes out
    assert settings.imap is not None
    check = await ImapSession.open(settings.imap)
    try:
        assert len(await check.search(f"KEYWORD {DONE_KEYWORD}")) == 1
    finally:
        await check.close()


async def test_daemon_idles_and_answers_new_mail_without_polling(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    settings = make_settings(
        imap_server, smtp_sink, rules_file, database, MAILBOT_POLL_SECONDS="3600"
    )
    daemon = Daemon(settings, policy)
    task = asyncio.create_task(daemon.run())
    try:
        for n in range(3):
            _, raw = mail(f"Customer <c{n}@shop.example>", f"Problem {n}", "It is broken.")
            await append(imap_server, raw)
            await smtp_sink.wait_for(n + 1, timeout=15)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert len(smtp_sink.messages) == 3
    assert await Ticket.all().count() == 3


async def test_uidvalidity_change_resyncs_without_duplicates_or_gaps(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    """The server renumbered its UIDs: everything is fetched again; only new mail is stored."""
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    _, first = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
    _, second = mail("Mario <mario@negozio.it>", "Aiuto", "Il carrello non funziona.")
    await append(imap_server, first, second)
    daemon = Daemon(settings, policy)
    assert (await daemon.run_once()).ingested[Disposition.STORED] == 2
    # What a changed UIDVALIDITY looks like to us: the stored one no longer matches.
    await MailboxState.filter(key=daemon.poller.key).update(uidvalidity=1, last_uid=999)
    _, third = mail("John <john@example.org>", "New question", "Where is my invoice?")
    await append(imap_server, third)
    report = await daemon.run_once()
    assert report.ingested[Disposition.STORED] == 1  # nothing skipped
    assert report.ingested[Disposition.DUPLICATE] == 2  # nothing stored twice
    assert await MessageRow.filter(direction="in").count() == 3
    state = await MailboxState.get(key=daemon.poller.key)
    assert state.uidvalidity != 1 and state.last_uid >= 3


async def test_daemon_reconnects_after_the_connection_is_cut(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    async with cuttable_proxy(imap_server.host, imap_server.port) as proxy:
        settings = make_settings(imap_server, smtp_sink, rules_file, database)
        assert settings.imap is not None
        settings = dataclasses.replace(
            settings, imap=dataclasses.replace(settings.imap, port=proxy.port)
        )
        daemon = Daemon(settings, policy)
        task = asyncio.create_task(daemon.run())
        try:
            _, first = mail("Anna <anna@butiken.se>", "First", "Kassan fungerar inte.")
            await append(imap_server, first)
            await smtp_sink.wait_for(1, timeout=15)
            assert proxy.cut() >= 1  # the daemon's IDLE connection dies under it
            _, second = mail("Mario <mario@negozio.it>", "Second", "Il carrello non va.")
            await append(imap_server, second)
            await smtp_sink.wait_for(2, timeout=15)
        finally:
            daemon.stop.set()
            await asyncio.wait_for(task, timeout=30)
        assert proxy.connections >= 2
    assert await Ticket.all().count() == 2


async def test_a_database_that_cannot_write_acknowledges_nothing_and_loses_nothing(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    if not database.startswith("sqlite"):
        pytest.skip("read-only is simulated with SQLite's query_only pragma")
    from tortoise import connections

    from mailbot.errors import DatabaseBusyError
    from mailbot.mailbox.poller import cannot_write

    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    daemon = Daemon(settings, policy)
    await daemon.run_once()  # the mailbox's checkpoint exists: the failure is the message's
    _, raw = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
    await append(imap_server, raw)
    connection = connections.get("default")
    await connection.execute_script("PRAGMA query_only = ON")
    try:
        with pytest.raises(DatabaseBusyError) as refused:
            await daemon.run_once()
        assert cannot_write(refused.value)
    finally:
        await connection.execute_script("PRAGMA query_only = OFF")
    endpoint = settings.imap
    assert endpoint is not None
    session = await ImapSession.open(endpoint)
    try:
        assert await session.search(f"KEYWORD {DONE_KEYWORD}") == []  # nothing acknowledged
    finally:
        await session.close()
    assert await Ticket.all().count() == 0 and smtp_sink.messages == []
    report = await daemon.run_once()  # the database writes again: the mail is still there
    assert report.ingested[Disposition.STORED] == 1 and report.sent == 1


async def test_a_database_error_while_the_next_part_downloads_acknowledges_nothing(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, database: str
) -> None:
    if not database.startswith("sqlite"):
        pytest.skip("read-only is simulated with SQLite's query_only pragma")
    from tortoise import connections

    from mailbot.errors import DatabaseBusyError

    settings = make_settings(imap_server, smtp_sink, rules_file, database, MAILBOT_BATCH="2")
    daemon = Daemon(settings, policy)
    await daemon.run_once()  # the mailbox's checkpoint exists: the failure is the message's
    raws = [mail(f"C{n} <c{n}@example.org>", f"Question {n}", "It fails.")[1] for n in range(6)]
    await append(imap_server, *raws)
    connection = connections.get("default")
    await connection.execute_script("PRAGMA query_only = ON")
    session = await daemon.poller.open()
    try:
        with pytest.raises(DatabaseBusyError):
            await daemon.poller.sync(session)
    finally:
        await connection.execute_script("PRAGMA query_only = OFF")
        await session.close()
    endpoint = settings.imap
    assert endpoint is not None
    async with await ImapSession.open(endpoint) as check:
        assert await check.search(f"KEYWORD {DONE_KEYWORD}") == []
    report = await daemon.run_once()
    assert report.ingested[Disposition.STORED] == 6 and report.sent == 6


async def test_a_locked_sqlite_database_acknowledges_nothing_and_the_retry_loses_nothing(
    imap_server: Any, smtp_sink: Any, rules_file: Path, policy: Policy, tmp_path: Path
) -> None:
    import sqlite3

    from mailbot.errors import DatabaseBusyError
    from mailbot.tickets.database import close_database, open_database, sqlite_url

    path = tmp_path / "busy.sqlite3"
    url = sqlite_url(path)
    await open_database(url)
    try:
        settings = make_settings(imap_server, smtp_sink, rules_file, url)
        daemon = Daemon(settings, policy)
        await daemon.run_once()  # the checkpoint row exists
        _, raw = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
        await append(imap_server, raw)
        other = sqlite3.connect(path, timeout=5)
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        try:
            # SQLite refuses to upgrade our read transaction while another writer holds
            # the lock ("database is locked"): the batch is refused, nothing acknowledged.
            with pytest.raises(DatabaseBusyError):
                await daemon.run_once()
        finally:
            other.rollback()
            other.close()
        endpoint = settings.imap
        assert endpoint is not None
        session = await ImapSession.open(endpoint)
        try:
            assert await session.search(f"KEYWORD {DONE_KEYWORD}") == []
        finally:
            await session.close()
        report = await daemon.run_once()  # the retry (the run loop does it after a pause)
        assert report.ingested[Disposition.STORED] == 1 and report.sent == 1
        assert await Ticket.all().count() == 1
        assert await daemon.run_once() == type(report)(
            ingested=dict.fromkeys(Disposition, 0), sent=0
        )
    finally:
        await close_database()
