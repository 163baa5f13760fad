"""XOAUTH2 end to end against real servers: a real OAuth 2.0 token/introspection server
(``tests.servers.oauth_server``), Dovecot validating bearer tokens with its ``oauth2`` passdb,
and an aiosmtpd server implementing ``AUTH XOAUTH2`` the way Gmail answers it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from mailbot.clock import FixedClock
from mailbot.devservers import self_signed_cert
from mailbot.endpoints import Auth, Endpoint, Security
from mailbot.errors import (
    BasicAuthRefusedError,
    ImapBasicAuthRefusedError,
    ImapPermanentError,
    OAuthGrantError,
    OAuthTransientError,
    SmtpBasicAuthRefusedError,
    SmtpPermanentError,
)
from mailbot.mailbox.imap import ImapSession, append_messages
from mailbot.oauth import TokenSource, xoauth2_sasl
from mailbot.outbound.sender import (
    OutboxSender,
    SmtpOAuthGrantError,
    SmtpTransport,
)
from mailbot.settings import load_settings
from mailbot.tickets.models import OutboxRow, OutboxStatus
from tests.integration.test_sender import queue
from tests.loop_ticks import loop_ticks
from tests.servers.dovecot import DovecotServer, dovecot_missing_reason
from tests.servers.oauth_server import OAuthServer, running_oauth_server

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MAIL = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server() as server:
        yield server


# =========================================================================== the token source


async def test_refresh_request_and_cache(oauth: OAuthServer) -> None:
    refresh = oauth.add_account("alice")
    tokens = TokenSource(oauth.config(refresh, scope="https://mail.google.com/"))
    first = await tokens.token()
    assert oauth.user_of(first) == "alice"
    assert await tokens.token() == first  # cached
    assert tokens.refreshes == 1
    assert oauth.token_requests == [
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": "mailbot-test-client",
            "client_secret": "client-secret",
            "scope": "https://mail.google.com/",
        }
    ]


async def test_public_client_sends_no_secret_and_no_scope(oauth: OAuthServer) -> None:
    oauth.client_secret = None
    tokens = TokenSource(oauth.config(oauth.add_account("alice"), scope=None))
    await tokens.token()
    assert set(oauth.token_requests[0]) == {"grant_type", "refresh_token", "client_id"}


async def test_token_is_renewed_a_margin_before_it_expires(oauth: OAuthServer) -> None:
    oauth.expires_in = 600
    now = [1000.0]
    tokens = TokenSource(oauth.config(oauth.add_account("alice")), margin=60, clock=lambda: now[0])
    first = await tokens.token()
    now[0] += 539
    assert await tokens.token() == first
    now[0] += 1  # 540 s = expires_in - margin
    second = await tokens.token()
    assert second != first and tokens.refreshes == 2


async def test_a_short_lived_token_keeps_half_its_life(oauth: OAuthServer) -> None:
    oauth.expires_in = 60
    now = [0.0]
    tokens = TokenSource(oauth.config(oauth.add_account("alice")), margin=300, clock=lambda: now[0])
    first = await tokens.token()
    now[0] = 29
    assert await tokens.token() == first
    now[0] = 30
    assert await tokens.token() != first


async def test_one_refresh_in_flight(oauth: OAuthServer) -> None:
    oauth.delay = 0.3
    tokens = TokenSource(oauth.config(oauth.add_account("alice")))
    results = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert len(set(results)) == 1
    assert tokens.refreshes == 1 and len(oauth.token_requests) == 1


async def test_the_refresh_does_not_block_the_event_loop(oauth: OAuthServer) -> None:
    oauth.delay = 0.5
    tokens = TokenSource(oauth.config(oauth.add_account("alice")))
    async with loop_ticks(0.02) as ticks:
        await tokens.token()
    assert ticks.count >= 10  # ~25 while the POST waited half a second in its thread


async def test_rotated_refresh_token_replaces_the_old_one(
    oauth: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    oauth.rotate = True
    original = oauth.add_account("alice")
    tokens = TokenSource(oauth.config(original))
    with caplog.at_level(logging.INFO, logger="mailbot.oauth"):
        await tokens.token()
        tokens.invalidate()
        await tokens.token()  # the original is dead now: only the rotated one works
    assert tokens.refreshes == 2
    sent = [request["refresh_token"] for request in oauth.token_requests]
    assert sent[0] == original and sent[1] != original
    rotated = [r for r in caplog.records if "rotated the refresh token" in r.getMessage()]
    assert len(rotated) == 2 and all(r.levelno == logging.INFO for r in rotated)
    assert "in memory only" in rotated[0].getMessage()
    assert sent[1] not in caplog.text  # the secret itself is never logged


async def test_invalidate_forgets_only_the_refused_token(oauth: OAuthServer) -> None:
    tokens = TokenSource(oauth.config(oauth.add_account("alice")))
    old = await tokens.token()
    tokens.invalidate()
    new = await tokens.token()
    assert new != old
    tokens.invalidate(old)  # another connection's late report about the old token
    assert await tokens.token() == new and tokens.refreshes == 2


async def test_revoked_refresh_token_is_a_loud_permanent_error(
    oauth: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    refresh = oauth.add_account("alice")
    oauth.revoke(refresh)
    tokens = TokenSource(oauth.config(refresh))
    with pytest.raises(OAuthGrantError, match="revoked or expired: create a new one"):
        await tokens.token()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "invalid_grant" in errors[0].getMessage()


async def test_wrong_client_is_permanent(oauth: OAuthServer) -> None:
    config = replace(oauth.config(oauth.add_account("alice")), client_secret="wrong")
    with pytest.raises(OAuthGrantError, match="MAILBOT_OAUTH_CLIENT_ID"):
        await TokenSource(config).token()


async def test_server_errors_are_transient(oauth: OAuthServer) -> None:
    tokens = TokenSource(oauth.config(oauth.add_account("alice")))
    oauth.fail_next(2, 503)
    for _ in range(2):
        with pytest.raises(OAuthTransientError, match="server_error"):
            await tokens.token()
    assert oauth.user_of(await tokens.token()) == "alice"


async def test_unreachable_endpoint_is_transient(oauth: OAuthServer) -> None:
    config = replace(oauth.config("rt"), token_url="http://127.0.0.1:9/token")
    with pytest.raises(OAuthTransientError, match=r"127\.0\.0\.1:9\b"):
        await TokenSource(config, timeout=5).token()


async def test_slow_endpoint_times_out_as_transient(oauth: OAuthServer) -> None:
    oauth.delay = 2.0
    tokens = TokenSource(oauth.config(oauth.add_account("alice")), timeout=0.3)
    with pytest.raises(OAuthTransientError):
        await tokens.token()


async def test_https_certificates_are_verified(tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.cert, files.key)
    with running_oauth_server(tls=server_context) as server:
        config = server.config(server.add_account("alice"))
        assert config.token_url.startswith("https://127.0.0.1:")
        with pytest.raises(OAuthGrantError, match="untrusted certificate"):
            await TokenSource(config).token()  # the system's trust store: refused
        trusting = ssl.create_default_context(cafile=str(files.cert))
        token = await TokenSource(config, ssl_context=trusting).token()
        assert server.user_of(token) == "alice"


# =========================================================================== SMTP (aiosmtpd)


@dataclass
class OAuthSmtp:
    """An aiosmtpd server with AUTH XOAUTH2 (tokens checked with the OAuth server) and,
    optionally, a fixed refusal for password logins (AUTH PLAIN / LOGIN)."""

    oauth: OAuthServer
    basic_auth_refusal: str | None = None
    port: int = 0
    accepted: list[tuple[str, tuple[str, ...], str | None]] = field(default_factory=list)
    auth_attempts: list[str] = field(default_factory=list)  # "ok", "refused"

    def endpoint(
        self, user: str, tokens: TokenSource | None, password: str | None = None
    ) -> Endpoint:
        return Endpoint(
            protocol="smtp",
            security=Security.PLAIN,
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            mailbox="",
            auth=Auth.XOAUTH2 if tokens is not None else Auth.PASSWORD,
            tokens=tokens,
        )

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.accepted.append(
            (envelope.mail_from or "", tuple(envelope.rcpt_tos), session.auth_data)
        )
        return "250 2.0.0 OK"


_XOAUTH2_RE = re.compile(rb"^user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01$")


class _OAuthSMTP(SMTP):  # type: ignore[misc]
    def __init__(self, state: OAuthSmtp, **kwargs: Any) -> None:
        super().__init__(state, **kwargs)
        self.state = state

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            raw = await self.challenge_auth("")
            if raw is MISSING:
                return AuthResult(success=False, handled=False)
        else:
            raw = base64.b64decode(args[1])
        match = _XOAUTH2_RE.match(bytes(raw))
        if match is not None:
            user, token = match.group(1).decode(), match.group(2).decode()
            if self.state.oauth.user_of(token) == user:
                self.state.auth_attempts.append("ok")
                return AuthResult(success=True, auth_data=user)
        self.state.auth_attempts.append("refused")
        # Gmail: a 334 challenge carrying the error as base64 JSON; the client sends an empty
        # line and gets the 535.
        error = json.dumps(
            {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        )
        await self.challenge_auth(error)
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted. (XOAUTH2 test server)",
        )

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        if self.state.basic_auth_refusal is not None:
            return AuthResult(success=False, handled=False, message=self.state.basic_auth_refusal)
        return await super().auth_PLAIN(server, args)  # type: ignore[no-any-return]

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        if self.state.basic_auth_refusal is not None:
            return AuthResult(success=False, handled=False, message=self.state.basic_auth_refusal)
        return await super().auth_LOGIN(server, args)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running_oauth_smtp(
    oauth: OAuthServer, basic_auth_refusal: str | None = None
) -> AsyncIterator[OAuthSmtp]:
    state = OAuthSmtp(oauth, basic_auth_refusal)
    loop = asyncio.get_running_loop()
    protocols: list[Any] = []

    def factory() -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            protocol = _OAuthSMTP(
                state,
                hostname="oauth-smtp.localhost",
                loop=loop,
                auth_require_tls=False,
                authenticator=lambda *a: AuthResult(success=False, handled=False),
            )
        protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        tasks = [p._handler_coroutine for p in protocols if p._handler_coroutine is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()


async def _queue_mail(clock: FixedClock, rcpt: str = "customer@shop.example") -> int:
    return await queue(rcpt, clock)


async def test_smtp_send_with_xoauth2(database: str, oauth: OAuthServer) -> None:
    clock = FixedClock(T0)
    tokens = TokenSource(oauth.config(oauth.add_account("bot@example.com")))
    async with running_oauth_smtp(oauth) as smtp:
        await _queue_mail(clock)
        sender = OutboxSender(SmtpTransport(smtp.endpoint("bot@example.com", tokens)), clock)
        assert await sender.run_once() == 1
    assert smtp.accepted == [("support@example.com", ("customer@shop.example",), "bot@example.com")]
    assert smtp.auth_attempts == ["ok"] and tokens.refreshes == 1


async def test_smtp_expired_token_is_refreshed_and_retried(
    database: str, oauth: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock(T0)
    tokens = TokenSource(oauth.config(oauth.add_account("bot@example.com")))
    async with running_oauth_smtp(oauth) as smtp:
        transport = SmtpTransport(smtp.endpoint("bot@example.com", tokens), timeout=10)
        await _queue_mail(clock, "first@shop.example")
        assert await OutboxSender(transport, clock).run_once() == 1
        oauth.expire_access_tokens()  # mailbot still caches the token: the server refuses it
        await _queue_mail(clock, "second@shop.example")
        with caplog.at_level(logging.WARNING):
            assert await OutboxSender(transport, clock).run_once() == 1
    assert smtp.auth_attempts == ["ok", "refused", "ok"]
    assert tokens.refreshes == 2
    assert [a[1] for a in smtp.accepted] == [("first@shop.example",), ("second@shop.example",)]
    assert "XOAUTH2 token refused (535" in caplog.text


async def test_smtp_token_refused_twice_is_permanent_and_loud(
    database: str, oauth: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock(T0)
    # A valid token, but for another account than the one we log in as.
    tokens = TokenSource(oauth.config(oauth.add_account("other@example.com")))
    async with running_oauth_smtp(oauth) as smtp:
        transport = SmtpTransport(smtp.endpoint("bot@example.com", tokens), timeout=10)
        client = transport.client()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.connect()
        assert refused.value.code == 535
        assert "refused again with a freshly refreshed token" in refused.value.message
        assert not client.is_connected
        assert smtp.auth_attempts == ["refused", "refused"] and tokens.refreshes == 2
        row_id = await _queue_mail(clock)
        with caplog.at_level(logging.ERROR):
            assert await OutboxSender(transport, clock).run_once() == 0
    assert any(
        r.levelno == logging.ERROR and "refused again" in r.getMessage() for r in caplog.records
    )
    row = await OutboxRow.get(id=row_id)
    assert row.status == OutboxStatus.QUEUED  # the mail is not at fault: kept for later
    assert row.last_error is not None and "refused again" in row.last_error
    assert smtp.accepted == []


async def test_smtp_revoked_refresh_token(database: str, oauth: OAuthServer) -> None:
    refresh = oauth.add_account("bot@example.com")
    tokens = TokenSource(oauth.config(refresh))
    oauth.revoke(refresh)
    async with running_oauth_smtp(oauth) as smtp:
        client = SmtpTransport(smtp.endpoint("bot@example.com", tokens)).client()
        with pytest.raises(SmtpOAuthGrantError, match="revoked or expired") as caught:
            await client.connect()
        assert isinstance(caught.value, OAuthGrantError)
        assert smtp.auth_attempts == []  # no AUTH without a token


MICROSOFT_535 = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)


async def test_smtp_basic_auth_refused_by_microsoft(
    database: str, oauth: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock(T0)
    async with running_oauth_smtp(oauth, basic_auth_refusal=MICROSOFT_535) as smtp:
        transport = SmtpTransport(smtp.endpoint("bot@contoso.com", None, password="pw"))
        client = transport.client()
        with pytest.raises(SmtpBasicAuthRefusedError) as caught:
            await client.connect()
        error = caught.value
        assert isinstance(error, BasicAuthRefusedError) and isinstance(error, SmtpPermanentError)
        assert "Microsoft 365 refused the password" in str(error)
        assert "SmtpClientAuthentication is disabled" in str(error)
        assert "MAILBOT_SMTP_AUTH=xoauth2" in str(error)
        row_id = await _queue_mail(clock)
        with caplog.at_level(logging.ERROR):
            assert await OutboxSender(transport, clock).run_once() == 0
            assert await OutboxSender(transport, clock).run_once() == 0  # next retry: again
    loud = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "MAILBOT_SMTP_AUTH=xoauth2" in r.getMessage()
    ]
    assert len(loud) >= 1
    row = await OutboxRow.get(id=row_id)
    assert row.last_error is not None and "MAILBOT_SMTP_AUTH=xoauth2" in row.last_error


async def test_smtp_wrong_password_stays_an_ordinary_refusal(
    database: str, oauth: OAuthServer
) -> None:
    async with running_oauth_smtp(oauth) as smtp:
        client = SmtpTransport(smtp.endpoint("bot@example.com", None, password="pw")).client()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await client.connect()
        assert not isinstance(caught.value, BasicAuthRefusedError)


# =========================================================================== IMAP (Dovecot)


@pytest.fixture(scope="module")
def oauth_module() -> Iterator[OAuthServer]:
    with running_oauth_server() as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(oauth_module: OAuthServer) -> Iterator[DovecotServer]:
    """A Dovecot of this module's own whose oauth2 passdb asks ``oauth_module``."""
    reason = dovecot_missing_reason()
    if reason is None:
        try:
            server = DovecotServer.start(oauth2_introspection_url=oauth_module.introspection_url)
        except RuntimeError as exc:
            reason = str(exc)
    if reason is not None:
        if os.environ.get("MAILBOT_REQUIRE_DOVECOT") == "1":
            pytest.fail(f"MAILBOT_REQUIRE_DOVECOT=1 but Dovecot is unusable: {reason}")
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


