"""A reproducible synthetic corpus: feeds of syndicated news and full article pages.

``generate(sources, items, seed)`` returns a ``Corpus``: one RSS 2.0 feed per source and
one HTML page per item, all as bytes keyed by URL path. Texts are built from a seeded
vocabulary with a Zipf-like word distribution and sentence/paragraph lengths of real
news copy (15-25 words a sentence, 2-5 sentences a paragraph, 6-14 paragraphs), so
shingling, MinHash and extraction see realistic sizes. About a third of the items are
syndicated copies of another source's story, altered the way real republishers alter
them: a disclaimer or "appeared first on" line glued on, a new headline, paragraphs
reordered, or a teaser cut after a few paragraphs (docs/facts.md#what-republishers-change). Pages are 20-100 KB
with navigation, sidebars, scripts and a footer around the article, like real news
pages. The same arguments always give the same bytes.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

SEED = 20261125
VOCABULARY = 6000
COPY_SHARE = 0.35  # share of items that republish another source's story


@dataclass(frozen=True)
class Story:
    id: int
    title: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    source: int
    index: int
    story: int  # the story it tells: copies share it with their original
    relation: str  # original | verbatim | disclaimer | reheadline | reordered | teaser
    title: str
    paragraphs: tuple[str, ...]
    published: datetime

    @property
    def path(self) -> str:
        return f"/s{self.source:04d}/a{self.index:05d}.html"


@dataclass
class Corpus:
    seed: int
    sources: int
    items_per_source: int
    full_text_sources: frozenset[int]
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    items: list[Item] = field(default_factory=list)

    def feed_path(self, source: int) -> str:
        return f"/feeds/s{source:04d}.xml"

    @property
    def page_bytes(self) -> int:
        return sum(len(v) for k, v in self.files.items() if k.endswith(".html"))

    @property
    def feed_bytes(self) -> int:
        return sum(len(v) for k, v in self.files.items() if k.endswith(".xml"))


class _Writer:
    """Seeded sentences and paragraphs from a Zipf-weighted synthetic vocabulary."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
        words: set[str] = set()
        while len(words) < VOCABULARY:
            syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
            words.add("".join(rng.choice(consonants) + rng.choice(vowels) + rng.choice(("", "", "n", "r", "s"))
                              for _ in range(syllables)))
        self.words = sorted(words)
        rng.shuffle(self.words)
        # Zipf (s ~ 1.07) like English word frequencies: "the" ~6%, a long tail
        self.weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(self.words))]
        self.cum = list(_accumulate(self.weights))
        self.names = [w.capitalize() for w in self.words[400:700]]

    def sentence(self) -> str:
        n = self.rng.randint(9, 28)
        words = self.rng.choices(self.words, cum_weights=self.cum, k=n)
        for i in range(1, n):
            if self.rng.random() < 0.06:
                words[i] = self.rng.choice(self.names)
        if self.rng.random() < 0.25:
            words.insert(self.rng.randint(2, n - 1), f"{self.rng.randint(2, 990)},")
        text = " ".join(words)
        return text[0].upper() + text[1:] + self.rng.choice((".", ".", ".", ".", "?", "!"))

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 5)))

    def title(self) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(6, 11))
        return " ".join(w.capitalize() if i == 0 or self.rng.random() < 0.3 else w for i, w in enumerate(words))


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def generate(sources: int, items: int, seed: int = SEED, full_text_share: float = 0.3) -> Corpus:
    """The corpus of ``sources`` feeds of ``items`` entries each (plus their pages)."""
    rng = random.Random(seed)
    writer = _Writer(rng)
    full_text = frozenset(rng.sample(range(sources), round(sources * full_text_share)))
    corpus = Corpus(seed, sources, items, full_text)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    stories: list[tuple[int, Story]] = []  # (origin source, story)
    for index in range(items):
        for source in range(sources):
            when = start + timedelta(minutes=index * 7 + source)
            if stories and rng.random() < COPY_SHARE:
                origin, story = rng.choice(stories[-200:])  # copies follow their story closely
                if origin != source:
                    corpus.items.append(_copy(rng, writer, source, index, story, when))
                    continue
            story = Story(len(stories), writer.title(), tuple(writer.paragraph() for _ in range(rng.randint(6, 14))))
            stories.append((source, story))
            corpus.items.append(Item(source, index, story.id, "original", story.title, story.paragraphs, when))
    by_source: dict[int, list[Item]] = {s: [] for s in range(sources)}
    for item in corpus.items:
        by_source[item.source].append(item)
        if item.source in full_text:  # only full-text sources' pages are ever fetched
            page_rng = random.Random(f"{seed}/{item.source}/{item.index}")
            corpus.files[item.path] = _page(page_rng, writer, item).encode("utf-8")
    for source, members in by_source.items():
        corpus.files[corpus.feed_path(source)] = _feed(source, members, source in full_text).encode("utf-8")
    return corpus


