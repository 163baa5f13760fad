"""The CLI's commands, one coroutine each, returning an exit code."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from mailbot.agents.secret_key import peek_key, signer_for
from mailbot.agents.tokens import TokenSigner
from mailbot.clock import FixedClock, SystemClock
from mailbot.domain import Disposition
from mailbot.errors import ConfigError, MailbotError, ParseError
from mailbot.ingest.correlate import ticket_ref
from mailbot.ingest.parse_workers import close_shared_workers, parse_ahead, shared_workers
from mailbot.ingest.pipeline import Analysis, Intake, analyse, answer_for, parse_off_loop
from mailbot.ingest.sources import iter_raw
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.settings import Settings
from mailbot.tickets.database import (
    close_database,
    open_database,
    redact,
    sqlite_file_missing,
)
from mailbot.tickets.models import Message, MessageState, Ticket
from mailbot.tickets.queries import list_quarantine, list_tickets
from mailbot.tickets.service import Origin


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


async def run(settings: Settings, *, once: bool) -> int:
    from mailbot.daemon import run_daemon

    report = await run_daemon(settings, once=once)
    if report is not None:
        counts = ", ".join(f"{k.value} {v}" for k, v in report.ingested.items())
        _out(f"processed: {counts}; sent {report.sent}")
    return 0


async def status(settings: Settings, *, as_json: bool) -> int:
    """The daemon's state file (whether it runs, rules version, last reload, last IMAP sync)
    and the database's queues. Writes nothing; works with no daemon and no database."""
    from tortoise.exceptions import DBConnectionError, OperationalError

    from mailbot.cli import dump_json
    from mailbot.policy import content_version
    from mailbot.status import (
        daemon_running,
        database_counts,
        format_status,
        read_status,
        status_path,
    )

    async def part(path: Path, mailbox: Settings) -> dict[str, Any]:
        state = await asyncio.to_thread(read_status, path) or {}
        rules: dict[str, Any] = dict(state.get("rules") or {})
        files = [Path(p) for p in rules.get("files") or []] or [mailbox.rules_path]
        templates = Path(rules.get("templates") or mailbox.templates_dir)
        try:
            rules["on_disk"] = await asyncio.to_thread(content_version, files, templates)
        except ConfigError:
            rules["on_disk"] = None
        return {
            "state_file": str(path),
            "daemon": {
                "running": daemon_running(state or None),
                **{key: state.get(key) for key in ("pid", "host", "mode", "started", "stopped")},
                "updated": state.get("updated"),
            },
            "rules": rules,
            "reloads": state.get("reloads"),
            "last_reload": state.get("last_reload"),
            "imap": state.get("imap"),
            "parsing": state.get("parsing"),
        }

    if settings.mailboxes_file is not None:
        from mailbot.daemon_group import mailbox_settings, status_file_of

        parts = {
            entry.name: await part(status_file_of(settings.state_dir, entry.name), mailbox)
            for entry, mailbox in mailbox_settings(settings)
        }
        report: dict[str, Any] = {
            **next(iter(parts.values())),
            "mailboxes": parts,
        }
    else:
        report = await part(status_path(settings.state_dir), settings)
    report.update(database=None, database_error=None)
    url = settings.db_url
    if await sqlite_file_missing(url):
        report["database_error"] = f"no database yet ({redact(url)})"
    else:
        try:
            await open_database(url, create_schema=False)
            try:
                report["database"] = await database_counts()
            finally:
                await close_database()
        except (OperationalError, DBConnectionError, OSError) as exc:
            report["database_error"] = f"{redact(url)}: {exc}"
    if as_json:
        _out(dump_json(report))
    else:
        for line in format_status(report):
            _out(line)
    return 0