_users = iter(range(1, 1000))


@dataclass
class OAuthMailbox:
    user: str
    refresh_token: str
    tokens: TokenSource
    endpoint: Endpoint  # XOAUTH2
    password_endpoint: Endpoint


@pytest.fixture
def mailbox(oauth_dovecot: DovecotServer, oauth_module: OAuthServer) -> OAuthMailbox:
    user = f"oauth{next(_users)}"
    oauth_dovecot.add_user(user, f"pw-{user}")
    refresh = oauth_module.add_account(user)
    tokens = TokenSource(oauth_module.config(refresh))
    password_endpoint = oauth_dovecot.endpoint(user)
    endpoint = replace(password_endpoint, password=None, auth=Auth.XOAUTH2, tokens=tokens)
    return OAuthMailbox(user, refresh, tokens, endpoint, password_endpoint)


@pytest.mark.dovecot
async def test_imap_xoauth2_login_fetches_mail(
    mailbox: OAuthMailbox, oauth_module: OAuthServer
) -> None:
    await append_messages(mailbox.password_endpoint, [MAIL])
    asked = len(oauth_module.introspections)
    session = await ImapSession.open(replace(mailbox.endpoint, security=Security.STARTTLS))
    try:
        assert session.encrypted
        uids = await session.search_uids(1)
        fetched = await session.fetch(uids)
    finally:
        await session.close()
    assert [m.raw for m in fetched] == [MAIL]
    assert mailbox.tokens.refreshes == 1
    # Dovecot really asked the OAuth server about our token
    assert len(oauth_module.introspections) == asked + 1


