"""Paraphrase evidence: rare-entity and sentence keys, aligned sentences, the number guard.

Pure. A machine-paraphrased copy keeps a story's names, figures and sentence order
but few of its word triples; a template report of another day keeps the words and
changes the figures. This module holds what tells them apart (docs/dedup.md): the
index keys that propose paraphrases (rare-entity MinHash bands in time buckets, one
key per long sentence), the evidence between two texts (shared rare entities, the
ordered number-aware sentence alignment, time apart) and the bars it is held to.
``ingest.dedup`` combines it with the word-shingle evidence into a decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol

import numpy as np
import xxhash

from ingest.config import DedupConfig
from ingest.features import Features, entity_overlap
from ingest.models import Signal
from ingest.sentences import NO_ALIGNMENT, Alignment, Sentence, align

# Rare-entity keys: a paraphrase keeps names and figures, not word triples (the word
# bands and paragraph keys proposed 113 of the 321 same-story pairs of the real copies,
# almost none with a spun copy). Bands of 3 rows over a MinHash of an item's rare
# entities (5 a real item, median): 16 bands propose most spun copies (tune replay:
# pairwise F1 0.718 with them; 2 rows x 12: 0.727) while a corpus whose entities recur
# (bench/gen: 30 made-up names an item from 300) got 2.3 candidates an item from them
# instead of 12.8. Grouped by publication time (KeyScheme.entity_bucket, twice the
# window), so a million stored items propose no more than the window's items do.
ENTITY_BANDS = 16
ENTITY_ROWS = 3
ENTITY_SEED = 0x5EED_0002
MIN_KEY_ENTITIES = 2
# Sentence keys: one exact key per sentence of at least SENTENCE_KEY_WORDS content
# words (its set of word stems), for the first SENTENCE_KEYS such sentences. Copies
# cut at other points and wrapped in other chrome share opening sentences even when
# they share no whole paragraph; in the tune replay, adding them raised pairwise
# recall 0.530 -> 0.548 at unchanged precision. Like paragraph keys they are not
# grouped by time: they name exact content, and each is capped at the newest items.
SENTENCE_KEYS = 8
SENTENCE_KEY_WORDS = 6
SENTENCE_SEED = 0x5EED_0003


class KeyScheme(Protocol):
    """What the keys depend on (dedup.SignatureScheme has it all, and records it in the store)."""

    entity_bands: int
    entity_rows: int
    entity_bucket: float
    sentence_keys: int


# ---------------------------------------------------------------------------- keys


def sentence_keys(features: Features, scheme: KeyScheme) -> tuple[int, ...]:
    """One key per long-enough sentence (its content-word stems as a set), the first ``sentence_keys`` of them."""
    out: list[int] = []
    for s in features.sentences:
        if len(out) == scheme.sentence_keys:
            break
        if len(s.words) >= SENTENCE_KEY_WORDS:
            packed = np.array(sorted(s.words), dtype="<u2").tobytes()
            out.append(xxhash.xxh64_intdigest(packed, seed=SENTENCE_SEED) & 0x7FFF_FFFF_FFFF_FFFF)
    return tuple(dict.fromkeys(out))


def buckets(when: datetime | None, scheme: KeyScheme) -> tuple[int, int]:
    """The time bucket of ``when`` and the neighbouring bucket nearer to it.

    Buckets are twice the window wide. Two items at most a window apart are in one
    bucket, or in two neighbouring ones with each in the half next to the other, so
    looking up one's own bucket and the nearer neighbour finds the other: one bucket
    of probe keys instead of two. No time known (a text compared on its own): bucket 0.
    """
    if when is None:
        return 0, -1
    position = when.timestamp() / scheme.entity_bucket
    bucket = math.floor(position)
    return bucket, bucket - 1 if position - bucket < 0.5 else bucket + 1


def entity_keys(entities: frozenset[int], bucket: int, scheme: KeyScheme) -> tuple[int, ...]:
    """One key per band of a MinHash over the entity hashes, mixed with the time bucket.

    Only for texts with at least MIN_KEY_ENTITIES entities: with one, every band is
    that entity alone, which far too many texts share. The permutations are
    multiply-add hashes mod 2**32 (48 of them cost ~10 us with numpy).
    """
    if len(entities) < MIN_KEY_ENTITIES or not scheme.entity_bands:
        return ()
    mins = _entity_minhash(entities, scheme.entity_bands * scheme.entity_rows)
    stamp = int(bucket).to_bytes(8, "little", signed=True)
    rows = scheme.entity_rows
    return tuple(
        xxhash.xxh64_intdigest(mins[band * rows : (band + 1) * rows].tobytes() + stamp, seed=ENTITY_SEED + band)
        & 0x7FFF_FFFF_FFFF_FFFF
        for band in range(scheme.entity_bands)
    )


@lru_cache(maxsize=4)
def _entity_permutations(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(ENTITY_SEED)
    return rng.integers(1, 2**32, count, dtype=np.uint64) | np.uint64(1), rng.integers(0, 2**32, count, dtype=np.uint64)


@lru_cache(maxsize=16)
def _entity_minhash(entities: frozenset[int], count: int) -> np.ndarray:
    # cached: one text's keys and probe keys are the same MinHash in two buckets
    a, b = _entity_permutations(count)
    values = np.array(sorted(entities), dtype=np.uint64)
    return ((a[:, None] * values[None, :] + b[:, None]) & np.uint64(0xFFFF_FFFF)).min(axis=1).astype("<u4")


# ---------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class Paraphrase:
    """The paraphrase evidence between two texts: rare entities, sentence alignment, time apart."""

    entities: int  # rare entities both have
    entity_share: float  # that count over the smaller entity set
    alignment: Alignment
    seconds: float | None  # publication (else fetch) times apart; None when a time is unknown
    figures_only: bool = False  # only the sentences with figures were aligned (for the guard)

    def conflict_bar(self, words_match: bool) -> int:
        """How many aligned sentences stating other figures make two texts reports of another day.

        Texts whose words match (a shingle rule) are one story with some figures
        updated unless the figures disagree in at least two aligned sentences and in
        twice as many as agree (on tune, weekly reports of other weeks: 4-6 disagree,
        0-2 agree; same-story word matches: at most 3 disagree, with 2-5 agreeing);
        texts matched on weaker evidence are held to one disagreeing sentence, and at
        least as many as agree.
        """
        a = self.alignment
        return max(2, 2 * a.agree) if words_match else max(1, a.agree)

    def another_day(self, words_match: bool) -> bool:
        """Aligned sentences state other figures, or another year: a report of another day.

        A near-identical sentence with another year is another edition of a template
        (on tune: never within a story); otherwise see ``conflict_bar``. On tune, the
        lenient bar still flags all 9 other-story pairs that word shingles match
        (weekly reports, almanac editions) and no same-story one; the strict one flags
        1,005 other-story pairs and 7 of 168 same-story ones.
        """
        return self.alignment.edition > 0 or self.alignment.conflict >= self.conflict_bar(words_match)

    def describe(self, words_match: bool) -> str:
        """The evidence in words, for a decision's reason."""
        a = self.alignment
        line = (
            ("sentences with figures" if self.figures_only else f"sentences {a.coverage:.0%}")
            + f" aligned ({a.agree} agree, {a.conflict} disagree on numbers"
            + (f", {a.edition} on the year" if a.edition else "")
            + f"), {self.entities} rare entities shared ({self.entity_share:.0%})"
        )
        if self.another_day(words_match):
            return line + ": numbers say another day"
        if not words_match and a.conflict > PARAPHRASE_CONFLICTS:
            line += ": too many disagree for a paraphrase"
        return line

    def signals(self, words_match: bool, cfg: DedupConfig) -> list[Signal]:
        """The evidence as stored values, each with the bar it is held to."""
        a = self.alignment
        out = [] if self.figures_only else [
            Signal("sentences", a.coverage, cfg.sentence_share, a.coverage >= cfg.sentence_share)
        ]
        bar = self.conflict_bar(words_match)  # disagreeing sentences that say another day
        out += [
            Signal("entities", self.entities, cfg.min_entities, self.entities >= cfg.min_entities),
            Signal("entity_share", round(self.entity_share, 4), cfg.entity_share, self.entity_share >= cfg.entity_share),
            Signal("numbers_disagree", a.conflict, bar, a.conflict < bar),
            Signal("years_disagree", a.edition, 1, a.edition < 1),
        ]
        if not words_match:  # a paraphrase match allows fewer (PARAPHRASE_CONFLICTS)
            out.append(Signal(
                "paraphrase_numbers_disagree", a.conflict, PARAPHRASE_CONFLICTS + 1, a.conflict <= PARAPHRASE_CONFLICTS,
            ))
        if self.seconds is not None:
            out.append(Signal(
                "window_hours", round(self.seconds / 3600, 2), round(cfg.window / 3600, 2), self.seconds <= cfg.window,
            ))
        return out