def _copy(rng: random.Random, writer: _Writer, source: int, index: int, story: Story, when: datetime) -> Item:
    relation = rng.choice(("verbatim", "disclaimer", "disclaimer", "reheadline", "reordered", "teaser"))
    title, paragraphs = story.title, list(story.paragraphs)
    if relation == "disclaimer":
        paragraphs.append(rng.choice((
            f"This article was republished from a wire service. Source {source} is not responsible for its content.",
            "Post Disclaimer: the information in this post is provided by a syndication partner and has not been edited.",
            f"The post {title} appeared first on Daily Wire {source}.",
        )))
    elif relation == "reheadline":
        title = writer.title()
    elif relation == "reordered" and len(paragraphs) > 4:
        paragraphs[1], paragraphs[3] = paragraphs[3], paragraphs[1]
    elif relation == "teaser":
        paragraphs = paragraphs[: rng.randint(2, 4)]
    return Item(source, index, story.id, relation, title, tuple(paragraphs), when + timedelta(minutes=rng.randint(5, 90)))


def _url(item: Item, base: str = "http://127.0.0.1:{port}") -> str:
    return base + item.path


def _feed(source: int, items: list[Item], summary_only: bool) -> str:
    """RSS 2.0: full content:encoded, or (full-text sources) a one-paragraph description."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">',
        "<channel>",
        f"<title>Source {source}</title><link>http://127.0.0.1:{{port}}/s{source:04d}/</link>",
        f"<description>Synthetic news source {source}</description><language>en</language>",
    ]
    for item in reversed(items):  # newest first, as feeds are
        body = "".join(f"<p>{html.escape(p)}</p>" for p in item.paragraphs)
        out += [
            "<item>",
            f"<title>{html.escape(item.title)}</title>",
            f"<link>{_url(item)}</link>",
            f'<guid isPermaLink="false">s{source}-{item.index}</guid>',
            f"<pubDate>{format_datetime(item.published)}</pubDate>",
            f"<dc:creator>Writer {item.story % 97}</dc:creator>",
            f"<description>{html.escape(item.paragraphs[0][:300])}</description>",
        ]
        if not summary_only:
            out.append(f"<content:encoded><![CDATA[{body}]]></content:encoded>")
        out.append("</item>")
    out += ["</channel>", "</rss>", ""]
    return "\n".join(out)


def _page(rng: random.Random, writer: _Writer, item: Item) -> str:
    """A news page of 20-100 KB: head, nav, article, sidebars, related links, footer, scripts."""
    target = rng.randint(20_000, 100_000)
    nav = "".join(f'<li><a href="/section/{w}">{w.capitalize()}</a></li>' for w in writer.words[:rng.randint(15, 40)])
    article = "".join(f"<p>{html.escape(p)}</p>\n" for p in item.paragraphs)
    head = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(item.title)} | Source {item.source}</title>"
        f'<meta property="og:title" content="{html.escape(item.title)}">'
        f'<meta name="author" content="Writer {item.story % 97}">'
        f'<meta property="article:published_time" content="{item.published.isoformat()}">'
        "<style>" + "".join(f".c{i}{{margin:{i}px;padding:{i % 7}px}}" for i in range(rng.randint(50, 200))) + "</style>"
        "</head><body>"
        f'<header class="site-header"><div class="logo">Source {item.source}</div><nav><ul>{nav}</ul></nav></header>'
        '<div class="cookie-banner">We use cookies to improve your experience. By continuing you accept our policy.</div>'
        "<main><article>"
        f"<h1>{html.escape(item.title)}</h1>"
        f'<div class="byline">By Writer {item.story % 97} · {item.published:%d %B %Y}</div>'
        f"{article}</article>"
    )
    tail = (
        "</main><footer><p>© 2026 Synthetic Media Group. All rights reserved.</p>"
        '<ul class="footer-links"><li><a href="/about">About</a></li><li><a href="/privacy">Privacy</a></li>'
        '<li><a href="/terms">Terms</a></li><li><a href="/contact">Contact</a></li></ul></footer>'
        "</body></html>"
    )
    filler: list[str] = []
    size = len(head) + len(tail)
    while size < target:
        kind = rng.random()
        if kind < 0.45:
            links = "".join(
                f'<li><a href="/story/{rng.randint(1, 10**6)}">{html.escape(writer.title())}</a></li>' for _ in range(8)
            )
            block = f'<aside class="related"><h3>Related</h3><ul>{links}</ul></aside>'
        elif kind < 0.7:
            block = (f'<div class="teaser"><a href="/story/{rng.randint(1, 10**6)}"><h4>{html.escape(writer.title())}</h4>'
                     f"<span>{html.escape(writer.sentence())}</span></a></div>")
        else:
            block = ("<script>window.__data=" + repr([rng.randint(0, 10**9) for _ in range(60)]).replace("'", '"')
                     + ";</script>")
        filler.append(block)
        size += len(block)
    return head + "".join(filler) + tail


def write(corpus: Corpus, directory: Path, port: int) -> None:
    """Write the corpus files under ``directory`` with the server's port in every URL."""
    marker, value = b"{port}", str(port).encode()
    for path, body in corpus.files.items():
        target = directory / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body.replace(marker, value))
