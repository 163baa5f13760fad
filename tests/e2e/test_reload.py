"""Hot reload of rules.yaml and the templates on real servers: SIGHUP to the running daemon, a
broken file that keeps the old rules (and shows in ``mailbot status``), and reload under load:
mail keeps flowing while rules.yaml is replaced 100 times, half of them with broken files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailbot import commands
from mailbot.agents.tokens import TokenSigner
from mailbot.clock import SystemClock
from mailbot.daemon import Daemon
from mailbot.domain import Disposition
from mailbot.ingest import pipeline
from mailbot.ingest.pipeline import Intake
from mailbot.policy import Policy, content_version, load_policy
from mailbot.reload import ReloadOutcome
from mailbot.status import read_status
from mailbot.tickets.models import Direction, MessageState, Ticket
from mailbot.tickets.models import Message as MessageRow
from mailbot.tickets.service import Origin
from tests.e2e.conftest import REPO, RULES, make_settings
from tests.e2e.test_spine import append, mail

ANNA_PRO = "{match: anna@butiken.se, plan: pro,"
ANNA_ULTIMATE = "{match: anna@butiken.se, plan: ultimate,"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def write_atomically(path: Path, text: str) -> None:
    """How deploy tools replace a file: a new inode renamed over the old name."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """The shipped templates, copied: the daemon watches them, the test edits them."""
    return Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))


def settings_for(
    imap_server: Any, smtp_sink: Any, rules_file: Path, database: str, templates: Path
) -> Any:
    return make_settings(
        imap_server,
        smtp_sink,
        rules_file,
        database,
        MAILBOT_TEMPLATES=str(templates),
        MAILBOT_STATE_DIR=str(rules_file.parent / "state"),
    )


async def stored(message_id: str) -> MessageRow:
    return await MessageRow.get(message_id=message_id, direction=Direction.IN)


async def test_sighup_to_the_running_daemon_reloads_and_the_next_message_uses_new_rules(
    imap_server: Any, smtp_sink: Any, rules_file: Path, database: str, templates: Path
) -> None:
    settings = settings_for(imap_server, smtp_sink, rules_file, database, templates)
    old = load_policy(rules_file, templates)
    status_file = settings.state_dir / "status.json"
    daemon = Daemon(settings, old, status_file=status_file)
    daemon.reload_poll_seconds = 3600.0  # here only the signal may reload
    reloaded = asyncio.Event()
    report = daemon.reloader.on_outcome

    def on_outcome(outcome: ReloadOutcome) -> None:
        report(outcome)
        reloaded.set()

    daemon.reloader.on_outcome = on_outcome
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        write_atomically(rules_file, RULES.replace(ANNA_PRO, ANNA_ULTIMATE))
        os.kill(os.getpid(), signal.SIGHUP)  # what `systemctl reload` does
        await asyncio.wait_for(reloaded.wait(), 30)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(running, 30)
    outcome = daemon.reloader.last
    assert outcome is not None
    assert (outcome.trigger, outcome.ok, outcome.changed) == ("SIGHUP", True, True)
    new = daemon.policy
    assert new.version == outcome.version == content_version([rules_file], templates)
    assert new.version != old.version and daemon.intake.policy is new
    assert new.loaded_at is not None and old.loaded_at is not None
    assert new.loaded_at > old.loaded_at

    anna_id, anna = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte alls.")
    await append(imap_server, anna)
    assert (await daemon.run_once()).ingested[Disposition.STORED] == 1
    row = await stored(anna_id)
    assert row.rules_version == new.version
    ticket = await Ticket.get(customer="anna@butiken.se")
    assert ticket.plan == "ultimate"  # "pro" before the reload

    state = read_status(status_file)
    assert state is not None and state["pid"] == os.getpid() and state["stopped"]
    assert state["rules"]["version"] == new.version
    assert state["last_reload"]["trigger"] == "SIGHUP" and state["last_reload"]["ok"]
    assert state["imap"]["last_sync"] is not None
    assert state["parsing"]["workers"] == settings.parse_workers


async def test_a_message_in_hand_keeps_the_ruleset_it_started_with(
    rules_file: Path, database: str, templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap in the middle of a message (here: just before its row is written) does not
    reach it; the next message is decided under the new rules."""
    old = load_policy(rules_file, templates)
    write_atomically(rules_file, RULES.replace(ANNA_PRO, ANNA_ULTIMATE))
    new = load_policy(rules_file, templates)
    intake = Intake(old, SystemClock(), signer=TokenSigner(b"e2e-test-token-key-0123456789"))
    real = pipeline.apply_inbound
    seen: list[Policy] = []

    async def swap_then_store(*args: Any, **kwargs: Any) -> Any:
        intake.policy = new  # what RulesReloader.swap does, between two awaits
        seen.append(intake.policy)
        return await real(*args, **kwargs)

    first_id, first = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "apply_inbound", swap_then_store)
        outcome = await intake.accept(first, Origin(label="test"))
    assert outcome.disposition is Disposition.STORED
    assert seen == [old]
    assert (await stored(first_id)).rules_version == old.version
    assert (await Ticket.get(id=outcome.ticket_id)).plan == "pro"

    second_id, second = mail("Anna <anna@butiken.se>", "Kvitto", "Kvittot saknas.")
    again = await intake.accept(second, Origin(label="test"))
    assert (await stored(second_id)).rules_version == new.version
    assert (await Ticket.get(id=again.ticket_id)).plan == "ultimate"


