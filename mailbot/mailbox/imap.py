"""A small typed async IMAP client: the only place mailbot talks IMAP (built on aioimaplib).

:class:`ImapSession` connects, upgrades to TLS as the :class:`~mailbot.endpoints.Endpoint`
demands, logs in, selects the mailbox and offers the handful of UID commands the poller needs.
The pure wire helpers (UID sets, modified UTF-7 mailbox names, quoting, response parsing)
live in :mod:`mailbot.mailbox.imap_wire`; the public ones are re-exported here.

Failure policy
    Every network await is bounded by ``timeout``. A timeout, a cut connection or an
    unexpected protocol state raises :class:`~mailbot.errors.ImapTransientError` and leaves the
    session *broken* (later calls fail at once; the caller reconnects). Refusals a retry will
    not cure (LOGIN ``NO``, a missing mailbox, STARTTLS not offered, an untrusted certificate)
    raise :class:`~mailbot.errors.ImapPermanentError`.

TLS
    ``imaps`` is implicit TLS. ``imap`` is STARTTLS and *required*: when the server does not
    offer it, :class:`StartTlsUnavailableError` is raised (both an ``ImapPermanentError`` and a
    ``TlsRequiredError``); there is no fallback to plain text. aioimaplib 2.0 knows the
    STARTTLS command name but has no method for it, so :meth:`ImapSession._starttls` sends it
    and upgrades the live transport with :meth:`asyncio.loop.start_tls`, then asks for the
    capabilities again (anything the server said before TLS is forgotten).

New mail
    Untagged ``* n EXISTS`` responses are watched on every command (aioimaplib drops the ones
    that arrive during other commands); when the message count grows, the next
    :meth:`ImapSession.wait_for_news` returns ``True`` straight away. Otherwise it IDLEs (or
    polls with NOOP when the server has no IDLE) until news or the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aioimaplib

from mailbot.endpoints import Auth, Endpoint, Security
from mailbot.errors import (
    ImapBasicAuthRefusedError,
    ImapPermanentError,
    ImapThrottledError,
    ImapTransientError,
    OAuthGrantError,
    OAuthTransientError,
    TlsRequiredError,
)
from mailbot.mailbox.imap_wire import (
    _as_bytes,
    _as_int,
    _data_lines,
    _fetch_records,
    _is_ok,
    _Item,
    _parse_search,
    _quote,
    _text,
    throttle_delay,
)
from mailbot.mailbox.imap_wire import encode_mailbox as encode_mailbox
from mailbot.mailbox.imap_wire import uid_set as uid_set
from mailbot.mailbox.imap_wire import uid_sets as uid_sets
from mailbot.oauth import basic_auth_refusal, xoauth2_sasl

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_POLL_INTERVAL = 5.0
MOVE_SLICE = 200  # messages per UID MOVE (see ImapSession.move)
_LOGOUT_TIMEOUT = 5.0

_SELECT_CODE_RE = re.compile(rb"\[(UIDVALIDITY|UIDNEXT) (\d+)\]", re.IGNORECASE)
_EXISTS_RE = re.compile(rb"^(\d+) EXISTS\b", re.IGNORECASE)
_UNTAGGED_COUNT_RE = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE)\b", re.IGNORECASE)


class StartTlsUnavailableError(ImapPermanentError, TlsRequiredError):
    """An ``imap://`` endpoint demands STARTTLS and the server does not offer or accept it."""


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One message as fetched with ``BODY.PEEK[]``: the exact bytes the server holds."""

    uid: int
    size: int
    raw: bytes
    flags: tuple[str, ...]


# --------------------------------------------------------------------------- helpers


def _client_ssl_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _consume_result(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished task's exception so asyncio does not log it as unhandled."""
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------- aioimaplib glue


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, letting the session see every untagged response line."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Callable[[Exception | None], None],
        observer: Callable[[bytes], None],
    ) -> None:
        super().__init__(loop, conn_lost_cb)
        self._observer = observer

    def _untagged_response(self, line: bytes) -> Any:
        self._observer(line)
        return super()._untagged_response(line)


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client building a :class:`_Protocol`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        conn_lost_cb: Callable[[Exception | None], None],
        observer: Callable[[bytes], None],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._observer = observer
        super().__init__(
            host=host,
            port=port,
            timeout=timeout,
            conn_lost_cb=conn_lost_cb,
            ssl_context=ssl_context,
        )

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb, self._observer)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class _XOAuth2Command(aioimaplib.Command):  # type: ignore[misc]
    """``AUTHENTICATE XOAUTH2`` answering the server's ``+`` continuations.

    The initial response goes on the command line with SASL-IR, else after the first ``+``.
    A ``+`` after it is the server's error challenge (base64 JSON, as Gmail and Dovecot send):
    it is kept in :attr:`challenge` and answered with an empty line, which brings the NO.
    """

    def __init__(self, protocol: Any, sasl: str, *, initial: bool) -> None:
        args = ("XOAUTH2", sasl) if initial else ("XOAUTH2",)
        super().__init__("AUTHENTICATE", protocol.new_tag(), *args, loop=protocol.loop)
        self._protocol = protocol
        self._sasl = sasl
        self._pending: str | None = None if initial else sasl
        self.challenge = ""
        self._line: str = super().__repr__()

    def __str__(self) -> str:
        # aioimaplib's execute() sends str(command) once; every later str() is for its debug
        # log (e.g. "continuation line appended to ..."), which must not show the token.
        line, self._line = self._line, repr(self)
        return line

    def __repr__(self) -> str:
        return f"{self.tag} AUTHENTICATE XOAUTH2 ***"

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        if not bytes(line).startswith(b"+"):
            super().append_to_resp(line, result)
            return
        # A "+" continuation (aioimaplib's _continuation): answer it, keep it out of the text.
        send, self._pending = self._pending, None
        if send is None:
            with contextlib.suppress(ValueError):
                self.challenge = base64.b64decode(bytes(line)[1:].strip(), validate=True).decode()
        self._protocol.transport.write((send or "").encode("ascii") + b"\r\n")

    async def run(self) -> Any:
        protocol = self._protocol
        response = await protocol.execute(self, scrub=self._sasl)
        if _is_ok(response):
            async with protocol.state_condition:
                protocol.state = aioimaplib.AUTH
                protocol.state_condition.notify_all()
        return response


