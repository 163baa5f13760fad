"""The command block at the top of an agent's reply, and the text to relay. Pure.

An agent answers a notification with Reply; the first lines of the answer may change the
ticket::

    #time 1h30 fixed the checkout
    #assign bo
    #close

    Hi Maria, the checkout works again.

Block rules
    * Line endings are normalised; leading blank lines are skipped.
    * A line whose first non-blank character is ``#`` followed by a letter is a command line
      (``#1042 is fixed`` is text: ``#`` and a digit). Names are case-insensitive.
    * Blank lines between command lines are allowed. The first other non-blank line ends the
      block; from there on everything is the body (surrounding blank lines removed). A
      ``#word`` line after that is plain text and is relayed as written.
    * One command per line: a command that takes no argument followed by anything is an
      error, and so is a second ``#command`` on a name command's line. Only ``#time`` has
      free text after its argument: the description, which may mention ``#tags`` but may
      not start with a command (``#time 20m #close``).

Arguments
    * ``#assign NAME``: an agent or a team, case-insensitive, returned in its configured
      spelling (agents win when an agent and a team share a name); a leading ``@`` is
      ignored. ``#category NAME`` likewise against the configured categories.
    * ``#severity N``: ``1``-``4`` or ``L1``-``L4`` (any case), normalised to ``"L1"``..``"L4"``.
    * ``#time DURATION [description]``: the longest prefix of (at most four) words that
      :func:`~mailbot.billing.durations.parse_duration` accepts is the duration, the rest is
      the description (``#time 1 h 30 min call with Maria``). Repeated ``#time`` lines are
      all kept; :attr:`CommandBlock.total_minutes` adds them up.

Conflicts (reported on the later line; the later command is left out)
    * ``#close`` with ``#reopen`` or with ``#wait``: they ask for different states.
      ``#reopen`` with ``#wait`` is allowed: reopen the ticket and wait for the customer.
    * ``#urgent`` with ``#normal``.
    * ``#spam`` with anything but ``#note``: a spam ticket is not worked on, assigned or
      billed, and nothing is sent to its sender.
    * Two different values of ``#assign``, ``#severity`` or ``#category``.
    Repeating a command with the same value is harmless; the repeat is dropped.

A block with errors must not be executed at all and its text must not be relayed: the agent
gets the errors and :func:`help_text` instead. :attr:`CommandBlock.internal` is true for
``#note`` and ``#spam``: the mail stays on the ticket and is not relayed.

:func:`strip_agent_reply` turns the body into the text for the customer: the new part of
the reply (:func:`~mailbot.ingest.quotes.new_text`), without a ``-- `` signature and without
a trailing ``[ref:mb-...]`` footer line (an agent may paste one into a new mail to name the
ticket). It is empty when the reply holds nothing new (only commands, only quoted history,
only a signature), and also when the result still holds lines of the notification's command
help: then the history starts at a quote header ``new_text`` did not recognise, the end of
the agent's text is unknown, and relaying nothing beats relaying the internal notification.
A command block on top of its input is kept as it is and only the text below is stripped,
so it may run before or after :func:`parse_commands` with the same outcome; quote stripping
alone would take the commands for the new text of a reply that starts with a quote header
("On ... wrote:", then inline answers) and lose everything below.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from mailbot.billing.durations import parse_duration
from mailbot.ingest.quotes import DEFAULT_LANGUAGES, new_text
from mailbot.rules.schema import did_you_mean


class CommandKind(enum.StrEnum):
    CLOSE = "close"
    REOPEN = "reopen"
    WAIT = "wait"
    ASSIGN = "assign"
    SEVERITY = "severity"
    CATEGORY = "category"
    TIME = "time"
    NOTE = "note"
    SPAM = "spam"
    URGENT = "urgent"
    NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: CommandKind
    usage: str
    explanation: str
    aliases: tuple[str, ...] = ()


#: The commands in the order :func:`help_text` lists them; the parser reads the same table.
_SPECS: tuple[_Spec, ...] = (
    _Spec(CommandKind.CLOSE, "#close", "resolve the ticket", ("resolve",)),
    _Spec(CommandKind.REOPEN, "#reopen", "reopen a resolved or closed ticket"),
    _Spec(CommandKind.WAIT, "#wait", "wait for the customer's answer"),
    _Spec(CommandKind.ASSIGN, "#assign NAME", "give the ticket to an agent or a team"),
    _Spec(CommandKind.SEVERITY, "#severity 1-4", "set the severity (L1 is the worst; L1-L4 too)"),
    _Spec(CommandKind.CATEGORY, "#category NAME", "set the category"),
    _Spec(
        CommandKind.TIME,
        "#time 25m [what]",
        "book working time (25m, 1h30, 1:30); several lines add up",
    ),
    _Spec(CommandKind.URGENT, "#urgent", "mark the ticket urgent"),
    _Spec(CommandKind.NORMAL, "#normal", "remove the urgent mark", ("not-urgent",)),
    _Spec(CommandKind.NOTE, "#note", "internal note: stored on the ticket, not sent"),
    _Spec(CommandKind.SPAM, "#spam", "mark the ticket as spam: nothing is sent"),
)
_BY_NAME: dict[str, CommandKind] = {
    name: spec.kind for spec in _SPECS for name in (spec.kind.value, *spec.aliases)
}
_NO_ARGUMENT = frozenset(
    {
        CommandKind.CLOSE,
        CommandKind.REOPEN,
        CommandKind.WAIT,
        CommandKind.NOTE,
        CommandKind.SPAM,
        CommandKind.URGENT,
        CommandKind.NORMAL,
    }
)
_SINGLE_VALUE = (CommandKind.ASSIGN, CommandKind.SEVERITY, CommandKind.CATEGORY)
_CONFLICTS = frozenset(
    {
        frozenset({CommandKind.CLOSE, CommandKind.REOPEN}),
        frozenset({CommandKind.CLOSE, CommandKind.WAIT}),
        frozenset({CommandKind.URGENT, CommandKind.NORMAL}),
    }
)
_WITH_SPAM = frozenset({CommandKind.SPAM, CommandKind.NOTE})

#: At most this many words are tried as the duration of ``#time`` ("1 h 30 min").
MAX_DURATION_WORDS = 4
#: Known names listed in an error message.
MAX_KNOWN_LISTED = 12

_COMMAND_LINE = re.compile(r"^\s*#(?P<name>[^\W\d_][\w-]*)(?P<rest>.*)$")
_OTHER_COMMAND = re.compile(r"(?:^|\s)(#[^\W\d_][\w-]*)")
_SEVERITY = re.compile(r"^l?([1-4])$", re.IGNORECASE)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Command:
    """One valid command. ``arg`` is the normalised argument (a name, ``"L2"``, the
    duration as written); ``minutes`` and ``description`` are set by ``#time`` only."""

    kind: CommandKind
    arg: str | None = None
    minutes: int | None = None
    description: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class CommandError:
    """A command line that cannot be executed: its 1-based number, the line, and why."""

    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class CommandBlock:
    """The commands at the top of a reply, their errors, and the rest of the text."""

    commands: tuple[Command, ...]
    errors: tuple[CommandError, ...]
    body: str

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def internal(self) -> bool:
        """``#note`` or ``#spam``: keep the mail on the ticket, relay nothing."""
        return self.has(CommandKind.NOTE) or self.has(CommandKind.SPAM)

    @property
    def total_minutes(self) -> int:
        """All ``#time`` lines added up."""
        return sum(c.minutes or 0 for c in self.commands if c.kind is CommandKind.TIME)

    def has(self, kind: CommandKind) -> bool:
        return any(command.kind is kind for command in self.commands)

    def first(self, kind: CommandKind) -> Command | None:
        return next((command for command in self.commands if command.kind is kind), None)


