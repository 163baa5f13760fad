"""The key that signs agents' reply tokens.

``MAILBOT_SECRET`` (or ``MAILBOT_SECRET_FILE``, e.g. a systemd credential) wins. Without
either, a random key is created once in the state directory (``agent-token.key``, mode
0600) and reused, so tokens in notifications already sent stay valid across restarts.
Several daemons on one database must share the key: set ``MAILBOT_SECRET`` for them.
Changing the key invalidates the tokens of notifications already sent: agents then get an
explanation instead of a relayed answer, and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import secrets as random_source
from pathlib import Path

from mailbot.agents.tokens import TokenSigner
from mailbot.errors import ConfigError
from mailbot.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "agent-token.key"
MIN_SECRET_CHARS = 16


def load_key(settings: Settings) -> bytes:
    if settings.secret is not None:
        if len(settings.secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"MAILBOT_SECRET is too short ({len(settings.secret)} characters): "
                f"use at least {MIN_SECRET_CHARS}, e.g. `openssl rand -hex 32`"
            )
        return settings.secret.encode("utf-8")
    path = settings.state_dir / KEY_FILE
    try:
        return _read_or_create(path)
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: the token key is not text; delete it to make a new one, or set MAILBOT_SECRET"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read or create the token key ({exc.strerror}); "
            "set MAILBOT_SECRET or MAILBOT_SECRET_FILE"
        ) from exc


def peek_key(settings: Settings) -> bytes | None:
    """The key if one is configured or was created, else None (creates nothing)."""
    if settings.secret is not None:
        return load_key(settings)
    path = settings.state_dir / KEY_FILE
    return load_key(settings) if path.exists() else None


def _read_or_create(path: Path) -> bytes:
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        if len(key) < MIN_SECRET_CHARS:
            raise ConfigError(f"{path}: the token key is too short; delete it to make a new one")
        return key.encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = random_source.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_or_create(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    log.warning(
        "created the agent token key %s; set MAILBOT_SECRET when several daemons share a database",
        path,
    )
    return key.encode("ascii")


def signer_for(settings: Settings) -> TokenSigner:
    return TokenSigner(load_key(settings))
