"""Parse a fetched body into entries: RSS/Atom/RDF with feedparser, JSON Feed by hand.

``parse(result) -> ParsedFeed``. feedparser's ``bozo`` flag is sorted: a feed that
still yields entries or a recognised version is kept with a warning; a body that
yields nothing is a ``ParseError``. DOCTYPE declarations are removed before parsing,
so neither an external entity nor a system identifier can make the parser read a
local file or the network (feedparser issue 107) and an internal-subset entity bomb
has nothing to expand.

Titles and author names come out as plain text (``plain_text``); content keeps its
markup for extraction. Links are made absolute against the feed's URL (and, through
feedparser, ``xml:base``); only http(s) links are kept. A local file has no URL: its
relative links are not stored as links (``Entry.raw_link`` still keys the entry).
See docs/peer-feeds.md for how this compares with other feed readers.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone
from html.entities import html5 as _HTML5_ENTITIES
from typing import Any

import feedparser
from lxml.html import defs as _html_defs

from ingest.errors import ParseError
from ingest.models import Entry, FetchResult, ParsedFeed
from ingest.urls import is_http_url, is_relative_url, resolve_url

# <!DOCTYPE name [internal subset]> or <!DOCTYPE name SYSTEM "..."> (one level of brackets)
_DOCTYPE = re.compile(rb"<!DOCTYPE[^>\[]*(\[[^\]]*\])?[^>]*>", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
# 1.0 feeds say ".../version/1" (the spec's string); ".../version/1.0" is seen in the wild too
_JSONFEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.[01])?/?$")


def parse(result: FetchResult) -> ParsedFeed:
    """Entries of one fetched feed body (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.0/1.1)."""
    body = result.body
    if not body.strip():
        raise ParseError("empty body")
    # the URL the body came from after redirects; a local file's path is no base for links
    base = result.final_url if is_http_url(result.final_url) else None
    if _looks_like_json(body):
        return _parse_jsonfeed(body, base)
    return _parse_xml(body, result.content_type, base)


# ---------------------------------------------------------------------------- plain text

# feedparser's test for "this untyped text is HTML" (mixin.looks_like_html): a closing
# tag or an entity reference, and every tag a known HTML element, so "AT&T", "a < b" and
# a literal "<tag>" stay text. lxml's list of HTML elements (a dependency already).
_HTML_TAGS = frozenset(_html_defs.tags)
_SPACED_TAGS = frozenset(_html_defs.block_tags | _html_defs.list_tags | _html_defs.table_tags | {"br", "hr", "li"})
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)(?:\s[^>]*)?/?>")
_CLOSING_TAG = re.compile(r"</([A-Za-z][A-Za-z0-9:-]*)\s*>")
_NOT_TEXT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[|\]\]>|<![^>]*>|<\?[^>]*>",
                       re.S | re.I)
_ENTITY_REF = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab/newline/CR: never text
# HTML decoded, then at most twice more when the decoded text is markup again (a title
# escaped twice: "&amp;ldquo;", "&lt;b&gt;" inside type="html")
_MARKUP_PASSES = 3


def plain_text(value: str | None, is_html: bool = False) -> str:
    """``value`` as one line of plain text: tags stripped, entities decoded, whitespace collapsed.

    ``is_html`` says the feed typed the value as HTML (feedparser's ``*_detail.type``);
    untyped or plain-text values are read as HTML only when they look like it.
    """
    if not value:
        return ""
    text = _CONTROL.sub("", value)
    for _ in range(_MARKUP_PASSES):
        if not (is_html or _looks_like_html(text)):
            break
        text = html.unescape(_TAG.sub(_tag_gap, _NOT_TEXT.sub(" ", text)))
        is_html = False
    return " ".join(text.split())


def _looks_like_html(text: str) -> bool:
    if "<" not in text and "&" not in text:
        return False
    references = [m.group(1) for m in _ENTITY_REF.finditer(text)]
    if not (references or _CLOSING_TAG.search(text)):
        return False
    if any(ref[0] != "#" and f"{ref};" not in _HTML5_ENTITIES for ref in references):
        return False
    return all(m.group(2).lower() in _HTML_TAGS for m in _TAG.finditer(text))


def _tag_gap(match: re.Match[str]) -> str:
    # "<p>a</p><p>b</p>" reads "a b", "fo<b>o</b>" reads "foo"
    return " " if match.group(2).lower() in _SPACED_TAGS else ""


# An untitled entry (microblogs, podcasts) is titled with the start of its summary, else
# its content, as plain text: readers show a line of text, not nothing (Miniflux cuts at
# 100 characters too). Never from its URL: that is no title (docs/peer-feeds.md).
_UNTITLED_CHARS = 100


def _untitled(*texts: tuple[str | None, bool]) -> str:
    """A title for an untitled entry from the first of ``(value, is_html)`` that has text."""
    for value, is_html in texts:
        text = plain_text(value, is_html)
        if not text:
            continue
        if len(text) > _UNTITLED_CHARS:  # cut at the last space, so no word is cut
            head = text[: _UNTITLED_CHARS + 1]
            text = (head.rsplit(" ", 1)[0] if " " in head else head[:-1]).rstrip(" ,;:-") + "…"
        return text
    return ""


def _is_html(detail: Any, default: bool = False) -> bool:
    """Whether feedparser typed a value (its ``*_detail`` dict) as HTML; ``default`` when untyped."""
    if not isinstance(detail, dict) or not detail.get("type"):
        return default
    return detail["type"] in ("text/html", "application/xhtml+xml")


# ---------------------------------------------------------------------------- links


def _absolute(link: Any, base: str | None) -> str | None:
    """``link`` resolved against ``base`` when that makes an absolute http(s) URL, else None."""
    if not isinstance(link, str) or not link.strip():
        return None
    link = link.strip()
    if link[:8].lower().startswith(("http://", "https://")):
        return link  # absolute already (most links): joining returns it as it is, at 10x the cost
    url = resolve_url(link, base)
    return url if is_http_url(url) else None


class _Links:
    """Makes one feed's links absolute http(s) URLs and counts those it drops (for warnings)."""

    def __init__(self, base: str | None) -> None:
        self.base = base
        self.relative = 0  # relative links of a feed without a URL (a local file)
        self.other = 0  # links of another scheme (mailto:, at:, javascript: ...)

    def first(self, links: Iterable[Any]) -> str | None:
        """The first of ``links`` that makes an absolute http(s) URL; None, counted, when none does."""
        given = [link for link in links if isinstance(link, str) and link.strip()]
        for link in given:
            url = _absolute(link, self.base)
            if url:
                return url
        if given:
            if is_relative_url(resolve_url(given[0], self.base)):
                self.relative += 1
            else:
                self.other += 1
        return None

    def each(self, links: Iterable[Any]) -> tuple[str, ...]:
        """Every one of ``links`` that makes an absolute http(s) URL (the others counted)."""
        return tuple(url for url in (self.first([link]) for link in links) if url)

    def warnings(self) -> list[str]:
        """What was dropped, one line per reason."""
        notes = []
        if self.relative:
            notes.append(f"{self.relative} relative links and no feed URL to resolve them (a local file): not stored")
        if self.other:
            notes.append(f"{self.other} links not http(s) (mailto:, at: ...): not stored")
        return notes


def _keyed(entries: list[Entry]) -> tuple[Entry, ...]:
    """``entries``, those whose guid recurs in the feed with different links marked (Entry.identity)."""
    links: dict[str, set[str | None]] = {}
    for entry in entries:
        if entry.guid:
            links.setdefault(entry.guid, set()).add(entry.raw_link or entry.url)
    repeated = {guid for guid, seen in links.items() if len(seen) > 1}
    return tuple(replace(entry, guid_repeats=True) if entry.guid in repeated else entry for entry in entries)


# ---------------------------------------------------------------------------- XML feeds


def _parse_xml(body: bytes, content_type: str | None, base: str | None) -> ParsedFeed:
    warnings: list[str] = []
    # the whole body (already capped at max_bytes): a long comment must not hide a DOCTYPE
    if _DOCTYPE.search(body):
        body = _DOCTYPE.sub(b"", body, count=1)
        warnings.append("DOCTYPE removed before parsing")
    if _ENTITY.search(body):
        raise ParseError("entity declarations outside a DOCTYPE: refused")
    headers = {"content-type": content_type} if content_type else {}
    # No base URL (Content-Location) for feedparser: it would resolve every RSS guid against
    # it as if it were a link ("123" -> "https://host/123"), changing stored identities.
    # Links are resolved here (_Links) against the feed's URL, after feedparser applied
    # xml:base to them (docs/peer-feeds.md, "Findings about feedparser").
    try:
        # The HTML we keep only feeds trafilatura, and whatever we re-publish is built
        # from clean text: feedparser's sanitiser and URI resolution are wasted work
        # (about 2.5x slower parsing of full-content feeds: docs/facts.md#feedparser-sanitising).
        parsed = feedparser.parse(
            body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
        )
    except Exception as exc:  # feedparser is defensive; anything escaping is a bad body
        raise ParseError(f"feedparser failed: {type(exc).__name__}: {exc}") from exc
    if parsed.get("bozo"):
        reason = _bozo_reason(parsed.get("bozo_exception"))
        if not parsed.entries and not parsed.get("version"):
            raise ParseError(f"not a feed: {reason}")
        warnings.append(f"malformed feed kept: {reason}")
    if not parsed.get("version") and not parsed.entries:
        raise ParseError("not a feed (no RSS, Atom or JSON Feed root)")
    feed = parsed.get("feed", {})
    language = feed.get("language")
    links = _Links(base)
    entries = []
    for raw in parsed.entries:
        entry = _entry(raw, language, links)
        if _has_substance(entry, raw.get("title")):
            entries.append(entry)
    if len(entries) < len(parsed.entries):
        warnings.append(
            f"{len(parsed.entries) - len(entries)} entries without id, link, enclosure, title or content skipped"
        )
    return ParsedFeed(
        title=plain_text(feed.get("title"), _is_html(feed.get("title_detail"))) or None,
        link=_absolute(feed.get("link"), base),
        entries=_keyed(entries),
        ttl=_ttl(feed.get("ttl")),
        warnings=tuple(warnings + links.warnings()),
    )


def _has_substance(entry: Entry, title_given: Any) -> bool:
    """Something to key or store: an id, a link, an enclosure, content, or a title, counted
    as the feed gave it (a title that is all markup, an image, still keeps the entry)."""
    given = isinstance(title_given, str) and bool(title_given.strip())
    return bool(entry.guid or entry.url or entry.raw_link or entry.enclosure_urls or entry.title or given
                or entry.content_html.strip())


def _bozo_reason(exc: Any) -> str:
    if exc is None:
        return "unknown problem"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def _ttl(value: Any) -> float | None:
    """RSS <ttl> is in minutes."""
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        return None
    return minutes * 60 if minutes > 0 else None


def _entry(e: Any, feed_language: str | None, links: _Links) -> Entry:
    content_html, content_kind, language, content_is_html = "", "none", None, True
    for content in e.get("content", []) or []:
        value = content.get("value") or ""
        if value.strip() and len(value) > len(content_html):
            content_html, content_kind = value, "content"
            language, content_is_html = content.get("language"), _is_html(content)
    summary = e.get("summary") or ""
    # an untyped summary is feedparser's copy of the content: HTML
    summary_is_html = _is_html(e.get("summary_detail"), default=True)
    if not content_html.strip() and summary.strip():
        content_html, content_kind, content_is_html = summary, "summary", summary_is_html
    guid = (e.get("id") or "").strip() or None
    raw_link = (e.get("link") or "").strip() or None
    # feedparser copies a permalink guid (RSS default, Atom id) into a missing link; such a
    # "link" is an identifier first: used only when it is already an absolute http(s) URL
    from_guid = bool(e.get("guidislink")) and raw_link == guid
    alternates = [x.get("href") for x in e.get("links", []) if x.get("rel") == "alternate"]
    # feedburner:origLink is the article's own URL where <link> is the proxy's
    url = links.first([e.get("feedburner_origlink"), None if from_guid else raw_link, *alternates])
    if url is None and from_guid and is_http_url(raw_link):
        url = raw_link
    enclosures = links.each(x.get("href") for x in e.get("links", []) if x.get("rel") == "enclosure")
    tags = tuple(t.get("term") for t in e.get("tags", []) or [] if t.get("term"))
    return _make_entry(
        guid=guid,
        url=url,
        raw_link=raw_link,
        title=plain_text(e.get("title"), _is_html(e.get("title_detail")))
        or _untitled((summary, summary_is_html), (content_html, content_is_html)),
        author=plain_text(e.get("author")) or None,
        published_at=_struct_time(_raw(e, "published_parsed")) or _struct_time(_raw(e, "updated_parsed")),
        updated_at=_struct_time(_raw(e, "updated_parsed")),
        content_html=content_html,
        content_kind=content_kind,
        language=language or feed_language,
        enclosure_urls=enclosures,
        tags=tags,
    )


def _raw(entry: Any, key: str) -> Any:
    # FeedParserDict.get maps missing keys to others with a DeprecationWarning (issue 310)
    return dict.get(entry, key)


def _struct_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=timezone.utc)
    except (OverflowError, ValueError, TypeError):
        return None


