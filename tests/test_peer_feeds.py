"""parse() against other feed readers' test suites (../shared/peer-feeds, read in place).

Each record of ``expected/<suite>.json`` names a fixture and what its peer (gofeed,
feedjira, rss-parser, Miniflux, fastfeedparser) asserts about it. Every fixture is
parsed twice: as a local file (no URL, as ``fetch.read_local`` reads one) and as fetched
by the real ``Fetcher`` from a loopback HTTP server at the path of the record's base URL
(the URL the peer parses against), so relative links resolve as the peer's did; the
loopback origin is mapped back to the base's origin before links are compared. Nothing
leaves the machine: the records' hosts are never contacted.

Comparison rules (docs/peer-feeds.md): titles after entity decoding and whitespace
collapsing; links with surrounding whitespace dropped, relative expectations resolved
against the URL the feed was served at (as a local file a relative link has no URL to
resolve against and is expected to be absent, the documented decision of
ingest/parse.py); guids with surrounding whitespace dropped; dates to the second, UTC.

Every difference kept on purpose is in KNOWN, keyed by fixture and field, with one of
REASONS; a difference not in KNOWN fails, and so does a KNOWN row that no longer
differs, so the list cannot go stale. docs/peer-feeds.md shows the same table (checked).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from lxml.html import defs

from ingest.config import FetchConfig, SourceConfig
from ingest.errors import ParseError
from ingest.fetch import Fetcher
from ingest.models import Entry, FetchResult, ParsedFeed
from ingest.parse import parse

from .conftest import write_config_file
from .loopback import ROOT, Loopback

PEERS = ROOT.parent / "shared" / "peer-feeds"
SUITES = sorted(p.stem for p in (PEERS / "expected").glob("*.json")) if PEERS.is_dir() else []
DOCS = ROOT / "docs" / "peer-feeds.md"
needs_peers = pytest.mark.skipif(not SUITES, reason=f"{PEERS} is absent: peer feed readers' fixtures not available")

MODES = ("file", "http")
FIELDS = ("error", "count", "title", "link", "guid", "published", "updated")

# ---------------------------------------------------------------------------- known differences
# Why a kept difference is right for ingest (docs/peer-feeds.md, "Reasons", says more).
REASONS = {
    "empty-entry": "no id, link, enclosure, title or content: nothing to key or store, so parse skips the entry",
    "fill-from-url": "the peer titles an untitled entry with its URL; a URL is no title",
    "fill-link": "the peer fills a missing link (site URL, enclosure) the entry does not give as an http(s) link",
    "fill-guid": "the peer invents a guid (the link, or a counter) where the feed gives none",
    "markup-kept": "the peer keeps markup in the title; ingest stores titles as plain text",
    "site-base": "the peer resolves entry links against the site link; ingest: the feed's URL (RFC 3986, xml:base)",
    "proxy-link": "the peer keeps the feed proxy's link where feedburner:origLink gives the article's own URL",
    "peer-charset": "the peer decoded undeclared ISO-8859-1 bytes as UTF-8 (U+FFFD in its expectation)",
    "jsonfeed-version": "the document's version is not a JSON Feed version URL: not taken for a JSON Feed",
    "not-a-feed": "no feed root feedparser recognises (or JSON null): a parse error, where the peer has an empty feed",
    "feedparser-lenient-loss": "feedparser reads no entries from this malformed document; the peer repairs it",
    "feedparser-uri-attr": "feedparser takes the link's uri attribute (an at: URI) over its text; not http(s): dropped",
    "feedparser-base-leak": "feedparser resolves the id against a leaked xml:base; kept, so stored identities keep",
}

KNOWN: dict[tuple[str, str], str] = {}  # (suite/fixture, field) -> reason


def _listed(reason: str, field_name: str, *fixtures: str) -> None:
    for fixture in fixtures:
        assert (fixture, field_name) not in KNOWN, f"listed twice: {fixture} {field_name}"
        KNOWN[(fixture, field_name)] = reason


_listed("empty-entry", "count",
      "gofeed/parser/atom/atom03_feed_entry_author_email",
      "gofeed/parser/atom/atom03_feed_entry_author_homepage",
      "gofeed/parser/atom/atom03_feed_entry_author_mixed_content",
      "gofeed/parser/atom/atom03_feed_entry_author_name",
      "gofeed/parser/atom/atom03_feed_entry_author_uri",
      "gofeed/parser/atom/atom03_feed_entry_author_url",
      "gofeed/parser/atom/atom03_feed_entry_contributor_email",
      "gofeed/parser/atom/atom03_feed_entry_contributor_homepage",
      "gofeed/parser/atom/atom03_feed_entry_contributor_mixed_content",
      "gofeed/parser/atom/atom03_feed_entry_contributor_multiple",
      "gofeed/parser/atom/atom03_feed_entry_contributor_name",
      "gofeed/parser/atom/atom03_feed_entry_contributor_uri",
      "gofeed/parser/atom/atom03_feed_entry_contributor_url",
      "gofeed/parser/atom/atom03_feed_entry_issued",
      "gofeed/parser/atom/atom03_feed_entry_link",
      "gofeed/parser/atom/atom03_feed_entry_link_rel",
      "gofeed/parser/atom/atom03_feed_entry_link_title",
      "gofeed/parser/atom/atom03_feed_entry_modified",
      "gofeed/parser/atom/atom03_feed_entry_updated",
      "gofeed/parser/atom/atom10_feed_entry_author_email",
      "gofeed/parser/atom/atom10_feed_entry_author_mixed_content",
      "gofeed/parser/atom/atom10_feed_entry_author_multiple",
      "gofeed/parser/atom/atom10_feed_entry_author_name",
      "gofeed/parser/atom/atom10_feed_entry_author_uri",
      "gofeed/parser/atom/atom10_feed_entry_author_url",
      "gofeed/parser/atom/atom10_feed_entry_category_label",
      "gofeed/parser/atom/atom10_feed_entry_category_scheme",
      "gofeed/parser/atom/atom10_feed_entry_category_term",
      "gofeed/parser/atom/atom10_feed_entry_content_src",
      "gofeed/parser/atom/atom10_feed_entry_contributor_email",
      "gofeed/parser/atom/atom10_feed_entry_contributor_mixed_content",
      "gofeed/parser/atom/atom10_feed_entry_contributor_multiple",
      "gofeed/parser/atom/atom10_feed_entry_contributor_name",
      "gofeed/parser/atom/atom10_feed_entry_contributor_uri",
      "gofeed/parser/atom/atom10_feed_entry_contributor_url",
      "gofeed/parser/atom/atom10_feed_entry_link_hreflang",
      "gofeed/parser/atom/atom10_feed_entry_link_length",
      "gofeed/parser/atom/atom10_feed_entry_link_rel",
      "gofeed/parser/atom/atom10_feed_entry_link_title",
      "gofeed/parser/atom/atom10_feed_entry_link_type",
      "gofeed/parser/atom/atom10_feed_entry_rights",
      "gofeed/parser/atom/atom10_feed_entry_rights_html_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_rights_text",
      "gofeed/parser/atom/atom10_feed_entry_rights_xhtml_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_rights_xhtml_inline_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_author_email",
      "gofeed/parser/atom/atom10_feed_entry_source_author_mixed_content",
      "gofeed/parser/atom/atom10_feed_entry_source_author_name",
      "gofeed/parser/atom/atom10_feed_entry_source_author_uri",
      "gofeed/parser/atom/atom10_feed_entry_source_author_url",
      "gofeed/parser/atom/atom10_feed_entry_source_authors_multiple",
      "gofeed/parser/atom/atom10_feed_entry_source_category_label",
      "gofeed/parser/atom/atom10_feed_entry_source_category_scheme",
      "gofeed/parser/atom/atom10_feed_entry_source_category_term",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_email",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_mixed_content",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_multiple",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_name",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_uri",
      "gofeed/parser/atom/atom10_feed_entry_source_contributor_url",
      "gofeed/parser/atom/atom10_feed_entry_source_generator",
      "gofeed/parser/atom/atom10_feed_entry_source_generator_uri",
      "gofeed/parser/atom/atom10_feed_entry_source_generator_version",
      "gofeed/parser/atom/atom10_feed_entry_source_icon",
      "gofeed/parser/atom/atom10_feed_entry_source_id",
      "gofeed/parser/atom/atom10_feed_entry_source_link_href",
      "gofeed/parser/atom/atom10_feed_entry_source_link_hreflang",
      "gofeed/parser/atom/atom10_feed_entry_source_link_length",
      "gofeed/parser/atom/atom10_feed_entry_source_link_multiple",
      "gofeed/parser/atom/atom10_feed_entry_source_link_rel",
      "gofeed/parser/atom/atom10_feed_entry_source_link_title",
      "gofeed/parser/atom/atom10_feed_entry_source_link_type",
      "gofeed/parser/atom/atom10_feed_entry_source_logo",
      "gofeed/parser/atom/atom10_feed_entry_source_mixed_content",
      "gofeed/parser/atom/atom10_feed_entry_source_rights",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_base64",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_base64_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_html_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_text",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_xhtml_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_rights_xhtml_inline_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_base64",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_base64_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_html_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_text",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_xhtml_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_subtitle_xhtml_inline_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_title",
      "gofeed/parser/atom/atom10_feed_entry_source_title_base64",
      "gofeed/parser/atom/atom10_feed_entry_source_title_base64_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_title_html_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_title_text",
      "gofeed/parser/atom/atom10_feed_entry_source_title_xhtml_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_source_title_xhtml_inline_markup",
      "gofeed/parser/atom/entry_contributor_uri_base",
      "gofeed/parser/atom/feed_entry_author_uri_base",
      "gofeed/parser/rss/issue_275_channel_item_extensions",
      "gofeed/parser/rss/rss_channel_item_author",
      "gofeed/parser/rss/rss_channel_item_author_cdata_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_author_cdata_naked_markup",
      "gofeed/parser/rss/rss_channel_item_author_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_author_naked_markup",
      "gofeed/parser/rss/rss_channel_item_category",
      "gofeed/parser/rss/rss_channel_item_category_cdata_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_category_cdata_naked_markup",
      "gofeed/parser/rss/rss_channel_item_category_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_category_naked_markup",
      "gofeed/parser/rss/rss_channel_item_comments",
      "gofeed/parser/rss/rss_channel_item_custom",
      "gofeed/parser/rss/rss_channel_item_guid_naked_markup",
      "gofeed/parser/rss/rss_channel_item_pubDate",
      "gofeed/parser/rss/rss_channel_item_source",
      "gofeed/translator/atom/feed_categories_-_atom_feed_categories",
      "gofeed/translator/atom/feed_item_author_email_-_atom03_feed_entry_author_email",
      "gofeed/translator/atom/feed_item_author_email_-_atom10_feed_entry_author_email",
      "gofeed/translator/atom/feed_item_author_name_-_atom03_feed_entry_author_name",
      "gofeed/translator/atom/feed_item_author_name_-_atom10_feed_entry_author_name",
      "gofeed/translator/atom/feed_item_category_-_atom10_feed_entry_category",
      "gofeed/translator/atom/feed_item_published_-_atom03_feed_entry_issued",
      "gofeed/translator/atom/feed_item_updated_-_atom03_feed_entry_modified",
      "gofeed/translator/rss/feed_item_author_-_rss_channel_item_author_email",
      "gofeed/translator/rss/feed_item_author_-_rss_channel_item_author_emailAndName",
      "gofeed/translator/rss/feed_item_author_-_rss_channel_item_author_name",
      "gofeed/translator/rss/feed_item_author_-_rss_channel_item_author_nameAndEmail",
      "gofeed/translator/rss/feed_item_category_-_rss_channel_item_category",
      "gofeed/translator/rss/feed_item_category_-_rss_channel_item_custom",
      "gofeed/translator/rss/feed_item_fallbacks_-_rss_channel_item_extensions",
      "gofeed/translator/rss/feed_item_published_-_rss_channel_item_pubDate",
      "rss-parser/incomplete-fields",
)
_listed("feedparser-base-leak", "guid",
      "rss-parser/reddit-home",
)
_listed("feedparser-lenient-loss", "count",
      "fastfeedparser/malformed_rss_namespaced",
)
_listed("feedparser-uri-attr", "link",
      "gofeed/parser/rss/rss_channel_item_uri_at_protocol",
)
_listed("fill-from-url", "title",
      "miniflux/atom10/TestParseEntryWithEmptyXHTMLTitle",
      "miniflux/atom03/TestParseAtom03WithoutEntryTitleButWithLink",
      "miniflux/atom10/TestParseEntryWithoutTitleButWithURL",
      "miniflux/json/TestParseItemWithMissingTitleUsesURLFallback",
      "miniflux/rss/TestParseEntryWithRelativeURL",
      "miniflux/rss/TestParseEntryWithoutTitleAndDescription",
)
_listed("fill-guid", "guid",
      "fastfeedparser/utf16_encoded",
      "feedjira/HuffPostCanada",
)
_listed("fill-link", "link",
      "miniflux/atom10/TestParseEntryWithIDAsURL",
      "miniflux/rdf/TestParseItemWithoutLink",
      "miniflux/rss/TestParseEntryWithoutLink",
      "miniflux/rss/TestParseEntryWithoutLinkAndWithEnclosureURLs",
)
_listed("jsonfeed-version", "error",
      "gofeed/parser/json/version_json_10",
      "gofeed/parser/json/version_json_11",
      "gofeed/parser/json/version_json_11_deprecated_author",
      "gofeed/parser/universal/json10_feed",
      "gofeed/parser/universal/json11_feed",
      "gofeed/parser/universal/sample",
      "gofeed/translator/json/json10_full",
      "gofeed/translator/json/json10_simple",
      "gofeed/translator/json/json11_full",
)
_listed("markup-kept", "title",
      "gofeed/parser/atom/atom03_feed_entry_title_base64_escaped_markup",
      "gofeed/parser/atom/atom03_feed_entry_title_html_escaped_markup",
      "gofeed/parser/atom/atom03_feed_entry_title_naked_markup",
      "gofeed/parser/atom/atom03_feed_entry_title_xhtml_escaped_markup",
      "gofeed/parser/atom/atom03_feed_entry_title_xhtml_inline_markup",
      "gofeed/parser/atom/atom10_feed_entry_title_base64",
      "gofeed/parser/atom/atom10_feed_entry_title_base64_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_title_html_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_title_xhtml_escaped_markup",
      "gofeed/parser/atom/atom10_feed_entry_title_xhtml_inline_markup",
      "gofeed/parser/atom/entry_summary_xml_base_inherit_3",
      "gofeed/parser/atom/entry_title_xml_base",
      "gofeed/parser/atom/entry_title_xml_base_inherit",
      "gofeed/parser/rss/rdf_item_title_cdata_escaped_markup",
      "gofeed/parser/rss/rdf_item_title_cdata_naked_markup",
      "gofeed/parser/rss/rdf_item_title_escaped_markup",
      "gofeed/parser/rss/rdf_item_title_naked_markup",
      "gofeed/parser/rss/rss_channel_item_title_cdata_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_title_cdata_naked_markup",
      "gofeed/parser/rss/rss_channel_item_title_escaped_markup",
      "gofeed/parser/rss/rss_channel_item_title_naked_markup",
      "miniflux/atom10/TestParseEntryWithHTMLTitle",
      "miniflux/atom10/TestParseEntryWithXHTMLTitle",
      "rss-parser/craigslist",
)
_listed("not-a-feed", "error",
      "gofeed/parser/rss/version_rdf_090",
      "miniflux/json/TestParseNullJSONFeed",
)
_listed("peer-charset", "title",
      "rss-parser/uolNoticias",
)
_listed("proxy-link", "link",
      "rss-parser/encoding",
      "rss-parser/feedburner",
      "rss-parser/many-links",
)
_listed("site-base", "link",
      "miniflux/atom10/TestParseEntryWithRelativeURL",
      "miniflux/rdf/TestParseItemRelativeURL",
)


# ---------------------------------------------------------------------------- records and outcomes


@dataclass(frozen=True)
class Record:
    suite: str
    name: str
    file: str
    base: str | None
    expect_error: bool
    count: int | None
    entries: tuple[dict, ...]

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True)
class Difference:
    fixture: str
    field: str
    mode: str
    entry: int | None
    expected: object
    got: object

    def __str__(self) -> str:
        where = f"[{self.entry}]" if self.entry is not None else ""
        return f"{self.fixture} {self.field}{where} ({self.mode}): expected {self.expected!r}, got {self.got!r}"


@dataclass
class Outcome:
    """What one record gave in one mode."""

    record: Record
    mode: str
    served_at: str | None
    feed: ParsedFeed | None = None
    error: str | None = None
    crash: str | None = None
    compared: Counter = field(default_factory=Counter)
    differences: list[Difference] = field(default_factory=list)


def records(suite: str) -> list[Record]:
    data = json.loads((PEERS / "expected" / f"{suite}.json").read_text(encoding="utf-8"))
    return [
        Record(suite, r["name"], r["file"], (r.get("base") or "").strip() or None, bool(r["expect_error"]),
               r["count"], tuple(r["entries"]))
        for r in data
    ]


def split(record: Record) -> str:
    """tune or check, fixed by a hash of the fixture (the peer-feeds folder has no split of its own)."""
    return "check" if hashlib.sha256(record.key.encode()).digest()[0] & 1 else "tune"


def _serve_only(server: Loopback, path: str, record: Record) -> None:
    """Answer ``path`` (query string included) with ``record``'s fixture, and nothing else (fixtures share base paths)."""
    server.routes.clear()
    server.respond(path, (PEERS / record.file).read_bytes(), headers={"Content-Type": _content_type(record.file)})


