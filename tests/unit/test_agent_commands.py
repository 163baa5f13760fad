"""The command block of an agent's reply, the help text, and the text relayed to customers."""

from __future__ import annotations

import re

import pytest

from mailbot.agents.commands import (
    Command,
    CommandBlock,
    CommandError,
    CommandKind,
    help_text,
    parse_commands,
    strip_agent_reply,
)
from mailbot.agents.tokens import TokenSigner, footer_line, reply_address, tokens_in_text
from mailbot.billing.durations import parse_duration

AGENTS = ("anna", "bo")
TEAMS = ("Support", "developers")
CATEGORIES = ("bug", "billing", "feature")


def parse(text: str) -> CommandBlock:
    return parse_commands(text, agents=AGENTS, categories=CATEGORIES, teams=TEAMS)


def kinds(block: CommandBlock) -> list[CommandKind]:
    return [command.kind for command in block.commands]


def messages(block: CommandBlock) -> list[str]:
    return [error.message for error in block.errors]


# --- single commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("#close", CommandKind.CLOSE),
        ("#resolve", CommandKind.CLOSE),
        ("#CLOSE", CommandKind.CLOSE),
        ("#reopen", CommandKind.REOPEN),
        ("#wait", CommandKind.WAIT),
        ("#note", CommandKind.NOTE),
        ("#spam", CommandKind.SPAM),
        ("#urgent", CommandKind.URGENT),
        ("#normal", CommandKind.NORMAL),
        ("#not-urgent", CommandKind.NORMAL),
        ("   #Wait  ", CommandKind.WAIT),
        ("\t#close", CommandKind.CLOSE),
    ],
)
def test_commands_without_argument(line: str, kind: CommandKind) -> None:
    block = parse(f"{line}\n\nHello")
    assert block.commands == (Command(kind, line=1),)
    assert block.errors == ()
    assert block.body == "Hello"


@pytest.mark.parametrize("line", ["#close now", "#wait for Maria", "#close.", "#note: internal"])
def test_commands_without_argument_refuse_text(line: str) -> None:
    block = parse(line)
    assert block.commands == ()
    assert len(block.errors) == 1
    assert block.errors[0].line == 1
    assert block.errors[0].text == line


def test_punctuation_after_a_command_name() -> None:
    assert messages(parse("#close.")) == ["#close. is not a command: write #close alone"]
    assert messages(parse("#time:25m")) == ["#time:25m is not a command: put a space after #time"]


@pytest.mark.parametrize(
    ("argument", "severity"),
    [("1", "L1"), ("2", "L2"), ("4", "L4"), ("L1", "L1"), ("l2", "L2"), ("L3", "L3")],
)
def test_severity_is_normalised(argument: str, severity: str) -> None:
    block = parse(f"#severity {argument}")
    assert block.commands == (Command(CommandKind.SEVERITY, arg=severity, line=1),)


@pytest.mark.parametrize("argument", ["", "0", "5", "L0", "L5", "P1", "high", "L 2", "2 3"])
def test_bad_severity(argument: str) -> None:
    block = parse(f"#severity {argument}".rstrip())
    assert messages(block) == ["#severity must be 1-4 or L1-L4"]


@pytest.mark.parametrize(
    ("argument", "duration", "description"),
    [
        ("25m", "25m", ""),
        ("25 min", "25 min", ""),
        ("90", "90", ""),
        ("1h30 fixed checkout", "1h30", "fixed checkout"),
        ("1 h 30 min", "1 h 30 min", ""),
        ("1 h 30 min call with Maria", "1 h 30 min", "call with Maria"),
        ("1:30 reviewed #1042 logs", "1:30", "reviewed #1042 logs"),
        ("2 timmar felsökning", "2 timmar", "felsökning"),
        ("1,5h", "1,5h", ""),
        ("45 minuti   analisi del log  ", "45 minuti", "analisi del log"),
    ],
)
def test_time_takes_the_longest_duration_prefix(
    argument: str, duration: str, description: str
) -> None:
    block = parse(f"#time {argument}")
    assert block.errors == ()
    assert block.commands == (
        Command(
            CommandKind.TIME,
            arg=duration,
            minutes=parse_duration(duration),
            description=description,
            line=1,
        ),
    )


def test_time_needs_a_duration() -> None:
    assert messages(parse("#time")) == ["#time needs a duration, e.g. #time 25m"]
    (message,) = messages(parse("#time soon"))
    assert message.startswith("#time needs a duration, e.g. #time 25m — ")
    assert "'soon' is not a duration" in message


