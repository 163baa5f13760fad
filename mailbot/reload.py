"""Hot reload of rules.yaml and the templates: on SIGHUP and when the files change.

A reload loads and validates the files in a worker thread (``mailbot.policy.load_policy``),
then swaps the new :class:`~mailbot.policy.Policy` in with one synchronous call on the event
loop, so every reader sees the old ruleset or the new one, never a mix. A message already
being decided keeps the ruleset it started with (``Intake`` pins it per message). A reload
that fails keeps the old rules, logs one error naming file, line and field, and is kept as
``last`` for ``mailbot status``.

File changes are found by polling: a cheap ``stat`` signature (size, mtime, inode) of
rules.yaml, the customer files it includes (``customers_from``: ``Policy.files``, and those a
failed load named, so that creating or fixing a new one is noticed), the inherited templates
and every template each few seconds, and the content hash
(the ruleset version) when the signature moved or is too recent to trust (an edit within the
file system's timestamp granularity keeps size and mtime). Unchanged content is never loaded
again, so a broken file is reported once, not at every poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailbot.errors import ConfigError, RulesError
from mailbot.policy import Policy, content_version, load_policy, template_files
from mailbot.rules.loader import RulesErrorWithFiles

log = logging.getLogger(__name__)

#: How often the daemon looks at the files.
RELOAD_POLL_SECONDS = 3.0
# A file modified this recently may change again without its size or mtime moving.
_RACY_NS = 2_000_000_000

FileStat = tuple[str, int, int, int]  # path, size, mtime (ns), inode; -1s when missing


def stat_signature(rule_files: Sequence[Path], templates_dir: Path) -> tuple[FileStat, ...]:
    """Size, mtime and inode of every file a ruleset is made of (blocking: run it off-loop)."""
    result: list[FileStat] = []
    for path in [*rule_files, *template_files(templates_dir)]:
        try:
            st = path.stat()
        except OSError:
            result.append((str(path), -1, -1, -1))
        else:
            result.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(result)


def _racy(signature: Sequence[FileStat]) -> bool:
    now = time.time_ns()
    return any(now - mtime < _RACY_NS for _, _, mtime, _ in signature if mtime >= 0)


def error_text(exc: BaseException) -> str:
    """A configuration error on one line: ``rules.yaml:14:11: customers[2].plan: ...``."""
    if isinstance(exc, RulesError):
        return "; ".join(exc.problems)
    text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(exc)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    trigger: str  # "SIGHUP", "file change", ...
    at: datetime
    ok: bool
    #: Whether a new version was swapped in (False: the files held the running version).
    changed: bool
    #: The version in force after the reload.
    version: str
    #: The version of the files tried (the new one, or the broken one).
    attempted: str | None
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "trigger": self.trigger,
            "at": self.at.isoformat(timespec="seconds"),
            "ok": self.ok,
            "changed": self.changed,
            "version": self.version,
            "attempted": self.attempted,
            "error": self.error,
        }


class RulesReloader:
    """Reloads the ruleset for whoever holds it: ``current()`` reads it, ``swap(p)`` installs
    a new one (synchronously: that is what makes the swap atomic on the event loop)."""

    def __init__(
        self,
        rules_path: Path,
        templates_dir: Path,
        *,
        current: Callable[[], Policy],
        swap: Callable[[Policy], None],
        on_outcome: Callable[[ReloadOutcome], None] = lambda outcome: None,
    ) -> None:
        self.rules_path = rules_path
        self.templates_dir = templates_dir
        self.current = current
        self.swap = swap
        self.on_outcome = on_outcome
        self.last: ReloadOutcome | None = None
        self.succeeded = 0
        self.failed = 0
        self._lock = asyncio.Lock()
        self._signature: tuple[FileStat, ...] | None = None
        self._recheck = True
        # The content last loaded or tried: a file change is a different version than this.
        self._attempted = current().version
        # Customer files the last failed load named that the running ruleset may lack.
        self._tried_files: tuple[Path, ...] = ()

    def _files(self) -> tuple[Path, ...]:
        """The files a change of is a reload: the running ruleset's, and those the last
        failed load named."""
        running = self.current().files or (self.rules_path,)
        return tuple(dict.fromkeys((*running, *self._tried_files)))

    async def reload(self, trigger: str = "SIGHUP") -> ReloadOutcome:
        """Load and validate the files off the event loop, then swap; on failure keep the
        old rules. Never raises (except cancellation): the outcome says what happened."""
        async with self._lock:
            outcome = await self._reload(trigger)
        self.last = outcome
        self.on_outcome(outcome)
        return outcome

    async def _reload(self, trigger: str) -> ReloadOutcome:
        old = self.current()
        try:
            policy = await asyncio.to_thread(
                load_policy, self.rules_path, self.templates_dir, expect=self._files()
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            error = error_text(exc)
            if isinstance(exc, RulesErrorWithFiles):
                self._tried_files = exc.files
            try:
                attempted: str | None = await asyncio.to_thread(
                    content_version, self._files(), self.templates_dir
                )
            except ConfigError:
                attempted = None
            self._attempted = attempted or self._attempted
            log.error(
                "rules reload (%s) failed, keeping version %s: %s",
                trigger,
                old.version,
                error,
                exc_info=not isinstance(exc, ConfigError),
            )
            return ReloadOutcome(trigger, _now(), False, False, old.version, attempted, error=error)
        self.succeeded += 1
        self._attempted = policy.version
        self._tried_files = ()
        if policy.version == old.version:
            log.info("rules reload (%s): unchanged, version %s", trigger, old.version)
            return ReloadOutcome(trigger, _now(), True, False, old.version, policy.version)
        self.swap(policy)
        log.info(
            "rules reloaded (%s): version %s -> %s from %s",
            trigger,
            old.version,
            policy.version,
            self.rules_path,
        )
        return ReloadOutcome(trigger, _now(), True, True, policy.version, policy.version)

    async def check(self) -> ReloadOutcome | None:
        """The file-change poll: reload when the files hold another version than the one
        last loaded or tried; None when nothing changed."""
        files = self._files()
        signature = await asyncio.to_thread(stat_signature, files, self.templates_dir)
        if signature == self._signature and not self._recheck:
            return None
        self._signature = signature
        self._recheck = _racy(signature)
        version = await asyncio.to_thread(content_version, files, self.templates_dir)
        if version == self._attempted:
            return None
        return await self.reload("file change")


def _now() -> datetime:
    return datetime.now(UTC)