def _content_type(path: str) -> str:
    return "application/feed+json" if path.endswith(".json") else "application/xml"


def _served_url(record: Record, origin: str) -> tuple[str, str]:
    """(URL on the loopback server, origin it stands for): the base's path, or the fixture's own."""
    if record.base:
        parts = urlsplit(record.base)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return origin + path, f"{parts.scheme}://{parts.netloc}"
    return f"{origin}/{record.file}", origin


def _parse(result: FetchResult, outcome: Outcome) -> None:
    try:
        outcome.feed = parse(result)
    except ParseError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a traceback is what this records
        outcome.crash = f"{type(exc).__name__}: {exc}"


def run_file(record: Record) -> Outcome:
    """``record`` parsed as a local file source (its path is no base URL)."""
    path = str(PEERS / record.file)
    outcome = Outcome(record, "file", None)
    body = Path(path).read_bytes()
    _parse(FetchResult(url=path, final_url=path, status=200, body=body), outcome)
    return outcome


def run_http(record: Record, server: Loopback, fetcher: Fetcher) -> Outcome:
    """``record`` fetched over loopback HTTP at the path of its base URL, links mapped to the base's origin."""
    loopback = server.url("")
    url, origin = _served_url(record, loopback)
    parts = urlsplit(url)
    _serve_only(server, parts.path + (f"?{parts.query}" if parts.query else ""), record)
    outcome = Outcome(record, "http", origin + url[len(loopback):])
    result = fetcher.fetch_feed(SourceConfig(name=record.key, url=url), None)
    _parse(result, outcome)
    if outcome.feed is not None:
        outcome.feed = _mapped(outcome.feed, loopback, origin)
    return outcome