async def check(settings: Settings, *, strict: bool = False, connect: bool = False) -> int:
    """Validate everything; then print warnings (exit 1 on them with ``strict``). With
    ``MAILBOT_MAILBOXES``: the file, then every mailbox as ``mailbot run`` would read it.
    ``connect``: also log in to the servers and read the database (:func:`_connections`)."""
    if settings.mailboxes_file is not None:
        from mailbot.daemon_group import mailbox_settings

        found = mailbox_settings(settings)
        _out(f"mailboxes: {settings.mailboxes_file} OK ({len(found)})")
        worst = 0
        for entry, mailbox in found:
            _out(f"== mailbox {entry.name} ({entry.where})")
            try:
                worst = max(worst, await _check_one(mailbox, strict=strict, connect=connect))
            except ConfigError as exc:
                raise ConfigError(f"{entry.where}: mailbox {entry.name}: {exc}") from exc
        return worst
    return await _check_one(settings, strict=strict, connect=connect)


async def _check_one(settings: Settings, *, strict: bool, connect: bool = False) -> int:
    from mailbot.rules.lint import lint_file

    policy = load_policy(settings.rules_path, settings.templates_dir)
    rules = policy.rules
    _out(f"rules:     {settings.rules_path} OK (version {rules.version})")
    _out(f"support:   {policy.support} (loop marker {policy.marker})")
    _out(f"plans:     {', '.join(rules.plans)} (default {rules.default_plan})")
    _out(f"customers: {len(rules.customers)}; wiki articles: {len(rules.wiki)}")
    _out(f"templates: {settings.templates_dir} OK for {', '.join(rules.languages)}")
    _out(f"database:  {redact(settings.db_url)}")
    _out(
        f"imap:      {settings.imap.redacted() if settings.imap else 'not set (MAILBOT_IMAP_URL)'}"
    )
    _out(
        f"smtp:      {settings.smtp.redacted() if settings.smtp else 'not set (MAILBOT_SMTP_URL)'}"
    )
    warnings = lint_file(rules, settings.rules_path, settings.templates_dir)
    for line in warnings:
        _out(line)
    failed = await _connections(settings) if connect else 0
    return 1 if failed or (strict and warnings) else 0


#: How long ``check --connect`` waits for each server.
CONNECT_TIMEOUT_SECONDS = 30.0


async def _connections(settings: Settings) -> int:
    """``check --connect``: log in to IMAP (the folder selected, read only as far as the
    server is concerned: nothing fetched or flagged) and SMTP (no mail sent), as the daemon
    would (TLS as the URL says; an OAuth token refreshed), and read the database's schema
    state without writing. One line per part; returns how many failed."""
    import aiosmtplib
    from tortoise.exceptions import BaseORMException

    from mailbot.mailbox.imap import ImapSession
    from mailbot.tickets.schema_migrate import behind_error, read_state

    failed = 0
    if settings.imap is not None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                session = await ImapSession.open(settings.imap)
                try:
                    folder = settings.imap.mailbox
                    _out(f"imap:      login OK; {folder}: UIDVALIDITY {session.uidvalidity}")
                finally:
                    await session.close()
        except (MailbotError, OSError, TimeoutError) as exc:  # reported; the exit status says so
            failed += 1
            _out(f"imap:      FAILED: {_failure(exc)}")
    if settings.smtp is not None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                smtp = SmtpTransport(settings.smtp, timeout=CONNECT_TIMEOUT_SECONDS).client()
                await smtp.connect()  # logs in once TLS is up
                try:
                    _out(f"smtp:      login OK ({settings.smtp.host}:{settings.smtp.port})")
                finally:
                    await smtp.quit()
        except (aiosmtplib.SMTPException, MailbotError, OSError, TimeoutError) as exc:
            failed += 1
            _out(f"smtp:      FAILED: {_failure(exc)}")
    url = settings.db_url
    if await sqlite_file_missing(url):
        _out("database:  not created yet (`mailbot run` or `mailbot migrate` creates it)")
        return failed
    try:
        await open_database(url, create_schema=False)
        try:
            state = await read_state()
        finally:
            await close_database()
    except (BaseORMException, MailbotError, OSError) as exc:
        _out(f"database:  FAILED: {_failure(exc)}")
        return failed + 1
    refusal = behind_error(url, state)
    if refusal is not None:
        _out(f"database:  FAILED: {refusal}")
        return failed + 1
    _out(f"database:  OK (schema at {state.level})")
    return failed


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f} s"
    return f"{type(exc).__name__}: {exc}"


