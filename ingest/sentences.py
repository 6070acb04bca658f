"""Sentences with their numbers, and an ordered, number-aware alignment of two texts.

Pure. A machine-paraphrased ("spun") copy rewrites a wire story sentence by sentence:
word shingles barely survive (3-shingle Jaccard of spun pairs: median 0.10, the same
as different articles on one event), but each sentence keeps several of its content
words and all of its numbers, in the original order. Two different reports from one
daily or weekly template keep the words and change the numbers. So a sentence is kept
as the stems of its content words plus its numbers (and years apart), and two texts
are aligned in order on the words; an aligned pair whose numbers disagree is counted
against the match, not for it (docs/dedup.md, "Sentences").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import xxhash

from ingest.text import stopwords

# Words whose first STEM letters agree count as one word: a crude stem that joins
# "rescued"/"rescuers"/"rescue" and "reserves"/"reserve" (paraphrases change the
# inflection as often as the word).
STEM = 6
# A sentence needs this many content words (or a number) to be aligned at all:
# shorter pieces are datelines, bylines and captions.
MIN_WORDS = 3
# Two sentences are aligned candidates when they share at least this share of the
# smaller one's content words, and at least two of them (on tune: spun copies keep a
# median of about half of each sentence's content words; different sentences of one
# story share under a quarter).
SENTENCE_OVERLAP = 0.5
MIN_SHARED_WORDS = 2
# Two sentences are worded alike when they share this share of the larger one's content
# words: a template's fixed sentence ("Today is Tuesday, March 26, the 86th day of
# 2024") in two editions; an update rewords a sentence whose figures it changes.
SAME_WORDING = 0.8

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+", re.UNICODE)
# a sentence ends at . ! ? (and closing quotes/brackets) before a space and a capital or digit
_END = re.compile(r"(?<=[.!?])[\"”’')\]]*\s+(?=[\"“‘'(\[]?[A-Z0-9])")
# ... unless the piece ends in an abbreviation ("Nov.", "Mr.", "U.S.", "No.")
_ABBREVIATION_SPAN = 12  # characters before a full stop in which an abbreviation is looked for
_ABBREVIATION = re.compile(r"(?:\b[A-Z][a-z]{0,3}|\b(?:[A-Z]\.)+[A-Z]?|\b[Nn]o|\bvs)\.[\"”’')\]]*$")
_YEAR = re.compile(r"^(?:1[89]|20)\d\d$")

# Month names (and their abbreviations): with a day they make one figure, the date, so
# two reports of one template "for the week ended March 8" and "... March 15" differ
# where they should.
MONTHS = {
    name: number
    for number, names in enumerate((
        ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
        ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
        ("october", "oct"), ("november", "nov"), ("december", "dec"),
    ), start=1)
    for name in names
}
# Weekdays and bare months are neither words nor figures: they are calendar values
# ("Today is Tuesday, March 26" and "Today is Sunday, March 26" are one sentence in two
# years' editions), and every edition of a weekly template says "on Friday".
WEEKDAYS = {
    name: number
    for number, names in enumerate((
        ("monday", "mon"), ("tuesday", "tue", "tues"), ("wednesday", "wed"), ("thursday", "thu", "thurs"),
        ("friday", "fri"), ("saturday", "sat"), ("sunday", "sun"),
    ), start=1)
    for name in names
}
# Spelled-out numbers as digits: paraphrasers write "three" for "3" and back.
NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
    if value >= 2  # "one" is a pronoun as often as a number
} | {word: str(value) for word, value in (
    ("thirty", 30), ("forty", 40), ("fifty", 50), ("sixty", 60), ("seventy", 70), ("eighty", 80), ("ninety", 90),
)}


@lru_cache(maxsize=1)
def _kinds() -> dict[str, tuple[str, object]]:
    """Word -> what it is to a sentence: ("month", n), ("skip", None) or ("number", digits).

    One lookup per token: stopwords and weekdays are skipped, months may start a
    date, spelled-out numbers are figures; any other word is content.
    """
    kinds: dict[str, tuple[str, object]] = {w: ("skip", None) for w in stopwords()}
    kinds.update((w, ("skip", None)) for w in WEEKDAYS)
    kinds.update((w, ("number", _hash32(v))) for w, v in NUMBER_WORDS.items())
    kinds.update((w, ("month", n)) for w, n in MONTHS.items())
    return kinds


@dataclass(frozen=True)
class Sentence:
    """What alignment looks at in one sentence: sorted tuples of distinct values.

    Tuples, not sets: a candidate's stored sentences are decoded for every item that
    meets it, and building sets cost more than the alignment reads them (sets are
    made only for the few pairs that align).
    """

    words: tuple[int, ...]  # 16-bit hashes of the content words' stems
    numbers: tuple[int, ...]  # 32-bit hashes of its figures (dates included), years apart
    years: tuple[int, ...]  # four-digit years, as numbers
    rounded: tuple[int, ...] = ()  # 32-bit hashes of its decimal figures rounded (ROUNDED_DIGITS)

    @property
    def weight(self) -> int:
        return len(self.words)


def split(text: str, limit: int | None = None) -> list[str]:
    """The sentences of ``text`` (the first ``limit``): each line cut after . ! ? before a capital or digit."""
    out: list[str] = []
    for paragraph in text.splitlines():
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        start = 0
        for match in _END.finditer(paragraph):
            # an abbreviation is a few letters: look at the end of the piece only
            if _ABBREVIATION.search(paragraph[max(start, match.start() - _ABBREVIATION_SPAN) : match.start()]):
                continue
            out.append(paragraph[start : match.start()].strip())
            start = match.end()
        out.append(paragraph[start:].strip())
        if limit is not None and len(out) >= limit:
            break
    out = [s for s in out if s]
    return out if limit is None else out[:limit]


# A spelled-out compound number is one number, as paraphrasers write it ("forty-one" is 41).
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_UNITS = {w: n for n, w in enumerate("one two three four five six seven eight nine".split(), start=1)}


def tokens(sentence: str) -> list[str]:
    """Word and number tokens after NFKC, case kept ("4.5", "2,000" stay whole); a spelled-out
    compound number as its digits ("forty-one" -> "41")."""
    found = _TOKEN.findall(unicodedata.normalize("NFKC", sentence))
    if not any(t.casefold() in _TENS for t in found):
        return found
    out: list[str] = []
    for token in found:
        low, last = token.casefold(), out[-1].casefold() if out else ""
        if low in _UNITS and last in _TENS:
            out[-1] = str(_TENS[last] + _UNITS[low])
        else:
            out.append(token)
    return out


def _spelled(value: Decimal) -> str:
    """A Decimal in ``number``'s spelling (no exponent, no trailing decimal zeros)."""
    return number(format(value, "f"))


