"""Real local servers for ``mailbot demo``, the tests and the benchmarks.

* :mod:`mailbot.devservers.pymap_server`: an IMAP server (pymap) in the caller's event loop;
* :mod:`mailbot.devservers.smtp_sink`: an SMTP server (aiosmtpd) that keeps what it receives,
  with fault injection and optional TLS.

pymap and aiosmtpd come with the optional ``demo`` extra and are imported only when a server
starts, so the core package works without them. Both listen on loopback, on a free port.

:func:`self_signed_cert` makes a throw-away certificate with the ``openssl`` command line tool
(for the SMTP sink's TLS and the Dovecot test harness).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "self_signed_cert"]

_OPENSSL_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


def self_signed_cert(directory: Path, *, common_name: str = "localhost") -> TlsFiles:
    """Create ``cert.pem`` and ``key.pem`` (EC P-256, 2 days) for localhost and 127.0.0.1.

    ``directory`` must exist. Needs the ``openssl`` command (Debian package ``openssl``);
    raises ``RuntimeError`` when it is missing or fails. Blocking (a few milliseconds): from
    async code, call it through ``asyncio.to_thread``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    files = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={common_name}",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        "-keyout",
        str(files.key),
        "-out",
        str(files.cert),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=_OPENSSL_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        text = (exc.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"openssl failed ({exc.returncode}): {text}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError("openssl did not finish making a certificate") from exc
    return files
