"""Near-duplicate detection: shingles, MinHash signatures, LSH band keys, the decision.

Pure: no database, no clock. The store hands ``decide`` the candidates it found
(exact URL / content-hash matches first, then items sharing LSH band keys, plus the
canonical item of every candidate cluster); ``decide`` verifies them on the real
shingle sets and returns a ``DedupDecision`` that says which cluster, by what method
and with which numbers.

Why verification on exact sets: signatures estimate Jaccard with a standard error of
about sqrt(J(1-J)/num_perm) (0.04 at J=0.3, 128 permutations), and real copies and
look-alikes sit close together in 0.1-0.4 (docs/facts.md#real-copies). LSH is tuned for recall and
only proposes; the decision is made on exact numbers.
"""

from __future__ import annotations

import hashlib
import math
import sys
import types
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np
import xxhash

from ingest.config import DedupConfig
from ingest.features import EMPTY, VERSION as FEATURES_VERSION, Features, decode, encode, extract
from ingest.memo import memo
from ingest.models import Candidate, DedupDecision, Fingerprint, Member, Signal
from ingest.paraphrase import (
    CORROBORATE_CONTAINMENT, CORROBORATE_SENTENCES, ENTITY_BANDS, ENTITY_ROWS, NO_PARAPHRASE, SENTENCE_KEYS,
    Paraphrase, buckets, entity_keys, in_window, paraphrase, paraphrased, sentence_keys, share_bar,
)
from ingest.text import normalize_words



def _import_datasketch() -> types.ModuleType:
    """``import datasketch`` without importing scipy.integrate at once.

    The package's ``__init__`` imports every sketch it has, and its LSH module imports
    scipy.integrate (for a parameter optimisation ingest never calls): 0.43 s of the
    0.49 s the import took here, paid by every ``ingest`` start, ``--once`` runs from
    cron included. While datasketch is imported, a stand-in module gives it a ``quad``
    that imports the real scipy.integrate when first called, so MinHashLSH still works.
    """
    if "datasketch" in sys.modules or "scipy.integrate" in sys.modules:
        import datasketch

        return datasketch
    stand_in = types.ModuleType("scipy.integrate")

    def quad(*args: Any, **kwargs: Any) -> Any:
        from scipy.integrate import quad as real

        return real(*args, **kwargs)

    stand_in.quad = quad  # type: ignore[attr-defined]
    sys.modules["scipy.integrate"] = stand_in
    try:
        import datasketch
    finally:
        if sys.modules.get("scipy.integrate") is stand_in:
            del sys.modules["scipy.integrate"]
    return datasketch


datasketch = _import_datasketch()
MinHash = datasketch.MinHash

NORMALIZATION = "nfkc-lower-words-v1"
HASH_NAME = "xxh32"
# LSH banding. Rows per band set the floor of background collisions: unrelated news
# texts share a few common shingles (Jaccard ~0.01-0.05), and with 2-3 rows per band a
# store of a million items would propose thousands of them for every new item. With 4
# rows the chance is J**4 per band (6e-6 at J=0.05), so lookups stay flat with size;
# 32 bands of 4 rows still propose a pair at J=0.5 with 87% and at J=0.6 with 99%.
LSH_ROWS = 4
# Teasers and lightly re-edited copies share their opening: a second, small signature
# over the first LEAD_WORDS words proposes them even when their Jaccard over the whole
# text is low (a 3-paragraph teaser of a 12-paragraph story: J ~0.25).
LEAD_WORDS = 30
LEAD_PERM = 32
# Copies wrapped in site chrome and cut at different points share whole paragraphs even
# when their Jaccard falls below what 4-row bands propose (corpus with chrome: band
# candidate recall 0.71). One exact key per body paragraph (up to this many) proposes
# them; the decision still verifies every candidate. ("Paragraph keys" in dedup are
# these index keys; boilerplate learning identifies paragraphs by
# clean.paragraph_fingerprint, a different thing.)
PARAGRAPH_KEYS = 24
PARAGRAPH_SEED = 0x5EED_0001
# A paragraph of at least PASSAGE_WORDS words is body text; shorter lines are what site
# chrome is made of (headlines of related stories, captions, navigation, share prompts).
# Measured on the corpus with chrome added (bench/dedup_quality.py --noisy): copies
# share >= 4 such paragraphs near-verbatim, different articles on one event at most 1
# (a quote), 12-word paragraphs let chrome headlines through (up to 3 shared).
PASSAGE_WORDS = 20
PASSAGE_SHARE = 0.8  # a paragraph is found in the other text when this share of its shingles is
# A lone item that a new text also matches joins the new text's cluster when at least
# this share of what it shares with the new text is in that cluster's canonical too
# (a bridging text shares ~0 there: its two stories lie in different parts of it).
ABSORB_OVERLAP = 0.5
LEAD_BONUS = 0.1  # added to a match's score when both texts open with the same paragraph (a tie-breaker)