def schema() -> int:
    """Print the JSON Schema of rules.yaml (what ships as rules.schema.json)."""
    from mailbot.rules.json_schema import schema_text

    sys.stdout.write(schema_text())
    return 0


async def _open_for_reading(settings: Settings) -> None:
    """The live database if it exists, else an empty in-memory one.

    Nothing is created or written: the schema is not touched and ``analyse`` only SELECTs.
    """
    url = settings.db_url
    if await sqlite_file_missing(url):
        await open_database("sqlite://:memory:")
        return
    await open_database(url, create_schema=False)


async def simulate(
    settings: Settings,
    file: Path | None,
    *,
    as_json: bool,
    at: datetime | None,
    rules: Path | None = None,
    templates: Path | None = None,
    corpus: Path | None = None,
    diff: Path | None = None,
    diff_templates: Path | None = None,
    examples: int = 3,
    exclude: Sequence[str] = (),
) -> int:
    """One message's decision trace, or (``corpus``, or ``diff``) a folder's summary."""
    from mailbot.cli import dump_json
    from mailbot.simulation import templates_for

    rules_path = rules or settings.rules_path
    templates_dir = templates_for(rules, templates, settings.templates_dir)
    target = corpus if corpus is not None else file
    assert target is not None  # the CLI requires FILE or --corpus
    if corpus is not None or diff is not None:
        rule_files = [(rules_path, templates_dir)]
        if diff is not None:
            rule_files.append((diff, templates_for(diff, diff_templates, templates_dir)))
        return await _simulate_corpus(
            settings,
            target,
            rule_files,
            as_json=as_json,
            at=at,
            examples=examples,
            exclude=exclude,
        )
    policy = load_policy(rules_path, templates_dir)
    raw = await asyncio.to_thread(target.read_bytes)
    clock = FixedClock(_aware(at, policy)) if at else SystemClock()
    try:
        parsed = await parse_off_loop(raw)
    except ParseError as exc:
        result: dict[str, object] = {"file": str(target), "quarantine": True, "error": str(exc)}
        _out(dump_json(result) if as_json else f"{target}: would be quarantined: {exc}")
        return 0
    await _open_for_reading(settings)
    key = peek_key(settings)
    try:
        analysis = await analyse(
            connections.get("default"),
            parsed,
            policy,
            clock.now(),
            TokenSigner(key) if key is not None else None,
            raw,
        )
    finally:
        await close_database()
    result = simulation_result(policy, analysis, clock.now())
    if as_json:
        _out(dump_json(result))
    else:
        _print_simulation(result)
    return 0


def _aware(at: datetime, policy: Policy) -> datetime:
    """``--at`` without a UTC offset is a time in the rules' time zone."""
    return at if at.tzinfo is not None else at.replace(tzinfo=policy.rules.tz)


async def _simulate_corpus(
    settings: Settings,
    root: Path,
    rule_files: list[tuple[Path, Path]],
    *,
    as_json: bool,
    at: datetime | None,
    examples: int,
    exclude: Sequence[str] = (),
) -> int:
    """``simulate --corpus`` (and ``--diff``): see mailbot.simulation. Exit 1 on errors."""
    from mailbot import simulation
    from mailbot.cli import dump_json

    rulesets = [simulation.Ruleset.load(path, tpl) for path, tpl in rule_files]
    key = peek_key(settings)
    run = await simulation.run_corpus(
        root,
        rulesets,
        _aware(at, rulesets[0].policy) if at else SystemClock().now(),
        TokenSigner(key) if key is not None else None,
        exclude=exclude,
    )
    if len(rulesets) > 1:
        diff = simulation.diff_runs(run, examples=examples)
        errors = len(diff.before.errors) + len(diff.after.errors)
        data = simulation.diff_json(run, diff)
        lines = simulation.diff_lines(run, diff)
    else:
        summary = simulation.summarise(run)
        errors = len(summary.errors)
        data = simulation.run_json(run)
        lines = simulation.summary_lines(run, summary)
    _out(dump_json(data) if as_json else "\n".join(lines))
    return 1 if errors else 0


