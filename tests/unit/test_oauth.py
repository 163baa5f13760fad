"""XOAUTH2 pieces that need no server: the SASL string, the basic-auth refusal texts of Gmail
and Microsoft 365, and the MAILBOT_*_AUTH / MAILBOT_OAUTH_* settings."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mailbot.endpoints import Auth
from mailbot.errors import ConfigError
from mailbot.oauth import DEFAULT_SCOPES, TokenSource, basic_auth_refusal, xoauth2_sasl
from mailbot.settings import load_settings


def test_xoauth2_sasl_string() -> None:
    sasl = xoauth2_sasl("support@example.com", "ya29.token")
    assert base64.b64decode(sasl) == b"user=support@example.com\x01auth=Bearer ya29.token\x01\x01"
    # Google's documented example
    assert xoauth2_sasl(
        "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    ) == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
        "YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


# --------------------------------------------------------------------------- refusal texts

GMAIL_IMAP = [
    "[ALERT] Application-specific password required: "
    "https://support.google.com/accounts/answer/185833 (Failure)",
    "[ALERT] Please log in via your web browser: "
    "https://support.google.com/mail/accounts/answer/78754 (Failure)",
    "[WEBALERT https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=AKgnsbt] "
    "Web login required.",
]
# aiosmtplib's SMTPAuthenticationError: code, then the lines without "534-" joined by "\n"
GMAIL_SMTP = [
    "534 5.7.9 Application-specific password required. Learn more at\n"
    "5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor d2sm1234567wrb.12 - gsmtp",
    "534 5.7.14 <https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=AKgnsbs>\n"
    "5.7.14 Please log in via your web browser and\n"
    "5.7.14 then try again.\n"
    "5.7.14  Learn more at\n"
    "5.7.14  https://support.google.com/mail/answer/78754 a1sm6049889wrx.3 - gsmtp",
]
MICROSOFT_SMTP = [
    "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
    "[AM0PR10CA0020.EURPRD10.PROD.OUTLOOK.COM 2024-10-01T08:00:00.000Z 08DCE0A1B2C3D4E5]",
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
    "[DB8PR04CA0012.eurprd04.prod.outlook.com]",
    "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security "
    "defaults policy. Contact your administrator.",
]
MICROSOFT_IMAP = ["AUTHENTICATE failed.", "LOGIN failed."]
NOT_BASIC_AUTH = [
    ("imap", "imap.gmail.com", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
    ("smtp", "smtp.gmail.com", "535 5.7.8 Username and Password not accepted."),
    ("imap", "mail.example.com", "LOGIN failed."),
    ("imap", "mail.example.com", "AUTHENTICATE failed."),
    ("imap", "notoutlook.com.example.net", "LOGIN failed."),
    ("smtp", "smtp.office365.com", "535 5.7.3 Authentication unsuccessful"),
    ("imap", "127.0.0.1", "[AUTHENTICATIONFAILED] Authentication failed."),
]


@pytest.mark.parametrize("text", GMAIL_IMAP)
def test_gmail_imap_refusals(text: str) -> None:
    message = basic_auth_refusal("imap", "imap.gmail.com", text)
    assert message is not None
    assert "Google refused the password" in message
    assert "MAILBOT_IMAP_AUTH=xoauth2" in message
    assert "MAILBOT_OAUTH_PROVIDER=google" in message
    assert "MAILBOT_OAUTH_REFRESH_TOKEN[_FILE]" in message


@pytest.mark.parametrize("text", GMAIL_SMTP)
def test_gmail_smtp_refusals(text: str) -> None:
    message = basic_auth_refusal("smtp", "smtp.gmail.com", text)
    assert message is not None
    assert "MAILBOT_SMTP_AUTH=xoauth2" in message
    assert "MAILBOT_OAUTH_PROVIDER=google" in message
    assert "\n" not in message  # the server's lines are folded into one log line


@pytest.mark.parametrize("text", MICROSOFT_SMTP)
def test_microsoft_smtp_refusals(text: str) -> None:
    message = basic_auth_refusal("smtp", "smtp.office365.com", text)
    assert message is not None
    assert "Microsoft 365 refused the password" in message
    assert "Basic authentication" in message
    assert "MAILBOT_SMTP_AUTH=xoauth2" in message
    assert "MAILBOT_OAUTH_PROVIDER=microsoft" in message


@pytest.mark.parametrize(
    "host", ["outlook.office365.com", "outlook.office.com", "imap-mail.outlook.com"]
)
@pytest.mark.parametrize("text", MICROSOFT_IMAP)
def test_microsoft_imap_refusals_only_on_microsoft_hosts(host: str, text: str) -> None:
    message = basic_auth_refusal("imap", host, text)
    assert message is not None
    assert "retired basic authentication" in message
    assert "likely cause" in message
    assert "MAILBOT_IMAP_AUTH=xoauth2" in message


@pytest.mark.parametrize(("protocol", "host", "text"), NOT_BASIC_AUTH)
def test_other_refusals_are_not_basic_auth(protocol: str, host: str, text: str) -> None:
    assert basic_auth_refusal(protocol, host, text) is None


# --------------------------------------------------------------------------- settings

BASE_ENV = {
    "MAILBOT_IMAP_URL": "imaps://support@example.com@imap.gmail.com/INBOX",
    "MAILBOT_SMTP_URL": "smtps://support%40example.com@smtp.gmail.com",
}


def test_password_stays_the_default(tmp_path: Path) -> None:
    settings = load_settings({**BASE_ENV, "MAILBOT_IMAP_PASSWORD": "pw"})
    assert settings.imap is not None and settings.smtp is not None
    assert settings.imap.auth is Auth.PASSWORD and settings.imap.tokens is None
    assert settings.smtp.auth is Auth.PASSWORD and settings.smtp.tokens is None


def test_google_xoauth2_for_both_shares_one_token_source(tmp_path: Path) -> None:
    token_file = tmp_path / "refresh-token"
    token_file.write_text("1//refresh-token\n")
    env = {
        **BASE_ENV,
        "MAILBOT_IMAP_AUTH": "xoauth2",
        "MAILBOT_SMTP_AUTH": "XOAuth2",
        "MAILBOT_OAUTH_PROVIDER": "google",
        "MAILBOT_OAUTH_CLIENT_ID": "client.apps.googleusercontent.com",
        "MAILBOT_OAUTH_CLIENT_SECRET": "secret",
        "MAILBOT_OAUTH_REFRESH_TOKEN_FILE": str(token_file),
    }
    settings = load_settings(env)
    assert settings.imap is not None and settings.smtp is not None
    assert settings.imap.auth is Auth.XOAUTH2 and settings.smtp.auth is Auth.XOAUTH2
    tokens = settings.imap.tokens
    assert isinstance(tokens, TokenSource) and tokens is settings.smtp.tokens
    config = tokens.config
    assert config.token_url == "https://oauth2.googleapis.com/token"
    assert config.scope == DEFAULT_SCOPES["google"] == "https://mail.google.com/"
    assert config.refresh_token == "1//refresh-token"
    assert config.client_secret == "secret"
    assert "secret" not in repr(config) and "refresh-token" not in repr(tokens)
    assert settings.smtp.user == "support@example.com"


def test_microsoft_tenant_and_scope() -> None:
    env = {
        **BASE_ENV,
        "MAILBOT_IMAP_AUTH": "xoauth2",
        "MAILBOT_OAUTH_PROVIDER": "microsoft",
        "MAILBOT_OAUTH_TENANT": "contoso.onmicrosoft.com",
        "MAILBOT_OAUTH_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
        "MAILBOT_OAUTH_REFRESH_TOKEN": "0.AAAA",
    }
    settings = load_settings(env)
    assert settings.imap is not None and settings.imap.tokens is not None
    assert settings.smtp is not None and settings.smtp.auth is Auth.PASSWORD
    config = settings.imap.tokens.config
    assert config.token_url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert config.scope == (
        "https://outlook.office.com/IMAP.AccessAsUser.All "
        "https://outlook.office.com/SMTP.Send offline_access"
    )
    assert config.client_secret is None
    common = load_settings({**env, "MAILBOT_OAUTH_TENANT": ""}).imap
    assert common is not None and common.tokens is not None
    assert "/common/oauth2/v2.0/token" in common.tokens.config.token_url


def test_own_token_url_and_scope() -> None:
    env = {
        **BASE_ENV,
        "MAILBOT_SMTP_AUTH": "xoauth2",
        "MAILBOT_OAUTH_TOKEN_URL": "https://idp.example.com/oauth2/token",
        "MAILBOT_OAUTH_CLIENT_ID": "mailbot",
        "MAILBOT_OAUTH_REFRESH_TOKEN": "rt",
        "MAILBOT_OAUTH_SCOPE": "mail.send",
    }
    smtp = load_settings(env).smtp
    assert smtp is not None and smtp.tokens is not None
    assert smtp.tokens.config.token_url == "https://idp.example.com/oauth2/token"
    assert smtp.tokens.config.scope == "mail.send"
    no_scope = load_settings({**env, "MAILBOT_OAUTH_SCOPE": ""}).smtp
    assert no_scope is not None and no_scope.tokens is not None
    assert no_scope.tokens.config.scope is None


XOAUTH2_ENV = {
    **BASE_ENV,
    "MAILBOT_IMAP_AUTH": "xoauth2",
    "MAILBOT_OAUTH_PROVIDER": "google",
    "MAILBOT_OAUTH_CLIENT_ID": "client",
    "MAILBOT_OAUTH_REFRESH_TOKEN": "rt",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"MAILBOT_OAUTH_CLIENT_ID": ""}, "MAILBOT_OAUTH_CLIENT_ID"),
        ({"MAILBOT_OAUTH_REFRESH_TOKEN": ""}, "MAILBOT_OAUTH_REFRESH_TOKEN"),
        ({"MAILBOT_OAUTH_PROVIDER": ""}, "MAILBOT_OAUTH_PROVIDER"),
        ({"MAILBOT_OAUTH_PROVIDER": "yahoo"}, "MAILBOT_OAUTH_PROVIDER='yahoo'"),
        ({"MAILBOT_OAUTH_TENANT": "a/b?x=1"}, "MAILBOT_OAUTH_TENANT"),
        ({"MAILBOT_OAUTH_TOKEN_URL": "http://idp.example.com/token"}, "must be https://"),
        ({"MAILBOT_OAUTH_TOKEN_URL": "ftp://127.0.0.1/token"}, "must be https://"),
        (
            {"MAILBOT_OAUTH_REFRESH_TOKEN_FILE": "/nonexistent/rt"},
            "MAILBOT_OAUTH_REFRESH_TOKEN_FILE",
        ),
        ({"MAILBOT_IMAP_AUTH": "oauth"}, "MAILBOT_IMAP_AUTH='oauth'"),
        ({"MAILBOT_IMAP_URL": "imaps://imap.gmail.com/INBOX"}, "needs the mailbox user"),
    ],
)
def test_missing_or_wrong_pieces_name_the_variable(change: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("?", r"\?")):
        load_settings({**XOAUTH2_ENV, **change})


def test_plain_http_token_url_only_to_loopback() -> None:
    env = {**XOAUTH2_ENV, "MAILBOT_OAUTH_TOKEN_URL": "http://127.0.0.1:8080/token"}
    imap = load_settings(env).imap
    assert imap is not None and imap.tokens is not None
    assert imap.tokens.config.token_url == "http://127.0.0.1:8080/token"


def test_oauth_variables_are_ignored_with_passwords() -> None:
    env = {**XOAUTH2_ENV, "MAILBOT_IMAP_AUTH": "password", "MAILBOT_OAUTH_CLIENT_ID": ""}
    imap = load_settings(env).imap
    assert imap is not None and imap.auth is Auth.PASSWORD and imap.tokens is None
