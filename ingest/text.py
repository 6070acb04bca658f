"""Text normalisation shared by cleaning and dedup: defined once so both agree."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` after Unicode NFKC (punctuation dropped)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


# ---------------------------------------------------------------------------- word frequencies

# English words at or above Zipf frequency 3.0 (once per million words, wordfreq's
# "large" list) are common: below it a capitalised word is a rare entity (see
# ingest/entities.py). wordfreq buckets its list by centibels: bucket i holds the
# words of frequency 10**(-i/100), so Zipf >= 3 (frequency >= 1e-6) is buckets 0..600.
COMMON_ZIPF = 3.0
STOPWORDS = 100  # the commonest words carry no content of their own (ingest/sentences.py)


@lru_cache(maxsize=1)
def _frequency_buckets() -> tuple[tuple[str, ...], ...]:
    import wordfreq  # 0.1 s to import, 0.04 s for the list: loaded when first needed

    return tuple(tuple(bucket) for bucket in wordfreq.get_frequency_list("en"))


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """English words of Zipf frequency >= COMMON_ZIPF (about 29,000 words)."""
    last = round((9 - COMMON_ZIPF) * 100)  # Zipf = 9 + log10(frequency); bucket i: log10 = -i/100
    return frozenset(w for bucket in _frequency_buckets()[: last + 1] for w in bucket)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The STOPWORDS commonest English words (letters only)."""
    out: list[str] = []
    for bucket in _frequency_buckets():
        out += [w for w in bucket if w.isalpha()]
        if len(out) >= STOPWORDS:
            break
    return frozenset(out[:STOPWORDS])


def warm() -> None:
    """Load the word lists now: before forking pool workers, so they share one copy."""
    common_words()
    stopwords()
