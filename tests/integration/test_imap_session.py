"""ImapSession against real servers: pymap (always) and Dovecot (when installed).

Nothing is mocked: each test talks IMAP over TCP to a real server. A few parsing edge cases
that no real server will produce on demand (a 0-byte literal, a body sent as a quoted string)
come from a small scripted server at the bottom, still through aioimaplib's own parser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from mailbot.endpoints import Endpoint, Security
from mailbot.errors import (
    ImapPermanentError,
    ImapThrottledError,
    ImapTransientError,
    TlsRequiredError,
)
from mailbot.mailbox.imap import (
    ImapSession,
    StartTlsUnavailableError,
    encode_mailbox,
    uid_set,
    uid_sets,
)
from tests.servers import ImapTestServer

DONE = "$MailbotDone"

CRLF_MAIL = b"From: a@example.com\r\nSubject: plain\r\n\r\nHello\r\n.\r\nBye\r\n"
EIGHT_BIT_MAIL = (
    b"From: b@example.se\r\nSubject: =?utf-8?q?r=C3=A4ksm=C3=B6rg=C3=A5s?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Räksmörgås, ärende № 5 — 😀\r\n".encode()
    + bytes(range(0x80, 0x100))
    + b"\r\n"
)
# Looks like IMAP protocol inside the body: only literal byte counts keep the parser right.
TRICKY_MAIL = b'Subject: tricky\r\n\r\n* 99 EXISTS\r\nA001 OK done\r\n{12}\r\n) ( " \\\r\n* BYE\r\n'
# Old Mac line ends. (Not ending in a lone CR: Dovecot drops that one, pymap keeps it.)
CR_ONLY_MAIL = b"Subject: cr\rX-Old: mac\r\rbody\rline two"


async def open_session(endpoint: Endpoint, **kwargs: object) -> ImapSession:
    return await ImapSession.open(endpoint, timeout=10.0, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def session_for(endpoint: Endpoint, **kwargs: object) -> AsyncIterator[ImapSession]:
    session = await open_session(endpoint, **kwargs)
    try:
        yield session
    finally:
        await session.close()


async def appended(server: ImapTestServer, *raws: bytes) -> list[int]:
    """APPEND over a separate connection; returns the INBOX's UIDs afterwards."""
    async with session_for(server.endpoint()) as session:
        for raw in raws:
            await session.append(raw)
        return await session.search_uids(1)


async def within(seconds: float, aw: Awaitable[object]) -> float:
    """Await ``aw`` and return how long it took; fail if it takes longer than ``seconds``."""
    start = time.monotonic()
    async with asyncio.timeout(seconds):
        await aw
    return time.monotonic() - start


# --------------------------------------------------------------------------- pure helpers


def test_uid_set_compresses_runs() -> None:
    assert uid_set([7, 1, 3, 2, 2]) == "1:3,7"
    assert uid_set([5]) == "5"
    assert uid_set([1, 3, 5, 6, 7, 10]) == "1,3,5:7,10"
    with pytest.raises(ValueError):
        uid_set([])


def test_uid_sets_split_long_sets() -> None:
    sets = uid_sets(range(1, 4000, 2), max_len=100)
    assert len(sets) > 1
    assert all(len(s) <= 100 for s in sets)
    assert ",".join(sets) == uid_set(range(1, 4000, 2))


