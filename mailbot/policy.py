"""A loaded, validated ruleset with everything derived from it, swapped as one value.

Each ruleset has a ``version``: the first 12 hex digits of a SHA-256 over the bytes of
rules.yaml, the customer files it includes (``customers_from``), every template file and the
inherited ones (``templates.extends``). The same files give the same version on every machine
(in any directory) and after every restart, so a stored message's
``rules_version`` names the exact rules and templates it was decided and answered under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailbot.domain import Address
from mailbot.errors import ConfigError
from mailbot.outbound.compose import loop_marker
from mailbot.outbound.render import TemplateRenderer
from mailbot.rules.customer_files import customer_files
from mailbot.rules.loader import load_rules
from mailbot.rules.schema import Rules

TEAM_TEMPLATES = ("reminder", "escalation")
# Mail with agents (mailbot.outbound.agent_mail): the relay is in the customer's language.
AGENT_TEMPLATES = ("notify", "agent_error", "timebank_low")
CUSTOMER_TEMPLATES = ("relay",)

VERSION_DIGITS = 12
TEMPLATE_GLOB = "*.j2"
# Files that change while they are being loaded: read them again, at most this often.
_LOAD_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Policy:
    rules: Rules
    renderer: TemplateRenderer
    source: Path
    #: Content hash of the rules files and the templates (see the module docstring).
    version: str = ""
    #: When this process loaded it (UTC).
    loaded_at: datetime | None = None
    #: rules.yaml first, then the customer files it includes (customers_from) and the
    #: inherited templates (templates.extends): what a reload watches besides the templates
    #: directory.
    files: tuple[Path, ...] = field(default=())

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


def template_files(templates_dir: Path) -> list[Path]:
    """Every template file below ``templates_dir`` (hidden files, e.g. editors' swap files,
    left out), sorted."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        path
        for path in templates_dir.rglob(TEMPLATE_GLOB)
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(templates_dir).parts)
    )


def content_version(rule_files: Sequence[Path], templates_dir: Path) -> str:
    """The ruleset version of these files as they are on disk now (12 hex digits).

    Each file enters with its role, its name (rules.yaml by its base name, the files beside
    or below it relative to its directory, templates relative to ``templates_dir``: the same
    content in another directory is the same version) and its length; a missing file counts
    as missing.
    """
    named = [
        ("rules", path.name if i == 0 else _rule_file_name(rule_files[0], path), path)
        for i, path in enumerate(rule_files)
    ]
    named += [
        ("template", path.relative_to(templates_dir).as_posix(), path)
        for path in template_files(templates_dir)
    ]
    digest = hashlib.sha256(b"mailbot-rules-v1\0")
    for kind, name, path in named:
        digest.update(f"{kind}\0{name}\0".encode())
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            digest.update(b"missing\0")
            continue
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        digest.update(b"%d\0" % len(data))
        digest.update(data)
    return digest.hexdigest()[:VERSION_DIGITS]


def _rule_file_name(rules_path: Path, path: Path) -> str:
    """A file of the ruleset by its path relative to rules.yaml's directory, when it is in
    it (customers.csv), else by its path."""
    try:
        return path.relative_to(rules_path.resolve().parent).as_posix()
    except ValueError:
        return str(path)


def fallback_files(rules_path: Path, rules: Rules) -> tuple[Path, ...]:
    """The template files of ``templates.extends``: part of the ruleset (its version, what a
    reload watches) like rules.yaml itself."""
    return tuple(f for d in rules.templates.fallback_dirs(rules_path) for f in template_files(d))


def _load(rules_path: Path, templates_dir: Path) -> tuple[Rules, TemplateRenderer]:
    rules = load_rules(rules_path)
    fallbacks = rules.templates.fallback_dirs(rules_path)
    for directory in fallbacks:
        if not directory.is_dir():
            raise ConfigError(
                f"{rules_path}: templates.extends: {rules.templates.extends!r} is not a"
                f" directory ({directory})"
            )
    renderer = TemplateRenderer(
        templates_dir, default_language=rules.default_language, fallbacks=fallbacks
    )
    renderer.validate(
        names=(*rules.reply_template_names(), *CUSTOMER_TEMPLATES), languages=rules.languages
    )
    # Notices to the team are written in the default language (or an agent's own).
    team_languages = dict.fromkeys(
        [rules.default_language, *(a.language for a in rules.agents.values() if a.language)]
    )
    renderer.validate(names=(*TEAM_TEMPLATES, *AGENT_TEMPLATES), languages=list(team_languages))
    return rules, renderer


def load_policy(rules_path: Path, templates_dir: Path, *, expect: Sequence[Path] = ()) -> Policy:
    """Load rules.yaml and check that every template it can use exists in every language.

    The version is the hash of the files as they were while loading: they are hashed before
    and after, and read again when they changed in between (an editor or a deploy writing).
    ``expect``: the files the ruleset is likely made of (a reload passes the running one's);
    when they are, the files are read once, not twice.
    Raises :class:`ConfigError` (``RulesError`` for rules.yaml) naming file, line and field.
    """
    files: tuple[Path, ...] = tuple(expect) or (rules_path,)
    for _ in range(_LOAD_ATTEMPTS):
        before = content_version(files, templates_dir)
        rules, renderer = _load(rules_path, templates_dir)
        loaded = (
            rules_path,
            *customer_files(rules_path, rules),
            *fallback_files(rules_path, rules),
        )
        after = content_version(loaded, templates_dir)
        if loaded == files and after == before:
            return Policy(
                rules=rules,
                renderer=renderer,
                source=rules_path,
                version=after,
                loaded_at=datetime.now(UTC),
                files=files,
            )
        files = loaded
    raise ConfigError(
        f"{rules_path}: the rules or templates kept changing while being loaded; try again"
    )
