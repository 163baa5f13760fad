"""The command line as an operator uses it: main(argv) with settings from the environment."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.cli import EXIT_CONFIG, main
from tests.e2e.conftest import REPO, RULES


def eml(sender: str, subject: str, body: str, msg_id: str, in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = msg_id
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(rules))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_new_request_writes_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = env / "anna.eml"
    path.write_bytes(
        eml("Anna <anna@butiken.se>", "Kassan fungerar inte", "Kassan ger fel.", "<a1@butiken.se>")
    )
    result = run_json(capsys, "simulate", str(path), "--json", "--at", "2026-11-23T10:00+01:00")
    assert isinstance(result, dict)
    assert result["message_id"] == "<a1@butiken.se>"
    assert result["from"] == "anna@butiken.se"
    assert result["plan"] == "pro"
    assert result["auto_generated"] is False and result["auto_generated_reason"] is None
    assert result["bounce"] is False
    assert result["text"].strip() == "Kassan ger fel."
    assert result["ticket"] == {
        "action": "new",
        "ref": None,
        "linked": None,
        "reason": "no known reference or token",
    }
    reply = result["reply"]
    assert reply["template"] == "ack" and reply["to"] == "anna@butiken.se"
    assert "[#NEW]" in reply["subject"] and "#NEW" in reply["body"]
    assert not (env / "state" / "mailbot.sqlite3").exists()


def test_simulate_auto_reply_and_unparseable(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ooo = env / "ooo.eml"
    raw = eml("Bob <bob@example.org>", "Out of office", "Away.", "<o1@example.org>")
    ooo.write_bytes(raw.replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1))
    result = run_json(capsys, "simulate", str(ooo), "--json")
    assert isinstance(result, dict)
    assert result["auto_generated"] is True
    assert "Auto-Submitted" in result["auto_generated_reason"]
    assert result["ticket"]["action"] == "none" and result["reply"] is None
    broken = env / "broken.eml"
    broken.write_bytes(b"")
    result = run_json(capsys, "simulate", str(broken), "--json")
    assert isinstance(result, dict) and result["quarantine"] is True


def test_import_then_tickets_then_simulate_against_the_live_database(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = mailbox.mbox(env / "old.mbox")
    box.add(eml("Anna <anna@butiken.se>", "Kassan", "Kassan ger fel.", "<a1@butiken.se>"))
    box.add(
        eml(
            "Anna <anna@butiken.se>",
            "Re: Kassan",
            "Mer info.",
            "<a2@butiken.se>",
            "<a1@butiken.se>",
        )
    )
    box.flush()
    maildir = mailbox.Maildir(env / "Maildir", create=True)
    maildir.add(eml("John <john@example.org>", "Invoice question", "Where is it?", "<j1@x.org>"))
    single = env / "one.eml"
    single.write_bytes(eml("Mario <mario@negozio.it>", "Errore", "Non va.", "<m1@negozio.it>"))
    capsys.readouterr()
    assert (
        main(["import", str(env / "old.mbox"), str(env / "Maildir"), str(single), "--no-send"]) == 0
    )
    assert "stored 4" in capsys.readouterr().out
    # Importing the same mail again stores nothing twice.
    assert main(["import", str(env / "old.mbox"), "--no-send"]) == 0
    assert "duplicate 2" in capsys.readouterr().out

    tickets = run_json(capsys, "tickets", "--json")
    assert isinstance(tickets, list) and len(tickets) == 3
    for key in (
        "ref",
        "status",
        "plan",
        "customer",
        "subject",
        "created",
        "deadline",
        "message_ids",
    ):
        assert all(key in ticket for ticket in tickets)
    anna = next(t for t in tickets if t["customer"] == "anna@butiken.se")
    assert anna["message_ids"] == ["<a1@butiken.se>", "<a2@butiken.se>"]
    assert anna["plan"] == "pro" and anna["ref"].startswith("#")

    follow = env / "follow.eml"
    follow.write_bytes(
        eml(
            "Anna <anna@butiken.se>",
            "Re: Kassan",
            "Ännu mer.",
            "<a3@butiken.se>",
            "<a2@butiken.se>",
        )
    )
    result = run_json(capsys, "simulate", str(follow), "--json")
    assert isinstance(result, dict)
    assert result["ticket"]["action"] == "append" and result["ticket"]["ref"] == anna["ref"]
    assert result["reply"] is None
    after = run_json(capsys, "tickets", "--json")
    assert isinstance(after, list) and len(after) == 3  # simulate wrote nothing


@pytest.mark.parametrize("workers", ["0", "1"])
def test_import_goes_in_batches_parsed_ahead(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    monkeypatch.setenv("MAILBOT_PARSE_WORKERS", workers)
    monkeypatch.setenv("MAILBOT_BATCH", "8")  # 20 messages: batches of 8, 8 and 4
    box = mailbox.mbox(env / "archive.mbox")
    for n in range(20):
        if n == 9:
            box.add(b"\x01\x02 not mail at all\n")  # unparseable: quarantined, kept
        else:
            box.add(eml(f"C{n} <c{n}@example.org>", f"Problem {n}", "It fails.", f"<p{n}@x.org>"))
    box.flush()
    capsys.readouterr()
    assert main(["import", str(env / "archive.mbox"), "--no-send"]) == 0
    assert "stored 19, duplicate 0, quarantined 1" in capsys.readouterr().out
    assert main(["import", str(env / "archive.mbox"), "--no-send"]) == 0
    assert "stored 0, duplicate 20, quarantined 0" in capsys.readouterr().out
    tickets = run_json(capsys, "tickets", "--json")
    assert isinstance(tickets, list) and len(tickets) == 19
    assert {t["subject"] for t in tickets} == {f"Problem {n}" for n in range(20) if n != 9}


def test_quarantine_lists_and_retries(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = env / "bad.eml"
    bad.write_bytes(b"\x01\x02 not mail\r\n")
    assert main(["import", str(bad), "--no-send"]) == 0
    assert "quarantined 1" in capsys.readouterr().out
    assert main(["quarantine"]) == 0
    listing = capsys.readouterr().out
    assert "file:" in listing and "unparseable" in listing
    assert main(["quarantine", "--retry-all"]) == 0
    assert "quarantined" in capsys.readouterr().out  # still unparseable, still kept
    assert main(["quarantine"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # one entry, not two


def test_check_reports_bad_rules_with_file_line_and_field(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 0
    assert "OK" in capsys.readouterr().out
    rules = env / "rules.yaml"
    rules.write_text(RULES.replace("plan: pro", "plan: prp"), encoding="utf-8")
    assert main(["check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{rules}:" in err and "customers[0].plan" in err and "pro" in err


def test_run_without_servers_is_a_config_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--once"]) == EXIT_CONFIG
    assert "MAILBOT_IMAP_URL" in capsys.readouterr().err


def test_plain_text_to_a_remote_host_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--imap", "imap+plain://u@mail.example.com/INBOX", "check"])
    assert code == EXIT_CONFIG
    assert "loopback" in capsys.readouterr().err


def test_hostile_field_lengths_are_stored_not_lost(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_name = "N" * 300
    long_id = "<" + "x" * 1200 + "@example.org>"
    path = env / "hostile.eml"
    path.write_bytes(eml(f'"{long_name}" <anna@butiken.se>', "Kassan", "Kassan ger fel.", long_id))
    capsys.readouterr()
    assert main(["import", str(path), "--no-send"]) == 0
    assert "stored 1" in capsys.readouterr().out
    tickets = run_json(capsys, "tickets", "--json")
    assert isinstance(tickets, list) and len(tickets) == 1
    assert tickets[0]["customer_name"] == "N" * 255


def test_simulate_shows_severity_clocks_and_reminders_on_christmas_eve(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped rules: Christmas Eve is closed in Sweden, Ultimate L1 answers in 1 hour."""
    path = env / "outage.eml"
    path.write_bytes(
        eml(
            "Anna Berg <anna.berg@nordicdecor.se>",
            "Sajten ligger nere",
            "Ingen kan handla!",
            "<o@x>",
        )
    )
    shipped = str(REPO / "rules.yaml")
    result = run_json(
        capsys,
        "--rules",
        shipped,
        "simulate",
        str(path),
        "--json",
        "--at",
        "2026-12-24T16:45+01:00",
    )
    assert isinstance(result, dict)
    assert (result["plan"], result["severity"], result["urgent"]) == ("ultimate", "L1", True)
    due = {c["name"]: c["due"] for c in result["clocks"]}
    assert due["first_response"] == "2026-12-24T16:45:00+00:00"  # 1 h around the clock
    assert due["registered"] == "2026-12-24T17:45:00+00:00"  # urgent, office closed: 2 h
    breach = [r for r in result["reminders"] if r["kind"] == "breach"]
    assert {r["to"] for r in breach} == {"teamlead@example.com"}
    assert "inom 1 timme" in result["reply"]["body"]
    assert "24 december 2026 kl. 17:45" in result["reply"]["body"]