# ---------------------------------------------------------------------------- text


def shingles(text: str, size: int) -> frozenset[str]:
    """The set of ``size``-word shingles of ``text`` (one shingle when it is shorter)."""
    return _shingles_of(normalize_words(text), size)


def _shingles_of(words: list[str], size: int) -> frozenset[str]:
    if len(words) < size:
        return frozenset([" ".join(words)]) if words else frozenset()
    # zip of shifted lists: 1.7x faster than slicing a window per shingle
    return frozenset(map(" ".join, zip(*(words[i:] for i in range(size)))))


def content_hash(text: str) -> str:
    """Hash of the normalised words: equal for texts that differ only in case, spacing, punctuation."""
    return hashlib.sha256(" ".join(normalize_words(text)).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class SignatureScheme:
    """Everything that makes two signatures comparable; recorded in the store."""

    num_perm: int
    seed: int
    shingle_size: int
    bands: int
    rows: int
    datasketch_major: int = int(datasketch.__version__.split(".")[0]) if hasattr(datasketch, "__version__") else 2
    minhash_scheme: str = "affine32"
    hash_name: str = HASH_NAME
    normalization: str = NORMALIZATION
    lead_words: int = LEAD_WORDS
    lead_perm: int = LEAD_PERM
    paragraph_keys: int = PARAGRAPH_KEYS
    # stored features and the rare-entity keys (bands of a MinHash over the entities,
    # grouped by publication time in buckets of ``entity_bucket`` seconds)
    features: str = f"sentences-entities-v{FEATURES_VERSION}"
    entity_bands: int = ENTITY_BANDS
    entity_rows: int = ENTITY_ROWS
    entity_bucket: float = 6 * 86400.0  # twice the window: see _buckets
    sentence_keys: int = SENTENCE_KEYS

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def scheme_for(cfg: DedupConfig, rows: int = LSH_ROWS) -> SignatureScheme:
    """The signature scheme and LSH banding for a dedup config (``rows`` for the sweep)."""
    # without paraphrase evidence the index has no entity or sentence keys either: the
    # candidates, and so the decisions, are exactly those of the shingle-only decision
    return SignatureScheme(
        num_perm=cfg.num_perm, seed=cfg.seed, shingle_size=cfg.shingle_size,
        bands=cfg.num_perm // rows, rows=rows, entity_bucket=2 * cfg.window,
        entity_bands=ENTITY_BANDS if cfg.paraphrase else 0, sentence_keys=SENTENCE_KEYS if cfg.paraphrase else 0,
    )


@lru_cache(maxsize=8)
def _template(num_perm: int, seed: int) -> MinHash:
    # The permutations are derived from the seed; building them costs more than hashing
    # a text, so one template per scheme is copied for every document.
    return MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest, scheme="affine32")


def signature_of(shingle_set: Iterable[str], num_perm: int, seed: int) -> np.ndarray:
    """MinHash hash values (uint32) of a shingle set, all shingles hashed in one batch."""
    template = _template(num_perm, seed)
    m = template.copy()
    encoded = [s.encode("utf-8") for s in shingle_set]
    if encoded:
        m.update_batch(encoded)
    return np.asarray(m.hashvalues, dtype=np.uint32)


