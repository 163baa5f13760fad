"""RFC 8601 Authentication-Results: parsing real-world values and the trust decision."""

from __future__ import annotations

import pytest

from mailbot.agents.authres import (
    AuthResults,
    AuthVerdict,
    MethodResult,
    authenticated,
    parse_authentication_results,
)

# As Gmail writes it (folded, comments, header.i instead of header.d).
GMAIL = (
    "mx.google.com;\r\n"
    "       dkim=pass header.i=@example.com header.s=20230601 header.b=Ab+9/xYz;\r\n"
    "       spf=pass (google.com: domain of anna@example.com designates 1.2.3.4 as permitted"
    " sender) smtp.mailfrom=anna@example.com;\r\n"
    "       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com"
)
# As Exchange Online writes it (no space after some ';', bare action=, reason=).
MICROSOFT = (
    "mx.example.com; spf=pass (sender IP is 1.2.3.4) smtp.mailfrom=example.com; "
    "dkim=pass (signature was verified) header.d=example.com;dmarc=pass action=none "
    "header.from=example.com;compauth=pass reason=100"
)
# Exchange also writes fields without an authserv-id.
MICROSOFT_NO_ID = (
    "spf=pass (sender IP is 1.2.3.4) smtp.mailfrom=example.com; dkim=pass "
    "(signature was verified) header.d=example.com"
)
FAILED = (
    "mx.example.com; dkim=fail (bad signature) header.d=example.com header.s=sel;"
    " spf=softfail (domain of transitioning anna@example.com does not designate 6.6.6.6"
    " as permitted sender) smtp.mailfrom=anna@example.com"
)
FORGED = "mx.evil.example; dkim=pass header.d=example.com; spf=pass smtp.mailfrom=a@example.com"


def _result(parsed: AuthResults | None, method: str) -> MethodResult:
    assert parsed is not None
    return next(r for r in parsed.results if r.method == method)


# --- parsing -----------------------------------------------------------------------------------


def test_gmail_value() -> None:
    parsed = parse_authentication_results(GMAIL)
    assert parsed is not None
    assert (parsed.authserv_id, parsed.version) == ("mx.google.com", None)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("dmarc", "pass"),
    ]
    assert dict(_result(parsed, "dkim").properties) == {
        "header.i": "@example.com",
        "header.s": "20230601",
        "header.b": "Ab+9/xYz",
    }
    assert dict(_result(parsed, "spf").properties) == {"smtp.mailfrom": "anna@example.com"}
    assert dict(_result(parsed, "dmarc").properties) == {"header.from": "example.com"}


def test_microsoft_value() -> None:
    parsed = parse_authentication_results(MICROSOFT)
    assert parsed is not None
    assert [r.method for r in parsed.results] == ["spf", "dkim", "dmarc", "compauth"]
    assert dict(_result(parsed, "dmarc").properties) == {
        "action": "none",
        "header.from": "example.com",
    }
    compauth = _result(parsed, "compauth")
    assert (compauth.result, compauth.reason, dict(compauth.properties)) == ("pass", "100", {})


def test_no_authserv_id_is_unreadable() -> None:
    assert parse_authentication_results(MICROSOFT_NO_ID) is None


@pytest.mark.parametrize(
    "value", ["mx.example.com; none", "mx.example.com 1; none", "  mx.example.com ;  NONE  "]
)
def test_none(value: str) -> None:
    parsed = parse_authentication_results(value)
    assert parsed is not None
    assert parsed.authserv_id == "mx.example.com"
    assert parsed.results == ()


def test_version_and_method_version() -> None:
    parsed = parse_authentication_results("mx.example.com 1; dkim/1=pass header.d=example.com")
    assert parsed is not None
    assert parsed.version == 1
    assert (_result(parsed, "dkim").version, _result(parsed, "dkim").result) == (1, "pass")


def test_names_are_case_insensitive_and_values_keep_their_case() -> None:
    parsed = parse_authentication_results("MX.Example.COM; DKIM=PASS Header.D=Example.COM")
    assert parsed is not None
    dkim = _result(parsed, "dkim")
    assert (dkim.result, dict(dkim.properties)) == ("pass", {"header.d": "Example.COM"})
    assert parsed.matches("mx.example.com.")


