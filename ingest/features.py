"""Per-item dedup features beyond shingles: sentences with numbers, rare entities; as bytes.

Pure. Computed once per text in the pool workers (with the fingerprint) and stored
with the item, so the single writer process decodes them for each candidate instead
of re-reading its text. Layout (little-endian), version byte first:

    u8 version | u16 entity count | u32 entity hash * n
    | u16 sentence count | per sentence: u8 words, u8 numbers, u8 years, u8 rounded,
      u16 word hash * w, u32 number hash * k, u16 year * y, u32 rounded figure hash * r

Version 2 added the rounded figures (a store of version 1 asks for `ingest resign`:
the signature scheme names the version).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.entities import entities, hashed
from ingest.memo import memo
from ingest.sentences import Sentence, sentences, split, tokens

VERSION = 2
# Sentences kept per text: copies are recognised by their openings (the real copies
# are page openings of ~2,000 characters, 10 sentences median), and 30 sentences (~600
# words) bound the bytes stored, the worker's time (0.7 ms a 630-word text) and the
# alignment's work on long articles. Entities are taken from the same opening
# (MAX_PIECES sentences before short ones are dropped).
MAX_SENTENCES = 20
MAX_PIECES = 28
_MAX_SET = 255  # u8 counts per sentence


@dataclass(frozen=True)
class Features:
    """The sentences and rare entities of one text."""

    sentences: tuple[Sentence, ...]
    entities: frozenset[int]  # 32-bit hashes

    @property
    def words(self) -> int:
        return sum(s.weight for s in self.sentences)


EMPTY = Features((), frozenset())


def extract(text: str) -> Features:
    """The features of a clean text."""
    pieces = [tokens(piece) for piece in split(text, MAX_PIECES)]  # tokenised once for both
    return Features(sentences(pieces, MAX_SENTENCES), hashed(entities(pieces)))


def encode(features: Features) -> bytes:
    """The stored form of ``features``."""
    ents = sorted(features.entities)
    parts = [struct.pack(f"<BH{len(ents)}I", VERSION, len(ents), *ents), struct.pack("<H", len(features.sentences))]
    for s in features.sentences:
        words, numbers, years, rounded = (x[:_MAX_SET] for x in (s.words, s.numbers, s.years, s.rounded))
        parts.append(struct.pack(
            f"<BBBB{len(words)}H{len(numbers)}I{len(years)}H{len(rounded)}I",
            len(words), len(numbers), len(years), len(rounded), *words, *numbers, *years, *rounded,
        ))
    return b"".join(parts)


# A recent item is a candidate of many later ones: 2,048 decoded sets, ~1 MB for news
# texts (~340 stored bytes each); decoded, a set takes about 13 times its stored bytes,
# so the 2 MB bound on stored bytes keeps long texts' sets (10 KB stored) near 26 MB.
@memo(entries=2048, size=2_000_000)
def decode(data: bytes) -> Features:
    """``encode``'s bytes back as Features (EMPTY for b"" or another version); ~20 us a
    text of 15 sentences uncached."""
    if not data or data[0] != VERSION:
        return EMPTY
    (count,) = struct.unpack_from("<H", data, 1)
    ents = frozenset(struct.unpack_from(f"<{count}I", data, 3))
    offset = 3 + 4 * count
    (n,) = struct.unpack_from("<H", data, offset)
    offset += 2
    out = []
    for _ in range(n):
        w, k, y, r = data[offset], data[offset + 1], data[offset + 2], data[offset + 3]
        offset += 4
        values = struct.unpack_from(f"<{w}H{k}I{y}H{r}I", data, offset)
        offset += 2 * w + 4 * k + 2 * y + 4 * r
        out.append(Sentence(values[:w], values[w : w + k], values[w + k : w + k + y], values[w + k + y :]))
    return Features(tuple(out), ents)


def entity_overlap(a: Features, b: Features) -> tuple[int, float]:
    """Rare entities two texts share, and that count over the smaller entity set."""
    if not a.entities or not b.entities:
        return 0, 0.0
    shared = len(a.entities & b.entities)
    return shared, shared / min(len(a.entities), len(b.entities))
