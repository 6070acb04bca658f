"""The labelled cleaning cases of fixtures/clean/ and how one is run and scored.

Each case is ``NN-slug.html`` (input) with ``NN-slug.toml`` (``kind`` page|entry,
``source``, ``title``, ``keep`` = sentences that must survive, ``remove`` = boilerplate
that must go). ``run_case`` runs the real stages: ``extract`` (a page case as a fetched
full-text page, an entry case as the feed's content) then ``clean`` with the built-in
rules; ``score`` gives the share of ``remove`` strings gone and of ``keep`` strings kept.
Used by tests/test_clean.py, tests/test_extract.py and ``python -m bench.clean_quality``
(bench imports tests, never the other way round).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ingest.clean import clean, ruleset
from ingest.config import ExtractConfig
from ingest.extract import extract, html_to_text
from ingest.models import Document, Entry, FetchResult

ROOT = Path(__file__).resolve().parent.parent
CLEAN_DIR = ROOT / "fixtures" / "clean"
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "page" | "entry"
    source: str
    title: str
    html: str
    keep: tuple[str, ...]
    remove: tuple[str, ...]

    @property
    def number(self) -> int:
        return int(self.id.split("-", 1)[0])

    @property
    def half(self) -> str:
        """Odd-numbered cases were looked at while tuning rules; even ones were held out."""
        return "tuned" if self.number % 2 else "held-out"


@dataclass(frozen=True)
class Outcome:
    case: Case
    document: Document
    missing: tuple[str, ...]  # keep strings not found in the clean text
    left: tuple[str, ...]  # remove strings still in the clean text


def load_cases(directory: Path = CLEAN_DIR) -> list[Case]:
    """Every labelled case in ``directory``, sorted by id."""
    cases = []
    for label in sorted(directory.glob("*.toml")):
        raw = tomllib.loads(label.read_text(encoding="utf-8"))
        cases.append(Case(
            id=label.stem, kind=raw["kind"], source=raw["source"], title=raw["title"],
            html=label.with_suffix(".html").read_text(encoding="utf-8"),
            keep=tuple(raw.get("keep", ())), remove=tuple(raw.get("remove", ())),
        ))
    return cases


def inputs(case: Case) -> tuple[Entry, FetchResult | None]:
    """The entry (and fetched page) the pipeline would hand to ``extract`` for this case."""
    url = f"https://{case.source}.example/{case.id}/"
    if case.kind == "page":
        entry = _entry(case, url, "", "none")
        page = FetchResult(url=url, final_url=url, status=200, body=case.html.encode("utf-8"),
                           content_type="text/html; charset=utf-8")
        return entry, page
    return _entry(case, url, case.html, "content"), None


def _entry(case: Case, url: str, content: str, kind: str) -> Entry:
    return Entry(guid=url, url=url, title=case.title, author=None,
                 published_at=datetime(2025, 1, 1, tzinfo=timezone.utc), updated_at=None,
                 content_html=content, content_kind=kind)


def run_case(case: Case, cfg: ExtractConfig | None = None, fragment: str = "auto") -> Outcome:
    """Extract and clean one case (built-in rules per ``cfg``); say what was lost and what is left."""
    cfg = cfg or ExtractConfig()
    entry, page = inputs(case)
    document = clean(extract(entry, page, cfg, fragment=fragment), ruleset(cfg.builtin_rules))
    text = normalize(document.text)
    missing = tuple(k for k in case.keep if normalize(k) not in text)
    left = tuple(r for r in case.remove if normalize(r) in text)
    return Outcome(case, document, missing, left)


def other_dropped(outcome: Outcome) -> list[str]:
    """Block-text paragraphs of an entry case, not labelled boilerplate, absent from the clean text."""
    text = normalize(outcome.document.text)
    labelled = [normalize(r) for r in outcome.case.remove]
    return [
        p for p in (normalize(p) for p in html_to_text(outcome.case.html).split("\n\n"))
        if p and p not in text and not any(p in r or r in p for r in labelled)
    ]


def normalize(text: str) -> str:
    """Compare texts as a reader would: NFKC, one space for any run of whitespace."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def score(outcomes: list[Outcome]) -> dict[str, float | int]:
    """Shares (percent) of boilerplate removed and article sentences kept over ``outcomes``."""
    keep = sum(len(o.case.keep) for o in outcomes)
    remove = sum(len(o.case.remove) for o in outcomes)
    kept = keep - sum(len(o.missing) for o in outcomes)
    removed = remove - sum(len(o.left) for o in outcomes)
    return {
        "cases": len(outcomes), "keep": keep, "kept": kept, "remove": remove, "removed": removed,
        "kept_pct": round(100 * kept / keep, 2) if keep else 100.0,
        "removed_pct": round(100 * removed / remove, 2) if remove else 100.0,
    }