def test_tickets_queue_orders_by_plan_priority_then_deadline(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = str(REPO / "rules.yaml")
    mails = [
        ("Core <someone@unknown.example>", "Fråga", "<c@x>"),
        ("Anna Berg <anna.berg@nordicdecor.se>", "Fråga om kassan", "<u@x>"),
        ("Pro <kalle@nordicdecor.se>", "Fråga om frakt", "<p@x>"),
    ]
    for n, (sender, subject, msg_id) in enumerate(mails):
        (env / f"{n}.eml").write_bytes(eml(sender, subject, "Något fungerar inte.", msg_id))
    assert (
        main(
            [
                "--rules",
                shipped,
                "import",
                str(env / "0.eml"),
                str(env / "1.eml"),
                str(env / "2.eml"),
                "--no-send",
            ]
        )
        == 0
    )
    queue = run_json(capsys, "--rules", shipped, "tickets", "--queue", "--json")
    assert isinstance(queue, list)
    assert [t["plan"] for t in queue] == ["ultimate", "pro", "core"]
    assert all(t["clocks"] and t["severity"] for t in queue)


def test_prepaid_topup_balance_and_report(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = env / "rules.yaml"
    rules.write_text(
        RULES + "accounts:\n"
        "  sharespine:\n"
        "    name: Integration Customer AB\n"
        "    time_bank: {prepaid: true, opening_balance: 2h}\n"
        "  monthly:\n"
        "    name: Monthly AB\n"
        "    time_bank: {monthly: 4h}\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["timebank", "topup", "sharespine", "10h", "--note", "order 4711"]) == 0
    assert capsys.readouterr().out.strip() == "sharespine: +10 h, balance 12 h"
    assert main(["timebank", "balance", "sharespine"]) == 0
    assert capsys.readouterr().out.strip() == "sharespine: 12 h left"
    # Only prepaid accounts can be topped up; a typo is a configuration error (exit 2).
    assert main(["timebank", "topup", "monthly", "1h"]) == 2
    assert "prepaid accounts: sharespine" in capsys.readouterr().err
    assert main(["timebank", "topup", "sharespine", "ten hours"]) == 2
    capsys.readouterr()
    assert main(["report", "timebank", "--period", "2026-13"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err

    now = datetime.now(UTC)
    assert main(["report", "timebank", "--period", f"{now:%Y-%m}", "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("account,name,bank,worked_minutes,billed_minutes")
    by_account = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    header = lines[0].split(",")
    prepaid = dict(zip(header, by_account["sharespine"], strict=True))
    assert prepaid["bank"] == "prepaid" and prepaid["allotment_minutes"] == "600"
    assert prepaid["balance_minutes"] == "720"
    monthly = dict(zip(header, by_account["monthly"], strict=True))
    assert monthly["allotment_minutes"] == "240" and monthly["used_minutes"] == "0"
    assert main(["report", "sla", "--period", f"{now:%Y-%m}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