def band_keys(values: np.ndarray, rows: int, first_band: int = 0) -> tuple[int, ...]:
    """One 63-bit key per LSH band of ``rows`` values (band number mixed in as the seed)."""
    keys = []
    for band in range(len(values) // rows):
        chunk = values[band * rows : (band + 1) * rows]
        digest = xxhash.xxh64_intdigest(chunk.tobytes(), seed=first_band + band)
        keys.append(digest & 0x7FFF_FFFF_FFFF_FFFF)
    return tuple(keys)


def fingerprint(text: str, scheme: SignatureScheme, when: datetime | None = None) -> Fingerprint:
    """Content hash, shingle count, MinHash signature, features and index keys of a clean text.

    Keys: the LSH bands of the whole text's signature; the bands of a small signature
    of the body's first ``lead_words`` words (teasers and cut-off copies share their
    opening, not their length); one key per body paragraph (>= PASSAGE_WORDS words)
    for copies whose overlap site chrome has diluted below what bands find; and the
    bands of a small MinHash over the rare entities, in the time bucket of ``when``
    (published, else fetched): a paraphrase shares few shingles but most names and
    figures. ``probe_keys`` are the same entity bands in the neighbouring bucket
    nearer to ``when``, looked up but not stored, so items up to a window apart meet.
    """
    paragraphs = _paragraph_words(text)
    words = [w for ws in paragraphs for w in ws]
    shingle_set = _shingles_of(words, scheme.shingle_size)
    values = signature_of(shingle_set, scheme.num_perm, scheme.seed)
    keys = band_keys(values, scheme.rows)
    body = [w for w in paragraphs if len(w) >= PASSAGE_WORDS]
    # the lead skips short lines (captions, navigation, a dateline) before the body
    lead = ([w for ws in body for w in ws] or words)[: scheme.lead_words]
    if len(lead) == scheme.lead_words:  # shorter texts are their own lead: full bands suffice
        lead_values = signature_of(_shingles_of(lead, scheme.shingle_size), scheme.lead_perm, scheme.seed)
        keys += band_keys(lead_values, scheme.rows, first_band=scheme.bands)
    if scheme.paragraph_keys:
        keys += tuple(dict.fromkeys(_paragraph_index_key(ws) for ws in body[: scheme.paragraph_keys]))
    features = extract(text)
    bucket, neighbour = buckets(when, scheme)
    keys += entity_keys(features.entities, bucket, scheme)
    keys += sentence_keys(features, scheme)
    probes = entity_keys(features.entities, neighbour, scheme)
    return Fingerprint(
        content_hash=hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest(),
        shingle_count=len(shingle_set),
        signature=values.astype("<u4").tobytes(),
        band_keys=keys,
        features=encode(features),
        probe_keys=probes,
    )


def probe_keys(features: bytes, when: datetime | None, scheme: SignatureScheme) -> tuple[int, ...]:
    """The entity keys of the bucket next to ``when``'s (the nearer one), for stored features (re-clustering)."""
    return entity_keys(decode(features).entities, buckets(when, scheme)[1], scheme)


def _paragraph_index_key(words: list[str]) -> int:
    # seeded apart from the band keys (whose seeds are band numbers < 1024)
    return xxhash.xxh64_intdigest(" ".join(words).encode("utf-8"), seed=PARAGRAPH_SEED) & 0x7FFF_FFFF_FFFF_FFFF


def estimated_jaccard(a: bytes, b: bytes) -> float:
    """Share of equal MinHash values: the signature's estimate of Jaccard similarity."""
    va, vb = np.frombuffer(a, dtype="<u4"), np.frombuffer(b, dtype="<u4")
    if len(va) != len(vb) or not len(va):
        return 0.0
    return float(np.count_nonzero(va == vb)) / len(va)


# ---------------------------------------------------------------------------- decision



@dataclass(frozen=True)
class Text:
    """A text prepared for comparison: its shingle set and its body paragraphs' shingles."""

    shingles: frozenset[str]
    passages: tuple[frozenset[str], ...]
    passage_words: tuple[int, ...]


# Candidates are mostly recent items, verified again for each copy that follows
# them: on the 1k-item bench corpus 277 of 1,232 calls hit a 256-entry cache (204 at
# 128), for ~80 KB a 600-word text (~3,600 characters): a Text takes 20-40 times its
# characters. Bounded by text too: 256 news texts fit in 1 M characters, and long texts
# take fewer places (15 KB texts held 147 MB at 256 entries; 1 M characters of them
# about 40 MB). Text is frozen, so sharing it is safe.
@memo(entries=256, size=1_000_000)
def prepare(text: str, size: int) -> Text:
    """Shingles of the whole text and of each body paragraph (>= PASSAGE_WORDS words)."""
    paragraphs = _paragraph_words(text)
    body = [words for words in paragraphs if len(words) >= PASSAGE_WORDS]
    whole = _shingles_of([w for words in paragraphs for w in words], size)
    return Text(whole, tuple(_shingles_of(words, size) for words in body), tuple(len(words) for words in body))


def _paragraph_words(text: str) -> list[list[str]]:
    """Normalised words of each paragraph; joined, they are ``normalize_words(text)`` (no word spans a blank line)."""
    return [normalize_words(paragraph) for paragraph in text.split("\n\n")]


@dataclass(frozen=True)
class Similarity:
    jaccard: float
    containment: float  # of the smaller shingle set in the larger
    passages: int  # body paragraphs of the text with fewer of them found in the other
    passage_share: float  # share of that text's body words in the paragraphs found
    method: str  # "minhash" | "containment" | "passages" | "" (no match)
    same_lead: bool = False  # both open with the same body paragraph (a copy; a digest quotes it mid-text)
    estimated: bool = False  # Jaccard and containment estimated from signatures (far apart: see _far)


def similarity(a: Text, b: Text, cfg: DedupConfig) -> Similarity:
    """Jaccard, containment and shared body paragraphs of two texts, and the rule they meet."""
    if not a.shingles or not b.shingles:
        return Similarity(0.0, 0.0, 0, 0.0, "")
    inter = len(a.shingles & b.shingles)
    jaccard = inter / (len(a.shingles) + len(b.shingles) - inter)
    smaller = min(len(a.shingles), len(b.shingles))
    containment = inter / smaller
    passages, share = _passages(a, b) if len(a.passages) <= len(b.passages) else _passages(b, a)
    method = ""
    if smaller >= cfg.min_shingles:  # shorter texts never merge on similarity alone
        if jaccard >= cfg.threshold:
            method = "minhash"
        elif containment >= cfg.containment:
            method = "containment"
        elif (cfg.min_passages and passages >= min(cfg.min_passages, len(a.passages), len(b.passages))
              and passages and share >= cfg.passage_share):
            method = "passages"
    same_lead = bool(a.passages and b.passages) and _found(a.passages[0], b.passages[0]) and _found(b.passages[0], a.passages[0])
    return Similarity(jaccard, containment, passages, share, method, same_lead)


def _found(passage: frozenset[str], other: frozenset[str]) -> bool:
    return len(passage & other) >= PASSAGE_SHARE * len(passage)


def _passages(small: Text, large: Text) -> tuple[int, float]:
    """Body paragraphs of ``small`` found in ``large`` in the same order, and their share of its body words.

    Order matters: a copy keeps the paragraphs in sequence, while two different pages
    that happen to quote each other's opening (a "Recommended" block) share them
    crosswise. The count is the longest run of found paragraphs whose best-matching
    paragraphs in ``large`` come in increasing order.
    """
    total = sum(small.passage_words)
    found: list[tuple[int, int]] = []  # (position in large, words)
    for passage, length in zip(small.passages, small.passage_words):
        if len(passage & large.shingles) >= PASSAGE_SHARE * len(passage):
            overlaps = [len(passage & other) for other in large.passages]
            position = max(range(len(overlaps)), key=overlaps.__getitem__) if overlaps else 0
            found.append((position, length))
    if not found:
        return 0, 0.0
    # longest strictly increasing subsequence of positions, weighted by words (n <= a few dozen)
    best: list[tuple[int, int]] = []  # per found paragraph: (count, words) of the best run ending there
    for i, (position, length) in enumerate(found):
        run = max((best[j] for j in range(i) if found[j][0] < position), default=(0, 0))
        best.append((run[0] + 1, run[1] + length))
    count, words = max(best)
    return count, (words / total if total else 0.0)


def compare(a: frozenset[str], b: frozenset[str], cfg: DedupConfig) -> tuple[float, float, str]:
    """Jaccard, containment of the smaller in the larger, and the rule they satisfy ('' for none)."""
    sim = similarity(Text(a, (), ()), Text(b, (), ()), cfg)
    return sim.jaccard, sim.containment, sim.method


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    sim: Similarity
    para: Paraphrase = NO_PARAPHRASE
    method: str = ""  # the rule met: sim.method unless the guard vetoed it, or "paraphrase"


def _method(sim: Similarity, para: Paraphrase, cfg: DedupConfig) -> str:
    """The rule a candidate meets: a shingle rule unless the numbers say another day, else
    aligned sentences corroborated by shingles ("sentences") or by rare entities ("paraphrase")."""
    if not cfg.paraphrase:
        return sim.method
    if sim.method:
        return "" if para.another_day(words_match=True) else sim.method
    if para.another_day(words_match=False):
        return ""
    if (
        in_window(para, cfg) and para.alignment.coverage >= share_bar(cfg.sentence_share * CORROBORATE_SENTENCES, cfg)
        and sim.containment >= share_bar(CORROBORATE_CONTAINMENT, cfg)
    ):
        return "sentences"
    if paraphrased(para, cfg, 1.0) or paraphrased(para, cfg, 1.0, strong=True):
        return "paraphrase"
    return ""


def decide(
    text: str, candidates: Sequence[Candidate], cfg: DedupConfig, shingle_count: int | None = None,
    features: bytes | None = None, when: datetime | None = None, signature: bytes | None = None,
) -> DedupDecision:
    """Which cluster a new text joins, verified against each candidate's real text.

    Exact copies come first: the same canonical URL, or the same normalised text
    (never for texts too short to compare: those join by URL only). Otherwise a
    cluster is joined when some member matches: on shingles (Jaccard >= threshold; a
    teaser contained >= containment; or >= min_passages body paragraphs found
    near-verbatim, covering >= passage_share of the text with fewer of them), or, with
    ``paraphrase``, on sentences and entities (>= sentence_share of the shorter text
    in sentences aligned in order with agreeing numbers, and >= min_entities rare
    entities shared, >= entity_share of the smaller set, published within
    ``window``); and no match stands when the aligned sentences state other figures
    or another year (a template report of another day). The cluster's canonical item
    must support the match (the same signals at half their levels): one bridging
    member cannot pull a different story in. The best-scoring cluster wins; two
    existing clusters are never merged.

    ``shingle_count`` (the fingerprint's) spares shingling the text when there are
    no candidates to verify; ``features`` (the fingerprint's) spares extracting them
    again; ``signature`` (the fingerprint's) lets candidates that are far from the
    text on their signatures skip exact shingling (``_compare``); ``when`` is the
    item's publication (else fetch) time.
    """
    count = len(shingles(text, cfg.shingle_size)) if shingle_count is None else shingle_count
    if not candidates:
        return DedupDecision(kind="new", candidates=0, reason=_too_short(count, cfg) or "no candidates")
    exact = _exact(count, candidates, cfg)
    if exact is not None:
        return exact
    short = _too_short(count, cfg)
    if short:
        return DedupDecision(kind="new", candidates=len(candidates), reason=short)
    new_features = (decode(features) if features else extract(text)) if cfg.paraphrase else EMPTY
    by_cluster: dict[int, list[Match]] = {}
    for candidate in candidates:
        match = _compare(text, new_features, when, candidate, cfg, signature or b"", count)
        by_cluster.setdefault(candidate.cluster_id, []).append(match)

    matched: list[tuple[float, int, Match, Match | None]] = []
    for cluster_id, matches in by_cluster.items():
        hits = [m for m in matches if m.method]
        if not hits:
            continue
        top = max(hits, key=_score)
        canonical = next((m for m in matches if m.candidate.is_canonical), None)
        if canonical is not None and canonical is not top and not _supports(canonical, cfg):
            continue
        matched.append((_score(top), cluster_id, top, canonical))
    if not matched:
        closest = max((m for ms in by_cluster.values() for m in ms), key=_closeness, default=None)
        reason = "no candidates" if closest is None else (
            f"closest item {closest.candidate.item_id}: " + _describe(closest, cfg)
        )
        return DedupDecision(
            kind="new", candidates=len(candidates), reason=reason,
            evidence=_evidence(closest, cfg) if closest is not None else (),
        )
    score, cluster_id, top, canonical = max(matched, key=lambda m: (m[0], -m[1]))
    canon_sim = canonical.sim.jaccard if canonical is not None else top.sim.jaccard
    absorb = _absorbable(matched, cluster_id, canonical, by_cluster, prepare(text, cfg.shingle_size), cfg)
    return DedupDecision(
        kind="duplicate", cluster_id=cluster_id, matched_item_id=top.candidate.item_id,
        method=top.method, similarity=round(top.sim.jaccard, 4), containment=round(top.sim.containment, 4),
        canonical_similarity=round(canon_sim, 4), candidates=len(candidates), absorb=absorb,
        reason=(
            f"{top.method}: {_describe(top, cfg)} with item {top.candidate.item_id}; canonical jaccard {canon_sim:.2f}"
            + (f"; takes in lone item(s) of cluster(s) {', '.join(map(str, absorb))}" if absorb else "")
        ),
        evidence=_evidence(top, cfg),
    )


def _compare(
    text: str, features: Features, when: datetime | None, candidate: Candidate, cfg: DedupConfig,
    signature: bytes = b"", count: int = 0,
) -> Match:
    """Every signal between a new text and one candidate, and the rule they meet.

    With both signatures known, a candidate whose Jaccard and containment cannot
    reach any shingle bar even at the top of the signature's error (FAR) keeps the
    estimates and is not shingled: with the rare-entity and sentence keys most
    candidates of an item are other articles on its topic, and shingling them was
    most of the writer's time (bench corpus: 16 candidates an item).
    """
    sim = _far(signature, count, candidate, cfg)
    if sim is None:
        sim = similarity(prepare(text, cfg.shingle_size), prepare(candidate.text, cfg.shingle_size), cfg)
    para = (
        paraphrase(features, decode(candidate.features), bool(sim.method), sim.containment,
                   _apart(when, candidate.when), cfg)
        if cfg.paraphrase else NO_PARAPHRASE
    )
    return Match(candidate, sim, para, _method(sim, para, cfg))


# A candidate is far when, with its Jaccard estimate raised by FAR_SIGMAS standard
# errors, Jaccard stays under half the threshold and the implied containment under
# FAR_CONTAINMENT (below every bar that uses shingles: 0.45 with sentences, canonical
# support at half the containment bar, 0.4).
FAR_SIGMAS = 3.0
FAR_CONTAINMENT = 0.35


def _far(signature: bytes, count: int, candidate: Candidate, cfg: DedupConfig) -> Similarity | None:
    """Estimated similarity when the signatures rule out every shingle rule (None: verify exactly)."""
    if not signature or not candidate.signature or not count or not candidate.shingle_count:
        return None
    perms = len(signature) // 4
    estimate = estimated_jaccard(signature, candidate.signature)
    high = estimate + FAR_SIGMAS * math.sqrt(max(estimate, 1 / perms) * (1 - estimate) / perms)
    smaller = min(count, candidate.shingle_count)
    contained = min(1.0, high * (count + candidate.shingle_count) / (1 + high) / smaller)
    if high >= cfg.threshold / 2 or contained >= FAR_CONTAINMENT:
        return None
    low = estimate * (count + candidate.shingle_count) / (1 + estimate) / smaller
    return Similarity(round(estimate, 4), round(min(1.0, low), 4), 0, 0.0, "", estimated=True)


def _apart(a: datetime | None, b: datetime | None) -> float | None:
    """Seconds between two times (None when either is unknown)."""
    return abs((a - b).total_seconds()) if a is not None and b is not None else None


def _describe(match: Match, cfg: DedupConfig) -> str:
    """The numbers of a match in one line (the decision's reason)."""
    sim, para = match.sim, match.para
    line = (
        f"jaccard {sim.jaccard:.2f}, containment {sim.containment:.2f}, "
        + ("estimated from signatures" if sim.estimated
           else f"{sim.passages} shared paragraphs ({sim.passage_share:.0%})")
    )
    if cfg.paraphrase:
        line += ", " + para.describe(words_match=bool(sim.method))
    if not match.method:
        line += (
            f" (below threshold {cfg.threshold} / {cfg.containment} / {cfg.min_passages}"
            + (f" / sentences {cfg.sentence_share} with {cfg.min_entities} entities" if cfg.paraphrase else "")
            + ")"
        )
    return line


def _evidence(match: Match, cfg: DedupConfig) -> tuple[Signal, ...]:
    """The signals of one match with their thresholds, as stored values."""
    sim = match.sim
    out = [
        Signal("jaccard", round(sim.jaccard, 4), cfg.threshold, sim.jaccard >= cfg.threshold),
        Signal("containment", round(sim.containment, 4), cfg.containment, sim.containment >= cfg.containment),
        Signal("paragraphs", sim.passages, cfg.min_passages, sim.method == "passages"),
    ]
    if cfg.paraphrase:
        out += match.para.signals(bool(sim.method), cfg)
    return tuple(out)


def _absorbable(
    matched: list[tuple[float, int, Match, Match | None]], chosen: int, canonical: Match | None,
    by_cluster: dict[int, list[Match]], new: Text, cfg: DedupConfig,
) -> tuple[int, ...]:
    """Other clusters of one item that match the new text on the part it shares with the chosen cluster.

    Arrival order decides which copy starts a cluster: a copy that came before any
    copy it matches stays alone when later copies match each other better. Such a lone
    item joins when the chosen cluster's canonical item supports it (``_supports``, as
    for any join: it would have joined through the new text, had it come after it),
    unless the new text is a piece of it (contained >= ``containment``: a digest that
    quotes the new text is backed by the story it quotes). Otherwise it joins only
    when it is itself a copy or teaser of the new text and at least ABSORB_OVERLAP of
    what it shares with the new text is also in the canonical item (or it matches
    that item on shingles). A new text that bridges two stories shares one story with
    the cluster and the other with the lone item, which the canonical does not back,
    so it cannot carry one into the other. On tune, backing took in 2 lone copies
    (5 pairs) and no other story's item. The store moves the item only if its
    cluster still has one item.
    """
    if canonical is None:
        return ()
    target = prepare(canonical.candidate.text, cfg.shingle_size)
    out = []
    for _score_, cluster_id, top, _canonical in matched:
        members = by_cluster[cluster_id]
        if cluster_id == chosen or len(members) != 1 or not top.candidate.is_canonical:
            continue
        alone = top.candidate
        lone = prepare(alone.text, cfg.shingle_size)
        shared = lone.shingles & new.shingles
        if len(shared) < cfg.containment * len(new.shingles) and _supports(
            _compare(alone.text, decode(alone.features), alone.when, canonical.candidate, cfg), cfg,
        ):
            out.append(cluster_id)  # it would have joined through the new text, had it come after it
            continue
        if top.method in ("sentences", "paraphrase"):
            continue
        if not _covered(lone, new, shared, cfg):
            continue  # the new text is part of the lone one (a digest quoting it), not a copy of it
        if len(shared & target.shingles) >= ABSORB_OVERLAP * len(shared) or similarity(lone, target, cfg).method:
            out.append(cluster_id)
    return tuple(sorted(out))


def _covered(lone: Text, new: Text, shared: frozenset[str], cfg: DedupConfig) -> bool:
    """Is ``lone`` itself a copy or teaser of ``new`` (and not ``new`` a piece of it)?"""
    # containment of the lone text itself, not Jaccard: a short digest and a teaser it
    # quotes can reach the Jaccard threshold while most of the digest is elsewhere
    if len(shared) >= cfg.containment * len(lone.shingles):
        return True
    found, share = _passages(lone, new)
    return bool(cfg.min_passages) and found >= min(cfg.min_passages, len(lone.passages)) > 0 and share >= cfg.passage_share


def _too_short(shingle_count: int, cfg: DedupConfig) -> str:
    """Why a text this short merges only by URL ('' when it is long enough)."""
    if shingle_count < cfg.min_shingles:
        return f"{shingle_count} shingles < min_shingles={cfg.min_shingles}: too short to compare, joins by URL only"
    return ""


def _exact(count: int, candidates: Sequence[Candidate], cfg: DedupConfig) -> DedupDecision | None:
    """The same canonical URL, else the same normalised text (only for texts long enough to compare).

    Two one-line texts alike ("Photo gallery", a bare headline) say nothing about being
    one story, whatever their titles: they join only by URL.
    """
    long_enough = count >= cfg.min_shingles
    for method, flag in (("url", "same_url"), ("content_hash", "same_content")):
        if method == "content_hash" and not long_enough:
            continue
        for c in candidates:
            if not getattr(c, flag):
                continue
            return DedupDecision(
                kind="duplicate", cluster_id=c.cluster_id, matched_item_id=c.item_id, method=method,
                similarity=1.0 if method == "content_hash" else 0.0, containment=1.0 if method == "content_hash" else 0.0,
                candidates=len(candidates), reason=f"same {'canonical URL' if method == 'url' else 'normalised text'} as item {c.item_id}",
            )
    return None


def _score(match: Match) -> float:
    # Jaccard ranks copies; a contained teaser, shared paragraphs or aligned sentences
    # rank by their share scaled onto that range. Sharing the opening paragraph counts
    # extra: a teaser is contained as much in a digest quoting it (and a digest is
    # short, so its Jaccard is higher) as in its own full text, but only the full
    # text opens with it.
    sim = match.sim
    base = max(
        sim.jaccard, sim.containment * 0.5, sim.passage_share * 0.5 if match.method else 0.0,
        match.para.alignment.coverage * 0.5 if match.method in ("sentences", "paraphrase") else 0.0,
    )
    return base + (LEAD_BONUS if sim.same_lead else 0.0)


def _closeness(match: Match) -> float:
    """How near a candidate that matched nothing came (for the reason of a new cluster)."""
    return max(_score(match), match.para.alignment.coverage * 0.5)


def _supports(canonical: Match, cfg: DedupConfig) -> bool:
    """Does the cluster's canonical item back a match with another member (half the levels)?"""
    sim, para = canonical.sim, canonical.para
    words = (
        sim.jaccard >= cfg.threshold / 2 or sim.containment >= cfg.containment / 2
        or (cfg.min_passages > 0 and sim.passages >= 2)
    )
    if not cfg.paraphrase:
        return bool(canonical.method) or words
    # support at half the bars is weak evidence: held to the strict number guard
    return bool(canonical.method) or (
        (words or paraphrased(para, cfg, 0.5)) and not para.another_day(words_match=False)
    )


# ---------------------------------------------------------------------------- canonical


def canonical_key(member: Member, policy: str) -> tuple:
    """Sort key: the smallest is the canonical item under ``policy``."""
    when = member.published_at or member.fetched_at
    earliest = (when is None, when or 0, member.fetched_at or 0, member.item_id)
    if policy == "priority":
        return (-member.priority, *earliest)
    if policy == "longest":
        return (-member.length, *earliest)
    return earliest


def placement(decision: DedupDecision, cluster_id: int, cluster_size: int) -> tuple[int, str]:
    """Where an updated item goes, and the decision reason to store with it.

    An item that is alone in its cluster follows a new "duplicate" decision into the
    other cluster; an item that has company keeps its cluster (moving it would split
    a story users have already seen), and the reason says so. The decision itself is
    kept either way.
    """
    if decision.kind != "duplicate" or decision.cluster_id in (None, cluster_id):
        return cluster_id, decision.reason
    if cluster_size == 1:
        return decision.cluster_id, decision.reason
    return cluster_id, f"kept in cluster {cluster_id}; " + decision.reason
