"""The shape of ``rules.yaml``, version 1: the operator's support policy.

Every model is frozen and forbids unknown keys, so a typo is an error with a file, line and
field path (see ``mailbot.rules.loader``) instead of a silently ignored setting. The shape
is a first cut of a policy language that will grow (calendars, severities, agents, ...):
new sections are new optional keys, so a version-1 file stays valid.

Cross-field checks (a customer's plan exists, languages are known and declared, no rule is
listed twice) live in :func:`reference_problems`. It works on the raw, parsed YAML so that
the loader can report them together with shape errors, and :class:`Rules` runs it again on
itself so that rules built in Python are checked the same way.
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Iterable, Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from mailbot.agents.schema import (
    Account,
    Agent,
    AgentMail,
    Assignment,
    Team,
    people_reference_problems,
)
from mailbot.billing.schema import BillingSpec, TimeBankSpec
from mailbot.domain import ReplyKind
from mailbot.ingest.correlate import format_token
from mailbot.rules.actions import ESCALATION_ROLES, Action
from mailbot.rules.classify_schema import Classification, classification_problems
from mailbot.rules.language import SUPPORTED
from mailbot.sla.calendar import AROUND_THE_CLOCK, AROUND_THE_CLOCK_NAME, BusinessCalendar
from mailbot.sla.schema import (
    OFFICE,
    CalendarName,
    CalendarSpec,
    PlanSla,
    calendar_reference_problems,
)

#: Language codes rules.yaml may use: those the detector, promises and dates know.
KNOWN_LANGUAGES: tuple[str, ...] = SUPPORTED

#: Error type of the cross-field problems, so the loader can tell them apart.
REFERENCE_ERROR = "rules_reference"

Loc = tuple[str | int, ...]

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_PREFIX = re.compile(r"^(?:[A-Z][A-Z0-9]{0,15})?$")
_OFFICE_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def did_you_mean(word: object, options: Iterable[object]) -> str:
    """`` — did you mean 'x'?`` for the closest option, or ``""`` when none is close."""
    names = [str(option) for option in options]
    text = str(word)
    cutoff = 0.6
    if len(text) <= 3:
        # Short codes ('sw' for 'sv'): a looser match, but only with the same first letter.
        names = [name for name in names if name[:1] == text[:1]]
        cutoff = 0.5
    close = difflib.get_close_matches(text, names, n=1, cutoff=cutoff)
    return f" — did you mean {close[0]!r}?" if close else ""


def _check_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise ValueError(f"{value!r} is not a valid domain name")
    return domain


def _check_address(value: str) -> str:
    """A plain ``local@domain`` address; the local part keeps its case, the domain is lowered."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not _LOCAL.match(local) or local.startswith(".") or ".." in local:
        raise ValueError(f"{value!r} is not a valid e-mail address")
    return f"{local}@{_check_domain(domain)}"


def check_address(value: str) -> str:
    """A plain ``local@domain`` address, normalised; raises ``ValueError``."""
    return _check_address(value)


