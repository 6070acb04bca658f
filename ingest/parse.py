"""Parse a fetched body into entries: RSS/Atom/RDF with feedparser, JSON Feed by hand.

``parse(result) -> ParsedFeed``. feedparser's ``bozo`` flag is sorted: a feed that
still yields entries or a recognised version is kept with a warning; a body that
yields nothing is a ``ParseError``. DOCTYPE declarations are removed before parsing,
so neither an external entity nor a system identifier can make the parser read a
local file or the network (feedparser issue 107) and an internal-subset entity bomb
has nothing to expand.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

import feedparser

from ingest.errors import ParseError
from ingest.models import Entry, FetchResult, ParsedFeed

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
    if _looks_like_json(body):
        return _parse_jsonfeed(body)
    return _parse_xml(body, result.content_type)


# ---------------------------------------------------------------------------- XML feeds


def _parse_xml(body: bytes, content_type: str | None) -> ParsedFeed:
    warnings: list[str] = []
    # the whole body (already capped at max_bytes): a long comment must not hide a DOCTYPE
    if _DOCTYPE.search(body):
        body = _DOCTYPE.sub(b"", body, count=1)
        warnings.append("DOCTYPE removed before parsing")
    if _ENTITY.search(body):
        raise ParseError("entity declarations outside a DOCTYPE: refused")
    headers = {"content-type": content_type} if content_type else {}
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
    entries = tuple(e for e in (_entry(raw, language) for raw in parsed.entries) if _has_substance(e))
    if len(entries) < len(parsed.entries):
        warnings.append(f"{len(parsed.entries) - len(entries)} entries without id, link, title or content skipped")
    return ParsedFeed(
        title=feed.get("title"),
        link=feed.get("link"),
        entries=entries,
        ttl=_ttl(feed.get("ttl")),
        warnings=tuple(warnings),
    )


def _has_substance(entry: Entry) -> bool:
    return bool(entry.guid or entry.url or entry.title or entry.content_html.strip())


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


def _entry(e: Any, feed_language: str | None) -> Entry:
    content_html, content_kind, language = "", "none", None
    for content in e.get("content", []) or []:
        value = content.get("value") or ""
        if value.strip() and len(value) > len(content_html):
            content_html, content_kind = value, "content"
            language = content.get("language")
    summary = e.get("summary") or ""
    if not content_html.strip() and summary.strip():
        content_html, content_kind = summary, "summary"
    title = (e.get("title") or "").strip()
    guid = (e.get("id") or "").strip() or None
    link = (e.get("link") or "").strip() or None
    enclosures = tuple(
        link_.get("href") for link_ in e.get("links", []) if link_.get("rel") == "enclosure" and link_.get("href")
    )
    tags = tuple(t.get("term") for t in e.get("tags", []) or [] if t.get("term"))
    return _make_entry(
        guid=guid,
        url=link,
        title=title,
        author=(e.get("author") or "").strip() or None,
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


def _make_entry(**fields: Any) -> Entry:
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


def _parse_jsonfeed(body: bytes) -> ParsedFeed:
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
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            warnings.append(f"item {index} is not an object: skipped")
            continue
        entry = _json_entry(item, doc, feed_language)
        if _has_substance(entry):
            entries.append(entry)
    return ParsedFeed(
        title=_str(doc.get("title")), link=_str(doc.get("home_page_url")), entries=tuple(entries),
        warnings=tuple(warnings),
    )


def _json_entry(item: dict[str, Any], doc: dict[str, Any], feed_language: str | None) -> Entry:
    html = _str(item.get("content_html"))
    text = _str(item.get("content_text"))
    summary = _str(item.get("summary"))
    if html:
        content_html, kind = html, "content"
    elif text:
        content_html, kind = "".join(f"<p>{_escape(p)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()), "content"
    elif summary:
        content_html, kind = f"<p>{_escape(summary)}</p>", "summary"
    else:
        content_html, kind = "", "none"
    authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else None)
    authors = authors or doc.get("authors") or ([doc["author"]] if isinstance(doc.get("author"), dict) else [])
    names = [a.get("name") for a in authors if isinstance(a, dict) and isinstance(a.get("name"), str)]
    attachments = item.get("attachments") if isinstance(item.get("attachments"), list) else []
    identifier = item.get("id")
    return _make_entry(
        guid=str(identifier) if identifier not in (None, "") else None,
        url=_str(item.get("url")) or _str(item.get("external_url")),
        title=_str(item.get("title")) or "",
        author=", ".join(names) or None,
        published_at=_iso(item.get("date_published")),
        updated_at=_iso(item.get("date_modified")),
        content_html=content_html,
        content_kind=kind,
        language=_str(item.get("language")) or feed_language,
        enclosure_urls=tuple(a["url"] for a in attachments if isinstance(a, dict) and isinstance(a.get("url"), str)),
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
