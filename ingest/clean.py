"""Remove disclaimers and boilerplate from a Document, keeping what was removed.

``clean(document, rules, learned) -> Document``. Rules work on whole paragraphs by
default, so an article that quotes a disclaimer's words inside its own prose keeps them:

- ``whole`` rules match an entire paragraph (a cookie banner, a comment form's notice)
  and remove it wherever it stands;
- ``edge`` rules match from a paragraph's start and remove it only while it is part of
  the leading or trailing run of boilerplate (a disclaimer, a byline, a wire credit).
  ``adjacent`` edge rules describe line shapes (a short line that is not a sentence)
  and claim only in the unbroken run at the very edge; a run of more than
  ``MAX_SHAPE_RUN`` such lines, or one after a line ending in a colon, is the article's
  own list and stays;
- ``tail`` rules cut a trailing sentence glued to the last paragraph ("The post ...
  appeared first on ...");
- ``suffix`` rules cut a credit closing ANY paragraph ("... the bank said. (AGENCY)",
  a caption's "Photograph: X", an "Also read: ..." link), ``prefix`` rules an agency's
  bare tag opening the article ("(AGENCY) The ..."; a dateline, "CITY (AGENCY) —", is
  article text and stays);
- per-source ``strip`` patterns from the config remove what they match in any paragraph;
- learned paragraphs (recurring verbatim across a source's items) go wherever they stand.

Rule files may share word lists (``[vocabulary]`` words, ``[grammar]`` regex fragments,
named ``{name}`` in patterns, see ``expand``), and a rule may test, instead of a
pattern, that a line is nothing but listed words (``WordTest``).

Every removal is returned in ``Document.removals`` with the rule's name.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Callable, Iterable, Mapping, Sequence

from ingest.errors import ConfigError
from ingest.models import Document, Removal
from ingest.text import normalize_words

SCOPES = ("whole", "edge", "tail", "suffix", "prefix")
EDGES = ("both", "start", "end")
# Edge zones (see _strip_edge): how many unclaimed short paragraphs may sit between a
# boilerplate paragraph and the END of the text. Sites stack prompts and credits at the
# end, and an unknown one is one line (< 200 chars in every fixture case). At the start
# only lines that are not sentences (a headline, a kicker) may sit in between: a short
# news lead is common there, and a disclosure after it is article text.
EDGE_SLACK = 2
START_SLACK = 2
EDGE_SHORT_CHARS = 200
# Line-shape rules (``adjacent``) claim at most this many lines at one end: related
# headlines, credits and widgets stacked at an edge were at most 5 lines on the tune half
# of the real copies; a longer run of short lines is the article's own list, table or
# code, and stays (as does a run after a line ending in a colon).
MAX_SHAPE_RUN = 6
# a word list named in a rule's pattern: {name}
_VOCABULARY_NAME = re.compile(r"\{([a-z_]+)\}")
# a [vocabulary] term: lower-case words (and the signs & and ©), single spaces
_LITERAL = re.compile(r"(?:[a-z0-9'’&©-]+|[a-z0-9'’-]+\.[a-z]+)(?: (?:[a-z0-9'’&©-]+))*")
# a paragraph ends as a sentence: . ! ? (not an ellipsis), then closing quotes/brackets
_ENDS_SENTENCE = re.compile(r"(?<!\.\.)[.!?][\"'”’»)\]]*\s*$")


@dataclass(frozen=True)
class Rule:
    name: str
    scope: str
    regex: re.Pattern[str]
    example: str = ""
    keeps: tuple[str, ...] = ()
    max_chars: int = 2000
    full: bool = False  # edge rules: the pattern must match the whole paragraph
    edges: str = "both"  # edge rules: the zone(s) they work in, "start", "end" or "both"
    adjacent: bool = False  # edge rules: only in the unbroken run at the very edge
    # lower-case words one of which every text the pattern matches holds: a cheap test
    # first, so that the regex (an unanchored search) runs only on paragraphs that have one
    needs: tuple[str, ...] = ()
    # the vocabulary terms ("name:term") its pattern or words test was built from (see ``expand``)
    terms: tuple[str, ...] = field(default=(), compare=False)
    # instead of the pattern: a line of nothing but listed words (see ``WordTest``)
    words: "WordTest | None" = None
    # the call that claims a paragraph: fullmatch (whole rules, full edge rules) or match
    test: Callable[[str], object | None] = field(init=False, repr=False, compare=False)
    # the rule's match of all of a text from a position on: its pattern's, or its words test's
    fullmatch: Callable[..., "re.Match[str] | WordMatch | None"] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        whole = self.scope == "whole" or self.full
        fullmatch = self.words.fullmatch if self.words else self.regex.fullmatch
        object.__setattr__(self, "fullmatch", fullmatch)
        object.__setattr__(self, "test", fullmatch if whole or self.words else self.regex.match)

    def matches(self, paragraph: str, lowered: str | None = None) -> bool:
        """Does this (whole or edge) rule claim the whole paragraph? (``lowered``: paragraph.lower())"""
        if len(paragraph) > self.max_chars or not self.may_match(paragraph, lowered):
            return False
        return self.test(paragraph) is not None

    def may_match(self, text: str, lowered: str | None = None) -> bool:
        """Does ``text`` hold one of the rule's ``needs`` (or has it none)?"""
        if not self.needs:
            return True
        lowered = text.lower() if lowered is None else lowered
        return any(map(lowered.__contains__, self.needs))

    def works_at(self, position: str) -> bool:
        """Does this rule claim paragraphs in the ``position`` ("start"|"end") edge zone?"""
        return self.scope == "whole" or (self.scope == "edge" and self.edges in ("both", position))