def test_mailbox_names_are_quoted_modified_utf7() -> None:
    assert encode_mailbox("INBOX") == '"INBOX"'
    assert encode_mailbox("Ärenden & Co") == '"&AMQ-renden &- Co"'
    assert encode_mailbox('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert encode_mailbox("日本語") == '"&ZeVnLIqe-"'


# --------------------------------------------------------------------------- login, select


async def test_login_select_and_wrong_password(imap_server: ImapTestServer) -> None:
    async with session_for(imap_server.endpoint()) as session:
        assert session.uidvalidity > 0
        assert session.uidnext is not None and session.uidnext > 0
        assert "IMAP4REV1" in session.capabilities
        assert session.has_idle
        assert not session.encrypted
    with pytest.raises(ImapPermanentError, match="AUTHENTICATIONFAILED"):
        await open_session(imap_server.endpoint(password="wrong-password"))


async def test_missing_mailbox_is_permanent(imap_server: ImapTestServer) -> None:
    with pytest.raises(ImapPermanentError, match="No/Such"):
        await open_session(imap_server.endpoint(mailbox="No/Such"))


async def test_connection_refused_is_transient(unused_tcp_port: int) -> None:
    endpoint = Endpoint("imap", Security.PLAIN, "127.0.0.1", unused_tcp_port, "u", "p", "INBOX")
    with pytest.raises(ImapTransientError):
        await within(10, open_session(endpoint))


# --------------------------------------------------------------------------- read


async def test_append_search_fetch_returns_exact_bytes_and_never_sets_seen(
    imap_server: ImapTestServer,
) -> None:
    raws = [CRLF_MAIL, EIGHT_BIT_MAIL, TRICKY_MAIL, CR_ONLY_MAIL]
    uids = await appended(imap_server, *raws)
    assert len(uids) == len(raws)
    async with session_for(imap_server.endpoint()) as session:
        fetched = await session.fetch(uids)
        assert [m.uid for m in fetched] == uids
        assert [m.raw for m in fetched] == raws
        assert [m.size for m in fetched] == [len(raw) for raw in raws]
        assert all("\\Seen" not in m.flags for m in fetched)
        assert await session.fetch_sizes(uids) == {
            u: len(r) for u, r in zip(uids, raws, strict=True)
        }
        assert await session.search("UNSEEN") == uids
    async with session_for(imap_server.endpoint()) as again:  # not set, not just hidden
        assert all("\\Seen" not in m.flags for m in await again.fetch(uids))


async def test_search_uids_filters_the_star_quirk(imap_server: ImapTestServer) -> None:
    uids = await appended(imap_server, CRLF_MAIL, CRLF_MAIL, CRLF_MAIL)
    async with session_for(imap_server.endpoint()) as session:
        assert await session.search_uids(0) == uids
        assert await session.search_uids(uids[1]) == uids[1:]
        # "UID n:*" with n above every UID still matches the highest UID: must be filtered.
        assert await session.search_uids(uids[-1] + 1) == []
        assert await session.search_uids(uids[-1] + 1000) == []
        assert await session.fetch([uids[-1] + 5]) == []


# --------------------------------------------------------------------------- write


async def test_add_flags_with_ranged_uid_set(imap_server: ImapTestServer) -> None:
    uids = await appended(imap_server, *[CRLF_MAIL] * 6)
    chosen = [uids[0], uids[1], uids[2], uids[4]]
    async with session_for(imap_server.endpoint()) as session:
        await session.add_flags(chosen, ["\\Flagged", DONE])
        assert await session.search(f"KEYWORD {DONE}") == chosen
        assert await session.search("FLAGGED") == chosen
        assert await session.search(f"UNKEYWORD {DONE}") == [uids[3], uids[5]]
        flags = {m.uid: m.flags for m in await session.fetch(uids)}
    assert DONE in flags[uids[4]] and "\\Flagged" in flags[uids[4]]
    assert DONE not in flags[uids[3]]


@pytest.mark.parametrize("with_move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
async def test_move_creates_the_missing_folder(
    imap_server: ImapTestServer, with_move: bool
) -> None:
    raws = [CRLF_MAIL, EIGHT_BIT_MAIL, TRICKY_MAIL]
    uids = await appended(imap_server, *raws)
    folder = "Klar/Ärenden"
    async with session_for(imap_server.endpoint()) as session:
        if not with_move:
            # Act like a server without MOVE: the fallback is COPY, \Deleted, UID EXPUNGE.
            session._client.protocol.capabilities.discard("MOVE")
        await session.move(uids[:2], folder)
        assert await session.search_uids(1) == uids[2:]
        assert not await session.wait_for_news(0.1)  # an expunge is not news
    async with session_for(imap_server.endpoint(mailbox=folder)) as moved:
        assert [m.raw for m in await moved.fetch(await moved.search_uids(1))] == raws[:2]


async def test_a_move_of_many_messages_goes_in_slices(imap_server: ImapTestServer) -> None:
    """1,200 EXPUNGE answers in one read overflowed aioimaplib's recursive line parser."""
    uids = await appended(imap_server, *([CRLF_MAIL] * 1200))
    async with session_for(imap_server.endpoint()) as session:
        await session.move(uids, "Done")
        assert await session.search_uids(1) == []
    async with session_for(imap_server.endpoint(mailbox="Done")) as moved:
        assert len(await moved.search_uids(1)) == 1200


async def test_move_without_create_fails_for_a_missing_folder(
    imap_server: ImapTestServer,
) -> None:
    uids = await appended(imap_server, CRLF_MAIL)
    async with session_for(imap_server.endpoint()) as session:
        with pytest.raises(ImapTransientError, match="Nowhere"):
            await session.move(uids, "Nowhere", create=False)


# --------------------------------------------------------------------------- news


@pytest.mark.parametrize("use_idle", [True, False], ids=["IDLE", "poll"])
async def test_wait_for_news_sees_mail_appended_elsewhere(
    imap_server: ImapTestServer, use_idle: bool
) -> None:
    async with session_for(imap_server.endpoint(), use_idle=use_idle) as session:
        assert session.has_idle is use_idle
        waiting = asyncio.create_task(session.wait_for_news(20, poll_interval=0.2))
        await asyncio.sleep(0.2)  # let the IDLE (or first NOOP) start before the mail comes
        assert not waiting.done()
        start = time.monotonic()
        await appended(imap_server, CRLF_MAIL)
        assert await asyncio.wait_for(waiting, 10) is True
        assert time.monotonic() - start < 5
        assert await session.search_uids(1) != []  # still usable after IDLE ended


@pytest.mark.parametrize("use_idle", [True, False], ids=["IDLE", "poll"])
async def test_wait_for_news_times_out_with_false(
    imap_server: ImapTestServer, use_idle: bool
) -> None:
    async with session_for(imap_server.endpoint(), use_idle=use_idle) as session:
        took = await within(5, session.wait_for_news(0.6, poll_interval=0.2))
        assert not await session.wait_for_news(0.0)
        await session.noop()
    assert 0.5 <= took < 4


@pytest.mark.parametrize("use_idle", [True, False], ids=["IDLE", "poll"])
async def test_wake_ends_the_wait_cleanly(imap_server: ImapTestServer, use_idle: bool) -> None:
    stop = asyncio.Event()
    async with session_for(imap_server.endpoint(), use_idle=use_idle) as session:
        waiting = asyncio.create_task(session.wait_for_news(60, poll_interval=30, wake=stop))
        await asyncio.sleep(0.2)  # let the IDLE (or the first NOOP) start
        stop.set()
        assert await asyncio.wait_for(waiting, 5) is False
        assert not session.broken
        assert await session.search_uids(1) == []  # the session is still in step
        assert await within(1, session.wait_for_news(60, wake=stop)) < 1  # already set


async def test_mail_appended_between_the_last_command_and_idle_is_news(
    imap_server: ImapTestServer,
) -> None:
    # The daemon's sync ends with a SEARCH and then IDLEs; mail that comes in between must
    # be pushed when IDLE starts (Dovecot does; pymap's dict backend needed a fix, as it
    # only waited for the *next* change, so such mail sat unseen until a later one).
    async with session_for(imap_server.endpoint()) as session:
        assert session.has_idle
        assert await session.search_uids(1) == []
        await appended(imap_server, CRLF_MAIL)
        took = await within(10, session.wait_for_news(8))
        assert took < 5, "the mail waiting when IDLE started was not reported"
        assert len(await session.search_uids(1)) == 1


async def test_news_seen_during_another_command_is_not_lost(
    imap_server: ImapTestServer,
) -> None:
    async with session_for(imap_server.endpoint()) as session:
        await appended(imap_server, CRLF_MAIL)
        await session.search("ALL")  # the EXISTS may arrive here, or in the NOOP below
        await session.noop()
        took = await within(5, session.wait_for_news(30))
        assert took < 1, "the EXISTS already seen should answer without waiting"


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS], ids=["STARTTLS", "imaps"])
async def test_tls_against_dovecot(dovecot_imap: ImapTestServer, security: Security) -> None:
    await appended(dovecot_imap, EIGHT_BIT_MAIL)
    async with session_for(dovecot_imap.endpoint(security)) as session:
        assert session.encrypted
        assert "STARTTLS" not in session.capabilities  # the post-TLS list replaced the old one
        [message] = await session.fetch(await session.search_uids(1))
        assert message.raw == EIGHT_BIT_MAIL


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS], ids=["STARTTLS", "imaps"])
async def test_self_signed_certificate_is_rejected_when_verifying(
    dovecot_imap: ImapTestServer, security: Security
) -> None:
    endpoint = replace(dovecot_imap.endpoint(security), verify_tls=True)
    with pytest.raises(ImapPermanentError, match="certificate"):
        await open_session(endpoint)