async def test_a_broken_file_keeps_the_old_rules_logs_one_error_and_shows_in_status(
    imap_server: Any,
    smtp_sink: Any,
    rules_file: Path,
    database: str,
    templates: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(imap_server, smtp_sink, rules_file, database, templates)
    good = load_policy(rules_file, templates)
    daemon = Daemon(settings, good, status_file=settings.state_dir / "status.json")
    broken = RULES.replace(ANNA_PRO, "{match: anna@butiken.se, plan: prp,")
    write_atomically(rules_file, broken)
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "plan: prp" in text)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        outcome = await daemon.reloader.check()  # the daemon's file-change poll
        assert await daemon.reloader.check() is None  # not tried (nor logged) again
    assert outcome is not None and not outcome.ok
    assert daemon.policy is good and daemon.intake.policy is good
    assert outcome.error is not None
    assert outcome.error.startswith(f"{rules_file}:{line}:")
    assert "customers[0].plan: unknown plan 'prp'" in outcome.error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"{rules_file}:{line}:" in errors[0].getMessage()
    assert "keeping version " + good.version in errors[0].getMessage()

    # The old rules still decide.
    anna_id, anna = mail("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.")
    await append(imap_server, anna)
    await daemon.run_once()
    assert (await stored(anna_id)).rules_version == good.version
    assert (await Ticket.get(customer="anna@butiken.se")).plan == "pro"

    # mailbot status (last: it opens and closes the database itself).
    capsys.readouterr()
    assert await commands.status(settings, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["daemon"]["running"] is True and report["daemon"]["pid"] == os.getpid()
    assert report["rules"]["version"] == good.version
    assert report["rules"]["on_disk"] == content_version([rules_file], templates)
    assert report["last_reload"]["ok"] is False
    assert report["last_reload"]["error"] == outcome.error
    assert report["reloads"] == {"ok": 0, "failed": 1}
    assert report["database"]["open_tickets"] == 1
    assert await commands.status(settings, as_json=False) == 0
    text = capsys.readouterr().out
    assert f"running, pid {os.getpid()}" in text
    assert f"FAILED, kept version {good.version}" in text
    assert f"{rules_file}:{line}:" in text
    assert "(not loaded)" in text  # the broken file on disk is not what runs
    assert "tickets:     1 open" in text


# Reload under load ---------------------------------------------------------------------------

RELOADS = 100
BURST = 4
LOAD_DOMAIN = "load.test"
PLANS = ("core", "pro", "ultimate")
_CUSTOMERS = "customers:\n"


def valid_rules(i: int) -> tuple[str, str]:
    """Variant ``i``: mail from @load.test gets plan PLANS[i % 3]."""
    plan = PLANS[i % 3]
    entry = f'  - {{match: "@{LOAD_DOMAIN}", plan: {plan}}}\n'
    return RULES.replace(_CUSTOMERS, _CUSTOMERS + entry, 1) + f"# variant {i}\n", plan


def invalid_rules(i: int) -> str:
    """Five kinds of mistakes, in turn: reference, syntax, unknown key, empty, wrong type."""
    kind = (i // 2) % 5
    mark = f"# broken {i}\n"
    if kind == 0:
        return valid_rules(i)[0].replace(f"plan: {PLANS[i % 3]}}}", "plan: prp}", 1) + mark
    if kind == 1:
        return RULES + mark + "plans_extra: [1, 2\n"
    if kind == 2:
        return RULES + mark + "reminders_typo: true\n"
    if kind == 3:
        return mark
    return RULES.replace("{hours: 4}", "{hours: soon}") + mark


async def test_reload_under_load_loses_nothing_and_each_message_has_one_valid_version(
    imap_server: Any, smtp_sink: Any, rules_file: Path, database: str, templates: Path
) -> None:
    settings = settings_for(imap_server, smtp_sink, rules_file, database, templates)
    daemon = Daemon(settings, load_policy(rules_file, templates))
    plan_of = {daemon.policy.version: "core"}  # before: @load.test is a stranger (default)
    outcomes: list[ReloadOutcome] = []
    appended: list[str] = []
    done = asyncio.Event()
    ack = templates / "en" / "ack.txt.j2"
    ack_text = read(ack)

    async def replace_rules() -> None:
        try:
            for i in range(RELOADS):
                if i % 2 == 0:
                    text, plan = valid_rules(i)
                    if i % 20 == 0:  # now and then a template changes too
                        write_atomically(ack, ack_text + f"{{# variant {i} #}}\n")
                    write_atomically(rules_file, text)
                    plan_of[content_version([rules_file], templates)] = plan
                else:
                    write_atomically(rules_file, invalid_rules(i))
                # Both ways in: the file-change poll and the SIGHUP handler's reload.
                outcome = (
                    await daemon.reloader.check()
                    if i % 3
                    else await daemon.reloader.reload("SIGHUP")
                )
                assert outcome is not None, i
                outcomes.append(outcome)
                await asyncio.sleep(0)
        finally:
            done.set()

    async def deliver_mail() -> None:
        n = 0
        while not done.is_set():
            burst = [
                mail(
                    f"Customer {k} <c{k}@{LOAD_DOMAIN}>",
                    f"Order {k} cannot be paid",
                    "The checkout fails with an error when our customers pay. Please help.",
                )
                for k in range(n, n + BURST)
            ]
            n += BURST
            await append(imap_server, *(raw for _, raw in burst))
            appended.extend(message_id for message_id, _ in burst)
            await daemon.run_once()
        await daemon.run_once()  # what arrived during the last reload

    started = time.perf_counter()
    await asyncio.gather(replace_rules(), deliver_mail())
    elapsed = time.perf_counter() - started

    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    assert len(ok) == len(failed) == RELOADS // 2
    assert all(o.changed for o in ok)
    for outcome in failed:
        assert outcome.error is not None
        assert re.match(rf"{re.escape(str(rules_file))}:\d+:\d+: ", outcome.error), outcome.error
    valid_versions = set(plan_of)
    assert {o.version for o in ok} <= valid_versions  # loaded exactly what was written

    rows = await MessageRow.filter(direction=Direction.IN).values(
        "message_id", "state", "rules_version", "ticket_id"
    )
    per_id = Counter(row["message_id"] for row in rows)
    assert set(per_id) == set(appended) and set(per_id.values()) == {1}  # nothing lost, once
    assert all(row["state"] == MessageState.STORED for row in rows)
    versions = Counter(row["rules_version"] for row in rows)
    assert set(versions) <= valid_versions, set(versions) - valid_versions
    # One consistent ruleset per message: its ticket's plan is its version's plan.
    plans = dict(await Ticket.all().values_list("id", "plan"))
    wrong = [r for r in rows if plans[r["ticket_id"]] != plan_of[r["rules_version"]]]
    assert not wrong
    assert len(versions) >= 2  # mail really flowed across reloads
    print(
        f"\nreload under load ({imap_server.kind}): {len(rows)} messages in "
        f"{len(appended) // BURST} bursts, {len(ok)} reloads ok, {len(failed)} failed, "
        f"{len(versions)} versions decided mail, {elapsed:.1f} s"
    )


def test_status_without_a_daemon_or_a_database_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailbot.cli import main

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(rules))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "not running (no state file" in text
    assert "no database yet" in text
    assert "on disk: version " + content_version([rules], REPO / "templates") in text

    # A state file left by a daemon that stopped.
    state = tmp_path / "state" / "status.json"
    state.parent.mkdir()
    state.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "started": "2026-11-23T10:00:00+00:00",
                "stopped": "2026-11-23T11:00:00+00:00",
                "rules": {"version": "0123456789ab", "loaded_at": "2026-11-23T10:00:00+00:00"},
                "last_reload": None,
            }
        ),
        encoding="utf-8",
    )
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["daemon"]["running"] is False
    assert report["rules"]["version"] == "0123456789ab"
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "not running (last: pid" in text and "stopped 2026-11-23T11:00:00+00:00" in text
