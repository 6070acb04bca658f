"""Deduplicated output: `ingest export` as Atom 1.0, JSON Feed 1.1, JSON Lines and CSV."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import feedparser
import jsonschema
import pytest
from lxml import etree

from .conftest import FIXTURES, ingest_once, run_cli, write_demo_config
from .loopback import Item, rss
from ingest.config import load
from ingest.export import FeedInfo, content_html, to_atom, to_jsonfeed
from ingest.models import ClusterRow, Copy, Story
from ingest.store import Store

ATOM = "{http://www.w3.org/2005/Atom}"
SCHEMA = json.loads((FIXTURES / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))


def _store(config_path: Path) -> Store:
    return Store.open(load(config_path).store.url)


def _clusters(config_path: Path) -> list[ClusterRow]:
    with _store(config_path) as store:
        return store.clusters()


def _export(config_path: Path, *args: str) -> str:
    done = run_cli("export", "-c", str(config_path), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_atom_export_of_demo_parses_without_bozo_one_entry_per_cluster(demo_config: Path) -> None:
    clusters = _clusters(demo_config)
    body = _export(demo_config, "--format", "atom")
    parsed = feedparser.parse(body.encode("utf-8"))
    assert parsed.bozo is False or parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert len(parsed.entries) == len(clusters)
    assert len({e.id for e in parsed.entries}) == len(clusters)
    # every entry lists the other copies of its cluster as related links
    size_by_title = {}
    for cluster in clusters:
        canonical = next(m for m in cluster.members if m.item_id == cluster.canonical_item_id)
        size_by_title[(canonical.source, canonical.title)] = len(cluster.members)
    for entry in parsed.entries:
        related = [link for link in entry.links if link.rel == "related"]
        assert len(related) == size_by_title[(entry.author, entry.title)] - 1


def test_atom_export_has_the_elements_rfc4287_requires(demo_config: Path) -> None:
    root = etree.fromstring(_export(demo_config, "--format", "atom").encode("utf-8"))
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated"):
        assert len(root.findall(f"{ATOM}{name}")) == 1, name  # 4.1.1: exactly one each
    entries = root.findall(f"{ATOM}entry")
    assert entries
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert len(entry.findall(f"{ATOM}{name}")) == 1, name  # 4.1.2
        assert entry.find(f"{ATOM}author/{ATOM}name").text  # no feed-level author: each entry has one
        content = entry.find(f"{ATOM}content")
        assert content.get("type") == "html"
        assert content.text.startswith("<p>")
        alternates = [link for link in entry.findall(f"{ATOM}link") if link.get("rel") == "alternate"]
        assert len(alternates) <= 1
        datetime.fromisoformat(entry.find(f"{ATOM}updated").text.replace("Z", "+00:00"))  # RFC 3339


def test_jsonfeed_export_validates_against_the_1_1_schema(demo_config: Path) -> None:
    clusters = _clusters(demo_config)
    doc = json.loads(_export(demo_config, "--format", "jsonfeed"))
    jsonschema.validate(doc, SCHEMA)
    assert len(doc["items"]) == len(clusters)
    assert len({item["id"] for item in doc["items"]}) == len(clusters)
    for item in doc["items"]:
        assert item["content_html"].startswith("<p>") and item["content_text"]
        assert len(item["_ingest"]["also_published_by"]) == next(
            len(c.members) - 1 for c in clusters if c.cluster_id == item["_ingest"]["cluster"]
        )


def test_schema_fixture_rejects_what_json_feed_1_1_forbids() -> None:
    good = {"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [{"id": "1", "content_text": "x"}]}
    jsonschema.validate(good, SCHEMA)
    bad_cases = [
        {k: v for k, v in good.items() if k != "title"},  # title is required
        {**good, "version": "1.1"},
        {**good, "items": [{"content_text": "x"}]},  # item id is required
        {**good, "items": [{"id": "1"}]},  # content_html or content_text is required
        {**good, "items": [{"id": "1", "content_text": "x", "authors": [{}]}]},  # an author needs name, url or avatar
    ]
    for bad in bad_cases:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_jsonl_and_csv_carry_one_record_per_cluster(demo_config: Path, tmp_path: Path) -> None:
    clusters = _clusters(demo_config)
    lines = _export(demo_config, "--format", "jsonl").splitlines()
    assert len(lines) == len(clusters)
    assert {json.loads(line)["cluster"] for line in lines} == {c.cluster_id for c in clusters}
    out = tmp_path / "stories.csv"
    assert _export(demo_config, "--format", "csv", "-o", str(out)) == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == len(clusters)
    assert sum(int(r["copies"]) for r in rows) == sum(len(c.members) - 1 for c in clusters)


def test_since_source_and_limit_select_clusters(demo_config: Path) -> None:
    clusters = _clusters(demo_config)

    def count(*args: str) -> int:
        return len(_export(demo_config, "--format", "jsonl", *args).splitlines())

    assert count("--limit", "3") == 3
    assert count("--since", "2000-01-01") == len(clusters)
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert count("--since", tomorrow) == 0
    assert count("--since", "1h") == len(clusters)  # ingested just now
    with_digest = [c for c in clusters if any(m.source == "rssdigest" for m in c.members)]
    assert 0 < len(with_digest) < len(clusters)
    assert count("--source", "rssdigest") == len(with_digest)


def test_entry_id_survives_a_change_of_canonical_and_updated_moves(
    demo_config: Path, store_url: str, tmp_path: Path,
) -> None:
    """A copy published earlier than the canonical takes over; the story keeps its entry id."""
    with _store(demo_config) as store:
        story = next(s for s in store.stories() if s.published_at and s.copies)
    before = {e["id"]: e for e in json.loads(_export(demo_config, "--format", "jsonfeed"))["items"]}
    earlier = story.published_at - timedelta(days=1)
    paragraphs = "".join(f"<p>{p}</p>" for p in story.text.split("\n\n"))
    feed = tmp_path / "early-bird.xml"
    feed.write_bytes(rss([Item(guid="https://early.example/story", link="https://early.example/story",
                               title=story.title, published=earlier, text=paragraphs)],
                         title="early", link="https://early.example/"))
    write_demo_config(demo_config.parent, store_url, extra_sources=[{"name": "early-bird", "url": feed}])
    assert not ingest_once(demo_config).failed
    after = {e["id"]: e for e in json.loads(_export(demo_config, "--format", "jsonfeed"))["items"]}
    assert set(after) == set(before)
    entry_id = f"urn:uuid:{story.uid}"
    assert before[entry_id]["_ingest"]["source"] == story.source
    assert after[entry_id]["_ingest"]["source"] == "early-bird"
    assert after[entry_id]["url"] == "https://early.example/story"
    assert after[entry_id]["date_modified"] >= before[entry_id]["date_modified"]  # whole seconds
    with _store(demo_config) as store:
        assert next(s for s in store.stories() if s.uid == story.uid).updated_at > story.updated_at
    unchanged = [k for k in before if k != entry_id]
    assert all(after[k]["date_modified"] == before[k]["date_modified"] for k in unchanged)


def _story(text: str, title: str = "A title", copies: tuple[Copy, ...] = ()) -> Story:
    now = datetime(2025, 9, 16, 18, 35, tzinfo=timezone.utc)
    return Story(
        cluster_id=1, uid="0b7f7c1e-5b8e-4c3e-9a51-0d2f0f9d1c11", created_at=now, updated_at=now, item_id=1,
        source="wire", title=title, url="https://wire.example/a", author=None, language="en", published_at=now,
        text=text, copies=copies,
    )


def test_text_is_escaped_into_paragraphs_and_copies_listed() -> None:
    copy = Copy(2, "mirror & co", "https://mirror.example/a?x=1&y=2", "<b>Bold</b> title", None)
    html = content_html(_story("One <script>alert(1)</script> & two.\n\nSecond  paragraph.", copies=(copy,)))
    assert html.startswith("<p>One &lt;script&gt;alert(1)&lt;/script&gt; &amp; two.</p>\n<p>Second paragraph.</p>")
    assert '<a href="https://mirror.example/a?x=1&amp;y=2">mirror &amp; co</a>: &lt;b&gt;Bold&lt;/b&gt; title' in html
    assert "<script>" not in html


def test_control_characters_do_not_break_the_xml() -> None:
    info = FeedInfo(id="urn:uuid:1", title="t", updated=datetime(2025, 1, 1, tzinfo=timezone.utc))
    body = to_atom([_story("bell \x07 and form feed \x0c here", title="tab\tok \x01")], info)
    parsed = feedparser.parse(body.encode("utf-8"))
    assert not parsed.bozo
    assert parsed.entries[0].title == "tab\tok"
    jsonschema.validate(json.loads(to_jsonfeed([_story("x")], info)), SCHEMA)


def test_empty_store_exports_a_valid_empty_feed(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = write_config(store_url=f"sqlite:///{tmp_path / 'empty.db'}")
    parsed = feedparser.parse(_export(config, "--format", "atom").encode("utf-8"))
    assert not parsed.bozo and parsed.entries == []
    jsonschema.validate(json.loads(_export(config, "--format", "jsonfeed")), SCHEMA)


# ---------------------------------------------------------------------------- served by the daemon


def _get(url: str, etag: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:  # urllib reports 304 as an error
        return exc.code, dict(exc.headers), exc.read()


def test_daemon_serves_the_latest_clusters_with_etag_and_conditional_get(demo_config: Path, store_url: str) -> None:
    from ingest.pipeline import canonical_policy
    from ingest.daemon import Daemon
    from ingest.server import Server

    config = load(write_demo_config(demo_config.parent, store_url, daemon={"feed_size": 4}))
    with Store.open(config.store.url) as store:
        server = Server(Daemon(config, store), ("127.0.0.1", 0))
        server.start()
        base = f"http://127.0.0.1:{server.address[1]}"
        try:
            latest = [f"urn:uuid:{s.uid}" for s in store.stories(limit=4)]
            status, headers, body = _get(base + "/feed.atom")
            assert status == 200 and headers["Content-Type"].startswith("application/atom+xml")
            parsed = feedparser.parse(body)
            assert not parsed.bozo and [e.id for e in parsed.entries] == latest
            status, headers_json, body_json = _get(base + "/feed.json")
            assert status == 200 and headers_json["Content-Type"].startswith("application/feed+json")
            doc = json.loads(body_json)
            jsonschema.validate(doc, SCHEMA)
            assert [i["id"] for i in doc["items"]] == latest

            etag = headers["ETag"]
            assert etag != headers_json["ETag"]
            assert _get(base + "/feed.atom", etag)[0] == 304
            status, not_modified_headers, empty = _get(base + "/feed.atom", f'"other", {etag}')
            assert status == 304 and empty == b"" and not_modified_headers["ETag"] == etag
            assert _get(base + "/feed.atom", '"other"')[0] == 200
            assert _get(base + "/feed.atom")[1]["ETag"] == etag  # same content, same tag

            # the stream changes (everything published before the newest cluster's last copy is pruned):
            # a new tag, and the old one gets the new feed
            newest = store.stories(limit=1)[0]
            dates = sorted(i.published_at for i in store.items() if i.cluster_id == newest.cluster_id)
            store.prune(dates[-1] + timedelta(seconds=1), canonical_policy(config.dedup.canonical))
            status, headers, body = _get(base + "/feed.atom", etag)
            assert status == 200 and headers["ETag"] != etag
        finally:
            server.close()
