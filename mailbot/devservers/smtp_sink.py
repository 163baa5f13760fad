"""An SMTP server (aiosmtpd) in the caller's event loop that keeps every message it accepts.

Used by ``mailbot demo``, the tests and the benchmarks::

    async with running_smtp_sink() as sink:
        url = f"smtp+plain://{sink.host}:{sink.port}"
        ...
        await sink.wait_for(3, timeout=10)
        sink.messages[0].raw

Fault injection, visible to any SMTP client:

* a recipient whose local part contains ``tempfail`` is answered ``451`` at RCPT,
  one containing ``reject`` ``550``;
* :meth:`SmtpSink.fail_next_data` answers the next *n* DATA commands with ``451`` (or
  ``421``, after which the connection is closed, as RFC 5321 says);
* ``data_delay`` seconds before each DATA answer: a slow server.

TLS: ``security=Security.STARTTLS`` offers STARTTLS and refuses mail before it,
``Security.TLS`` is implicit TLS; both use a self-signed certificate made at start-up with the
``openssl`` command, so clients connect with ``verify_tls=False`` (loopback only).
Optional ``credentials=(user, password)`` requires SMTP AUTH (over TLS when the sink has TLS;
without it on a plain sink, which only listens on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailbot.devservers import self_signed_cert
from mailbot.endpoints import Endpoint, Security

log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One accepted message: the envelope, the exact DATA bytes and when it arrived."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    arrived: float  # time.monotonic()
    tls: bool
    auth_user: str | None = None


@dataclass
class SmtpSink:
    """Handle on a running sink: where it listens, what it got, which faults to inject."""

    host: str
    port: int
    security: Security = Security.PLAIN
    messages: list[ReceivedMessage] = field(default_factory=list)
    data_fail_count: int = 0  # answer the next N DATA commands with data_fail_code
    data_fail_code: int = 451
    data_attempts: int = 0  # DATA commands seen, failed ones included
    credentials: tuple[str, str] | None = None
    data_delay: float = 0.0  # seconds before each DATA reply (a slow server)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)

    @property
    def url(self) -> str:
        """An ``smtp+plain://``, ``smtp://`` or ``smtps://`` URL for this sink."""
        scheme = {Security.PLAIN: "smtp+plain", Security.STARTTLS: "smtp", Security.TLS: "smtps"}
        return f"{scheme[self.security]}://{self.host}:{self.port}"

    def endpoint(self) -> Endpoint:
        """An SMTP :class:`Endpoint` for this sink (certificate not verified: self-signed)."""
        user, password = self.credentials or (None, None)
        return Endpoint(
            protocol="smtp",
            security=self.security,
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            mailbox="",
            verify_tls=self.security is Security.PLAIN,
        )

    def fail_next_data(self, count: int, code: int = 451) -> None:
        """Answer the next ``count`` DATA commands with ``code`` (451, 421, 554...)."""
        self.data_fail_count = count
        self.data_fail_code = code

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages arrived; ``TimeoutError`` says how many did."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.messages) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"SMTP sink got {len(self.messages)} of {count} messages in {timeout:g} s"
            ) from None
        return list(self.messages)

    async def _add(self, message: ReceivedMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()


class _Handler:
    """aiosmtpd handler hooks: fault injection at RCPT and DATA, storage of accepted mail."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.rsplit("@", 1)[0].lower()
        if "tempfail" in local:
            return "451 4.3.0 Temporary failure for this recipient (injected)"
        if "reject" in local:
            return "550 5.1.1 No such user here (injected)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        sink = self.sink
        sink.data_attempts += 1
        if sink.data_delay > 0:
            await asyncio.sleep(sink.data_delay)
        if sink.data_fail_count > 0:
            sink.data_fail_count -= 1
            code = sink.data_fail_code
            if code == 421:
                # 421 means the server closes the channel: do it once the reply is written.
                asyncio.get_running_loop().call_soon(server.transport.close)
                return "421 4.3.2 Service shutting down (injected)"
            return f"{code} {code // 100}.3.0 Injected failure at DATA"
        raw = envelope.original_content or b""
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        await sink._add(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=bytes(raw),
                arrived=time.monotonic(),
                tls=tls,
                auth_user=auth.login.decode() if auth is not None else None,
            )
        )
        log.debug("SMTP sink: message from %s to %s", envelope.mail_from, envelope.rcpt_tos)
        return "250 2.0.0 OK: queued"


def _authenticator(credentials: tuple[str, str]) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    user, password = credentials

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == user
            and data.password.decode() == password
        )
        # handled=False: aiosmtpd then answers 535 itself on failure.
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check


async def _server_context(directory: Path) -> ssl.SSLContext:
    files = await asyncio.to_thread(self_signed_cert, directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


@contextlib.asynccontextmanager
async def running_smtp_sink(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    security: Security = Security.PLAIN,
    credentials: tuple[str, str] | None = None,
) -> AsyncIterator[SmtpSink]:
    """Run the sink in the current event loop for the duration of the block (free port)."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    sink = SmtpSink(host=host, port=port, security=security, credentials=credentials)
    handler = _Handler(sink)
    with tempfile.TemporaryDirectory(prefix="mailbot-smtp-sink-") as tmp:
        context = None if security is Security.PLAIN else await _server_context(Path(tmp))
        protocols: list[Any] = []

        def factory() -> Any:
            with warnings.catch_warnings():
                # AUTH without STARTTLS: fine here (implicit TLS, or a loopback-only sink).
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                protocol = _make_protocol()
            protocols[:] = [p for p in protocols if p.transport is not None]
            protocols.append(protocol)
            return protocol

        def _make_protocol() -> Any:
            return SMTP(
                handler,
                hostname="mailbot-sink.localhost",
                ident="mailbot SMTP sink",
                loop=loop,
                tls_context=context if security is Security.STARTTLS else None,
                require_starttls=security is Security.STARTTLS,
                enable_SMTPUTF8=True,
                auth_required=credentials is not None,
                # aiosmtpd only knows about STARTTLS; implicit TLS is encrypted all the same.
                auth_require_tls=security is Security.STARTTLS,
                authenticator=_authenticator(credentials) if credentials else None,
            )

        server = await loop.create_server(
            factory, host, port, ssl=context if security is Security.TLS else None
        )
        sink.port = int(server.sockets[0].getsockname()[1])
        log.info("SMTP sink listening on %s (%s)", sink.url, security.value)
        try:
            yield sink
        finally:
            server.close()
            await _close_connections(protocols)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SHUTDOWN_TIMEOUT):
                    await server.wait_closed()
            log.info("SMTP sink %s stopped (%d messages)", sink.url, len(sink.messages))


async def _close_connections(protocols: list[Any]) -> None:
    """Close client connections still open and let their handler tasks finish."""
    tasks = []
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
        task = getattr(protocol, "_handler_coroutine", None)
        if task is not None and not task.done():
            tasks.append(task)
    if tasks:
        await asyncio.wait(tasks, timeout=_SHUTDOWN_TIMEOUT)