NO_PARAPHRASE = Paraphrase(0, 0.0, NO_ALIGNMENT, None)
# A paraphrase is recognised sentence by sentence: one or two shared sentences are what
# different articles on one event have (a quoted statement, the same lead fact).
MIN_ALIGNED = 3


def paraphrase(
    new: Features, other: Features, words_match: bool, containment: float, seconds: float | None, cfg: DedupConfig,
) -> Paraphrase:
    """Entity overlap (cheap, always) and the sentence alignment when it can matter.

    ``words_match``: a word-shingle rule already holds; ``containment``: the shingle
    containment of the smaller text in the other.

    The alignment (0.03-1 ms a pair in pure Python) runs only over the sentences with
    figures when the shingles matched (for the guard), and in full only when the
    entities or the containment and the time window already allow a match.
    """
    shared, share = entity_overlap(new, other)
    if words_match:
        # the shingles decide; the guard needs only the sentences that state figures (a
        # copy's align with their counterparts): a fraction of the work on long texts
        return Paraphrase(shared, share, align(_figures(new.sentences), _figures(other.sentences)), seconds, True)
    if (seconds is None or seconds <= cfg.window) and (
        (shared >= cfg.min_entities and share >= cfg.entity_share) or containment >= CORROBORATE_CONTAINMENT
    ):
        return Paraphrase(shared, share, align(new.sentences, other.sentences), seconds)
    return Paraphrase(shared, share, NO_ALIGNMENT, seconds)


