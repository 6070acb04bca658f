"""Which paragraphs a source repeats are boilerplate: the rule behind learned boilerplate. Pure.

The store records which paragraph fingerprints each item of a source carries and asks, for a
new item, which of its paragraphs were seen often among the source's recent items
(``store/boilerplate.py``); this module decides which of those are boilerplate.
``clean.strip_learned`` then takes them out of stored texts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

# Two carriers of a paragraph are versions of one text when the rest of their
# paragraphs overlap by at least this share (length-weighted Jaccard).
SAME_TEXT = 0.5


def learnable(
    frequent: Sequence[str], contents: Mapping[int, Mapping[str, int]], min_count: int
) -> list[tuple[str, int]]:
    """(key, texts seen in) of the paragraphs in ``frequent`` that are boilerplate.

    ``contents`` is item id -> paragraph fingerprint -> length for a source's recent items
    (learned boilerplate left out). A paragraph is boilerplate when it stands in
    ``min_count`` or more *different texts*: items count, but versions of one text
    count once. Two carriers are one text when the rest of their paragraphs (this one
    left out) overlap by SAME_TEXT or more, weighted by length. So successive
    versions of one story ("UPDATE 1", "UPDATE 2" under new guids) never make their
    shared article paragraphs boilerplate, while short items that dedup put in one
    cluster *because* of a shared footer still teach it.
    """
    out = []
    for key in frequent:
        carriers = [
            {k: c for k, c in content.items() if k != key}
            for _item_id, content in sorted(contents.items()) if key in content
        ]
        seen = distinct_texts(carriers)
        if seen >= min_count:
            out.append((key, seen))
    return out


def distinct_texts(carriers: Sequence[Mapping[str, int]]) -> int:
    """How many of ``carriers`` (paragraph fingerprint -> length) are not versions of an earlier one."""
    distinct: list[Mapping[str, int]] = []
    for content in carriers:
        if all(_weighted_jaccard(content, other) < SAME_TEXT for other in distinct):
            distinct.append(content)
    return len(distinct)


def _weighted_jaccard(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    union = sum(a.values()) + sum(c for k, c in b.items() if k not in a)
    if union == 0:
        return 1.0  # two items that are nothing but this paragraph: one text
    return sum(c for k, c in a.items() if k in b) / union

