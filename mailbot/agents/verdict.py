"""Is this mail an agent's answer we may act on? Pure: facts in, a verdict out.

An agent's reply is acted on (relayed, its commands executed) only when **all** hold:

* it carries a valid signed token (plus-address, a notification's Message-ID in
  In-Reply-To/References, or the footer line) and the valid tokens name one ticket;
* it comes from an address of a known agent;
* it is not auto-generated (an agent's out-of-office answering a notification);
* when it threads by Message-ID, it threads onto the same ticket as its token;
* when ``agent_mail.require_auth`` is set, our own server's Authentication-Results show
  DKIM or SPF pass for it.

Mail that carries a token but fails a check is *internal*: stored on the ticket, never
relayed, nothing executed; a known agent is told why (a forged From then warns the real
agent), and the ticket's agents see what a non-agent wrote (a forwarded notification
answered). Broken token look-alikes in a non-agent's mail prove nothing internal: that mail
takes the customer path. Mail without any token follows the customer path; from an agent's
address it may open a ticket (an agent forwarding a customer's mail) but is never
auto-answered, and ``#commands`` in it are plain text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailbot.agents.authres import AuthVerdict
from mailbot.agents.tokens import TokenFinding


class MailRole(enum.StrEnum):
    CUSTOMER = "customer"  # the customer path (threading, answers, notifications)
    AGENT_DIRECT = "agent_direct"  # from an agent, no token: customer path, never answered
    AGENT_REPLY = "agent_reply"  # accepted: commands executed, text relayed
    AGENT_AUTO = "agent_auto"  # an agent's auto-reply to a notification: kept internal
    REJECTED = "rejected"  # a token or internal thread, but a check failed: kept internal


@dataclass(frozen=True, slots=True)
class AgentVerdict:
    role: MailRole
    agent: str | None
    ticket_id: int | None
    reason: str
    #: Send the agent an explanation (only ever to a configured agent address).
    tell_agent: bool = False

    @property
    def internal(self) -> bool:
        return self.role in {MailRole.AGENT_REPLY, MailRole.AGENT_AUTO, MailRole.REJECTED}


def agent_verdict(
    *,
    agent: str | None,
    finding: TokenFinding,
    auto_generated: bool,
    thread_ticket: int | None,
    auth: AuthVerdict | None,
) -> AgentVerdict:
    """Classify one inbound mail (see the module docstring).

    ``thread_ticket`` is the ticket its In-Reply-To/References point at (None when they point
    nowhere); ``auth`` is the Authentication-Results verdict when it is required, else None.
    """
    carries_token = finding.ticket_id is not None or bool(finding.invalid) or finding.conflict
    if not carries_token:
        if agent is not None:
            return AgentVerdict(MailRole.AGENT_DIRECT, agent, None, "from an agent, no token")
        return AgentVerdict(MailRole.CUSTOMER, None, None, "no agent token")
    ticket = finding.ticket_id if finding.ticket_id is not None else thread_ticket
    if agent is None:
        if finding.ticket_id is None or finding.conflict:
            # Only broken or contradictory token look-alikes, from a non-agent: nothing
            # internal is proven, so it is the customer's mail like any other.
            return AgentVerdict(
                MailRole.CUSTOMER, None, None, "token look-alikes from a non-agent ignored"
            )
        if auto_generated:
            return AgentVerdict(
                MailRole.AGENT_AUTO,
                None,
                ticket,
                "an automatic reply to an agent notification from a non-agent",
            )
        return AgentVerdict(
            MailRole.REJECTED,
            None,
            ticket,
            "reply to an agent notification from an address that is not an agent's",
        )
    if auto_generated:
        return AgentVerdict(
            MailRole.AGENT_AUTO, agent, ticket, "an agent's automatic reply (out of office?)"
        )
    if finding.conflict:
        return AgentVerdict(
            MailRole.REJECTED,
            agent,
            thread_ticket,
            "the mail carries tokens of different tickets",
            tell_agent=True,
        )
    if finding.ticket_id is None:
        return AgentVerdict(
            MailRole.REJECTED,
            agent,
            thread_ticket,
            "the reply token is not valid (altered, or signed with an older key)",
            tell_agent=True,
        )
    if thread_ticket is not None and thread_ticket != finding.ticket_id:
        return AgentVerdict(
            MailRole.REJECTED,
            agent,
            finding.ticket_id,
            f"the token is for ticket {finding.ticket_id} but the mail answers "
            f"a message of ticket {thread_ticket}",
            tell_agent=True,
        )
    if auth is not None and not auth.ok:
        return AgentVerdict(
            MailRole.REJECTED,
            agent,
            finding.ticket_id,
            f"sender authentication is required and failed: {auth.reason}",
            tell_agent=True,
        )
    carriers = ", ".join(finding.carriers)
    return AgentVerdict(
        MailRole.AGENT_REPLY, agent, finding.ticket_id, f"agent {agent}, token in {carriers}"
    )
