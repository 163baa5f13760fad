"""The systemd notification protocol (``sd_notify``), without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). A state is one
datagram of ``KEY=VALUE`` lines: ``READY=1``, ``RELOADING=1``, ``STOPPING=1``,
``WATCHDOG=1``, ``STATUS=text``. Without ``NOTIFY_SOCKET`` (no systemd, a terminal, the
tests) every call is a no-op that returns False; a send that fails is logged, never raised:
the daemon must not stop because its supervisor's socket is gone.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) in one datagram; True when sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(s.replace("\n", " ") for s in states).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", states, address.lstrip("\0"), exc)
        return False
    return True


def watchdog_seconds() -> float | None:
    """How often to send ``WATCHDOG=1`` (half the ``WatchdogSec=``), or None without one
    (or when ``WATCHDOG_PID`` names another process)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
