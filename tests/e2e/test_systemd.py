"""The daemon speaks systemd's notification protocol (Type=notify) to a real socket: READY
after the database is open and the first IMAP sync worked, WATCHDOG from the event loop,
RELOADING/READY around a SIGHUP reload, STOPPING on SIGTERM, and exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from mailbot.daemon import Daemon
from mailbot.policy import Policy
from tests.e2e.conftest import make_settings


async def _next(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams until one holding ``wanted``; all of them, in order."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=15)
        seen.append(data.decode())
        if wanted in seen[-1].splitlines():
            return seen


async def test_ready_watchdog_reload_and_stop(
    imap_server: Any,
    smtp_sink: Any,
    rules_file: Path,
    policy: Policy,
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    daemon = Daemon(settings, policy)
    task = asyncio.create_task(daemon.run())
    try:
        first = await _next(sock, "READY=1")
        assert daemon.poller.last_sync is not None  # READY only after a good IMAP sync
        assert any(line.startswith("STATUS=serving") for line in first[-1].splitlines())
        await _next(sock, "WATCHDOG=1")
        os.kill(os.getpid(), signal.SIGHUP)  # what ExecReload does
        around = await _next(sock, "RELOADING=1")
        after = await _next(sock, "READY=1")
        assert "RELOADING=1" in around[-1] and "READY=1" in after[-1]
        assert daemon.reloader.last is not None and daemon.reloader.last.trigger == "SIGHUP"
        os.kill(os.getpid(), signal.SIGTERM)  # systemctl stop
        await _next(sock, "STOPPING=1")
        await asyncio.wait_for(task, timeout=30)
    finally:
        daemon.stop.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=30)
        sock.close()
    assert task.exception() is None