def number(token: str) -> str:
    """A numeric token in one spelling: no thousands commas, no trailing decimal zeros."""
    value = token.replace(",", "")
    if "." in value:
        whole, _, fraction = value.partition(".")
        fraction = fraction.rstrip("0")
        value = f"{whole}.{fraction}" if fraction else whole
    return value


# Words recur across texts: a dict lookup (word -> its stem's hash) instead of hashing again (bounded: cleared
# when full, so a long-running daemon does not grow it without end)
_WORD_HASHES: dict[str, int] = {}
_WORD_HASHES_MAX = 200_000


def _word_hash(word: str) -> int:
    """The 16-bit hash of a lower-case word's stem (its first STEM letters), remembered."""
    if len(_WORD_HASHES) >= _WORD_HASHES_MAX:
        _WORD_HASHES.clear()
    value = _WORD_HASHES[word] = xxhash.xxh32_intdigest(word[:STEM].encode("utf-8")) & 0xFFFF
    return value


def _hash32(value: str) -> int:
    return xxhash.xxh32_intdigest(value.encode("utf-8"), seed=1)


def sentence(tokens_: list[str]) -> Sentence:
    """One sentence's content-word stems, numbers and years.

    A month followed by a day ("March 8", "Nov. 28") is one number, the date: two
    editions of a weekly template differ in it while sharing the month. A bare month
    or weekday counts as nothing. Comprehensions over the tokens, and one loop only
    for sentences that name a month: the worker's share of dedup (docs/dedup.md, "Cost").
    """
    kinds = _kinds()
    lows = [t.casefold() for t in tokens_]
    special = [kinds[low] for low in lows if low in kinds]
    if any(kind[0] == "month" for kind in special):
        return _sentence_with_dates(tokens_, lows, kinds)
    words = {
        _WORD_HASHES.get(low) or _word_hash(low)
        for low in lows if low not in kinds and len(low) > 1 and not low[0].isdigit()
    }
    numbers = {kind[1] for kind in special if kind[0] == "number"}
    years: set[int] = set()
    rounded: set[int] = set()
    for token in tokens_:
        if token[0].isdigit():
            _figure(token, numbers, years, rounded)
    return _made(words, numbers, years, rounded)  # type: ignore[arg-type]


