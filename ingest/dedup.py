"""Near-duplicate detection: shingles, MinHash signatures, LSH band keys, the decision.

Pure: no database, no clock. The store hands ``decide`` the candidates it found
(exact URL / content-hash matches first, then items sharing LSH band keys, plus the
canonical item of every candidate cluster); ``decide`` verifies them on the real
shingle sets and returns a ``DedupDecision`` that says which cluster, by what method
and with which numbers.

Why verification on exact sets: signatures estimate Jaccard with a standard error of
about sqrt(J(1-J)/num_perm) (0.04 at J=0.3, 128 permutations), and real copies and
look-alikes sit close together in 0.1-0.4 (FINDINGS.md). LSH is tuned for recall and
only proposes; the decision is made on exact numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import datasketch
import numpy as np
import xxhash
from datasketch import MinHash

from ingest.config import DedupConfig
from ingest.models import Candidate, DedupDecision, Fingerprint
from ingest.text import normalize_words

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

# ---------------------------------------------------------------------------- text


def shingles(text: str, size: int) -> frozenset[str]:
    """The set of ``size``-word shingles of ``text`` (one shingle when it is shorter)."""
    return _shingles_of(normalize_words(text), size)


def _shingles_of(words: list[str], size: int) -> frozenset[str]:
    if len(words) < size:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


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

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def scheme_for(cfg: DedupConfig) -> SignatureScheme:
    """The signature scheme and LSH banding for a dedup config."""
    return SignatureScheme(
        num_perm=cfg.num_perm, seed=cfg.seed, shingle_size=cfg.shingle_size,
        bands=cfg.num_perm // LSH_ROWS, rows=LSH_ROWS,
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


def fingerprint(text: str, scheme: SignatureScheme) -> Fingerprint:
    """Content hash, shingle count, MinHash signature and band keys of a clean text."""
    words = normalize_words(text)
    shingle_set = _shingles_of(words, scheme.shingle_size)
    values = signature_of(shingle_set, scheme.num_perm, scheme.seed)
    keys = band_keys(values, scheme.rows)
    lead = words[: scheme.lead_words]
    if len(lead) == scheme.lead_words:  # shorter texts are their own lead: full bands suffice
        lead_values = signature_of(_shingles_of(lead, scheme.shingle_size), scheme.lead_perm, scheme.seed)
        keys += band_keys(lead_values, scheme.rows, first_band=scheme.bands)
    return Fingerprint(
        content_hash=hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest(),
        shingle_count=len(shingle_set),
        signature=values.astype("<u4").tobytes(),
        band_keys=keys,
    )


def estimated_jaccard(a: bytes, b: bytes) -> float:
    """Share of equal MinHash values: the signature's estimate of Jaccard similarity."""
    va, vb = np.frombuffer(a, dtype="<u4"), np.frombuffer(b, dtype="<u4")
    if len(va) != len(vb) or not len(va):
        return 0.0
    return float(np.count_nonzero(va == vb)) / len(va)


# ---------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    jaccard: float
    containment: float
    method: str  # "minhash" | "containment" | "" (no match)


def compare(a: frozenset[str], b: frozenset[str], cfg: DedupConfig) -> tuple[float, float, str]:
    """Jaccard, containment of the smaller in the larger, and the rule they satisfy ('' for none)."""
    if not a or not b:
        return 0.0, 0.0, ""
    inter = len(a & b)
    jaccard = inter / (len(a) + len(b) - inter)
    smaller = min(len(a), len(b))
    containment = inter / smaller
    if smaller < cfg.min_shingles:
        return jaccard, containment, ""  # too short to merge on similarity alone
    if jaccard >= cfg.threshold:
        return jaccard, containment, "minhash"
    if containment >= cfg.containment:
        return jaccard, containment, "containment"
    return jaccard, containment, ""


