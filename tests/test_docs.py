"""The README and docs/ held to the code: generated config reference, CLI, links, shape.

- docs/configuration.md is exactly what ``ingest.reference`` generates from the SPEC;
- every command and option of ``ingest.cli.build_parser()`` is in docs/cli.md (with its
  help text), and every command the docs or the README name exists;
- README.md is short and starts with the two fresh-machine commands;
- every relative link (and its #anchor) in README.md and docs/*.md resolves, and so does
  every ``docs/<page>.md#anchor`` cited in the code;
- every TOML example in README.md and docs/ is a valid config.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from ingest import config, reference
from ingest.cli import build_parser

from .conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
# The pages the reference is made of (issue 12, item 4); more may be added.
PAGES = ("configuration", "cli", "fetching", "cleaning", "dedup", "daemon", "feeds", "benchmarks", "development",
         "facts")
README_MAX_LINES = 250
COMMON_SECTION = "Options every command takes"


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _markdown_files() -> list[Path]:
    return [README, *_pages()]


# ---------------------------------------------------------------------------- markdown helpers

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)


def _without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked (links inside code are not links)."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE_SPAN.sub(" ", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link into ``path`` may name: heading slugs (numbered when repeated) and <a id>."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    counts: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)):
        base = slug(match.group(2))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the text under it, up to the next heading of the same or a higher level."""
    out: dict[str, str] = {}
    pattern = re.compile(rf"^#{{1,{level}}}[ \t]+(.+?)[ \t]*$", re.MULTILINE)
    stripped = _FENCE.sub(lambda m: m.group(0).replace("#", "\u2063"), text)  # no headings inside code
    matches = list(pattern.finditer(stripped))
    for here, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else len(text)
        out[here.group(1)] = text[here.end():end]
    return out


def code_tokens(text: str) -> set[str]:
    """Words and options inside code spans and fenced blocks (``-o PATH`` gives ``-o`` and ``PATH``)."""
    spans = [m.group(2) for m in _CODE_SPAN.finditer(_FENCE.sub(" ", text))]
    spans += [m.group(0) for m in _FENCE.finditer(text)]
    tokens: set[str] = set()
    for span in spans:
        tokens.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", span))
        tokens.update(re.findall(r"[A-Za-z][\w-]*", span))
    return tokens


def _plain(text: str) -> str:
    """Text compared with help strings: markdown escapes and emphasis dropped, spaces collapsed."""
    text = text.replace("\\|", "|").replace("\\", "")
    return " ".join(text.split())


# ---------------------------------------------------------------------------- the parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _sub_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Option string -> action, -h/--help left out."""
    return {
        option: action
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        for option in action.option_strings
    }


def _help(action: argparse.Action) -> str | None:
    if not action.help or action.help == argparse.SUPPRESS:
        return None
    return action.help % {**vars(action), "default": action.default} if "%(" in action.help else action.help


PARSER = build_parser()
COMMANDS = _subparsers(PARSER)
# options every subcommand takes (the parser's shared parent): documented once
COMMON = set.intersection(*(set(_options(p)) for p in COMMANDS.values())) if COMMANDS else set()


# ---------------------------------------------------------------------------- (a) configuration.md


def test_configuration_page_is_what_the_generator_makes_now() -> None:
    page = DOCS / "configuration.md"
    assert page.is_file(), f"docs/configuration.md is missing: run `{reference.COMMAND}`"
    assert page.read_text(encoding="utf-8") == reference.configuration_markdown(), (
        f"docs/configuration.md is out of date with ingest.config: run `{reference.COMMAND}`"
    )


def test_configuration_page_names_every_key_and_its_default() -> None:
    page = reference.configuration_markdown()
    for section, keys in config.SPEC.items():
        for key, (_check, description) in keys.items():
            assert f"| `{key}` |" in page and description in page, f"{section}.{key} missing from the reference"
    assert "[store]" in page and "[[sources]]" in page and "## sources_files" in page


BOUNDED = [f"{s}.{k}" for s, keys in config.SPEC.items() for k, (check, _) in keys.items() if reference.bounds(check)]


def test_most_keys_have_bounds_the_page_can_show() -> None:
    assert len(BOUNDED) >= 20, BOUNDED  # today 30: a describer that stopped seeing bounds fails here