def test_time_reports_why_a_duration_is_wrong() -> None:
    (message,) = messages(parse("#time 0m"))
    assert "not a positive duration" in message


def test_repeated_time_lines_add_up() -> None:
    block = parse("#time 25m analysis\n#time 1h30 fix\n#time 5m")
    assert kinds(block) == [CommandKind.TIME] * 3
    assert block.total_minutes == 25 + 90 + 5
    assert [c.description for c in block.commands] == ["analysis", "fix", ""]


def test_assign_returns_the_configured_spelling() -> None:
    assert parse("#assign ANNA").commands == (Command(CommandKind.ASSIGN, arg="anna", line=1),)
    assert parse("#assign support").first(CommandKind.ASSIGN) == Command(
        CommandKind.ASSIGN, arg="Support", line=1
    )
    assert parse("#assign @bo").commands[0].arg == "bo"


def test_agent_wins_over_a_team_of_the_same_name() -> None:
    block = parse_commands("#assign Anna", agents=["anna"], teams=["Anna"], categories=CATEGORIES)
    assert block.commands[0].arg == "anna"


def test_assign_errors() -> None:
    block = parse_commands("#assign", agents=["bo", "anna"], categories=())
    assert messages(block) == ["#assign needs an agent or team name — known: anna, bo"]
    assert messages(parse("#assign anan")) == [
        "#assign: unknown agent or team name 'anan' — did you mean 'anna'?"
    ]
    (message,) = messages(parse("#assign zed"))
    assert message.endswith("— known: anna, bo, developers, Support")
    (message,) = messages(parse("#assign anna bo"))
    assert "one name" in message
    none = parse_commands("#assign anna", agents=(), categories=())
    assert messages(none) == ["#assign: unknown agent or team name 'anna' — none are configured"]


def test_many_known_names_are_cut_short() -> None:
    agents = [f"agent{i:02d}" for i in range(30)]
    (message,) = messages(parse_commands("#assign", agents=agents, categories=()))
    assert message.endswith("… (30 in all)")
    assert message.count(",") < 30


def test_category() -> None:
    assert parse("#category Billing").commands == (
        Command(CommandKind.CATEGORY, arg="billing", line=1),
    )
    assert messages(parse("#category bugs")) == [
        "#category: unknown category name 'bugs' — did you mean 'bug'?"
    ]
    assert messages(parse("#category")) == [
        "#category needs a category name — known: billing, bug, feature"
    ]
    empty = parse_commands("#category bug", agents=AGENTS, categories=())
    assert messages(empty) == ["#category: unknown category name 'bug' — none are configured"]
    assert messages(parse_commands("#category", agents=(), categories=())) == [
        "#category needs a category name, but none are configured"
    ]


def test_unknown_commands_suggest_the_closest() -> None:
    assert messages(parse("#clsoe")) == ["unknown command #clsoe — did you mean '#close'?"]
    assert messages(parse("#asign bo")) == ["unknown command #asign — did you mean '#assign'?"]
    assert messages(parse("#xyzzy")) == ["unknown command #xyzzy"]


def test_one_command_per_line() -> None:
    (error,) = parse("#close #time 5m").errors
    assert error.message == "one command per line: put #time on its own line, not after #close"
    (error,) = parse("#assign anna #close").errors
    assert "put #close on its own line" in error.message
    (error,) = parse("#severity 2 #urgent").errors
    assert "put #urgent on its own line" in error.message
    (error,) = parse("#time 20m #Close").errors
    assert error.message == "one command per line: put #Close on its own line, not after #time"


# --- the block -----------------------------------------------------------------------------------


def test_block_rules() -> None:
    text = "\n\n  \n#time 20m\n\n#assign bo\n   \n#urgent\nHi Maria,\n\n#close\nBye\n\n\n"
    block = parse(text)
    assert kinds(block) == [CommandKind.TIME, CommandKind.ASSIGN, CommandKind.URGENT]
    assert [c.line for c in block.commands] == [4, 6, 8]
    assert block.body == "Hi Maria,\n\n#close\nBye"  # a command after the text is text


@pytest.mark.parametrize(
    "first_text",
    ["#1042 is fixed now", "# Heading", "##close", "Hello", "> quoted", "-- ", "#", "# close"],
)
def test_other_lines_end_the_block(first_text: str) -> None:
    block = parse(f"#wait\n{first_text}\n#close")
    assert kinds(block) == [CommandKind.WAIT]
    assert block.errors == ()
    assert block.body == f"{first_text}\n#close".strip("\n")


