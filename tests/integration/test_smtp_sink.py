"""The SMTP sink seen from a real client (aiosmtplib): delivery, fault injection, TLS, AUTH."""

from __future__ import annotations

import ssl
import time

import aiosmtplib
import pytest

from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.endpoints import Security

RAW = (
    b"From: support@example.com\r\nTo: anna@example.se\r\nSubject: Re: kassan\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Hej Anna, vi tittar på det.\r\n.leading dot\r\n".encode()
)


def client(sink: SmtpSink, **kwargs: object) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=10, **kwargs)  # type: ignore[arg-type]


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_delivers_exact_bytes_with_envelope(smtp_sink: SmtpSink) -> None:
    before = time.monotonic()
    async with client(smtp_sink) as smtp:
        errors, _ = await smtp.sendmail("bot@example.com", ["anna@example.se", "b@x.it"], RAW)
    assert errors == {}
    [message] = await smtp_sink.wait_for(1, timeout=5)
    assert message.raw == RAW  # dot-stuffing undone, 8-bit intact
    assert message.mail_from == "bot@example.com"
    assert message.rcpt_tos == ("anna@example.se", "b@x.it")
    assert before <= message.arrived <= time.monotonic()
    assert not message.tls
    assert smtp_sink.url == f"smtp+plain://127.0.0.1:{smtp_sink.port}"


async def test_recipient_faults_are_visible_to_the_client(smtp_sink: SmtpSink) -> None:
    async with client(smtp_sink) as smtp:
        errors, _ = await smtp.sendmail(
            "bot@example.com", ["ok@example.com", "reject-me@example.com"], RAW
        )
        assert errors["reject-me@example.com"].code == 550
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await smtp.sendmail("bot@example.com", ["tempfail@example.com"], RAW)
        assert [r.code for r in refused.value.recipients] == [451]
    [message] = await smtp_sink.wait_for(1, timeout=5)
    assert message.rcpt_tos == ("ok@example.com",)


@pytest.mark.parametrize("code", [451, 421])
async def test_data_failures_for_the_next_messages(smtp_sink: SmtpSink, code: int) -> None:
    smtp_sink.fail_next_data(2, code)
    for _ in range(2):
        async with client(smtp_sink) as smtp:
            with pytest.raises(aiosmtplib.SMTPResponseException) as failed:
                await smtp.sendmail("bot@example.com", ["a@example.com"], RAW)
            assert failed.value.code == code
    async with client(smtp_sink) as smtp:
        await smtp.sendmail("bot@example.com", ["a@example.com"], RAW)
    await smtp_sink.wait_for(1, timeout=5)
    assert smtp_sink.data_attempts == 3
    assert len(smtp_sink.messages) == 1


async def test_wait_for_times_out_saying_how_many_arrived(smtp_sink: SmtpSink) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await smtp_sink.wait_for(1, timeout=0.2)


async def test_starttls_is_required_and_works() -> None:
    async with running_smtp_sink(security=Security.STARTTLS) as sink:
        assert sink.url.startswith("smtp://")
        async with client(sink, start_tls=False) as plain:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await plain.sendmail("bot@example.com", ["a@example.com"], RAW)
            assert refused.value.code == 530
        async with client(sink, start_tls=True, tls_context=no_verify()) as smtp:
            await smtp.sendmail("bot@example.com", ["a@example.com"], RAW)
        [message] = await sink.wait_for(1, timeout=5)
        assert message.tls and message.raw == RAW
        assert not sink.endpoint().verify_tls


async def test_implicit_tls_and_auth() -> None:
    async with running_smtp_sink(security=Security.TLS, credentials=("bot", "s3cret")) as sink:
        async with client(sink, use_tls=True, tls_context=no_verify()) as anonymous:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await anonymous.sendmail("bot@example.com", ["a@example.com"], RAW)
            assert refused.value.code == 530
        async with client(sink, use_tls=True, tls_context=no_verify()) as wrong:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await wrong.login("bot", "nope")
        endpoint = sink.endpoint()
        assert endpoint.user == "bot" and endpoint.password == "s3cret"
        async with client(
            sink, use_tls=True, tls_context=no_verify(), username="bot", password="s3cret"
        ) as smtp:
            await smtp.sendmail("bot@example.com", ["a@example.com"], RAW)
        [message] = await sink.wait_for(1, timeout=5)
        assert message.tls and message.auth_user == "bot"
