"""A small but real OAuth 2.0 authorization server for the tests (``http.server`` in a thread).

Endpoints (plain HTTP on loopback):

``POST /token``
    RFC 6749 section 6, ``grant_type=refresh_token``: checks the client (``client_id``, and
    ``client_secret`` when the client has one) and the refresh token, issues a Bearer access
    token valid ``expires_in`` seconds. With ``rotate = True`` each answer carries a new refresh
    token and the old one stops working (``invalid_grant``). Errors are RFC 6749 section 5.2
    JSON (``invalid_grant``, ``invalid_client``, ...).
``POST /introspect``
    RFC 7662: ``token=...`` gives ``{"active": true, "username": ..., "scope": ..., "exp":
    ...}`` or ``{"active": false}``. Dovecot's ``oauth2`` passdb asks it.

Test controls: :meth:`OAuthServer.add_account`, :meth:`revoke` (the refresh token),
:meth:`expire_access_tokens` (the server forgets the tokens it issued while clients still cache
them), :meth:`fail_next` (5xx answers). Every token request is kept in ``token_requests``.
The thread is the server's own: a test's event loop, Dovecot's auth process and urllib in a
worker thread can all call it.
"""

from __future__ import annotations

import json
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from mailbot.oauth import OAuthConfig


@dataclass
class _Issued:
    user: str
    scope: str
    expires_at: float  # time.time()


@dataclass
class OAuthServer:
    """Handle on a running server: its URLs, accounts, issued tokens and fault switches."""

    host: str
    port: int
    client_id: str = "mailbot-test-client"
    client_secret: str | None = "client-secret"
    expires_in: int = 3600
    rotate: bool = False
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    access_tokens: dict[str, _Issued] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    introspections: list[str] = field(default_factory=list)  # the tokens asked about
    fail_count: int = 0
    fail_status: int = 503
    delay: float = 0.0  # seconds before each token answer (a slow server)
    scheme: str = "http"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def token_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/introspect"

    def add_account(self, user: str) -> str:
        """A new refresh token for ``user``."""
        token = "rt-" + secrets.token_urlsafe(16)
        with self._lock:
            self.refresh_tokens[token] = user
        return token

    def config(self, refresh_token: str, *, scope: str | None = "mail") -> OAuthConfig:
        """An :class:`OAuthConfig` for mailbot pointing at this server."""
        return OAuthConfig(
            token_url=self.token_url,
            client_id=self.client_id,
            refresh_token=refresh_token,
            client_secret=self.client_secret,
            scope=scope,
        )

    def revoke(self, refresh_token: str) -> None:
        """The refresh token and every access token issued for its user stop working."""
        with self._lock:
            user = self.refresh_tokens.pop(refresh_token, None)
            for token, issued in list(self.access_tokens.items()):
                if issued.user == user:
                    del self.access_tokens[token]

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (clients still believe in theirs)."""
        with self._lock:
            for issued in self.access_tokens.values():
                issued.expires_at = 0.0

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` token requests with ``status`` (a server error)."""
        with self._lock:
            self.fail_count, self.fail_status = count, status

    def user_of(self, access_token: str) -> str | None:
        """The user an access token is valid for, or None (unknown or expired)."""
        with self._lock:
            issued = self.access_tokens.get(access_token)
            if issued is None or issued.expires_at <= time.time():
                return None
            return issued.user

    # ------------------------------------------------------------------ request handling

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.delay > 0:
            time.sleep(self.delay)  # this request's own thread
        with self._lock:
            self.token_requests.append(form)
            if self.fail_count > 0:
                self.fail_count -= 1
                return self.fail_status, {"error": "server_error"}
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}
            if form.get("client_id") != self.client_id or (
                self.client_secret is not None and form.get("client_secret") != self.client_secret
            ):
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            refresh = form.get("refresh_token", "")
            user = self.refresh_tokens.get(refresh)
            if user is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            access = "at-" + secrets.token_urlsafe(16)
            scope = form.get("scope", "mail")
            self.access_tokens[access] = _Issued(user, scope, time.time() + self.expires_in)
            answer: dict[str, Any] = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "scope": scope,
            }
            if self.rotate:
                del self.refresh_tokens[refresh]
                rotated = "rt-" + secrets.token_urlsafe(16)
                self.refresh_tokens[rotated] = user
                answer["refresh_token"] = rotated
            return 200, answer

    def _introspect(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("token", "")
        with self._lock:
            self.introspections.append(token)
        with self._lock:
            issued = self.access_tokens.get(token)
        if issued is None or issued.expires_at <= time.time():
            return 200, {"active": False}
        return 200, {
            "active": True,
            "username": issued.user,
            "scope": issued.scope,
            "exp": int(issued.expires_at),
            "token_type": "Bearer",
        }


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        state = self.server.state
        if self.path == "/token":
            status, answer = state._token(form)
        elif self.path == "/introspect":
            status, answer = state._introspect(form)
        else:
            status, answer = 404, {"error": "not_found"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) or refused our certificate is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], state: OAuthServer) -> None:
        self.state = state
        super().__init__(address, _Handler)


@contextmanager
def running_oauth_server(
    host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None, **options: Any
) -> Iterator[OAuthServer]:
    """Run an :class:`OAuthServer` on a free loopback port for the block (https with ``tls``,
    a server-side context)."""
    state = OAuthServer(host=host, port=0, scheme="https" if tls else "http", **options)
    httpd = _HttpServer((host, 0), state)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="oauth-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5.0)
