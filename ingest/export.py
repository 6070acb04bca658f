"""Render stored stories (one per cluster) as Atom 1.0, JSON Feed 1.1, JSON Lines or CSV.

Pure: takes the ``Story`` rows the store returns and a ``FeedInfo``, returns text.
Each story is its cluster's canonical item, its clean text as escaped HTML
paragraphs and as plain text, and the other copies ("also published by").

Entry ids are ``urn:uuid:`` + the cluster's stored uid, so they survive a change of
canonical item (RFC 4287 4.2.6: an entry's id must never change); ``updated`` is
when the cluster last changed, so readers re-show a story when its copies or its
canonical change and not otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from lxml import etree

from ingest import PROJECT_URL, __version__
from ingest.models import Copy, Story
from ingest.urls import is_http_url

ATOM_NS = "http://www.w3.org/2005/Atom"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
MEDIA_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "jsonfeed": "application/feed+json; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
# the `updated` of a feed with no entries: fixed, so an empty served feed keeps its ETag
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# XML 1.0 allows no C0 control characters but tab, newline and carriage return;
# lxml refuses them, and a feed's text can carry them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class FeedInfo:
    """What the exported feed says about itself."""

    id: str  # an IRI, stable for one store: "urn:uuid:" + the store's uid
    title: str
    updated: datetime  # when nothing is exported: the time of export
    self_url: str | None = None
    description: str = "One entry per story: syndicated copies collapsed into their canonical item."


def render(stories: Sequence[Story], fmt: str, info: FeedInfo) -> str:
    """The stories in one of ``FORMATS``."""
    return RENDERERS[fmt](stories, info)


def etag_of(body: bytes) -> str:
    """A strong ETag for a rendered feed: the same bytes, the same tag."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def entry_id(story: Story) -> str:
    """The story's stable id (an IRI): its cluster's uid as a URN."""
    return f"urn:uuid:{story.uid}"


def feed_updated(stories: Sequence[Story], default: datetime) -> datetime:
    """The latest change among the stories, else ``default``."""
    return max((s.updated_at for s in stories), default=default)


def paragraphs(text: str) -> list[str]:
    """Paragraphs of a clean text (separated by a blank line), inner whitespace collapsed."""
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def content_html(story: Story) -> str:
    """The clean text as escaped HTML paragraphs, then the list of other copies."""
    parts = [f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs(story.text)]
    if story.copies:
        parts.append("<p>Also published by:</p>")
        parts.append("<ul>" + "".join(f"<li>{_copy_html(c)}</li>" for c in story.copies) + "</ul>")
    return "\n".join(parts)


def content_text(story: Story) -> str:
    """The clean text, then one line per other copy."""
    text = "\n\n".join(paragraphs(story.text))
    if story.copies:
        text += "\n\nAlso published by:\n" + "\n".join(
            f"- {c.source}: {c.title}" + (f" <{c.url}>" if is_http_url(c.url) else "") for c in story.copies
        )
    return text


def _copy_html(copy: Copy) -> str:
    label = html.escape(copy.source, quote=False)
    if is_http_url(copy.url):
        label = f'<a href="{html.escape(copy.url or "", quote=True)}">{label}</a>'
    return f"{label}: {html.escape(copy.title, quote=False)}"


def _rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _title(story: Story) -> str:
    if story.title.strip():
        return story.title.strip()
    words = story.text.split()
    return " ".join(words[:12]) + (" ..." if len(words) > 12 else "")


# ---------------------------------------------------------------------------- Atom 1.0


def to_atom(stories: Sequence[Story], info: FeedInfo) -> str:
    """An Atom 1.0 feed (RFC 4287): every entry has id, title, updated, author, content."""
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", info.id)
    _sub(feed, "title", info.title, type="text")
    _sub(feed, "subtitle", info.description, type="text")
    _sub(feed, "updated", _rfc3339(feed_updated(stories, info.updated)))
    _sub(feed, "generator", "ingest", uri=PROJECT_URL, version=__version__)
    if info.self_url:
        _sub(feed, "link", None, rel="self", type=MEDIA_TYPES["atom"].split(";")[0], href=info.self_url)
    for story in stories:
        entry = _sub(feed, "entry", None)
        _sub(entry, "id", entry_id(story))
        _sub(entry, "title", _title(story), type="text")
        _sub(entry, "updated", _rfc3339(story.updated_at))
        if story.published_at:
            _sub(entry, "published", _rfc3339(story.published_at))
        author = _sub(entry, "author", None)
        _sub(author, "name", story.author or story.source)
        if is_http_url(story.url):
            _sub(entry, "link", None, rel="alternate", type="text/html", href=story.url)
        for copy in story.copies:
            if is_http_url(copy.url):
                _sub(entry, "link", None, rel="related", type="text/html", href=copy.url, title=copy.source)
        _sub(entry, "category", None, term=story.source, label=f"canonical source: {story.source}")
        content = _sub(entry, "content", content_html(story), type="html")
        if story.language:
            content.set("{http://www.w3.org/XML/1998/namespace}lang", story.language)
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True).decode("utf-8")


