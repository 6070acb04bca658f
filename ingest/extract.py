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
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
# Feed content is the article already: trafilatura keeping less than this share of
# its plain text means it judged real paragraphs to be boilerplate.
_MIN_CONTENT_SHARE = 0.6


def extract(entry: Entry, page: FetchResult | None, cfg: ExtractConfig) -> Document:
    """The article text of ``entry`` (from ``page`` when given) with its metadata."""
    notes: list[str] = []
    meta: dict[str, object] = {}
    text = ""
    input_kind = "title"
    if page is not None and page.body:
        text, meta = _from_page(page)
        if len(text) >= cfg.min_chars:
            input_kind = "page"
        else:
            notes.append(f"page extraction kept {len(text)} chars < min_chars={cfg.min_chars}: used feed text")
            text = ""
    if not text and entry.content_html.strip():
        text = _from_fragment(entry.content_html)
        input_kind = entry.content_kind
    if not text:
        text = entry.title
        input_kind = "title"
    return Document(
        title=entry.title or str(meta.get("title") or ""),
        text=text,
        author=entry.author or _opt(meta.get("author")),
        published_at=entry.published_at or _date(meta.get("date")),
        language=entry.language or _opt(meta.get("language")),
        input_kind=input_kind,
        notes=tuple(notes),
    )


def _from_page(page: FetchResult) -> tuple[str, dict[str, object]]:
    html = _decode(page.body, page.content_type)
    try:
        doc = trafilatura.bare_extraction(
            html, url=page.final_url, with_metadata=True, include_comments=False, include_tables=False,
        )
    except Exception:  # trafilatura raises assorted lxml/parsing errors on hostile pages
        doc = None
    if doc is None:
        return "", {}
    meta = {"title": doc.title, "author": doc.author, "date": doc.date, "language": doc.language}
    return _paragraphs_from_lines(doc.text or ""), meta


def _from_fragment(html: str) -> str:
    """Text of a feed entry's HTML: trafilatura when it keeps the article, else block text."""
    plain = html_to_text(html)
    wrapped = f"<html><body><article>{html}</article></body></html>"
    try:
        extracted = trafilatura.extract(
            wrapped, output_format="txt", include_comments=False, include_tables=False, favor_recall=True,
        )
    except Exception:
        extracted = None
    text = _paragraphs_from_lines(extracted or "")
    if len(text) >= _MIN_CONTENT_SHARE * len(plain):
        return text
    return plain


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