def simulation_result(policy: Policy, analysis: Analysis, now: datetime) -> dict[str, object]:
    decision = analysis.decision
    parsed = analysis.parsed
    prefix = policy.rules.identity.ticket_prefix
    ticket_id = decision.thread.ticket_id
    reply: dict[str, object] | None = None
    answer = answer_for(policy, analysis, ticket_id, now)
    if answer is not None and decision.reply is not None:
        out, rendered = answer
        reply = {
            "template": decision.reply.template,
            "kind": decision.reply.kind.value,
            "language": decision.reply.language,
            "to": decision.reply.to.email,
            "subject": out.subject,
            "body": rendered.text,
            "articles": [{"title": a.title, "url": a.url} for a in decision.reply.articles],
        }
    return {
        "message_id": parsed.message_id,
        "from": parsed.from_.email if parsed.from_ else None,
        "subject": parsed.subject,
        "customer": decision.customer,
        "plan": decision.plan,
        "language": decision.language,
        "auto_generated": decision.auto.auto_generated,
        "auto_generated_reason": decision.auto.reason,
        "bounce": decision.auto.bounce,
        "text": analysis.text,
        "ticket": {
            "action": decision.thread.action.value,
            "ref": ticket_ref(prefix, ticket_id) if ticket_id is not None else None,
            "linked": (
                ticket_ref(prefix, decision.thread.linked_ticket_id)
                if decision.thread.linked_ticket_id
                else None
            ),
            "reason": decision.thread.reason,
        },
        "deadline": decision.deadline.isoformat() if decision.deadline else None,
        "severity": decision.severity,
        "urgent": decision.urgent,
        "category": decision.category,
        "clocks": [
            {
                "name": c.name,
                "status": c.status.value,
                "starts": c.started_at.isoformat(),
                "due": c.due_at.isoformat() if c.due_at else None,
            }
            for c in (decision.sla.clocks if decision.sla else ())
        ],
        "reminders": [
            {"clock": r.clock, "kind": r.kind, "at": r.due_at.isoformat(), "to": r.recipient}
            for r in (decision.sla.reminders if decision.sla else ())
        ],
        "rule_hits": list(decision.rule_hits),
        "reply": reply,
        "agent": _agent_part(policy, analysis),
    }


def _agent_part(policy: Policy, analysis: Analysis) -> dict[str, object]:
    """Whether it is an agent's mail, and what its commands would do (simulate only)."""
    from mailbot.agents.commands import parse_commands
    from mailbot.agents.verdict import MailRole

    verdict = analysis.agent
    part: dict[str, object] = {
        "role": verdict.role.value,
        "agent": verdict.agent,
        "ticket": verdict.ticket_id,
        "reason": verdict.reason,
    }
    if verdict.role is MailRole.AGENT_REPLY:
        rules = policy.rules
        block = parse_commands(
            analysis.text,
            agents=tuple(rules.agents),
            teams=tuple(rules.teams),
            categories=tuple(rules.billing.categories),
        )
        part["commands"] = [
            {"command": c.kind.value, "argument": c.arg, "minutes": c.minutes}
            for c in block.commands
        ]
        part["errors"] = [f"line {e.line}: {e.message}" for e in block.errors]
        part["relay"] = block.body
    return part