def test_body_keeps_indentation_and_inner_blank_lines() -> None:
    block = parse("#wait\n\n    indented code\n\n\nnext\n\n")
    assert block.body == "    indented code\n\n\nnext"


def test_text_without_commands_is_all_body() -> None:
    block = parse("\n\nHello Maria,\n\nit works.\n")
    assert block == CommandBlock(commands=(), errors=(), body="Hello Maria,\n\nit works.")


def test_only_commands_leave_an_empty_body() -> None:
    block = parse("#close\n\n#time 5m\n\n")
    assert block.body == ""
    assert block.ok


def test_crlf_and_cr_line_endings() -> None:
    for newline in ("\r\n", "\r"):
        block = parse(newline.join(["#close", "#time 5m", "", "Hello", "World", ""]))
        assert kinds(block) == [CommandKind.CLOSE, CommandKind.TIME]
        assert block.body == "Hello\nWorld"


def test_error_lines_count_from_the_top_of_the_text() -> None:
    block = parse("\n#close\n\n#severity 9\nHi")
    assert block.errors == (CommandError(4, "#severity 9", "#severity must be 1-4 or L1-L4"),)
    assert str(block.errors[0]) == "line 4: #severity must be 1-4 or L1-L4"
    assert kinds(block) == [CommandKind.CLOSE]
    assert not block.ok


def test_helpers() -> None:
    block = parse("#note\n#time 10m\n#time 5m")
    assert block.has(CommandKind.NOTE)
    assert not block.has(CommandKind.CLOSE)
    assert block.first(CommandKind.TIME) == Command(CommandKind.TIME, arg="10m", minutes=10, line=2)
    assert block.first(CommandKind.ASSIGN) is None
    assert block.internal
    assert parse("#spam").internal
    assert not parse("#close").internal


# --- conflicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("#close", "#reopen"),
        ("#reopen", "#resolve"),
        ("#close", "#wait"),
        ("#wait", "#close"),
        ("#urgent", "#normal"),
        ("#spam", "#close"),
        ("#time 5m", "#spam"),
        ("#spam", "#assign bo"),
        ("#assign anna", "#assign bo"),
        ("#severity 1", "#severity L2"),
        ("#category bug", "#category billing"),
    ],
)
def test_conflicting_commands(first: str, second: str) -> None:
    block = parse(f"{first}\n{second}\n\nText")
    (error,) = block.errors
    assert (error.line, error.text) == (2, second)
    assert "conflicts with" in error.message
    assert "on line 1" in error.message
    assert len(block.commands) == 1
    assert block.body == "Text"


@pytest.mark.parametrize(
    "lines",
    [
        ("#reopen", "#wait"),
        ("#spam", "#note"),
        ("#note", "#close", "#time 5m"),
        ("#assign bo", "#severity 2", "#category bug", "#urgent", "#wait", "#time 1h"),
    ],
)
def test_compatible_commands(lines: tuple[str, ...]) -> None:
    block = parse("\n".join(lines))
    assert block.errors == ()
    assert len(block.commands) == len(lines)


def test_repeats_with_the_same_value_are_dropped() -> None:
    block = parse("#close\n#resolve\n#severity 2\n#severity L2\n#assign bo\n#assign BO")
    assert kinds(block) == [CommandKind.CLOSE, CommandKind.SEVERITY, CommandKind.ASSIGN]
    assert block.errors == ()


# --- help --------------------------------------------------------------------------------------


def test_help_lists_every_command_and_every_listed_name_parses() -> None:
    text = help_text()
    lines = text.split("\n")
    assert all(line.startswith("  #") for line in lines)
    listed = re.findall(r"#([a-z][a-z-]*)", text)
    for kind in CommandKind:
        assert kind.value in listed
    for name in listed:
        block = parse_commands(f"#{name}", agents=(), categories=())
        assert not any(e.message.startswith("unknown command") for e in block.errors), name


# --- the text relayed ----------------------------------------------------------------------------


def test_signature_and_footer_are_removed() -> None:
    assert strip_agent_reply("Fixed.\n\n-- \nAnna Lind\nACME") == "Fixed."
    assert strip_agent_reply("Fixed.\n--\nAnna Lind") == "Fixed."
    assert strip_agent_reply("Fixed.\n\n[ref:mb-1042-abcdefghijklmnop]\n") == "Fixed."
    assert strip_agent_reply("Fixed.\n\n<[ref:mb-1042-abcdefghijklmnop]>") == "Fixed."
    assert strip_agent_reply("-- \nAnna Lind") == ""