def _made(words: set[int], numbers: set[int], years: set[int], rounded: set[int]) -> Sentence:
    return Sentence(
        tuple(sorted(words)), tuple(sorted(numbers)), tuple(sorted(years)), tuple(sorted(rounded - numbers)),
    )


# A figure is also kept rounded to fewer significant digits, down to ROUNDED_DIGITS: a
# rewrite states "4.532 billion" as "4.53 billion", "593.279" as "593.3" and "19,495"
# as "19,500" (on tune, the disagreeing sentences of same-story pairs of
# weekly reports). Only the rounded forms of the more precise figure are compared with
# the other's exact one, so 4.532 and 4.528 still disagree.
ROUNDED_DIGITS = 3


def roundings(value: str) -> list[str]:
    """A figure in ``number``'s spelling rounded half up to each smaller count of significant
    digits down to ROUNDED_DIGITS ("593.279" -> "593.28", "593.3", "593")."""
    if value.count(".") > 1:
        return []  # a version or a date written with dots ("1.2.3"), not an amount
    exact = Decimal(value)
    digits = len(exact.normalize().as_tuple().digits)
    return [
        _spelled(exact.quantize(Decimal(1).scaleb(exact.adjusted() + 1 - kept), rounding=ROUND_HALF_UP))
        for kept in range(digits - 1, ROUNDED_DIGITS - 1, -1)
    ]


def _figure(token: str, numbers: set[int], years: set[int], rounded: set[int]) -> None:
    value = number(token)
    if len(value) == 4 and _YEAR.match(value):
        years.add(int(value))
    else:
        numbers.add(_hash32(value))
        rounded.update(_hash32(r) for r in roundings(value))


def _sentence_with_dates(tokens_: list[str], lows: list[str], kinds: dict[str, tuple[str, object]]) -> Sentence:
    """``sentence`` for a sentence that names a month: token by token, a month and its day as one date.

    The day may come first ("4 December" is "December 4"), unless the month has a day of its own.
    """
    words: set[int] = set()
    numbers: set[int] = set()
    years: set[int] = set()
    rounded: set[int] = set()
    skip = False
    for at, (token, low) in enumerate(zip(tokens_, lows)):
        if skip:
            skip = False
            continue
        if token[0].isdigit():
            month = kinds.get(lows[at + 1]) if at + 1 < len(tokens_) else None
            if month is not None and month[0] == "month" and _day(token) and not _day(_at(tokens_, at + 2)):
                numbers.add(_hash32(f"date:{month[1]}/{int(token)}"))
                skip = True
            else:
                _figure(token, numbers, years, rounded)
            continue
        kind = kinds.get(low)
        if kind is None:
            if len(low) > 1:
                words.add(_WORD_HASHES.get(low) or _word_hash(low))
        elif kind[0] == "number":
            numbers.add(kind[1])  # type: ignore[arg-type]
        elif kind[0] == "month":
            following = _at(tokens_, at + 1)
            if _day(following):
                numbers.add(_hash32(f"date:{kind[1]}/{int(following)}"))
                skip = True
    return _made(words, numbers, years, rounded)


def _at(tokens_: list[str], at: int) -> str:
    return tokens_[at] if at < len(tokens_) else ""


def _day(token: str) -> bool:
    return token.isdigit() and 1 <= int(token) <= 31


def sentences(pieces: list[list[str]], limit: int) -> tuple[Sentence, ...]:
    """The first ``limit`` sentences worth aligning (MIN_WORDS content words, or a number), from the
    tokens of each sentence of a text (``tokens`` of each ``split`` piece)."""
    out = []
    for piece in pieces:
        s = sentence(piece)
        if len(s.words) >= MIN_WORDS or (s.numbers and len(s.words) >= MIN_SHARED_WORDS):
            out.append(s)
            if len(out) == limit:
                break
    return tuple(out)


