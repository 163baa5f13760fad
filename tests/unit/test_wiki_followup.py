"""Wiki follow-up, the pure parts: who counts as coming back, what the sweep does by status,
the rules.yaml key and its errors, and the report's rows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailbot.domain import TicketAction, TicketStatus
from mailbot.errors import RulesError
from mailbot.rules.loader import parse_rules
from mailbot.tickets.models import WikiRedirect
from mailbot.tickets.reports import WikiRow, wiki_rows
from mailbot.tickets.wiki_followup import Settlement, comes_back, resolve_after, settlement
from tests.e2e.conftest import RULES

PENDING, CAME_BACK, UNANSWERED = (
    WikiRedirect.PENDING,
    WikiRedirect.CAME_BACK,
    WikiRedirect.RESOLVED_UNANSWERED,
)


@pytest.mark.parametrize(
    ("state", "action", "auto", "expected"),
    [
        (PENDING, TicketAction.APPEND, False, True),  # the customer answered the redirect
        (PENDING, TicketAction.REOPEN, False, True),  # an agent had closed it meanwhile
        (PENDING, TicketAction.APPEND, True, False),  # an out-of-office or a bounce
        (PENDING, TicketAction.REOPEN, True, False),
        (UNANSWERED, TicketAction.REOPEN, False, True),  # late, within reopen_within_days
        (UNANSWERED, TicketAction.APPEND, False, False),
        (UNANSWERED, TicketAction.REOPEN, True, False),
        (CAME_BACK, TicketAction.APPEND, False, False),  # recorded once
        (None, TicketAction.APPEND, False, False),  # never redirected
        (PENDING, TicketAction.NEW, False, False),
        (PENDING, TicketAction.NONE, False, False),
    ],
)
def test_who_comes_back(
    state: WikiRedirect | None, action: TicketAction, auto: bool, expected: bool
) -> None:
    assert comes_back(state, action, auto) is expected


def test_the_sweep_resolves_waiting_tickets_and_only_records_ones_an_agent_settled() -> None:
    assert settlement(TicketStatus.WAITING) is Settlement.RESOLVE
    assert settlement(TicketStatus.RESOLVED) is Settlement.RECORD
    assert settlement(TicketStatus.CLOSED) is Settlement.RECORD
    # An agent re-opened it (#close, then #reopen): the agent's ticket, never auto-resolved.
    assert settlement(TicketStatus.OPEN) is None
    assert settlement(TicketStatus.NEW) is None


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("1h30", timedelta(minutes=90)),
        ("366d", timedelta(days=366)),
    ],
)
def test_resolve_after_is_calendar_time(text: str, after: timedelta) -> None:
    rules = parse_rules(RULES + f"wiki_followup:\n  resolve_after: {text}\n", "rules.yaml")
    assert resolve_after(rules) == after


def test_without_the_key_redirects_wait_forever() -> None:
    assert resolve_after(parse_rules(RULES, "rules.yaml")) is None
    assert resolve_after(parse_rules(RULES + "wiki_followup:\n", "rules.yaml")) is None


def _problems(extra: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(RULES + extra, "rules.yaml")
    return info.value.problems


def test_bad_durations_and_keys_name_line_field_and_a_hint() -> None:
    line = len(RULES.splitlines()) + 1
    assert _problems("wiki_followup: {resolve_after: 0d}\n") == [
        f"rules.yaml:{line}:32: wiki_followup.resolve_after: '0d' is not a positive duration:"
        " write e.g. 7d, 36h or 90m"
    ]
    assert _problems("wiki_followup: {resolve_after: soon}\n")[0].endswith(
        "'soon' is not a positive duration: write e.g. 7d, 36h or 90m"
    )
    assert _problems("wiki_followup: {resolve_after: 400d}\n")[0].endswith(
        "wiki_followup.resolve_after: '400d' is longer than a year (366d)"
    )
    assert _problems("wiki_followup: {}\n") == [
        f"rules.yaml:{line}:16: wiki_followup.resolve_after: required key is missing"
    ]
    typo = _problems("wiki_followup: {resolve_afer: 7d}\n")
    assert any("did you mean 'resolve_after'?" in p for p in typo), typo


def test_report_rows_per_plan_by_priority_with_every_outcome() -> None:
    rules = parse_rules(RULES, "rules.yaml")  # ultimate 20, pro 10, core 0
    rows = wiki_rows(
        rules,
        [
            ("core", PENDING),
            ("core", UNANSWERED),
            ("ultimate", CAME_BACK),
            ("core", CAME_BACK),
            ("core", UNANSWERED),
            ("gone", PENDING),  # a plan no longer in the rules: its id as its name
        ],
    )
    assert rows == [
        WikiRow("ultimate", "Ultimate", 1, 1, 0, 0),
        WikiRow("core", "Core", 4, 1, 2, 1),
        WikiRow("gone", "gone", 1, 0, 0, 1),
    ]
    assert rows[1].as_json() == {
        "plan": "core",
        "name": "Core",
        "redirected": 4,
        "came_back": 1,
        "resolved_unanswered": 2,
        "pending": 1,
    }
    assert wiki_rows(rules, []) == []