@pytest.mark.dovecot
async def test_imap_expired_token_is_refreshed_and_retried(
    mailbox: OAuthMailbox, oauth_module: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    session = await ImapSession.open(mailbox.endpoint)
    await session.close()
    oauth_module.expire_access_tokens()
    with caplog.at_level(logging.WARNING, logger="mailbot.mailbox.imap"):
        session = await ImapSession.open(mailbox.endpoint)
    try:
        assert session.uidvalidity > 0
    finally:
        await session.close()
    assert mailbox.tokens.refreshes == 2
    refused = [r for r in caplog.records if "XOAUTH2 token refused" in r.getMessage()]
    assert len(refused) == 1 and "AUTHENTICATIONFAILED" in refused[0].getMessage()
    # Dovecot's error challenge (base64 JSON) was read and answered
    assert '"status":"401"' in refused[0].getMessage()


@pytest.mark.dovecot
async def test_imap_revoked_refresh_token_is_permanent(
    mailbox: OAuthMailbox, oauth_module: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    session = await ImapSession.open(mailbox.endpoint)
    await session.close()
    oauth_module.revoke(mailbox.refresh_token)  # also ends its access tokens
    with pytest.raises(ImapPermanentError, match="revoked or expired: create a new one") as caught:
        await ImapSession.open(mailbox.endpoint)
    assert isinstance(caught.value.__cause__, OAuthGrantError)
    assert mailbox.tokens.refreshes == 2  # the refused token, then the failed refresh
    assert any(r.levelno == logging.ERROR for r in caplog.records)


@pytest.mark.dovecot
async def test_imap_token_refused_twice_is_permanent(
    mailbox: OAuthMailbox, oauth_module: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    other = TokenSource(oauth_module.config(oauth_module.add_account("somebody-else")))
    endpoint = replace(mailbox.endpoint, tokens=other)
    with (
        caplog.at_level(logging.DEBUG, logger="aioimaplib"),
        pytest.raises(ImapPermanentError, match="refused again with a freshly refreshed token"),
    ):
        await ImapSession.open(endpoint)
    assert other.refreshes == 2
    # aioimaplib's debug log saw the command and the error challenge, never the token
    assert "AUTHENTICATE XOAUTH2 ***" in caplog.text
    assert "continuation line appended" in caplog.text
    sent = [t for t, issued in oauth_module.access_tokens.items() if issued.user == "somebody-else"]
    assert len(sent) == 2
    for token in sent:
        assert token not in caplog.text
        assert xoauth2_sasl(mailbox.user, token) not in caplog.text


GMAIL_IMAP_REFUSAL = (
    "[ALERT] Application-specific password required: "
    "https://support.google.com/accounts/answer/185833 (Failure)"
)


@pytest.mark.dovecot
async def test_imap_basic_auth_refused(mailbox: OAuthMailbox, oauth_dovecot: DovecotServer) -> None:
    oauth_dovecot.refuse_login(mailbox.user, GMAIL_IMAP_REFUSAL)
    with pytest.raises(ImapBasicAuthRefusedError) as caught:
        await ImapSession.open(mailbox.password_endpoint)
    message = str(caught.value)
    assert "Application-specific password required" in message
    assert "MAILBOT_IMAP_AUTH=xoauth2" in message
    assert isinstance(caught.value, ImapPermanentError)


@pytest.mark.dovecot
async def test_imap_wrong_password_stays_an_ordinary_refusal(mailbox: OAuthMailbox) -> None:
    with pytest.raises(ImapPermanentError) as caught:
        await ImapSession.open(replace(mailbox.password_endpoint, password="wrong"))
    assert not isinstance(caught.value, BasicAuthRefusedError)


@pytest.mark.dovecot
async def test_settings_to_imap_and_smtp_with_one_token_source(
    mailbox: OAuthMailbox, oauth_module: OAuthServer, oauth_dovecot: DovecotServer
) -> None:
    env = {
        "MAILBOT_IMAP_URL": f"imap+plain://{mailbox.user}@127.0.0.1:{oauth_dovecot.imap_port}/INBOX",
        "MAILBOT_IMAP_AUTH": "xoauth2",
        "MAILBOT_OAUTH_TOKEN_URL": oauth_module.token_url,
        "MAILBOT_OAUTH_CLIENT_ID": oauth_module.client_id,
        "MAILBOT_OAUTH_CLIENT_SECRET": oauth_module.client_secret or "",
        "MAILBOT_OAUTH_REFRESH_TOKEN": mailbox.refresh_token,
    }
    async with running_oauth_smtp(oauth_module) as smtp:
        env["MAILBOT_SMTP_URL"] = f"smtp+plain://{mailbox.user}@127.0.0.1:{smtp.port}"
        env["MAILBOT_SMTP_AUTH"] = "xoauth2"
        settings = load_settings(env)
        imap, smtp_endpoint = settings.require_servers()
        assert imap.tokens is smtp_endpoint.tokens is not None
        session = await ImapSession.open(imap)
        await session.close()
        client = SmtpTransport(smtp_endpoint).client()
        await client.connect()
        await client.quit()
        assert imap.tokens.refreshes == 1
        assert smtp.auth_attempts == ["ok"]


@pytest.mark.dovecot
async def test_imap_xoauth2_without_sasl_ir(
    mailbox: OAuthMailbox, oauth_module: OAuthServer
) -> None:
    """A server without SASL-IR gets the initial response after its "+" continuation (the
    capability is hidden from the client: Dovecot always announces it), also on the retry."""
    session = ImapSession(mailbox.endpoint, timeout=10, use_idle=False)
    try:
        await session._connect(ssl.create_default_context())
        session._client.protocol.capabilities.discard("SASL-IR")
        assert "SASL-IR" not in session.capabilities
        await session._login()
        await session._select()
        assert session.uidvalidity > 0
        await session.close()
        oauth_module.expire_access_tokens()
        session = ImapSession(mailbox.endpoint, timeout=10, use_idle=False)
        await session._connect(ssl.create_default_context())
        session._client.protocol.capabilities.discard("SASL-IR")
        await session._login()
        assert mailbox.tokens.refreshes == 2
    finally:
        await session.close()
