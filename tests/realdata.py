"""Real boilerplate on real articles (../shared/realcopies): loader and cleaning score.

Shared by tests/test_clean.py and bench/real_cleaning.py (bench imports tests' loaders,
never the other way round). Nothing of the data is copied into the repository: it is
read from ``../shared/realcopies`` at run time.

Definitions (what ``measure`` counts):

- **Article text of a corpus item** goes through the real stages as a feed entry whose
  content is the text as HTML: one ``<p>`` per line, lines of a hard-wrapped paragraph
  (a long line ending without sentence punctuation followed by one of several words
  that starts in lower case, or a full-width run-on line of a text hard-wrapped at a
  fixed width) joined into one ``<p>``; then ``ingest.extract.extract`` and
  ``ingest.clean.clean`` with the built-in rules.
- **Article sentence**: a sentence of a corpus text (split after ``. ! ?`` and closing
  quotes) of prose: at least ``MIN_SENTENCE_WORDS`` words, a capital, digit or quote
  first and sentence punctuation last, holding none of disclaimers.txt's strings (any
  split), and at least ``MIN_LOWER_WORDS`` words in lower case (a credit such as
  "Photo by Jane Doe/Agency." is names). A paragraph that opens with a listed string of
  ``BLOCK_WORDS`` or more words is a disclaimer block and holds none. Headlines and
  widget lines (no closing punctuation) are not counted: a headline is the entry's
  title, not its body. Site prose that disclaimers.txt does not list (a comment policy,
  a paywall pitch, a caption) counts as article text here, so the figure errs against
  the cleaner. A stricter second figure counts only the *shared* article
  sentences: those whose words (``ingest.text.normalize_words``) also occur, in order,
  in a copy of the story on another site (site chrome differs between sites; the wire
  text is what they share).
- **Article paragraph**: a paragraph of the corpus text holding at least one article
  sentence; *kept* when every article sentence in it is still in the clean text.
- **A sentence is kept** when its normalised words occur in order in the clean text's
  (both taken without the listed strings, so cutting an agency tag off a lead is no loss).
- **Disclaimer removal**, two kinds, per split:
  *glued*: each disclaimers.txt string of the split glued onto ``HOSTS_PER_LINE`` corpus
  texts of the same split (chosen by a hash, so fixed), the way that string stands on
  its own site's pages in the corpus (``glue_mode``): its own paragraph at the start
  when it stands before the site's first prose paragraph (headers, navigation, datelines
  on a line of their own), its own paragraph in the middle when it stands between prose
  paragraphs, as the opening words of the first prose paragraph ("(AGENCY) ...") or the
  closing sentence of the last one ("... (AGENCY)") when it is run into a paragraph
  there, else its own paragraph at the end. Removed when the clean text holds it no
  more often than the clean text of the same host without it (so a host that mentions
  the words in its prose does not count against the rule).
  *in situ*: each corpus item's own ``disclaimer``, removed when it no longer appears in
  the item's clean text.
  Strings are compared after NFKC and with any run of white space as one space.
- **False removals**: article paragraphs lost when a corpus text is cleaned with
  nothing glued on.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from ingest.clean import RuleSet, builtin_rules, builtin_vocabulary, clean, expand, ruleset
from ingest.config import ExtractConfig
from ingest.extract import extract
from ingest.models import Document, Entry
from ingest.text import normalize_words

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SPLITS = ("tune", "check")
MIN_SENTENCE_WORDS = 5
HOSTS_PER_LINE = 3
# a prose paragraph (where the article starts): this many words and a sentence end
PROSE_WORDS = 15
# a paragraph opening with a listed boilerplate string of this many words is a
# disclaimer block (a listed "Disclaimer: ..." sentence, then more of the same)
BLOCK_WORDS = 5
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+")
_NOTE = re.compile(r"\([^()]*\)")  # a bracketed note on its own line: "(Adds comments)"
_CLOSED = re.compile(r"[.!?:;\"'”’)\]]$")
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]]*$")
_STARTS_SENTENCE = re.compile(r"[\"'“‘(]?[A-Z0-9]")
# a full stop that ends an abbreviation or an initial, not a sentence
_ABBREVIATION = re.compile(
    r"(?:\b(?:St|Mr|Mrs|Ms|Dr|Prof|Gov|Sen|Rep|Gen|Lt|Col|Capt|Sgt|Rev|Jr|Sr|Inc|Co|Corp|Ltd|No|vs|Mt|Ft|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)|\b[A-Z]|\b(?:[A-Z]\.){1,3}[A-Z])\.$"
)
# an article sentence has words that are not names: at least this many in lower case
MIN_LOWER_WORDS = 3
_CONFIG = ExtractConfig()
_RULES = ruleset(True)


@dataclass(frozen=True)
class Item:
    id: str
    cluster: str
    relation: str
    url: str
    site: str
    title: str
    text: str
    disclaimer: str
    split: str

    @property
    def paragraphs(self) -> list[str]:
        """The text's paragraphs as they are handed to extraction (see the module docstring)."""
        return paragraphs_of(self.text)