def _mapped(feed: ParsedFeed, loopback: str, origin: str) -> ParsedFeed:
    def back(url: str | None) -> str | None:
        return origin + url[len(loopback):] if url and url.startswith(loopback) else url

    entries = tuple(replace(e, url=back(e.url), enclosure_urls=tuple(back(u) or "" for u in e.enclosure_urls))
                    for e in feed.entries)
    return replace(feed, link=back(feed.link), entries=entries)


# ---------------------------------------------------------------------------- comparing


def norm_title(value: str | None) -> str:
    """A title as the README compares it: entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(value or "").split())


_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)\b[^<>]*>")


def as_text(value: str) -> str:
    """``value`` read as plain text the way a reader shows a title: known HTML tags removed
    (twice-escaped ones too), entities decoded. Used only for the title mismatch rate."""
    text = value
    for _ in range(3):
        text = html.unescape(_TAG.sub(lambda m: "" if m.group(1).lower() in defs.tags else m.group(0), text))
    return " ".join(text.split())


def _date(value) -> str | None:  # noqa: ANN001
    return value.replace(microsecond=0).isoformat() if value is not None else None


def _is_absolute(url: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url))


def compare(outcome: Outcome) -> None:
    """Fill ``outcome.differences`` and ``outcome.compared`` (per field)."""
    record, mode = outcome.record, outcome.mode

    def differ(name: str, entry: int | None, expected: object, got: object) -> None:
        outcome.differences.append(Difference(record.key, name, mode, entry, expected, got))

    outcome.compared["error"] += 1
    failed = outcome.feed is None
    if failed != record.expect_error:
        differ("error", None, record.expect_error, outcome.error or outcome.crash or "parsed")
    if failed:
        return
    entries = outcome.feed.entries
    if record.count is not None:
        outcome.compared["count"] += 1
        if record.count != len(entries):
            differ("count", None, record.count, len(entries))
    for expected in record.entries:
        index = expected["i"]
        got: Entry | None = entries[index] if index < len(entries) else None
        if got is None:
            continue  # the count difference says it
        if "title" in expected:
            outcome.compared["title"] += 1
            if norm_title(expected["title"]) != got.title:
                differ("title", index, norm_title(expected["title"]), got.title)
        # the peer parsed against a URL a local file does not have: its links compared over HTTP only
        if "link" in expected and (mode == "http" or record.base is None):
            outcome.compared["link"] += 1
            want = (expected["link"] or "").strip() or None
            if mode == "http":
                want = urljoin(outcome.served_at or "", want) if want else None
            else:  # no URL to resolve a relative link against: parse stores none
                want = want if want and _is_absolute(want) else None
            if want != got.url:
                differ("link", index, want, got.url)
        if "guid" in expected:
            outcome.compared["guid"] += 1
            want = (expected["guid"] or "").strip() or None
            if want != got.guid:
                differ("guid", index, want, got.guid)
        for name, value in (("published", got.published_at), ("updated", got.updated_at)):
            if name in expected:
                outcome.compared[name] += 1
                if expected[name] != _date(value):
                    differ(name, index, expected[name], _date(value))


@cache
def outcomes(suite: str) -> tuple[Outcome, ...]:
    """Every record of ``suite`` in both modes, compared (cached: the tests below share it)."""
    done: list[Outcome] = []
    fetcher = Fetcher(FetchConfig(per_host_delay=0, timeout=30))
    try:
        with Loopback() as server:
            for record in records(suite):
                for outcome in (run_file(record), run_http(record, server, fetcher)):
                    compare(outcome)
                    done.append(outcome)
    finally:
        fetcher.close()
    return tuple(done)


def every_outcome() -> list[Outcome]:
    return [o for suite in SUITES for o in outcomes(suite)]


# ---------------------------------------------------------------------------- the tests


@needs_peers
@pytest.mark.parametrize("suite", SUITES)
def test_suite_agrees_or_the_difference_is_listed(suite: str) -> None:
    found = [d for o in outcomes(suite) for d in o.differences]
    unlisted = [str(d) for d in found if (d.fixture, d.field) not in KNOWN]
    assert not unlisted, f"{len(unlisted)} differences not in KNOWN:\n" + "\n".join(unlisted[:60])
    seen = {(d.fixture, d.field) for d in found}
    stale = [f"{fixture} {name}" for (fixture, name) in KNOWN
             if fixture.startswith(f"{suite}/") and (fixture, name) not in seen]
    assert not stale, "KNOWN rows that no longer differ (remove them):\n" + "\n".join(stale)


@needs_peers
def test_no_traceback_and_nothing_lost_after_parsing() -> None:
    crashes = [f"{o.record.key} ({o.mode}): {o.crash}" for o in every_outcome() if o.crash]
    assert not crashes, crashes
    folded = []
    for o in every_outcome():
        if o.feed is None:
            continue
        # one identity for two entries is one item: right only when they repeat guid AND link
        # (or, with neither, are the same entry: the same hash)
        by_identity: dict[str, set] = defaultdict(set)
        for e in o.feed.entries:
            link = e.raw_link or e.url
            by_identity[e.identity].add((e.guid, link, None if (e.guid or link) else e.entry_hash))
        folded += [f"{o.record.key} ({o.mode}): {key!r}" for key, seen in by_identity.items() if len(seen) > 1]
    assert not folded, folded


_KNOWN_TAG = re.compile(r"</(%s)\s*>|<(%s)(\s+[\w:-]+\s*=|\s*/>)" % (("|".join(sorted(defs.tags)),) * 2), re.I)
_REFERENCE = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def has_markup(text: str) -> bool:
    """A closing or attributed HTML tag, or an entity reference that decodes: markup, not text."""
    decodes = any(html.unescape(m.group(0)) != m.group(0) for m in _REFERENCE.finditer(text))
    return decodes or bool(_KNOWN_TAG.search(text))


@needs_peers
def test_titles_and_authors_are_plain_text() -> None:
    marked = [
        f"{o.record.key} ({o.mode}): {text!r}"
        for o in every_outcome() if o.feed is not None
        for e in o.feed.entries for text in (e.title, e.author or "") if has_markup(text)
    ]
    assert not marked, marked[:40]


@needs_peers
def test_no_relative_link_when_the_feed_has_a_url() -> None:
    relative = [
        f"{o.record.key}: {url!r}"
        for o in every_outcome() if o.mode == "http" and o.feed is not None
        for e in o.feed.entries for url in (e.url, *e.enclosure_urls) if url and not re.match(r"https?://[^/]", url)
    ]
    assert not relative, relative[:40]
    # and a local file's relative links are not stored as if absolute
    as_file = [
        f"{o.record.key}: {e.url!r}"
        for o in every_outcome() if o.mode == "file" and o.feed is not None
        for e in o.feed.entries if e.url and not re.match(r"https?://[^/]", e.url)
    ]
    assert not as_file, as_file[:40]


def title_rate(chosen: list[Outcome], read=as_text, lost_too: bool = False) -> tuple[int, int]:  # noqa: ANN001
    """(mismatches, compared) of titles, both sides read by ``read``; expectations the peer
    lost characters of (U+FFFD) left out unless ``lost_too``. The bar of issue 16 (at most
    1 %) is on titles read as plain text; ``read=norm_title, lost_too=True`` is the measure
    the issue quoted for the code before (2.4 %)."""
    mismatches = compared = 0
    for o in chosen:
        if o.feed is None:
            continue
        for expected in o.record.entries:
            if "title" not in expected or expected["i"] >= len(o.feed.entries):
                continue
            if "\ufffd" in expected["title"] and not lost_too:
                continue
            compared += 1
            mismatches += read(expected["title"]) != read(o.feed.entries[expected["i"]].title)
    return mismatches, compared


@needs_peers
def test_title_mismatches_at_most_one_percent() -> None:
    mismatches, compared = title_rate(every_outcome())
    assert compared > 1000
    assert mismatches <= 0.01 * compared, f"{mismatches} of {compared} titles differ"


# 30-40 s: the acceptance run of issue 16 (--once over every fixture), so not slow
@needs_peers
def test_ingest_once_over_every_fixture_stores_plain_titles_absolute_links_and_every_entry(tmp_path: Path) -> None:
    """The acceptance run: ``ingest --once`` over all fixtures served from loopback into SQLite."""
    chosen = [r for suite in SUITES for r in records(suite)]
    with Loopback() as server:
        for r in chosen:
            server.respond(f"/{r.file}", (PEERS / r.file).read_bytes(), headers={"Content-Type": _content_type(r.file)})
        config = write_config_file(tmp_path, store_url=f"sqlite:///{tmp_path / 'store.db'}",
                                   fetch={"per_host_delay": 0, "per_host_concurrency": 8},
                                   sources=[{"name": r.key, "url": server.url(f"/{r.file}")} for r in chosen])
        done = subprocess.run([sys.executable, "-m", "ingest", "--once", "-c", str(config)],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "store.db") as db:
        rows = db.execute(
            "SELECT s.name, i.title, i.author, i.url FROM items i JOIN sources s ON s.id = i.source_id"
        ).fetchall()
    assert not [(n, t) for n, t, a, _ in rows if has_markup(t) or has_markup(a or "")]
    assert not [(n, u) for n, _, _, u in rows if u is not None and not re.match(r"https?://[^/]", u)]
    stored = Counter(n for n, *_ in rows)
    parsed = {o.record.key: len({e.identity for e in o.feed.entries}) for o in every_outcome()
              if o.mode == "http" and o.feed is not None}
    lost = {name: (count, stored.get(name, 0)) for name, count in parsed.items() if stored.get(name, 0) != count}
    assert not lost, f"parsed entries not stored (parsed, stored): {lost}"


# ---------------------------------------------------------------------------- the docs hold the same table

_DOC_ROW = re.compile(r"^\| `([^`]+)` \| (\w+) \| ([\w-]+) \|$")


def test_docs_list_every_known_difference_once() -> None:
    rows = [m.groups() for m in map(_DOC_ROW.match, DOCS.read_text(encoding="utf-8").splitlines()) if m]
    assert len(rows) == len(set((f, n) for f, n, _ in rows)), "a row is listed twice in docs/peer-feeds.md"
    assert {(f, n): r for f, n, r in rows} == KNOWN
    text = DOCS.read_text(encoding="utf-8")
    assert all(f"`{reason}`" in text for reason in REASONS)
    assert set(KNOWN.values()) <= set(REASONS)


def figures() -> dict:
    """The figures docs/peer-feeds.md quotes (``python -m tests.test_peer_feeds``)."""
    chosen = every_outcome()
    table = {}
    for part in ("all", "tune", "check"):
        sel = [o for o in chosen if part == "all" or split(o.record) == part]
        for mode in MODES:
            picked = [o for o in sel if o.mode == mode]
            compared: Counter = sum((o.compared for o in picked), Counter())
            differ = Counter(d.field for o in picked for d in o.differences)
            row = {name: (differ[name], compared[name]) for name in FIELDS}
            row["title_as_text"] = title_rate(picked)
            row["title_decoded_both"] = title_rate(picked, norm_title, lost_too=True)
            row["fixtures"] = len(picked)
            row["entries_compared"] = sum(len(o.record.entries) for o in picked if o.feed is not None)
            reasons = Counter(KNOWN.get((d.fixture, d.field), "unlisted") for o in picked for d in o.differences)
            row["by_reason"] = dict(reasons)
            table[f"{part}/{mode}"] = row
    return table


if __name__ == "__main__":
    json.dump(figures(), sys.stdout, indent=1)
    print()