def _sub(parent: Any, tag: str, text: str | None, **attributes: str | None) -> Any:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}")
    for key, value in attributes.items():
        if value is not None:
            element.set(key, _XML_INVALID.sub("", value))
    if text is not None:
        element.text = _XML_INVALID.sub("", text)
    return element


# ---------------------------------------------------------------------------- JSON Feed 1.1


def to_jsonfeed(stories: Sequence[Story], info: FeedInfo) -> str:
    """A JSON Feed 1.1 document; the other copies go in the ``_ingest`` extension object."""
    doc: dict[str, Any] = {
        "version": JSONFEED_VERSION,
        "title": info.title,
        "description": info.description,
        "authors": [{"name": "ingest", "url": PROJECT_URL}],
        "items": [_json_item(s) for s in stories],
    }
    if info.self_url:
        doc["feed_url"] = info.self_url
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def _json_item(story: Story) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": entry_id(story),
        "title": _title(story),
        "content_html": content_html(story),
        "content_text": content_text(story),
        "date_modified": _rfc3339(story.updated_at),
        "authors": [{"name": story.author or story.source}],
        "tags": [story.source],
    }
    if is_http_url(story.url):
        item["url"] = story.url
    if story.published_at:
        item["date_published"] = _rfc3339(story.published_at)
    if story.language:
        item["language"] = story.language
    # JSON Feed 1.1: custom objects are allowed under keys starting with "_"
    item["_ingest"] = {
        "cluster": story.cluster_id,
        "canonical_item": story.item_id,
        "source": story.source,
        "also_published_by": [_copy_dict(c) for c in story.copies],
    }
    return item


def _copy_dict(copy: Copy) -> dict[str, Any]:
    return {
        "item": copy.item_id, "source": copy.source, "url": copy.url, "title": copy.title,
        "published": _rfc3339(copy.published_at) if copy.published_at else None,
    }


# ---------------------------------------------------------------------------- JSON Lines, CSV


def to_jsonl(stories: Sequence[Story], info: FeedInfo) -> str:
    """One JSON object per story and line."""
    return "".join(json.dumps(_flat(s), ensure_ascii=False) + "\n" for s in stories)


def _flat(story: Story) -> dict[str, Any]:
    return {
        "id": entry_id(story), "cluster": story.cluster_id, "item": story.item_id,
        "updated": _rfc3339(story.updated_at),
        "published": _rfc3339(story.published_at) if story.published_at else None,
        "source": story.source, "title": story.title, "url": story.url, "author": story.author,
        "language": story.language, "text": story.text,
        "also_published_by": [_copy_dict(c) for c in story.copies],
    }


CSV_COLUMNS = ("id", "cluster", "item", "updated", "published", "source", "title", "url", "author", "copies",
               "also_published_by", "text")


def to_csv(stories: Sequence[Story], info: FeedInfo) -> str:
    """One row per story; the other copies as ``source <url>`` joined by ``; ``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for story in stories:
        flat = _flat(story)
        also = "; ".join(f"{c.source} <{c.url}>" if c.url else c.source for c in story.copies)
        writer.writerow([flat["id"], flat["cluster"], flat["item"], flat["updated"], flat["published"] or "",
                         flat["source"], flat["title"], flat["url"] or "", flat["author"] or "", len(story.copies),
                         also, flat["text"]])
    return out.getvalue()


# The export formats: `ingest export --format` offers exactly these.
RENDERERS: dict[str, Callable[[Sequence[Story], FeedInfo], str]] = {
    "atom": to_atom, "jsonfeed": to_jsonfeed, "jsonl": to_jsonl, "csv": to_csv,
}
FORMATS = tuple(RENDERERS)