def _figures(sentences: tuple[Sentence, ...]) -> tuple[Sentence, ...]:
    return tuple(s for s in sentences if s.numbers or s.years)


# Shingles and sentences corroborate each other below their own bars: containment >=
# 0.45 with >= 0.6 x sentence_share (0.3) of the shorter text aligned is a copy diluted
# by site chrome and cut elsewhere. On tune, once the number guard has removed
# templates, other stories' pairs reach containment 0.42 at most (0.45: a 7 % margin;
# the 0.40 first tried had none); same-story pairs: median 0.34.
CORROBORATE_CONTAINMENT = 0.45
CORROBORATE_SENTENCES = 0.6
# Strong entity evidence, STRONG_ENTITIES times min_entities rare entities covering
# STRONG_ENTITY_SHARE of the smaller set, lowers the sentence bar to STRONG_SENTENCES of
# sentence_share (0.35): on tune, other stories' pairs with >= 4 entities shared at >=
# 0.75 align at most 0.32 of the shorter text (7 % below), spun copies a median 0.45;
# 0.75 of sentence_share cost 2 of 38 spun items.
STRONG_ENTITIES = 2
STRONG_ENTITY_SHARE = 0.75
STRONG_SENTENCES = 0.7
# A paraphrase match (names, figures and sentence order, no word evidence) allows no
# aligned sentence that states other figures. A spun copy rewrites one text sentence by
# sentence and restates each of its figures; two outlets writing up one data release
# (or one statement) share the figures but each sets other ones beside them (last
# month's, last year's, another breakdown) in parallel sentences. On tune all 27
# same-story pairs matched as paraphrases align with 0 disagreeing sentences; the
# guard's general bar (max(1, agree)) let pairs with 4-6 agreeing and 1-3 disagreeing
# sentences through.
PARAPHRASE_CONFLICTS = 0


def in_window(para: Paraphrase, cfg: DedupConfig) -> bool:
    """Published (else fetched) at most ``window`` apart, or a time unknown."""
    return para.seconds is None or para.seconds <= cfg.window


def share_bar(value: float, cfg: DedupConfig, scale: float = 1.0) -> float:
    """A share bar, never below the Jaccard ``threshold`` (times ``scale``).

    With the defaults no bar is that low; ``recluster --threshold 0.99`` raises the
    Jaccard bar and so makes every rule ask for near-identical texts.
    """
    return max(value, cfg.threshold * scale)


def paraphrased(para: Paraphrase, cfg: DedupConfig, scale: float, strong: bool = False) -> bool:
    """Do the paraphrase signals reach ``scale`` times their thresholds (1: a match, less: support)?

    ``strong``: the entity bars raised (STRONG_ENTITIES, STRONG_ENTITY_SHARE) and the
    sentence bar lowered (STRONG_SENTENCES). A match (``scale`` 1) also allows no
    aligned sentence with other figures (PARAPHRASE_CONFLICTS); support (below 1) is
    held to the general number guard only.
    """
    entities = cfg.min_entities * (STRONG_ENTITIES if strong else 1)
    share = STRONG_ENTITY_SHARE if strong else cfg.entity_share
    sentences = cfg.sentence_share * (STRONG_SENTENCES if strong else 1.0)
    return (
        in_window(para, cfg)
        and (scale < 1.0 or para.alignment.conflict <= PARAPHRASE_CONFLICTS)
        and para.alignment.coverage >= share_bar(sentences * scale, cfg, scale)
        and para.entities >= max(1, round(entities * scale))
        and para.entity_share >= share_bar(share * scale, cfg, scale)
        and para.alignment.aligned >= max(1, round(MIN_ALIGNED * scale))
    )