# ---------------------------------------------------------------------------- numbers


def numbers_agree(a: Sentence, b: Sentence) -> bool | None:
    """Do two aligned sentences state the same figures? None when one states none.

    Years first: two different years in otherwise matching sentences are two editions
    of a template ("Today is Tuesday, March 26, the 86th day of 2024" / "... of 2023").
    Otherwise at least half of the numbers of the sentence with fewer must be in the
    other: an updated copy adds a figure, a report of another day changes them.
    """
    if a.years and b.years and not set(a.years).intersection(b.years):
        return False
    if not a.numbers or not b.numbers:
        return None
    shared = max(_found(a, b), _found(b, a))
    return shared > 0 and 2 * shared >= min(len(a.numbers), len(b.numbers))


def _found(a: Sentence, b: Sentence) -> int:
    """How many of ``a``'s figures ``b`` states, exactly or rounded from a more precise one."""
    return len(set(a.numbers).intersection(b.numbers + b.rounded))


# ---------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """An ordered alignment of two texts' sentences and what their numbers say."""

    coverage: float  # aligned words (number conflicts left out) / words of the text with fewer
    aligned: int  # sentence pairs aligned
    agree: int  # aligned pairs stating the same figures
    conflict: int  # aligned pairs stating different figures (or years)
    edition: int = 0  # near-identical aligned pairs (SAME_WORDING) that state different years


NO_ALIGNMENT = Alignment(0.0, 0, 0, 0)


def align(a: tuple[Sentence, ...], b: tuple[Sentence, ...]) -> Alignment:
    """The heaviest order-keeping alignment of ``a`` and ``b`` on shared content words.

    A pair of sentences may align when they share SENTENCE_OVERLAP of the smaller's
    content words (and MIN_SHARED_WORDS); the alignment maximises the aligned words
    (the smaller sentence's count per pair) keeping both orders (dynamic programming,
    as for a longest common subsequence). Numbers do not steer it: they are judged on
    the result, so a template of another day aligns well and then disagrees.
    """
    if not a or not b:
        return NO_ALIGNMENT
    weights: dict[tuple[int, int], int] = {}
    same: set[tuple[int, int]] = set()  # pairs worded near-identically
    where: dict[int, list[int]] = {}
    for j, s in enumerate(b):
        for w in s.words:
            where.setdefault(w, []).append(j)
    for i, s in enumerate(a):
        shared: dict[int, int] = {}
        for w in s.words:
            for j in where.get(w, ()):
                shared[j] = shared.get(j, 0) + 1
        for j, count in shared.items():
            smaller = min(len(s.words), len(b[j].words))
            if count >= MIN_SHARED_WORDS and count >= SENTENCE_OVERLAP * smaller:
                weights[i, j] = smaller
                if count >= SAME_WORDING * max(len(s.words), len(b[j].words)):
                    same.add((i, j))
    if not weights:
        return NO_ALIGNMENT
    n, m = len(a), len(b)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = best[i], best[i + 1]
        for j in range(m - 1, -1, -1):
            value = below[j] if below[j] > row[j + 1] else row[j + 1]
            weight = weights.get((i, j))
            if weight is not None and below[j + 1] + weight > value:
                value = below[j + 1] + weight
            row[j] = value
    i = j = 0
    aligned = agree = conflict = covered = edition = 0
    while i < n and j < m:
        weight = weights.get((i, j))
        if weight is not None and best[i][j] == best[i + 1][j + 1] + weight:
            verdict = numbers_agree(a[i], b[j])
            aligned += 1
            agree += verdict is True
            conflict += verdict is False
            covered += weight if verdict is not False else 0
            edition += (
                (i, j) in same and bool(a[i].years) and bool(b[j].years)
                and not set(a[i].years).intersection(b[j].years)
            )
            i += 1
            j += 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    total = min(sum(s.weight for s in a), sum(s.weight for s in b)) or 1
    return Alignment(round(covered / total, 4), aligned, agree, conflict, edition)