# Characters XML 1.0 forbids (C0 controls but tab, newline and return; U+FFFE/U+FFFF) and
# lone surrogates: feeds carry them as entities (&#0;) and JSON escapes ("\u0000",
# "\ud800"). PostgreSQL refuses NUL in text (one such title stopped a whole --once run
# with a store error), lxml refuses controls (an internal error in extraction), and a
# lone surrogate cannot be encoded as UTF-8: they go at the source boundary.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """Strings without _UNSTORABLE characters (tuples of strings too); other values as they are."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, tuple):
        return tuple(_storable(v) for v in value)
    return value


def _make_entry(**fields: Any) -> Entry:
    fields = {key: _storable(value) for key, value in fields.items()}
    fields = {key: (value or None) if key in ("guid", "url", "author") else value for key, value in fields.items()}
    digest = hashlib.sha256()
    for key in ("guid", "url", "title", "author", "content_html"):
        digest.update((fields.get(key) or "").encode("utf-8", "replace"))
        digest.update(b"\x00")
    published = fields.get("published_at")
    digest.update(published.isoformat().encode() if published else b"")
    return Entry(entry_hash=digest.hexdigest()[:32], **fields)


# ---------------------------------------------------------------------------- JSON Feed


def _looks_like_json(body: bytes) -> bool:
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith((b"{", b"["))  # "[" too, so a JSON array is reported as JSON, not as bad XML


