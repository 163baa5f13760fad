"""Signed ticket tokens: signing, verification, the three carriers, and the combined finding."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from mailbot.agents.tokens import (
    MAX_ID_DIGITS,
    SIGNATURE_CHARS,
    TokenFinding,
    TokenSigner,
    find_ticket_token,
    footer_line,
    notification_message_id,
    reply_address,
    token_from_address,
    token_from_message_id,
    tokens_in_text,
)

SECRET = b"0123456789abcdef-test-secret"
OTHER_SECRET = b"another-secret-of-enough-length"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


def _signature(token: str) -> str:
    return token.partition("-")[2]


def _flip(char: str) -> str:
    return "a" if char != "a" else "b"


# --- signing and verifying -------------------------------------------------------------------


def test_token_is_id_hyphen_and_base32_signature(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    assert re.fullmatch(rf"1042-[a-z2-7]{{{SIGNATURE_CHARS}}}", token)


def test_signature_is_the_truncated_hmac_of_the_ticket_id(signer: TokenSigner) -> None:
    digest = hmac.new(SECRET, b"mailbot-ticket:1042", hashlib.sha256).digest()
    expected = base64.b32encode(digest).decode().rstrip("=").lower()[:SIGNATURE_CHARS]
    assert signer.sign(1042) == f"1042-{expected}"


def test_signing_is_deterministic_and_depends_on_id_and_key(signer: TokenSigner) -> None:
    assert signer.sign(7) == TokenSigner(SECRET).sign(7)
    assert _signature(signer.sign(7)) != _signature(signer.sign(8))
    assert signer.sign(7) != TokenSigner(OTHER_SECRET).sign(7)


@pytest.mark.parametrize("ticket_id", [1, 42, 1042, 10**MAX_ID_DIGITS - 1])
def test_valid_tokens_verify_in_any_case(signer: TokenSigner, ticket_id: int) -> None:
    token = signer.sign(ticket_id)
    assert signer.verify(token) == ticket_id
    assert signer.verify(token.upper()) == ticket_id
    assert signer.verify(f"  {token}\n") == ticket_id


def test_altered_tokens_do_not_verify(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    ticket, _, signature = token.partition("-")
    for position in range(len(signature)):
        altered = signature[:position] + _flip(signature[position]) + signature[position + 1 :]
        assert signer.verify(f"{ticket}-{altered}") is None
    assert signer.verify(f"1043-{signature}") is None  # a signature cannot move to a ticket
    assert signer.verify(token[:-1]) is None
    assert signer.verify(token + "a") is None
    assert TokenSigner(OTHER_SECRET).verify(token) is None


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "-", "1042", "1042-", "abc-defghijklmnopqrs", "1042_abcdefghijklmnop", "ticket"],
)
def test_garbage_does_not_verify(signer: TokenSigner, garbage: str) -> None:
    assert signer.verify(garbage) is None


def test_non_canonical_ids_do_not_verify(signer: TokenSigner) -> None:
    signature = _signature(signer.sign(1042))
    assert signer.verify(f"01042-{signature}") is None
    fullwidth = "".join(chr(ord(d) - ord("0") + 0xFF10) for d in "1042")
    assert signer.verify(f"{fullwidth}-{signature}") is None


def test_ids_longer_than_twelve_digits_are_rejected(signer: TokenSigner) -> None:
    with pytest.raises(ValueError, match="outside"):
        signer.sign(10**MAX_ID_DIGITS)
    # Whatever the signature, a 13-digit id is never accepted.
    digest = hmac.new(SECRET, b"mailbot-ticket:" + b"1" * 13, hashlib.sha256).digest()
    signature = base64.b32encode(digest).decode().rstrip("=").lower()[:SIGNATURE_CHARS]
    assert signer.verify(f"{'1' * 13}-{signature}") is None


@pytest.mark.parametrize("ticket_id", [0, -1])
def test_non_positive_ids_cannot_be_signed(signer: TokenSigner, ticket_id: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        signer.sign(ticket_id)


def test_non_int_ids_cannot_be_signed(signer: TokenSigner) -> None:
    with pytest.raises(TypeError):
        signer.sign(True)
    with pytest.raises(TypeError):
        signer.sign("1042")  # type: ignore[arg-type]


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        TokenSigner(b"x" * 15)
    TokenSigner(b"x" * 16)


def test_text_secret_is_refused() -> None:
    with pytest.raises(TypeError, match="bytes"):
        TokenSigner("a text secret, long enough")  # type: ignore[arg-type]


def test_repr_does_not_show_the_secret(signer: TokenSigner) -> None:
    assert SECRET.decode() not in repr(signer)


# --- (a) the plus address ---------------------------------------------------------------------


def test_reply_address_carries_the_token(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    address = reply_address("Support@Example.COM", 1042, token)
    assert address == f"Support+mb-{token}@example.com"
    assert token_from_address(address) == token


def test_reply_address_refuses_a_tagged_support_address(signer: TokenSigner) -> None:
    with pytest.raises(ValueError, match=r"must not contain \+"):
        reply_address("support+help@example.com", 1042, signer.sign(1042))


@pytest.mark.parametrize("support", ["support", "@example.com", "support@", "sup port@example.com"])
def test_reply_address_refuses_what_is_no_address(signer: TokenSigner, support: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        reply_address(support, 1042, signer.sign(1042))


def test_carriers_refuse_a_token_of_another_ticket(signer: TokenSigner) -> None:
    with pytest.raises(ValueError, match="not for ticket 1042"):
        reply_address("support@example.com", 1042, signer.sign(7))
    with pytest.raises(ValueError, match="not for ticket 1042"):
        notification_message_id("example.com", 1042, signer.sign(7))
    with pytest.raises(ValueError, match="not a ticket token"):
        footer_line("1042")


def test_token_is_found_in_any_form_of_the_address(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    address = reply_address("support@x.org", 1042, token)
    assert token_from_address(f'"Support" <{address}>') == token
    assert token_from_address(address.upper()) == token
    assert token_from_address(f"<{address}>, other@example.com") == token


@pytest.mark.parametrize(
    "address", ["support@example.com", "support+sales@example.com", "mb-1042-x@example.com", ""]
)
def test_addresses_without_the_tag_have_no_token(address: str) -> None:
    assert token_from_address(address) is None


def test_a_damaged_tag_is_still_a_candidate() -> None:
    assert token_from_address("support+mb-1042-abc@example.com") == "1042-abc"


# --- (b) the Message-ID ------------------------------------------------------------------------


def test_message_id_carries_the_token_and_is_unique(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    first = notification_message_id("Example.com", 1042, token)
    second = notification_message_id("example.com", 1042, token)
    assert first != second
    assert re.fullmatch(rf"<mb\.1042\.{_signature(token)}\.[0-9a-f]{{16}}@example\.com>", first)
    assert token_from_message_id(first) == token


def test_message_id_nonce_is_used_and_checked(signer: TokenSigner) -> None:
    token = signer.sign(5)
    assert notification_message_id("example.com", 5, token, nonce="beef") == (
        f"<mb.5.{_signature(token)}.beef@example.com>"
    )
    with pytest.raises(ValueError, match="hex"):
        notification_message_id("example.com", 5, token, nonce="not hex")
    with pytest.raises(ValueError, match="domain"):
        notification_message_id("bad domain", 5, token)


def test_token_is_read_from_message_ids_in_any_form(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    mid = notification_message_id("example.com", 1042, token)
    assert token_from_message_id(mid.strip("<>")) == token
    assert token_from_message_id(mid.upper()) == token
    assert token_from_message_id(f"  {mid} ") == token


@pytest.mark.parametrize(
    "message_id",
    ["<abc.1042@example.com>", "<xmb.1042.abc.ff@example.com>", "<mb.x.abc.ff@example.com>", ""],
)
def test_other_message_ids_have_no_token(message_id: str) -> None:
    assert token_from_message_id(message_id) is None


# --- (c) the footer line -----------------------------------------------------------------------


def test_footer_line_round_trip(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    assert footer_line(token) == f"[ref:mb-{token}]"
    assert footer_line(token.upper()) == f"[ref:mb-{token}]"
    assert tokens_in_text(f"Hello\n\n{footer_line(token)}\n") == (token,)


def test_footer_is_found_in_quoted_text(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    text = f"Done.\n\nOn Mon, Anna wrote:\n> > Hello\n> > {footer_line(token)}\n> > \n"
    assert tokens_in_text(text) == (token,)


def test_footer_is_found_wherever_a_client_broke_the_line(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    footer = footer_line(token)
    for cut in range(1, len(footer)):
        text = f"Hi\n> {footer[:cut]}\n> {footer[cut:]}\n> more quoted text"
        assert tokens_in_text(text) == (token,), footer[:cut]


def test_footer_is_found_when_wrapped_in_angle_brackets(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    linked = f"[ref:mb-{token}<ref:mb-{token}>]"  # a client that took ref: for a link
    assert tokens_in_text(f"> {linked}") == (token,)
    assert tokens_in_text(f"<ref:mb-{token.upper()}>") == (token,)


def test_several_footers_are_listed_in_order_without_repeats(signer: TokenSigner) -> None:
    first, second = signer.sign(1), signer.sign(2)
    text = f"{footer_line(second)}\n> {footer_line(first)}\n> > {footer_line(second)}"
    assert tokens_in_text(text) == (second, first)


@pytest.mark.parametrize(
    "text", ["", "No token here.", "ref: see ticket 1042", "[ref:mb-] broken", "mb-1042-abc"]
)
def test_text_without_footer_has_no_token(text: str) -> None:
    assert tokens_in_text(text) == ()


# --- the finding --------------------------------------------------------------------------------


def test_all_carriers_agree(signer: TokenSigner) -> None:
    token = signer.sign(1042)
    mid = notification_message_id("example.com", 1042, token)
    finding = find_ticket_token(
        signer,
        recipients=["customer@example.org", reply_address("support@example.com", 1042, token)],
        ids=[("In-Reply-To", mid), ("References", "<other@example.org>"), ("References", mid)],
        text=f"Fixed.\n\n> {footer_line(token)}",
    )
    assert finding == TokenFinding(
        ticket_id=1042,
        carriers=("reply-to address", "In-Reply-To", "References", "body"),
        invalid=(),
        conflict=False,
        tickets=(1042,),
    )


def test_one_carrier_suffices(signer: TokenSigner) -> None:
    token = signer.sign(77)
    finding = find_ticket_token(signer, recipients=[], ids=[], text=footer_line(token))
    assert (finding.ticket_id, finding.carriers) == (77, ("body",))


def test_no_token_at_all(signer: TokenSigner) -> None:
    finding = find_ticket_token(
        signer,
        recipients=["support@example.com"],
        ids=[("In-Reply-To", "<x@example.org>")],
        text="Hello",
    )
    assert finding == TokenFinding(ticket_id=None)


def test_invalid_tokens_are_reported(signer: TokenSigner) -> None:
    forged = TokenSigner(OTHER_SECRET).sign(1042)
    finding = find_ticket_token(
        signer,
        recipients=[f"support+mb-{forged}@example.com"],
        ids=[],
        text=footer_line(forged),
    )
    assert finding.ticket_id is None
    assert finding.invalid == (forged,)
    assert finding.carriers == ()
    assert not finding.conflict


def test_valid_token_wins_over_an_outdated_one(signer: TokenSigner) -> None:
    old = TokenSigner(OTHER_SECRET).sign(1042)
    token = signer.sign(1042)
    finding = find_ticket_token(
        signer,
        recipients=[],
        ids=[("In-Reply-To", f"<mb.1042.{_signature(old)}.ab@example.com>")],
        text=footer_line(token),
    )
    assert (finding.ticket_id, finding.carriers, finding.invalid) == (1042, ("body",), (old,))


def test_tokens_of_two_tickets_conflict(signer: TokenSigner) -> None:
    finding = find_ticket_token(
        signer,
        recipients=[reply_address("support@example.com", 1, signer.sign(1))],
        ids=[],
        text=footer_line(signer.sign(2)),
    )
    assert finding.ticket_id is None
    assert finding.conflict
    assert finding.tickets == (1, 2)
    assert finding.carriers == ("reply-to address", "body")


def test_raw_header_values_with_several_entries(signer: TokenSigner) -> None:
    one, two = signer.sign(1), signer.sign(2)
    references = (
        f"<a@example.org>\r\n <mb.1.{_signature(one)}.ff@example.com> "
        f"<mb.1.{_signature(one)}.aa@example.com>"
    )
    finding = find_ticket_token(
        signer,
        recipients=[f"x@example.org, Support <support+mb-{two}@example.com>"],
        ids=[("References", references)],
        text="",
    )
    assert finding.conflict
    assert finding.tickets == (2, 1)
    assert finding.carriers == ("reply-to address", "References")
