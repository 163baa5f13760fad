"""Template rendering: strict, sandboxed, customer text only ever as a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.errors import ConfigError
from mailbot.outbound.render import Rendered, TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]


def context(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ticket_ref": "#1042",
        "ticket_token": "[#1042]",
        "subject": "Shipping settings",
        "customer_name": "Anna",
        "plan_name": "Core",
        "promise": "within 3 working days",
        "deadline_text": "Thursday 26 November 2026, 10:30",
        "support_name": "Ashop Support",
        "support_address": "support@example.com",
        "articles": [{"title": "Shipping settings", "url": "https://docs.example.com/en/shipping"}],
    }
    base.update(overrides)
    return base


@pytest.fixture
def shipped() -> TemplateRenderer:
    return TemplateRenderer(ROOT / "templates", default_language="en")


def write(directory: Path, language: str, files: dict[str, str]) -> None:
    (directory / language).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / language / name).write_text(text, encoding="utf-8")


def test_ack_in_english(shipped: TemplateRenderer) -> None:
    out = shipped.render("ack", "en", context())
    assert out.subject == "Re: Shipping settings"
    assert out.text.startswith("Hi Anna,\n\n")
    assert "ticket #1042" in out.text
    assert "within 3 working days, by Thursday 26 November 2026, 10:30 at the latest" in out.text
    assert "[#1042]" in out.text
    assert out.text.endswith("Ashop Support\nsupport@example.com\n")
    assert out.html is not None and "<strong>#1042</strong>" in out.html


def test_ack_without_deadline_or_name(shipped: TemplateRenderer) -> None:
    out = shipped.render("ack", "sv", context(deadline_text="", customer_name=None, subject=""))
    assert out.subject == "Re: Ditt ärende"
    assert out.text.startswith("Hej!\n\n")
    assert "Du får svar från oss within 3 working days." in out.text
    assert "senast" not in out.text


def test_italian_greeting(shipped: TemplateRenderer) -> None:
    assert shipped.render("ack", "it", context()).text.startswith("Gentile Anna,\n\ngrazie")
    out = shipped.render("ack", "it", context(customer_name=""))
    assert out.text.startswith("Buongiorno,\n\ngrazie")


def test_wiki_lists_articles_and_keeps_ticket_open(shipped: TemplateRenderer) -> None:
    articles = [
        {"title": "Fraktinställningar", "url": "https://docs.example.com/sv/frakt"},
        {"title": "Leveranssätt", "url": "https://docs.example.com/sv/leverans"},
    ]
    out = shipped.render("wiki", "sv", context(articles=articles))
    assert "- Fraktinställningar\n  https://docs.example.com/sv/frakt\n" in out.text
    assert "- Leveranssätt\n  https://docs.example.com/sv/leverans\n" in out.text
    assert "Ärendet är fortfarande öppet" in out.text
    assert out.html is not None
    assert '<a href="https://docs.example.com/sv/leverans">Leveranssätt</a>' in out.html


def test_customer_text_is_never_template_source(shipped: TemplateRenderer) -> None:
    evil = "{{ 7*7 }} {% for x in range(3) %}X{% endfor %} {{ ''.__class__ }}"
    out = shipped.render("ack", "en", context(subject=evil, customer_name=evil))
    assert out.subject == f"Re: {evil}"
    assert f"Hi {evil}," in out.text
    assert "49" not in out.text and "XXX" not in out.text


def test_html_part_escapes_customer_values(shipped: TemplateRenderer) -> None:
    name = '<script>alert("x")</script> & Co'
    articles = [{"title": "<b>Bold</b>", "url": 'https://x.example/?a=1&b="2"'}]
    out = shipped.render("wiki", "en", context(customer_name=name, articles=articles))
    assert out.html is not None
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in out.html
    assert "&lt;b&gt;Bold&lt;/b&gt;" in out.html
    assert 'href="https://x.example/?a=1&amp;b=&#34;2&#34;"' in out.html
    # The plain-text part is not HTML: no escaping there.
    assert f"Hi {name}," in out.text


def test_subject_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "Re:\n {{ subject }}\n", "n.txt.j2": "x\n"})
    out = TemplateRenderer(tmp_path).render("n", "en", {"subject": "a\r\nBcc: evil@x"})
    assert out.subject == "Re: a Bcc: evil@x"


def test_html_is_optional(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "S\n", "n.txt.j2": "T {{ v }}\n"})
    assert TemplateRenderer(tmp_path).render("n", "en", {"v": 1}) == Rendered("S", "T 1\n", None)


def test_language_falls_back_to_the_default(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "English\n", "n.txt.j2": "en\n"})
    write(tmp_path, "sv", {"n.subject.j2": "Svenska\n", "n.txt.j2": "sv\n"})
    write(tmp_path, "it", {"n.subject.j2": "Italiano\n"})  # incomplete: no text part
    renderer = TemplateRenderer(tmp_path, default_language="sv")
    assert renderer.render("n", "de", {}).subject == "Svenska"
    assert renderer.render("n", "it", {}).subject == "Svenska"
    assert renderer.render("n", "en", {}).subject == "English"


def test_missing_template_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "S\n"})
    with pytest.raises(ConfigError) as info:
        TemplateRenderer(tmp_path).render("n", "en", {})
    assert str(tmp_path / "en" / "n.txt.j2") in str(info.value)


def test_undefined_variable_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "S\n", "n.txt.j2": "Hi {{ nmae }}\n"})
    with pytest.raises(ConfigError) as info:
        TemplateRenderer(tmp_path).render("n", "en", {"name": "Anna"})
    assert str(tmp_path / "en" / "n.txt.j2") in str(info.value)
    assert "nmae" in str(info.value)


def test_sandbox_blocks_unsafe_attributes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "en",
        {"n.subject.j2": "S\n", "n.txt.j2": "{{ v.__class__.__mro__[1].__subclasses__() }}\n"},
    )
    with pytest.raises(ConfigError, match=r"n\.txt\.j2"):
        TemplateRenderer(tmp_path).render("n", "en", {"v": "x"})


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "en", {"n.subject.j2": "S\n", "n.txt.j2": "ok\n{% if %}\n"})
    renderer = TemplateRenderer(tmp_path)
    with pytest.raises(ConfigError) as info:
        renderer.render("n", "en", {})
    assert f"{tmp_path / 'en' / 'n.txt.j2'}:2: template syntax error" in str(info.value)
    with pytest.raises(ConfigError, match=r"n\.txt\.j2:2: template syntax error"):
        renderer.validate(["n"], ["en"])


def test_validate_lists_every_missing_file(tmp_path: Path) -> None:
    write(tmp_path, "en", {"a.subject.j2": "S\n", "a.txt.j2": "T\n"})
    with pytest.raises(ConfigError) as info:
        TemplateRenderer(tmp_path).validate(iter(["a", "b"]), ["en", "sv"])
    message = str(info.value)
    for missing in ("en/b.subject.j2", "en/b.txt.j2", "sv/a.subject.j2", "sv/a.txt.j2"):
        assert str(tmp_path / missing) in message
    assert "a.html.j2" not in message  # HTML is optional
    TemplateRenderer(tmp_path).validate(["a"], ["en"])


def test_names_cannot_leave_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid template or language name"):
        TemplateRenderer(tmp_path).render("../etc/passwd", "en", {})