def test_comments_nested_and_with_escapes_are_ignored() -> None:
    value = (
        "mx.example.com (our (inner) server; not a result); "
        r"spf=pass (a \) and a ; inside) smtp.mailfrom=anna@example.com (trailing)"
    )
    parsed = parse_authentication_results(value)
    assert parsed is not None
    assert parsed.authserv_id == "mx.example.com"
    assert [(r.method, dict(r.properties)) for r in parsed.results] == [
        ("spf", {"smtp.mailfrom": "anna@example.com"})
    ]


def test_quoted_strings_keep_their_semicolons() -> None:
    value = (
        '"mx.example.com"; spf=pass smtp.mailfrom="x;dkim=pass header.d=bank.example"'
        '@evil.example; dkim=neutral reason="no key; sorry" header.d=evil.example'
    )
    parsed = parse_authentication_results(value)
    assert parsed is not None
    assert parsed.authserv_id == "mx.example.com"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "neutral"),
    ]
    assert _result(parsed, "spf").properties["smtp.mailfrom"] == (
        "x;dkim=pass header.d=bank.example@evil.example"
    )
    assert _result(parsed, "dkim").reason == "no key; sorry"


def test_white_space_around_the_punctuation() -> None:
    parsed = parse_authentication_results(
        "mx.example.com;\n\tdkim / 1 = pass header . d = example.com"
    )
    assert parsed is not None
    assert dict(_result(parsed, "dkim").properties) == {"header.d": "example.com"}


def test_words_that_are_no_property_are_skipped() -> None:
    parsed = parse_authentication_results(
        "mx.example.com; dkim=pass junk header.d=example.com more"
    )
    assert dict(_result(parsed, "dkim").properties) == {"header.d": "example.com"}


def test_the_first_of_repeated_properties_wins() -> None:
    parsed = parse_authentication_results(
        "mx.example.com; dkim=pass header.d=example.com header.d=evil.example"
    )
    assert _result(parsed, "dkim").properties["header.d"] == "example.com"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "; dkim=pass",
        "mx.example.com (unclosed; dkim=pass",
        'mx.example.com; dkim=pass header.d="unclosed',
        "spf=pass smtp.mailfrom=a@example.com",
    ],
)
def test_unreadable_values(value: str) -> None:
    assert parse_authentication_results(value) is None


def test_results_that_are_no_method_are_dropped() -> None:
    parsed = parse_authentication_results("mx.example.com; garbage; spf=pass smtp.mailfrom=a@b.c")
    assert parsed is not None
    assert [r.method for r in parsed.results] == ["spf"]


def test_properties_cannot_be_changed() -> None:
    dkim = _result(parse_authentication_results(MICROSOFT), "dkim")
    with pytest.raises(TypeError):
        dkim.properties["header.d"] = "evil.example"  # type: ignore[index]


# --- the verdict ---------------------------------------------------------------------------------


def test_gmail_pass_for_the_from_domain() -> None:
    verdict = authenticated([GMAIL], authserv_id="mx.google.com", from_domain="example.com")
    assert verdict == AuthVerdict(True, "dkim=pass header.i=@example.com by mx.google.com")


def test_microsoft_pass() -> None:
    verdict = authenticated([MICROSOFT], authserv_id="MX.example.com", from_domain="Example.com")
    assert verdict == AuthVerdict(True, "dkim=pass header.d=example.com by MX.example.com")


def test_methods_are_tried_in_the_order_given() -> None:
    verdict = authenticated([MICROSOFT], authserv_id="mx.example.com", methods=("spf", "dkim"))
    assert verdict.reason == "spf=pass smtp.mailfrom=example.com by mx.example.com"
    only_dmarc = authenticated([MICROSOFT], authserv_id="mx.example.com", methods=["DMARC"])
    assert only_dmarc.ok
    assert only_dmarc.reason.startswith("dmarc=pass header.from=example.com")


def test_a_forged_field_from_another_server_does_not_count() -> None:
    verdict = authenticated([FORGED], authserv_id="mx.example.com", from_domain="example.com")
    assert verdict == AuthVerdict(
        False,
        "no Authentication-Results from mx.example.com (ignored 1 from other or unknown servers)",
    )


def test_no_fields_at_all() -> None:
    assert authenticated([], authserv_id="mx.example.com") == AuthVerdict(
        False, "no Authentication-Results from mx.example.com"
    )