def decide(text: str, title: str, candidates: Sequence[Candidate], cfg: DedupConfig) -> DedupDecision:
    """Which cluster a new text joins, verified against each candidate's real shingles.

    Exact copies come first: the same canonical URL, or the same normalised text (for
    very short texts only together with the same title). Otherwise a cluster is joined when some member matches (Jaccard >= threshold, or a teaser
    contained >= containment in it) *and* the cluster's canonical item supports the
    match at half those levels: one bridging member cannot pull a different story in.
    The best-scoring cluster wins; two existing clusters are never merged.
    """
    new = shingles(text, cfg.shingle_size)
    exact = _exact(new, title, candidates, cfg)
    if exact is not None:
        return exact
    if len(new) < cfg.min_shingles:
        return DedupDecision(
            kind="new", candidates=len(candidates),
            reason=f"{len(new)} shingles < min_shingles={cfg.min_shingles}: only exact matches merge",
        )
    by_cluster: dict[int, list[Match]] = {}
    for candidate in candidates:
        jaccard, containment, method = compare(new, shingles(candidate.text, cfg.shingle_size), cfg)
        by_cluster.setdefault(candidate.cluster_id, []).append(Match(candidate, jaccard, containment, method))

    best: tuple[float, DedupDecision] | None = None
    for cluster_id, matches in by_cluster.items():
        hits = [m for m in matches if m.method]
        if not hits:
            continue
        top = max(hits, key=_score)
        canonical = next((m for m in matches if m.candidate.is_canonical), None)
        if canonical is not None and canonical is not top and not _supports(canonical, cfg):
            continue
        score = _score(top)
        if best is None or score > best[0]:
            canon_sim = canonical.jaccard if canonical is not None else top.jaccard
            best = (
                score,
                DedupDecision(
                    kind="duplicate", cluster_id=cluster_id, matched_item_id=top.candidate.item_id,
                    method=top.method, similarity=round(top.jaccard, 4), containment=round(top.containment, 4),
                    canonical_similarity=round(canon_sim, 4), candidates=len(candidates),
                    reason=(
                        f"{top.method}: jaccard {top.jaccard:.2f}, containment {top.containment:.2f} "
                        f"with item {top.candidate.item_id}; canonical jaccard {canon_sim:.2f}"
                    ),
                ),
            )
    if best is None:
        closest = max((m for ms in by_cluster.values() for m in ms), key=_score, default=None)
        reason = "no candidates" if closest is None else (
            f"closest item {closest.candidate.item_id}: jaccard {closest.jaccard:.2f}, "
            f"containment {closest.containment:.2f} (below threshold {cfg.threshold} / {cfg.containment})"
        )
        return DedupDecision(kind="new", candidates=len(candidates), reason=reason)
    return best[1]


def _exact(new: frozenset[str], title: str, candidates: Sequence[Candidate], cfg: DedupConfig) -> DedupDecision | None:
    for method, flag in (("url", "same_url"), ("content_hash", "same_content")):
        for c in candidates:
            if not getattr(c, flag):
                continue
            if method == "content_hash" and len(new) < cfg.min_shingles and normalize_words(title) != normalize_words(c.title):
                continue  # two one-line texts alike are not one story unless their titles agree
            return DedupDecision(
                kind="duplicate", cluster_id=c.cluster_id, matched_item_id=c.item_id, method=method,
                similarity=1.0 if method == "content_hash" else 0.0, containment=1.0 if method == "content_hash" else 0.0,
                candidates=len(candidates), reason=f"same {'canonical URL' if method == 'url' else 'normalised text'} as item {c.item_id}",
            )
    return None


def _score(match: Match) -> float:
    # Jaccard ranks copies; a contained teaser ranks by containment scaled onto that range.
    return max(match.jaccard, match.containment * 0.5)


def _supports(canonical: Match, cfg: DedupConfig) -> bool:
    return canonical.jaccard >= cfg.threshold / 2 or canonical.containment >= cfg.containment / 2


# ---------------------------------------------------------------------------- canonical


@dataclass(frozen=True)
class Member:
    """What the canonical policy looks at."""

    item_id: int
    published_at: object  # datetime | None (aware UTC)
    fetched_at: object
    priority: int
    length: int


def canonical_key(member: Member, policy: str) -> tuple:
    """Sort key: the smallest is the canonical item under ``policy``."""
    when = member.published_at or member.fetched_at
    earliest = (when is None, when or 0, member.fetched_at or 0, member.item_id)
    if policy == "priority":
        return (-member.priority, *earliest)
    if policy == "longest":
        return (-member.length, *earliest)
    return earliest