@dataclass(frozen=True)
class WordList:
    """A named list of ingest/rules/*.toml: literal words and phrases ([vocabulary]) or regex fragments ([grammar])."""

    terms: tuple[str, ...]
    literal: bool

    def fragment(self, term: str) -> str:
        """``term`` as a regular-expression fragment (a literal's space matches any white space)."""
        return r"\s+".join(map(re.escape, term.split(" "))) if self.literal else term


@dataclass(frozen=True)
class WordMatch:
    """A words test's match, shaped like the parts of ``re.Match`` that clean() reads."""

    string: str
    begin: int

    def start(self) -> int:
        return self.begin

    def end(self) -> int:
        return len(self.string)

    def group(self) -> str:
        return self.string[self.begin:]


# a word of a words test: letters, digits, apostrophes and hyphens ("e-mail", "don't"),
# or the signs a widget line uses as words; anything else between them is a separator
_WORD = re.compile(r"\w[\w'’-]*|[&©]")
_NUMBER = re.compile(r"\d[\d.,]*[km]?")
# signs of code, not of a widget ("print(x)  # => 42"): such a line is never chrome words
_CODE = re.compile(r"[{}=#$\\`]|\w\(")


@dataclass(frozen=True)
class WordTest:
    """A line of nothing but listed words: at least one of ``need``, the rest of ``need`` or ``allow``.

    Phrases are read longest first ("sign up" before "sign"); numbers ("12", "1.2k")
    count as allowed words; ``least`` to ``most`` words in all; a line with signs of
    code ("=", "#", "f(x)") is never one.
    """

    need: frozenset[tuple[str, ...]]
    allow: frozenset[tuple[str, ...]]
    most: int
    least: int = 1
    # first word -> the lengths (in words) of the listed phrases it opens, longest first
    sizes: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    # the words that end a listed phrase: a line that ends otherwise is no match (a quick test)
    lasts: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes: dict[str, set[int]] = {}
        for phrase in self.need | self.allow:
            sizes.setdefault(phrase[0], set()).add(len(phrase))
        object.__setattr__(self, "sizes", {w: tuple(sorted(n, reverse=True)) for w, n in sizes.items()})
        object.__setattr__(self, "lasts", frozenset(p[-1] for p in self.need | self.allow))

    def fullmatch(self, text: str, pos: int = 0) -> WordMatch | None:
        """A match when ``text[pos:]`` is such a line."""
        last = _WORD.findall(text[-40:])[-1:]
        if not last or (last[0].lower() not in self.lasts and not _NUMBER.fullmatch(last[0])):
            return None
        tokens = [w.lower() for w in _WORD.findall(text, pos)]
        if not self.least <= len(tokens) <= 3 * self.most or _CODE.search(text, pos):
            return None
        at, words, needed = 0, 0, False
        while at < len(tokens):
            for size in self.sizes.get(tokens[at], ()):
                phrase = tuple(tokens[at:at + size])
                if phrase in self.need:
                    needed = True
                    break
                if phrase in self.allow:
                    break
            else:
                if not _NUMBER.fullmatch(tokens[at]):
                    return None
                size = 1
            at, words = at + size, words + 1
        return WordMatch(text, pos) if needed and self.least <= words <= self.most else None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source_patterns: tuple[re.Pattern[str], ...] = ()

    def with_source_patterns(self, patterns: Iterable[str]) -> "RuleSet":
        return replace(self, source_patterns=tuple(re.compile(p, re.MULTILINE) for p in patterns))


