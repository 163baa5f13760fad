"""Log formats (text, text under journald, JSON) and the observability settings
(MAILBOT_LOG_FORMAT, MAILBOT_HTTP_LISTEN)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from mailbot.cli import EXIT_CONFIG, main
from mailbot.errors import ConfigError
from mailbot.log_setup import configure_logging, parse_log_format, under_journald
from mailbot.settings import load_settings
from mailbot.web_endpoint import is_loopback, parse_listen


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[str]]:
    """A real file stream: it has a device and an inode, as journald's socket has."""
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as stream:
        yield stream


def journal_env(stream: IO[str]) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def emit(handler: logging.Handler, name: str = "mailbot.test") -> logging.Logger:
    """A logger of its own that writes only to ``handler`` (pytest owns the root logger)."""
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def written(stream: IO[str]) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def test_text_by_default_with_timestamp_level_and_logger(log_file: IO[str]) -> None:
    handler = configure_logging(stream=log_file, env={})
    emit(handler).info("stored %d messages", 3)
    (line,) = written(log_file)
    stamp, level, name, message = line.split(" ", 4)[1:]
    assert datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    assert stamp.count(":") == 2  # the time part of asctime
    assert (level, name, message) == ("INFO", "mailbot.test:", "stored 3 messages")


def test_journald_gets_priority_prefixes_and_no_timestamp(log_file: IO[str]) -> None:
    env = journal_env(log_file)
    assert under_journald(log_file, env)
    logger = emit(configure_logging(stream=log_file, env=env))
    logger.debug("looking")
    logger.info("stored %s", "it")
    logger.warning("slow")
    logger.error("broken")
    logger.critical("gone")
    assert written(log_file) == [
        "<7>DEBUG mailbot.test: looking",
        "<6>INFO mailbot.test: stored it",
        "<4>WARNING mailbot.test: slow",
        "<3>ERROR mailbot.test: broken",
        "<2>CRITICAL mailbot.test: gone",
    ]


def test_journald_prefixes_every_line_of_a_traceback(log_file: IO[str]) -> None:
    logger = emit(configure_logging(stream=log_file, env=journal_env(log_file)))
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("intake failed")
    lines = written(log_file)
    assert lines[0] == "<3>ERROR mailbot.test: intake failed"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: bad value"


@pytest.mark.parametrize("value", ["", "1:2", "nonsense", "12"])
def test_another_stream_is_not_journald(log_file: IO[str], value: str) -> None:
    """A stderr redirected to a file or pipe under systemd keeps JOURNAL_STREAM but is not
    the journal: only the named device and inode count."""
    env = {"JOURNAL_STREAM": value} if value else {}
    assert not under_journald(log_file, env)
    assert not under_journald(io.StringIO(), journal_env(log_file))  # no file descriptor
    emit(configure_logging(stream=log_file, env=env)).warning("slow")
    (line,) = written(log_file)
    assert not line.startswith("<") and line.endswith(" WARNING mailbot.test: slow")


def test_json_one_object_per_line_with_extras_and_exception(log_file: IO[str]) -> None:
    logger = emit(configure_logging(stream=log_file, env={}, log_format="json"))
    logger.info("ticket %s stored\nsecond line", "#7", extra={"ticket": 7, "message_id": "<a@b>"})
    logger.warning("plain")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("failed on %s", "uid 4")
    lines = written(log_file)
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "ticket #7 stored\nsecond line"
    assert (first["level"], first["logger"]) == ("INFO", "mailbot.test")
    assert (first["ticket"], first["message_id"]) == (7, "<a@b>")
    stamp = datetime.fromisoformat(first["ts"])
    assert stamp.utcoffset() == timedelta(0)
    assert set(second) == {"ts", "level", "logger", "message"}  # no extras, no exc
    assert third["message"] == "failed on uid 4"
    assert third["exc"].startswith("Traceback") and "ZeroDivisionError" in third["exc"]


def test_json_under_journald_keeps_the_priority_prefix(log_file: IO[str]) -> None:
    """journald strips ``<N>``: the journal's MESSAGE is the JSON, PRIORITY the level."""
    logger = emit(configure_logging(stream=log_file, env=journal_env(log_file), log_format="json"))
    logger.warning("slow")
    (line,) = written(log_file)
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["level"] == "WARNING"


def test_log_format_values() -> None:
    assert parse_log_format(None) == parse_log_format("") == "text"
    assert parse_log_format("JSON") == "json"
    with pytest.raises(ConfigError, match=r"MAILBOT_LOG_FORMAT='xml': use 'text' or 'json'"):
        parse_log_format("xml")
    assert load_settings({"MAILBOT_LOG_FORMAT": "json"}).log_format == "json"
    assert load_settings({}).log_format == "text"
    with pytest.raises(ConfigError, match="MAILBOT_LOG_FORMAT='syslog'"):
        load_settings({"MAILBOT_LOG_FORMAT": "syslog"})


def test_a_bad_log_format_is_a_configuration_error_of_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MAILBOT_LOG_FORMAT", "yaml")
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path))
    assert main(["status"]) == EXIT_CONFIG
    assert "MAILBOT_LOG_FORMAT='yaml': use 'text' or 'json'" in capsys.readouterr().err


def test_noisy_libraries_stay_at_warning(log_file: IO[str]) -> None:
    configure_logging(stream=log_file, env={}, verbose=True)
    for name in ("tortoise", "aiosqlite", "apscheduler", "aioimaplib", "mailparser"):
        assert logging.getLogger(name).level == logging.WARNING


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("off", None),
        (" OFF ", None),
        ("9325", ("127.0.0.1", 9325)),
        ("0", ("127.0.0.1", 0)),
        ("127.0.0.1:9325", ("127.0.0.1", 9325)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:9325", ("localhost", 9325)),
        ("metrics.example.com:9325", ("metrics.example.com", 9325)),
        ("[::1]:9325", ("::1", 9325)),
        ("[::]:9325", ("::", 9325)),
        ("[0:0:0:0:0:0:0:1]:1", ("::1", 1)),
    ],
)
def test_http_listen_values(text: str | None, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected
    env = {} if text is None else {"MAILBOT_HTTP_LISTEN": text}
    assert load_settings(env).http_listen == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("on", "no host"),
        (":9325", "no host"),
        ("9325:", "port '' is not a number"),
        ("127.0.0.1:65536", "port '65536' is not a number from 0 to 65535"),
        ("127.0.0.1:-1", "port '-1'"),
        ("127.0.0.1:http", "port 'http'"),
        ("::1:9325", "write an IPv6 address in brackets"),
        ("[::1]", "needs a port after the bracket"),
        ("[::1]9325", "needs a port after the bracket"),
        ("[nonsense]:9325", "'nonsense' is not an IPv6 address"),
        ("[::1]:port", "port 'port'"),
        ("user@host:9325", "is not a host name or address"),
        ("http://127.0.0.1:9325", "is not a host name or address"),
    ],
)
def test_bad_http_listen_values_name_the_variable_and_the_value(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"MAILBOT_HTTP_LISTEN": text})
    message = str(caught.value)
    assert message.startswith(f"MAILBOT_HTTP_LISTEN={text!r}: ")
    assert why in message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("metrics.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