def check_timezone(value: str) -> str:
    """An IANA timezone name; raises ``ValueError`` with a "did you mean" hint."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(value, sorted(available_timezones()))
        raise ValueError(f"unknown timezone {value!r}{hint}") from None
    return value


def _check_language(value: str) -> str:
    if value not in KNOWN_LANGUAGES:
        raise ValueError(
            f"unknown language {value!r}{did_you_mean(value, KNOWN_LANGUAGES)}"
            f" (known: {', '.join(KNOWN_LANGUAGES)})"
        )
    return value


EmailAddress = Annotated[str, Field(min_length=3, max_length=254)]
Language = Annotated[str, Field(min_length=2, max_length=8)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Identity(_Model):
    """Who we are: the support address, its display name and everything else that is ours."""

    address: EmailAddress
    name: str = Field(min_length=1)
    domains: tuple[str, ...] = ()
    ticket_prefix: str = ""
    extra_addresses: tuple[EmailAddress, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_domains(cls, data: Any) -> Any:
        if isinstance(data, dict) and "domains" not in data:
            address = data.get("address")
            if isinstance(address, str) and "@" in address:
                return {**data, "domains": [address.rpartition("@")[2]]}
        return data

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("extra_addresses")
    @classmethod
    def _extra(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_address(item) for item in value)

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one domain is needed")
        return tuple(dict.fromkeys(_check_domain(item) for item in value))

    @field_validator("ticket_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError(
                "ticket_prefix must be empty or 1-16 upper-case letters and digits "
                f"starting with a letter, e.g. 'ASHOP' (got {value!r})"
            )
        return value

    @property
    def addresses(self) -> frozenset[str]:
        """Every address of ours, lower-cased: never auto-answer these."""
        return frozenset(a.lower() for a in (self.address, *self.extra_addresses))

    def token(self, number: int) -> str:
        """The ticket token put in subjects: ``[#1042]`` or ``[ASHOP#1042]``."""
        return format_token(self.ticket_prefix, number)


class OfficeHours(_Model):
    """Opening and closing time of a working day, local to the rules' timezone.

    Written in rules.yaml as one string, ``"08:00-17:00"`` (quote it: YAML would otherwise
    read ``17:00`` as a base-60 number in some loaders).
    """

    opens: time
    closes: time

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        match = _OFFICE_HOURS.match(data)
        if not match:
            raise ValueError(f"office hours must look like '08:00-17:00' (got {data!r})")
        oh, om, ch, cm = (int(group) for group in match.groups())
        if oh > 23 or ch > 23 or om > 59 or cm > 59:
            raise ValueError(f"{data!r} is not a valid time range")
        return {"opens": time(oh, om), "closes": time(ch, cm)}

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.opens >= self.closes:
            raise ValueError("office hours must open before they close")
        return self

    def __str__(self) -> str:
        return f"{self.opens:%H:%M}-{self.closes:%H:%M}"


ResponseKind = Literal["hours", "working_hours", "working_days"]


class FirstResponse(_Model):
    """Exactly one of: ``hours`` (around the clock), ``working_hours`` or ``working_days``."""

    hours: int | None = Field(default=None, gt=0, le=24 * 365)
    working_hours: int | None = Field(default=None, gt=0, le=24 * 365)
    working_days: int | None = Field(default=None, gt=0, le=365)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in ("hours", "working_hours", "working_days") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of hours, working_hours or working_days"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> ResponseKind:
        if self.hours is not None:
            return "hours"
        if self.working_hours is not None:
            return "working_hours"
        return "working_days"

    @property
    def amount(self) -> int:
        value = self.hours or self.working_hours or self.working_days
        assert value is not None  # guaranteed by _exactly_one
        return value


Channel = Literal["email", "phone", "remote", "chat", "onsite"]


class Plan(_Model):
    """What a customer bought: a response target, a priority and how how-tos are answered.

    ``first_response`` is the promise customers read and the first-response clock unless
    ``sla.first_response`` sets another; ``sla`` adds clocks, overrides and reminders
    (see ``mailbot.sla.schema``).
    """

    name: str = Field(min_length=1)
    priority: int = 0
    first_response: FirstResponse
    howto: Literal["wiki", "acknowledge"] = "acknowledge"
    promise: dict[Language, str] = Field(default_factory=dict)
    sla: PlanSla | None = None
    #: The time bank of customers on this plan who have no account with its own.
    time_bank: TimeBankSpec | None = None
    #: How customers on this plan may reach support, for the templates (``channels``):
    #: mailbot itself answers e-mail; the others are what the plan promises besides.
    channels: tuple[Channel, ...] = ("email",)


class Customer(_Model):
    """A sender mapped to a plan: ``a@b.se`` (address), ``@b.se`` (domain), ``*.b.se``."""

    match: str
    plan: str
    name: str | None = None
    language: Language | None = None
    #: The organisation this entry belongs to (``accounts``): its time bank and manager.
    account: str | None = None

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        text = value.strip()
        if text.startswith("*."):
            return "*." + _check_domain(text[2:])
        if text.startswith("@"):
            return "@" + _check_domain(text[1:])
        if "@" in text:
            return _check_address(text).lower()
        raise ValueError(
            f"{value!r} is neither an address ('a@b.se'), a domain ('@b.se') "
            "nor subdomains ('*.b.se')"
        )

    @property
    def kind(self) -> Literal["address", "domain", "subdomains"]:
        if self.match.startswith("*."):
            return "subdomains"
        if self.match.startswith("@"):
            return "domain"
        return "address"


class WikiArticle(_Model):
    """A documentation page the bot may point a how-to question to."""

    title: str = Field(min_length=1)
    url: str
    language: Language
    keywords: tuple[Annotated[str, Field(min_length=2)], ...] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


TemplateName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class Templates(_Model):
    """Which template each kind of automatic answer uses (one key per ``ReplyKind``)."""

    ack: TemplateName = "ack"
    wiki: TemplateName = "wiki"
    #: The defaults of the action table's out_of_scope and training_offer answers.
    out_of_scope: TemplateName = "out_of_scope"
    training: TemplateName = "training"
    #: A templates directory (relative to rules.yaml, or absolute) that supplies every
    #: template file the configured directory lacks: customise a few, inherit the rest.
    extends: str | None = Field(default=None, min_length=1)

    def __getitem__(self, kind: ReplyKind | str) -> str:
        name: str = getattr(self, ReplyKind(kind).value)
        return name

    def names(self) -> tuple[str, ...]:
        """Every template base name configured here (see ``Rules.reply_template_names``
        for the ones in use)."""
        return tuple(dict.fromkeys(self[kind] for kind in ReplyKind))

    def fallback_dirs(self, rules_path: Path) -> tuple[Path, ...]:
        """The ``extends`` directory, resolved against the rules file's directory."""
        if self.extends is None:
            return ()
        return ((rules_path.parent / self.extends).resolve(),)


def window_seconds(text: str) -> int:
    """``30m``, ``1h``, ``1h30``, ``2d`` -> seconds; ``ValueError`` otherwise."""
    from mailbot.billing.durations import parse_duration  # here: an import cycle

    value = text.strip()
    if value.endswith("d") and value[:-1].strip().isdigit() and int(value[:-1]) > 0:
        return int(value[:-1]) * 86400
    return parse_duration(value) * 60


class Window(_Model):
    """At most ``count`` mails per ``per`` (a duration: 30m, 1h, 1d)."""

    count: int = Field(ge=0, le=1_000_000)
    per: str = "1h"

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        window_seconds(value)
        return value

    @property
    def seconds(self) -> int:
        return window_seconds(self.per)


class AutoReplyLimits(_Model):
    """Storm brakes on automatic answers (acknowledgements, wiki redirects, explanations):
    per recipient address and over all recipients, in a sliding window. An answer over a
    limit is not queued; the message is stored and its ticket opened as usual."""

    per_address: Window = Window(count=3, per="1h")
    total: Window = Window(count=500, per="1h")


#: The longest ``wiki_followup.resolve_after`` (a year): beyond it, leave the key out.
_FOLLOWUP_MAX_SECONDS = 366 * 86400


class WikiFollowup(_Model):
    """What happens after a wiki redirect (mailbot.tickets.wiki_followup): the ticket waits on
    the customer, its SLA clocks paused; a reply makes it a normal ticket for an agent, and
    with no reply within ``resolve_after`` (``7d``, ``36h``: calendar time from the redirect,
    not working days) it is resolved by itself. Without this key it simply stays waiting."""

    resolve_after: str = Field(
        description="How long a redirected ticket waits for the customer's reply before it is"
        " resolved by itself, from the redirect, in calendar time (not working days): 7d, 36h,"
        " 90m. At most 366d."
    )

    @field_validator("resolve_after")
    @classmethod
    def _resolve_after(cls, value: str) -> str:
        try:
            seconds = window_seconds(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a positive duration: write e.g. 7d, 36h or 90m"
            ) from None
        if seconds > _FOLLOWUP_MAX_SECONDS:
            raise ValueError(f"{value!r} is longer than a year (366d)")
        return value

    @property
    def seconds(self) -> int:
        return window_seconds(self.resolve_after)


class Rules(_Model):
    """The whole policy file."""

    version: Literal[1]
    identity: Identity
    timezone: str
    default_language: Language = "en"
    languages: tuple[Language, ...] = Field(default=("en", "sv", "it"), min_length=1)
    office_hours: OfficeHours = OfficeHours(opens=time(8), closes=time(17))
    plans: dict[str, Plan] = Field(min_length=1)
    default_plan: str
    customers: tuple[Customer, ...] = ()
    #: Files of more customer entries (mailbot.rules.customer_files), relative to rules.yaml:
    #: the loader appends their entries to ``customers``, after the inline ones.
    customers_from: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=(),
        description="Files with more customer entries, relative to rules.yaml: CSV (a header"
        " row naming the columns match, plan, name, language, account; comma, semicolon or"
        " tab separated; UTF-8) or YAML (a list of entries as under customers). Their"
        " entries come after the inline ones, file by file.",
    )
    wiki: tuple[WikiArticle, ...] = ()
    wiki_min_score: float = Field(default=0.5, gt=0.0, le=1.0)
    templates: Templates = Templates()
    classification: Classification = Classification()
    calendars: dict[CalendarName, CalendarSpec] = Field(default_factory=dict)
    agents: dict[str, Agent] = Field(default_factory=dict)
    teams: dict[str, Team] = Field(default_factory=dict)
    assignment: Assignment = Assignment()
    accounts: dict[str, Account] = Field(default_factory=dict)
    billing: BillingSpec = BillingSpec()
    agent_mail: AgentMail = AgentMail()
    auto_reply_limits: AutoReplyLimits = AutoReplyLimits()
    #: After a wiki redirect: resolve it by itself when the customer does not come back.
    wiki_followup: WikiFollowup | None = None
    #: The action table (mailbot.rules.actions): ordered, the first that decides wins.
    actions: tuple[Action, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems = reference_problems(self.model_dump(mode="python"))
        if problems:
            raise ValidationError.from_exception_data(
                "Rules",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(REFERENCE_ERROR, "{message}", {"message": msg}),
                        loc=loc,
                        input=None,
                    )
                    for loc, msg in problems
                ],
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def plan(self, plan_id: str) -> Plan:
        return self.plans[plan_id]

    def template(self, kind: ReplyKind) -> str:
        return self.templates[kind]

    def action_template(self, action: Action) -> str | None:
        """The template ``action`` answers with; None for silence."""
        if action.template is not None or action.do == "silence":
            return action.template
        kind = {
            "acknowledge": ReplyKind.ACK,
            "escalate": ReplyKind.ACK,
            "wiki": ReplyKind.WIKI,
            "out_of_scope": ReplyKind.OUT_OF_SCOPE,
            "training_offer": ReplyKind.TRAINING,
        }[action.do]
        return self.templates[kind]

    def reply_template_names(self) -> tuple[str, ...]:
        """The templates automatic answers can use: ack and wiki always, and every one the
        action table names (checked in every language at start-up)."""
        used = [self.templates.ack, self.templates.wiki]
        used += [t for a in self.actions if (t := self.action_template(a)) is not None]
        return tuple(dict.fromkeys(used))

    @property
    def business_calendars(self) -> dict[str, BusinessCalendar]:
        """Every calendar by name: the declared ones, ``office`` and ``24x7``.

        Built once per Rules object and kept beside it (not in it, so equality of rules
        stays equality of their fields); each calendar caches its holidays per year.
        """
        built = _CALENDARS.get(id(self))
        if built is None:
            built = self._build_calendars()
            _CALENDARS[id(self)] = built
            weakref.finalize(self, _CALENDARS.pop, id(self), None)
        return built

    def _build_calendars(self) -> dict[str, BusinessCalendar]:
        default = (
            self.office_hours.opens.hour * 60 + self.office_hours.opens.minute,
            self.office_hours.closes.hour * 60 + self.office_hours.closes.minute,
        )
        specs = {OFFICE: CalendarSpec(), **self.calendars}
        built = {name: spec.build(name, self.timezone, default) for name, spec in specs.items()}
        built[AROUND_THE_CLOCK_NAME] = AROUND_THE_CLOCK
        return built

    def calendar(self, name: str = OFFICE) -> BusinessCalendar:
        """The business calendar called ``name`` (``KeyError`` if there is none)."""
        return self.business_calendars[name]

    @property
    def agent_addresses(self) -> dict[str, str]:
        """Every agent address (lower-cased) -> the agent's id."""
        return {
            address: agent_id
            for agent_id, agent in self.agents.items()
            for address in agent.addresses
        }

    def agent_for(self, address: str | None) -> str | None:
        """The id of the agent who writes from ``address``, or None."""
        if not address:
            return None
        return self.agent_addresses.get(address.strip().lower())

    def account_manager(self, account: str) -> str | None:
        entry = self.accounts.get(account)
        return entry.account_manager if entry is not None else None

    def time_bank(self, account: str | None, plan: str) -> TimeBankSpec | None:
        """The account's own time bank, else the plan's, else None (all time is overage)."""
        entry = self.accounts.get(account) if account is not None else None
        if entry is not None and entry.time_bank is not None:
            return entry.time_bank
        plan_spec = self.plans.get(plan)
        return plan_spec.time_bank if plan_spec is not None else None

    def plan_calendar(self, plan: str) -> BusinessCalendar:
        """The calendar a plan's office hours are judged on (its SLA's, else ``office``)."""
        spec = self.plans.get(plan)
        name = spec.sla.calendar if spec is not None and spec.sla is not None else OFFICE
        return self.calendar(name)


