"""Fixtures for whole-daemon tests: a rules file, a SQLite database, settings for the servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailbot.policy import Policy, load_policy
from mailbot.settings import Settings, load_settings
from tests.db import database

REPO = Path(__file__).resolve().parents[2]
__all__ = ["database"]

RULES = """\
version: 1
identity:
  address: support@example.com
  name: Example Support
timezone: Europe/Stockholm
default_language: en
languages: [en, sv, it]
plans:
  core:
    name: Core
    first_response: {working_days: 3}
    howto: wiki
  pro:
    name: Pro
    priority: 10
    first_response: {working_hours: 8}
  ultimate:
    name: Ultimate
    priority: 20
    first_response: {hours: 4}
default_plan: core
customers:
  - {match: anna@butiken.se, plan: pro, name: Butiken AB, language: sv}
  - {match: "@negozio.it", plan: ultimate, language: it}
wiki:
  - title: Reset your admin password
    url: https://wiki.example.com/password
    language: en
    keywords: [password, reset, login]
  - title: Återställ lösenordet
    url: https://wiki.example.com/sv/losenord
    language: sv
    keywords: [lösenord, återställa, logga in]
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture
def policy(rules_file: Path) -> Policy:
    return load_policy(rules_file, REPO / "templates")


def make_settings(
    imap_server: Any, smtp_sink: Any, rules_file: Path, db_url: str, **env: str
) -> Settings:
    imap_url = f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX"
    smtp_url = f"smtp+plain://{smtp_sink.host}:{smtp_sink.port}"
    base = {
        "MAILBOT_IMAP_PASSWORD": imap_server.password,
        "MAILBOT_TEMPLATES": str(REPO / "templates"),
        "MAILBOT_SECRET": "e2e-test-token-key-0123456789",
    }
    base.update(env)
    return load_settings(
        base, imap_url=imap_url, smtp_url=smtp_url, db_url=db_url, rules=str(rules_file)
    )
