"""sd_notify without libsystemd: datagrams on a real AF_UNIX socket, a no-op without one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mailbot.systemd_notify import notify, watchdog_seconds


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_states_go_in_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=serving\nINBOX") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=serving INBOX"


def test_an_abstract_socket_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"mailbot-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("WATCHDOG=1")
        assert server.recv(4096) == b"WATCHDOG=1"


def test_a_gone_socket_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False
    assert "sd_notify ('READY=1',)" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("", "", None),
        ("0", "", None),
        ("30000000", "", 15.0),
        ("30000000", "{own}", 15.0),
        ("30000000", "1", None),  # the watchdog belongs to another process
        ("x", "", None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_sec(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str, expected: float | None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.setenv("WATCHDOG_PID", pid.format(own=os.getpid()))
    assert watchdog_seconds() == expected