def test_a_forged_field_with_our_id_below_another_server_does_not_count() -> None:
    ours = "mx.example.com; spf=none smtp.mailfrom=a@example.com; dkim=none"
    forged = "mx.example.com; dkim=pass header.d=example.com"
    headers = [ours, "relay.example.net; spf=pass smtp.mailfrom=a@example.com", forged]
    verdict = authenticated(headers, authserv_id="mx.example.com", from_domain="example.com")
    assert not verdict.ok
    assert verdict.reason == "spf=none smtp.mailfrom=a@example.com, dkim=none by mx.example.com"


def test_our_fields_in_a_row_all_count() -> None:
    # Separate milters (OpenDKIM, an SPF policy daemon) each add a field with our id.
    headers = [
        "later.example.net; arc=none",
        "mx.example.com; spf=fail smtp.mailfrom=a@example.com",
        "mx.example.com; dkim=pass header.d=example.com",
    ]
    verdict = authenticated(headers, authserv_id="mx.example.com", from_domain="example.com")
    assert verdict == AuthVerdict(True, "dkim=pass header.d=example.com by mx.example.com")


def test_failures_are_explained() -> None:
    verdict = authenticated([FAILED], authserv_id="mx.example.com", from_domain="example.com")
    assert verdict == AuthVerdict(
        False,
        "dkim=fail header.d=example.com, spf=softfail smtp.mailfrom=anna@example.com"
        " by mx.example.com",
    )


def test_none_fails() -> None:
    verdict = authenticated(["mx.example.com; none"], authserv_id="mx.example.com")
    assert verdict == AuthVerdict(False, "no dkim or spf result from mx.example.com")


def test_other_methods_passing_do_not_count() -> None:
    verdict = authenticated(
        ["mx.example.com; dmarc=pass header.from=example.com; arc=pass"],
        authserv_id="mx.example.com",
    )
    assert verdict == AuthVerdict(False, "no dkim or spf result from mx.example.com")


@pytest.mark.parametrize(
    ("dkim_domain", "from_domain", "ok"),
    [
        ("example.com", "example.com", True),
        ("example.com", "mail.example.com", True),
        ("EXAMPLE.com.", "example.com", True),
        ("mail.example.com", "example.com", False),
        ("evil.example", "example.com", False),
        ("ample.com", "example.com", False),
    ],
)
def test_dkim_domain_must_be_the_from_domain_or_a_parent(
    dkim_domain: str, from_domain: str, ok: bool
) -> None:
    value = f"mx.example.com; dkim=pass header.d={dkim_domain}"
    verdict = authenticated([value], authserv_id="mx.example.com", from_domain=from_domain)
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason.endswith(f", but not for the From domain {from_domain}")


@pytest.mark.parametrize(
    ("mailfrom", "from_domain", "ok"),
    [
        ("anna@example.com", "example.com", True),
        ("bounce+123@bounces.example.com", "example.com", True),
        ("example.com", "example.com", True),  # Microsoft gives only the domain
        ('"a@b"@example.com', "example.com", True),
        ("anna@example.com", "mail.example.com", False),
        ("anna@evil.example", "example.com", False),
        ("anna@notexample.com", "example.com", False),
    ],
)
def test_spf_domain_must_be_the_from_domain_or_a_subdomain(
    mailfrom: str, from_domain: str, ok: bool
) -> None:
    value = f"mx.example.com; spf=pass smtp.mailfrom={mailfrom}"
    verdict = authenticated([value], authserv_id="mx.example.com", from_domain=from_domain)
    assert verdict.ok is ok


def test_spf_pass_for_the_helo_only_is_not_for_the_from_domain() -> None:
    value = "mx.example.com; spf=pass smtp.helo=mail.example.com"
    assert authenticated([value], authserv_id="mx.example.com").ok
    assert not authenticated([value], authserv_id="mx.example.com", from_domain="example.com").ok


def test_without_from_domain_any_pass_counts() -> None:
    value = "mx.example.com; dkim=pass header.d=other.example"
    verdict = authenticated([value], authserv_id="mx.example.com")
    assert verdict == AuthVerdict(True, "dkim=pass header.d=other.example by mx.example.com")


def test_unreadable_fields_are_ignored() -> None:
    headers = ["mx.example.com; dkim=pass (unclosed", MICROSOFT]
    verdict = authenticated(headers, authserv_id="mx.example.com", from_domain="example.com")
    assert verdict.ok


def test_no_methods_configured() -> None:
    verdict = authenticated([MICROSOFT], authserv_id="mx.example.com", methods=())
    assert verdict == AuthVerdict(False, "no authentication methods are configured")
