"""parse(): every fixture in fixtures/feeds/parse/ states what it tests and what to expect.

The header comment holds ``expect: key=value; ...`` with keys:
url (the URL the body is served from; none: read as a local file), entries (count),
error (substring of the ParseError), warning (substring of a warning), absent (text that
must appear in no entry field), and per-entry ``<field><index>`` checks: title0, content0
(substring), guid0, published0 (ISO 8601), kind0, link0 (``none``: no link), author0,
identity0, enclosure0 (the first enclosure URL).

Also: JSON Feed 1.0/1.1 (the same entry fields as RSS, ingested like an RSS source,
bad JSON a one-line error), plain-text titles, JSON Feed links and identities, and
feedparser's own test corpus when INGEST_FEEDPARSER_TESTS names it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingest.errors import ParseError
from ingest.models import FetchResult, ItemRow
from ingest.parse import parse, plain_text
from ingest.store import Store

from .conftest import FIXTURES, ingest_once, run_cli, write_config_file
from .loopback import Item, Loopback, rss

CASES = sorted((FIXTURES / "feeds" / "parse").iterdir())
_EXPECT = re.compile(rb"expect:\s*(.*?)\s*-->", re.S)


def _expectations(body: bytes) -> dict[str, str]:
    match = _EXPECT.search(body)
    assert match, "fixture lacks an 'expect:' header comment"
    text = match.group(1).decode("latin-1" if b"iso-8859-1" in body[:100] else "utf-8")
    pairs = [p.strip() for p in text.split(";") if p.strip()]
    return dict(p.split("=", 1) for p in pairs)


def _result(body: bytes, url: str = "fixtures/feeds/parse/x.xml") -> FetchResult:
    """``body`` as fetched from ``url`` (by default a local file's path: no base URL)."""
    return FetchResult(url=url, final_url=url, status=200, body=body)


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_fixture(path: Path):
    body = path.read_bytes()
    expect = _expectations(body)
    if "error" in expect:
        with pytest.raises(ParseError, match=re.escape(expect["error"])):
            parse(_result(body))
        return
    feed = parse(_result(body, expect.get("url", "fixtures/feeds/parse/x.xml")))
    assert len(feed.entries) == int(expect["entries"])
    if "warning" in expect:
        assert any(expect["warning"] in w for w in feed.warnings), feed.warnings
    if "absent" in expect:
        for entry in feed.entries:
            fields = " ".join(str(v) for v in entry.__dict__.values())
            assert expect["absent"] not in fields
    for key, value in expect.items():
        field_match = re.fullmatch(r"(title|content|guid|published|kind|link|author|identity|enclosure)(\d+)", key)
        if not field_match:
            continue
        entry = feed.entries[int(field_match.group(2))]
        name = field_match.group(1)
        if name == "content":
            assert value in entry.content_html
        elif name == "published":
            assert entry.published_at is not None and entry.published_at.isoformat() == value
        else:
            got = {"title": entry.title, "guid": entry.guid, "kind": entry.content_kind, "link": entry.url,
                   "author": entry.author, "identity": entry.identity,
                   "enclosure": entry.enclosure_urls[0] if entry.enclosure_urls else None}[name]
            assert got == (None if value == "none" else value), key


def test_ttl_is_read_in_seconds():
    feed = parse(_result((FIXTURES / "feeds" / "parse" / "rss2-content-encoded.xml").read_bytes()))
    assert feed.ttl == 3600


def test_entry_hash_changes_with_content_and_identity_falls_back():
    base = (FIXTURES / "feeds" / "parse" / "rss2-content-encoded.xml").read_bytes()
    first = parse(_result(base)).entries[0]
    edited = parse(_result(base.replace(b"two metres", b"three metres"))).entries[0]
    assert first.identity == edited.identity == "tav-001"
    assert first.entry_hash != edited.entry_hash
    no_guid = parse(_result(base)).entries[1]
    assert no_guid.identity == "https://tavera.example/second"


@pytest.mark.parametrize("body", [b"", b"   \n", b"\x00\x01\x02garbage", b"<rss><channel><item>"])
def test_garbage_is_a_parse_error_or_empty_feed(body: bytes):
    try:
        feed = parse(_result(body))
    except ParseError as exc:
        assert str(exc).startswith("parse: ")
    else:
        assert feed.entries == ()


def test_entity_bomb_parses_fast():
    import time

    started = time.perf_counter()
    parse(_result((FIXTURES / "feeds" / "parse" / "entity-bomb.xml").read_bytes()))
    assert time.perf_counter() - started < 5  # an expanded bomb would take minutes and gigabytes


# ---------------------------------------------------------------------------- JSON Feed 1.0/1.1
# JSON Feed is detected by content and mapped to the same entries as RSS/Atom.

PUBLISHED = datetime(2025, 9, 16, 18, 35, tzinfo=timezone.utc)
PARAGRAPHS = [
    "Orrin unveiled the Lumen 7 on Tuesday, betting on a battery it says lasts two full days.",
    "The phone runs its assistant on the device, so questions never leave it, the company said at its launch.",
    "Analysts said the pitch could win over buyers tired of charging every night, if the claims hold up in use.",
]
HTML = "".join(f"<p>{p}</p>" for p in PARAGRAPHS)


def _jsonfeed(version: str = "1.1", **item: object) -> bytes:
    entry = {
        "id": "https://wire.example/lumen-7",
        "url": "https://wire.example/lumen-7",
        "title": "Orrin bets on a two-day battery",
        "content_html": HTML,
        "date_published": "2025-09-16T20:35:00+02:00",
        "date_modified": "2025-09-16T21:00:00Z",
        "tags": ["phones"],
        "language": "en-GB",
    }
    if version == "1.1":
        entry["authors"] = [{"name": "Ada Reporter"}]
    else:
        entry["author"] = {"name": "Ada Reporter"}
    entry.update(item)
    # the 1.0 spec's version string is ".../version/1"
    doc = {"version": f"https://jsonfeed.org/version/{version.removesuffix('.0')}", "title": "Wire", "items": [entry]}
    return json.dumps(doc).encode("utf-8")


def _rss() -> bytes:
    """The story of ``_jsonfeed()`` as RSS 2.0."""
    return rss([Item(guid="https://wire.example/lumen-7", link="https://wire.example/lumen-7",
                     title="Orrin bets on a two-day battery", published=PUBLISHED, author="Ada Reporter", text=HTML)],
               title="Wire", link="https://wire.example/")


def _json_result(body: bytes, content_type: str | None = "application/feed+json") -> FetchResult:
    return FetchResult(url="https://wire.example/feed.json", final_url="https://wire.example/feed.json", status=200,
                       body=body, content_type=content_type)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_jsonfeed_maps_to_the_same_entry_fields_as_rss(version: str) -> None:
    [json_entry] = parse(_json_result(_jsonfeed(version), content_type="text/plain")).entries  # detected by content
    [rss_entry] = parse(_json_result(_rss(), content_type="application/rss+xml")).entries
    for field in ("guid", "url", "title", "author", "published_at"):
        assert getattr(json_entry, field) == getattr(rss_entry, field), field
    assert json_entry.content_html == HTML and json_entry.content_kind == "content"
    assert json_entry.updated_at == datetime(2025, 9, 16, 21, 0, tzinfo=timezone.utc)
    assert json_entry.tags == ("phones",) and json_entry.language == "en-GB"


def test_content_text_summary_numeric_ids_and_feed_level_authors() -> None:
    doc = json.loads(_jsonfeed())
    doc["authors"] = [{"name": "Desk"}]
    doc["items"] = [
        {"id": 42, "content_text": "First <para> & more.\n\nSecond para."},
        {"id": "s", "summary": "Only a summary", "external_url": "https://other.example/x", "authors": [{"url": "https://a"}]},
        {"id": "", "title": "no body"},
        "not an object",
    ]
    feed = parse(_json_result(json.dumps(doc).encode()))
    first, second, third = feed.entries
    assert first.guid == "42" and first.author == "Desk"
    assert first.content_html == "<p>First &lt;para&gt; &amp; more.</p><p>Second para.</p>"
    assert second.content_kind == "summary" and second.url == "https://other.example/x"
    assert third.guid is None and third.identity.startswith("hash:") and third.content_kind == "none"
    assert feed.warnings == ("item 3 is not an object: skipped",)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "parse: invalid JSON"),
        (b'{"version": "https://example.org/not-a-feed", "items": []}', "not a JSON Feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', "without an 'items' array"),
        (b"[1, 2]", "not a JSON Feed"),
        (b"{" * 100_000, "parse: invalid JSON"),
    ],
)
def test_bad_json_is_a_one_line_parse_error(body: bytes, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(_json_result(body))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _stored(tmp_path: Path) -> dict[str, ItemRow]:
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        return {item.source: item for item in store.items()}


def test_a_jsonfeed_source_is_ingested_like_an_rss_one(tmp_path: Path, server: Loopback, write_config) -> None:
    server.respond("/feed.json", _jsonfeed(), headers={"Content-Type": "application/feed+json"})
    server.respond("/feed.xml", _rss(), headers={"Content-Type": "application/rss+xml"})
    local = tmp_path / "local.json"
    local.write_bytes(_jsonfeed("1.0"))
    config = write_config(store_url=f"sqlite:///{tmp_path / 'store.db'}", sources={
        "json-http": server.url("/feed.json"), "json-file": local, "rss-http": server.url("/feed.xml")})
    report = ingest_once(config)
    assert not report.failed, report.failed
    items = _stored(tmp_path)
    from_rss = items["rss-http"]
    for name in ("json-http", "json-file"):
        item = items[name]
        for field in ("guid", "url", "title", "author", "published_at", "text"):
            assert getattr(item, field) == getattr(from_rss, field), (name, field)
        assert item.published_at == PUBLISHED
        assert item.text == "\n\n".join(PARAGRAPHS)
    # three copies of one story: one cluster
    assert len({item.cluster_id for item in items.values()}) == 1


def test_a_malformed_jsonfeed_source_fails_alone_in_one_line(tmp_path: Path, server: Loopback, write_config) -> None:
    server.respond("/bad.json", b'{"version": "https://jsonfeed.org/version/1.1", "items": [}',
                   headers={"Content-Type": "application/feed+json"})
    server.respond("/good.json", _jsonfeed(), headers={"Content-Type": "application/feed+json"})
    config = write_config(store_url=f"sqlite:///{tmp_path / 'store.db'}",
                          sources={"bad": server.url("/bad.json"), "good": server.url("/good.json")})
    done = run_cli("--once", "-c", str(config))
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ingest: source")]
    assert errors == [errors[0]] and errors[0].startswith("ingest: source 'bad': parse: invalid JSON")
    assert "Traceback" not in done.stderr
    assert set(_stored(tmp_path)) == {"good"}


def test_doctype_behind_a_long_comment_is_still_removed():
    body = (FIXTURES / "feeds" / "parse" / "entity-bomb.xml").read_bytes()
    padded = body.replace(b"<!DOCTYPE", b"<!--" + b"x" * 70_000 + b"-->\n<!DOCTYPE", 1)
    feed = parse(_result(padded))
    assert all("lollollol" not in e.title for e in feed.entries)
    assert any("DOCTYPE removed" in w for w in feed.warnings)


# ---------------------------------------------------------------------------- plain-text titles


@pytest.mark.parametrize("value, is_html, expected", [
    ("Tide: <b>high</b> at noon", True, "Tide: high at noon"),
    ("<p>One</p><p>two</p>", True, "One two"),  # block tags part words, inline ones do not
    ("fo<b>o</b>d", True, "food"),
    ("The &amp;ldquo;Harbour&amp;rdquo; Inn", True, "The “Harbour” Inn"),  # escaped twice
    ("&lt;b&gt;bold&lt;/b&gt; move", True, "bold move"),  # markup escaped inside HTML
    ("Names the &lt;widget&gt; element", True, "Names the <widget> element"),  # an unknown element named in text
    ("a <!-- note --> b<script>x()</script>", True, "a b"),
    ("AT&T and a < b", False, "AT&T and a < b"),  # plain text that is not HTML stays
    ("Why the <dialog> element", False, "Why the <dialog> element"),  # no closing tag, no entity: text
    ("Fish &amp; chips", False, "Fish & chips"),  # an entity in plain text: escaped once too often
    ("&copy2024 and &bogus; ref", False, "&copy2024 and &bogus; ref"),  # not a complete known reference
    ("</note> tags", False, "</note> tags"),  # not an HTML element
    ("  line\n  break\t\xa0end ", False, "line break end"),
    ("ab\x08cd", False, "abcd"),  # C0 control characters are never text
    ("", True, ""),
    (None, False, ""),
])
def test_plain_text(value, is_html, expected) -> None:
    assert plain_text(value, is_html) == expected


# ---------------------------------------------------------------------------- JSON Feed links and identities


def _json_doc(items: list[dict], **feed: object) -> bytes:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "Wire", **feed, "items": items}).encode()


