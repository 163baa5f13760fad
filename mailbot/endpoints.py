"""IMAP and SMTP endpoints parsed from URLs, with the TLS policy enforced at parse time.

``imaps://user@host:993/INBOX``   implicit TLS
``imap://user@host:143/INBOX``    STARTTLS, required (the connection fails if it is refused)
``imap+plain://user@127.0.0.1:1143/INBOX``  no TLS: allowed only towards loopback
Same for ``smtps://`` (implicit TLS, 465), ``smtp://`` (STARTTLS, 587) and ``smtp+plain://``.

There is no downgrade: ``imap://`` never falls back to plain text when STARTTLS is missing.

``auth`` is how we log in: :attr:`Auth.PASSWORD` (LOGIN / SMTP AUTH with ``password``) or
:attr:`Auth.XOAUTH2` (SASL XOAUTH2 with an access token from ``tokens``, a
:class:`mailbot.oauth.TokenSource` that IMAP and SMTP may share).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mailbot.errors import ConfigError, TlsRequiredError

if TYPE_CHECKING:
    from mailbot.oauth import TokenSource


class Security(enum.StrEnum):
    TLS = "tls"
    STARTTLS = "starttls"
    PLAIN = "plain"


class Auth(enum.StrEnum):
    PASSWORD = "password"
    XOAUTH2 = "xoauth2"

    @classmethod
    def parse(cls, text: str | None, variable: str) -> Auth:
        value = (text or "").strip().lower() or cls.PASSWORD.value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"{variable}={text!r}: use 'password' or 'xoauth2'") from None


_SCHEMES: dict[str, tuple[str, Security, int]] = {
    "imaps": ("imap", Security.TLS, 993),
    "imap": ("imap", Security.STARTTLS, 143),
    "imap+plain": ("imap", Security.PLAIN, 143),
    "smtps": ("smtp", Security.TLS, 465),
    "smtp": ("smtp", Security.STARTTLS, 587),
    "smtp+plain": ("smtp", Security.PLAIN, 25),
}


def is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    protocol: str  # "imap" or "smtp"
    security: Security
    host: str
    port: int
    user: str | None
    password: str | None
    mailbox: str  # IMAP folder; empty for SMTP
    # TLS certificate verification. Only a loopback host may turn it off (tests, demo).
    verify_tls: bool = True
    auth: Auth = Auth.PASSWORD
    #: Access tokens for ``Auth.XOAUTH2`` (None with passwords).
    tokens: TokenSource | None = field(default=None, compare=False, repr=False)

    def redacted(self) -> str:
        scheme = {Security.TLS: "s", Security.STARTTLS: "", Security.PLAIN: "+plain"}
        user = f"{self.user}@" if self.user else ""
        tail = f"/{self.mailbox}" if self.mailbox else ""
        return f"{self.protocol}{scheme[self.security]}://{user}{self.host}:{self.port}{tail}"


def parse_endpoint(
    url: str,
    *,
    protocol: str,
    password: str | None = None,
    verify_tls: bool = True,
    auth: Auth = Auth.PASSWORD,
    tokens: TokenSource | None = None,
) -> Endpoint:
    """Parse a connection URL; a password in the URL is accepted but ``password`` wins.

    ``auth=Auth.XOAUTH2`` needs a user in the URL and ``tokens``.
    """
    try:
        parts = urlsplit(url)
        port_in_url = parts.port
    except ValueError as exc:
        raise ConfigError(f"{protocol.upper()} URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or _SCHEMES[scheme][0] != protocol:
        allowed = ", ".join(f"{s}://" for s, (p, _, _) in _SCHEMES.items() if p == protocol)
        raise ConfigError(f"{protocol.upper()} URL {url!r}: scheme must be one of {allowed}")
    _, security, default_port = _SCHEMES[scheme]
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"{protocol.upper()} URL {url!r}: no host")
    if security is Security.PLAIN and not is_loopback(host):
        raise TlsRequiredError(
            f"{protocol.upper()} URL {url!r}: plain text is only allowed to a loopback host; "
            f"use {protocol}s:// (TLS) or {protocol}:// (STARTTLS)"
        )
    if not verify_tls and not is_loopback(host):
        raise TlsRequiredError(
            f"{protocol.upper()} URL {url!r}: certificate verification can only be turned off "
            "for a loopback host"
        )
    if auth is Auth.XOAUTH2 and not parts.username:
        raise ConfigError(
            f"{protocol.upper()} URL {url!r}: XOAUTH2 needs the mailbox user in the URL "
            f"({protocol}s://user@{host})"
        )
    if auth is Auth.XOAUTH2 and tokens is None:
        raise ConfigError(
            f"{protocol.upper()} URL {url!r}: XOAUTH2 needs a token source (MAILBOT_OAUTH_*)"
        )
    mailbox = unquote(parts.path.lstrip("/")) if protocol == "imap" else ""
    return Endpoint(
        protocol=protocol,
        security=security,
        host=host,
        port=port_in_url or default_port,
        user=unquote(parts.username) if parts.username else None,
        password=password
        if password is not None
        else (unquote(parts.password) if parts.password else None),
        mailbox=mailbox or ("INBOX" if protocol == "imap" else ""),
        verify_tls=verify_tls,
        auth=auth,
        tokens=tokens if auth is Auth.XOAUTH2 else None,
    )