def test_footer_inside_the_text_is_kept() -> None:
    text = "See [ref:mb-1042-abcdefghijklmnop] above.\n\nFixed."
    assert strip_agent_reply(text) == text


def test_lines_like_a_signature_separator_are_only_cut_when_alone() -> None:
    text = "Use --force here.\n-- not a separator"
    assert strip_agent_reply(text) == text


@pytest.mark.parametrize(
    "history",
    [
        "On Mon, 23 Nov 2026 at 10:00, Support <support@example.com> wrote:\n> Hello\n> Bye",
        "> Hello\n> Bye",
        "From: Support <support@example.com>\nSent: Monday, November 23, 2026 10:00 AM\n"
        "To: Anna Lind <anna@example.com>\nSubject: Checkout\n\nNew ticket from Maria.",
    ],
    ids=["gmail", "quotes", "outlook"],
)
def test_a_reply_of_only_history_relays_nothing(history: str) -> None:
    assert strip_agent_reply(history) == ""


@pytest.mark.parametrize("text", ["Thanks!", "Thanks, fixed!\nAnna", "Ok"])
def test_short_replies_are_kept(text: str) -> None:
    assert strip_agent_reply(text) == text


def test_a_command_block_on_top_is_kept_and_the_rest_stripped() -> None:
    reply = (
        "\n#time 10m\n\n#wait\n\n"
        "On Mon, 23 Nov 2026 at 10:00, Maria <maria@example.org> wrote:\n"
        "> Does it work on mobile?\n\nYes, since today.\n\n> And the app?\n\n-- \nAnna"
    )
    assert strip_agent_reply(reply) == "\n#time 10m\n\n#wait\n\nYes, since today."
    stripped_first = parse(strip_agent_reply(reply))
    parsed_first = parse(reply)
    assert stripped_first.commands == parsed_first.commands
    assert stripped_first.body == strip_agent_reply(parsed_first.body) == "Yes, since today."
    assert strip_agent_reply("#close\n\n> old\n> text") == "#close"


def test_inline_answers_are_kept() -> None:
    text = (
        "On Mon, 23 Nov 2026 at 10:00, Maria <maria@example.org> wrote:\n"
        "> Does it work on mobile?\n\nYes, since today.\n\n> And the app?"
    )
    assert strip_agent_reply(text) == "Yes, since today."


# --- real-world reply shapes -------------------------------------------------------------------

SIGNER = TokenSigner(b"test-secret-for-reply-shapes")
TOKEN = SIGNER.sign(1042)
REPLY_TO = reply_address("support@example.com", 1042, TOKEN)
NOTIFICATION = (
    "New ticket #1042 from Maria Rossi <maria@example.org>.\n\n"
    "  Plan:      Gold\n  Severity:  L2\n\n"
    "-------------------------------------------------------------------------\n"
    "The checkout fails with error 500 since this morning.\n"
    "-------------------------------------------------------------------------\n\n"
    "Reply to this mail to answer the customer. Commands on the first lines:\n"
    f"{help_text()}\n\n{footer_line(TOKEN)}"
)
NEW_TEXT = {
    "en": "Hi Maria,\n\nthe checkout works again: the payment module was updated.\n"
    "Please try once more and tell us if it fails.",
    "sv": "Hej Maria,\n\nkassan fungerar igen. Prova gärna en gång till.",
    "it": "Buongiorno Maria,\n\nil checkout funziona di nuovo. Può riprovare?",
}
COMMANDS = "#time 1h30 checkout fix\n#severity 3\n#close\n"
SIGNATURE = "-- \nAnna Lind\nACME Support | +46 8 123 456"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.split("\n"))


