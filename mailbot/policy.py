"""A loaded, validated ruleset with everything derived from it, swapped as one value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailbot.domain import Address
from mailbot.outbound.compose import loop_marker
from mailbot.outbound.render import TemplateRenderer
from mailbot.rules.loader import load_rules
from mailbot.rules.schema import Rules

TEAM_TEMPLATES = ("reminder", "escalation")
# Mail with agents (mailbot.outbound.agent_mail): the relay is in the customer's language.
AGENT_TEMPLATES = ("notify", "agent_error", "timebank_low")
CUSTOMER_TEMPLATES = ("relay",)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: Rules
    renderer: TemplateRenderer
    source: Path

    @property
    def support(self) -> Address:
        return Address(self.rules.identity.address, self.rules.identity.name)

    @property
    def marker(self) -> str:
        return loop_marker(self.rules.identity.address)

    @property
    def own_addresses(self) -> frozenset[str]:
        return self.rules.identity.addresses

    @property
    def domain(self) -> str:
        return self.rules.identity.address.rpartition("@")[2].lower()


def load_policy(rules_path: Path, templates_dir: Path) -> Policy:
    """Load rules.yaml and check that every template it can use exists in every language."""
    rules = load_rules(rules_path)
    renderer = TemplateRenderer(templates_dir, default_language=rules.default_language)
    renderer.validate(
        names=(*rules.templates.names(), *CUSTOMER_TEMPLATES), languages=rules.languages
    )
    # Notices to the team are written in the default language (or an agent's own).
    team_languages = dict.fromkeys(
        [rules.default_language, *(a.language for a in rules.agents.values() if a.language)]
    )
    renderer.validate(names=(*TEAM_TEMPLATES, *AGENT_TEMPLATES), languages=list(team_languages))
    return Policy(rules=rules, renderer=renderer, source=rules_path)