@pytest.mark.parametrize("where", BOUNDED)
def test_described_bounds_are_the_bounds_the_check_enforces(where: str) -> None:
    """The bounds the page prints are read from the check: each edge passes, just beyond it fails."""
    section, key = where.split(".")
    check, _ = config.SPEC[section][key]
    low, high = reference.bounds(check)  # type: ignore[misc]
    integer = reference.describe(check).startswith("integer")
    for edge, direction in ((low, -1), (high, 1)):
        if edge is None:
            continue
        value = int(edge) if integer else float(edge)
        check(value)  # the edge itself is accepted
        step = 1 if integer else 1e-6 * max(1.0, abs(value))
        with pytest.raises(ValueError):
            check(value + direction * step)


def test_an_unknown_check_is_refused_by_name() -> None:
    def mystery(value: object) -> object:
        return value

    with pytest.raises(ValueError, match="teach ingest/reference.py"):
        reference.describe(mystery)


@pytest.mark.parametrize("seconds, text", [(900.0, "15m"), (86400.0, "1d"), (0.5, "0.5s"), (90.0, "90s"), (0.0, "0s")])
def test_durations_are_written_as_the_config_writes_them(seconds: float, text: str) -> None:
    assert reference.duration_text(seconds) == text
    assert config.parse_duration(text) == seconds


# ---------------------------------------------------------------------------- (b) cli.md and the README's table

_COMMAND_HEADING = re.compile(r"^`ingest(?: ([a-z][a-z-]*))?`")


def _cli_sections() -> tuple[dict[str | None, str], str]:
    """docs/cli.md by command (None: the top-level ``ingest``), and the common-options section."""
    found: dict[str | None, str] = {}
    common = ""
    for heading, body in sections((DOCS / "cli.md").read_text(encoding="utf-8")).items():
        match = _COMMAND_HEADING.match(heading)
        if match:
            found[match.group(1)] = body
        elif heading == COMMON_SECTION:
            common = body
    return found, common


def _documented(option: str, action: argparse.Action, body: str, where: str) -> None:
    assert option in code_tokens(body), f"docs/cli.md: {where} does not document {option}"
    help_text = _help(action)
    if help_text:
        assert _plain(help_text) in _plain(body), f"docs/cli.md: {where}: the help of {option} is not {help_text!r}"


def test_cli_page_documents_every_command_and_option() -> None:
    found, common = _cli_sections()
    assert common, f"docs/cli.md has no '## {COMMON_SECTION}' section"
    assert None in found, "docs/cli.md has no '## `ingest`' section for the daemon and --once"
    for option in sorted(COMMON):
        _documented(option, _options(PARSER)[option], common, COMMON_SECTION)
    for option, action in _options(PARSER).items():
        if option not in COMMON:
            _documented(option, action, found[None], "`ingest`")
    for name, sub in COMMANDS.items():
        assert name in found, f"docs/cli.md has no '## `ingest {name}`' section"
        body = found[name]
        assert _plain(_sub_help(PARSER)[name]) in _plain(body), f"docs/cli.md: `ingest {name}` lacks its help line"
        for option, action in _options(sub).items():
            if option not in COMMON:
                _documented(option, action, body, f"`ingest {name}`")
        for action in sub._actions:
            if not action.option_strings and _help(action):  # positionals
                assert _plain(_help(action)) in _plain(body), f"docs/cli.md: `ingest {name}` lacks {action.dest}"


def test_cli_page_names_no_command_the_parser_lacks() -> None:
    found, _ = _cli_sections()
    unknown = sorted(name for name in found if name is not None and name not in COMMANDS)
    assert not unknown, f"docs/cli.md documents commands the parser does not have: {unknown}"
