"""``customers_from:``: customer entries from CSV and YAML files beside rules.yaml.

Every problem class with its exact text (file, line, column or CSV column, field), duplicates
across the inline entries and the files, ``check`` warnings placed in the files, the files in
the ruleset version and the reload watch.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from mailbot.cli import EXIT_FAILURE, EXIT_OK, main
from mailbot.errors import RulesError
from mailbot.policy import Policy, content_version, load_policy
from mailbot.reload import RulesReloader
from mailbot.rules.customer_files import customer_files, read_csv, separator
from mailbot.rules.customers import resolve_customer
from mailbot.rules.lint import lint, lint_file
from mailbot.rules.loader import MAX_FILE_PROBLEMS, RulesErrorWithFiles, load_rules
from mailbot.rules.schema import Rules

REPO = Path(__file__).resolve().parents[2]

RULES = textwrap.dedent(
    """\
    version: 1
    identity: {address: support@example.com, name: Example Support}
    timezone: Europe/Stockholm
    languages: [en, sv]
    plans:
      core: {name: Core, first_response: {working_days: 3}}
      pro: {name: Pro, first_response: {working_hours: 8}}
    default_plan: core
    accounts:
      nordic-decor: {name: Nordic Decor AB}
    customers:
      - {match: "@shop.se", plan: pro}
      - {match: anna@butik.se, plan: pro, name: Anna}
    customers_from:
    """
)

CSV = "match,plan,name,language,account\n@nordicdecor.se,pro,Nordic Decor,sv,nordic-decor\n"


def write_rules(tmp_path: Path, files: dict[str, str | bytes], rules: str = RULES) -> Path:
    """rules.yaml including ``files`` in their order (a name starting with '-' is written
    but not included), returns its path."""
    included = "".join(f"  - {name}\n" for name in files if not name.startswith("-"))
    for name, content in files.items():
        path = tmp_path / name.lstrip("-")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules + included, encoding="utf-8")
    return rules_path


def problems(tmp_path: Path, files: dict[str, str | bytes], rules: str = RULES) -> list[str]:
    """The problems of loading, with tmp_path/ taken off the file names."""
    with pytest.raises(RulesError) as info:
        load_rules(write_rules(tmp_path, files, rules))
    return [problem.replace(f"{tmp_path}/", "") for problem in info.value.problems]


def customers(rules: Rules) -> list[tuple[str, str, str | None, str | None, str | None]]:
    return [(c.match, c.plan, c.name, c.language, c.account) for c in rules.customers]


# -- loading -----------------------------------------------------------------------------


def test_csv_and_yaml_entries_come_after_the_inline_ones_in_file_order(tmp_path: Path) -> None:
    yaml_file = textwrap.dedent(
        """\
        - match: "@c.se"
          plan: core
          name: C
        - {match: bo@c.se, plan: pro, language: en}
        """
    )
    rules = load_rules(write_rules(tmp_path, {"customers.csv": CSV, "more/c.yaml": yaml_file}))
    assert customers(rules) == [
        ("@shop.se", "pro", None, None, None),
        ("anna@butik.se", "pro", "Anna", None, None),
        ("@nordicdecor.se", "pro", "Nordic Decor", "sv", "nordic-decor"),
        ("@c.se", "core", "C", None, None),
        ("bo@c.se", "pro", None, "en", None),
    ]
    assert rules.customers_from == ("customers.csv", "more/c.yaml")
    match = resolve_customer(rules, "Maja@NordicDecor.se")
    assert (match.plan_id, match.customer_name, match.account) == (
        "pro",
        "Nordic Decor",
        "nordic-decor",
    )


def test_only_inline_customers_still_work(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, {}, RULES.replace("customers_from:\n", "")))
    assert [c.match for c in rules.customers] == ["@shop.se", "anna@butik.se"]
    assert rules.customers_from == ()
    # Files alone, without inline entries.
    only = RULES.replace(
        'customers:\n  - {match: "@shop.se", plan: pro}\n'
        "  - {match: anna@butik.se, plan: pro, name: Anna}\n",
        "",
    )
    rules = load_rules(write_rules(tmp_path, {"c.csv": CSV}, only))
    assert [c.match for c in rules.customers] == ["@nordicdecor.se"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfmatch,plan,name\r\n@a.se,pro,A\r\n",  # Excel "CSV UTF-8": BOM, CRLF
        b"match;plan;name\n@a.se;pro;A\n",  # semicolons (Swedish, Italian spreadsheets)
        b"\xef\xbb\xbfMatch ; PLAN ; Name\n @a.se ; pro ; A \n",  # case, spaces, BOM
        b"match\tplan\tname\n@a.se\tpro\tA\n",  # tabs
        b"name,plan,match\nA,pro,@a.se\n",  # any column order
    ],
)
def test_csv_encodings_separators_and_headers(tmp_path: Path, raw: bytes) -> None:
    rules = load_rules(write_rules(tmp_path, {"c.csv": raw}))
    assert customers(rules)[2:] == [("@a.se", "pro", "A", None, None)]


def test_csv_quotes_empty_cells_blank_rows_and_lines(tmp_path: Path) -> None:
    csv_text = (
        "match;plan;name;language\n"
        '@a.se;pro;"Shop; ""Nord"" AB";\n'  # the separator and quotes inside quotes
        "\n"  # blank rows are skipped
        ";;;\n"
        'b@a.se;core;"two\nlines";sv\n'
        "c@a.se;prp\n"  # a short row: the missing cells are empty
    )
    with pytest.raises(RulesError) as info:
        load_rules(write_rules(tmp_path, {"c.csv": csv_text}))
    # The row after a cell on two lines is on line 7, and is named so.
    assert info.value.problems == [
        f"{tmp_path}/c.csv:7: plan: unknown plan 'prp' — did you mean 'pro'?"
    ]
    rules = load_rules(write_rules(tmp_path, {"c.csv": csv_text.replace("prp", "pro")}))
    assert customers(rules)[2:] == [
        ("@a.se", "pro", 'Shop; "Nord" AB', None, None),
        ("b@a.se", "core", "two\nlines", "sv", None),
        ("c@a.se", "pro", None, None, None),
    ]


def test_the_separator_is_what_the_header_has_most_of() -> None:
    assert separator("match,plan,name") == ","
    assert separator("match;plan;name") == ";"
    assert separator("match\tplan") == "\t"
    assert separator("match") == ","
    rows, found = read_csv("match;plan\n@a.se;pro\n")
    assert (found, [(r.line, r.values) for r in rows]) == (
        [],
        [(2, {"match": "@a.se", "plan": "pro"})],
    )


def test_yml_and_absolute_paths_and_a_header_only_csv(tmp_path: Path) -> None:
    elsewhere = tmp_path / "crm"
    elsewhere.mkdir()
    (elsewhere / "export.CSV").write_text(CSV, encoding="utf-8")
    files: dict[str, str | bytes] = {
        "c.yml": "- {match: x@y.se, plan: core}\n",
        "empty.csv": "match,plan\n",
    }
    rules_path = write_rules(tmp_path, files, RULES + f"  - {elsewhere / 'export.CSV'}\n")
    rules = load_rules(rules_path)
    assert [c.match for c in rules.customers[2:]] == ["@nordicdecor.se", "x@y.se"]
    assert customer_files(rules_path, rules) == (
        (elsewhere / "export.CSV").resolve(),
        (tmp_path / "c.yml").resolve(),
        (tmp_path / "empty.csv").resolve(),
    )


def test_twenty_thousand_csv_customers_load_and_lint(tmp_path: Path) -> None:
    """Thousands of entries: correct here; timed by bench/customers.py (0.3 s on the
    development machine), never asserted."""
    rows = "".join(
        f"user{i}@shop{i // 4}.example,{'pro' if i % 2 else 'core'},User {i}\n"
        for i in range(20_000)
    )
    rules_path = write_rules(tmp_path, {"c.csv": "match,plan,name\n" + rows})
    rules = load_rules(rules_path)
    assert len(rules.customers) == 20_002
    assert resolve_customer(rules, "user19999@shop4999.example").plan_id == "pro"
    assert lint(rules, None) == []


# -- problems in customer files ----------------------------------------------------------


def test_csv_field_problems_name_file_line_and_column(tmp_path: Path) -> None:
    csv_text = (
        "match,plan,name,language,account\n"
        "@a.se,prp,A,,\n"
        "b.se,pro,,,\n"
        "c@a.se,pro,,sw,\n"
        "d@a.se,pro,,it,\n"
        "e@a.se,pro,,,nordic-dekor\n"
        ",pro,F,,\n"
        "g@a.se,,G,,\n"
    )
    assert problems(tmp_path, {"customers.csv": csv_text}) == [
        "customers.csv:2: plan: unknown plan 'prp' — did you mean 'pro'?",
        "customers.csv:3: match: 'b.se' is neither an address ('a@b.se'), a domain ('@b.se')"
        " nor subdomains ('*.b.se')",
        "customers.csv:4: language: unknown language 'sw' — did you mean 'sv'?",
        "customers.csv:5: language: language 'it' is not in languages (en, sv)",
        "customers.csv:6: account: unknown account 'nordic-dekor' — did you mean 'nordic-decor'?",
        "customers.csv:7: match: required, but the cell is empty",
        "customers.csv:8: plan: required, but the cell is empty",
    ]


def test_csv_header_problems(tmp_path: Path) -> None:
    assert problems(tmp_path, {"c.csv": "match,plna,Nmae\n@a.se,pro,A\n"}) == [
        "c.csv:1: header: unknown column 'plna' — did you mean 'plan'? (columns: match, plan,"
        " name, language, account)",
        "c.csv:1: header: unknown column 'Nmae' — did you mean 'name'? (columns: match, plan,"
        " name, language, account)",
        "c.csv:1: header: no 'plan' column; the first row names the columns, match and plan"
        " are required (columns: match, plan, name, language, account)",
    ]
    assert problems(tmp_path, {"c.csv": "match,plan,name,plan\n"}) == [
        "c.csv:1: header: column 'plan' is named twice (columns 2 and 4)"
    ]
    assert problems(tmp_path, {"c.csv": "email;name\n"}) == [
        "c.csv:1: header: unknown column 'email' (columns: match, plan, name, language, account)",
        "c.csv:1: header: no 'match' and 'plan' columns; the first row names the columns,"
        " match and plan are required (columns: match, plan, name, language, account)",
    ]
    assert problems(tmp_path, {"c.csv": "\ufeff\n\n"}) == [
        "c.csv:1: the file is empty: its first row names the columns (match, plan, name,"
        " language, account; match and plan are required)"
    ]


def test_csv_row_and_syntax_problems(tmp_path: Path) -> None:
    csv_text = (
        "match,plan,\n"  # a nameless column: its cells must stay empty
        "@a.se,pro,\n"
        "@b.se,pro,oops\n"
        "@c.se,pro,,extra\n"
        '@d.se,"pro\n'
        "@e.se,pro\n"
    )
    assert problems(tmp_path, {"c.csv": csv_text}) == [
        "c.csv:3: column 3 has no name in the header but a value here",
        "c.csv:4: 4 cells, but the header names 3 columns (the separator is ','; quote a value"
        " that holds it)",
        "c.csv:5: CSV syntax error: unexpected end of data (the separator is ',')",
    ]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    latin1 = "match;plan;name\n@a.se;pro;Åsa\n".encode("latin-1")
    assert problems(tmp_path, {"c.csv": latin1}) == [
        "c.csv:2: the file is not UTF-8: byte 0xc5 at byte 11 of this line; save it as UTF-8"
        ' (in Excel: "CSV UTF-8")'
    ]


def test_yaml_file_problems_name_line_column_and_path_in_the_file(tmp_path: Path) -> None:
    yaml_file = textwrap.dedent(
        """\
        - match: "@a.se"
          plan: prp
        - {match: "@b.se", plan: pro, langage: sv}
        - just a string
        - match: c@a.se
          plan: pro
          plan: core
        """
    )
    assert problems(tmp_path, {"more/c.yaml": yaml_file}) == [
        "more/c.yaml:2:9: [0].plan: unknown plan 'prp' — did you mean 'pro'?",
        "more/c.yaml:3:31: [1].langage: unknown key 'langage' — did you mean 'language'?",
        "more/c.yaml:4:3: [2]: expected a mapping (key: value lines)",
        "more/c.yaml:7:3: [3].plan: duplicate key 'plan' (first at line 6)",
    ]


def test_yaml_file_shape_and_syntax_problems(tmp_path: Path) -> None:
    assert problems(tmp_path, {"c.yaml": "match: '@a.se'\nplan: pro\n"}) == [
        "c.yaml:1:1: (top level): expected a list of customer entries (- match: ..., plan:"
        " ...), as under customers:"
    ]
    assert problems(tmp_path, {"c.yaml": "# nobody yet\n"}) == [
        "c.yaml:1:1: the file is empty: write a YAML list of customer entries (- match: ...,"
        " plan: ...), or [] for none"
    ]
    assert problems(tmp_path, {"c.yaml": "- {match: '@a.se', plan: pro\n- x\n"}) == [
        "c.yaml:3:1: YAML syntax error: while parsing a flow mapping did not find expected"
        " ',' or '}'"
    ]
    assert load_rules(write_rules(tmp_path, {"c.yaml": "[]\n"})).customers_from == ("c.yaml",)


def test_problems_of_the_customers_from_list(tmp_path: Path) -> None:
    rules = RULES + "  - c.csv\n  - missing.csv\n  - customers.txt\n  - ./c.csv\n"
    found = problems(tmp_path, {"-c.csv": CSV, "-customers.txt": "x"}, rules)
    assert found == [
        "rules.yaml:16:5: customers_from[1]: cannot read missing.csv: No such file or directory",
        "rules.yaml:17:5: customers_from[2]: 'customers.txt' is neither a CSV file (.csv) nor a"
        " YAML file (.yaml, .yml)",
        "rules.yaml:18:5: customers_from[3]: './c.csv' is already included by customers_from[0]",
    ]
    not_a_list = RULES.replace("customers_from:\n", "customers_from: c.csv\n")
    assert problems(tmp_path, {}, not_a_list) == [
        "rules.yaml:14:17: customers_from: expected a list"
    ]


def test_problems_are_sorted_by_file_then_line_and_capped_per_file(tmp_path: Path) -> None:
    count = MAX_FILE_PROBLEMS + 50
    rows = "".join(f"u{i}@a.se,prp\n" for i in range(count))
    rules = RULES.replace("timezone: Europe/Stockholm", "timezone: Europe/Stokholm")
    found = problems(tmp_path, {"a.csv": "match,plan\n" + rows, "b.csv": "match,plna\n"}, rules)
    assert found[0].startswith("rules.yaml:3:11: timezone: unknown timezone")
    assert found[1] == "a.csv:2: plan: unknown plan 'prp' — did you mean 'pro'?"
    assert found[MAX_FILE_PROBLEMS] == (
        f"a.csv:{MAX_FILE_PROBLEMS + 1}: plan: unknown plan 'prp' — did you mean 'pro'?"
    )
    assert found[MAX_FILE_PROBLEMS + 1 :] == [
        "a.csv: 50 more problems not shown (at most 100 per customer file)",
        "b.csv:1: header: unknown column 'plna' — did you mean 'plan'? (columns: match, plan,"
        " name, language, account)",
        "b.csv:1: header: no 'plan' column; the first row names the columns, match and plan"
        " are required (columns: match, plan, name, language, account)",
    ]


# -- duplicates across sources -------------------------------------------------------------


def test_the_same_match_twice_names_both_places(tmp_path: Path) -> None:
    csv_text = "match,plan\n@Shop.se,core\nx@y.se,pro\nX@y.se,core\n"
    yaml_file = "- {match: x@y.se, plan: pro}\n- {match: anna@butik.se, plan: core}\n"
    assert problems(tmp_path, {"c.csv": csv_text, "d.yaml": yaml_file}) == [
        "c.csv:2: match: '@shop.se' is already matched by customers[0] (rules.yaml:12)",
        "c.csv:4: match: 'x@y.se' is already matched by c.csv:3",
        "d.yaml:1:11: [0].match: 'x@y.se' is already matched by c.csv:3",
        "d.yaml:2:11: [1].match: 'anna@butik.se' is already matched by customers[1]"
        " (rules.yaml:13)",
    ]


def test_rules_yaml_problems_keep_their_text_with_customer_files(tmp_path: Path) -> None:
    rules = RULES.replace("plan: pro, name: Anna}", "plan: prp, name: Anna}")
    rules += "  - c.csv\ncustomers_extra: 1\n"
    assert problems(tmp_path, {"-c.csv": CSV}, rules) == [
        "rules.yaml:13:34: customers[1].plan: unknown plan 'prp' — did you mean 'pro'?",
        "rules.yaml:16:1: customers_extra: unknown key 'customers_extra' — did you mean"
        " 'customers_from'?",
    ]


# -- mailbot check -----------------------------------------------------------------------


def test_check_warnings_about_file_entries_name_the_file_and_line(tmp_path: Path) -> None:
    csv_text = "match,plan,name,account\nbo@shop.se,core,Bo\n@nord.se,core,Nord,nordic-decor\n"
    yaml_file = "- {match: eva@nord.se, plan: core, name: Nord, account: nordic-decor}\n"
    rules_text = RULES.replace(
        "  - {match: anna@butik.se, plan: pro, name: Anna}\n",
        "  - {match: anna@butik.se, plan: pro, name: Anna}\n  - {match: per@nord.se, plan: pro}\n",
    )
    rules_path = write_rules(tmp_path, {"c.csv": csv_text, "d.yaml": yaml_file}, rules_text)
    rules = load_rules(rules_path)
    assert [w.replace(f"{tmp_path}/", "") for w in lint_file(rules, rules_path, None)] == [
        "warning: rules.yaml:14:13: customers[2].match: 'per@nord.se' is inside c.csv:3"
        " ('@nord.se', plan 'core') and gives plan 'pro' instead; if that is meant, name the"
        " same account in both",
        "warning: c.csv:2: match: 'bo@shop.se' is inside customers[0] (rules.yaml:12)"
        " ('@shop.se', plan 'pro') and gives plan 'core' instead; if that is meant, name the"
        " same account in both",
        "warning: d.yaml:1:11: [0].match: 'eva@nord.se' changes nothing: c.csv:3 ('@nord.se')"
        " already gives it plan 'core', the same name, language and account",
    ]


def test_mailbot_check_strict_fails_on_a_warning_in_a_customer_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = RULES.replace("languages: [en, sv]", "languages: [en, sv, it]")
    rules_path = write_rules(tmp_path, {"c.csv": "match,plan\n@nordicdecor.se,core\n"}, rules)
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(rules_path))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    assert main(["check"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "customers: 3;" in out and "warning" not in out
    # An address inside an inline domain, on another plan: the warning names the file.
    (tmp_path / "c.csv").write_text("match,plan\n@shop.se.example,core\nbo@shop.se,core\n")
    assert main(["check", "--strict"]) == EXIT_FAILURE
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (
        f"warning: {tmp_path}/c.csv:3: match: 'bo@shop.se' is inside customers[0]"
        f" ({rules_path}:12) ('@shop.se', plan 'pro') and gives plan 'core' instead; if that"
        " is meant, name the same account in both"
    )


# -- the ruleset: version and reload ---------------------------------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))


def test_customer_files_are_part_of_the_version(tmp_path: Path, templates: Path) -> None:
    site = tmp_path / "site"
    rules_path = write_rules(site, {"c.csv": CSV, "more/d.yaml": "[]\n"})
    policy = load_policy(rules_path, templates)
    assert policy.files == (rules_path, site / "c.csv", site / "more" / "d.yaml")
    assert policy.version == content_version(policy.files, templates)
    # A reload passes the running files: the same ruleset, read once.
    assert load_policy(rules_path, templates, expect=policy.files).version == policy.version
    (site / "c.csv").write_text(CSV.replace(",pro,", ",core,"), encoding="utf-8")
    changed = load_policy(rules_path, templates)
    assert changed.version != policy.version
    assert changed.rules.customers[2].plan == "core"
    # The same files in another directory are the same version.
    copy = Path(shutil.copytree(site, tmp_path / "elsewhere"))
    assert load_policy(copy / "rules.yaml", templates).version == changed.version


class Holder:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def swap(self, policy: Policy) -> None:
        self.policy = policy


async def test_editing_an_included_csv_reloads(tmp_path: Path, templates: Path) -> None:
    rules_path = write_rules(tmp_path, {"c.csv": CSV})
    holder = Holder(load_policy(rules_path, templates))
    reloader = RulesReloader(rules_path, templates, current=lambda: holder.policy, swap=holder.swap)
    assert await reloader.check() is None
    first = holder.policy.version

    (tmp_path / "c.csv").write_text(CSV.replace(",pro,", ",core,"), encoding="utf-8")
    outcome = await reloader.check()
    assert outcome is not None and outcome.ok and outcome.changed
    assert holder.policy.version != first
    assert resolve_customer(holder.policy.rules, "x@nordicdecor.se").plan_id == "core"

    # A broken row keeps the running rules; the error names the file and line.
    good = holder.policy
    (tmp_path / "c.csv").write_text(CSV.replace(",pro,", ",prp,"), encoding="utf-8")
    failed = await reloader.check()
    assert failed is not None and not failed.ok and holder.policy is good
    assert failed.error == (f"{tmp_path}/c.csv:2: plan: unknown plan 'prp' — did you mean 'pro'?")
    assert await reloader.check() is None  # the same broken content is not tried again


async def test_a_new_customer_file_is_watched_before_it_loads(
    tmp_path: Path, templates: Path
) -> None:
    rules_path = write_rules(tmp_path, {}, RULES.replace("customers_from:\n", ""))
    holder = Holder(load_policy(rules_path, templates))
    reloader = RulesReloader(rules_path, templates, current=lambda: holder.policy, swap=holder.swap)
    # rules.yaml names a file that is not there yet (deployed in the wrong order).
    rules_path.write_text(RULES + "  - new.csv\n", encoding="utf-8")
    failed = await reloader.check()
    assert failed is not None and not failed.ok and failed.error is not None
    assert "customers_from[0]: cannot read" in failed.error
    assert await reloader.check() is None
    # Creating it is a change: the reload succeeds without a SIGHUP.
    (tmp_path / "new.csv").write_text(CSV, encoding="utf-8")
    outcome = await reloader.check()
    assert outcome is not None and outcome.ok and outcome.changed
    assert holder.policy.files == (rules_path, (tmp_path / "new.csv").resolve())
    assert len(holder.policy.rules.customers) == 3


def test_a_failed_load_names_the_files_it_tried(tmp_path: Path) -> None:
    rules_path = write_rules(tmp_path, {"c.csv": "match,plan\n@a.se,prp\n"})
    with pytest.raises(RulesErrorWithFiles) as info:
        load_rules(rules_path)
    assert info.value.files == ((tmp_path / "c.csv").resolve(),)
