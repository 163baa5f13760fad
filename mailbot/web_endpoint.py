"""The daemon's tiny HTTP endpoint: ``GET /metrics`` (Prometheus) and ``GET /healthz``.

``MAILBOT_HTTP_LISTEN``: unset or ``off`` disables it; ``9325`` listens on
``127.0.0.1:9325``; ``HOST:PORT`` (``[::1]:9325`` for IPv6) on that address. Loopback is the
default; another address must be named and the daemon warns that the metrics are exposed
beyond loopback (put a reverse proxy with TLS and authentication in front of it).

A plain asyncio server, no web framework: one request per connection (``Connection:
close``), the request head bounded (``MAX_REQUEST_BYTES``) and read within
``READ_TIMEOUT_SECONDS``, at most ``MAX_CLIENTS`` connections at once: a stuck or hostile
client cannot hold it. 404 for another path, 405 for another method than GET.

``/healthz`` answers 200 with ``"status": "ok"``, or 503 with ``"status": "unhealthy"`` and
the ``problems`` when the database does not answer ``SELECT 1``, the daemon is stopping, the
IMAP server refused us for good at the last attempt (login refused, folder missing: a retry
will not cure it, so it is reported at once) and no sync has succeeded since, or the last good
IMAP sync (or the start, before the first one) is older than
3 × max(MAILBOT_IDLE_SECONDS, MAILBOT_POLL_SECONDS) + 60 s (a network outage gets that long to
heal). A daemon standing by while another holds the mailbox's lease does not fetch, and is
healthy without syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING

from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.daemon import Daemon

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
#: The request line and headers, at most (a GET has no body).
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0
WRITE_TIMEOUT_SECONDS = 10.0
MAX_CLIENTS = 16
#: ``SELECT 1`` must answer within this for /healthz to call the database reachable.
HEALTH_DATABASE_TIMEOUT_SECONDS = 5.0
JSON_CONTENT_TYPE = "application/json"


def parse_listen(text: str | None) -> tuple[str, int] | None:
    """``MAILBOT_HTTP_LISTEN``: None (disabled), or (host, port)."""
    value = (text or "").strip()
    if value.lower() in {"", "off"}:
        return None

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"MAILBOT_HTTP_LISTEN={text!r}: {why} (use 'off', a port such as 9325,"
            " HOST:PORT or [IPv6]:PORT)"
        )

    if value.isdigit():
        host, port_text = DEFAULT_HOST, value
    elif value.startswith("["):
        inside, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise bad("an IPv6 address needs a port after the bracket: [::1]:9325")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError as exc:
            raise bad(f"{inside!r} is not an IPv6 address") from exc
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise bad("no host")
        if any(c.isspace() or c in "/@[]" for c in host):
            raise bad(f"{host!r} is not a host name or address")
        if ":" in host:
            raise bad("write an IPv6 address in brackets")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, "text/plain; charset=utf-8", text.encode())

    @classmethod
    def json(cls, status: int, data: Mapping[str, object]) -> Response:
        return cls(status, JSON_CONTENT_TYPE, json.dumps(data, indent=2).encode() + b"\n")


Handler = Callable[[], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


class EndpointServer:
    """An HTTP/1.1 server for a few fixed GET paths."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self.read_timeout = READ_TIMEOUT_SECONDS
        self.max_request_bytes = MAX_REQUEST_BYTES
        self.max_clients = MAX_CLIENTS
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    async def start(self, host: str, port: int) -> None:
        """Listen; a bind failure is a ConfigError naming the address and the OS error."""
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=self.max_request_bytes
            )
        except OSError as exc:
            raise ConfigError(
                f"MAILBOT_HTTP_LISTEN: cannot listen on {format_address(host, port)}:"
                f" {exc.strerror or exc}"
            ) from exc
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop the connections in progress."""
        if self._server is None:
            return
        self._server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= self.max_clients:
            writer.transport.abort()  # too many at once: they are not our scrapers
            return
        self._clients.add(task)
        try:
            response = await self._respond(reader)
            if response is not None:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    writer.write(_encode(response))
                    await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client went away or does not read: nothing to tell it
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> Response | None:
        try:
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return Response.text(HTTPStatus.REQUEST_TIMEOUT, "request timeout\n")
        except asyncio.LimitOverrunError:
            return Response.text(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request header too large\n"
            )
        except asyncio.IncompleteReadError:
            return None  # closed before a whole request
        try:
            method, path = _request_line(head)
        except _BadRequest as exc:
            return Response.text(exc.status, f"{exc}\n")
        handler = self.routes.get(path)
        if handler is None:
            return Response.text(HTTPStatus.NOT_FOUND, "not found\n")
        if method != "GET":
            return Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET\n")
        try:
            return await handler()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("GET %s failed", path)
            return Response.text(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}\n")


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target, _ = parts
    return method, target.split("?", 1)[0]


def _encode(response: Response) -> bytes:
    status = HTTPStatus(response.status)
    headers = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append("Allow: GET")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + response.body


async def database_reachable() -> str | None:
    """None when the database answers ``SELECT 1`` in time, else why not."""
    from tortoise import connections
    from tortoise.exceptions import BaseORMException

    try:
        async with asyncio.timeout(HEALTH_DATABASE_TIMEOUT_SECONDS):
            await connections.get("default").execute_query("SELECT 1")
    except TimeoutError:
        return f"no answer within {HEALTH_DATABASE_TIMEOUT_SECONDS:.0f} s"
    except (BaseORMException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def max_sync_age(daemon: Daemon) -> float:
    """How old the last good IMAP sync may be: three IDLE renewals or polls, plus a minute."""
    settings = daemon.settings
    return 3 * max(settings.idle_seconds, settings.poll_seconds) + 60.0


def _mailbox_health(
    daemon: Daemon, now: datetime, db_error: str | None
) -> tuple[list[str], dict[str, object]]:
    problems: list[str] = []
    stopping = daemon.stop.is_set()
    if stopping:
        problems.append("stopping")
    if db_error is not None:
        problems.append(f"database: {db_error}")
    last_sync = daemon.poller.last_sync
    since = last_sync or daemon.started
    age = max(0.0, (now - since).total_seconds())
    limit = max_sync_age(daemon)
    # Standing by (another daemon holds the mailbox's lease) is healthy: it does not fetch.
    standby = daemon.standby
    refused = daemon.poller.refused
    if standby is None and refused is not None:
        problems.append(f"IMAP refused: {refused}")
    if standby is None and age > limit:
        what = "the last IMAP sync was" if last_sync else "no IMAP sync yet, the start was"
        problems.append(f"{what} {age:.0f} s ago (limit {limit:.0f} s)")
    body: dict[str, object] = {
        "status": "unhealthy" if problems else "ok",
        "problems": problems,
        "stopping": stopping,
        "database_reachable": db_error is None,
        "mailbox": daemon.poller.label,
        "last_imap_sync": last_sync.isoformat(timespec="seconds") if last_sync else None,
        "last_imap_sync_age_seconds": round(age, 3) if last_sync else None,
        "max_imap_sync_age_seconds": limit,
        "last_imap_error": daemon.poller.last_error,
        "last_imap_error_permanent": daemon.poller.last_error_permanent,
        "standby_for": (standby.holder or "another daemon") if standby is not None else None,
        "rules_version": daemon.policy.version,
    }
    return problems, body


async def health(daemon: Daemon, others: Sequence[Daemon] = ()) -> Response:
    """One mailbox: its figures. Several (``others``: the rest of a daemon's mailboxes):
    healthy only when each is, with each mailbox's figures under ``mailboxes``."""
    now = datetime.now(UTC)
    db_error = await database_reachable()
    problems, body = _mailbox_health(daemon, now, db_error)
    if others:
        parts = [(daemon, problems, body)]
        parts += [(d, *_mailbox_health(d, now, db_error)) for d in others]
        problems = [f"{d.name or d.poller.label}: {p}" for d, found, _ in parts for p in found]
        body = {
            "status": "unhealthy" if problems else "ok",
            "problems": problems,
            "stopping": daemon.stop.is_set(),
            "database_reachable": db_error is None,
            "mailboxes": {d.name or d.poller.label: b for d, _, b in parts},
        }
    status = HTTPStatus.SERVICE_UNAVAILABLE if problems else HTTPStatus.OK
    return Response.json(status, body)


async def start_endpoint(daemon: Daemon, others: Sequence[Daemon] = ()) -> EndpointServer | None:
    """Serve the daemon's /metrics and /healthz on ``settings.http_listen`` (None: off);
    ``others``: the daemon's other mailboxes (they share its metrics)."""
    listen = daemon.settings.http_listen
    if listen is None:
        return None
    host, port = listen
    from mailbot.metrics import CONTENT_TYPE

    async def metrics() -> Response:
        return Response(HTTPStatus.OK, CONTENT_TYPE, await daemon.metrics.render())

    async def healthz() -> Response:
        return await health(daemon, others)

    server = EndpointServer({"/metrics": metrics, "/healthz": healthz})
    await server.start(host, port)
    if not is_loopback(host):
        log.warning(
            "metrics and health are exposed beyond loopback on http://%s (MAILBOT_HTTP_LISTEN)",
            server.address,
        )
    log.info("metrics on http://%s/metrics, health on /healthz", server.address)
    return server
