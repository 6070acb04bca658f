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
from typing import Iterable, Mapping, Sequence

from ingest.errors import ConfigError
from ingest.models import Document, Removal
from ingest.text import normalize_words

SCOPES = ("whole", "edge", "tail")
# Edge zones (see _strip_edge): how many unclaimed short paragraphs may sit between a
# boilerplate paragraph and the END of the text. Sites stack prompts and credits at the
# end, and an unknown one is one line (< 200 chars in every fixture case). At the start
# no slack: a short news lead is common there, and a disclosure after it is article text.
EDGE_SLACK = 2
EDGE_SHORT_CHARS = 200


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
    """``document`` with boilerplate paragraphs removed and the removals recorded (in text order)."""
    removals: list[tuple[int, Removal]] = []  # (paragraph index, removal): sorted at the end
    kept: list[tuple[int, str]] = []

    # 1. per-source patterns: remove what they match, drop paragraphs left empty
    for index, paragraph in enumerate(document.paragraphs):
        for pattern in rules.source_patterns:
            paragraph, removed = _cut(pattern, paragraph)
            removals += [(index, Removal(f"source:{pattern.pattern}", text, "inline")) for text in removed]
        if paragraph.strip():
            kept.append((index, paragraph.strip()))

    # 2. whole-paragraph rules and learned paragraphs, anywhere
    whole = [r for r in rules.rules if r.scope == "whole"]
    survivors: list[tuple[int, str]] = []
    for index, paragraph in kept:
        name = _claim(paragraph, whole, learned)
        if name:
            removals.append((index, Removal(name, paragraph, "whole")))
        else:
            survivors.append((index, paragraph))

    # 3. tail sentences glued to the last paragraph
    tails = [r for r in rules.rules if r.scope == "tail"]
    while survivors and tails:
        index, last = survivors[-1]
        match, rule = next(((m, r) for r in tails if (m := _last_match(r.regex, last))), (None, None))
        if match is None or rule is None:
            break
        removals.append((index, Removal(rule.name, match.group().strip(), "end")))
        last = last[: match.start()].rstrip()
        if last:
            survivors[-1] = (index, last)
            break
        survivors.pop()

    # 4. edge zones: boilerplate paragraphs near either end, up to the article text
    edge = [r for r in rules.rules if r.scope in ("edge", "whole")]
    survivors, end_removed = _strip_edge(survivors[::-1], edge, learned, "end", EDGE_SLACK)
    survivors, start_removed = _strip_edge(survivors[::-1], edge, learned, "start", 0)
    removals += end_removed + start_removed

    if not survivors:  # never clean an article down to nothing: keep the input
        return replace(document, notes=document.notes + ("cleaning would remove every paragraph: kept as is",))
    ordered = tuple(removal for _, removal in sorted(removals, key=lambda item: item[0]))
    return replace(document, text="\n\n".join(p for _, p in survivors), removals=document.removals + ordered)


def strip_learned(text: str, learned: frozenset[str]) -> tuple[str, tuple[Removal, ...]]:
    """``text`` (stored clean text) without its learned paragraphs, and what was taken out.

    Used to re-clean a source's earlier items when a paragraph is learned; like
    ``clean`` it never removes every paragraph.
    """
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    kept = [p for p in paragraphs if paragraph_key(p) not in learned]
    if not kept or len(kept) == len(paragraphs):
        return text, ()
    removed = tuple(Removal("learned", p, "whole") for p in paragraphs if paragraph_key(p) in learned)
    return "\n\n".join(kept), removed


def _strip_edge(
    paragraphs: list[tuple[int, str]], rules: list[Rule], learned: frozenset[str], position: str, slack: int
) -> tuple[list[tuple[int, str]], list[tuple[int, Removal]]]:
    """Remove claimed paragraphs from the front of ``paragraphs`` (one end of the text).

    Up to ``slack`` short unclaimed paragraphs may stand between a claimed one and the
    end: a site glues several prompts on, and one that no rule knows ("Follow X on
    Y", a trust-principles link) must not shield a disclaimer behind it. The
    unclaimed paragraphs themselves stay; a long one ends the zone (article prose).
    """
    kept: list[tuple[int, str]] = []
    removed: list[tuple[int, Removal]] = []
    used = 0
    for at, (index, paragraph) in enumerate(paragraphs):
        name = _claim(paragraph, rules, learned)
        if name:
            removed.append((index, Removal(name, paragraph, position)))
            continue
        if len(paragraph) > EDGE_SHORT_CHARS or used >= slack:
            kept += paragraphs[at:]
            break
        used += 1
        kept.append((index, paragraph))
    return kept, removed


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


# ---------------------------------------------------------------------------- learned boilerplate

# Two carriers of a paragraph are versions of one text when the rest of their
# paragraphs overlap by at least this share (length-weighted Jaccard).
SAME_TEXT = 0.5


def learnable(
    frequent: Sequence[str], contents: Mapping[int, Mapping[str, int]], min_count: int
) -> list[tuple[str, int]]:
    """(key, texts seen in) of the paragraphs in ``frequent`` that are boilerplate.

    ``contents`` is item id -> paragraph key -> length for a source's recent items
    (learned boilerplate left out). A paragraph is boilerplate when it stands in
    ``min_count`` or more *different texts*: items count, but versions of one text
    count once. Two carriers are one text when the rest of their paragraphs (this one
    left out) overlap by SAME_TEXT or more, weighted by length. So successive
    versions of one story ("UPDATE 1", "UPDATE 2" under new guids) never make their
    shared article paragraphs boilerplate, while short items that dedup put in one
    cluster *because* of a shared footer still teach it.
    """
    out = []
    for key in frequent:
        carriers = [
            {k: c for k, c in content.items() if k != key}
            for _item_id, content in sorted(contents.items()) if key in content
        ]
        seen = distinct_texts(carriers)
        if seen >= min_count:
            out.append((key, seen))
    return out


def distinct_texts(carriers: Sequence[Mapping[str, int]]) -> int:
    """How many of ``carriers`` (paragraph key -> length) are not versions of an earlier one."""
    distinct: list[Mapping[str, int]] = []
    for content in carriers:
        if all(_weighted_jaccard(content, other) < SAME_TEXT for other in distinct):
            distinct.append(content)
    return len(distinct)


def _weighted_jaccard(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    union = sum(a.values()) + sum(c for k, c in b.items() if k not in a)
    if union == 0:
        return 1.0  # two items that are nothing but this paragraph: one text
    return sum(c for k, c in a.items() if k in b) / union
