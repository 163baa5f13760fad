"""The action table of rules.yaml: what a new ticket's customer gets, by plan and category.

    actions:
      - name: core-howto-to-wiki          # named in every decision it decides
        when: {plans: [core], howto: true}
        do: wiki                          # no article matches: the next action is tried
      - name: hosting-is-paid
        when: {plans: [free], categories: [hosting]}
        do: out_of_scope
        paid_option: {it: "Assistenza a pagamento: 60 EUR l'ora, https://..."}
      - name: training-after-three
        when: {plans: [free], howto: true}
        do: training_offer
        after: 3                          # the third how-to question ...
        within: 30d                       # ... of this customer within 30 days
      - name: ultimate-outage
        when: {plans: [ultimate], severities: [L1]}
        do: escalate                      # acknowledged, and these are told at once
        notify: [leads, account_manager]
      - name: newsletter-silence
        when: {categories: [spam-like]}
        do: silence

The first action whose ``when`` matches and whose own condition holds decides (``wiki``
needs a matching article, ``training_offer`` the count). An empty ``when`` matches every
new ticket. No action decides: the plan's ``howto`` setting and the acknowledgement, as
without a table. Follow-ups, auto-generated mail, mail without a sender and agents' mail
never reach the table.

``when`` conditions (all given must hold; a list matches any of its entries):
``plans``, ``categories`` (the classified category), ``severities``, ``urgent``,
``howto`` (the message reads as a how-to question, see :func:`mailbot.rules.wiki.looks_like_howto`),
``outside_hours`` (outside the plan's calendar).

Pure: :func:`matches` and the schema; the counts for ``training_offer`` are read by intake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ActionKind = Literal["acknowledge", "wiki", "out_of_scope", "training_offer", "escalate", "silence"]
ACTION_KINDS: tuple[str, ...] = (
    "acknowledge",
    "wiki",
    "out_of_scope",
    "training_offer",
    "escalate",
    "silence",
)
#: Who an escalation tells, besides agent ids.
ESCALATION_ROLES = ("leads", "account_manager", "team", "assignee")

ActionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
SeverityName = Literal["L1", "L2", "L3", "L4"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionWhen(_Model):
    """Conditions on a new ticket; every one given must hold."""

    plans: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    severities: tuple[SeverityName, ...] = ()
    urgent: bool | None = None
    howto: bool | None = None
    outside_hours: bool | None = None


class Action(_Model):
    """One row of the action table."""

    name: ActionName
    when: ActionWhen = ActionWhen()
    do: ActionKind
    #: The template base name; default: ``templates`` of rules.yaml for the kind (ack for
    #: acknowledge and escalate, wiki, out_of_scope, training).
    template: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = None
    #: out_of_scope / training_offer: the paid option, per language (``paid_option`` in
    #: the template; the default language's text when the customer's is missing).
    paid_option: dict[str, str] = Field(default_factory=dict)
    #: training_offer: the how-to question that gets the offer (the 3rd: 3).
    after: int | None = Field(default=None, ge=1, le=1000)
    #: training_offer: the window the questions are counted in (``30d``, ``12h``).
    within: str = "30d"
    #: escalate: agent ids, or leads / account_manager / team / assignee.
    notify: tuple[str, ...] = ()

    @field_validator("within")
    @classmethod
    def _window(cls, value: str) -> str:
        from mailbot.rules.schema import window_seconds  # here: an import cycle

        window_seconds(value)
        return value

    @model_validator(mode="after")
    def _fits_the_kind(self) -> Self:
        if self.do == "training_offer" and self.after is None:
            raise ValueError("a training_offer needs `after` (the how-to question that gets it)")
        if self.do != "training_offer" and self.after is not None:
            raise ValueError(f"`after` is only for training_offer, not {self.do}")
        if self.notify and self.do != "escalate":
            raise ValueError(f"`notify` is only for escalate, not {self.do}")
        if self.do == "escalate" and not self.notify:
            raise ValueError("an escalate action needs `notify` (agent ids or leads, ...)")
        if self.paid_option and self.do not in ("out_of_scope", "training_offer"):
            raise ValueError(
                f"`paid_option` is only for out_of_scope and training_offer, not {self.do}"
            )
        if self.do == "silence" and self.template is not None:
            raise ValueError("a silence action sends nothing: it takes no template")
        return self

    @property
    def window(self) -> int:
        """``within`` in seconds."""
        from mailbot.rules.schema import window_seconds  # here: an import cycle

        return window_seconds(self.within)


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What the action table looks at, all known when a new ticket is decided."""

    plan: str
    category: str
    severity: str
    urgent: bool
    howto: bool
    outside_hours: bool


def matches(when: ActionWhen, facts: TicketFacts) -> bool:
    """Whether every condition ``when`` gives holds for ``facts``."""
    return (
        (not when.plans or facts.plan in when.plans)
        and (not when.categories or facts.category in when.categories)
        and (not when.severities or facts.severity in when.severities)
        and (when.urgent is None or facts.urgent == when.urgent)
        and (when.howto is None or facts.howto == when.howto)
        and (when.outside_hours is None or facts.outside_hours == when.outside_hours)
    )


def paid_option_text(action: Action, language: str, default_language: str) -> str:
    """The paid option in ``language``, else the default language's, else any, else ""."""
    texts = action.paid_option
    return texts.get(language) or texts.get(default_language) or next(iter(texts.values()), "")
