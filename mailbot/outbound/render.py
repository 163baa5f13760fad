"""Render automatic answers from the operator's jinja2 templates.

Layout, one directory per language::

    templates/<language>/<name>.subject.j2   one line: the subject (the composer adds the token)
    templates/<language>/<name>.txt.j2       the plain-text body
    templates/<language>/<name>.html.j2      optional HTML alternative

Safety: the environment is sandboxed and uses ``StrictUndefined`` (a misspelt variable is
an error, not an empty string); HTML templates are autoescaped, text ones are not. Anything
the customer wrote reaches a template only as a context *value*, never as template source,
so ``{{ 7*7 }}`` in a subject stays literally ``{{ 7*7 }}``.

When a language has no such template the rules' default language is used; the subject and
the text always come from the same language. ``fallbacks`` are further directories searched
in order for any file the first one lacks (rules.yaml ``templates.extends``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from mailbot.errors import ConfigError

log = logging.getLogger(__name__)

SUBJECT = "subject"
TEXT = "txt"
HTML = "html"

_SAFE_PART = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def _autoescape(template_name: str | None) -> bool:
    return bool(template_name and template_name.endswith(".html.j2"))


class TemplateRenderer:
    """Renders ``<name>`` in a language from the template ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        default_language: str = "en",
        fallbacks: Sequence[Path] = (),
    ) -> None:
        self.directory = directory
        self.directories = (directory, *fallbacks)
        self.default_language = default_language
        # One environment per layer: a template of layer i (and what it includes) is read
        # from directory i first, then the later ones.
        self._envs = [
            SandboxedEnvironment(
                loader=jinja2.FileSystemLoader([str(d) for d in self.directories[i:]]),
                undefined=jinja2.StrictUndefined,
                autoescape=_autoescape,
                keep_trailing_newline=True,
                trim_blocks=True,
                lstrip_blocks=True,
                auto_reload=False,
            )
            for i in range(len(self.directories))
        ]
        self._resolved: dict[tuple[str, str], tuple[str, int, bool]] = {}

    @staticmethod
    def template_name(name: str, language: str, part: str) -> str:
        """The loader name of one part, e.g. ``sv/ack.txt.j2``."""
        return f"{language}/{name}.{part}.j2"

    def _layer(self, name: str, language: str) -> int | None:
        """The first directory that has the text part of ``name`` in ``language``: all its
        parts (subject, text, HTML) come from there, never mixed across directories."""
        text = self.template_name(name, language, TEXT)
        return next(
            (i for i, d in enumerate(self.directories) if (d / text).is_file()),
            None,
        )

    def _path(self, template: str, layer: int = 0) -> Path:
        return self.directories[layer] / template

    def _exists(self, name: str, language: str, part: str) -> bool:
        layer = self._layer(name, language)
        return (
            layer is not None
            and self._path(self.template_name(name, language, part), layer).is_file()
        )

    def _language_for(self, name: str, language: str) -> tuple[str, int]:
        for part in (name, language, self.default_language):
            if not _SAFE_PART.match(part):
                raise ConfigError(f"{self.directory}: invalid template or language name {part!r}")
        for candidate in dict.fromkeys((language, self.default_language)):
            if self._exists(name, candidate, SUBJECT) and self._exists(name, candidate, TEXT):
                if candidate != language:
                    log.info("no %s template %r: using %s instead", language, name, candidate)
                layer = self._layer(name, candidate)
                assert layer is not None
                return candidate, layer
        raise ConfigError(
            f"{self._path(self.template_name(name, language, TEXT))}: template missing "
            f"(and no {self.default_language!r} fallback)"
        )

    def _render(self, template: str, context: Mapping[str, object], layer: int = 0) -> str:
        try:
            return self._envs[layer].get_template(template).render(dict(context))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"{self._path(template, layer)}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self._path(template, layer)}: cannot render: {exc}") from None

    def _resolve(self, name: str, language: str) -> tuple[str, int, bool]:
        """(language used, layer, has an HTML part), looked up on disk once per renderer:
        like the compiled templates (``auto_reload=False``), a renderer sees the files as
        they were; a change of them is a reload, which makes a new renderer."""
        key = (name, language)
        found = self._resolved.get(key)
        if found is None:
            lang, layer = self._language_for(name, language)
            found = (lang, layer, self._exists(name, lang, HTML))
            self._resolved[key] = found
        return found

    def render(self, name: str, language: str, context: Mapping[str, object]) -> Rendered:
        """Render the subject, text and (if present) HTML parts of template ``name``."""
        lang, layer, has_html = self._resolve(name, language)
        subject = self._render(self.template_name(name, lang, SUBJECT), context, layer)
        # A subject is one header line: fold anything the template or a value let through.
        subject = " ".join(subject.split())
        text = self._render(self.template_name(name, lang, TEXT), context, layer)
        html = None
        if has_html:
            html = self._render(self.template_name(name, lang, HTML), context, layer)
        return Rendered(subject=subject, text=text, html=html)

    def validate(self, names: Iterable[str], languages: Iterable[str]) -> None:
        """Check at start-up that every template exists in every language and compiles.

        Raises :class:`ConfigError` naming every missing or broken template file.
        """
        problems: list[str] = []
        wanted = list(names)
        for language in languages:
            for name in wanted:
                layer = self._layer(name, language) or 0
                for part in (SUBJECT, TEXT, HTML):
                    template = self.template_name(name, language, part)
                    path = self._path(template, layer)
                    if not path.is_file():
                        if part != HTML:
                            problems.append(f"{path}: template missing")
                        continue
                    try:
                        self._envs[layer].get_template(template)
                    except jinja2.TemplateSyntaxError as exc:
                        problems.append(
                            f"{path}:{exc.lineno}: template syntax error: {exc.message}"
                        )
                    except jinja2.TemplateError as exc:
                        problems.append(f"{path}: {exc}")
        if problems:
            raise ConfigError("\n".join(problems))
