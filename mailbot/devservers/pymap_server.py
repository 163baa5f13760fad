"""A real IMAP server (pymap, in-memory ``dict`` backend) running inside the caller's loop.

Used by ``mailbot demo``, the tests and the benchmarks::

    async with running_pymap("support", "secret") as srv:
        url = f"imap+plain://{srv.user}@{srv.host}:{srv.port}/INBOX"

The server has one user and an empty INBOX, speaks plain IMAP on a loopback port (no STARTTLS:
pymap would need a certificate, and loopback plain text is what ``imap+plain://`` is for) and
supports IDLE, MOVE and UIDPLUS. ``pymap`` is an optional dependency (the ``demo`` extra); it
is imported only when a server is started.

Besides the happy path it can simulate failures: :meth:`PymapServer.kill` cuts every client
connection (like a crashed server) and :meth:`PymapServer.freeze` stops answering without
closing anything (like a half-open TCP connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from argparse import Namespace
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mailbot.endpoints import Endpoint, Security

log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT = 5.0


@dataclass
class PymapServer:
    """Handle on a running in-process pymap server."""

    host: str
    port: int
    user: str
    password: str
    _server: asyncio.Server | None = field(default=None, repr=False)
    _connections: dict[asyncio.Task[None], asyncio.StreamWriter] = field(
        default_factory=dict, repr=False
    )

    @property
    def url(self) -> str:
        """``imap+plain://user@host:port/INBOX`` (the password is not part of it)."""
        return f"imap+plain://{self.user}@{self.host}:{self.port}/INBOX"

    def endpoint(self, mailbox: str = "INBOX", *, password: str | None = None) -> Endpoint:
        """An ``imap+plain`` :class:`Endpoint` for this server (loopback, so plain is allowed)."""
        return Endpoint(
            protocol="imap",
            security=Security.PLAIN,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password if password is None else password,
            mailbox=mailbox,
        )

    @property
    def connection_count(self) -> int:
        """Number of client connections currently open."""
        return len(self._connections)

    def kill(self) -> None:
        """Stop listening and abort every client connection, like a crashed server."""
        self._drop_everything()
        log.info("pymap %s:%d killed", self.host, self.port)

    def _drop_everything(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections.values()):
            writer.transport.abort()

    def freeze(self) -> None:
        """Stop reading from every client: connections stay open but nothing is answered."""
        for writer in list(self._connections.values()):
            transport = writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
        log.info("pymap %s:%d frozen", self.host, self.port)

    async def _aclose(self) -> None:
        self._drop_everything()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_SHUTDOWN_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SHUTDOWN_TIMEOUT):
                    await self._server.wait_closed()


def _like_dovecot() -> None:
    """Patch two gaps of pymap's dict backend so that it behaves as Dovecot does.

    - **Keywords.** Its mailboxes only define the system flags, so ``STORE +FLAGS ($Foo)``
      is silently ignored; adding the ``\\*`` wildcard to their permanent flags (what
      Dovecot announces) makes it keep ``$MailbotDone``.
    - **IDLE.** It waits for the *next* change before it computes updates, so mail appended
      between a client's last command and its IDLE sat unreported until something else
      changed (the daemon saw it only when ``MAILBOT_IDLE_SECONDS`` ran out). Dovecot reports
      it when IDLE starts; so does pymap now.

    The class is patched once; only dev servers use pymap in this process.
    """
    from pymap.backend.dict.mailbox import MailboxData
    from pymap.parsing.specials.flag import Recent, Wildcard, get_system_flags

    if getattr(MailboxData, "_mailbot_like_dovecot", False):
        return
    flags = frozenset(get_system_flags() - {Recent} | {Wildcard})
    setattr(MailboxData, "permanent_flags", property(lambda _self: flags))  # noqa: B010

    waiting = MailboxData.update_selected

    async def update_selected(self: Any, selected: Any, *, wait_on: Any = None) -> Any:
        seen = selected.mod_sequence
        if wait_on is not None and seen is not None and self._mod_sequences.highest > seen:
            wait_on = None  # changed since the session last looked: report it now
        return await waiting(self, selected, wait_on=wait_on)

    setattr(MailboxData, "update_selected", update_selected)  # noqa: B010
    setattr(MailboxData, "_mailbot_like_dovecot", True)  # noqa: B010


async def _make_imap_server(user: str, password: str) -> Any:
    """Build pymap's connection handler with a dict backend holding one user, empty INBOX."""
    from pymap.backend.dict import Config, Login
    from pymap.concurrent import Subsystem
    from pymap.imap import IMAPServer
    from pymap.user import Passwords, UserMetadata
    from pysasl.hashing import Cleartext

    class _Config(Config):
        @property
        def greeting(self) -> bytes:
            # pymap's default calls socket.getfqdn() on every connection (a DNS lookup).
            return b"mailbot pymap ready"

    _like_dovecot()
    args = Namespace(
        host=None,
        port=0,
        debug=False,
        cert=None,
        key=None,
        tls=False,
        demo_data=False,
        demo_user=user,
        demo_password=password,
        passlib_cfg=None,
        proxy_protocol=None,
        inherited_sockets=None,
    )
    config = _Config.from_args(
        args,
        # No thread pool (nothing to shut down) and no slow hashing: this is a test server.
        cpu_subsystem=Subsystem.for_asyncio(),
        hash_context=Cleartext(),
        invalid_user_sleep=0.0,
        reject_dnsbl=False,
    )
    login = Login(config)
    hashed = await Passwords(config).hash_password(password)
    await login.demo_user_identity.set(UserMetadata(config, user, password=hashed))
    return IMAPServer(login, config)


@contextlib.asynccontextmanager
async def running_pymap(
    user: str = "support", password: str = "secret", *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[PymapServer]:
    """Run a pymap IMAP server in the current event loop for the duration of the block.

    ``port=0`` picks a free port; read it from the yielded :class:`PymapServer`.
    """
    from proxyprotocol.sock import SocketInfo

    imap_server = await _make_imap_server(user, password)
    srv = PymapServer(host=host, port=port, user=user, password=password)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        srv._connections[task] = writer
        try:
            sock_info = SocketInfo.get(writer, None, unique_id=uuid.uuid4().bytes)
            await imap_server(reader, writer, sock_info)
        except (ConnectionError, EOFError):
            log.debug("pymap %s:%d: client connection dropped", srv.host, srv.port)
        finally:
            srv._connections.pop(task, None)
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, host, port)
    srv._server = server
    srv.port = int(server.sockets[0].getsockname()[1])
    log.info("pymap listening on %s:%d (user %s)", srv.host, srv.port, user)
    try:
        yield srv
    finally:
        await srv._aclose()
        log.info("pymap %s:%d stopped", srv.host, srv.port)