#: Built calendars per live Rules object (see ``Rules.business_calendars``).
_CALENDARS: dict[int, dict[str, BusinessCalendar]] = {}


# -- cross-field checks on raw data ------------------------------------------------------


def _items(value: object) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)]


def _language_problems(
    loc: Loc, value: object, declared: list[str], what: str
) -> list[tuple[Loc, str]]:
    if not isinstance(value, str) or value in declared:
        return []
    if value not in KNOWN_LANGUAGES:
        return [(loc, f"unknown language {value!r}{did_you_mean(value, KNOWN_LANGUAGES)}")]
    return [(loc, f"{what} {value!r} is not in languages ({', '.join(declared)})")]


def reference_problems(data: object) -> list[tuple[Loc, str]]:
    """Cross-field problems of a rules document, as (field path, message) pairs.

    Tolerant of any shape: parts that are malformed are skipped here (the schema reports
    them), so this can run on raw YAML data next to shape validation.
    """
    if not isinstance(data, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []

    raw_languages = data.get("languages", ("en", "sv", "it"))
    declared: list[str] = []
    if isinstance(raw_languages, (list, tuple)):
        for i, lang in enumerate(raw_languages):
            if not isinstance(lang, str):
                continue
            if lang not in KNOWN_LANGUAGES:
                hint = did_you_mean(lang, KNOWN_LANGUAGES)
                problems.append(
                    (
                        ("languages", i),
                        f"unknown language {lang!r}{hint} (known: {', '.join(KNOWN_LANGUAGES)})",
                    )
                )
            elif lang in declared:
                problems.append((("languages", i), f"language {lang!r} is listed twice"))
            else:
                declared.append(lang)
    problems += _language_problems(
        ("default_language",), data.get("default_language", "en"), declared, "default_language"
    )

    plans = data.get("plans")
    plan_ids = [str(k) for k in plans] if isinstance(plans, Mapping) else None
    if isinstance(plans, Mapping):
        for plan_id, plan in plans.items():
            promise = plan.get("promise") if isinstance(plan, Mapping) else None
            if isinstance(promise, Mapping):
                for lang in promise:
                    problems += _language_problems(
                        ("plans", plan_id, "promise", lang), lang, declared, "promise language"
                    )

    def check_plan(loc: Loc, value: object) -> None:
        if plan_ids is None or not isinstance(value, str) or value in plan_ids:
            return
        problems.append((loc, f"unknown plan {value!r}{did_you_mean(value, plan_ids)}"))

    check_plan(("default_plan",), data.get("default_plan"))

    seen: dict[str, int] = {}
    for i, customer in _items(data.get("customers")):
        check_plan(("customers", i, "plan"), customer.get("plan"))
        problems += _language_problems(
            ("customers", i, "language"), customer.get("language"), declared, "language"
        )
        match = customer.get("match")
        if isinstance(match, str):
            key = match.strip().lower()
            if key in seen:
                where: Loc = ("customers", i, "match")
                problems.append((where, f"{key!r} is already matched by customers[{seen[key]}]"))
            else:
                seen[key] = i

    for i, article in _items(data.get("wiki")):
        problems += _language_problems(
            ("wiki", i, "language"), article.get("language"), declared, "language"
        )
    problems += calendar_reference_problems(data)
    problems += people_reference_problems(data)
    problems += _billing_problems(data)
    problems += classification_problems(data.get("classification"), plan_ids, declared)
    problems += _action_problems(data, plan_ids, declared)
    return problems


def _action_problems(
    data: Mapping[str, Any], plan_ids: list[str] | None, declared: list[str]
) -> list[tuple[Loc, str]]:
    """The action table names plans, categories, languages and agents that exist, and each
    action once."""
    problems: list[tuple[Loc, str]] = []
    categories = _category_names(data)
    agents = data.get("agents")
    agent_ids = [str(a) for a in agents] if isinstance(agents, Mapping) else []
    names: dict[str, int] = {}
    for i, action in _items(data.get("actions")):
        name = action.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    (("actions", i, "name"), f"action {name!r} is already actions[{names[name]}]")
                )
            names.setdefault(name, i)
        when = action.get("when")
        if isinstance(when, Mapping):
            for j, plan in enumerate(_strings(when.get("plans"))):
                if plan_ids is not None and plan not in plan_ids:
                    problems.append(
                        (
                            ("actions", i, "when", "plans", j),
                            f"unknown plan {plan!r}{did_you_mean(plan, plan_ids)}",
                        )
                    )
            for j, category in enumerate(_strings(when.get("categories"))):
                if category not in categories:
                    problems.append(
                        (
                            ("actions", i, "when", "categories", j),
                            f"unknown category {category!r}{did_you_mean(category, categories)}"
                            f" (billing.categories: {', '.join(categories)})",
                        )
                    )
        paid = action.get("paid_option")
        if isinstance(paid, Mapping):
            for lang in paid:
                problems += _language_problems(
                    ("actions", i, "paid_option", lang), lang, declared, "language"
                )
        for j, who in enumerate(_strings(action.get("notify"))):
            if who not in ESCALATION_ROLES and who not in agent_ids:
                options = [*ESCALATION_ROLES, *agent_ids]
                problems.append(
                    (
                        ("actions", i, "notify", j),
                        f"unknown agent or role {who!r}{did_you_mean(who, options)}"
                        f" (roles: {', '.join(ESCALATION_ROLES)})",
                    )
                )
    return problems


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, (list, tuple)) else []