def _print_simulation(result: dict[str, object]) -> None:
    ticket = result["ticket"]
    assert isinstance(ticket, dict)
    _out(f"message:   {result['message_id']} from {result['from']}")
    _out(f"subject:   {result['subject']}")
    _out(f"customer:  {result['customer']} plan {result['plan']} language {result['language']}")
    _out(f"auto:      {result['auto_generated']} ({result['auto_generated_reason'] or '-'})")
    _out(f"ticket:    {ticket['action']} {ticket['ref'] or ''} ({ticket['reason']})")
    _out(f"severity:  {result['severity']}{' urgent' if result['urgent'] else ''}")
    _out(f"category:  {result['category'] or '-'}")
    clocks = result["clocks"]
    assert isinstance(clocks, list)
    for clock in clocks:
        _out(f"clock:     {clock['name']:<15} due {clock['due'] or '-'}")
    reminders = result["reminders"]
    assert isinstance(reminders, list)
    for reminder in reminders:
        _out(
            f"reminder:  {reminder['at']} {reminder['clock']} {reminder['kind']}"
            f" -> {reminder['to']}"
        )
    hits = result["rule_hits"]
    assert isinstance(hits, list)
    _out("rules:     " + "; ".join(str(hit) for hit in hits))
    agent = result["agent"]
    assert isinstance(agent, dict)
    if agent["role"] != "customer":
        _out(f"agent:     {agent['role']} ({agent['reason']})")
        for command in agent.get("commands", []):
            _out(f"command:   #{command['command']} {command['argument'] or ''}")
        for error in agent.get("errors", []):
            _out(f"error:     {error}")
        if agent.get("relay"):
            _out("relay:     " + str(agent["relay"]).replace("\n", "\n           "))
    reply = result["reply"]
    if reply is None:
        _out("reply:     none")
        return
    assert isinstance(reply, dict)
    _out(f"reply:     {reply['template']} to {reply['to']}: {reply['subject']}")
    _out("")
    _out(str(reply["body"]))


async def _drain(settings: Settings) -> int:
    if settings.smtp is None:
        return 0
    sender = OutboxSender(SmtpTransport(settings.smtp), SystemClock())
    total = 0
    while batch := await sender.run_once():
        total += batch
    return total


async def import_paths(settings: Settings, paths: list[Path], *, send: bool) -> int:
    """Every message under ``paths`` through intake, as the poller does it: batches of
    ``MAILBOT_BATCH`` in one transaction (a savepoint per message), parsed ahead by the parse
    workers. A batch that fails is rolled back whole; importing again stores only what is
    missing (Message-ID and content hash)."""
    policy = load_policy(settings.rules_path, settings.templates_dir)
    await open_database(settings.db_url)
    counts = dict.fromkeys(Disposition, 0)
    workers = shared_workers(settings.parse_workers)
    intake = Intake(policy, SystemClock(), signer=signer_for(settings), send_replies=send)

    async def accept(batch: list[tuple[str, bytes]]) -> None:
        raws = [raw for _, raw in batch]
        stored: list[Disposition] = []
        with parse_ahead(workers, raws, tuple(intake.policy.rules.languages)) as parsing:
            async with in_transaction():
                for index, (label, raw) in enumerate(batch):
                    parsed = await parsing.get(index)
                    outcome = await intake.accept(raw, Origin(label=label), parsed)
                    stored.append(outcome.disposition)
        for disposition in stored:  # counted once committed
            counts[disposition] += 1

    try:
        batch: list[tuple[str, bytes]] = []
        for path in paths:
            for item in iter_raw(path):
                batch.append(item)
                if len(batch) >= settings.batch:
                    await accept(batch)
                    batch = []
        if batch:
            await accept(batch)
        sent = await _drain(settings) if send else 0
    finally:
        await close_shared_workers()
        await close_database()
    summary = ", ".join(f"{k.value} {v}" for k, v in counts.items())
    _out(f"imported: {summary}; sent {sent}")
    if send and settings.smtp is None:
        _out("answers were queued; they go out when `mailbot run` has MAILBOT_SMTP_URL")
    return 0


async def tickets(
    settings: Settings, *, as_json: bool, limit: int | None, queue: bool = False
) -> int:
    from mailbot.cli import dump_json

    policy = load_policy(settings.rules_path, settings.templates_dir)
    await open_database(settings.db_url)
    try:
        rows = await list_tickets(policy.rules.identity.ticket_prefix, limit, queue=queue)
    finally:
        await close_database()
    if as_json:
        _out(dump_json([row.as_json() for row in rows]))
        return 0
    now = SystemClock().now()
    for row in rows:
        deadline = row.deadline.isoformat(timespec="minutes") if row.deadline else "-"
        state = row.sla_state(now)
        _out(
            f"{row.ref:>8}  {row.status:<8} {row.plan:<10} "
            f"{row.severity}{'!' if row.urgent else ' '} "
            f"{row.customer:<30} {row.assignee or row.team or '-':<10} "
            f"next {deadline} {state:<8} {row.subject}"
        )
    if not rows:
        _out("no tickets")
    return 0


