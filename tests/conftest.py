"""Real servers for every test that needs one: pymap and Dovecot (IMAP), an aiosmtpd sink.

* ``imap_server``: parametrised over pymap (in-process, always there) and Dovecot (skipped
  when it is not installed; with ``MAILBOT_REQUIRE_DOVECOT=1`` that is a failure instead).
  Each test gets its own user with an empty INBOX.
* ``dovecot_imap``: Dovecot only (STARTTLS and implicit TLS tests).
* ``disposable_imap_server``: like ``imap_server`` but a server of the test's own, which it
  may kill or freeze.
* ``smtp_sink``: an SMTP sink on plain loopback (``mailbot.devservers.smtp_sink``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import pytest

from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from tests.servers import ImapTestServer
from tests.servers.dovecot import DovecotServer, dovecot_missing_reason

IMAP_KINDS = ["pymap", pytest.param("dovecot", marks=pytest.mark.dovecot)]
_users = itertools.count(1)


def _dovecot_unavailable(reason: str) -> NoReturn:
    if os.environ.get("MAILBOT_REQUIRE_DOVECOT") == "1":
        pytest.fail(f"MAILBOT_REQUIRE_DOVECOT=1 but Dovecot is unusable: {reason}", pytrace=False)
    pytest.skip(reason)


def _start_dovecot() -> DovecotServer:
    reason = dovecot_missing_reason()
    if reason is not None:
        _dovecot_unavailable(reason)
    try:
        return DovecotServer.start()
    except RuntimeError as exc:
        _dovecot_unavailable(str(exc))


def _dovecot_user(server: DovecotServer) -> ImapTestServer:
    user = f"user{next(_users)}"
    password = f"pw-{user}"
    server.add_user(user, password)
    return ImapTestServer(
        kind="dovecot",
        host=server.host,
        port=server.imap_port,
        user=user,
        password=password,
        tls_port=server.imaps_port,
        starttls=True,
        kill=server.kill,
        freeze=server.freeze,
    )


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """One Dovecot for the session (users are per test); do not kill or freeze it."""
    server = _start_dovecot()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=IMAP_KINDS)
async def imap_server(request: pytest.FixtureRequest) -> AsyncIterator[ImapTestServer]:
    """A real IMAP server with a fresh user and an empty INBOX (pymap, then Dovecot)."""
    if request.param == "dovecot":
        server: DovecotServer = request.getfixturevalue("dovecot_server")
        handle = _dovecot_user(server)
        # Sharing the session's Dovecot: killing or freezing it would break other tests.
        handle.kill = handle.freeze = _shared_server
        yield handle
        return
    async with _pymap() as handle:
        yield handle


@contextlib.asynccontextmanager
async def _pymap() -> AsyncIterator[ImapTestServer]:
    """A fresh in-process pymap, as a test server handle it may kill or freeze."""
    async with running_pymap("support", "pymap-secret") as srv:
        yield ImapTestServer(
            kind="pymap",
            host=srv.host,
            port=srv.port,
            user=srv.user,
            password=srv.password,
            kill=srv.kill,
            freeze=srv.freeze,
        )


def _shared_server() -> None:
    raise RuntimeError("use the disposable_imap_server fixture to kill or freeze a server")


@pytest.fixture
def dovecot_imap(dovecot_server: DovecotServer) -> ImapTestServer:
    """Dovecot with a fresh user: plain, STARTTLS (same port) and implicit TLS (tls_port)."""
    handle = _dovecot_user(dovecot_server)
    handle.kill = handle.freeze = _shared_server
    return handle


@pytest.fixture(params=IMAP_KINDS)
async def disposable_imap_server(request: pytest.FixtureRequest) -> AsyncIterator[ImapTestServer]:
    """A server of the test's own: it may ``kill()`` or ``freeze()`` it."""
    if request.param == "dovecot":
        server = _start_dovecot()
        try:
            yield _dovecot_user(server)
        finally:
            server.stop()
        return
    async with _pymap() as handle:
        yield handle


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """An SMTP server on plain loopback that keeps every message (see SmtpSink)."""
    async with running_smtp_sink() as sink:
        yield sink
