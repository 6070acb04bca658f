"""Remove disclaimers and boilerplate from a Document, keeping what was removed.

``clean(document, rules, learned) -> Document``. Rules work on whole paragraphs, so an
article that quotes a disclaimer's words inside its own prose keeps them:

- ``whole`` rules match an entire paragraph (a cookie banner, an "Also read: ..." line)
  and remove it wherever it stands;
- ``edge`` rules match from a paragraph's start and remove it only while it is part of
  the leading or trailing run of boilerplate (a disclaimer, a byline, a wire credit);
- ``tail`` rules cut a trailing sentence glued to the last paragraph ("The post ...
  appeared first on ...");
- per-source ``strip`` patterns from the config remove what they match in any paragraph;
- learned paragraphs (recurring verbatim across a source's items) go wherever they stand.

Every removal is returned in ``Document.removals`` with the rule's name.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Iterable

from ingest.errors import ConfigError
from ingest.models import Document, Removal
from ingest.text import normalize_words

SCOPES = ("whole", "edge", "tail")


@dataclass(frozen=True)
class Rule:
    name: str
    scope: str
    regex: re.Pattern[str]
    example: str = ""
    keeps: tuple[str, ...] = ()
    max_chars: int = 2000
    full: bool = False  # edge rules: the pattern must match the whole paragraph

    def matches(self, paragraph: str) -> bool:
        """Does this (whole or edge) rule claim the whole paragraph?"""
        if len(paragraph) > self.max_chars:
            return False
        if self.scope == "whole" or self.full:
            return self.regex.fullmatch(paragraph) is not None
        return self.regex.match(paragraph) is not None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source_patterns: tuple[re.Pattern[str], ...] = ()

    def with_source_patterns(self, patterns: Iterable[str]) -> "RuleSet":
        return replace(self, source_patterns=tuple(re.compile(p, re.MULTILINE) for p in patterns))


def load_rules(text: str, origin: str = "rules") -> tuple[Rule, ...]:
    """Rules from a TOML document of ``[[rule]]`` tables (see ingest/rules/builtin.toml)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    rules = []
    for index, table in enumerate(raw.get("rule", [])):
        try:
            if table["scope"] not in SCOPES:
                raise ValueError(f"scope must be one of {SCOPES}")
            rules.append(
                Rule(
                    name=table["name"],
                    scope=table["scope"],
                    regex=re.compile(table["pattern"].strip(), re.IGNORECASE | re.DOTALL),
                    example=table.get("example", ""),
                    keeps=tuple(table.get("keeps", ())),
                    max_chars=int(table.get("max_chars", 2000)),
                    full=bool(table.get("full", False)),
                )
            )
        except (KeyError, ValueError, re.error) as exc:
            raise ConfigError(f"{origin}: rule {index}: {exc}") from None
    return tuple(rules)


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    """The rules shipped in ingest/rules/builtin.toml."""
    text = resources.files("ingest").joinpath("rules/builtin.toml").read_text(encoding="utf-8")
    return load_rules(text, "ingest/rules/builtin.toml")


def ruleset(builtin: bool, source_patterns: Iterable[str] = ()) -> RuleSet:
    """The rules in force for one source."""
    return RuleSet(builtin_rules() if builtin else ()).with_source_patterns(source_patterns)


def paragraph_key(paragraph: str) -> str:
    """Normalised identity of a paragraph (case, spacing and punctuation ignored)."""
    return hashlib.sha1(" ".join(normalize_words(paragraph)).encode("utf-8")).hexdigest()[:16]


def clean(document: Document, rules: RuleSet, learned: frozenset[str] = frozenset()) -> Document:
    """``document`` with boilerplate paragraphs removed and the removals recorded."""
    paragraphs = document.paragraphs
    removals: list[Removal] = []
    kept: list[str] = []

    # 1. per-source patterns: remove what they match, drop paragraphs left empty
    for paragraph in paragraphs:
        for pattern in rules.source_patterns:
            paragraph, removed = _cut(pattern, paragraph)
            removals += [Removal(f"source:{pattern.pattern}", text, "inline") for text in removed]
        if paragraph.strip():
            kept.append(paragraph.strip())

    # 2. whole-paragraph rules and learned paragraphs, anywhere
    whole = [r for r in rules.rules if r.scope == "whole"]
    survivors: list[str] = []
    for paragraph in kept:
        name = _claim(paragraph, whole, learned)
        if name:
            removals.append(Removal(name, paragraph, "whole"))
        else:
            survivors.append(paragraph)

    # 3. tail sentences glued to the last paragraph
    tails = [r for r in rules.rules if r.scope == "tail"]
    while survivors and tails:
        last, cut_by = survivors[-1], None
        for rule in tails:
            match = _last_match(rule.regex, last)
            if match:
                cut_by = rule
                removals.append(Removal(rule.name, match.group().strip(), "end"))
                last = last[: match.start()].rstrip()
                break
        if cut_by is None:
            break
        if last:
            survivors[-1] = last
            break
        survivors.pop()

    # 4. edge runs: strip boilerplate paragraphs from both ends until article text
    edge = [r for r in rules.rules if r.scope in ("edge", "whole")]
    end_removed: list[Removal] = []
    while survivors:
        name = _claim(survivors[-1], edge, learned)
        if not name:
            break
        end_removed.insert(0, Removal(name, survivors.pop(), "end"))
    removals += end_removed
    start_removed = []
    while survivors:
        name = _claim(survivors[0], edge, learned)
        if not name:
            break
        start_removed.append(Removal(name, survivors.pop(0), "start"))
    removals = start_removed + removals

    if not survivors:  # never clean an article down to nothing: keep the input
        return replace(document, notes=document.notes + ("cleaning would remove every paragraph: kept as is",))
    return replace(document, text="\n\n".join(survivors), removals=document.removals + tuple(removals))


def _claim(paragraph: str, rules: list[Rule], learned: frozenset[str]) -> str | None:
    for rule in rules:
        if rule.matches(paragraph):
            return rule.name
    if learned and paragraph_key(paragraph) in learned:
        return "learned"
    return None


def _cut(pattern: re.Pattern[str], paragraph: str) -> tuple[str, list[str]]:
    removed = [m.group() for m in pattern.finditer(paragraph) if m.group().strip()]
    if not removed:
        return paragraph, []
    return pattern.sub("", paragraph), removed


def _last_match(regex: re.Pattern[str], text: str) -> re.Match[str] | None:
    """A match of ``regex`` that ends the text and starts a sentence (or the paragraph)."""
    for start in _sentence_starts(text):
        match = regex.fullmatch(text, start)
        if match:
            return match
    return None


def _sentence_starts(text: str) -> list[int]:
    starts = [0] + [m.end() for m in re.finditer(r"[.!?…»\"”)]\s+", text)]
    return starts