def _readme_command_rows() -> list[tuple[str, str]]:
    """(usage in the first cell, whole row) of every table row that starts with `ingest ...`."""
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`(ingest[^`]*)`", line)
        if match:
            rows.append((match.group(1), line))
    return rows


def test_readme_command_table_matches_the_parser() -> None:
    rows = _readme_command_rows()
    assert rows, "README.md has no command table (rows starting with | `ingest ...`)"
    named: set[str] = set()
    shown: dict[str | None, set[str]] = {}
    for usage, row in rows:
        words = usage.split()[1:]
        command = words[0] if words and not words[0].startswith("-") else None
        if command is not None:
            assert command in COMMANDS, f"README.md names a command the parser lacks: {command}"
            help_line = _sub_help(PARSER)[command]
            assert _plain(help_line) in _plain(row), f"README.md: `ingest {command}` does not say {help_line!r}"
            named.add(command)
        known = _options(COMMANDS[command] if command else PARSER)
        given = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", usage))
        for option in sorted(given):
            assert option in known, f"README.md: `{usage}`: {option} is not an option of it"
        shown.setdefault(command, set()).update(given)
    missing = sorted(set(COMMANDS) - named)
    assert not missing, f"README.md's command table lacks: {missing}"
    for command, given in shown.items():
        options = {o for o, a in _options(COMMANDS[command] if command else PARSER).items() if o not in COMMON}
        # one spelling of each option is enough (-o or --output)
        lacking = sorted(
            a.option_strings[-1] for a in {_options(COMMANDS[command] if command else PARSER)[o] for o in options}
            if not set(a.option_strings) & given
        )
        assert not lacking, f"README.md's rows for `ingest {command or ''}` lack {lacking}"


# ---------------------------------------------------------------------------- (c) README.md


def _first_block(text: str) -> list[str]:
    match = _FENCE.search(text)
    assert match, "README.md has no code block"
    return match.group(0).splitlines()[1:-1]


def _ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return next(line for line in reversed(lines) if line.strip() and not line.startswith("#"))


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    assert lines[0].startswith("# ") and lines[1] == "", "README.md starts with its title"
    assert lines[2].startswith("```"), "README.md: the two commands come right after the title"
    block = _first_block(text)
    assert len(block) == 4 and block[0].startswith("# (a)") and block[2].startswith("# (b)"), block
    demo, tests = block[1], block[3]
    assert demo.startswith("python3 -m venv .venv && ") and "ingest --once -c config/demo.toml" in demo
    # .ci/run runs command (b); pip's -q is the only difference it may add
    assert tests == _ci_test_command().replace("pip install -q ", "pip install "), (tests, _ci_test_command())


def test_readme_says_how_to_use_your_own_feeds_on_the_first_screen() -> None:
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:60])
    assert "ingest.example.toml" in head and "--once -c ingest.toml" in head and "ingest clusters" in head


# ---------------------------------------------------------------------------- (d) links and anchors


def _links(path: Path) -> list[str]:
    return _LINK.findall(_without_code(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such anchor)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_docs_anchors_cited_in_the_code_exist() -> None:
    """Code comments cite measurements as ``docs/facts.md#anchor``: each must resolve."""
    cited = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
    broken = []
    files = [*ROOT.joinpath("ingest").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py"),
             *ROOT.joinpath("config").iterdir(), ROOT / "pyproject.toml"]
    for file in files:
        for page, anchor in cited.findall(file.read_text(encoding="utf-8")):
            if page == "configuration.md" and not anchor:
                continue  # named as the generator's output
            if not (DOCS / page).is_file():
                broken.append(f"{file.relative_to(ROOT)}: docs/{page}")
            elif anchor and anchor not in anchors(DOCS / page):
                broken.append(f"{file.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert not broken, f"citations of docs that do not exist: {broken}"


def test_the_code_cites_no_notes_outside_the_repository() -> None:
    """Measured facts are cited from docs/; FINDINGS.md is third-party notes outside the repository."""
    files = [*ROOT.joinpath("ingest").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py"),
             *ROOT.joinpath("config").iterdir(), ROOT / "pyproject.toml"]
    citing = [str(f.relative_to(ROOT)) for f in files if "FINDINGS" in f.read_text(encoding="utf-8")]
    assert not citing, f"cite docs/facts.md instead of FINDINGS.md in: {citing}"


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Feeds out, search, retention, re-clustering") == "feeds-out-search-retention-re-clustering"
    assert slug("`ingest items`") == "ingest-items"
    assert slug("[[sources]]") == "sources" and slug("sources_files") == "sources_files"


# ---------------------------------------------------------------------------- (e) the pages, and their examples


def test_docs_has_the_reference_pages() -> None:
    found = {p.stem for p in _pages()}
    assert len(found) >= 5 and set(PAGES) <= found, f"docs/ lacks {sorted(set(PAGES) - found)}"


_TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_toml_examples_are_valid_configs(path: Path, tmp_path: Path) -> None:
    """Every ```toml block loads as a config (the source-list files it names exist, empty)."""
    for block in _TOML_BLOCK.findall(path.read_text(encoding="utf-8")):
        raw = tomllib.loads(block)
        for name in raw.get("sources_files", []):
            if not any(c in name for c in "*?["):
                target = tmp_path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("" if name.endswith(".toml") else '<opml version="2.0"><body/></opml>\n')
        config.from_dict(raw, tmp_path / "ingest.toml")
