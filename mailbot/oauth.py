"""OAuth 2.0 for the mailbox: access tokens from a refresh token, the SASL XOAUTH2 string, and
recognising a provider's "no more passwords" refusal.

:class:`TokenSource` turns a long-lived refresh token into short-lived access tokens (RFC 6749
section 6, ``grant_type=refresh_token``), caches each until shortly before ``expires_in`` runs
out, lets one refresh run at a time, and forgets a token the mail server refused
(:meth:`TokenSource.invalidate`) so the next login gets a fresh one. IMAP and SMTP share one
source when both use XOAUTH2.

The POST runs in a worker thread (``urllib``, certificates verified, no redirects followed) so
it never blocks the event loop. ``invalid_grant`` (the refresh token was revoked or expired)
and a refused client are :class:`~mailbot.errors.OAuthGrantError` (permanent: a person must
act); a network error, a timeout or a 5xx is :class:`~mailbot.errors.OAuthTransientError`.

A provider may send a new refresh token with the access token (Microsoft does every time):
the new one replaces the old one in memory only. mailbot cannot write it back to
``MAILBOT_OAUTH_REFRESH_TOKEN_FILE`` (a systemd credential is read-only); after a restart the
configured token is used again, which works as long as the provider has not revoked it.

:func:`basic_auth_refusal` is a pure function over the server's answer to a password login:
it recognises Gmail's and Microsoft 365's refusals of basic authentication and says what to
configure instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

from mailbot.endpoints import is_loopback
from mailbot.errors import ConfigError, OAuthGrantError, OAuthTransientError

log = logging.getLogger(__name__)

GOOGLE = "google"
MICROSOFT = "microsoft"

#: Token endpoints of the well-known providers (Microsoft's takes the tenant).
TOKEN_URLS: dict[str, str] = {
    GOOGLE: "https://oauth2.googleapis.com/token",
    MICROSOFT: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
}

#: Scopes asked for by default: full mailbox access over IMAP and SMTP.
DEFAULT_SCOPES: dict[str, str] = {
    GOOGLE: "https://mail.google.com/",
    MICROSOFT: (
        "https://outlook.office.com/IMAP.AccessAsUser.All "
        "https://outlook.office.com/SMTP.Send offline_access"
    ),
}

DEFAULT_TIMEOUT = 30.0
#: An access token is used until this many seconds before it expires.
EXPIRY_MARGIN = 60.0
#: When the server gives no ``expires_in`` (it should), the token is kept this long.
DEFAULT_EXPIRES_IN = 3600.0
_MAX_BODY = 1024 * 1024
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
#: ``error`` codes of RFC 6749 section 5.2 a retry will not cure.
_PERMANENT_ERRORS = {
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """Where and how to refresh access tokens (secrets are kept out of ``repr``)."""

    token_url: str
    client_id: str
    refresh_token: str = field(repr=False)
    client_secret: str | None = field(default=None, repr=False)
    scope: str | None = None
    provider: str | None = None  # "google", "microsoft" or None (a token URL of its own)


def check_token_url(url: str, variable: str = "MAILBOT_OAUTH_TOKEN_URL") -> str:
    """The URL when it is https, or http to a loopback host (tests); else a ConfigError."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        raise ConfigError(f"{variable}={url!r}: {exc}") from exc
    if not host:
        raise ConfigError(f"{variable}={url!r}: no host")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host)):
        return url
    raise ConfigError(
        f"{variable}={url!r}: the token endpoint must be https:// (plain http only to a "
        "loopback host)"
    )


def oauth_config_from_env(
    env: Mapping[str, str], secret: Callable[[str], str | None]
) -> OAuthConfig:
    """Read the ``MAILBOT_OAUTH_*`` variables; ``secret(name)`` reads ``name`` or ``name_FILE``.

    A missing piece is a :class:`ConfigError` naming the variable.
    """
    provider = (env.get("MAILBOT_OAUTH_PROVIDER") or "").strip().lower() or None
    if provider is not None and provider not in TOKEN_URLS:
        raise ConfigError(
            f"MAILBOT_OAUTH_PROVIDER={provider!r}: use {' or '.join(sorted(TOKEN_URLS))}, "
            "or set MAILBOT_OAUTH_TOKEN_URL"
        )
    url = (env.get("MAILBOT_OAUTH_TOKEN_URL") or "").strip()
    if not url:
        if provider is None:
            raise ConfigError(
                "XOAUTH2 needs MAILBOT_OAUTH_PROVIDER (google or microsoft) or "
                "MAILBOT_OAUTH_TOKEN_URL"
            )
        tenant = (env.get("MAILBOT_OAUTH_TENANT") or "common").strip()
        if not _TENANT_RE.match(tenant):
            raise ConfigError(
                f"MAILBOT_OAUTH_TENANT={tenant!r}: a tenant id or domain "
                "(letters, digits, '.', '-')"
            )
        url = TOKEN_URLS[provider].format(tenant=tenant)
    check_token_url(url)
    client_id = (env.get("MAILBOT_OAUTH_CLIENT_ID") or "").strip()
    if not client_id:
        raise ConfigError("XOAUTH2 needs MAILBOT_OAUTH_CLIENT_ID")
    refresh_token = secret("MAILBOT_OAUTH_REFRESH_TOKEN")
    if not refresh_token:
        raise ConfigError(
            "XOAUTH2 needs MAILBOT_OAUTH_REFRESH_TOKEN or MAILBOT_OAUTH_REFRESH_TOKEN_FILE"
        )
    scope = (env.get("MAILBOT_OAUTH_SCOPE") or "").strip() or None
    if scope is None and provider is not None:
        scope = DEFAULT_SCOPES[provider]
    return OAuthConfig(
        token_url=url,
        client_id=client_id,
        refresh_token=refresh_token.strip(),
        client_secret=secret("MAILBOT_OAUTH_CLIENT_SECRET"),
        scope=scope,
        provider=provider,
    )


