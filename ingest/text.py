"""Text normalisation shared by cleaning and dedup: defined once so both agree."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

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
    """wordfreq's English buckets 0..COMMON_ZIPF, read from its data file as wordfreq reads it.

    The file is wordfreq's documented "cBpack" (gzipped msgpack: a header, then one
    list of words per centibel). Reading only the buckets needed takes 14 ms and 3 MB;
    importing wordfreq and asking for its list took 0.3 s and 37 MB in every process.
    """
    import gzip
    import importlib.util

    import msgpack

    spec = importlib.util.find_spec("wordfreq")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dedup needs the wordfreq package for its word frequencies")
    path = Path(spec.submodule_search_locations[0]) / "data" / "large_en.msgpack.gz"
    last = round((9 - COMMON_ZIPF) * 100)  # Zipf = 9 + log10(frequency); bucket i: log10 = -i/100
    with gzip.open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, use_list=False)
        count = unpacker.read_array_header()
        header = unpacker.unpack()
        if header != {"format": "cB", "version": 1}:
            raise ImportError(f"unexpected wordfreq data format in {path}: {header}")
        return tuple(unpacker.unpack() for _ in range(min(last + 1, count - 1)))


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """English words of Zipf frequency >= COMMON_ZIPF (about 29,000 words)."""
    return frozenset(w for bucket in _frequency_buckets() for w in bucket)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The STOPWORDS commonest English words (letters only)."""
    out: list[str] = []
    for bucket in _frequency_buckets():
        out += [w for w in bucket if w.isalpha()]
        if len(out) >= STOPWORDS:
            break
    return frozenset(out[:STOPWORDS])
