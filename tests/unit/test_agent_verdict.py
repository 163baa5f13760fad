"""Is a mail an agent's answer we may act on? Every branch of ``agent_verdict``."""

from __future__ import annotations

import pytest

from mailbot.agents.authres import AuthVerdict
from mailbot.agents.tokens import CARRIER_ADDRESS, CARRIER_BODY, TokenFinding
from mailbot.agents.verdict import AgentVerdict, MailRole, agent_verdict

NO_TOKEN = TokenFinding(ticket_id=None)
VALID_7 = TokenFinding(ticket_id=7, carriers=(CARRIER_ADDRESS, CARRIER_BODY), tickets=(7,))
ONLY_INVALID = TokenFinding(ticket_id=None, invalid=("7-aaaaaaaaaaaaaaaa",))
CONFLICT = TokenFinding(
    ticket_id=None, carriers=(CARRIER_ADDRESS, CARRIER_BODY), conflict=True, tickets=(7, 8)
)
AUTH_OK = AuthVerdict(True, "dkim=pass header.d=example.com by mx.example.com")
AUTH_FAILED = AuthVerdict(False, "spf=fail smtp.mailfrom=anna@example.com by mx.example.com")


def _verdict(
    *,
    agent: str | None = "anna",
    finding: TokenFinding = VALID_7,
    auto_generated: bool = False,
    thread_ticket: int | None = None,
    auth: AuthVerdict | None = None,
) -> AgentVerdict:
    return agent_verdict(
        agent=agent,
        finding=finding,
        auto_generated=auto_generated,
        thread_ticket=thread_ticket,
        auth=auth,
    )


# -- no token: the customer path -----------------------------------------------------------


def test_no_token_from_a_stranger_is_a_customer_mail() -> None:
    verdict = _verdict(agent=None, finding=NO_TOKEN, thread_ticket=3)
    assert verdict.role is MailRole.CUSTOMER
    assert verdict.agent is None
    assert verdict.ticket_id is None  # threading is the customer path's business
    assert not verdict.tell_agent
    assert not verdict.internal


def test_no_token_from_an_agent_is_agent_direct_on_the_customer_path() -> None:
    verdict = _verdict(agent="anna", finding=NO_TOKEN)
    assert verdict.role is MailRole.AGENT_DIRECT
    assert verdict.agent == "anna"
    assert verdict.ticket_id is None
    assert not verdict.tell_agent
    assert not verdict.internal


@pytest.mark.parametrize("agent", [None, "anna"])
def test_no_token_stays_on_the_customer_path_even_when_auto_generated(agent: str | None) -> None:
    verdict = _verdict(agent=agent, finding=NO_TOKEN, auto_generated=True, auth=AUTH_FAILED)
    assert not verdict.internal
    assert verdict.role in {MailRole.CUSTOMER, MailRole.AGENT_DIRECT}


# -- a token, but a check fails ------------------------------------------------------------


def test_valid_token_from_a_non_agent_is_rejected_and_nobody_is_told() -> None:
    verdict = _verdict(agent=None, finding=VALID_7)
    assert verdict.role is MailRole.REJECTED
    assert verdict.agent is None
    assert verdict.ticket_id == 7  # stored on the ticket its token names
    assert not verdict.tell_agent  # only ever to a configured agent address
    assert verdict.internal


def test_broken_token_look_alikes_from_a_non_agent_take_the_customer_path() -> None:
    # Nothing internal is proven: the customer's mail must not vanish into internal storage.
    verdict = _verdict(agent=None, finding=ONLY_INVALID, thread_ticket=4)
    assert verdict.role is MailRole.CUSTOMER
    assert not verdict.tell_agent
    assert not verdict.internal


def test_an_automatic_reply_from_a_non_agent_to_a_notification_is_kept_quiet() -> None:
    verdict = _verdict(agent=None, finding=VALID_7, auto_generated=True)
    assert verdict.role is MailRole.AGENT_AUTO
    assert verdict.ticket_id == 7
    assert not verdict.tell_agent
    assert verdict.internal


def test_an_agents_auto_reply_is_kept_internal_without_an_answer() -> None:
    verdict = _verdict(agent="anna", finding=VALID_7, auto_generated=True)
    assert verdict.role is MailRole.AGENT_AUTO
    assert verdict.agent == "anna"
    assert verdict.ticket_id == 7
    assert not verdict.tell_agent  # answering an out-of-office would start a mail loop
    assert verdict.internal