@dataclass(frozen=True)
class Line:
    """One real boilerplate string from disclaimers.txt."""

    text: str
    site: str
    split: str


@dataclass(frozen=True)
class Run:
    """One article text through extract+clean: what it was, what came out."""

    kind: str  # "bare" | "glued" | "in-situ"
    item: Item
    line: str  # the glued or in-situ string ("" for bare)
    source: str  # the site the line comes from (the item's own for bare and in-situ runs)
    mode: str  # glue mode ("" for bare and in-situ)
    document: Document
    removed: bool  # the line is gone (always True for bare)
    sentences: int  # article sentences in the text
    paragraphs: int  # article paragraphs in the text
    shared: int  # article sentences a copy on another site holds too
    lost_sentences: tuple[str, ...]
    lost_paragraphs: tuple[str, ...]
    lost_shared: int


@dataclass(frozen=True)
class Data:
    items: tuple[Item, ...]
    lines: tuple[Line, ...]


def directory(shared: Path = SHARED) -> Path:
    """Where the real copies live under ``shared``."""
    return shared / "realcopies"


def available(shared: Path = SHARED) -> bool:
    """Are the real copies there (corpus and disclaimer list)?"""
    folder = directory(shared)
    return (folder / "corpus.jsonl").is_file() and (folder / "disclaimers.txt").is_file()


def load(shared: Path = SHARED) -> Data:
    """The corpus and the disclaimer lines, as read from ``shared``/realcopies."""
    folder = directory(shared)
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        items = tuple(
            Item(**{k: row[k] for k in Item.__dataclass_fields__}) for row in map(json.loads, handle) if row
        )
    lines = []
    for raw in (folder / "disclaimers.txt").read_text(encoding="utf-8").splitlines():
        if raw.strip():
            text, site, split = raw.split("\t")
            lines.append(Line(text, site, split))
    return Data(items, tuple(lines))