async def test_starttls_required_never_falls_back_to_plain() -> None:
    from mailbot.devservers.pymap_server import running_pymap

    async with running_pymap("support", "secret") as srv:  # pymap here offers no STARTTLS
        endpoint = replace(srv.endpoint(), security=Security.STARTTLS, verify_tls=False)
        with pytest.raises(StartTlsUnavailableError, match="STARTTLS") as caught:
            await open_session(endpoint)
        assert isinstance(caught.value, ImapPermanentError)
        assert isinstance(caught.value, TlsRequiredError)
        for _ in range(100):  # the refused client's connection closes (bounded wait)
            if srv.connection_count == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.connection_count == 0


# --------------------------------------------------------------------------- failures


async def test_killed_server_raises_transient_errors_not_hangs(
    disposable_imap_server: ImapTestServer,
) -> None:
    server = disposable_imap_server
    session = await open_session(server.endpoint())
    idle = await open_session(server.endpoint())
    waiting = asyncio.create_task(idle.wait_for_news(60))
    await asyncio.sleep(0.2)
    server.kill()
    with pytest.raises(ImapTransientError):
        await within(5, waiting)
    with pytest.raises(ImapTransientError):
        await within(5, session.search_uids(1))
    assert session.broken
    with pytest.raises(ImapTransientError, match="unusable"):
        await session.noop()
    await within(5, session.close())  # a dead connection is fine to close
    await within(5, idle.close())


