"""The exception tree of mailbot.

Every failure mailbot knows about is one of three kinds, and the kind decides what happens::

    MailbotError
    ├── ConfigError                  bad settings or rules.yaml: stop start-up (or keep the old
    │   └── RulesError               rules on reload) and say file, line and field
    ├── TransientError               worth retrying with capped backoff; nothing is lost
    │   ├── ImapTransientError       connection refused/cut, timeout, NO/BAD on a retryable command
    │   ├── SmtpTransientError       4xx replies, timeouts, connection errors
    │   ├── OAuthTransientError      the token endpoint is unreachable, slow or answers 5xx
    │   └── DatabaseBusyError        SQLite "database is locked", serialisation failures
    └── PermanentError               retrying will not help: record it, never drop the input
        ├── ParseError               the message cannot be parsed: stored raw and quarantined
        ├── ImapPermanentError       authentication refused, mailbox missing, TLS refused
        │   └── ImapBasicAuthRefusedError   the provider refuses password LOGIN: use XOAUTH2
        ├── SmtpPermanentError       5xx replies, refused recipients: the outbox row is failed
        │   └── SmtpBasicAuthRefusedError   the provider refuses password AUTH: use XOAUTH2
        ├── OAuthGrantError          the token endpoint refused the refresh token (invalid_grant)
        └── TlsRequiredError         a plain-text connection to a non-loopback host was asked for

``ImapBasicAuthRefusedError`` and ``SmtpBasicAuthRefusedError`` are also
``BasicAuthRefusedError``.

Handlers: the poller catches ``TransientError`` per connection turn (reconnect with backoff),
the intake catches anything per message (store raw bytes, quarantine, carry on), the sender
catches per outbox row (retry or fail the row). ``CancelledError`` is never swallowed.
"""

from __future__ import annotations


class MailbotError(Exception):
    """Base of every error mailbot raises on purpose."""


class ConfigError(MailbotError):
    """Settings or rules are invalid; the message names the file, line and field."""


class RulesError(ConfigError):
    """rules.yaml failed validation."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TransientError(MailbotError):
    """A failure that a retry may cure."""


class PermanentError(MailbotError):
    """A failure that a retry will not cure."""


class ImapTransientError(TransientError):
    """IMAP connection trouble: reconnect and retry."""


class ImapThrottledError(ImapTransientError):
    """The server asks us to slow down ([UNAVAILABLE], [LIMIT], "too many connections"):
    wait at least ``retry_after`` seconds before the next try."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ImapPermanentError(PermanentError):
    """IMAP refused us for good (authentication, missing mailbox): tell the operator."""


class SmtpTransientError(TransientError):
    """SMTP 4xx, timeout or connection error: retry the outbox row later."""


class SmtpPermanentError(PermanentError):
    """SMTP 5xx or all recipients refused: the outbox row fails with this reason."""


class DatabaseBusyError(TransientError):
    """The database is busy or a transaction lost a race: retry."""


class ParseError(PermanentError):
    """A message could not be parsed at all; its raw bytes are stored and quarantined."""


class TlsRequiredError(PermanentError, ConfigError):
    """Plain text was requested towards a host that is not loopback."""


class BasicAuthRefusedError(PermanentError):
    """The provider no longer accepts a password (basic auth): the message says what to set."""


class ImapBasicAuthRefusedError(BasicAuthRefusedError, ImapPermanentError):
    """IMAP LOGIN refused because the provider requires OAuth (XOAUTH2)."""


class SmtpBasicAuthRefusedError(BasicAuthRefusedError, SmtpPermanentError):
    """SMTP AUTH refused because the provider requires OAuth (XOAUTH2)."""


class OAuthTransientError(TransientError):
    """The OAuth token endpoint could not be reached or failed (5xx, timeout): retry later."""


class OAuthGrantError(PermanentError):
    """The token endpoint refused our grant for good (``invalid_grant``, a wrong client):
    a person must create a new refresh token or fix the client settings."""