def normalize(text: str) -> str:
    """Compare strings as a reader would: NFKC, one space for any run of white space."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def words(text: str) -> str:
    """Normalised words joined by single spaces, padded so that a search respects word edges."""
    return " " + " ".join(normalize_words(text)) + " "


def paragraphs_of(text: str) -> list[str]:
    """Lines of ``text``; lines of a hard-wrapped paragraph joined (see the module docstring)."""
    lines = [part.strip() for part in text.split("\n") if part.strip()]
    lengths = sorted(len(line) for line in lines)
    width = lengths[len(lengths) // 2] if lengths else 0
    # hard-wrapped at a fixed width: most lines are of a news column's width and run on
    wrapped = len(lines) >= 6 and sum(
        1 for line in lines if 45 <= len(line) <= 90 and not _CLOSED.search(line)) >= 0.6 * len(lines)
    out: list[str] = []
    for line in lines:
        runs_on = out and not _CLOSED.search(out[-1]) and not _NOTE.fullmatch(line)
        if runs_on and ((wrapped and len(out[-1]) >= 0.75 * width) or _continues(out[-1], line)):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def _continues(previous: str, line: str) -> bool:
    """Does ``line`` carry on the sentence of ``previous`` (a wrap, not a new block)?"""
    first = line.split()[0]
    return line[0].islower() and len(previous) >= 40 and len(line.split()) >= 2 and "." not in first.rstrip(".,")


def to_html(paragraphs: list[str]) -> str:
    """Feed content for a list of paragraphs: one escaped ``<p>`` each."""
    return "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)


def sentences(paragraph: str) -> list[str]:
    """``paragraph`` split after sentence punctuation (and closing quotes), not after "St." or "U.S."."""
    out: list[str] = []
    for part in _SENTENCE_END.split(paragraph):
        if not part.strip():
            continue
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def is_prose(paragraph: str) -> bool:
    """Does the article start here (a paragraph of real sentences, not chrome)?"""
    return len(normalize_words(paragraph)) >= PROSE_WORDS and any(_ENDS_SENTENCE.search(s) for s in sentences(paragraph))


def article_sentences(data: Data) -> dict[str, list[list[str]]]:
    """Per item id, per paragraph, its article sentences (see the module docstring)."""
    chrome = [words(line.text) for line in data.lines if len(normalize_words(line.text)) >= 2]
    blocks = [c for c in chrome if len(normalize_words(c)) >= BLOCK_WORDS]

    def is_article(sentence: str) -> bool:
        found = words(sentence)
        return is_sentence(sentence) and not any(c in found or found in c for c in chrome)

    return {
        item.id: [[] if any(words(p).startswith(b) for b in blocks) else [s for s in sentences(p) if is_article(s)]
                  for p in item.paragraphs]
        for item in data.items
    }


def is_sentence(text: str) -> bool:
    """A sentence of prose: enough words, some in lower case, a capital (or quote, digit) first, punctuation last."""
    tokens = text.split()
    return (len(normalize_words(text)) >= MIN_SENTENCE_WORDS and _ENDS_SENTENCE.search(text) is not None
            and _STARTS_SENTENCE.match(text) is not None
            and sum(1 for t in tokens if t[:1].islower()) >= MIN_LOWER_WORDS)


def shared_sentences(data: Data, article: dict[str, list[list[str]]]) -> dict[str, set[str]]:
    """Per item id, its article sentences that a copy on another site of its story also holds."""
    by_cluster: dict[str, list[Item]] = {}
    for item in data.items:
        by_cluster.setdefault(item.cluster, []).append(item)
    out: dict[str, set[str]] = {}
    for item in data.items:
        others = [words(o.text) for o in by_cluster[item.cluster] if o.site != item.site]
        out[item.id] = {s for found in article[item.id] for s in found if any(words(s) in o for o in others)}
    return out


def glue_mode(line: Line, items: tuple[Item, ...]) -> str:
    """How ``line`` stands on its own site's pages: start | middle | end | prefix | suffix.

    From the first corpus text of its site that holds it: run into a prose paragraph
    (what is left of the paragraph is prose) as its opening words (``prefix``) or its
    closing sentence (``suffix``); else a paragraph of its own, before the first prose
    paragraph (``start``), after the last (``end``) or between (``middle``). A line
    not found in the corpus (seen on the site only) goes at the end.
    """
    wanted = normalize(line.text)
    for item in items:
        if item.site != line.site or wanted not in normalize(item.text):
            continue
        paragraphs = [normalize(p) for p in item.paragraphs]
        prose = [n for n, p in enumerate(paragraphs) if is_prose(p)]
        at = next((n for n, p in enumerate(paragraphs) if wanted in p), None)
        if at is None:  # the line spans paragraphs
            at = next(n for n, p in enumerate(paragraphs) if p in wanted)
        rest = normalize(paragraphs[at].replace(wanted, " "))
        if paragraphs[at].startswith(wanted) and is_prose(rest) and prose and at <= prose[0]:
            return "prefix"
        if paragraphs[at].endswith(wanted) and not paragraphs[at].startswith(wanted) and is_prose(rest):
            return "suffix"
        if not prose or at < prose[0]:
            return "start"
        return "end" if at >= prose[-1] else "middle"
    return "end"


def glue(paragraphs: list[str], text: str, mode: str) -> list[str]:
    """``paragraphs`` with ``text`` glued on in ``mode`` (see ``glue_mode``)."""
    out = list(paragraphs)
    prose = [n for n, p in enumerate(out) if is_prose(p)] or [0]
    if mode == "start":
        return [text] + out
    if mode == "end":
        return out + [text]
    if mode == "middle":
        at = prose[len(prose) // 2] + 1 if len(prose) > 1 else len(out) // 2 + 1
        return out[:at] + [text] + out[at:]
    if mode == "prefix":
        out[prose[0]] = f"{text} {out[prose[0]]}"
        return out
    if mode == "suffix":
        ends = [n for n in prose if _ENDS_SENTENCE.search(out[n])] or prose
        out[ends[-1]] = f"{out[ends[-1]]} {text}"
        return out
    raise ValueError(f"unknown glue mode {mode!r}")


def hosts(line: Line, items: tuple[Item, ...], count: int = HOSTS_PER_LINE) -> list[Item]:
    """``count`` of ``items`` (the line's split) to glue it onto: fixed by a hash, none of its site."""
    pool = [i for i in items if i.site != line.site and any(map(is_prose, i.paragraphs))]
    return sorted(pool, key=lambda i: hashlib.sha1(f"{line.text}\t{i.id}".encode()).hexdigest())[:count]


def entry_for(item: Item, paragraphs: list[str]) -> Entry:
    """A feed entry of ``item`` whose full content is ``paragraphs`` as HTML."""
    return Entry(guid=item.url, url=item.url, title=item.title, author=None,
                 published_at=datetime(2025, 1, 1, tzinfo=timezone.utc), updated_at=None,
                 content_html=to_html(paragraphs), content_kind="content")


def run_text(item: Item, paragraphs: list[str], rules: RuleSet = _RULES) -> Document:
    """``paragraphs`` as the content of a feed entry of ``item``, through extract and clean (``rules``)."""
    return clean(extracted(item, tuple(paragraphs)), rules)


@lru_cache(maxsize=None)
def extracted(item: Item, paragraphs: tuple[str, ...]) -> Document:
    """``paragraphs`` as the content of a feed entry of ``item``, through extract (cached: folds re-clean it)."""
    return extract(entry_for(item, list(paragraphs)), None, _CONFIG)


def without_listed(text: str, data: Data) -> str:
    """``words(text)`` with every listed boilerplate string taken out.

    A sentence that opens with an agency tag ("(AGENCY) The council ...") is kept when
    the tag is cut and the rest stays: tag and text are compared without the listed
    strings on both sides.
    """
    out = words(text)
    for listed in _listed(data.lines):
        while listed in out:
            out = out.replace(listed, " ")
    return out


@lru_cache(maxsize=4)
def _listed(lines: tuple[Line, ...]) -> tuple[str, ...]:
    return tuple(sorted({words(line.text) for line in lines if normalize_words(line.text)}, key=len, reverse=True))


def _losses(document: Document, article: list[list[str]], paragraphs: list[str], data: Data
            ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    clean_words = without_listed(document.text, data)
    lost_sentences = []
    lost_paragraphs = []
    for paragraph, found in zip(paragraphs, article):
        gone = [s for s in found if without_listed(s, data) not in clean_words]
        lost_sentences += gone
        if gone:
            lost_paragraphs.append(paragraph)
    return tuple(lost_sentences), tuple(lost_paragraphs)


def _count(text: str, wanted: str) -> int:
    return normalize(text).count(normalize(wanted))


def runs(data: Data, split: str, hosts_per_line: int = HOSTS_PER_LINE, rules: RuleSet = _RULES,
         sites: frozenset[str] | None = None) -> list[Run]:
    """Every run of ``split`` (tune|check|all): bare texts, glued lines, in-situ lines.

    ``sites``: only the texts and lines of these sites (bare and in-situ runs by the
    item's site, glued runs by the line's); the hosts a line is glued onto are still
    any texts of the split.
    """
    article, shared = _sentences(data)
    chosen = [i for i in data.items if split in ("all", i.split)]
    out: list[Run] = []
    bare: dict[str, Document] = {}

    def bare_text(item: Item) -> Document:
        if item.id not in bare:
            bare[item.id] = run_text(item, item.paragraphs, rules)
        return bare[item.id]

    def made(kind: str, item: Item, line: str, source: str, mode: str, document: Document, removed: bool) -> Run:
        found = article[item.id]
        lost_sentences, lost_paragraphs = _losses(document, found, item.paragraphs, data)
        return Run(kind, item, line, source, mode, document, removed, sum(map(len, found)), sum(1 for f in found if f),
                   len(shared[item.id]), lost_sentences, lost_paragraphs,
                   len(shared[item.id].intersection(lost_sentences)))

    for item in chosen:
        if sites is not None and item.site not in sites:
            continue
        out.append(made("bare", item, "", item.site, "", bare_text(item), True))
    for kind, item, line, source, mode, paragraphs in line_runs(data, split, hosts_per_line, sites):
        document = run_text(item, paragraphs, rules)
        if kind == "in-situ":
            removed = _count(document.text, line) == 0
        else:
            removed = _count(document.text, line) <= _count(bare_text(item).text, line)
        out.append(made(kind, item, line, source, mode, document, removed))
    return out


def line_runs(data: Data, split: str, hosts_per_line: int = HOSTS_PER_LINE, sites: frozenset[str] | None = None
              ) -> list[tuple[str, Item, str, str, str, list[str]]]:
    """(kind, item, line, the line's site, glue mode, paragraphs) of every in-situ and glued run of ``split``."""
    chosen = [i for i in data.items if split in ("all", i.split)]
    out = [("in-situ", item, item.disclaimer, item.site, "", item.paragraphs) for item in chosen
           if item.disclaimer and (sites is None or item.site in sites)]
    for line in data.lines:
        if split not in ("all", line.split) or (sites is not None and line.site not in sites):
            continue
        mode = glue_mode(line, data.items)
        out += [("glued", host, line.text, line.site, mode, glue(host.paragraphs, line.text, mode))
                for host in hosts(line, chosen, hosts_per_line)]
    return out


@lru_cache(maxsize=2)
def _sentences(data: Data) -> tuple[dict[str, list[list[str]]], dict[str, set[str]]]:
    article = article_sentences(data)
    return article, shared_sentences(data, article)


def score(found: list[Run]) -> dict[str, float | int]:
    """The figures of ``found`` (see the module docstring): removal, sentences and paragraphs kept."""
    lines = [r for r in found if r.kind in ("glued", "in-situ")]
    texts = [r for r in found if r.kind in ("bare", "glued")]
    sentences_total = sum(r.sentences for r in texts)
    paragraphs_total = sum(r.paragraphs for r in texts)
    sentences_lost = sum(len(r.lost_sentences) for r in texts)
    paragraphs_lost = sum(len(r.lost_paragraphs) for r in texts)
    bare = [r for r in found if r.kind == "bare"]
    figures: dict[str, float | int] = {
        "disclaimers_total": len(lines),
        "disclaimers_removed": sum(r.removed for r in lines),
        "glued_total": sum(r.kind == "glued" for r in lines),
        "glued_removed": sum(r.removed for r in lines if r.kind == "glued"),
        "in_situ_total": sum(r.kind == "in-situ" for r in lines),
        "in_situ_removed": sum(r.removed for r in lines if r.kind == "in-situ"),
        "lines_total": len({r.line for r in lines if r.kind == "glued"}),
        "lines_always_removed": len({r.line for r in lines if r.kind == "glued"}
                                    - {r.line for r in lines if r.kind == "glued" and not r.removed}),
        "paragraphs_total": paragraphs_total,
        "paragraphs_kept": paragraphs_total - paragraphs_lost,
        "sentences_total": sentences_total,
        "sentences_kept": sentences_total - sentences_lost,
        "shared_sentences_total": sum(r.shared for r in texts),
        "shared_sentences_kept": sum(r.shared - r.lost_shared for r in texts),
        "texts": len(bare),
        "false_removals": sum(len(r.lost_paragraphs) for r in bare),
    }
    figures["removal_rate"] = _rate(figures["disclaimers_removed"], figures["disclaimers_total"])
    figures["paragraph_keep_rate"] = _rate(figures["paragraphs_kept"], paragraphs_total)
    figures["sentence_keep_rate"] = _rate(figures["sentences_kept"], sentences_total)
    figures["shared_sentence_keep_rate"] = _rate(figures["shared_sentences_kept"], figures["shared_sentences_total"])
    return figures


def _rate(part: int | float, whole: int | float) -> float:
    return round(part / whole, 4) if whole else 1.0


def measure(shared: Path, split: str) -> dict[str, float | int]:
    """Cleaning figures on the real copies under ``shared`` for ``split`` (tune|check|all)."""
    if split not in SPLITS + ("all",):
        raise ValueError(f"split must be tune, check or all, not {split!r}")
    return dict(_measured(Path(shared), split))


@lru_cache(maxsize=4)
def _measured(shared: Path, split: str) -> tuple[tuple[str, float | int], ...]:
    # a few seconds a split: callers in one process (two tests, a table) share one run
    return tuple(score(runs(load(shared), split)).items())


# ---------------------------------------------------------------------------- leave sites out

# Sites fall into FOLDS folds by a hash of their name. For each fold, the built-in rules
# are run without those that, each on its own, take out listed lines of that fold's
# sites only (glued or in situ), and with the rules' word lists (ingest/rules/
# vocabulary.toml) less the terms that occur only in such lines: a rule or a word
# written for one site only helps that site, and here it does not count there. Rules
# and terms that take out no listed line at all (written for fixtures, or for classes
# the list lacks) stay in every fold.
FOLDS = 5

# Classes of boilerplate lines, by their words alone (not by the rule that removes
# them): the first that matches names the class. A measuring device for the per-class
# table, not a cleaner.
CLASSES = (
    ("wire update note", r"^\(\s*(?:adds|updates|recasts|rewrites|corrects|changes|refiles|repeats|writes through)\b"),
    ("syndication notice", r"syndicat|auto-?generated|unedited|not been edited|headline|republish|first published"
                           r"|originally published|appeared first|provided by|authored by|verified by|feed\b"),
    ("disclaimer", r"disclaimer|views expressed|purposes only|investment advice|not (?:financial|investment) advice"),
    ("dateline", r"^[\w .,'’-]{2,40}\((?:[^()]{0,30}/)?[^()]{1,30}\)\s*[-—–:]?\s*$"),
    ("rights", r"copyright|rights reserved|©"),
    ("consent and privacy", r"cookie|consent|privacy"),
    ("comments", r"comment|conversation|discussion|reply|community guidelines"),
    ("ad marker", r"advert|sponsor|promoted"),
    ("photo and caption", r"\b(?:photo|image|picture|pic|getty|caption|gallery|credit)s?\b"),
    ("agency credit", r"\b(?:agenc(?:y|ies)|news service|news network|inputs?|reporting by|editing by|posted by"
                      r"|written by|source|staff|wire|pti|ap|afp|reuters|xinhua|kyodo|ians|ani)\b|(?-i:^(?:[A-Z]{2,6}\s*){2,}$)"
                      r"|(?-i:^[A-Z]{2,5}/[A-Z]{2,6}$)|(?-i:^\([A-Z]{2,8}\)$)|\breported by\b"),
    ("paywall and account", r"log ?in|sign ?in|register|account|free articles?|keep reading|continue reading"
                            r"|subscribe now|discover more|member|per month|support (?:local|our|independent)"),
    ("newsletter, app, social", r"newsletter|subscri|\bapps?\b|download|follow|whatsapp|telegram|e-?paper|inbox"
                                r"|android|iphone|alerts?\b"),
    ("media and share widget", r"share|print|video|javascript|play\b|watch|listen|copied|brightcove|player"),
    ("reader poll", r"how did you|what do you think|rate this|was this (?:article|story)"),
    ("pointer to a web page", r"information is available|more information|further information|website"),
    ("timestamp", r"published on|updated|\d{1,2}:\d{2}|min read"),
    ("related links", r"also read|read more|related|latest|more from|recommended|stories|\bread\b|trending"),
    ("developing story", r"developing|details (?:later|coming|to follow)|more to (?:follow|come)|check back"
                         r"|breaking|more soon"),
    ("navigation and section lines", r"menu|search|toggle|\bhome\b|skip|loading|scroll|logo|quotes|(?-i:^[A-Z/ ]+$)"
                                     r"|(?-i:^[a-z ]+$)|^[^\x00-\x7f]+$"),
)
_CLASSES = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CLASSES)


def line_class(text: str) -> str:
    """The class of a boilerplate line by its words (see CLASSES), "other" when none fits."""
    return next((name for name, pattern in _CLASSES if pattern.search(text)), "other")


def fold_of(site: str) -> int:
    """The fold (0 .. FOLDS - 1) of a site, fixed by a hash of its name."""
    return int(hashlib.sha1(site.encode("utf-8")).hexdigest(), 16) % FOLDS


def support(data: Data, split: str = "tune", rules: RuleSet = _RULES) -> dict[str, frozenset[str]]:
    """Per rule name and per vocabulary term, the sites of ``split``'s listed lines that it takes out.

    Each rule is run on its own over every glued and in-situ text (extracted once), so
    a rule that stands behind another (the first that claims a line names the removal)
    is credited with what it would remove too. "Takes out": fewer occurrences of the
    line in the clean text than in the extracted one. A rule built from word lists
    credits the terms (``"name:term"``) that occur in each line it takes out.
    """
    out: dict[str, set[str]] = {}
    vocabulary = builtin_vocabulary()
    found_in = {term: re.compile(r"(?<!\w)" + expand(vocabulary[term.split(":", 1)[0]].fragment(term.split(":", 1)[1]),
                                                      vocabulary)[0] + r"(?!\w)", re.IGNORECASE)
                for rule in rules.rules for term in rule.terms}
    for _kind, item, line, source, _mode, paragraphs in line_runs(data, split):
        raw = extracted(item, tuple(paragraphs))
        before = _count(raw.text, line)
        for rule in rules.rules:
            if before and _count(clean(raw, RuleSet((rule,))).text, line) < before:
                for name in (rule.name, *(t for t in rule.terms if found_in[t].search(line))):
                    out.setdefault(name, set()).add(source)
    return {name: frozenset(found_at) for name, found_at in out.items()}


def rules_without(supported: dict[str, frozenset[str]], held_out: frozenset[str], terms: bool = True) -> RuleSet:
    """The built-in rules less the rules (and, with ``terms``, the vocabulary terms) whose every
    listed-line removal was of a ``held_out`` site."""
    def out(name: str) -> bool:
        return bool(supported.get(name)) and not supported[name] - held_out

    left_out = frozenset(t for rule in _RULES.rules for t in rule.terms if terms and out(t))
    return RuleSet(tuple(r for r in builtin_rules(left_out) if not out(r.name)))


def leave_sites_out(data: Data, split: str = "tune", terms: bool = True) -> list[dict[str, object]]:
    """Per fold of ``split``'s sites: the rules (and, with ``terms``, the vocabulary terms) left
    out for it, and the built-in rules' figures on its sites."""
    supported = support(data, split)
    sites = {i.site for i in data.items if split in ("all", i.split)} | {
        line.site for line in data.lines if split in ("all", line.split)}
    out = []
    for fold in range(FOLDS):
        held_out = frozenset(s for s in sites if fold_of(s) == fold)
        reduced = rules_without(supported, held_out, terms)
        found = runs(data, split, rules=reduced, sites=held_out)
        dropped = sorted({r.name for r in _RULES.rules} - {r.name for r in reduced.rules})
        words = sorted(t for t, at in supported.items() if terms and ":" in t and not at - held_out)
        out.append({"fold": fold, "sites": len(held_out), "dropped_rules": dropped, "dropped_terms": words,
                    "runs": found})
    return out


def by_class(found: list[Run]) -> dict[str, tuple[int, int]]:
    """Per class of line (see ``line_class``): (removed, total) over the glued and in-situ runs."""
    out: dict[str, tuple[int, int]] = {}
    for run in found:
        if run.kind != "bare":
            removed, total = out.get(line_class(run.line), (0, 0))
            out[line_class(run.line)] = (removed + run.removed, total + 1)
    return dict(sorted(out.items()))


def measure_left_out(shared: Path, split: str = "tune", terms: bool = True) -> dict[str, object]:
    """Leave-sites-out figures on the real copies under ``shared``: ``pooled`` and per ``folds`` (score dicts)."""
    return dict(_left_out(Path(shared), split, terms))


@lru_cache(maxsize=4)
def _left_out(shared: Path, split: str, terms: bool) -> tuple[tuple[str, object], ...]:
    found = leave_sites_out(load(shared), split, terms)
    return (("pooled", score([run for fold in found for run in fold["runs"]])),
            ("folds", [score(fold["runs"]) for fold in found]))
