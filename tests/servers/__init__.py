"""Real servers for the tests: what the ``imap_server`` fixtures hand to a test.

pymap (in-process, :mod:`mailbot.devservers.pymap_server`) and Dovecot (a subprocess,
:mod:`tests.servers.dovecot`) look the same to a test through :class:`ImapTestServer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailbot.endpoints import Endpoint, Security


def _unsupported() -> None:
    raise NotImplementedError("this server cannot do that")


@dataclass
class ImapTestServer:
    """A running IMAP server with one user whose INBOX started empty."""

    kind: str  # "pymap" or "dovecot"
    host: str
    port: int  # plain and STARTTLS
    user: str
    password: str
    tls_port: int | None = None  # implicit TLS (Dovecot only)
    starttls: bool = False  # the server offers STARTTLS
    kill: Callable[[], None] = _unsupported  # cut every connection, like a crash
    freeze: Callable[[], None] = _unsupported  # stop answering, connections stay open

    @property
    def url(self) -> str:
        """``imap+plain://user@host:port/INBOX``."""
        return f"imap+plain://{self.user}@{self.host}:{self.port}/INBOX"

    def endpoint(
        self,
        security: Security = Security.PLAIN,
        *,
        mailbox: str = "INBOX",
        password: str | None = None,
    ) -> Endpoint:
        """An endpoint for this server's user; TLS ones do not verify the (self-signed) cert."""
        port = self.port
        if security is Security.TLS:
            if self.tls_port is None:
                raise NotImplementedError(f"{self.kind} has no implicit TLS port here")
            port = self.tls_port
        return Endpoint(
            protocol="imap",
            security=security,
            host=self.host,
            port=port,
            user=self.user,
            password=self.password if password is None else password,
            mailbox=mailbox,
            verify_tls=security is Security.PLAIN,
        )
