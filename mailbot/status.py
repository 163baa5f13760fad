"""``mailbot status``: the daemon's own state file plus counts from the database.

The daemon writes ``$STATE_DIR/status.json`` (atomically: a temporary file renamed over it)
when it starts and stops, after each reload and after each IMAP sync: pid, host, start time,
the rules version in force and when it was loaded, the last reload's outcome and error, the
last IMAP sync. ``mailbot status`` reads it, checks whether that process still runs, and adds
what only the database knows (outbox, quarantine, open tickets). It works without a daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailbot.domain import TicketStatus
from mailbot.tickets.models import Direction, Message, MessageState, OutboxRow, OutboxStatus, Ticket

STATUS_FILE = "status.json"
OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.WAITING)


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def write_status(path: Path, data: Mapping[str, object]) -> None:
    """Replace the state file in one rename: a reader sees the old or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(
            json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The state file, or None when there is none (or it is not a daemon's JSON)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    except OSError:
        return False
    return True


def daemon_running(state: Mapping[str, Any] | None) -> bool | None:
    """Whether the daemon that wrote ``state`` still runs; None when it cannot be told (the
    file was written on another host)."""
    if state is None or state.get("stopped") or not isinstance(state.get("pid"), int):
        return False
    if state.get("host") not in (None, socket.gethostname()):
        return None
    return process_alive(int(state["pid"]))


async def database_counts() -> dict[str, int]:
    """Outbox rows by state, quarantined mail, open tickets (the database must be open)."""
    return {
        "outbox_queued": await OutboxRow.filter(status=OutboxStatus.QUEUED).count(),
        "outbox_sending": await OutboxRow.filter(status=OutboxStatus.SENDING).count(),
        "outbox_failed": await OutboxRow.filter(status=OutboxStatus.FAILED).count(),
        "quarantined": await Message.filter(
            direction=Direction.IN, state=MessageState.QUARANTINED
        ).count(),
        "open_tickets": await Ticket.filter(status__in=OPEN_STATUSES).count(),
    }


def format_status(report: Mapping[str, Any]) -> list[str]:
    """The human summary of ``report`` (the ``status --json`` object); with several
    mailboxes, each mailbox's part, then the database's figures once."""
    mailboxes = report.get("mailboxes")
    if not mailboxes:
        return _format_part(report) + _format_database(report)
    lines: list[str] = []
    for name, part in mailboxes.items():
        lines.append(f"== mailbox {name}")
        lines += _format_part(part)
    return lines + _format_database(report)


def _format_part(report: Mapping[str, Any]) -> list[str]:
    daemon = report["daemon"]
    lines: list[str] = []
    if daemon["running"] is True:
        lines.append(f"daemon:      running, pid {daemon['pid']}, since {daemon['started']}")
    elif daemon["running"] is None:
        lines.append(
            f"daemon:      pid {daemon['pid']} on {daemon['host']} (another host: cannot tell"
            f" whether it runs), started {daemon['started']}"
        )
    elif daemon.get("pid") is None:
        lines.append(f"daemon:      not running (no state file {report['state_file']})")
    else:
        ended = daemon.get("stopped") or "it did not stop cleanly"
        lines.append(
            f"daemon:      not running (last: pid {daemon['pid']}, started"
            f" {daemon['started']}, stopped {ended})"
        )
    rules = report["rules"]
    if rules.get("version"):
        lines.append(f"rules:       version {rules['version']} loaded {rules['loaded_at']}")
    disk = rules.get("on_disk")
    if disk and rules.get("version") and disk != rules["version"]:
        lines.append(f"             on disk: version {disk} (not loaded)")
    elif disk and not rules.get("version"):
        lines.append(f"rules:       on disk: version {disk}")
    last = report.get("last_reload")
    if last:
        counts = report.get("reloads") or {}
        tally = f" ({counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed)"
        if last["ok"]:
            what = f"version {last['version']}" if last["changed"] else "unchanged"
            lines.append(f"last reload: {last['at']} ({last['trigger']}) ok, {what}{tally}")
        else:
            lines.append(
                f"last reload: {last['at']} ({last['trigger']}) FAILED, kept version"
                f" {last['version']}{tally}"
            )
            lines.append(f"             {last['error']}")
    imap = report.get("imap") or {}
    if imap.get("last_sync") or imap.get("last_error"):
        sync = f"IMAP synced: {imap.get('last_sync') or 'never'} {imap.get('mailbox') or ''}"
        lines.append(sync.rstrip())
        if imap.get("last_error"):
            lines.append(f"             error at {imap['last_error_at']}: {imap['last_error']}")
    parsing = _format_parsing(report.get("parsing"))
    if parsing:
        lines.append(f"parsing:     {parsing}")
    return lines


def _format_parsing(parsing: Mapping[str, Any] | None) -> str | None:
    """Where the daemon parses mail (mailbot.ingest.parse_workers)."""
    if not parsing:
        return None
    if not parsing.get("workers"):
        return "in the daemon (MAILBOT_PARSE_WORKERS=0)"
    if parsing.get("unavailable"):
        return f"in the daemon: workers unavailable ({parsing['unavailable']})"
    pids = parsing.get("pids") or []
    count = parsing["workers"]
    text = f"{count} worker process{'es' if count != 1 else ''}"
    text += f" (pid {', '.join(map(str, pids))})" if pids else " (not started yet)"
    if parsing.get("reparsed"):
        text += f"; {parsing['reparsed']} chunks parsed again in the daemon after a worker died"
    return text


def _format_database(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    counts = report.get("database")
    if isinstance(counts, dict):
        lines.append(
            f"outbox:      {counts['outbox_queued']} queued, {counts['outbox_sending']} sending,"
            f" {counts['outbox_failed']} failed"
        )
        lines.append(f"quarantine:  {counts['quarantined']} messages")
        lines.append(f"tickets:     {counts['open_tickets']} open")
    else:
        lines.append(f"database:    {report.get('database_error') or 'not available'}")
    return lines