# --------------------------------------------------------------------------- the session


class ImapSession:
    """A logged-in IMAP connection with one mailbox selected. Create it with :meth:`open`."""

    uidvalidity: int
    uidnext: int | None

    def __init__(self, endpoint: Endpoint, *, timeout: float, use_idle: bool) -> None:
        self.endpoint = endpoint
        self.uidvalidity = 0
        self.uidnext = None
        self._timeout = timeout
        self._use_idle = use_idle
        self._where = f"{endpoint.host}:{endpoint.port}/{endpoint.mailbox}"
        self._client: Any = None
        self._lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._broken: str | None = None
        self._closed = False
        self._exists = 0
        self._news = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - per operation, for the session's life
        ssl_context: ssl.SSLContext | None = None,
        use_idle: bool = True,
    ) -> ImapSession:
        """Connect (TLS as the endpoint demands), log in and select ``endpoint.mailbox``.

        ``use_idle=False`` makes :meth:`wait_for_news` poll with NOOP even when the server
        offers IDLE.
        """
        if endpoint.protocol != "imap":
            raise ImapPermanentError(f"{endpoint.redacted()} is not an IMAP endpoint")
        session = cls(endpoint, timeout=timeout, use_idle=use_idle)
        context = ssl_context or _client_ssl_context(endpoint.verify_tls)
        try:
            await session._connect(context)
            await session._login()
            await session._select()
        except BaseException:
            await session.close()
            raise
        log.info(
            "IMAP %s logged in as %s (UIDVALIDITY %d, UIDNEXT %s, %s)",
            session._where,
            endpoint.user,
            session.uidvalidity,
            session.uidnext,
            "IDLE" if session.has_idle else "polling",
        )
        return session

    async def _connect(self, context: ssl.SSLContext) -> None:
        endpoint = self.endpoint
        self._client = _Client(
            endpoint.host,
            endpoint.port,
            timeout=self._timeout,
            conn_lost_cb=self._on_connection_lost,
            observer=self._observe,
            ssl_context=context if endpoint.security is Security.TLS else None,
        )
        await self._run("connect", self._client.wait_hello_from_server())
        if endpoint.security is Security.STARTTLS:
            await self._starttls(context)

    async def _starttls(self, context: ssl.SSLContext) -> None:
        """STARTTLS, required: never continue in plain text when it is missing or refused."""
        protocol = self._client.protocol
        if "STARTTLS" not in self.capabilities:
            raise StartTlsUnavailableError(
                f"IMAP {self._where}: the server does not offer STARTTLS and imap:// requires "
                "it; use imaps:// or, on loopback only, imap+plain://"
            )
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._run("STARTTLS", protocol.execute(command))
        if not _is_ok(response):
            raise StartTlsUnavailableError(
                f"IMAP {self._where}: STARTTLS refused: {_text(response)}"
            )
        # Plain-text bytes that followed the OK must not be mixed into the TLS session (the
        # STARTTLS injection attack): drop any partial line; capabilities are asked anew below.
        protocol.incomplete_line = b""
        loop = asyncio.get_running_loop()
        transport = await self._run(
            "TLS handshake",
            loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=self.endpoint.host,
                ssl_handshake_timeout=self._timeout,
            ),
        )
        protocol.transport = transport
        await self._run("CAPABILITY", protocol.capability())
        log.debug("IMAP %s: STARTTLS done", self._where)

    async def _login(self) -> None:
        endpoint = self.endpoint
        if endpoint.auth is Auth.XOAUTH2:
            await self._login_xoauth2()
            await self._run("CAPABILITY", self._client.protocol.capability())
            return
        if not endpoint.user or endpoint.password is None:
            raise ImapPermanentError(f"IMAP {self._where}: no user or password configured")
        if "LOGINDISABLED" in self.capabilities:
            raise ImapPermanentError(
                f"IMAP {self._where}: the server refuses LOGIN on this connection (LOGINDISABLED)"
            )
        response = await self._run(
            "LOGIN", self._client.login(_quote(endpoint.user), endpoint.password)
        )
        if not _is_ok(response):
            self._raise_if_throttled("LOGIN", response)
            refusal = basic_auth_refusal("imap", endpoint.host, _text(response))
            if refusal is not None:
                raise ImapBasicAuthRefusedError(refusal)
            raise ImapPermanentError(
                f"IMAP {self._where}: login as {endpoint.user!r} refused: {_text(response)}"
            )
        # The capabilities change after login (MOVE, UIDPLUS, IDLE are often announced now).
        await self._run("CAPABILITY", self._client.protocol.capability())

    async def _login_xoauth2(self) -> None:
        """``AUTHENTICATE XOAUTH2``; a refused token is refreshed and tried once more."""
        endpoint, tokens = self.endpoint, self.endpoint.tokens
        if not endpoint.user or tokens is None:
            raise ImapPermanentError(f"IMAP {self._where}: XOAUTH2 needs a user and a token source")
        if "AUTH=XOAUTH2" not in self.capabilities:
            raise ImapPermanentError(
                f"IMAP {self._where}: the server does not offer AUTHENTICATE XOAUTH2"
            )
        text = ""
        for attempt in (1, 2):
            try:
                token = await tokens.token()
            except OAuthGrantError as exc:
                raise ImapPermanentError(f"IMAP {self._where}: {exc}") from exc
            except OAuthTransientError as exc:
                raise ImapTransientError(f"IMAP {self._where}: {exc}") from exc
            command = _XOAuth2Command(
                self._client.protocol,
                xoauth2_sasl(endpoint.user, token),
                initial="SASL-IR" in self.capabilities,
            )
            response = await self._run("AUTHENTICATE XOAUTH2", command.run())
            if _is_ok(response):
                return
            self._raise_if_throttled("AUTHENTICATE", response)
            tokens.invalidate(token)
            text = f"{_text(response)} {command.challenge}".strip()
            if attempt == 1:
                log.warning(
                    "IMAP %s: XOAUTH2 token refused (%s); refreshing it and trying once more",
                    self._where,
                    text,
                )
        raise ImapPermanentError(
            f"IMAP {self._where}: XOAUTH2 login as {endpoint.user!r} refused again with a freshly "
            f"refreshed token ({text}): check that the token belongs to {endpoint.user!r} and "
            "that its scope covers IMAP"
        )

    async def _select(self) -> None:
        mailbox = self.endpoint.mailbox
        response = await self._run("SELECT", self._client.select(encode_mailbox(mailbox)))
        if not _is_ok(response):
            self._raise_if_throttled("SELECT", response)
            raise ImapPermanentError(
                f"IMAP {self._where}: cannot select mailbox {mailbox!r}: {_text(response)}"
            )
        values: dict[bytes, int] = {}
        for line in _data_lines(response):
            if isinstance(line, bytearray):
                continue
            for name, number in _SELECT_CODE_RE.findall(line):
                values[name.upper()] = int(number)
            exists = _EXISTS_RE.match(line)
            if exists:
                self._exists = int(exists.group(1))
        if b"UIDVALIDITY" not in values:
            raise ImapPermanentError(f"IMAP {self._where}: SELECT gave no UIDVALIDITY")
        self.uidvalidity = values[b"UIDVALIDITY"]
        self.uidnext = values.get(b"UIDNEXT")
        self._news = False

    # ------------------------------------------------------------------ properties

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's current capabilities, upper-cased."""
        if self._client is None:
            return frozenset()
        return frozenset(str(cap).upper() for cap in self._client.protocol.capabilities)

    @property
    def has_idle(self) -> bool:
        """True when :meth:`wait_for_news` uses IDLE (the server has it and it is not off)."""
        return self._use_idle and "IDLE" in self.capabilities

    @property
    def encrypted(self) -> bool:
        """True when the connection runs over TLS (implicit or after STARTTLS)."""
        if self._client is None or self._client.protocol.transport is None:
            return False
        return self._client.protocol.transport.get_extra_info("ssl_object") is not None

    @property
    def broken(self) -> bool:
        """True once a timeout or a lost connection made this session unusable."""
        return self._broken is not None

    # ------------------------------------------------------------------ plumbing

    def _on_connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(exc)
        if not self._closed:
            log.warning("IMAP %s: connection lost (%s)", self._where, exc or "closed by server")

    def _observe(self, line: bytes) -> None:
        """See every untagged line: a growing EXISTS count means new mail."""
        match = _UNTAGGED_COUNT_RE.match(line)
        if match is None:
            return
        number, kind = int(match.group(1)), match.group(2).upper()
        if kind == b"EXPUNGE":
            self._exists = max(0, self._exists - 1)
            return
        if number > self._exists:
            self._news = True
        self._exists = number

    def _fail(self, reason: str) -> ImapTransientError:
        self._broken = self._broken or reason
        return ImapTransientError(f"IMAP {self._where}: {reason}")

    async def _run(self, what: str, aw: Awaitable[T], *, limit: float | None = None) -> T:
        """Await one network operation, bounded in time and raced against a lost connection."""
        if self._broken is not None:
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: avoid "coroutine was never awaited"
            raise ImapTransientError(f"IMAP {self._where}: session unusable ({self._broken})")
        task: asyncio.Future[T] = asyncio.ensure_future(aw)
        task.add_done_callback(_consume_result)
        limit = self._timeout if limit is None else limit
        try:
            waiters: set[asyncio.Future[Any]] = {task, self._lost}
            async with asyncio.timeout(limit):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            task.cancel()
            raise self._fail(f"{what} timed out after {limit:g} s") from None
        except asyncio.CancelledError:
            task.cancel()
            self._broken = self._broken or f"{what} cancelled"
            raise
        if not task.done():
            task.cancel()
            raise self._fail(f"connection lost during {what}")
        try:
            return task.result()
        except ssl.SSLCertVerificationError as exc:
            self._broken = "TLS certificate rejected"
            raise ImapPermanentError(
                f"IMAP {self._where}: TLS certificate verification failed: {exc}"
            ) from exc
        except (aioimaplib.AioImapException, OSError, EOFError, TimeoutError) as exc:
            raise self._fail(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    async def _command(self, what: str, aw: Awaitable[Any], *, limit: float | None = None) -> Any:
        """:meth:`_run` that also wants a tagged OK (NO/BAD -> ImapTransientError)."""
        response = await self._run(what, aw, limit=limit)
        if not _is_ok(response):
            self._raise_if_throttled(what, response)
            raise ImapTransientError(f"IMAP {self._where}: {what} failed: {_text(response)}")
        return response

    def _raise_if_throttled(self, what: str, response: Any) -> None:
        """A refusal that asks us to slow down is neither permanent nor an ordinary retry."""
        text = _text(response)
        delay = throttle_delay(text)
        if delay is not None:
            raise ImapThrottledError(
                f"IMAP {self._where}: {what} refused, the server asks us to slow down: {text}",
                delay,
            )

    # ------------------------------------------------------------------ reading

    async def search(self, criteria: str) -> list[int]:
        """``UID SEARCH <criteria>`` (criteria in IMAP syntax, ASCII): matching UIDs, sorted."""
        response = await self._command(
            "UID SEARCH", self._client.uid_search(criteria, charset=None)
        )
        return _parse_search(response)

    async def search_uids(self, start_uid: int) -> list[int]:
        """UIDs >= ``start_uid``, sorted (``N:*`` also yields the last UID when it is < N)."""
        start = max(1, start_uid)
        response = await self._command(
            "UID SEARCH", self._client.uid_search(f"UID {start}:*", charset=None)
        )
        return _parse_search(response, minimum=start)

    async def fetch_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """``RFC822.SIZE`` per UID; UIDs that no longer exist are absent."""
        sizes: dict[int, int] = {}
        for part in uid_sets(uids):
            response = await self._command(
                "UID FETCH (RFC822.SIZE)", self._client.uid("fetch", part, "(UID RFC822.SIZE)")
            )
            for record in _fetch_records(response):
                uid, size = _as_int(record.get("UID")), _as_int(record.get("RFC822.SIZE"))
                if uid is not None and size is not None:
                    sizes[uid] = size
        return sizes

    async def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The full raw messages, sorted by UID. Uses ``BODY.PEEK[]``: never sets ``\\Seen``.

        Bounded by the client's inactivity timeout per response chunk and overall by
        ``timeout`` per requested message.
        """
        messages: dict[int, FetchedMessage] = {}
        for part in uid_sets(uids):
            response = await self._command(
                "UID FETCH BODY.PEEK[]",
                self._client.uid("fetch", part, "(UID FLAGS RFC822.SIZE BODY.PEEK[])"),
                limit=self._timeout * max(1, len(uids)),
            )
            for record in _fetch_records(response):
                message = self._to_message(record)
                if message is not None:
                    messages[message.uid] = message
        log.debug("IMAP %s: fetched %d of %d messages", self._where, len(messages), len(uids))
        return [messages[uid] for uid in sorted(messages)]

    def _to_message(self, record: dict[str, _Item]) -> FetchedMessage | None:
        uid = _as_int(record.get("UID"))
        raw = _as_bytes(record.get("BODY[]"))
        if uid is None or raw is None:  # e.g. an unsolicited FLAGS update
            return None
        flags_item = record.get("FLAGS")
        flags = (
            tuple(f for f in flags_item if isinstance(f, str))
            if isinstance(flags_item, list)
            else ()
        )
        size = _as_int(record.get("RFC822.SIZE"))
        return FetchedMessage(
            uid=uid, size=len(raw) if size is None else size, raw=raw, flags=flags
        )

    # ------------------------------------------------------------------ writing

    async def add_flags(self, uids: Sequence[int], flags: Sequence[str]) -> None:
        """``UID STORE <set> +FLAGS.SILENT (<flags>)`` with compressed UID ranges."""
        if not uids or not flags:
            return
        for part in uid_sets(uids):
            await self._command(
                "UID STORE",
                self._client.uid("store", part, "+FLAGS.SILENT", "(" + " ".join(flags) + ")"),
            )
        log.debug("IMAP %s: flagged %d messages %s", self._where, len(uids), " ".join(flags))

    async def move(self, uids: Sequence[int], folder: str, *, create: bool = True) -> None:
        """Move messages to ``folder`` (``UID MOVE``, else COPY + ``\\Deleted`` + EXPUNGE).

        With ``create`` the folder is created when the first attempt fails and tried again.
        """
        if not uids:
            return
        # The server answers a move with one untagged EXPUNGE per message; aioimaplib parses
        # the lines of one network read recursively, so a move of ~1,000 messages at once can
        # exceed Python's recursion limit and drop the connection. Moves go in slices.
        slices = [uids[i : i + MOVE_SLICE] for i in range(0, len(uids), MOVE_SLICE)]
        for part in (part for piece in slices for part in uid_sets(piece)):
            response = await self._move_once(part, folder)
            if not _is_ok(response) and create:
                await self.create_folder(folder)
                response = await self._move_once(part, folder)
            if not _is_ok(response):
                raise ImapTransientError(
                    f"IMAP {self._where}: moving to {folder!r} failed: {_text(response)}"
                )
            if "MOVE" not in self.capabilities:
                await self._expunge_moved(part)
        log.debug("IMAP %s: moved %d messages to %s", self._where, len(uids), folder)

    async def _move_once(self, part: str, folder: str) -> Any:
        verb = "move" if "MOVE" in self.capabilities else "copy"
        return await self._run(
            f"UID {verb.upper()}", self._client.uid(verb, part, encode_mailbox(folder))
        )

    async def _expunge_moved(self, part: str) -> None:
        await self._command(
            "UID STORE", self._client.uid("store", part, "+FLAGS.SILENT", r"(\Deleted)")
        )
        if "UIDPLUS" in self.capabilities:
            await self._command("UID EXPUNGE", self._client.uid("expunge", part))
        else:
            log.warning(
                "IMAP %s: no MOVE and no UIDPLUS: plain EXPUNGE also removes other \\Deleted mail",
                self._where,
            )
            await self._command("EXPUNGE", self._client.expunge())

    async def create_folder(self, folder: str) -> None:
        """``CREATE folder``; a folder that already exists is fine."""
        response = await self._run("CREATE", self._client.create(encode_mailbox(folder)))
        if _is_ok(response):
            log.info("IMAP %s: created folder %s", self._where, folder)
        else:
            log.debug("IMAP %s: CREATE %s: %s", self._where, folder, _text(response))

    async def append(self, raw: bytes, folder: str | None = None, flags: str | None = None) -> None:
        """``APPEND`` a message (to the selected mailbox by default); ``flags`` like ``\\Seen``."""
        target = folder or self.endpoint.mailbox
        response = await self._run(
            "APPEND", self._client.append(raw, mailbox=encode_mailbox(target), flags=flags)
        )
        if not _is_ok(response):
            error = (
                ImapPermanentError if "TRYCREATE" in _text(response).upper() else ImapTransientError
            )
            raise error(f"IMAP {self._where}: APPEND to {target!r} failed: {_text(response)}")

    # ------------------------------------------------------------------ waiting

    async def noop(self) -> None:
        """``NOOP``: keeps the connection alive and lets the server report changes."""
        await self._command("NOOP", self._client.noop())

    async def wait_for_news(
        self,
        timeout: float,  # noqa: ASYNC109 - the wait itself: IDLE ends when it runs out
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wake: asyncio.Event | None = None,
    ) -> bool:
        """Wait up to ``timeout`` seconds for new mail; True when the message count grew.

        IDLE when :attr:`has_idle`, else NOOP every ``poll_interval`` seconds. Keep ``timeout``
        well below 29 minutes (servers drop IDLE after 30). A dead or half-open connection shows
        up as an :class:`ImapTransientError` (the IDLE end or the NOOP is not answered in time).
        Setting ``wake`` (e.g. the daemon's stop event) ends the wait early and cleanly: IDLE is
        ended with DONE and the session stays usable (cancelling the call breaks it instead).
        """
        woken: asyncio.Future[Any] | None = None
        if wake is not None:
            woken = asyncio.ensure_future(wake.wait())
        try:
            if not self._news and not (wake is not None and wake.is_set()):
                if self.has_idle:
                    await self._idle(timeout, woken)
                else:
                    await self._poll(timeout, poll_interval, woken)
        finally:
            if woken is not None:
                woken.cancel()
        news, self._news = self._news, False
        return news

    async def _poll(
        self, seconds: float, poll_interval: float, woken: asyncio.Future[Any] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            await self.noop()
            remaining = deadline - loop.time()
            if self._news or remaining <= 0 or (woken is not None and woken.done()):
                return
            # Sleep, but wake up at once when the connection drops (the next NOOP raises).
            await self._sleep(min(poll_interval, remaining), woken)

    async def _sleep(self, seconds: float, *others: asyncio.Future[Any] | None) -> None:
        """Sleep ``seconds``; end early when the connection is lost or one of ``others`` is done."""
        waiters: set[asyncio.Future[Any]] = {self._lost, *(f for f in others if f is not None)}
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)

    async def _idle(self, seconds: float, woken: asyncio.Future[Any] | None) -> None:
        client = self._client
        queue: asyncio.Queue[Any] = client.protocol.idle_queue
        while not queue.empty():  # leftovers of an earlier IDLE
            queue.get_nowait()
        idle_task = await self._run("IDLE", client.idle_start(timeout=seconds))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while not self._news and loop.time() < deadline:
                push = await self._next_push(queue, deadline - loop.time(), woken)
                if push is None or push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
        except BaseException:
            self._broken = self._broken or "IDLE interrupted"
            raise
        if self._lost.done():
            raise self._fail("connection lost during IDLE")
        client.idle_done()
        response = await self._run("IDLE end (DONE)", idle_task)
        if not _is_ok(response):
            raise self._fail(f"IDLE ended with {response.result}: {_text(response)}")

    async def _next_push(
        self, queue: asyncio.Queue[Any], remaining: float, woken: asyncio.Future[Any] | None
    ) -> Any:
        """The next lines pushed during IDLE; None when ``remaining`` ran out or ``woken``."""
        getter = asyncio.ensure_future(queue.get())
        try:
            await self._sleep(remaining, getter, woken)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if self._lost.done():
            raise self._fail("connection lost during IDLE")
        return None

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """LOGOUT (briefly, unless the session is broken) and close the connection."""
        if self._closed:
            return
        self._closed = True  # from here on a lost connection is expected, not news
        usable = self._broken is None and not self._lost.done() and self._client is not None
        if usable and self._client.protocol.state in ("AUTH", "SELECTED", "NONAUTH"):
            with contextlib.suppress(ImapTransientError, ImapPermanentError):
                timeout = min(self._timeout, _LOGOUT_TIMEOUT)
                await self._run("LOGOUT", self._client.logout(), limit=timeout)
        if self._client is not None:
            self._abandon_client(graceful=usable)
        log.debug("IMAP %s: closed", self._where)

    def _abandon_client(self, *, graceful: bool) -> None:
        client = self._client
        transport = client.protocol.transport
        if transport is not None:
            if graceful:
                transport.close()
            else:
                transport.abort()
        for task in [*client.tasks, *client.protocol.tasks, client._client_task]:
            if not task.done():
                task.cancel()

    async def __aenter__(self) -> ImapSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def append_messages(endpoint: Endpoint, raws: Iterable[bytes]) -> int:
    """Open a session, APPEND each message to the endpoint's mailbox, close.

    For the demo, tests and benchmarks, which play the part of the customers' mail server.
    """
    session = await ImapSession.open(endpoint)
    count = 0
    try:
        for raw in raws:
            await session.append(raw)
            count += 1
    finally:
        await session.close()
    return count
