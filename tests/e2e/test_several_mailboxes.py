"""Several mailboxes in one daemon (``MAILBOT_MAILBOXES``): each with its own IMAP account,
SMTP server, identity and rules; tickets and mail carry the mailbox's name; one broken
mailbox never stalls the others; one READY, one /healthz for all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest

from mailbot.daemon_group import DaemonGroup, mailbox_settings
from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.errors import ConfigError
from mailbot.policy import load_policy
from mailbot.settings import load_settings
from mailbot.tickets.models import OutboxRow, Ticket
from tests.e2e.conftest import REPO, RULES
from tests.e2e.test_spine import append, mail
from tests.servers import ImapTestServer

AGENCY_RULES = (
    RULES.replace("address: support@example.com", "address: support@agency.example")
    .replace("name: Example Support", "name: Byrån Support")
    .replace("default_language: en", "default_language: sv")
)


@contextlib.asynccontextmanager
async def _second_mailbox(
    first: ImapTestServer, request: pytest.FixtureRequest
) -> AsyncIterator[ImapTestServer]:
    """Another account: a pymap of its own, or a second user on the session's Dovecot."""
    if first.kind == "dovecot":
        server = request.getfixturevalue("dovecot_server")
        user = f"agency-{first.user}"  # the session's Dovecot: a user per test
        server.add_user(user, "agency-pw")
        yield ImapTestServer("dovecot", first.host, first.port, user, "agency-pw")
        return
    async with running_pymap("agency", "agency-pw") as srv:
        yield ImapTestServer("pymap", srv.host, srv.port, srv.user, srv.password)


