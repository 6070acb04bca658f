"""Extract an article's text and metadata from the best input available.

``extract(entry, page, cfg) -> Document``. Inputs are tried in order: the fetched
article page (``full_text``), the feed's full content, the feed's summary, and last
the title alone. trafilatura runs on each; an extraction that fails or keeps less than
``min_chars`` (or, for feed content that is already the article, far less than the
content holds) falls back to a plain block-by-block reading of that input, then to the
next input. The Document records which input it came from. Feed metadata wins over
what trafilatura finds on the page.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import lxml.html
import trafilatura
from lxml import etree

from ingest.config import ExtractConfig
from ingest.models import Document, Entry, FetchResult

_BLOCK_TAGS = {
    "p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "tr", "dt", "dd",
    "figcaption", "section", "article", "header", "footer", "aside", "ul", "ol", "table", "address",
}
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "button", "form", "nav")
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
# Feed content is the article already: trafilatura keeping less than this share of
# its plain text means it judged real paragraphs to be boilerplate.
_MIN_CONTENT_SHARE = 0.6
# A page extraction shorter than this share of the feed's own full content missed part
# of the article (a paywall teaser, a page split over several screens): use the feed.
_MIN_PAGE_SHARE = 0.5
FRAGMENT_STRATEGIES = ("auto", "trafilatura", "blocks")


def extract(entry: Entry, page: FetchResult | None, cfg: ExtractConfig, *, fragment: str = "auto") -> Document:
    """The article text of ``entry`` (from ``page`` when given) with its metadata.

    ``fragment`` says how feed HTML is read: ``auto`` (trafilatura, falling back to
    block text when it drops too much; the default, chosen by bench/clean_quality.py),
    ``trafilatura`` or ``blocks`` (kept for that measurement).
    """
    notes: list[str] = []
    meta: dict[str, object] = {}
    text = ""
    input_kind = "title"
    fast = not cfg.trafilatura_fallbacks
    if page is not None and page.body:
        # feed metadata wins over the page's: when the feed gave all of it, trafilatura's
        # metadata search (half its time on 20-100 KB news pages, bench/run.py) is skipped
        needs_meta = not (entry.title and entry.author and entry.published_at and entry.language)
        text, meta = _from_page(page, needs_meta, fast)
        text = _without_title(text, entry.title or str(meta.get("title") or ""))
        if len(text) < cfg.min_chars:
            notes.append(f"page extraction kept {len(text)} chars < min_chars={cfg.min_chars}: used feed text")
            text = ""
        elif (feed_chars := _content_chars(entry)) and len(text) < _MIN_PAGE_SHARE * feed_chars:
            notes.append(f"page extraction kept {len(text)} chars, the feed content has {feed_chars}: used feed text")
            text = ""
        else:
            input_kind = "page"
    if not text and entry.content_html.strip():
        text, note = fragment_text(entry.content_html, fragment, fast=fast)
        if note:
            notes.append(f"{entry.content_kind}: {note}")
        input_kind = entry.content_kind if text else input_kind
    if not text:
        text = entry.title
        input_kind = "title"
        notes.append("no article text in the page or the feed: the title stands in")
    return Document(
        title=entry.title or str(meta.get("title") or ""),
        text=text,
        author=entry.author or _opt(meta.get("author")),
        published_at=entry.published_at or _date(meta.get("date")),
        language=entry.language or _opt(meta.get("language")),
        input_kind=input_kind,
        notes=tuple(notes),
    )


def _from_page(page: FetchResult, with_metadata: bool = True, fast: bool = True) -> tuple[str, dict[str, object]]:
    html = _decode(page.body, page.content_type)
    try:
        doc = trafilatura.bare_extraction(
            html, url=page.final_url, with_metadata=with_metadata, include_comments=False, include_tables=False,
            fast=fast,
        )
    except Exception:  # trafilatura raises assorted lxml/parsing errors on hostile pages
        doc = None
    if doc is None:
        return "", {}
    # trafilatura reports a language only when asked to detect one; the page's own
    # <html lang> is cheaper and what the publisher declared
    if not with_metadata:
        return _paragraphs_from_lines(doc.text or ""), {}
    language = doc.language or _html_lang(html)
    meta = {"title": doc.title, "author": doc.author, "date": doc.date, "language": language}
    return _paragraphs_from_lines(doc.text or ""), meta


def _content_chars(entry: Entry) -> int:
    """Plain-text length of the feed's full content (0 for a summary or none).

    Compared by its plain text: reading it with trafilatura as well would cost a second
    extraction for every page item. Only asked when the page text passed min_chars.
    """
    return len(html_to_text(entry.content_html)) if entry.content_kind == "content" else 0


def _html_lang(html: str) -> str | None:
    match = _HTML_LANG.search(html[:5000])
    return match.group(1) if match else None


def _without_title(text: str, title: str) -> str:
    """Drop a first paragraph that repeats the headline (trafilatura keeps some pages' <h1>)."""
    first, _, rest = text.partition("\n\n")
    if rest and title and " ".join(first.split()).casefold() == " ".join(title.split()).casefold():
        return rest
    return text


def fragment_text(html: str, strategy: str = "auto", *, fast: bool = True) -> tuple[str, str | None]:
    """Text of a feed entry's HTML, and a note when the fallback was used.

    Measured on the 23 feed entries of fixtures/clean (bench/clean_quality.py): every
    strategy keeps all labelled sentences; trafilatura alone also drops 14 of 53
    boilerplate lines and the figure captions (credits that differ between copies of a
    story) that block text keeps, at a quarter of block text's speed (~900 vs ~3,000
    entries/s, far above any poll rate). ``auto`` keeps trafilatura's reading but
    falls back to block text when trafilatura kept < 60% of the plain text, so a
    fragment trafilatura misreads as chrome cannot lose the article.
    """
    if strategy not in FRAGMENT_STRATEGIES:
        raise ValueError(f"extract: unknown fragment strategy {strategy!r}")
    plain = html_to_text(html)
    if strategy == "blocks":
        return plain, None
    wrapped = f"<html><body><article>{html}</article></body></html>"
    try:
        extracted = trafilatura.extract(
            wrapped, output_format="txt", include_comments=False, include_tables=False, favor_recall=True, fast=fast,
        )
    except Exception:  # as above: assorted lxml errors on broken markup
        extracted = None
    text = _paragraphs_from_lines(extracted or "")
    if strategy == "trafilatura" or len(text) >= _MIN_CONTENT_SHARE * len(plain):
        return text, None
    return plain, f"trafilatura kept {len(text)} of {len(plain)} chars: used block text"


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment, one paragraph per block element, blank-line separated."""
    if not html.strip():
        return ""
    if "<" not in html:
        return _join([html])
    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return _join([re.sub(r"<[^>]+>", " ", html)])
    for bad in list(root.iter(*_DROP_TAGS)):
        if bad.getparent() is not None:
            bad.drop_tree()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.lower()
        if tag == "br":
            el.tail = "\n" + (el.tail or "")
        elif tag in _BLOCK_TAGS:
            el.text = "\n\n" + (el.text or "")
            el.tail = "\n\n" + (el.tail or "")
    return _join(re.split(r"\n\s*\n", root.text_content()))


def _paragraphs_from_lines(text: str) -> str:
    # trafilatura's txt output puts one paragraph per line
    return _join(text.splitlines())


def _join(parts: list[str]) -> str:
    out = []
    for part in parts:
        clean = _SPACES.sub(" ", part.replace("\n", " ")).strip()
        if clean:
            out.append(clean)
    return "\n\n".join(out)


def _decode(body: bytes, content_type: str | None) -> str:
    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"')
    for encoding in (charset, "utf-8"):
        if encoding:
            try:
                return body.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return body.decode("utf-8", errors="replace")


def _opt(value: object) -> str | None:
    return str(value).strip() or None if value else None


def _date(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=parsed.tzinfo or timezone.utc).astimezone(timezone.utc)
