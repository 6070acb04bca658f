"""A small seeded corpus of RSS feeds with syndicated copies, for crash and property tests.

``syndicated(feeds, items, seed)`` gives ``feeds`` RSS 2.0 documents of ``items``
entries each. About a third of the entries republish another feed's story: verbatim,
with a disclaimer paragraph glued on, or re-headlined, so a run stores clusters of
several items as well as single ones. Texts come from a seeded Zipf-weighted
vocabulary of made-up words (no real text), long enough (5-8 paragraphs of 25-45
words) for extraction to keep them and for MinHash to see real sizes. The same
arguments always give the same bytes. ``bench/crash.py`` imports it; nothing here
imports bench.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from xml.sax.saxutils import escape

COPY_SHARE = 0.33  # share of entries that republish a story of another feed
_VOCABULARY = 3000
_START = datetime(2026, 1, 5, 6, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Entry:
    feed: int
    guid: str
    title: str
    paragraphs: tuple[str, ...]
    published: datetime
    story: int  # entries that share a story are copies of one another


@dataclass
class Corpus:
    feeds: int
    items: int
    entries: list[Entry] = field(default_factory=list)

    def path(self, feed: int) -> str:
        """The URL path of one feed."""
        return f"/feeds/f{feed:03d}.xml"

    def name(self, feed: int) -> str:
        """The source name of one feed in a config."""
        return f"feed{feed:03d}"

    def documents(self) -> dict[str, bytes]:
        """URL path -> RSS body of every feed."""
        return {self.path(f): self.rss(f) for f in range(self.feeds)}

    def rss(self, feed: int) -> bytes:
        """One feed as RSS 2.0 (content:encoded holds the article)."""
        parts = [
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
            f"<title>Feed {feed}</title><link>http://feeds.invalid/{feed}/</link>"
        ]
        for e in self.entries:
            if e.feed != feed:
                continue
            html_body = "".join(f"<p>{escape(p)}</p>" for p in e.paragraphs)
            parts.append(
                f"<item><guid isPermaLink='false'>{escape(e.guid)}</guid><title>{escape(e.title)}</title>"
                f"<link>http://feeds.invalid/{feed}/{escape(e.guid)}.html</link>"
                f"<pubDate>{format_datetime(e.published)}</pubDate>"
                f"<content:encoded>{escape(html_body)}</content:encoded></item>"
            )
        parts.append("</channel></rss>")
        return "".join(parts).encode("utf-8")

    def config_sources(self, base_url: str) -> str:
        """``[[sources]]`` TOML for every feed served under ``base_url``."""
        return "".join(
            f'[[sources]]\nname = "{self.name(f)}"\nurl = "{base_url}{self.path(f)}"\n\n' for f in range(self.feeds)
        )


class _Words:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        consonants, vowels = "bcdfghklmnprstvz", "aeiou"
        words: set[str] = set()
        while len(words) < _VOCABULARY:
            words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.choice((1, 2, 2, 3, 4)))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        total, self.cum = 0.0, []
        for rank in range(len(self.words)):
            total += 1.0 / (rank + 1) ** 1.05  # Zipf-like, as word frequencies are
            self.cum.append(total)

    def sentence(self, low: int, high: int) -> str:
        text = " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(low, high)))
        return text[0].upper() + text[1:] + "."

    def paragraph(self) -> str:
        return " ".join(self.sentence(8, 15) for _ in range(3))


def syndicated(feeds: int, items: int, seed: int = 1, copy_share: float = COPY_SHARE) -> Corpus:
    """``feeds`` feeds of ``items`` entries; about ``copy_share`` of them copies of other feeds' stories."""
    rng = random.Random(seed)
    words = _Words(rng)
    corpus = Corpus(feeds, items)
    originals: list[Entry] = []
    story = 0
    for index in range(items):
        for feed in range(feeds):
            when = _START + timedelta(minutes=7 * index + feed)
            guid = f"f{feed:03d}-e{index:04d}"
            others = [o for o in originals if o.feed != feed]
            if others and rng.random() < copy_share:
                source = rng.choice(others[-4 * feeds:])  # copies follow their story soon
                paragraphs, title = source.paragraphs, source.title
                how = rng.choice(("verbatim", "disclaimer", "headline"))
                if how == "disclaimer":
                    paragraphs = paragraphs + (f"This article first appeared at feed {source.feed}.",)
                elif how == "headline":
                    title = words.sentence(5, 9)
                entry = Entry(feed, guid, title, paragraphs, when, source.story)
            else:
                paragraphs = tuple(words.paragraph() for _ in range(rng.randint(5, 8)))
                entry = Entry(feed, guid, words.sentence(5, 10), paragraphs, when, story)
                story += 1
                originals.append(entry)
            corpus.entries.append(entry)
    return corpus