@pytest.mark.parametrize("feed, fetched_from, expected", [
    ({"home_page_url": "https://wire.example/news/"}, "https://cdn.example/feed.json", "https://wire.example/news/a.html"),
    ({"home_page_url": "/news/"}, "https://wire.example/feeds/feed.json", "https://wire.example/news/a.html"),
    ({"feed_url": "https://wire.example/feeds/feed.json"}, None, "https://wire.example/feeds/a.html"),
    ({}, "https://wire.example/feeds/feed.json", "https://wire.example/feeds/a.html"),
    ({}, None, None),  # a local file without a home page: nothing to resolve against
])
def test_jsonfeed_relative_urls_resolve_against_the_home_page_then_the_feed_url(feed, fetched_from, expected) -> None:
    body = _json_doc([{"id": "1", "url": "a.html", "content_text": "x"}], **feed)
    [entry] = parse(_result(body) if fetched_from is None else _result(body, fetched_from)).entries
    assert entry.url == expected
    assert entry.raw_link == "a.html" and entry.identity == "1"


def test_jsonfeed_plain_titles_attachments_and_untitled_items() -> None:
    body = _json_doc([
        {"id": "1", "title": "Fares &amp; tolls", "authors": [{"name": "Mara &lt;b&gt;Quill&lt;/b&gt;"}], "url": "mailto:x@wire.example"},
        {"attachments": [{"url": "/audio/ep1.mp3", "mime_type": "audio/mpeg"}]},
        {"id": "3", "summary": "No title given, the summary stands in"},
    ], home_page_url="https://wire.example/")
    feed = parse(_json_result(body))
    first, podcast, untitled = feed.entries
    assert first.title == "Fares & tolls" and first.author == "Mara Quill" and first.url is None
    assert podcast.enclosure_urls == ("https://wire.example/audio/ep1.mp3",)
    assert podcast.identity == "https://wire.example/audio/ep1.mp3"
    assert untitled.title == "No title given, the summary stands in"
    assert feed.warnings == ("1 links not http(s) (mailto:, at: ...): not stored",)


