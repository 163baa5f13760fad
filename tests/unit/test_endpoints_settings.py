"""Connection URLs, the TLS policy, and settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.endpoints import Security, parse_endpoint
from mailbot.errors import ConfigError, TlsRequiredError
from mailbot.settings import AckMode, load_settings


def test_schemes_and_default_ports() -> None:
    ep = parse_endpoint("imaps://bot%40ex.com@mail.example.com/Support", protocol="imap")
    assert (ep.security, ep.port, ep.user, ep.mailbox) == (
        Security.TLS,
        993,
        "bot@ex.com",
        "Support",
    )
    assert parse_endpoint("imap://u@h", protocol="imap").security is Security.STARTTLS
    assert parse_endpoint("imap://u@h", protocol="imap").mailbox == "INBOX"
    assert parse_endpoint("smtp://h", protocol="smtp").port == 587
    assert parse_endpoint("smtps://h", protocol="smtp").port == 465


def test_plain_text_only_to_loopback() -> None:
    assert parse_endpoint("imap+plain://u@127.0.0.1:1143", protocol="imap").port == 1143
    assert parse_endpoint("smtp+plain://[::1]:2525", protocol="smtp").host == "::1"
    with pytest.raises(TlsRequiredError):
        parse_endpoint("imap+plain://u@mail.example.com", protocol="imap")
    with pytest.raises(TlsRequiredError):
        parse_endpoint("smtps://mail.example.com", protocol="smtp", verify_tls=False)


def test_wrong_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme must be one of"):
        parse_endpoint("pop3://h", protocol="imap")
    with pytest.raises(ConfigError, match="scheme must be one of"):
        parse_endpoint("imaps://h", protocol="smtp")


def test_password_file_wins(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    settings = load_settings(
        {
            "MAILBOT_IMAP_URL": "imaps://bot:inurl@mail.example.com",
            "MAILBOT_IMAP_PASSWORD_FILE": str(secret),
            "MAILBOT_SMTP_URL": "smtps://mail.example.com",
            "MAILBOT_SMTP_PASSWORD": "smtp-pw",
            "MAILBOT_STATE_DIR": str(tmp_path / "state"),
        }
    )
    assert settings.imap is not None and settings.imap.password == "s3cret"
    assert settings.smtp is not None and settings.smtp.password == "smtp-pw"
    assert settings.db_url.startswith("sqlite://") and "state" in settings.db_url


def test_cli_flags_override_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {"MAILBOT_DB_URL": "sqlite:///env.db", "MAILBOT_RULES": "env.yaml"},
        db_url="sqlite:///flag.db",
        rules="flag.yaml",
    )
    assert settings.db_url == "sqlite:///flag.db"
    assert settings.rules_path == Path("flag.yaml")


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match="MAILBOT_ACK"):
        load_settings({"MAILBOT_ACK": "delete"})
    with pytest.raises(ConfigError, match="MAILBOT_BATCH"):
        load_settings({"MAILBOT_BATCH": "many"})
    with pytest.raises(ConfigError, match="MAILBOT_IMAP_PASSWORD_FILE"):
        load_settings(
            {"MAILBOT_IMAP_URL": "imaps://h", "MAILBOT_IMAP_PASSWORD_FILE": "/nonexistent/pw"}
        )
    assert AckMode.parse("move:Done").move_to == "Done"
    assert load_settings({"MAILBOT_IDLE_SECONDS": "7200"}).idle_seconds == 25 * 60


def test_parse_workers_follow_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert load_settings({}).parse_workers == 1
    assert load_settings({"MAILBOT_PARSE_WORKERS": "auto"}).parse_workers == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})  # CPUAffinity=3
    assert load_settings({}).parse_workers == 0
    assert load_settings({"MAILBOT_PARSE_WORKERS": "2"}).parse_workers == 2
    assert load_settings({"MAILBOT_PARSE_WORKERS": "0"}).parse_workers == 0
    for bad in ("-1", "two", "65"):
        with pytest.raises(ConfigError, match=f"MAILBOT_PARSE_WORKERS='{bad}'"):
            load_settings({"MAILBOT_PARSE_WORKERS": bad})