def help_text() -> str:
    """The valid commands, one per line with an explanation (for notifications and errors)."""
    width = max(len(spec.usage) for spec in _SPECS) + 2
    lines = []
    for spec in _SPECS:
        also = " (or " + ", ".join(f"#{a}" for a in spec.aliases) + ")" if spec.aliases else ""
        lines.append(f"  {spec.usage.ljust(width)}{spec.explanation}{also}")
    return "\n".join(lines)


def parse_commands(
    text: str,
    *,
    agents: Collection[str],
    categories: Collection[str],
    teams: Collection[str] = (),
) -> CommandBlock:
    """Split ``text`` into its command block and the body (see the module docstring)."""
    lines = _lines(text)
    names = _Names(agents=agents, teams=teams, categories=categories)
    body_start = _block_end(lines)
    parsed: list[Command | CommandError] = []
    for index, line in enumerate(lines[:body_start]):
        match = _COMMAND_LINE.match(line)
        if match is not None:
            name, rest = match.group("name"), match.group("rest")
            parsed.append(_parse_line(index + 1, line, name, rest, names))
    commands, errors = _check_conflicts(parsed, lines)
    return CommandBlock(tuple(commands), tuple(errors), _strip_blank_lines(lines[body_start:]))


def strip_agent_reply(text: str, *, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> str:
    """The text of an agent's reply that goes to the customer; "" when nothing is new.

    Command lines at the top are kept as they are (on the same line numbers) and only the
    text below them is stripped, so this may run before or after :func:`parse_commands`
    with the same outcome. (Quote
    stripping alone would take the commands for the new text of a reply that starts with a
    quote header and lose the inline answers below it.)
    """
    lines = _lines(text)
    start = _block_end(lines)
    # Leading blank lines stay with the commands, so their line numbers do not change.
    head = "\n".join(lines[:start]).rstrip() if _strip_blank_lines(lines[:start]) else ""
    new = _new_part("\n".join(lines[start:]), languages)
    return "\n\n".join(part for part in (head, new) if part)


def _new_part(text: str, languages: tuple[str, ...]) -> str:
    result = new_text(text, languages=languages)
    if result and (_only_history(text, result) or _holds_notification(result)):
        return ""
    lines = result.split("\n")
    for index, line in enumerate(lines):
        if line in ("--", "-- "):
            lines = lines[:index]
            break
    while lines and (not lines[-1].strip() or _is_footer(lines[-1])):
        lines.pop()
    return "\n".join(lines).strip()


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _block_end(lines: Sequence[str]) -> int:
    """The index of the first line after the command block (the first non-blank line that
    is not a command line), or ``len(lines)``."""
    for index, line in enumerate(lines):
        if line.strip() and _COMMAND_LINE.match(line) is None:
            return index
    return len(lines)


# --- one line -------------------------------------------------------------------------------

_ErrorMaker = Callable[[str], CommandError]


@dataclass(frozen=True, slots=True)
class _Names:
    agents: Collection[str]
    teams: Collection[str]
    categories: Collection[str]


def _parse_line(
    number: int, line: str, name: str, rest: str, names: _Names
) -> Command | CommandError:
    def error(message: str) -> CommandError:
        return CommandError(number, line, message)

    written = f"#{name}"
    kind = _BY_NAME.get(name.lower())
    if kind is None:
        options = [f"#{option}" for option in _BY_NAME]
        return error(f"unknown command {written}{did_you_mean(written.lower(), options)}")
    argument = rest.strip()
    if rest and not rest[0].isspace():
        fix = f"write {written} alone" if kind in _NO_ARGUMENT else f"put a space after {written}"
        return error(f"{written}{rest.split()[0]} is not a command: {fix}")
    if kind in _NO_ARGUMENT:
        if argument:
            return error(_extra_text(written, argument, f"{written} takes no argument"))
        return Command(kind, line=number)
    if kind is CommandKind.TIME:
        return _parse_time(number, argument, error)
    if kind is CommandKind.SEVERITY:
        match = _SEVERITY.match(argument)
        if match is None:
            return error(_extra_text(written, argument, "#severity must be 1-4 or L1-L4"))
        return Command(kind, arg=f"L{match.group(1)}", line=number)
    if kind is CommandKind.ASSIGN:
        known = _canonical([*names.agents, *names.teams])
        return _parse_name(number, kind, argument, known, "an agent or team name", error)
    known = _canonical(names.categories)
    return _parse_name(number, kind, argument, known, "a category name", error)


def _extra_text(written: str, argument: str, message: str) -> str:
    other = _OTHER_COMMAND.search(argument)
    if other is not None:
        return f"one command per line: put {other.group(1)} on its own line, not after {written}"
    return message


def _parse_time(number: int, argument: str, error: _ErrorMaker) -> Command | CommandError:
    usage = "#time needs a duration, e.g. #time 25m"
    words = list(_WORD.finditer(argument))
    if not words:
        return error(usage)
    first_problem = ""
    for count in range(min(len(words), MAX_DURATION_WORDS), 0, -1):
        duration = argument[: words[count - 1].end()]
        try:
            minutes = parse_duration(duration)
        except ValueError as exc:
            if count == 1:
                first_problem = str(exc)
            continue
        description = argument[words[count - 1].end() :].strip()
        follows = _COMMAND_LINE.match(description)
        if follows is not None and follows.group("name").lower() in _BY_NAME:
            return error(_extra_text("#time", description, "one command per line"))
        return Command(
            CommandKind.TIME, arg=duration, minutes=minutes, description=description, line=number
        )
    return error(f"{usage} — {first_problem}")


def _parse_name(
    number: int,
    kind: CommandKind,
    argument: str,
    known: dict[str, str],
    what: str,
    error: _ErrorMaker,
) -> Command | CommandError:
    written = f"#{kind.value}"
    listed = _listing(known.values())
    if not argument:
        if not known:
            return error(f"{written} needs {what}, but none are configured")
        return error(f"{written} needs {what} — known: {listed}")
    words = argument.split()
    if len(words) > 1:
        return error(_extra_text(written, argument, f"{written} takes one name, not {argument!r}"))
    name = words[0].removeprefix("@")
    canonical = known.get(name.casefold())
    if canonical is not None:
        return Command(kind, arg=canonical, line=number)
    hint = did_you_mean(name.casefold(), known.values())
    if not hint:
        hint = f" — known: {listed}" if known else " — none are configured"
    return error(f"{written}: unknown {what.removeprefix('an ').removeprefix('a ')} {name!r}{hint}")


def _canonical(names: Iterable[str]) -> dict[str, str]:
    """Case-folded name -> the configured spelling; the first of equal names wins."""
    known: dict[str, str] = {}
    for name in names:
        known.setdefault(name.casefold(), name)
    return known


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(names, key=str.casefold)
    if len(ordered) > MAX_KNOWN_LISTED:
        return ", ".join(ordered[:MAX_KNOWN_LISTED]) + f", … ({len(ordered)} in all)"
    return ", ".join(ordered)


# --- the whole block ------------------------------------------------------------------------


def _check_conflicts(
    parsed: Iterable[Command | CommandError], lines: Sequence[str]
) -> tuple[list[Command], list[CommandError]]:
    commands: list[Command] = []
    errors: list[CommandError] = []
    for item in parsed:
        if isinstance(item, CommandError):
            errors.append(item)
            continue
        problem, duplicate = _conflict(item, commands)
        if problem is not None:
            errors.append(CommandError(item.line, lines[item.line - 1], problem))
        elif not duplicate:
            commands.append(item)
    return commands, errors


def _conflict(command: Command, before: list[Command]) -> tuple[str | None, bool]:
    """(why ``command`` conflicts with an earlier one, or None; whether it repeats one)."""
    name = f"#{command.kind.value}"
    for earlier in before:
        where = f"#{earlier.kind.value} on line {earlier.line}"
        if frozenset({command.kind, earlier.kind}) in _CONFLICTS:
            return f"{name} conflicts with {where}", False
        spam = {command.kind, earlier.kind} & {CommandKind.SPAM}
        if spam and not {command.kind, earlier.kind} <= _WITH_SPAM:
            return f"{name} conflicts with {where}: #spam goes only with #note", False
        if command.kind is earlier.kind and command.kind is not CommandKind.TIME:
            if command.arg == earlier.arg:
                return None, True
            if command.kind in _SINGLE_VALUE:
                return (
                    f"{name} {command.arg} conflicts with {name} {earlier.arg} "
                    f"on line {earlier.line}",
                    False,
                )
    return None, False


# --- the text to relay ----------------------------------------------------------------------

_QUOTED = re.compile(r"^\s*>")
_LEADING_QUOTES = re.compile(r"^[\s>]*")
#: Lines of :func:`help_text` in a reply's new text that show the notification is in it.
_HELP_LINES_LEAKED = 2
_FOOTER_TOKEN = re.compile(r"ref:\s*mb-[0-9]+-[a-z0-9]+", re.IGNORECASE)
_FOOTER_DECORATION = re.compile(r"^[\s>\[\]<>()]*$")


def _only_history(text: str, result: str) -> bool:
    """True when ``text`` holds no new line, only the history it answers.

    ``new_text`` never returns nothing: for a reply that is all history it returns the
    quoted lines, or the text below a quote header at the very top (Outlook's
    "From:/Sent:" block, "-----Original Message-----"). So the text is all history when
    every line of the result is quoted, or when the result has no quoted line and what was
    removed above it is unquoted lines only: a quote header, and not a header with quoted
    lines below it, which makes the result inline answers ("On ... wrote:", "> question",
    "answer"). A short reply the library would take for a signature ("Thanks, fixed!\nAnna")
    starts where the text starts and is kept.
    """
    kept = [line for line in result.split("\n") if line.strip()]
    if all(_QUOTED.match(line) for line in kept):
        return True
    if any(_QUOTED.match(line) for line in kept):
        return False
    first = kept[0].strip()
    lines = text.splitlines()
    top = next((i for i, line in enumerate(lines) if line.strip() == first), 0)
    removed = [line for line in lines[:top] if line.strip()]
    return bool(removed) and not any(_QUOTED.match(line) for line in removed)


def _holds_notification(result: str) -> bool:
    """True when the result still holds the command help of a notification: the history
    starts at a quote header ``new_text`` did not find (e.g. "-----Original Message-----"
    on the first line), so where the agent's text ends is unknown. Nothing is relayed
    rather than the notification."""
    help_lines = {_normal_line(line) for line in help_text().split("\n")}
    hits = sum(1 for line in result.split("\n") if _normal_line(line) in help_lines)
    return hits >= _HELP_LINES_LEAKED


def _normal_line(line: str) -> str:
    return " ".join(_LEADING_QUOTES.sub("", line).split())


def _is_footer(line: str) -> bool:
    tokens = _FOOTER_TOKEN.findall(line)
    return bool(tokens) and bool(_FOOTER_DECORATION.match(_FOOTER_TOKEN.sub("", line)))


def _strip_blank_lines(lines: list[str]) -> str:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return "\n".join(lines[start:end])
