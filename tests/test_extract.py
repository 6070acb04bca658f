"""extract(): best input, metadata precedence, fallbacks recorded, page chrome dropped."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.clean_cases import load_cases
from ingest.config import ExtractConfig
from ingest.extract import extract, fragment_text, html_to_text
from ingest.models import Entry, FetchResult

CFG = ExtractConfig()
BODY = "".join(
    f"<p>Paragraph {i} of the article says something substantive about the council budget and the vote.</p>"
    for i in range(6)
)
PUBLISHED = datetime(2025, 3, 1, 8, 30, tzinfo=timezone.utc)


def entry(content: str = "", kind: str = "content", **fields) -> Entry:
    values = dict(guid="g1", url="https://news.example/a/1", title="Council passes budget", author=None,
                  published_at=None, updated_at=None, content_html=content, content_kind=kind if content else "none")
    values.update(fields)
    return Entry(**values)


def page(html: str) -> FetchResult:
    return FetchResult(url="https://news.example/a/1", final_url="https://news.example/a/1", status=200,
                       body=html.encode("utf-8"), content_type="text/html; charset=utf-8")


def article_page(body: str = BODY, *, author: str = "Page Author", lang: str = "en") -> str:
    return f"""<!doctype html><html lang="{lang}"><head><title>Council passes budget</title>
    <meta name="author" content="{author}"><meta property="article:published_time" content="2025-02-27T10:00:00+00:00">
    </head><body>
    <nav><ul><li><a href="/">Home</a></li><li><a href="/news">News menu</a></li><li><a href="/about">About us</a></li></ul></nav>
    <article><h1>Council passes budget</h1>{body}</article>
    <section class="related"><h3>Related stories</h3><ul><li><a href="/x">Mayor opens new bridge over the river</a></li></ul></section>
    <div id="comments" class="comments"><h3>3 comments</h3><p>Reader One: I think the budget is a disgrace and a waste.</p></div>
    <footer><p>Footer links: contact, careers, terms of use and advertise with us.</p></footer>
    </body></html>"""


def test_page_is_preferred_and_chrome_dropped() -> None:
    doc = extract(entry("<p>Short teaser of the story.</p>", "summary"), page(article_page()), CFG)
    assert doc.input_kind == "page"
    assert "Paragraph 0 of the article" in doc.text and "Paragraph 5 of the article" in doc.text
    for chrome in ("News menu", "About us", "Mayor opens new bridge", "Reader One", "Footer links"):
        assert chrome not in doc.text
    assert not doc.text.startswith("Council passes budget"), "a repeated headline is not article text"


def test_feed_metadata_wins_over_page_metadata() -> None:
    doc = extract(entry(author="Feed Author", published_at=PUBLISHED, language="de"), page(article_page()), CFG)
    assert (doc.author, doc.published_at, doc.language) == ("Feed Author", PUBLISHED, "de")


def test_page_metadata_fills_what_the_feed_lacks() -> None:
    doc = extract(entry(), page(article_page(author="Jane Roe", lang="en")), CFG)
    assert doc.author == "Jane Roe"
    assert doc.published_at == datetime(2025, 2, 27, tzinfo=timezone.utc)
    assert doc.language == "en"


def test_near_empty_page_falls_back_to_feed_content_and_says_so() -> None:
    empty = "<html><body><nav><a href='/'>Home</a></nav><p>Subscribe to read.</p></body></html>"
    doc = extract(entry(BODY), page(empty), CFG)
    assert doc.input_kind == "content"
    assert "Paragraph 3 of the article" in doc.text
    assert any("page extraction kept" in note and "used feed text" in note for note in doc.notes)


def test_page_much_shorter_than_feed_content_uses_the_feed() -> None:
    teaser_page = article_page(BODY[: BODY.index("</p>") + 4] * 3)  # a paywalled page: the lead only
    long_content = BODY * 2
    doc = extract(entry(long_content), page(teaser_page), ExtractConfig(min_chars=50))
    assert doc.input_kind == "content"
    assert any("the feed content has" in note for note in doc.notes)


def test_summary_then_title() -> None:
    summary = extract(entry("<p>Only a summary of the story is in this feed, a sentence or two.</p>", "summary"), None, CFG)
    assert summary.input_kind == "summary"
    assert summary.text == "Only a summary of the story is in this feed, a sentence or two."
    title = extract(entry(""), None, CFG)
    assert (title.input_kind, title.text) == ("title", "Council passes budget")
    assert any("title stands in" in note for note in title.notes)


def test_fragment_falls_back_to_block_text_when_trafilatura_drops_the_article() -> None:
    # some feeds wrap the body in a div whose class trafilatura reads as a comment section
    html = f"<p>Lead paragraph of the article.</p><div id='comments' class='comments'>{BODY}</div>"
    text, note = fragment_text(html)
    assert "Paragraph 5 of the article" in text
    assert note and note.startswith("trafilatura kept")
    doc = extract(entry(html), None, CFG)
    assert doc.input_kind == "content"
    assert any(n.startswith("content: trafilatura kept") for n in doc.notes)
    trafilatura_only, _ = fragment_text(html, "trafilatura")
    assert "Paragraph 5 of the article" not in trafilatura_only


def test_unknown_fragment_strategy() -> None:
    with pytest.raises(ValueError, match="^extract: unknown fragment strategy"):
        fragment_text("<p>x</p>", "magic")


def test_html_to_text_blocks_breaks_and_dropped_tags() -> None:
    html = ("<p>One&nbsp;two</p><script>var x = 1;</script><div>Three<br>four</div>"
            "<ul><li>Five</li><li>Six</li></ul><button>Share</button>Tail")
    assert html_to_text(html).split("\n\n") == ["One two", "Three four", "Five", "Six", "Tail"]
    assert html_to_text("plain text, no markup") == "plain text, no markup"
    assert html_to_text("   ") == ""


def test_undecodable_page_bytes_do_not_fail() -> None:
    body = article_page().encode("utf-8").replace(b"Paragraph 0", b"Paragraph \xff0")
    result = FetchResult(url="u", final_url="https://news.example/a/1", status=200, body=body,
                         content_type="text/html; charset=bogus-charset")
    doc = extract(entry(), result, CFG)
    assert doc.input_kind == "page" and "Paragraph 5 of the article" in doc.text


@pytest.mark.parametrize("case", [c for c in load_cases() if c.kind == "page"], ids=lambda c: c.id)
def test_fixture_pages_extract_from_the_page(case) -> None:
    """Every labelled page is long enough to be read from the page itself, not the fallback."""
    from tests.clean_cases import inputs

    e, p = inputs(case)
    doc = extract(e, p, CFG)
    assert doc.input_kind == "page", doc.notes
