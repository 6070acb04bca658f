"""Turn what a user types into a full-text query that cannot be a syntax error.

Pure. The user's syntax is the web-search one PostgreSQL's ``websearch_to_tsquery``
reads: words (all required), ``"a phrase"``, ``OR`` between terms, ``-word`` to
exclude. PostgreSQL parses that itself and never fails; FTS5 does not: a stray
quote, a ``-``, ``*``, ``:``, ``(`` or a bare ``AND``/``NOT``/``NEAR`` is a syntax
error there. ``fts5_query`` therefore quotes every term as an FTS5 string (a double
quote inside is doubled, per the FTS5 grammar) and builds the operators itself.
"""

from __future__ import annotations

import re

from ingest.errors import SearchError

# a "quoted phrase" (closing quote optional), or a run of non-space characters
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w", re.UNICODE)
# NUL ends an FTS5 string early ("unterminated string") and PostgreSQL text cannot hold it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plain_query(text: str) -> str:
    """The query with control characters turned into spaces (what both backends are given)."""
    return _CONTROL.sub(" ", text)


def fts5_query(text: str) -> str:
    """An FTS5 MATCH expression for a web-search style query; raise SearchError when empty."""
    groups: list[list[str]] = [[]]  # OR of AND-groups
    excluded: list[str] = []
    for match in _TOKEN.finditer(plain_query(text)):
        negate, phrase, word = match.group(1), match.group(2), match.group(3)
        if word is not None:
            if word == "OR":
                if groups[-1]:
                    groups.append([])
                continue
            negate = "-" if word.startswith("-") and len(word) > 1 else ""
            phrase = word[1:] if negate else word
        if not _WORD.search(phrase or ""):
            continue  # punctuation alone matches nothing in FTS5's tokenizer
        term = '"' + phrase.replace('"', '""') + '"'
        (excluded if negate else groups[-1]).append(term)
    groups = [g for g in groups if g]
    if not groups:
        raise SearchError(f"nothing to search for in {text!r}")
    expression = " OR ".join("(" + " AND ".join(g) + ")" for g in groups)
    if excluded:
        # FTS5's NOT is binary (a NOT b): exclusions apply to the whole expression
        expression = f"({expression}) NOT ({' OR '.join(excluded)})"
    return expression
