"""Several mailboxes (brands, queues) in one daemon: ``MAILBOT_MAILBOXES=mailboxes.yaml``.

::

    mailboxes:
      - name: shop                      # [a-z0-9-], unique; stored on its tickets and mail
        imap: imaps://support%40shop.example@imap.example.com:993/INBOX
        smtp: smtps://support%40shop.example@smtp.example.com:465
        rules: shop/rules.yaml          # its own rules (plans, customers, templates...)
        templates: shop/templates       # optional: templates/ beside its rules.yaml
        imap_password_file: ${CREDENTIALS_DIRECTORY}/shop-imap   # secrets: files only
        smtp_password_file: ${CREDENTIALS_DIRECTORY}/shop-smtp
        ack: flag                       # optional, as MAILBOT_ACK
        imap_auth: xoauth2              # optional, as MAILBOT_IMAP_AUTH / _SMTP_AUTH
        oauth_refresh_token_file: ...   # optional, this mailbox's refresh token

Each entry is read as the ``MAILBOT_*`` variables of a daemon of its own (the database, state
directory, secret, timeouts and the OAuth client stay shared from the environment;
``MAILBOT_TEMPLATES``, ``MAILBOT_ACK`` and the auth modes are defaults), so every
check that applies to ``mailbot run`` applies to each mailbox. Paths are relative to this
file; ``$VAR`` and ``${VAR}`` are expanded in the ``*_file`` paths (systemd's
``$CREDENTIALS_DIRECTORY``). Passwords never belong in this file. Errors name the file, line,
column and field: ``mailboxes.yaml:7:11: mailboxes[1].rules: required``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from mailbot.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

#: key in mailboxes.yaml -> the variable it stands for, and whether it is a path
KEYS: dict[str, tuple[str, bool]] = {
    "imap": ("MAILBOT_IMAP_URL", False),
    "smtp": ("MAILBOT_SMTP_URL", False),
    "rules": ("MAILBOT_RULES", True),
    "templates": ("MAILBOT_TEMPLATES", True),
    "ack": ("MAILBOT_ACK", False),
    "imap_password_file": ("MAILBOT_IMAP_PASSWORD_FILE", True),
    "smtp_password_file": ("MAILBOT_SMTP_PASSWORD_FILE", True),
    "imap_auth": ("MAILBOT_IMAP_AUTH", False),
    "smtp_auth": ("MAILBOT_SMTP_AUTH", False),
    "oauth_refresh_token_file": ("MAILBOT_OAUTH_REFRESH_TOKEN_FILE", True),
}
REQUIRED = ("name", "imap", "smtp", "rules")
#: Variables that belong to one mailbox: never inherited from the daemon's environment.
#: (MAILBOT_TEMPLATES, MAILBOT_ACK and the auth modes are: defaults an entry may override.)
PER_MAILBOX = (
    "MAILBOT_IMAP_URL",
    "MAILBOT_SMTP_URL",
    "MAILBOT_RULES",
    "MAILBOT_IMAP_PASSWORD",
    "MAILBOT_IMAP_PASSWORD_FILE",
    "MAILBOT_SMTP_PASSWORD",
    "MAILBOT_SMTP_PASSWORD_FILE",
    "MAILBOT_OAUTH_REFRESH_TOKEN",
    "MAILBOT_OAUTH_REFRESH_TOKEN_FILE",
)
_SECRETS = re.compile(r"password$|secret|token$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    name: str
    #: The ``MAILBOT_*`` variables this entry sets.
    env: Mapping[str, str]
    #: ``file:line`` of the entry, for errors about it.
    where: str

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The daemon's environment without any mailbox's settings, plus this entry's."""
        merged = {k: v for k, v in base.items() if k not in PER_MAILBOX}
        merged.update(self.env)
        return merged


def _at(path: Path, node: yaml.Node) -> str:
    mark = node.start_mark
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def load_mailboxes(path: Path) -> list[MailboxEntry]:
    """Read and check ``mailboxes.yaml``; every problem is reported, each with its place."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"MAILBOT_MAILBOXES={path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    errors: list[str] = []
    items: list[yaml.Node] = []
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:1:1: expected a mapping with a 'mailboxes' list")
    for key, value in root.value:
        if key.value != "mailboxes":
            errors.append(f"{_at(path, key)}: {key.value}: unknown field (only 'mailboxes')")
        elif not isinstance(value, yaml.SequenceNode) or not value.value:
            errors.append(f"{_at(path, value)}: mailboxes: a list of one or more mailboxes")
        else:
            items = list(value.value)
    if not items and not errors:
        errors.append(f"{path}:1:1: mailboxes: missing")
    entries: list[MailboxEntry] = []
    names: dict[str, str] = {}
    accounts: dict[str, str] = {}
    base = path.resolve().parent
    for index, item in enumerate(items):
        field = f"mailboxes[{index}]"
        if not isinstance(item, yaml.MappingNode):
            errors.append(f"{_at(path, item)}: {field}: a mapping (name, imap, smtp, rules...)")
            continue
        values: dict[str, str] = {}
        for key, value in item.value:
            name = str(key.value)
            if name != "name" and name not in KEYS:
                hint = (
                    ": secrets never belong in this file; use imap_password_file or"
                    " smtp_password_file"
                    if _SECRETS.search(name)
                    else f" (known: name, {', '.join(KEYS)})"
                )
                errors.append(f"{_at(path, key)}: {field}.{name}: unknown field{hint}")
                continue
            if not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
                errors.append(f"{_at(path, value)}: {field}.{name}: a non-empty text")
                continue
            values[name] = str(value.value).strip()
        for name in REQUIRED:
            if name not in values and not any(str(k.value) == name for k, _ in item.value):
                errors.append(f"{_at(path, item)}: {field}.{name}: required")
        mailbox = values.get("name")
        if mailbox is not None:
            if not NAME.match(mailbox):
                errors.append(
                    f"{_at(path, item)}: {field}.name: {mailbox!r}: lower-case letters, digits"
                    " and '-', at most 63"
                )
            elif mailbox in names:
                errors.append(
                    f"{_at(path, item)}: {field}.name: {mailbox!r} is also {names[mailbox]}"
                )
            else:
                names[mailbox] = field
        account = values.get("imap")
        if account is not None:
            if account in accounts:
                errors.append(
                    f"{_at(path, item)}: {field}.imap: the same mailbox as {accounts[account]}"
                )
            accounts[account] = field
        env: dict[str, str] = {}
        for name, text_value in values.items():
            if name == "name":
                continue
            variable, is_path = KEYS[name]
            if is_path:
                expanded = os.path.expandvars(text_value)
                if "$" in expanded:
                    errors.append(
                        f"{_at(path, item)}: {field}.{name}: {text_value!r}: a variable in it is"
                        " not set"
                    )
                env[variable] = str(base / expanded)
            else:
                env[variable] = text_value
        if mailbox is not None:
            entries.append(MailboxEntry(mailbox, env, f"{path}:{item.start_mark.line + 1}"))
    if errors:
        raise ConfigError("\n".join(errors))
    return entries