def _parse_jsonfeed(body: bytes, base: str | None) -> ParsedFeed:
    """JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1), mapped like RSS/Atom entries."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {str(exc).splitlines()[0][:150]}") from None
    if not isinstance(doc, dict) or not _JSONFEED_VERSION.match(str(doc.get("version", ""))):
        raise ParseError("JSON body is not a JSON Feed (no 'version': 'https://jsonfeed.org/version/1.x')")
    items = doc.get("items")
    if not isinstance(items, list):
        raise ParseError("JSON Feed without an 'items' array")
    warnings: list[str] = []
    entries = []
    feed_language = doc.get("language") if isinstance(doc.get("language"), str) else None
    home = _absolute(doc.get("home_page_url"), base)
    # relative item URLs are pages of the site: the home page, else the feed's own URL, else
    # where the body came from (Miniflux resolves against the home page too)
    links = _Links(home or _absolute(doc.get("feed_url"), base) or base)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            warnings.append(f"item {index} is not an object: skipped")
            continue
        entry = _json_entry(item, doc, feed_language, links)
        if _has_substance(entry, item.get("title")):
            entries.append(entry)
    return ParsedFeed(
        title=plain_text(_str(doc.get("title"))) or None, link=home, entries=_keyed(entries),
        warnings=tuple(warnings + links.warnings()),
    )


def _author_names(obj: dict[str, Any]) -> list[str]:
    """Names of JSON Feed 1.1 ``authors`` (a list of objects), else of 1.0's ``author``
    (an object); values of any other shape name no one."""
    given = obj.get("authors")
    authors = given if isinstance(given, list) and given else [obj.get("author")]
    return [plain_text(a["name"]) for a in authors if isinstance(a, dict) and isinstance(a.get("name"), str)]


def _json_entry(item: dict[str, Any], doc: dict[str, Any], feed_language: str | None, links: _Links) -> Entry:
    markup = _str(item.get("content_html"))
    text = _str(item.get("content_text"))
    summary = _str(item.get("summary"))
    if markup:
        content_html, kind = markup, "content"
    elif text:
        content_html, kind = "".join(f"<p>{_escape(p)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()), "content"
    elif summary:
        content_html, kind = f"<p>{_escape(summary)}</p>", "summary"
    else:
        content_html, kind = "", "none"
    names = _author_names(item) or _author_names(doc)
    attachments = item.get("attachments") if isinstance(item.get("attachments"), list) else []
    identifier = item.get("id")
    return _make_entry(
        guid=str(identifier) if identifier not in (None, "") else None,
        url=links.first([item.get("url"), item.get("external_url")]),
        raw_link=_str(item.get("url")) or _str(item.get("external_url")),
        # plain text by the spec; publishers escape it anyway
        title=plain_text(_str(item.get("title"))) or _untitled((summary, False), (text, False), (markup, True)),
        author=", ".join(name for name in names if name) or None,
        published_at=_iso(item.get("date_published")),
        updated_at=_iso(item.get("date_modified")),
        content_html=content_html,
        content_kind=kind,
        language=_str(item.get("language")) or feed_language,
        enclosure_urls=links.each(a.get("url") for a in attachments if isinstance(a, dict)),
        tags=tuple(t for t in item.get("tags", []) if isinstance(t, str)) if isinstance(item.get("tags"), list) else (),
    )


def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(value: Any) -> datetime | None:
    """RFC 3339 date of JSON Feed to an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
