"""Raw messages from files for ``mailbot import``: .eml files, mbox files, Maildir folders.

Each yields (label, raw bytes). The bytes are handed to the same intake as IMAP mail.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

from mailbot.errors import ConfigError


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def iter_raw(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every message under ``path`` with a label naming where it came from."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    if _is_maildir(path):
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.keys()):
            yield f"maildir:{path}/{key}", box.get_bytes(key)
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            yield from iter_raw(child)
    elif _is_mbox(path):
        mbox = mailbox.mbox(path, factory=None, create=False)
        for index, key in enumerate(mbox.keys()):
            yield f"mbox:{path}#{index + 1}", mbox.get_bytes(key)
    else:
        yield f"file:{path}", path.read_bytes()