SHAPES: dict[str, tuple[str, str]] = {
    "outlook": (
        "en",
        "{commands}\n{new}\n\n{signature}\n\n________________________________\n"
        f"From: Maria Rossi via Support <support@example.com>\n"
        "Sent: Monday, November 23, 2026 10:00 AM\n"
        "To: Anna Lind <anna@example.com>\n"
        "Subject: [#1042] Checkout broken\n\n"
        f"{NOTIFICATION}\n",
    ),
    "outlook-original-message": (
        "en",
        "{commands}\n{new}\n\n{signature}\n\n-----Original Message-----\n"
        "From: Support [mailto:support@example.com]\n"
        "Sent: Monday, November 23, 2026 10:00 AM\n"
        "To: Anna Lind\n"
        "Subject: [#1042] Checkout broken\n\n"
        f"{NOTIFICATION}\n",
    ),
    "gmail": (
        "en",
        "{commands}\n{new}\n\n{signature}\n\n"
        f"On Mon, 23 Nov 2026 at 10:00, Support <{REPLY_TO}> wrote:\n\n"
        f"{_quoted(NOTIFICATION)}\n",
    ),
    "gmail-wrapped-attribution": (
        "en",
        "{commands}\n{new}\n\n{signature}\n\n"
        f"On Mon, 23 Nov 2026 at 10:00, Maria Rossi via Support <\n{REPLY_TO}> wrote:\n\n"
        f"{_quoted(NOTIFICATION)}\n",
    ),
    "apple-mail": (
        "en",
        "{commands}\n{new}\n\n{signature}\n\n"
        f"> On 23 Nov 2026, at 10:00, Support <{REPLY_TO}> wrote:\n>\n"
        f"{_quoted(NOTIFICATION)}\n",
    ),
    "outlook-swedish": (
        "sv",
        "{commands}\n{new}\n\n{signature}\n\n"
        "Från: Maria Rossi via Support <support@example.com>\n"
        "Skickat: den 23 november 2026 10:00\n"
        "Till: Anna Lind <anna@example.com>\n"
        "Ämne: [#1042] Checkout broken\n\n"
        f"{NOTIFICATION}\n",
    ),
    "italian": (
        "it",
        "{commands}\n{new}\n\n{signature}\n\n"
        f"Il giorno lun 23 nov 2026 alle ore 10:00 Support <{REPLY_TO}> ha scritto:\n\n"
        f"{_quoted(NOTIFICATION)}\n",
    ),
}


def _reply(shape: str, *, commands: str = COMMANDS, signature: str = SIGNATURE) -> tuple[str, str]:
    language, template = SHAPES[shape]
    new = NEW_TEXT[language]
    text = template.format(commands=commands, new=new, signature=signature)
    return text.replace("\n", "\r\n"), new


def test_an_unseparated_notification_is_not_relayed() -> None:
    # new_text finds no split when "-----Original Message-----" is the first line.
    text = f"-----Original Message-----\nFrom: Support\nSent: Monday\n\n{NOTIFICATION}"
    assert strip_agent_reply(text) == ""
    # Without the notification's command help, the text cannot be told from an answer.
    plain = "-----Original Message-----\nFrom: Support\nSent: Monday\n\nNew ticket."
    assert strip_agent_reply(plain) == plain


@pytest.mark.parametrize("shape", SHAPES)
def test_reply_shapes_give_commands_and_exactly_the_new_text(shape: str) -> None:
    text, new = _reply(shape)
    block = parse(text)
    assert block.errors == ()
    assert kinds(block) == [CommandKind.TIME, CommandKind.SEVERITY, CommandKind.CLOSE]
    assert block.total_minutes == parse_duration("1h30")
    assert block.first(CommandKind.TIME) == Command(
        CommandKind.TIME, arg="1h30", minutes=90, description="checkout fix", line=1
    )
    assert strip_agent_reply(block.body) == new
    stripped_first = parse(strip_agent_reply(text))
    assert (stripped_first.commands, stripped_first.body) == (block.commands, new)
    # The notification's help text, quoted below, is never taken for commands.
    assert tokens_in_text(text) == (TOKEN,)


@pytest.mark.parametrize("shape", SHAPES)
def test_reply_shapes_with_a_sign_off_instead_of_a_signature(shape: str) -> None:
    text, new = _reply(shape, signature="Best regards,\nAnna")
    block = parse(text)
    assert strip_agent_reply(block.body) == new


@pytest.mark.parametrize("shape", SHAPES)
def test_reply_shapes_with_commands_only_relay_nothing(shape: str) -> None:
    _language, template = SHAPES[shape]
    text = template.format(commands="#wait\n#note", new="", signature="").replace("\n\n\n", "\n")
    block = parse(text)
    assert kinds(block) == [CommandKind.WAIT, CommandKind.NOTE]
    assert strip_agent_reply(block.body) == ""
    stripped_first = parse(strip_agent_reply(text))
    assert (stripped_first.commands, stripped_first.body) == (block.commands, "")
