"""Drain the outbox over SMTP (aiosmtplib): claim rows, send their bytes, record each result.

Rows are claimed by a conditional UPDATE (queued -> sending) before they are sent, so two
senders (two daemons on one PostgreSQL database, or a restart racing an old process) never
both send one. They are claimed ``CLAIM_CHUNK`` at a time (one commit for the chunk), just
ahead of sending them; each sent row is recorded in a commit of its own as soon as the server
answered. A crash between the server's 250 and that commit leaves the row in ``sending``;
such rows are re-queued after ``stale_after`` and may be delivered twice: that is the one
duplicate the design allows, and it is bounded by the one row in flight at the crash. The
other rows of the chunk, claimed but not sent, are only late: re-queued after
``stale_after``. When a drain stops early (a graceful stop out of time, the server gone),
its claimed rows go back to the queue at once.

4xx replies, timeouts and connection errors are retried with capped exponential backoff;
5xx replies and refused recipients fail the row with the server's reason.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosmtplib
from tortoise import connections
from tortoise.exceptions import DBConnectionError, OperationalError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from mailbot.clock import Clock
from mailbot.endpoints import Auth, Endpoint, Security
from mailbot.errors import (
    OAuthGrantError,
    OAuthTransientError,
    SmtpBasicAuthRefusedError,
    SmtpPermanentError,
    SmtpTransientError,
)
from mailbot.oauth import basic_auth_refusal
from mailbot.tickets.models import Message, OutboxRow, OutboxStatus
from mailbot.tickets.raw_sql import db_value, dialect_sql, python_value, table

log = logging.getLogger(__name__)

#: Rows claimed in one transaction, just ahead of sending them.
CLAIM_CHUNK = 20


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(days=3)
    stale_after: timedelta = timedelta(minutes=10)

    def delay(self, attempts: int) -> timedelta:
        """Capped exponential backoff with +-20 % jitter (attempts starts at 1)."""
        raw = self.base.total_seconds() * (2 ** max(attempts - 1, 0))
        capped = min(raw, self.cap.total_seconds())
        return timedelta(seconds=capped * random.uniform(0.8, 1.2))


def _classify(exc: Exception) -> SmtpTransientError | SmtpPermanentError:
    if isinstance(exc, OAuthGrantError):
        # The refresh token was revoked or the client refused: no retry can succeed until
        # an operator acts, so the connection failure is logged at ERROR.
        return SmtpPermanentError(f"no OAuth access token for SMTP: {exc}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if all(400 <= c < 500 for c in codes):
            return SmtpTransientError(f"recipients deferred: {text}")
        return SmtpPermanentError(f"recipients refused: {text}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"{exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return SmtpTransientError(detail)
        if 500 <= exc.code < 600:
            return SmtpPermanentError(detail)
        return SmtpTransientError(detail)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) and "SMTPUTF8" in str(exc).upper():
        return SmtpPermanentError(f"server cannot deliver to an internationalised address: {exc}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported) and "STARTTLS" in str(exc).upper():
        return SmtpPermanentError(f"server does not offer STARTTLS, refusing plain text: {exc}")
    return SmtpTransientError(f"{type(exc).__name__}: {exc}")


class SmtpBasicAuthRefused(aiosmtplib.SMTPAuthenticationError, SmtpBasicAuthRefusedError):
    """The provider refused the password because it wants OAuth: an SMTP 5xx to the sender's
    connection handling, a :class:`~mailbot.errors.BasicAuthRefusedError` to everyone else."""

    def __str__(self) -> str:
        return self.message


class SmtpOAuthGrantError(aiosmtplib.SMTPException, OAuthGrantError):
    """No access token for SMTP: the refresh token was revoked or the client refused."""


class SmtpOAuthUnavailableError(aiosmtplib.SMTPException, OAuthTransientError):
    """No access token for SMTP now: the token endpoint is unreachable or failing."""


class _LoggingInSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client that logs in itself once connected (and TLS is up): with the
    password, recognising a provider's refusal of basic auth, or with XOAUTH2, refreshing a
    refused token once."""

    def __init__(self, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint

    async def connect(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        response = await super().connect(*args, **kwargs)
        try:
            await self._log_in()
        except BaseException:
            self.close()
            raise
        return response

    async def _log_in(self) -> None:
        ep = self.endpoint
        if ep.auth is Auth.XOAUTH2:
            await self._xoauth2()
            return
        if ep.user is None:
            return
        try:
            await self.login(ep.user, ep.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            refusal = basic_auth_refusal("smtp", ep.host, f"{exc.code} {exc.message}")
            if refusal is not None:
                raise SmtpBasicAuthRefused(exc.code, refusal) from exc
            raise

    async def _xoauth2(self) -> None:
        ep, tokens = self.endpoint, self.endpoint.tokens
        where = f"SMTP {ep.host}:{ep.port}"
        if not ep.user or tokens is None:
            raise SmtpOAuthGrantError(f"{where}: XOAUTH2 needs a user and a token source")
        refused: aiosmtplib.SMTPAuthenticationError | None = None
        for attempt in (1, 2):
            try:
                token = await tokens.token()
            except OAuthGrantError as exc:
                raise SmtpOAuthGrantError(f"{where}: {exc}") from exc
            except OAuthTransientError as exc:
                raise SmtpOAuthUnavailableError(f"{where}: {exc}") from exc
            try:
                await self.auth_xoauth2(ep.user, token)
                return
            except aiosmtplib.SMTPAuthenticationError as exc:
                if exc.code < 500 or "xoauth2" not in self.server_auth_methods:
                    raise  # 4xx: try later; no XOAUTH2 offered: a new token will not help
                tokens.invalidate(token)
                refused = exc
            if attempt == 1:
                log.warning(
                    "%s: XOAUTH2 token refused (%s %s); refreshing it and trying once more",
                    where,
                    refused.code,
                    refused.message,
                )
        assert refused is not None
        raise aiosmtplib.SMTPAuthenticationError(
            refused.code,
            f"XOAUTH2 as {ep.user!r} refused again with a freshly refreshed token "
            f"({refused.message}): check that the token belongs to {ep.user!r} and that its "
            "scope covers SMTP",
        )


class SmtpTransport:
    """One SMTP connection per drain, with TLS as the endpoint demands (never downgraded).

    The client it makes logs in as part of ``connect()`` (see :class:`_LoggingInSMTP`)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def client(self) -> aiosmtplib.SMTP:
        ep = self.endpoint
        context: ssl.SSLContext | None = None
        if ep.security is not Security.PLAIN:
            context = ssl.create_default_context()
            if not ep.verify_tls:  # endpoints only allow this towards loopback
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return _LoggingInSMTP(
            ep,
            hostname=ep.host,
            port=ep.port,
            use_tls=ep.security is Security.TLS,
            start_tls=ep.security is Security.STARTTLS,
            tls_context=context,
            timeout=self.timeout,
        )

    async def send(self, smtp: aiosmtplib.SMTP, mail_from: str, rcpt: str, raw: bytes) -> str:
        options = [] if mail_from.isascii() and rcpt.isascii() else ["SMTPUTF8"]
        try:
            errors, response = await smtp.sendmail(mail_from, [rcpt], raw, mail_options=options)
        except Exception as exc:
            raise _classify(exc) from exc
        if errors:
            # A 250 to DATA with refused recipients is not success for those recipients.
            detail = "; ".join(
                f"{addr}: {resp.code} {resp.message}" for addr, resp in errors.items()
            )
            raise SmtpPermanentError(f"recipients refused: {detail}")
        return response


#: Called (outside the sender's transaction) when a row fails for good: the row and why.
FailureHook = Callable[[OutboxRow, str], Awaitable[None]]


class OutboxSender:
    def __init__(
        self,
        transport: SmtpTransport,
        clock: Clock,
        *,
        retry: RetryPolicy | None = None,
        on_failed: FailureHook | None = None,
        on_sent: Callable[[str], None] | None = None,
        mailboxes: Sequence[str] | None = None,
    ) -> None:
        #: Rows of these mailboxes only (mailbot.tickets.scope); None: every row.
        self.mailboxes = mailboxes
        self.transport = transport
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.on_failed = on_failed
        #: Told the outbox kind of each row sent (the metrics' counter).
        self.on_sent = on_sent

    async def requeue_stale(self) -> int:
        """Rows left in ``sending`` by a crashed sender go back to the queue."""
        cutoff = self.clock.now() - self.retry.stale_after
        count = await OutboxRow.filter(status=OutboxStatus.SENDING, claimed_at__lt=cutoff).update(
            status=OutboxStatus.QUEUED
        )
        if count:
            log.warning("re-queued %d outbox rows left in 'sending' by an earlier run", count)
        return int(count)

    async def _claim(self, row_ids: Sequence[int]) -> set[int]:
        """queued -> sending for those of ``row_ids`` no other sender has, in one
        transaction; returns them. On PostgreSQL the rows are locked ``FOR UPDATE SKIP
        LOCKED`` first: a sender never waits behind another one's claim, it moves on. The
        conditional UPDATE is the guard on every database (SQLite ignores row locks; its
        writers are serialised)."""
        if not row_ids:
            return set()
        now = self.clock.now()
        marks = ", ".join("?" for _ in row_ids)
        queued, sending = OutboxStatus.QUEUED.value, OutboxStatus.SENDING.value
        async with in_transaction() as conn:
            wanted = list(row_ids)
            if conn.capabilities.dialect != "sqlite":
                locked = await conn.execute_query_dict(
                    dialect_sql(
                        conn,
                        f"SELECT id FROM {table(OutboxRow)} WHERE id IN ({marks}) "
                        "AND status = ? FOR UPDATE SKIP LOCKED",
                    ),
                    [*wanted, queued],
                )
                wanted = [int(row["id"]) for row in locked]
                if not wanted:
                    return set()
                marks = ", ".join("?" for _ in wanted)
            rows = await conn.execute_query_dict(
                dialect_sql(
                    conn,
                    f"UPDATE {table(OutboxRow)} SET status = ?, claimed_at = ? "
                    f"WHERE id IN ({marks}) AND status = ? RETURNING id",
                ),
                [sending, db_value(OutboxRow, "claimed_at", now), *wanted, queued],
            )
        return {int(row["id"]) for row in rows}

    async def _unclaim(self, row_ids: set[int]) -> None:
        """Rows claimed by this drain and not sent go back to the queue (still due)."""
        if not row_ids:
            return
        try:
            await OutboxRow.filter(id__in=row_ids, status=OutboxStatus.SENDING).update(
                status=OutboxStatus.QUEUED
            )
        except (OperationalError, DBConnectionError) as exc:
            log.warning(
                "outbox rows %s stay claimed (database: %s); they are re-queued after %s",
                sorted(row_ids),
                exc,
                self.retry.stale_after,
            )

    async def due_ids(self, limit: int = 100) -> list[int]:
        return [row_id for row_id, _ in await self._due(limit)]

    async def _due(self, limit: int = 100) -> list[tuple[int, tuple[int, str] | None]]:
        """Due rows (id, conversation), oldest first, each only when no older row to the same
        recipient on the same ticket is still waiting: mail of one conversation goes out in
        order, also after an outage in which their retries fell due in another order."""
        rows = (
            await self.queued()
            .filter(next_attempt_at__lte=self.clock.now())
            .order_by("id")
            .limit(limit)
            .values_list("id", "ticket_id", "rcpt_to")
        )
        due_ids = {int(row_id) for row_id, _, _ in rows}
        tickets = {ticket for _, ticket, _ in rows if ticket is not None}
        # The oldest row of each conversation that waits but is not due now (a retry later,
        # or being sent by another sender): nothing newer of that conversation may pass it.
        blocker: dict[tuple[int, str], int] = {}
        if tickets:
            waiting = await OutboxRow.filter(
                status__in=(OutboxStatus.QUEUED, OutboxStatus.SENDING), ticket_id__in=tickets
            ).values_list("id", "ticket_id", "rcpt_to")
            for row_id, ticket, rcpt in waiting:
                if int(row_id) in due_ids:
                    continue
                waiting_key = (int(ticket), str(rcpt))
                blocker[waiting_key] = min(blocker.get(waiting_key, row_id), row_id)
        due: list[tuple[int, tuple[int, str] | None]] = []
        for row_id, ticket, rcpt in rows:
            conversation = None if ticket is None else (int(ticket), str(rcpt))
            if conversation is not None and blocker.get(conversation, row_id + 1) < row_id:
                continue
            due.append((int(row_id), conversation))
        return due

    def queued(self) -> QuerySet[OutboxRow]:
        """Queued rows this sender sends (its mailboxes')."""
        query = OutboxRow.filter(status=OutboxStatus.QUEUED)
        return query if self.mailboxes is None else query.filter(mailbox__in=self.mailboxes)

    async def next_due(self) -> datetime | None:
        row = await self.queued().order_by("next_attempt_at").only("id", "next_attempt_at").first()
        return row.next_attempt_at if row else None

    async def run_once(self, *, until: Callable[[], bool] | None = None) -> int:
        """Send every due row; returns how many were sent. One connection for the batch.

        ``until``: asked before each row; once it answers True the rest stay queued (a
        graceful stop that has run out of time). A row being sent is never cut off."""
        await self.requeue_stale()
        due = await self._due()
        ids = [row_id for row_id, _ in due]
        if not ids:
            return 0
        sent = 0
        claimed: set[int] = set()  # claimed by this drain, not sent yet
        smtp = self.transport.client()
        try:
            try:
                await smtp.connect()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # A connection-level problem is never the mail's fault: every row is deferred
                # (and fails only after give_up_after). A refused TLS or login is logged loudly.
                error = _classify(exc)
                level = logging.ERROR if isinstance(error, SmtpPermanentError) else logging.WARNING
                log.log(level, "SMTP %s unavailable: %s", self.transport.endpoint.redacted(), error)
                await self._defer_all(ids, SmtpTransientError(str(error)))
                return 0
            held: set[tuple[int, str]] = set()
            try:
                for index, (row_id, conversation) in enumerate(due):
                    if not smtp.is_connected:
                        # The server dropped us: the rest stay queued, due for the next drain.
                        break
                    if until is not None and until():
                        break
                    if conversation is not None and conversation in held:
                        continue  # an earlier mail of this conversation is waiting again
                    if row_id not in claimed:
                        claimed |= await self._claim(
                            [r for r, c in due[index : index + CLAIM_CHUNK] if c not in held]
                        )
                    if row_id not in claimed:  # another sender has it
                        if conversation is not None:
                            held.add(conversation)
                        continue
                    claimed.discard(row_id)
                    if await self._send_row(smtp, row_id):
                        sent += 1
                    elif conversation is not None:
                        held.add(conversation)
            finally:
                await self._unclaim(claimed)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    smtp.close()
        return sent

    async def _defer_all(
        self, ids: list[int], error: SmtpTransientError | SmtpPermanentError
    ) -> None:
        for row_id in ids:
            row = await OutboxRow.get(id=row_id)
            await self._record_failure(row, error)

    async def _send_row(self, smtp: aiosmtplib.SMTP, row_id: int) -> bool:
        """Send a row this drain has claimed; whether it was sent. The row and its mail are
        read in one statement, and recorded sent in one (in a commit of its own)."""
        conn = connections.get("default")
        found = await conn.execute_query_dict(
            dialect_sql(
                conn,
                f"SELECT o.kind, o.mail_from, o.rcpt_to, o.attempts, o.ticket_id, m.raw_bytes,"
                f" m.message_id FROM {table(OutboxRow)} o JOIN {table(Message)} m"
                " ON m.id = o.message_id WHERE o.id = ?",
            ),
            [row_id],
        )
        if not found:
            return False
        row = found[0]
        raw = python_value(Message, "raw_bytes", row["raw_bytes"])
        try:
            response = await self.transport.send(smtp, row["mail_from"], row["rcpt_to"], raw)
        except (SmtpTransientError, SmtpPermanentError) as error:
            await self._record_failure(await OutboxRow.get(id=row_id), error)
            return False
        await conn.execute_query(
            dialect_sql(
                conn,
                f"UPDATE {table(OutboxRow)} SET status = ?, sent_at = ?, attempts = ?,"
                " last_error = NULL WHERE id = ?",
            ),
            [
                OutboxStatus.SENT.value,
                db_value(OutboxRow, "sent_at", self.clock.now()),
                int(row["attempts"]) + 1,
                row_id,
            ],
        )
        log.info(
            "sent outbox row %d message-id %s ticket #%s to %s: %s",
            row_id,
            row["message_id"],
            row["ticket_id"],
            row["rcpt_to"],
            response.strip(),
        )
        if self.on_sent is not None:
            self.on_sent(str(row["kind"]))
        return True

    async def _record_failure(
        self,
        row: OutboxRow,
        error: SmtpTransientError | SmtpPermanentError,
    ) -> None:
        now = self.clock.now()
        attempts = row.attempts + 1
        permanent = isinstance(error, SmtpPermanentError)
        expired = now - row.created_at > self.retry.give_up_after
        reason = str(error) if permanent else f"gave up after {attempts} attempts: {error}"
        async with in_transaction() as conn:
            if permanent or expired:
                await (
                    OutboxRow.filter(id=row.id)
                    .using_db(conn)
                    .update(status=OutboxStatus.FAILED, attempts=attempts, last_error=reason)
                )
                log.error(
                    "outbox row %d ticket #%s to %s failed: %s",
                    row.id,
                    row.ticket_id,
                    row.rcpt_to,
                    reason,
                )
            else:
                retry_at = now + self.retry.delay(attempts)
                await (
                    OutboxRow.filter(id=row.id)
                    .using_db(conn)
                    .update(
                        status=OutboxStatus.QUEUED,
                        attempts=attempts,
                        last_error=str(error),
                        next_attempt_at=retry_at,
                    )
                )
        if permanent or expired:
            if self.on_failed is not None:
                try:
                    await self.on_failed(row, reason)
                except Exception:  # the report must not stop the drain; the row is failed
                    log.exception("outbox row %d: reporting the failure failed", row.id)
            return
        log.warning(
            "outbox row %d ticket #%s to %s deferred (attempt %d, retry at %s): %s",
            row.id,
            row.ticket_id,
            row.rcpt_to,
            attempts,
            retry_at.isoformat(),
            error,
        )
