"""Rare entities of a text: uncommon capitalised words and long numbers.

Pure. A paraphrase swaps common words for synonyms but keeps names and figures: the
names that are rare in English at large (wordfreq) and the numbers of three or more
digits are what a story is about. About 7 per item on the real copies (median), and a
copy shares most of them (tune, same-story pairs: median share 0.8; different stories:
0.17). Years are left out: every story of a year mentions it (docs/dedup.md, "Entities").
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import xxhash

from ingest.sentences import MONTHS, number
from ingest.text import common_words

# A capitalised word is rare when it is not among the common English words (Zipf
# frequency >= 3.0 in wordfreq, once per million words: ingest.text.common_words):
# "Baltimore" (4.2) and "Reuters" (3.9) are common, "Uttarakhand" (2.6) and
# "Patapsco" (1.9) rare.
# digits a number needs to be an entity: "41" recurs everywhere, "574.821" does not
NUMBER_DIGITS = 3
# A figure is an entity by its first ENTITY_DIGITS significant digits: rewrites round
# ("USD 593.279 billion" / "$593.28 billion"); on tune, same-story spun pairs of weekly
# reports shared half their entities before, all after.
ENTITY_DIGITS = 3
_YEAR = re.compile(r"^(?:1[89]|20)\d\d$")


def entities(pieces: list[list[str]]) -> frozenset[str]:
    """Uncommon capitalised words (lower-cased) and numbers of NUMBER_DIGITS+ digits (years left out),
    from the tokens of each sentence of a text.

    A sentence's first word is capitalised whatever it is, so it counts only as a
    number: a name that opens a sentence is found where it recurs (news repeats names),
    while a rare common word that opens one ("Meanwhile", a dateline) is not taken for one.
    """
    common = common_words()
    out = set()
    for piece in pieces:
        out.update(
            low for low in (t.casefold() for t in piece[1:] if t[0].isupper() and len(t) > 1)
            if low not in common and low not in MONTHS
        )
        for token in piece:
            if token[0].isdigit() and len(token) >= NUMBER_DIGITS:
                value = number(token)
                if sum(c.isdigit() for c in value) >= NUMBER_DIGITS and not _YEAR.match(value):
                    out.add("#" + leading(value))
    return frozenset(out)


def leading(value: str) -> str:
    """A number in ``number``'s spelling to ENTITY_DIGITS significant digits (rounded half up):
    "593.279", "593.28" and "593.3" are one entity, as a rewrite rounds them. A value with
    two dots ("1.2.3", a version) is kept as it is."""
    if value.count(".") > 1:
        return value
    rounded = Decimal(value).quantize(Decimal(1).scaleb(Decimal(value).adjusted() + 1 - ENTITY_DIGITS), ROUND_HALF_UP)
    return number(format(rounded, "f")) if rounded.adjusted() < ENTITY_DIGITS else format(rounded.normalize(), "f")


def hashed(names: frozenset[str]) -> frozenset[int]:
    """32-bit hashes of entity names: what is stored and compared."""
    return frozenset(xxhash.xxh32_intdigest(n.encode("utf-8"), seed=2) for n in names)
