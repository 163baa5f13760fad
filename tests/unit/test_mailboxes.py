"""mailboxes.yaml: every problem named by file, line, column and field; no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.errors import ConfigError
from mailbot.mailboxes import load_mailboxes

GOOD = """\
mailboxes:
  - name: shop
    imap: imaps://support@imap.shop.example/INBOX
    smtp: smtps://support@smtp.shop.example
    rules: shop/rules.yaml
    imap_password_file: ${CREDS}/shop-imap
  - name: agency
    imap: imaps://support@imap.agency.example/INBOX
    smtp: smtps://support@smtp.agency.example
    rules: /etc/mailbot/agency.yaml
    templates: agency/templates
    ack: move:Done
"""


def _load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "mailboxes.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_mailboxes(path)
    except ConfigError as exc:
        return str(exc).replace(str(path), "mailboxes.yaml").splitlines()
    return []


def test_entries_become_each_mailboxs_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDS", "/run/credentials/mailbot.service")
    path = tmp_path / "mailboxes.yaml"
    path.write_text(GOOD, encoding="utf-8")
    shop, agency = load_mailboxes(path)
    assert (shop.name, agency.name) == ("shop", "agency")
    assert shop.env == {
        "MAILBOT_IMAP_URL": "imaps://support@imap.shop.example/INBOX",
        "MAILBOT_SMTP_URL": "smtps://support@smtp.shop.example",
        "MAILBOT_RULES": str(tmp_path / "shop" / "rules.yaml"),
        "MAILBOT_IMAP_PASSWORD_FILE": "/run/credentials/mailbot.service/shop-imap",
    }
    assert agency.env["MAILBOT_RULES"] == "/etc/mailbot/agency.yaml"  # absolute stays
    assert agency.env["MAILBOT_TEMPLATES"] == str(tmp_path / "agency" / "templates")
    assert agency.where == f"{path}:7"
    base = {
        "MAILBOT_DB_URL": "postgresql://db/mailbot",
        "MAILBOT_IMAP_PASSWORD": "the daemon's, not the agency's",
        "MAILBOT_ACK": "flag",
    }
    env = agency.environment(base)
    assert env["MAILBOT_DB_URL"] == "postgresql://db/mailbot"  # shared
    assert "MAILBOT_IMAP_PASSWORD" not in env  # never inherited by a mailbox
    assert env["MAILBOT_ACK"] == "move:Done"
    assert shop.environment(base)["MAILBOT_ACK"] == "flag"  # the daemon's default


def test_every_problem_has_its_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET", raising=False)
    errors = _load(
        tmp_path,
        """\
mailboxes:
  - name: Shop
    imap: imaps://a@b.example/INBOX
    smtp: smtps://a@b.example
    rules: a.yaml
  - name: two
    imap: imaps://a@b.example/INBOX
    imap_password: hunter2
    smtp_password_file: $NOT_SET/x
  - name: two
    imap: imaps://c@b.example/INBOX
    smtp: smtps://c@b.example
    rules: c.yaml
    colour: blue
""",
    )
    assert errors == [
        "mailboxes.yaml:2:5: mailboxes[0].name: 'Shop': lower-case letters, digits and '-',"
        " at most 63",
        "mailboxes.yaml:8:5: mailboxes[1].imap_password: unknown field: secrets never belong"
        " in this file; use imap_password_file or smtp_password_file",
        "mailboxes.yaml:6:5: mailboxes[1].smtp: required",
        "mailboxes.yaml:6:5: mailboxes[1].rules: required",
        "mailboxes.yaml:6:5: mailboxes[1].imap: the same mailbox as mailboxes[0]",
        "mailboxes.yaml:6:5: mailboxes[1].smtp_password_file: '$NOT_SET/x': a variable in it"
        " is not set",
        "mailboxes.yaml:14:5: mailboxes[2].colour: unknown field (known: name, imap, smtp,"
        " rules, templates, ack, imap_password_file, smtp_password_file, imap_auth,"
        " smtp_auth, oauth_refresh_token_file)",
        "mailboxes.yaml:10:5: mailboxes[2].name: 'two' is also mailboxes[1]",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "mailboxes.yaml:1:1: expected a mapping with a 'mailboxes' list"),
        ("mailboxes: []\n", "mailboxes.yaml:1:12: mailboxes: a list of one or more mailboxes"),
        ("boxes: []\n", "mailboxes.yaml:1:1: boxes: unknown field (only 'mailboxes')"),
        ("mailboxes:\n  - just-a-name\n", "mailboxes.yaml:2:5: mailboxes[0]: a mapping"),
    ],
)
def test_shape_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert _load(tmp_path, text)[0].startswith(expected)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_mailboxes(tmp_path / "missing.yaml")