async def test_half_open_connection_is_detected_by_timeouts(
    disposable_imap_server: ImapTestServer,
) -> None:
    server = disposable_imap_server
    polling = await ImapSession.open(server.endpoint(), timeout=1.0)
    idling = await ImapSession.open(server.endpoint(), timeout=1.0)
    server.freeze()
    with pytest.raises(ImapTransientError, match="timed out"):
        await within(5, polling.noop())
    with pytest.raises(ImapTransientError, match="timed out"):
        await within(6, idling.wait_for_news(0.5))
    await within(5, polling.close())
    await within(5, idling.close())


# --------------------------------------------------------------------------- scripted server


@asynccontextmanager
async def scripted_imap(
    fetch_chunks: Callable[[str], list[bytes]] = lambda tag: [],
    *,
    capabilities: str = "IMAP4rev1",
    starttls_reply: str = "BAD no",
    login_reply: str = "OK logged in",
) -> AsyncIterator[tuple[Endpoint, list[str]]]:
    """A tiny IMAP server answering LOGIN/SELECT/LOGOUT and, for UID FETCH, ``fetch_chunks``.

    Each chunk is written and flushed separately (a pause between them splits TCP segments).
    STARTTLS is answered with ``starttls_reply`` and no TLS ever follows. Yields an endpoint
    and the list of LOGIN command arguments received.
    """
    logins: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"* OK [CAPABILITY {capabilities}] scripted\r\n".encode())
        while line := await reader.readline():
            tag, _, rest = line.decode().strip().partition(" ")
            command = rest.upper()
            if command.startswith("CAPABILITY"):
                writer.write(f"* CAPABILITY {capabilities}\r\n{tag} OK done\r\n".encode())
            elif command.startswith("STARTTLS"):
                writer.write(f"{tag} {starttls_reply}\r\n".encode())
            elif command.startswith("LOGIN"):
                logins.append(rest)
                writer.write(f"{tag} {login_reply}\r\n".encode())
            elif command.startswith("SELECT"):
                writer.write(
                    b"* 2 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT 11] ok\r\n"
                    + f"{tag} OK [READ-WRITE] selected\r\n".encode()
                )
            elif command.startswith("UID FETCH"):
                for chunk in fetch_chunks(tag):
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.02)
            elif command.startswith("LOGOUT"):
                writer.write(f"* BYE bye\r\n{tag} OK bye\r\n".encode())
                await writer.drain()
                break
            else:
                writer.write(f"{tag} BAD unknown\r\n".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Endpoint("imap", Security.PLAIN, "127.0.0.1", port, "u", "p", "INBOX"), logins
    finally:
        server.close()
        await server.wait_closed()


async def test_fetch_parses_unusual_but_valid_responses() -> None:
    protocol_like = b"* 7 EXISTS\r\nA1 OK x\r\n{3}\r\n)"
    split = b"12345\r67890"

    def chunks(tag: str) -> list[bytes]:
        return [
            b"* 1 FETCH (UID 5 RFC822.SIZE 0 FLAGS () BODY[] {0}\r\n)\r\n",  # 0-byte message
            b"* 2 FETCH (BODY[] {%d}\r\n%s UID 6 FLAGS (\\Seen $X) RFC822.SIZE %d)\r\n"
            % (len(protocol_like), protocol_like, len(protocol_like)),  # body first
            b"* 12 EXISTS\r\n",  # new mail announced in the middle of the FETCH
            b'* 3 FETCH (UID 7 FLAGS () BODY[] "say \\"hi\\"")\r\n',  # quoted string body
            b"* 4 FETCH (UID 8 BODY[] NIL)\r\n",
            b"* 9 FETCH (FLAGS (\\Deleted))\r\n",  # unsolicited: no UID, no body
            b"* 5 FETCH (UID 9 FLAGS (\\Recent) BODY[] {%d}\r\n%s" % (len(split), split[:4]),
            split[4:] + b")\r\n",  # the literal arrives in two TCP segments
            f"{tag} OK fetched\r\n".encode(),
        ]

    async with scripted_imap(chunks) as (endpoint, _), session_for(endpoint) as session:
        assert (session.uidvalidity, session.uidnext) == (42, 11)
        messages = {m.uid: m for m in await session.fetch([5, 6, 7, 8, 9])}
        assert messages[5].raw == b"" and messages[5].size == 0
        assert messages[6].raw == protocol_like
        assert messages[6].flags == ("\\Seen", "$X")
        assert messages[7].raw == b'say "hi"'
        assert messages[8].raw == b""
        assert messages[9].raw == split and messages[9].size == len(split)
        assert sorted(messages) == [5, 6, 7, 8, 9]
        assert await within(1, session.wait_for_news(30))  # the EXISTS 12 was noticed


@pytest.mark.parametrize(
    ("capabilities", "reply"),
    [("IMAP4rev1", "OK go ahead"), ("IMAP4rev1 STARTTLS", "NO not today")],
    ids=["not-offered", "refused"],
)
async def test_starttls_missing_or_refused_is_permanent(capabilities: str, reply: str) -> None:
    async with scripted_imap(capabilities=capabilities, starttls_reply=reply) as (plain, logins):
        endpoint = replace(plain, security=Security.STARTTLS, verify_tls=False)
        with pytest.raises(StartTlsUnavailableError):
            await within(5, open_session(endpoint))
    assert logins == []  # the password never went out in plain text


@pytest.mark.parametrize(
    ("reply", "seconds"),
    [
        ("NO [UNAVAILABLE] Too many simultaneous connections, try again in 2 minutes", 120.0),
        ("NO [LIMIT] Too many logins", 300.0),
        ("NO Login throttled, retry after 30 seconds", 30.0),
    ],
)
async def test_a_server_asking_to_slow_down_is_throttling_not_a_refusal(
    reply: str, seconds: float
) -> None:
    async with scripted_imap(login_reply=reply) as (endpoint, logins):
        with pytest.raises(ImapThrottledError) as raised:
            await within(5, open_session(endpoint))
    assert raised.value.retry_after == seconds and len(logins) == 1


async def test_a_wrong_password_stays_permanent() -> None:
    async with scripted_imap(login_reply="NO [AUTHENTICATIONFAILED] Invalid credentials") as (
        endpoint,
        _,
    ):
        with pytest.raises(ImapPermanentError):
            await within(5, open_session(endpoint))


async def test_the_poller_waits_as_long_as_the_server_asks(database: str) -> None:
    from mailbot.agents.tokens import TokenSigner
    from mailbot.clock import SystemClock
    from mailbot.ingest.pipeline import Intake
    from mailbot.mailbox.poller import BACKOFF_START, MailboxPoller
    from mailbot.policy import load_policy
    from mailbot.settings import load_settings
    from tests.e2e.conftest import REPO

    settings = load_settings(
        {"MAILBOT_TEMPLATES": str(REPO / "templates")}, rules=str(REPO / "rules.yaml")
    )
    policy = load_policy(settings.rules_path, settings.templates_dir)
    intake = Intake(policy, SystemClock(), signer=TokenSigner(b"t" * 32))
    ask = BACKOFF_START * 4
    reply = f"NO [UNAVAILABLE] Too many connections, try again in {ask:.0f} seconds"
    async with scripted_imap(login_reply=reply) as (endpoint, logins):
        poller = MailboxPoller(endpoint, intake, settings, SystemClock())
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(ask * 0.9)  # without the server's request it would have retried
        stop.set()
        await within(5, task)
    assert len(logins) == 1
