"""Access to the shared public mail corpus in ``../shared/corpus`` (read at test time only).

The corpus is never copied into this repository (several sets are copyleft). When it is
absent, corpus tests skip with a clear reason; with ``MAILBOT_REQUIRE_CORPUS=1`` they fail
instead, so CI cannot silently lose them.

Parametrise over :func:`message_params` / :func:`body_params` and call :func:`require_corpus`
first thing in the test: when the corpus is missing the parameter list holds one placeholder
(``None``) and ``require_corpus`` skips or fails the test with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
REQUIRE_ENV = "MAILBOT_REQUIRE_CORPUS"


def corpus_missing_reason() -> str | None:
    """None when the corpus is there, else why not."""
    if not CORPUS.is_dir():
        return f"mail corpus not found at {CORPUS} (expected ../shared/corpus next to the repo)"
    if not (CORPUS / "README.md").is_file():
        return f"mail corpus at {CORPUS} has no README.md; it looks incomplete"
    return None


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the corpus is unusable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_corpus() -> Path:
    """The corpus root; skips the calling test (or fails it when required) if it is absent."""
    reason = corpus_missing_reason()
    if reason is not None:
        _unavailable(reason)
    return CORPUS


def require_file(relative: str) -> Path:
    """A corpus file that a test needs; a missing one is treated like a missing corpus."""
    path = require_corpus() / relative
    if not path.is_file():
        _unavailable(f"corpus file missing: {path}")
    return path


def sources() -> list[str]:
    """Corpus source folders that hold raw messages."""
    if corpus_missing_reason() is not None:
        return []
    return sorted(p.name for p in CORPUS.iterdir() if (p / "messages").is_dir())


def message_files(source: str | None = None, under: str = "") -> list[Path]:
    """Raw message files of one source (or of all), optionally below ``messages/<under>``."""
    if corpus_missing_reason() is not None:
        return []
    roots = [source] if source else sources()
    files: list[Path] = []
    for name in roots:
        base = CORPUS / name / "messages" / under
        if base.is_dir():
            files.extend(p for p in base.rglob("*") if p.is_file())
    return sorted(files)


def body_files(source: str) -> list[Path]:
    """Body-only reply texts of a source (``<source>/bodies/``)."""
    base = CORPUS / source / "bodies"
    return sorted(p for p in base.glob("*.txt") if p.is_file()) if base.is_dir() else []


def relative(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def params(paths: list[Path]) -> list[Any]:
    """``pytest.param`` per file, id = path inside the corpus; a placeholder when missing."""
    if not paths:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(p, id=relative(p)) for p in paths]


def message_params(source: str | None = None, under: str = "") -> list[Any]:
    return params(message_files(source, under))


def body_params(source: str) -> list[Any]:
    return params(body_files(source) if corpus_missing_reason() is None else [])


def load_json(relative_path: str) -> Any:
    return json.loads(require_file(relative_path).read_text(encoding="utf-8"))


def need(path: Path | None) -> Path:
    """The parametrised file; skips/fails on the missing-corpus placeholder."""
    require_corpus()
    if path is None:
        pytest.fail("the corpus is present but no file matched this parametrisation")
    return path
