"""Logging to stderr: plain text, text that journald reads well, or one JSON object a line.

``MAILBOT_LOG_FORMAT`` chooses ``text`` (the default) or ``json``.

* **text** on a terminal or a pipe: ``2026-12-07 10:11:12,345 INFO mailbot.daemon: ...``.
* **text under journald** (systemd connected stderr to the journal: ``$JOURNAL_STREAM`` names
  stderr's device and inode, see systemd.exec(5)): every line starts with its syslog priority
  (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug; sd-daemon(3)) and carries no
  timestamp, since journald records its own. Each line of a multi-line record (a traceback)
  gets the prefix, so journald files all of it under the record's priority.
* **json**: ``{"ts": "2026-12-07T10:11:12.345+00:00", "level": "INFO", "logger": ...,
  "message": ..., "exc": ..., "message_id": ..., "ticket": ...}``; ``exc`` only with an
  exception, ``message_id`` and ``ticket`` only when the call passed them in ``extra``. Under
  journald the priority prefix is added too; journald strips it, so the journal's MESSAGE is
  the bare JSON object with the right PRIORITY.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO

from mailbot.errors import ConfigError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Attributes a call may pass in ``extra`` that the JSON format carries as fields.
JSON_EXTRAS = ("message_id", "ticket")
#: Libraries that say too much at INFO.
NOISY_LOGGERS = ("tortoise", "aiosqlite", "apscheduler", "aioimaplib", "mail-parser", "mailparser")


def parse_log_format(text: str | None) -> str:
    """``MAILBOT_LOG_FORMAT``: unset or empty means ``text``."""
    value = (text or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"MAILBOT_LOG_FORMAT={text!r}: use 'text' or 'json'")
    return value


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald files a record under."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def under_journald(stream: IO[str], env: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd named in ``$JOURNAL_STREAM``
    (``DEVICE:INODE``): a redirected stderr (``2>file``, a pipe) is not, even under systemd."""
    value = env.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        wanted = (int(device), int(inode))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False  # not a number, or a stream without a file descriptor
    return (st.st_dev, st.st_ino) == wanted


class JournalPrefix(logging.Formatter):
    """Wraps another formatter: ``<N>`` before every line of its output."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        for name in JSON_EXTRAS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        return json.dumps(data, ensure_ascii=False, default=str)


def make_formatter(log_format: str, *, journald: bool) -> logging.Formatter:
    inner: logging.Formatter
    if log_format == "json":
        inner = JsonFormatter()
    elif journald:
        inner = logging.Formatter(JOURNAL_FORMAT)
    else:
        return logging.Formatter(TEXT_FORMAT)
    return JournalPrefix(inner) if journald else inner


def configure_logging(
    *,
    verbose: bool = False,
    log_format: str = "text",
    stream: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Log to ``stream`` (stderr) in ``log_format``; returns the handler. Like
    ``logging.basicConfig`` it leaves a root logger that already has handlers alone (the
    handler is still returned, unattached)."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format, journald=under_journald(stream, env)))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
