"""Rare entities of a text: uncommon capitalised words and long numbers.

Pure. A paraphrase swaps common words for synonyms but keeps names and figures: the
names that are rare in English at large (wordfreq) and the numbers of three or more
digits are what a story is about. About 7 per item on the real copies (median), and a
copy shares most of them (tune, same-story pairs: median share 0.8; different stories:
0.17). Years are left out: every story of a year mentions it (docs/dedup.md, "Entities").
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import xxhash

from ingest.sentences import MONTHS, number, tokens

# A capitalised word is rare when its Zipf frequency in English (wordfreq: log10 of
# occurrences per billion words) is below this: 3.0 is one in a million words, below
# "Baltimore" (4.2) and "Reuters" (3.9), above "Uttarakhand" (2.6) and "Patapsco" (1.9).
RARE_ZIPF = 3.0
# digits a number needs to be an entity: "41" recurs everywhere, "574.821" does not
NUMBER_DIGITS = 3
_YEAR = re.compile(r"^(?:1[89]|20)\d\d$")


@lru_cache(maxsize=1)
def _frequencies() -> dict[str, float]:
    # the whole English list once (0.14 s, ~300k words) instead of wordfreq's per-call
    # tokenisation: a dict lookup per word
    import wordfreq

    return wordfreq.get_frequency_dict("en")


def zipf(word: str) -> float:
    """wordfreq's Zipf frequency of a lower-case word (0 for words it does not know)."""
    frequency = _frequencies().get(word, 0.0)
    return math.log10(frequency * 1e9) if frequency > 0 else 0.0


def entities(text: str) -> frozenset[str]:
    """Uncommon capitalised words (lower-cased) and numbers of NUMBER_DIGITS+ digits (years left out)."""
    out = set()
    for token in tokens(text):
        if token[0].isdigit():
            value = number(token)
            if sum(c.isdigit() for c in value) >= NUMBER_DIGITS and not _YEAR.match(value):
                out.add("#" + value)
        elif token[0].isupper() and len(token) > 1:
            low = token.casefold()
            if low not in MONTHS and zipf(low) < RARE_ZIPF:
                out.add(low)
    return frozenset(out)


def hashed(names: frozenset[str]) -> frozenset[int]:
    """32-bit hashes of entity names: what is stored and compared."""
    return frozenset(xxhash.xxh32_intdigest(n.encode("utf-8"), seed=2) for n in names)
