"""Every real-world message of ../shared/corpus through the whole intake, into SQLite.

Per corpus source: each file ends as a stored message (on a ticket or not), a quarantined one
(raw bytes kept) or a counted duplicate of one already stored — never an exception, and never
a quarantine caused by a bug of ours ("intake failed", "parser crashed").
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.agents.tokens import TokenSigner
from mailbot.clock import FixedClock
from mailbot.domain import Disposition
from mailbot.ingest.pipeline import Intake
from mailbot.policy import Policy, load_policy
from mailbot.tickets.models import Message, MessageState, OutboxRow, Ticket
from mailbot.tickets.service import Origin, sha256_hex
from tests.corpus import CORPUS, message_files, require_corpus, sources

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "rules.yaml", REPO / "templates")


@pytest.mark.corpus
@pytest.mark.parametrize("source", sources() or [None])
async def test_every_corpus_message_is_stored_or_quarantined(
    source: str | None, policy: Policy, database: str
) -> None:
    require_corpus()
    assert source is not None
    files = message_files(source)
    assert files, f"no messages under {CORPUS / source}"
    intake = Intake(
        policy,
        FixedClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
        signer=TokenSigner(b"corpus-intake-test-key"),
    )
    outcomes: Counter[Disposition] = Counter()
    for path in files:
        raw = path.read_bytes()
        outcome = await intake.accept(raw, Origin(label=f"corpus:{path.relative_to(CORPUS)}"))
        outcomes[outcome.disposition] += 1
        if outcome.disposition is Disposition.DUPLICATE:
            assert outcome.reason, path
        else:
            row = await Message.get(content_hash=sha256_hex(raw))
            assert row.raw_bytes == raw, path
    assert sum(outcomes.values()) == len(files)
    bugs = await Message.filter(state=MessageState.QUARANTINED, error__startswith="intake failed")
    crashes = await Message.filter(
        state=MessageState.QUARANTINED, error__startswith="parser crashed"
    )
    assert [m.source for m in bugs + crashes] == []
    stored = await Message.filter(direction="in").count()
    assert stored == outcomes[Disposition.STORED] + outcomes[Disposition.QUARANTINED]
    # Every answer queued goes to a ticket that exists, and never to ourselves.
    for row in await OutboxRow.all():
        assert row.ticket_id is not None and await Ticket.exists(id=row.ticket_id)
        assert row.rcpt_to.lower() not in policy.own_addresses
    print(f"{source}: {len(files)} files -> {dict(outcomes)}")