def _category_names(data: Mapping[str, Any]) -> list[str]:
    billing = data.get("billing")
    if isinstance(billing, Mapping) and isinstance(billing.get("categories"), Mapping):
        return [str(c) for c in billing["categories"]]
    return list(BillingSpec().categories)


def _billing_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Categories named by classification and assignment rules must exist in
    ``billing.categories``."""
    categories = _category_names(data)
    problems: list[tuple[Loc, str]] = []
    classification = data.get("classification")
    rules = classification.get("rules") if isinstance(classification, Mapping) else None
    for i, rule in _items(rules):
        outcome = rule.get("set")
        category = outcome.get("category") if isinstance(outcome, Mapping) else None
        if isinstance(category, str) and category not in categories:
            problems.append(
                (
                    ("classification", "rules", i, "set", "category"),
                    f"unknown category {category!r}{did_you_mean(category, categories)}"
                    f" (billing.categories: {', '.join(categories)})",
                )
            )
    assignment = data.get("assignment")
    by_category = assignment.get("by_category") if isinstance(assignment, Mapping) else None
    if isinstance(by_category, Mapping):
        for category in by_category:
            if str(category) not in categories:
                hint = did_you_mean(category, categories)
                problems.append(
                    (
                        ("assignment", "by_category", category),
                        f"unknown category {category!r}{hint}",
                    )
                )
    return problems