def load_rules(
    text: str, origin: str = "rules", vocabulary: Mapping[str, Sequence[str]] | None = None,
    drop: frozenset[str] = frozenset(),
) -> tuple[Rule, ...]:
    """Rules from a TOML document of ``[[rule]]`` tables (see ingest/rules/builtin.toml).

    A pattern may name a word list as ``{name}``: the document's own ``[vocabulary]``
    and ``[grammar]`` lists or ``vocabulary``'s (see ``expand``); a ``words`` table
    instead of a pattern makes a words test (see ``word_test``); ``drop`` leaves terms
    (``"name:term"``) out.
    """
    raw = _toml(text, origin)
    words = {**(vocabulary or {}), **vocabulary_of(text, origin)}
    rules = []
    for index, table in enumerate(raw.get("rule", [])):
        try:
            if table["scope"] not in SCOPES:
                raise ValueError(f"scope must be one of {SCOPES}")
            if table.get("edges", "both") not in EDGES:
                raise ValueError(f"edges must be one of {EDGES}")
            if ("pattern" in table) == ("words" in table):
                raise ValueError("a rule has a pattern or a words test, not both nor neither")
            pattern, terms = expand(table.get("pattern", "(?!)").strip(), words, drop)
            test = None
            if "words" in table:
                test, terms = word_test(table["words"], words, drop)
            rules.append(
                Rule(
                    name=table["name"],
                    scope=table["scope"],
                    regex=re.compile(pattern, re.IGNORECASE | re.DOTALL),
                    words=test,
                    example=table.get("example", ""),
                    keeps=tuple(table.get("keeps", ())),
                    max_chars=int(table.get("max_chars", 2000)),
                    full=bool(table.get("full", False)),
                    edges=table.get("edges", "both"),
                    adjacent=bool(table.get("adjacent", False)),
                    needs=tuple(word.lower() for word in table.get("needs", ())),
                    terms=terms,
                )
            )
        except (KeyError, ValueError, re.error) as exc:
            raise ConfigError(f"{origin}: rule {index}: {exc}") from None
    return tuple(rules)


def vocabulary_of(text: str, origin: str = "rules") -> dict[str, WordList]:
    """The ``[vocabulary]`` (literal) and ``[grammar]`` (regex) word lists of a rule document, by name."""
    raw = _toml(text, origin)
    out: dict[str, WordList] = {}
    for section, literal in (("vocabulary", True), ("grammar", False)):
        for name, terms in raw.get(section, {}).items():
            if not _VOCABULARY_NAME.fullmatch(f"{{{name}}}") or not isinstance(terms, list) or not terms:
                raise ConfigError(f"{origin}: {section} {name!r}: a lower-case name and a non-empty list of terms")
            if name in out:
                raise ConfigError(f"{origin}: {name!r} is both a vocabulary and a grammar list")
            for term in terms:
                if literal and not _LITERAL.fullmatch(term):
                    raise ConfigError(f"{origin}: vocabulary {name!r}: {term!r} is not lower-case words")
                try:
                    re.compile(term)
                except re.error as exc:
                    raise ConfigError(f"{origin}: grammar {name!r}: term {term!r}: {exc}") from None
            out[name] = WordList(tuple(terms), literal)
    return out


def word_test(table: Mapping[str, object], vocabulary: Mapping[str, WordList], drop: frozenset[str] = frozenset()
              ) -> tuple[WordTest, tuple[str, ...]]:
    """A ``WordTest`` from a rule's ``words`` table (``need``, ``allow``: list names; ``most``, ``least``), and its terms."""
    used: list[str] = []

    def phrases(names: object) -> frozenset[tuple[str, ...]]:
        out = set()
        for name in names if isinstance(names, list) else ():
            if name not in vocabulary or not vocabulary[name].literal:
                raise ValueError(f"words: {name!r} is not a [vocabulary] list")
            for term in vocabulary[name].terms:
                used.append(f"{name}:{term}")
                if f"{name}:{term}" not in drop:
                    out.add(tuple(_WORD.findall(term)))
        return frozenset(out)

    need, allow = phrases(table.get("need")), phrases(table.get("allow", []))
    if not table.get("need") or not isinstance(table.get("most"), int):
        raise ValueError("words: `need` (list names) and `most` (a number) are required")
    return WordTest(need, allow, int(table["most"]), int(table.get("least", 1))), tuple(dict.fromkeys(used))


