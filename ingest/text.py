"""Text normalisation shared by cleaning and dedup: defined once so both agree."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` after Unicode NFKC (punctuation dropped)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