# --------------------------------------------------------------------------- SASL


def xoauth2_sasl(user: str, token: str) -> str:
    """The base64 SASL XOAUTH2 initial response for ``user`` and an access token."""
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------- the token source


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint that redirects is misconfigured: never follow (no https -> http)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes


class TokenSource:
    """Access tokens for one account, refreshed with its refresh token when needed."""

    def __init__(
        self,
        config: OAuthConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        margin: float = EXPIRY_MARGIN,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._refresh_token = config.refresh_token
        self._timeout = timeout
        self._margin = margin
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        #: How many refresh requests were sent (for tests and ``status``).
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenSource({self.config.token_url!r}, client_id={self.config.client_id!r})"

    async def token(self) -> str:
        """A valid access token: the cached one, or a fresh one from the token endpoint."""
        cached = self._cached()
        if cached is not None:
            return cached
        async with self._lock:  # one refresh in flight; the others wait and reuse its token
            cached = self._cached()
            if cached is not None:
                return cached
            return await self._refresh()

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached access token (the server refused it); the next call refreshes.

        With ``token``, only that token is forgotten: a newer one another connection already
        fetched stays.
        """
        if token is None or token == self._token:
            self._token = None
            self._expires_at = 0.0

    def _cached(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        return None

    async def _refresh(self) -> str:
        config = self.config
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": config.client_id,
        }
        if config.client_secret:
            form["client_secret"] = config.client_secret
        if config.scope:
            form["scope"] = config.scope
        self.refreshes += 1
        try:
            async with asyncio.timeout(self._timeout + 5.0):
                answer = await asyncio.to_thread(self._post, urlencode(form).encode("ascii"))
        except TimeoutError:
            raise OAuthTransientError(
                f"OAuth token endpoint {config.token_url}: no answer within {self._timeout:g} s"
            ) from None
        data = self._json(answer)
        if answer.status != 200:
            self._refused(answer, data)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthTransientError(
                f"OAuth token endpoint {config.token_url}: answer without an access_token"
            )
        token_type = data.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise OAuthGrantError(
                f"OAuth token endpoint {config.token_url}: token_type {token_type!r}, "
                "XOAUTH2 needs a Bearer token"
            )
        expires_in = _seconds(data.get("expires_in"))
        margin = min(self._margin, expires_in / 2)
        self._token = token
        self._expires_at = self._clock() + expires_in - margin
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._refresh_token = rotated
            log.info(
                "OAuth: the token endpoint rotated the refresh token; the new one is kept in "
                "memory only (mailbot cannot write it back to MAILBOT_OAUTH_REFRESH_TOKEN"
                "[_FILE]): after a restart the configured one is used again"
            )
        log.info("OAuth: new access token from %s, valid for %.0f s", config.token_url, expires_in)
        return token

    def _post(self, body: bytes) -> _Answer:
        """The blocking POST (in a worker thread): status and body, errors classified."""
        request = urllib.request.Request(
            self.config.token_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "mailbot",
            },
        )
        opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=self._ssl_context)
        )
        try:
            with opener.open(request, timeout=self._timeout) as response:
                return _Answer(int(response.status), response.read(_MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Answer(int(exc.code), exc.read(_MAX_BODY))
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise OAuthGrantError(
                    f"OAuth token endpoint {self.config.token_url}: untrusted certificate: "
                    f"{reason.verify_message}"
                ) from exc
            raise OAuthTransientError(
                f"OAuth token endpoint {self.config.token_url}: {reason}"
            ) from exc
        except (OSError, ValueError) as exc:  # timeouts, resets, malformed answers
            raise OAuthTransientError(
                f"OAuth token endpoint {self.config.token_url}: {type(exc).__name__}: {exc}"
            ) from exc

    def _json(self, answer: _Answer) -> dict[str, Any]:
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        if answer.status >= 500 or answer.status == 200:
            raise OAuthTransientError(
                f"OAuth token endpoint {self.config.token_url}: HTTP {answer.status} without a "
                "JSON object"
            )
        return {}

    def _refused(self, answer: _Answer, data: dict[str, Any]) -> NoReturn:
        url = self.config.token_url
        error = str(data.get("error") or f"HTTP {answer.status}")
        description = str(data.get("error_description") or "").strip()
        said = f"{error}: {description}" if description else error
        if answer.status >= 500 or answer.status == 429 or error == "temporarily_unavailable":
            raise OAuthTransientError(f"OAuth token endpoint {url}: {said}")
        if error == "invalid_grant":
            message = (
                f"OAuth token endpoint {url} refused the refresh token ({said}): the refresh "
                "token was revoked or expired: create a new one and put it in "
                "MAILBOT_OAUTH_REFRESH_TOKEN[_FILE]"
            )
        elif error in {"invalid_client", "unauthorized_client"}:
            message = (
                f"OAuth token endpoint {url} refused the client ({said}): check "
                "MAILBOT_OAUTH_CLIENT_ID and MAILBOT_OAUTH_CLIENT_SECRET[_FILE]"
            )
        elif error in _PERMANENT_ERRORS or 400 <= answer.status < 500:
            message = f"OAuth token endpoint {url} refused the request ({said})"
        else:
            raise OAuthTransientError(f"OAuth token endpoint {url}: {said}")
        log.error("%s", message)
        raise OAuthGrantError(message)


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return float(value)  # Microsoft's v1 endpoint sends a string
    return DEFAULT_EXPIRES_IN


# --------------------------------------------------------------------------- basic auth refused

_GMAIL_PATTERNS = (
    re.compile(r"application-specific password required", re.IGNORECASE),
    re.compile(r"please log ?in via your web ?browser", re.IGNORECASE),
    re.compile(r"web login required", re.IGNORECASE),
    re.compile(r"\b5\.7\.9\b.*application-specific password", re.IGNORECASE),
)
_MICROSOFT_SMTP_PATTERNS = (
    re.compile(r"5\.7\.139\b.*basic authentication is disabled", re.IGNORECASE),
    re.compile(r"5\.7\.139\b.*smtpclientauthentication is disabled", re.IGNORECASE),
    re.compile(r"5\.7\.139\b.*security defaults", re.IGNORECASE),
)
_MICROSOFT_IMAP_PATTERN = re.compile(r"\b(authenticate|login) failed\b", re.IGNORECASE)
_MICROSOFT_DOMAINS = ("office365.com", "outlook.com", "office.com")


def _is_microsoft(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in _MICROSOFT_DOMAINS)


def _settings_advice(protocol: str, provider: str) -> str:
    auth = f"MAILBOT_{protocol.upper()}_AUTH=xoauth2"
    return (
        f"set {auth} with MAILBOT_OAUTH_PROVIDER={provider} (or MAILBOT_OAUTH_TOKEN_URL), "
        "MAILBOT_OAUTH_CLIENT_ID, MAILBOT_OAUTH_CLIENT_SECRET[_FILE] and "
        "MAILBOT_OAUTH_REFRESH_TOKEN[_FILE]"
    )


def basic_auth_refusal(protocol: str, host: str, text: str) -> str | None:
    """Why a password login was refused, when the answer is a provider refusing basic auth.

    ``protocol`` is ``"imap"`` or ``"smtp"``, ``host`` the server's name, ``text`` the
    server's answer (SMTP: code and message). Returns an explanation naming the settings to
    use instead, or None for any other refusal (a wrong password stays a wrong password).
    """
    said = " ".join(text.split())
    name = protocol.upper()
    if any(pattern.search(said) for pattern in _GMAIL_PATTERNS):
        return (
            f"{name} {host}: Google refused the password ({said}). Gmail does not accept the "
            "account password from mail programs (an app password needs 2-step "
            f"verification, and OAuth is the supported way): {_settings_advice(protocol, GOOGLE)}"
        )
    if protocol == "smtp" and any(p.search(said) for p in _MICROSOFT_SMTP_PATTERNS):
        return (
            f"{name} {host}: Microsoft 365 refused the password ({said}). Basic "
            "authentication (SMTP AUTH with a password) is disabled for this mailbox or "
            f"tenant: {_settings_advice(protocol, MICROSOFT)}"
        )
    if protocol == "imap" and _is_microsoft(host) and _MICROSOFT_IMAP_PATTERN.search(said):
        return (
            f"{name} {host}: Microsoft refused the password ({said}). Exchange Online has "
            "retired basic authentication for IMAP, so this is the likely cause even when the "
            f"password is right: {_settings_advice(protocol, MICROSOFT)}"
        )
    return None