def expand(pattern: str, vocabulary: Mapping[str, WordList], drop: frozenset[str] = frozenset(), depth: int = 0
           ) -> tuple[str, tuple[str, ...]]:
    """``pattern`` with each ``{name}`` replaced by ``(?:term|term|...)`` (longest first), and the terms used.

    Terms are named ``"name:term"``; those in ``drop`` are left out (a list left empty
    matches nothing). A grammar fragment may name another list in turn. Regex
    quantifiers (``{2,5}``) are digits and stay as they are.
    """
    if depth > 4:
        raise ValueError(f"grammar nested too deep (a list that names itself?): {pattern[:60]!r}")
    used: list[str] = []

    def words(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in vocabulary:
            raise ValueError(f"unknown vocabulary {{{name}}}")
        kept = []
        for term in vocabulary[name].terms:
            used.append(f"{name}:{term}")
            if f"{name}:{term}" not in drop:
                if vocabulary[name].literal:
                    kept.append(term)
                    continue
                text, inner = expand(term, vocabulary, drop, depth + 1)
                kept.append(text)
                used.extend(inner)
        if not kept:
            return "(?!)"
        if vocabulary[name].literal:
            return "(?:" + _trie(kept) + ")"
        return "(?:" + "|".join(sorted(kept, key=len, reverse=True)) + ")"

    return _VOCABULARY_NAME.sub(words, pattern), tuple(dict.fromkeys(used))


def _trie(words: Sequence[str]) -> str:
    """A regex for any of ``words`` (literal; a space matches any white space), as a character trie.

    An alternation of a hundred words is tried word by word at every position; the trie
    reads each character once. Longer words are preferred, as longest-first would.
    """
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        branches = [(r"\s+" if char == " " else re.escape(char)) + emit(child)
                    for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


def _toml(text: str, origin: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None


def builtin_rules(drop: frozenset[str] = frozenset()) -> tuple[Rule, ...]:
    """The rules shipped in ingest/rules/*.toml (one file a class of boilerplate), sorted by name.

    ``drop``: vocabulary terms (``"name:term"``) to leave out, for measuring what each adds.
    """
    return _builtin_rules(frozenset(drop))


@lru_cache(maxsize=8)
def _builtin_rules(drop: frozenset[str]) -> tuple[Rule, ...]:
    vocabulary = builtin_vocabulary()
    rules = [rule for origin, text in _builtin_files() for rule in load_rules(text, origin, vocabulary, drop)]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"ingest/rules: rule names used twice: {sorted({n for n in names if names.count(n) > 1})}")
    return tuple(sorted(rules, key=lambda r: r.name))


@lru_cache(maxsize=1)
def builtin_vocabulary() -> dict[str, WordList]:
    """The word lists of ingest/rules/*.toml, merged (a name may be defined once)."""
    vocabulary: dict[str, WordList] = {}
    for origin, text in _builtin_files():
        own = vocabulary_of(text, origin)
        if set(own) & set(vocabulary):
            raise ConfigError(f"{origin}: vocabulary names used twice: {sorted(set(own) & set(vocabulary))}")
        vocabulary.update(own)
    return vocabulary


@lru_cache(maxsize=1)
def _builtin_files() -> tuple[tuple[str, str], ...]:
    folder = resources.files("ingest").joinpath("rules")
    paths = sorted((p for p in folder.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)
    return tuple((f"ingest/rules/{p.name}", p.read_text(encoding="utf-8")) for p in paths)


def ruleset(builtin: bool, source_patterns: Iterable[str] = ()) -> RuleSet:
    """The rules in force for one source."""
    return RuleSet(builtin_rules() if builtin else ()).with_source_patterns(source_patterns)


def paragraph_fingerprint(paragraph: str) -> str:
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

    # 3. credits closing any paragraph: only the credit goes (a paragraph that was
    # nothing else goes whole)
    suffixes = [r for r in rules.rules if r.scope == "suffix"]
    if suffixes:
        survivors = _cut_ends(survivors, suffixes, removals)

    # 4. tail sentences glued to the last paragraph
    tails = [r for r in rules.rules if r.scope == "tail"]
    while survivors and tails:
        index, last = survivors[-1]
        match, rule = next(((m, r) for r in tails if (m := _last_match(r.fullmatch, last))), (None, None))
        if match is None or rule is None:
            break
        removals.append((index, Removal(rule.name, match.group().strip(), "end")))
        last = last[: match.start()].rstrip()
        if last:
            survivors[-1] = (index, last)
            break
        survivors.pop()

    # 5. edge zones: boilerplate paragraphs near either end, up to the article text
    # (whole rules and learned paragraphs already passed over the paragraphs that no
    # cut changed since step 2: in the zones only edge rules are tried on those)
    settled = frozenset(survivors)
    end_rules = [r for r in rules.rules if r.works_at("end")]
    start_rules = [r for r in rules.rules if r.works_at("start")]
    survivors, end_removed = _strip_edge(survivors[::-1], end_rules, learned, "end", EDGE_SLACK, _is_short, settled)
    survivors, start_removed = _strip_edge(
        survivors[::-1], start_rules, learned, "start", START_SLACK, _is_heading, settled
    )
    removals += end_removed + start_removed

    # 6. credits opening the article's first paragraphs (up to the first sentence)
    prefixes = [r for r in rules.rules if r.scope == "prefix"]
    if prefixes:
        survivors = _cut_openings(survivors, prefixes, removals)

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
    kept = [p for p in paragraphs if paragraph_fingerprint(p) not in learned]
    if not kept or len(kept) == len(paragraphs):
        return text, ()
    removed = tuple(Removal("learned", p, "whole") for p in paragraphs if paragraph_fingerprint(p) in learned)
    return "\n\n".join(kept), removed


def _strip_edge(
    paragraphs: list[tuple[int, str]], rules: list[Rule], learned: frozenset[str], position: str, slack: int,
    may_shield: Callable[[str], bool], settled: frozenset[tuple[int, str]] = frozenset(),
) -> tuple[list[tuple[int, str]], list[tuple[int, Removal]]]:
    """Remove claimed paragraphs from the front of ``paragraphs`` (one end of the text).

    Up to ``slack`` unclaimed paragraphs that ``may_shield`` accepts may stand between a
    claimed one and the end: a site glues several prompts on, and one that no rule knows
    ("Follow X on Y", a trust-principles link) must not shield a disclaimer behind it;
    at the start a headline or a kicker must not shield the dateline and byline lines
    below it. The unclaimed paragraphs themselves stay; any other ends the zone
    (article prose). ``adjacent`` rules (line shapes) claim only before the first
    unclaimed paragraph; more than ``MAX_SHAPE_RUN`` lines of such shapes are the
    article's list, which ends the zone (and is given back). ``settled`` paragraphs were refused by the whole rules and the
    learned keys already: only the others are tried on them.
    """
    kept: list[tuple[int, str]] = []
    removed: list[tuple[int, Removal]] = []
    used = shaped = 0
    loose = [r for r in rules if not r.adjacent]  # once an unclaimed paragraph stands between
    shapes = {r.name for r in rules if r.adjacent}
    unsettled = {id(group): [r for r in group if r.scope != "whole"] for group in (rules, loose)}
    for at, (index, paragraph) in enumerate(paragraphs):
        group = loose if used else rules
        if (index, paragraph) in settled:
            name = _claim(paragraph, unsettled[id(group)], frozenset())
        else:
            name = _claim(paragraph, group, learned)
        if name:
            removed.append((index, Removal(name, paragraph, position)))
            shaped += name in shapes
            if shaped > MAX_SHAPE_RUN:  # the article's own list (see _is_list): it ends the zone
                kept += paragraphs[at + 1:]
                break
            continue
        if not may_shield(paragraph) or used >= slack:
            kept += paragraphs[at:]
            break
        used += 1
        kept.append((index, paragraph))
    if _is_list(paragraphs, [index for index, r in removed if r.rule in shapes]):  # not chrome: put it back
        back = [(index, r.text) for index, r in removed if r.rule in shapes]
        removed = [(index, r) for index, r in removed if r.rule not in shapes]
        kept = sorted(kept + back, key=lambda item: item[0], reverse=position == "end")
    return kept, removed


def _is_list(paragraphs: list[tuple[int, str]], claimed: list[int]) -> bool:
    """Are the lines that shape rules claimed at one end the article's own list?

    More than ``MAX_SHAPE_RUN`` of them, or a run introduced by a line ending in a
    colon ("The routes affected are:").
    """
    if not claimed:
        return False
    if len(claimed) > MAX_SHAPE_RUN:
        return True
    first = min(claimed)
    before = max(((index, text) for index, text in paragraphs if index < first), default=None)
    return before is not None and before[1].rstrip().endswith(":")


def _is_short(paragraph: str) -> bool:
    return len(paragraph) <= EDGE_SHORT_CHARS


def _is_heading(paragraph: str) -> bool:
    """A short line that is not a sentence (a headline, a kicker, a section name)."""
    return len(paragraph) <= EDGE_SHORT_CHARS and _ENDS_SENTENCE.search(paragraph) is None


def _cut_ends(
    paragraphs: list[tuple[int, str]], rules: list[Rule], removals: list[tuple[int, Removal]]
) -> list[tuple[int, str]]:
    """``paragraphs`` with the credits that close them cut off (``suffix`` rules)."""
    out = []
    for index, paragraph in paragraphs:
        while paragraph:
            lowered, starts = paragraph.lower(), _sentence_starts(paragraph)
            # a credit lies in the last max_chars: its words are looked for there only
            match, rule = next(
                ((m, r) for r in rules
                 if (not r.needs or any(map(lowered[-r.max_chars:].__contains__, r.needs)))
                 and (m := _last_match(r.fullmatch, paragraph, r.max_chars, starts))),
                (None, None),
            )
            if match is None or rule is None:
                break
            removals.append((index, Removal(rule.name, match.group().strip(), "inline" if match.start() else "whole")))
            paragraph = paragraph[: match.start()].rstrip()
        if paragraph:
            out.append((index, paragraph))
    return out


def _cut_openings(
    paragraphs: list[tuple[int, str]], rules: list[Rule], removals: list[tuple[int, Removal]]
) -> list[tuple[int, str]]:
    """``paragraphs`` with credits cut from the start of the first ones (``prefix`` rules).

    Only paragraphs up to the first that ends as a sentence (the lead): a headline
    above it may carry the credit too, an agency tag further down is the article's.
    A cut that would leave nothing is not made.
    """
    out = list(paragraphs)
    for at, (index, paragraph) in enumerate(out):
        for rule in rules:
            match = rule.regex.match(paragraph)
            if match and match.group().strip() and paragraph[match.end():].strip():
                removals.append((index, Removal(rule.name, match.group().strip(), "inline")))
                paragraph = paragraph[match.end():].lstrip()
        out[at] = (index, paragraph)
        if _ENDS_SENTENCE.search(paragraph):
            break
    return out


def _claim(paragraph: str, rules: list[Rule], learned: frozenset[str]) -> str | None:
    # Rule.matches, unrolled: this loop runs for every paragraph and rule (the hot path)
    lowered, size = paragraph.lower(), len(paragraph)
    for rule in rules:
        if size <= rule.max_chars and (not rule.needs or any(map(lowered.__contains__, rule.needs))):
            if rule.test(paragraph) is not None:
                return rule.name
    if learned and paragraph_fingerprint(paragraph) in learned:
        return "learned"
    return None


def _cut(pattern: re.Pattern[str], paragraph: str) -> tuple[str, list[str]]:
    removed = [m.group() for m in pattern.finditer(paragraph) if m.group().strip()]
    if not removed:
        return paragraph, []
    return pattern.sub("", paragraph), removed


def _last_match(
    fullmatch: Callable[[str, int], "re.Match[str] | WordMatch | None"], text: str, longest: int | None = None,
    starts: list[int] | None = None,
) -> "re.Match[str] | WordMatch | None":
    """A match (``fullmatch(text, start)``: a rule's) that ends the text and starts a sentence (or the paragraph).

    With ``longest``, only the last ``longest`` characters are tried (a credit is short:
    a long paragraph costs no more than a short one). ``starts``: the text's sentence
    starts, when the caller has them.
    """
    earliest = 0 if longest is None else len(text) - longest
    for start in _sentence_starts(text) if starts is None else starts:
        if start < earliest:
            continue
        match = fullmatch(text, start)
        if match:
            return match
    return None


_SENTENCE_BREAK = re.compile(r"[.!?…»\"”)]\s+")
# an ellipsis: run onto the word before it ("... raises spending on roads…Read more"), a
# teaser's cut, after which a link may stand (a start after it: the cut stays); after a
# space ("... roads … Read more"), the link's own (a start before it: it goes with it)
_ELLIPSIS = re.compile(r"(?<=[^\s.…])(?:\.{3}|…)|(?<=\s)(?=\.{3}|…)")


def _sentence_starts(text: str) -> list[int]:
    starts = [0] + [m.end() for m in _SENTENCE_BREAK.finditer(text)]
    if "…" in text or "..." in text:
        starts = sorted(set(starts).union(m.end() for m in _ELLIPSIS.finditer(text)))
    return starts
