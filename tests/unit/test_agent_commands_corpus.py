"""A command block on top of every public reply body in ../shared/corpus (read, never copied).

For each body-only reply fixture, ``#time 20m`` and ``#wait`` are put on top. The block must
give exactly those two commands, and the text relayed from the rest
(:func:`strip_agent_reply`) must equal what :func:`new_text` makes of the fixture alone:
the command block does not disturb quote stripping, whether the reply is stripped after
:func:`parse_commands` (its body) or before it (the whole reply). Where the corpus tests
state an expected result (``QUOTE_CASES`` of ``test_corpus_parse``), it is checked as
strictly as there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailbot.agents.commands import Command, CommandKind, parse_commands, strip_agent_reply
from mailbot.ingest.quotes import new_text
from tests.corpus import body_files, body_params, need, require_corpus, require_file
from tests.unit.test_corpus_parse import QUOTE_CASES

pytestmark = pytest.mark.corpus

BODY_SOURCES = (
    "github-email_reply_parser",
    "zapier-email-reply-parser",
    "alfonsrv-mail-parser-reply",
    "crisp-email-reply-parser",
)
BLOCK = "#time 20m\n#wait\n\n"
EXPECTED_COMMANDS = (
    Command(CommandKind.TIME, arg="20m", minutes=20, line=1),
    Command(CommandKind.WAIT, line=2),
)


def _all_bodies() -> list[Any]:
    params = [p for s in BODY_SOURCES for p in body_params(s) if p.values[0] is not None]
    return params or body_params(BODY_SOURCES[0])


def _with_block(fixture: str) -> str:
    """Parse first, then strip the body (what the agent path should do)."""
    block = parse_commands(BLOCK + fixture, agents=(), categories=())
    assert block.commands == EXPECTED_COMMANDS
    assert block.errors == ()
    return strip_agent_reply(block.body)


def _stripped_first(fixture: str) -> str:
    """Strip the whole reply first, then parse: the command block must survive."""
    block = parse_commands(strip_agent_reply(BLOCK + fixture), agents=(), categories=())
    assert block.commands == EXPECTED_COMMANDS
    assert block.errors == ()
    return block.body


@pytest.mark.parametrize("path", _all_bodies())
def test_commands_do_not_disturb_quote_stripping(path: Path | None) -> None:
    fixture = need(path).read_text(encoding="utf-8", errors="replace")
    expected = new_text(fixture)
    assert _with_block(fixture) == expected
    assert _stripped_first(fixture) == expected


@pytest.mark.parametrize(
    ("rel", "first", "forbidden"),
    QUOTE_CASES,
    ids=[Path(c[0]).parent.parent.name + "/" + Path(c[0]).name for c in QUOTE_CASES],
)
def test_expected_results_hold_below_a_command_block(
    rel: str, first: str, forbidden: list[str]
) -> None:
    fixture = require_file(rel).read_text(encoding="utf-8", errors="replace")
    for result in (_with_block(fixture), _stripped_first(fixture)):
        assert result.startswith(first), result[:200]
        for fragment in forbidden:
            assert fragment not in result


def test_every_body_source_is_there() -> None:
    require_corpus()
    for source in BODY_SOURCES:
        assert body_files(source), f"no reply bodies in {source}"