def test_identity_stays_what_it_was_for_feeds_without_the_new_cases() -> None:
    """guid, else the link as the feed wrote it, else the hash: what stores hold already."""
    base = (FIXTURES / "feeds" / "parse" / "rss2-content-encoded.xml").read_bytes()
    local, served = parse(_result(base)).entries, parse(_result(base, "https://tavera.example/feed.xml")).entries
    assert [e.identity for e in local] == [e.identity for e in served] == ["tav-001", "https://tavera.example/second"]
    assert [e.entry_hash for e in local] == [e.entry_hash for e in served]  # absolute links: nothing re-processed


# ---------------------------------------------------------------------------- feedparser's own test corpus (opt-in)
# Not in the repository: point INGEST_FEEDPARSER_TESTS at the tests/ folder of feedparser's
# sdist (``pip download --no-binary :all: --no-deps feedparser==6.0.11``, unpacked).

FEEDPARSER_TESTS = os.environ.get("INGEST_FEEDPARSER_TESTS")


def _has_something(entry: dict) -> bool:
    """feedparser's entry carries an id, its own link (alternate) or an enclosure, a title or
    text: something to store (a lone self/related/via/license link is not the entry's article)."""
    links = [x for x in entry.get("links") or [] if x.get("rel") in ("alternate", "enclosure")]
    texts = [c.get("value") for c in entry.get("content") or []] + [entry.get("summary"), entry.get("title")]
    return bool(entry.get("id") or entry.get("link") or any(x.get("href") for x in links)
                or any(t and t.strip() for t in texts))