def test_an_agents_auto_reply_with_a_bad_token_is_still_an_auto_reply() -> None:
    verdict = _verdict(agent="anna", finding=ONLY_INVALID, auto_generated=True, thread_ticket=4)
    assert verdict.role is MailRole.AGENT_AUTO
    assert verdict.ticket_id == 4
    assert not verdict.tell_agent


def test_tokens_of_different_tickets_are_rejected_and_the_agent_is_told() -> None:
    verdict = _verdict(agent="anna", finding=CONFLICT, thread_ticket=8)
    assert verdict.role is MailRole.REJECTED
    assert verdict.agent == "anna"
    assert verdict.ticket_id == 8  # no single token ticket: kept where the mail threads
    assert verdict.tell_agent
    assert verdict.internal


def test_conflict_without_a_thread_has_no_ticket() -> None:
    verdict = _verdict(agent="anna", finding=CONFLICT, thread_ticket=None)
    assert verdict.role is MailRole.REJECTED
    assert verdict.ticket_id is None
    assert verdict.tell_agent


def test_only_invalid_tokens_are_rejected_and_the_agent_is_told() -> None:
    verdict = _verdict(agent="anna", finding=ONLY_INVALID, thread_ticket=4)
    assert verdict.role is MailRole.REJECTED
    assert verdict.agent == "anna"
    assert verdict.ticket_id == 4
    assert verdict.tell_agent
    assert verdict.internal
    assert "valid" in verdict.reason


def test_token_for_one_ticket_threading_on_another_is_rejected() -> None:
    verdict = _verdict(agent="anna", finding=VALID_7, thread_ticket=9)
    assert verdict.role is MailRole.REJECTED
    assert verdict.ticket_id == 7
    assert verdict.tell_agent
    assert verdict.internal
    # The explanation names both tickets, so the agent can see what went wrong.
    assert "7" in verdict.reason
    assert "9" in verdict.reason


def test_failed_sender_authentication_is_rejected_with_the_reason() -> None:
    verdict = _verdict(agent="anna", finding=VALID_7, thread_ticket=7, auth=AUTH_FAILED)
    assert verdict.role is MailRole.REJECTED
    assert verdict.agent == "anna"
    assert verdict.ticket_id == 7
    assert verdict.tell_agent
    assert verdict.internal
    assert AUTH_FAILED.reason in verdict.reason


# -- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("thread_ticket", [None, 7])
def test_valid_token_from_an_agent_is_an_agent_reply(thread_ticket: int | None) -> None:
    verdict = _verdict(agent="anna", finding=VALID_7, thread_ticket=thread_ticket)
    assert verdict.role is MailRole.AGENT_REPLY
    assert verdict.agent == "anna"
    assert verdict.ticket_id == 7
    assert not verdict.tell_agent
    assert verdict.internal
    for carrier in VALID_7.carriers:
        assert carrier in verdict.reason


def test_passing_authentication_is_accepted() -> None:
    verdict = _verdict(agent="anna", finding=VALID_7, thread_ticket=7, auth=AUTH_OK)
    assert verdict.role is MailRole.AGENT_REPLY
    assert verdict.ticket_id == 7
    assert not verdict.tell_agent


def test_a_valid_token_beside_a_damaged_copy_is_accepted() -> None:
    # The valid tokens name one ticket; a mangled extra candidate does not spoil that.
    finding = TokenFinding(
        ticket_id=7, carriers=(CARRIER_ADDRESS,), invalid=("7-zzz",), tickets=(7,)
    )
    verdict = _verdict(agent="anna", finding=finding)
    assert verdict.role is MailRole.AGENT_REPLY
    assert verdict.ticket_id == 7


# -- internal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "internal"),
    [
        (MailRole.CUSTOMER, False),
        (MailRole.AGENT_DIRECT, False),
        (MailRole.AGENT_REPLY, True),
        (MailRole.AGENT_AUTO, True),
        (MailRole.REJECTED, True),
    ],
)
def test_internal_is_every_token_path_and_never_the_customer_path(
    role: MailRole, internal: bool
) -> None:
    assert AgentVerdict(role, "anna", 7, "why").internal is internal
