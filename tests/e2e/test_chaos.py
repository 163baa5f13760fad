"""Never lose, never loop: the real daemon, SIGKILLed at random moments while it works.

The harness is ``bench/chaos.py`` (the benchmark runs it with 400 messages and 40 kills); here
60 messages and 6 kills with a fixed seed, on every IMAP server the ``imap_server`` fixture
offers. The daemon is a separate process (``python -m mailbot.cli run``, a SQLite file under
``tmp_path``, whose ``logs/`` keep every daemon's log), the IMAP server and the SMTP sink
survive the kills. After the last kill: ``mailbot run --once``, a drain of the rows the kills
left in ``sending`` (mailbot's OutboxSender with a clock past its claim timeout), a last clean
``run --once``; then every invariant below is checked against the database, the SMTP sink and
the IMAP server.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType

from mailbot.devservers.smtp_sink import SmtpSink
from tests.servers import ImapTestServer

REPO = Path(__file__).resolve().parents[2]
SEED = 20261122  # four kills timed at the daemon's work, two after "mailbot running"
MESSAGES, KILLS = 60, 6


def _load_chaos() -> ModuleType:
    name = "mailbot_bench_chaos"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look the module up while being built
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


async def test_sigkilled_daemon_loses_nothing_and_duplicates_only_mail_in_flight(
    imap_server: ImapTestServer, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    config = chaos.ChaosConfig(messages=MESSAGES, kills=KILLS, seed=SEED)
    target = chaos.ImapTarget(
        kind=imap_server.kind,
        host=imap_server.host,
        port=imap_server.port,
        user=imap_server.user,
        password=imap_server.password,
    )
    report = await chaos.run_chaos(config, target, smtp_sink, tmp_path)
    figures = "\n".join(report.lines(per_kill=True)) + f"\nlogs: {tmp_path / 'logs'}"

    # The chaos was real: every daemon died of our SIGKILL, and kills caught it at work.
    assert [k.exit_code for k in report.kills] == [-signal.SIGKILL] * KILLS, figures
    assert report.unexpected_exits == [], figures
    assert any(k.where in {"send", "commit-ack", "busy"} for k in report.kills), figures

    # Every appended message stored exactly once, none quarantined.
    assert report.appended == MESSAGES, figures
    assert report.lost == [], figures
    assert report.db_duplicates == {}, figures
    assert report.unexpected_inbound == [], figures
    assert report.quarantined == [], figures
    # Each request on a ticket of its own, each reply on its parent's, auto-replies on none.
    assert report.misthreaded == [], figures
    assert report.tickets == report.expected["new"] > 0, figures
    # Every message acknowledged on the IMAP server.
    assert report.imap_total == MESSAGES, figures
    assert report.imap_unacked == [], figures

    # Every outbox row sent (none queued, sending or failed) and received by the sink.
    assert report.not_sent == [], figures
    assert report.undelivered == [], figures
    assert report.unknown_at_sink == [], figures
    # Each ticket has exactly one acknowledgement (ack or wiki), delivered to its customer;
    # notifications to agents are rows of their own.
    assert report.acks_missing == [] and report.acks_extra == [], figures
    acks = sum(n for (kind, _), n in report.outbox.items() if kind in chaos.ACK_KINDS)
    assert acks == report.tickets, figures
    notifications = sum(n for (kind, _), n in report.outbox.items() if kind == chaos.NOTIFY_KIND)
    assert notifications > 0, figures

    # Duplicates at the sink: only rows a kill left in 'sending' (killed between the SMTP
    # server's 250 and the commit of 'sent'), so at most one per kill during a send.
    assert report.unexplained_duplicates == [], figures
    assert report.duplicate_deliveries <= report.kills_during_send, figures
    # The last clean run found nothing left to do.
    assert report.clean_pass_changes == [], figures
    assert report.failures() == [], figures