def _write_config(
    tmp_path: Path,
    shop: ImapTestServer,
    shop_smtp: SmtpSink,
    agency: ImapTestServer,
    agency_smtp: SmtpSink,
    *,
    agency_password: str,
) -> Path:
    (tmp_path / "shop").mkdir()
    (tmp_path / "agency").mkdir()
    (tmp_path / "shop" / "rules.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "agency" / "rules.yaml").write_text(AGENCY_RULES, encoding="utf-8")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "shop-imap").write_text(shop.password + "\n", encoding="utf-8")
    (tmp_path / "secrets" / "agency-imap").write_text(agency_password + "\n", encoding="utf-8")
    path = tmp_path / "mailboxes.yaml"
    path.write_text(
        f"""\
mailboxes:
  - name: shop
    imap: {shop.url}
    smtp: {shop_smtp.url}
    rules: shop/rules.yaml
    templates: {REPO / "templates"}
    imap_password_file: ${{SECRETS}}/shop-imap
  - name: agency
    imap: {agency.url}
    smtp: {agency_smtp.url}
    rules: agency/rules.yaml
    templates: {REPO / "templates"}
    imap_password_file: ${{SECRETS}}/agency-imap
""",
        encoding="utf-8",
    )
    return path


def _group(config: Path, database: str, tmp_path: Path, **extra: str) -> DaemonGroup:
    env = {
        "MAILBOT_MAILBOXES": str(config),
        "MAILBOT_STATE_DIR": str(tmp_path / "state"),
        "MAILBOT_SECRET": "e2e-test-token-key-0123456789",
        "MAILBOT_IDLE_SECONDS": "1",
        "MAILBOT_POLL_SECONDS": "1",
        "SECRETS": str(tmp_path / "secrets"),
        **extra,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SECRETS", env["SECRETS"])  # expanded in the *_file paths
        base = load_settings(env, db_url=database)
        found = mailbox_settings(base, env)
    return DaemonGroup([(e, s, load_policy(s.rules_path, s.templates_dir)) for e, s in found])


def _from(sink: SmtpSink) -> set[str]:
    return {
        str(message_from_bytes(m.raw, policy=email_policy.default)["From"]) for m in sink.messages
    }


async def test_each_mailbox_answers_with_its_own_identity_server_and_rules(
    imap_server: ImapTestServer,
    request: pytest.FixtureRequest,
    database: str,
    tmp_path: Path,
) -> None:
    async with (
        _second_mailbox(imap_server, request) as agency,
        running_smtp_sink() as shop_smtp,
        running_smtp_sink() as agency_smtp,
    ):
        config = _write_config(
            tmp_path, imap_server, shop_smtp, agency, agency_smtp, agency_password=agency.password
        )
        group = _group(config, database, tmp_path)
        await append(imap_server, mail("Ann <ann@one.test>", "Order 1", "Broken.")[1])
        await append(agency, mail("Bo <bo@two.test>", "Beställning 2", "Trasig.")[1])
        await append(agency, mail("Cy <cy@three.test>", "Beställning 3", "Trasig.")[1])
        report = await group.run_once()
        assert sum(report.ingested.values()) == 3 and report.sent == 3

        assert [m.rcpt_tos for m in shop_smtp.messages] == [("ann@one.test",)]
        assert _from(shop_smtp) == {"Example Support <support@example.com>"}
        assert sorted(m.rcpt_tos for m in agency_smtp.messages) == [
            ("bo@two.test",),
            ("cy@three.test",),
        ]
        assert _from(agency_smtp) == {"Byrån Support <support@agency.example>"}
        tickets = {t.customer: t.mailbox for t in await Ticket.all()}
        assert tickets == {
            "ann@one.test": "shop",
            "bo@two.test": "agency",
            "cy@three.test": "agency",
        }
        rows = {r.rcpt_to: r.mailbox for r in await OutboxRow.all()}
        assert rows == tickets
        # Each mailbox's own state file for `mailbot status`.
        assert (tmp_path / "state" / "status.shop.json").exists()
        assert (tmp_path / "state" / "status.agency.json").exists()


async def test_a_broken_mailbox_does_not_stall_the_others(
    imap_server: ImapTestServer,
    request: pytest.FixtureRequest,
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    async with (
        _second_mailbox(imap_server, request) as agency,
        running_smtp_sink() as shop_smtp,
        running_smtp_sink() as agency_smtp,
    ):
        # The agency's password is wrong: its mailbox fails and retries, on its own.
        config = _write_config(
            tmp_path, imap_server, shop_smtp, agency, agency_smtp, agency_password="wrong"
        )
        group = _group(config, database, tmp_path, MAILBOT_HTTP_LISTEN="127.0.0.1:0")
        task = asyncio.create_task(group.run())
        try:
            shop = group.daemons[0]
            await asyncio.wait_for(shop.ready.wait(), 30)
            await append(imap_server, mail("Ann <ann@one.test>", "Order 1", "Broken.")[1])
            await shop_smtp.wait_for(1, timeout=30)
            agency_daemon = group.daemons[1]
            for _ in range(300):
                if agency_daemon.poller.last_error:
                    break
                await asyncio.sleep(0.05)
            assert agency_daemon.poller.last_error is not None
            assert shop.poller.last_sync is not None

            assert group.web is not None
            status, body = await _get(group.web.port, "/healthz")
            # A refused login is unhealthy at once (waiting will not cure it), and named.
            assert status == 503, body
            assert set(body["mailboxes"]) == {"shop", "agency"}
            assert body["mailboxes"]["shop"]["last_imap_error"] is None
            assert body["mailboxes"]["shop"]["problems"] == []
            assert "refused" in body["mailboxes"]["agency"]["last_imap_error"]
            assert [p.split(":")[0] for p in body["problems"]] == ["agency"]
            assert body["problems"][0].startswith("agency: IMAP refused: ")
            # systemd hears READY once every mailbox has tried, naming the failing one: a
            # broken mailbox does not keep the daemon from starting.
            ready = ""
            for _ in range(300):
                with contextlib.suppress(BlockingIOError):
                    ready = sock.recv(4096).decode()
                if "READY=1" in ready:
                    break
                await asyncio.sleep(0.05)
            assert "READY=1" in ready and "failing: agency" in ready, ready
        finally:
            group._request_stop()
            await asyncio.wait_for(task, 30)
            sock.close()
        assert task.exception() is None
        assert agency_smtp.messages == []
        assert [m.rcpt_tos for m in shop_smtp.messages] == [("ann@one.test",)]


async def _get(port: int, path: str) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_mailboxes_file_and_a_single_mailbox_url_are_not_mixed(tmp_path: Path) -> None:
    config = tmp_path / "mailboxes.yaml"
    config.write_text("mailboxes: []\n", encoding="utf-8")
    env = {"MAILBOT_MAILBOXES": str(config), "MAILBOT_IMAP_URL": "imaps://a@b.example/INBOX"}
    with pytest.raises(ConfigError, match="both set"):
        mailbox_settings(load_settings(env), env)
    os.environ.pop("SECRETS", None)


def test_check_and_status_cover_every_mailbox(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "rules.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "agency").mkdir()
    (tmp_path / "agency" / "rules.yaml").write_text(AGENCY_RULES, encoding="utf-8")
    config = tmp_path / "mailboxes.yaml"
    config.write_text(
        "mailboxes:\n"
        "  - {name: shop, imap: 'imaps://s@imap.example/INBOX', smtp: 'smtps://s@smtp.example',"
        " rules: shop/rules.yaml}\n"
        "  - {name: agency, imap: 'imaps://a@imap.example/INBOX', smtp: 'smtps://a@smtp.example',"
        " rules: agency/rules.yaml}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        MAILBOT_MAILBOXES=str(config),
        MAILBOT_TEMPLATES=str(REPO / "templates"),
        MAILBOT_STATE_DIR=str(tmp_path / "state"),
    )

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailbot.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    checked = mailbot("check")
    assert checked.returncode == 0, checked.stderr
    assert "== mailbox shop" in checked.stdout and "== mailbox agency" in checked.stdout
    assert "support:   Byrån Support <support@agency.example>" in checked.stdout
    status = mailbot("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert set(report["mailboxes"]) == {"shop", "agency"}
    assert report["mailboxes"]["agency"]["state_file"].endswith("status.agency.json")

    (tmp_path / "agency" / "rules.yaml").write_text(
        AGENCY_RULES.replace("default_plan: core", "default_plan: gold"), encoding="utf-8"
    )
    broken = mailbot("check")
    assert broken.returncode == 2
    assert "mailboxes.yaml:3: mailbox agency:" in broken.stderr
    assert "gold" in broken.stderr
