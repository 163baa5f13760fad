"""``mailbot status``'s text from a state file's parts."""

from __future__ import annotations

from typing import Any

from mailbot.status import format_status


def _report(parsing: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "state_file": "/var/lib/mailbot/status.json",
        "daemon": {"running": True, "pid": 4321, "started": "2026-12-07T05:00:00+00:00"},
        "rules": {"version": "0123456789ab", "loaded_at": "2026-12-07T05:00:00+00:00"},
        "imap": {"mailbox": "imaps://support@mail.example:993/INBOX", "last_sync": "now"},
        "parsing": parsing,
        "database": None,
        "database_error": "no database yet (sqlite:///x)",
    }


def _parsing_line(parsing: dict[str, Any] | None) -> str | None:
    lines = [line for line in format_status(_report(parsing)) if line.startswith("parsing:")]
    return lines[0].removeprefix("parsing:").strip() if lines else None


def test_where_mail_is_parsed_is_shown() -> None:
    assert _parsing_line(None) is None  # a state file of an older mailbot
    assert _parsing_line({"workers": 0}) == "in the daemon (MAILBOT_PARSE_WORKERS=0)"
    assert _parsing_line({"workers": 1, "pids": [4330], "unavailable": None, "reparsed": 0}) == (
        "1 worker process (pid 4330)"
    )
    assert _parsing_line({"workers": 2, "pids": [], "unavailable": None, "reparsed": 0}) == (
        "2 worker processes (not started yet)"
    )
    assert _parsing_line({"workers": 1, "pids": [4333], "unavailable": None, "reparsed": 3}) == (
        "1 worker process (pid 4333); 3 chunks parsed again in the daemon after a worker died"
    )
    unavailable = {"workers": 1, "pids": [], "unavailable": "OSError: [Errno 38] no", "reparsed": 0}
    assert _parsing_line(unavailable) == (
        "in the daemon: workers unavailable (OSError: [Errno 38] no)"
    )