async def quarantine(settings: Settings, *, retry: list[int], retry_all: bool) -> int:
    """The deprecated ``quarantine [--retry ID | --retry-all]``: ``list``, or ``retry``."""
    if not retry and not retry_all:
        return await quarantine_list(settings, as_json=False, released=False)
    return await quarantine_retry(settings, retry, retry_all=retry_all)


async def report(
    settings: Settings, kind: str, period_text: str, *, as_csv: bool, as_json: bool
) -> int:
    from mailbot.cli import dump_json
    from mailbot.tickets.reports import parse_period, sla_report, timebank_report, wiki_report

    policy = load_policy(settings.rules_path, settings.templates_dir)
    period = parse_period(period_text, policy.rules.tz)
    await _open_for_reading(settings)
    try:
        rows: list[Any]
        if kind == "timebank":
            rows = await timebank_report(policy.rules, period)
        elif kind == "wiki":
            rows = await wiki_report(policy.rules, period)
        else:
            rows = await sla_report(policy.rules, period)
    finally:
        await close_database()
    records = [row.as_json() for row in rows]
    if as_json:
        _out(dump_json(records))
        return 0
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = list(records[0]) if records else _REPORT_COLUMNS[kind]
        writer.writerow(header)
        for record in records:
            writer.writerow(["" if record[k] is None else record[k] for k in header])
        _out(buffer.getvalue().rstrip("\n"))
        return 0
    _out(f"{kind} report for {period.label} ({policy.rules.timezone})")
    if not records:
        _out("nothing in this period")
        return 0
    header = list(records[0])
    widths = [max(len(h), *(len(_cell(r[h])) for r in records)) for h in header]
    _out("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for record in records:
        _out("  ".join(_cell(record[h]).ljust(w) for h, w in zip(header, widths, strict=True)))
    return 0


_REPORT_COLUMNS = {
    "timebank": [
        "account", "name", "bank", "worked_minutes", "billed_minutes", "surcharge_minutes",
        "free_minutes", "allotment_minutes", "used_minutes", "expired_minutes",
        "overage_minutes", "balance_minutes",
    ],
    "sla": ["plan", "name", "tickets", "met", "breached", "open", "median_first_response_minutes"],
    "wiki": ["plan", "name", "redirected", "came_back", "resolved_unanswered", "pending"],
}  # fmt: skip


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


async def timebank_topup(settings: Settings, account: str, amount: str, note: str) -> int:
    from mailbot.billing.durations import format_minutes, parse_duration
    from mailbot.tickets.timebank import account_balance, top_up

    try:
        minutes = parse_duration(amount)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    policy = load_policy(settings.rules_path, settings.templates_dir)
    rules = policy.rules
    spec = rules.accounts.get(account)
    if spec is None or spec.time_bank is None or not spec.time_bank.prepaid:
        prepaid = [a for a, s in rules.accounts.items() if s.time_bank and s.time_bank.prepaid]
        raise ConfigError(
            f"{account!r} is not an account with a prepaid time bank in {settings.rules_path}"
            + (f" (prepaid accounts: {', '.join(prepaid)})" if prepaid else "")
        )
    await open_database(settings.db_url)
    try:
        now = SystemClock().now()
        await top_up(None, account, minutes, now, note)
        balance = await account_balance(None, rules, account, rules.default_plan, now)
    finally:
        await close_database()
    shown = format_minutes(balance) if balance is not None else "-"
    _out(f"{account}: +{format_minutes(minutes)}, balance {shown}")
    return 0


async def timebank_balance(settings: Settings, account: str) -> int:
    from mailbot.billing.durations import format_minutes
    from mailbot.tickets.timebank import account_balance

    policy = load_policy(settings.rules_path, settings.templates_dir)
    rules = policy.rules
    await _open_for_reading(settings)
    try:
        last = await Ticket.filter(account=account).order_by("-id").only("plan").first()
        plan = last.plan if last is not None else rules.default_plan
        balance = await account_balance(None, rules, account, plan, SystemClock().now())
    finally:
        await close_database()
    if balance is None:
        _out(f"{account}: no time bank (all chargeable time is billed as overage)")
    else:
        _out(f"{account}: {format_minutes(balance)} left")
    return 0


# mailbot quarantine list | show | retry | release

_QUARANTINE_STATES = (MessageState.QUARANTINED, MessageState.RELEASED)


async def quarantine_list(settings: Settings, *, as_json: bool, released: bool) -> int:
    from mailbot.cli import dump_json
    from mailbot.tickets.queries import printable

    await _open_for_reading(settings)
    try:
        entries = await list_quarantine(released=released)
    finally:
        await close_database()
    if as_json:
        _out(dump_json([entry.as_json() for entry in entries]))
        return 0
    for entry in entries:
        _out(
            f"{entry.id:>6}  {entry.received_at.isoformat(timespec='seconds')}  "
            f"{entry.size:>9} B  {printable(entry.source)}  {entry.shown_message_id or '-'}  "
            f"{entry.reason_line}"
        )
    if not entries:
        _out("no released messages" if released else "quarantine is empty")
    return 0


async def quarantine_show(settings: Settings, row_id: int, *, raw: bool) -> int:
    from mailbot.tickets.queries import (
        QUARANTINE_HEADERS,
        printable,
        quarantine_entry,
        quarantine_raw,
    )

    await _open_for_reading(settings)
    try:
        data = await quarantine_raw(row_id) if raw else None
        entry = None if raw else await quarantine_entry(row_id)
    finally:
        await close_database()
    if data is None and entry is None:
        raise ConfigError(f"no quarantined or released message with id {row_id}")
    if data is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        if not data:
            print(f"mailbot: message {row_id}: no bytes were stored", file=sys.stderr)
        return 0
    assert entry is not None
    _out(f"id:          {entry.id}")
    _out(f"state:       {entry.state}")
    _out(f"received:    {entry.received_at.isoformat()}")
    _out(f"size:        {entry.size} B{'' if entry.size else ' (no bytes were stored)'}")
    _out(f"source:      {printable(entry.source)}")
    for name in QUARANTINE_HEADERS:
        value = entry.header(name)
        if name == "Message-ID" and value is None and entry.message_id:
            value = printable(entry.message_id)
        _out(f"{name + ':':<12} {value or '-'}")
    reason = printable(entry.error.replace("\r\n", "\n").strip()) or "-"
    _out("reason:      " + reason.replace("\n", "\n             "))
    return 0


async def _quarantine_targets(ids: list[int]) -> list[int]:
    """``ids`` without repeats; a ConfigError (exit 2) before anything is done if one is not
    a quarantined or released message."""
    targets = list(dict.fromkeys(ids))
    rows = await Message.filter(id__in=targets, state__in=_QUARANTINE_STATES).values("id")
    found = {int(row["id"]) for row in rows}
    unknown = [str(row_id) for row_id in targets if row_id not in found]
    if unknown:
        raise ConfigError(
            f"no quarantined or released message with id {', '.join(unknown)}"
            " (see `mailbot quarantine list`)"
        )
    return targets


async def quarantine_retry(settings: Settings, ids: list[int], *, retry_all: bool) -> int:
    """Run stored bytes through intake again: every quarantined message, or the ``ids``
    (released ones too: retrying one is how a release is undone).

    0 when each was retried, whatever became of it; 1 when a named message has no bytes
    to retry (too big to download: it is still on the IMAP server).
    """
    policy = load_policy(settings.rules_path, settings.templates_dir)
    prefix = policy.rules.identity.ticket_prefix
    await open_database(settings.db_url)
    not_retried = 0
    try:
        if retry_all:
            rows = await Message.filter(state=MessageState.QUARANTINED).order_by("id").values("id")
            targets = [int(row["id"]) for row in rows]
        else:
            targets = await _quarantine_targets(ids)
        if not targets:
            _out("quarantine is empty")
            return 0
        intake = Intake(policy, SystemClock(), signer=signer_for(settings))
        for row_id in targets:
            row = await Message.filter(id=row_id, state__in=_QUARANTINE_STATES).first()
            if row is None:
                _out(f"{row_id}: no longer quarantined (retried or released meanwhile)")
                continue
            if not row.raw_bytes:
                _out(f"{row_id}: not retried, no bytes were stored: {_one_line(row.error or '')}")
                not_retried += 0 if retry_all else 1
                continue
            # Never lose it: step the old row aside, store anew, and only then delete the old
            # row. A crash in between leaves both, and the next retry sees a duplicate.
            if not row.content_hash.startswith("retrying:"):
                row.content_hash = f"retrying:{row.content_hash}"
                row.message_id = None
                await row.save(update_fields=["content_hash", "message_id"])
            outcome = await intake.accept(row.raw_bytes, Origin(label=f"retry:{row.source}"))
            await row.delete()
            reason = _one_line(outcome.reason)
            if outcome.disposition is Disposition.STORED:
                ticket = outcome.ticket_id
                where = f" on {ticket_ref(prefix, ticket)}" if ticket is not None else ""
                _out(f"{row_id}: stored{where} ({outcome.action.value}: {reason})")
            elif outcome.disposition is Disposition.QUARANTINED:
                again = await _requarantined_id(row.raw_bytes)
                as_id = f" as id {again}" if again is not None else ""
                _out(f"{row_id}: quarantined again{as_id}: {reason}")
            else:
                _out(f"{row_id}: duplicate, removed from the quarantine ({reason})")
    finally:
        await close_database()
    return 1 if not_retried else 0


def _one_line(text: str) -> str:
    from mailbot.tickets.queries import one_line

    return one_line(text) or "-"


async def _requarantined_id(raw: bytes) -> int | None:
    """The id a retry quarantined these bytes under (the old id is gone)."""
    from mailbot.tickets.service import sha256_hex

    rows = (
        await Message.filter(content_hash=sha256_hex(raw), state=MessageState.QUARANTINED)
        .order_by("-id")
        .limit(1)
        .values("id")
    )
    return int(rows[0]["id"]) if rows else None


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "unknown"


async def quarantine_release(settings: Settings, ids: list[int], *, reason: str | None) -> int:
    """Let quarantined messages go unprocessed. They stay stored (raw bytes kept) in state
    ``released``; ``error`` gets "; released: <reason> (by <user>, <time>)"."""
    why = " ".join((reason or "").split()) or "no reason given"
    now = SystemClock().now().isoformat(timespec="seconds")
    note = f"released: {why} (by {_operator()}, {now})"
    await open_database(settings.db_url)
    try:
        for row_id in await _quarantine_targets(ids):
            rows = await Message.filter(id=row_id).values("state", "error", "content_hash")
            if not rows:
                _out(f"{row_id}: no longer quarantined (retried meanwhile)")
                continue
            row = rows[0]
            if row["state"] == MessageState.RELEASED:
                _out(f"{row_id}: already released")
                continue
            changes: dict[str, object] = {
                "state": MessageState.RELEASED,
                "error": f"{row['error']}; {note}" if row["error"] else note,
            }
            # A retry that crashed left the hash stepped aside: a released message's content
            # must be known again, so the same mail fetched again is a duplicate.
            content_hash = str(row["content_hash"])
            if content_hash.startswith("retrying:"):
                changes["content_hash"] = content_hash.removeprefix("retrying:")
            updated = await Message.filter(id=row_id, state=MessageState.QUARANTINED).update(
                **changes
            )
            gone = "no longer quarantined (retried meanwhile)"
            _out(f"{row_id}: {'released' if updated else gone}")
    finally:
        await close_database()
    return 0
