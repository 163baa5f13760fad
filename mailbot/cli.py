"""mailbot's command line. ``main(argv) -> int`` is the one place that exits.

Exit codes: 0 ok, 1 runtime failure, 2 configuration error (bad settings or rules.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mailbot import __version__
from mailbot.errors import ConfigError, MailbotError
from mailbot.settings import Settings, load_settings

log = logging.getLogger("mailbot")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailbot", description="An e-mail driven helpdesk.")
    parser.add_argument("--version", action="version", version=f"mailbot {__version__}")
    parser.add_argument("--rules", help="rules.yaml (default: $MAILBOT_RULES or ./rules.yaml)")
    parser.add_argument("--db", help="database URL (default: $MAILBOT_DB_URL or SQLite in state)")
    parser.add_argument("--imap", help="IMAP URL (default: $MAILBOT_IMAP_URL)")
    parser.add_argument("--smtp", help="SMTP URL (default: $MAILBOT_SMTP_URL)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="process the mailbox, drain, exit")

    status = sub.add_parser(
        "status", help="the daemon (running?, rules version, last reload, last IMAP sync), queues"
    )
    status.add_argument("--json", action="store_true")

    sub.add_parser("demo", help="run the whole path on local servers and show what happened")
    check = sub.add_parser(
        "check", help="validate settings, rules and templates; warn about likely mistakes"
    )
    check.add_argument(
        "--strict", action="store_true", help="exit 1 when there are warnings (exit 0 without)"
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also log in to the IMAP and SMTP servers (OAuth tokens refreshed; nothing"
        " fetched, flagged or sent) and read the database's schema state; exit 1 when one"
        " of them fails",
    )
    sub.add_parser(
        "schema", help="print the JSON Schema of rules.yaml (the shipped rules.schema.json)"
    )
    migrate = sub.add_parser(
        "migrate",
        help="bring the database's schema up to this mailbot (back it up first)",
        description="Apply the pending schema migrations in order, each in a transaction, and"
        " record them. A database from a mailbot before migrations is checked against the"
        " first migration, given the columns it lacks, and recorded as at it. Back up first."
        " --check: exit 1 (naming the pending migrations) when the database is behind, 0 when"
        " current; --list: applied and pending migrations. Neither changes anything.",
    )
    migrate.add_argument(
        "--db", dest="migrate_db", metavar="URL", help="database URL (default: as for run)"
    )
    migrate_mode = migrate.add_mutually_exclusive_group()
    migrate_mode.add_argument(
        "--check", action="store_true", help="exit 1 when migrations are pending"
    )
    migrate_mode.add_argument("--list", action="store_true", help="applied and pending")

    sim = sub.add_parser(
        "simulate",
        help="what would happen to a message, or to a folder of mail (writes nothing)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
What mailbot would do with mail, writing nothing and sending nothing.

  mailbot simulate FILE.eml [--json] [--at TIME] [--rules OTHER.yaml [--templates DIR]]
  mailbot simulate --corpus DIR [--json] [--at TIME] [--rules A.yaml]
  mailbot simulate --corpus DIR [--rules A.yaml] --diff B.yaml [--examples N] [--json]

FILE: the decision trace of one message, threaded against the live database (read only).
--corpus: every message under DIR (recursively: .eml files, mbox files, Maildirs, read as
`mailbot import` reads them) parsed and decided, each as if it were the first mail seen (an
empty throw-away database; the live one is not opened); prints counts per outcome (the
answer's kind, or why there is none), plan, language and new tickets' severity.
--diff B.yaml: the same mail under a second rules file (A: --rules, else the configured
one); prints the outcome transitions (from -> to: count) with the first N files of each,
and changes of plan, language and severity. Exit 1 when any message made us fail.""",
    )
    sim_what = sim.add_mutually_exclusive_group(required=True)
    sim_what.add_argument("file", nargs="?", type=Path, help="one message (.eml)")
    sim_what.add_argument(
        "--corpus", type=Path, metavar="DIR", help="every message under DIR, summed up"
    )
    sim.add_argument("--json", action="store_true")
    sim.add_argument("--at", help="pretend the message arrives at this ISO time")
    sim.add_argument(
        "--rules",
        dest="simulate_rules",
        type=Path,
        metavar="RULES.yaml",
        help="decide under this rules file instead of the configured one",
    )
    sim.add_argument(
        "--templates",
        dest="simulate_templates",
        type=Path,
        metavar="DIR",
        help="templates for --rules (default: templates/ beside it, else the configured ones)",
    )
    sim.add_argument(
        "--diff",
        type=Path,
        metavar="B.yaml",
        help="also decide under B.yaml and show what would change",
    )
    sim.add_argument(
        "--diff-templates",
        type=Path,
        metavar="DIR",
        help="templates for --diff (default: templates/ beside it, else those of --rules)",
    )
    sim.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="with --corpus: skip files whose path under DIR or name matches (repeatable:"
        " --exclude '*.md' --exclude '*/expected/*')",
    )
    sim.add_argument(
        "--examples",
        type=int,
        default=3,
        metavar="N",
        help="example files shown per transition with --diff (default 3)",
    )

    imp = sub.add_parser("import", help="run .eml files, mbox files or Maildirs through intake")
    imp.add_argument("paths", nargs="+", type=Path)
    imp.add_argument("--no-send", action="store_true", help="store only; queue no answers")

    tickets = sub.add_parser("tickets", help="list tickets, newest first")
    tickets.add_argument("--json", action="store_true")
    tickets.add_argument("--limit", type=int, default=None)
    tickets.add_argument(
        "--queue",
        action="store_true",
        help="open tickets in work order: plan priority, then the next deadline",
    )

    report = sub.add_parser(
        "report", help="monthly reports: time banks, SLA results, wiki redirects"
    )
    report.add_argument("kind", choices=["timebank", "sla", "wiki"])
    report.add_argument("--period", required=True, help="a month, YYYY-MM")
    report.add_argument("--csv", action="store_true", help="CSV instead of a table")
    report.add_argument("--json", action="store_true")

    bank = sub.add_parser("timebank", help="prepaid hours: top up, or show balances")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    topup = bank_sub.add_parser("topup", help="add prepaid hours to an account")
    topup.add_argument("account")
    topup.add_argument("amount", help="a duration: 10h, 90m, 1h30")
    topup.add_argument("--note", default="")
    balance = bank_sub.add_parser("balance", help="the balance of one account, now")
    balance.add_argument("account")

    quarantine = sub.add_parser(
        "quarantine",
        help="mail intake could not take: list, show, retry or release it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Mail that intake cannot take (unparseable, or a failure of ours) is stored with its exact
bytes and quarantined; nothing is dropped. Without a subcommand: list.

  mailbot quarantine list [--json] [--released]
  mailbot quarantine show ID [--raw]       (--raw > ID.eml: the exact stored bytes)
  mailbot quarantine retry ID [ID ...] | --all
  mailbot quarantine release ID [ID ...] [--reason TEXT]

retry runs the stored bytes through intake again: the message is stored (on a ticket),
is a duplicate, or is quarantined again under a new id. The old entry is removed only
after that. Exit 0 when every message was retried (even if quarantined again), 1 when a
named one has no bytes to retry (too big: left on the IMAP server), 2 for an unknown id.

release lets messages go unprocessed (spam, garbage): they leave the list but stay
stored, raw bytes and all, in state "released" (list --released), with "released:
REASON" added to their error. Their content and Message-ID stay known, so the same mail
fetched or imported again is a duplicate and is not processed. retry ID still takes a
released message: that is how a release is undone.

--retry ID and --retry-all are deprecated aliases of retry ID and retry --all.""",
    )
    quarantine.add_argument(
        "--retry",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="deprecated: use `quarantine retry ID`",
    )
    quarantine.add_argument(
        "--retry-all", action="store_true", help="deprecated: use `quarantine retry --all`"
    )
    q_sub = quarantine.add_subparsers(
        dest="quarantine_command", metavar="{list,show,retry,release}"
    )
    q_list = q_sub.add_parser("list", help="quarantined messages, oldest first (the default)")
    q_list.add_argument("--json", action="store_true", help="a JSON list of objects")
    q_list.add_argument("--released", action="store_true", help="released messages instead")
    q_show = q_sub.add_parser("show", help="one message: headers, size, source, full reason")
    q_show.add_argument("id", type=int, metavar="ID", help="an id from list (or list --released)")
    q_show.add_argument(
        "--raw", action="store_true", help="write the exact stored bytes (to save as .eml)"
    )
    q_retry = q_sub.add_parser(
        "retry",
        help="run the stored bytes through intake again",
        usage="%(prog)s [-h] (ID [ID ...] | --all)",
        description="Run the stored bytes through intake again; the old entry goes only after"
        " the message is stored, found a duplicate or quarantined again (under a new id)."
        " A released message can be retried by its id: that undoes the release.",
    )
    q_targets = q_retry.add_mutually_exclusive_group(required=True)
    q_targets.add_argument(
        "ids", nargs="*", type=int, default=[], metavar="ID", help="ids from quarantine list"
    )
    q_targets.add_argument("--all", action="store_true", help="every quarantined message")
    q_release = q_sub.add_parser(
        "release",
        help="let messages go unprocessed; they stay stored (a refetch is a duplicate)",
        description="Let quarantined messages go unprocessed (spam, garbage). They leave the"
        " list but stay stored with their raw bytes, in state released (see list --released),"
        " the reason added to their error. The same mail fetched or imported again is a"
        " duplicate of a released one and is not processed; retry ID takes it back.",
    )
    q_release.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids from list")
    q_release.add_argument("--reason", metavar="TEXT", help="why (kept with the message)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(imap_url=args.imap, smtp_url=args.smtp, db_url=args.db, rules=args.rules)


def _configure_logging(verbose: bool) -> None:
    """stderr as text (``<N>`` priorities under journald) or JSON: mailbot.log_setup. A bad
    MAILBOT_LOG_FORMAT logs in text here; loading the settings then fails on it (exit 2)."""
    import os

    from mailbot.log_setup import configure_logging, parse_log_format

    try:
        log_format = parse_log_format(os.environ.get("MAILBOT_LOG_FORMAT"))
    except ConfigError as exc:
        configure_logging(verbose=verbose)
        log.warning("%s; logging as text", exc)
        return
    configure_logging(verbose=verbose, log_format=log_format)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return asyncio.run(_dispatch(args))
    except ConfigError as exc:
        print(f"mailbot: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MailbotError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


async def _dispatch(args: argparse.Namespace) -> int:
    from mailbot import commands

    if args.command == "demo":
        from mailbot.demo import run_demo

        return await run_demo(rules=Path(args.rules) if args.rules else None)
    if args.command == "schema":
        return commands.schema()
    if args.command == "migrate":
        from mailbot.tickets.schema_migrate import migrate_command

        url = args.migrate_db or args.db or _settings(args).db_url
        ok = await migrate_command(url, check=args.check, listing=args.list)
        return EXIT_OK if ok else EXIT_FAILURE
    settings = _settings(args)
    if args.command == "run":
        return await commands.run(settings, once=args.once)
    if args.command == "status":
        return await commands.status(settings, as_json=args.json)
    if args.command == "check":
        return await commands.check(settings, strict=args.strict, connect=args.connect)
    if args.command == "simulate":
        try:
            at = datetime.fromisoformat(args.at) if args.at else None
        except ValueError as exc:
            raise ConfigError(
                f"simulate --at {args.at!r}: not an ISO time (2026-11-23T10:00+01:00)"
            ) from exc
        return await commands.simulate(
            settings,
            args.file,
            as_json=args.json,
            at=at,
            rules=args.simulate_rules,
            templates=args.simulate_templates,
            corpus=args.corpus,
            diff=args.diff,
            diff_templates=args.diff_templates,
            examples=args.examples,
            exclude=tuple(args.exclude),
        )
    if args.command == "import":
        return await commands.import_paths(settings, args.paths, send=not args.no_send)
    if args.command == "tickets":
        return await commands.tickets(
            settings, as_json=args.json, limit=args.limit, queue=args.queue
        )
    if args.command == "report":
        return await commands.report(
            settings, args.kind, args.period, as_csv=args.csv, as_json=args.json
        )
    if args.command == "timebank":
        if args.bank_command == "topup":
            return await commands.timebank_topup(settings, args.account, args.amount, args.note)
        return await commands.timebank_balance(settings, args.account)
    if args.command == "quarantine":
        action = args.quarantine_command
        if args.retry or args.retry_all:
            if action is not None:
                raise ConfigError("quarantine: --retry and --retry-all take no subcommand")
            print(
                "mailbot: `quarantine --retry ID` and `--retry-all` are deprecated:"
                " use `quarantine retry ID` and `quarantine retry --all`",
                file=sys.stderr,
            )
            return await commands.quarantine(settings, retry=args.retry, retry_all=args.retry_all)
        if action == "show":
            return await commands.quarantine_show(settings, args.id, raw=args.raw)
        if action == "retry":
            return await commands.quarantine_retry(settings, args.ids, retry_all=args.all)
        if action == "release":
            return await commands.quarantine_release(settings, args.ids, reason=args.reason)
        return await commands.quarantine_list(
            settings,
            as_json=getattr(args, "json", False),
            released=getattr(args, "released", False),
        )
    raise AssertionError(args.command)


def dump_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


if __name__ == "__main__":
    sys.exit(main())