@pytest.mark.skipif(not FEEDPARSER_TESTS, reason="INGEST_FEEDPARSER_TESTS (feedparser's tests/ folder) not set")
def test_feedparser_corpus_parses_without_a_crash_and_keeps_its_entries(tmp_path: Path) -> None:
    import feedparser

    root = Path(FEEDPARSER_TESTS or "")
    files = sorted(f for d in ("encoding", "entities", "illformed", "wellformed") for f in (root / d).rglob("*")
                   if f.is_file())
    assert len(files) > 2000, f"{root} does not look like feedparser's tests/ folder"
    total = substantial = kept = failed = 0
    crashes, identities = [], {}
    for path in files:
        body = path.read_bytes()
        raw = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False).entries
        total += len(raw)
        substantial += sum(1 for e in raw if _has_something(e))
        try:
            entries = parse(_result(body, str(path))).entries
        except ParseError:
            failed += 1
            continue
        except Exception as exc:  # noqa: BLE001 - a traceback is what this looks for
            crashes.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
            continue
        kept += len(entries)
        identities[str(path.relative_to(root))] = len({e.identity for e in entries})
    print(f"\nfeedparser corpus: {len(files)} files, {total} entries as feedparser reads them, {substantial} with "
          f"something to store; parse kept {kept}, {failed} files are parse errors, {len(crashes)} crashes")
    assert not crashes, crashes[:20]
    assert kept >= substantial - 5
    # and ingest --once stores every one of them (local file sources, SQLite)
    config = write_config_file(tmp_path, store_url=f"sqlite:///{tmp_path / 'store.db'}",
                               sources={name: root / name for name in identities})
    done = run_cli("--once", "-c", str(config), timeout=1800)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "store.db") as db:
        stored = dict(db.execute("SELECT s.name, COUNT(*) FROM items i JOIN sources s ON s.id = i.source_id GROUP BY s.name"))
    print(f"stored {sum(stored.values())} items of {sum(identities.values())} distinct parsed entries")
    assert {n: c for n, c in identities.items() if c} == stored


@pytest.mark.parametrize("authors", ["true", '"Jane"', "{}", "[]", "[1, null]", '{"name": "Jane"}'])
def test_json_feed_authors_of_the_wrong_shape_are_no_authors(authors: str) -> None:
    """Found by the property tests: ``"authors": true`` raised a TypeError out of parse;
    a feed-level author still applies when the item's authors are unusable."""
    body = ('{"version": "https://jsonfeed.org/version/1.1", "authors": [{"name": "Desk"}], "items": ['
            f'{{"id": "1", "url": "https://example.com/1", "content_text": "Text.", "authors": {authors}}}]}}').encode()
    (entry,) = parse(_result(body, "https://example.com/feed.json")).entries
    assert entry.author == "Desk"
