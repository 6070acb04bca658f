"""parse(): every fixture in fixtures/feeds/parse/ states what it tests and what to expect.

The header comment holds ``expect: key=value; ...`` with keys:
entries (count), error (substring of the ParseError), warning (substring of a warning),
absent (text that must appear in no entry field), and per-entry ``<field><index>``
checks: title0, content0 (substring), guid0, published0 (ISO 8601), kind0.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.errors import ParseError
from ingest.models import FetchResult
from ingest.parse import parse

from .conftest import FIXTURES

CASES = sorted((FIXTURES / "feeds" / "parse").iterdir())
_EXPECT = re.compile(rb"expect:\s*(.*?)\s*-->", re.S)


def _expectations(body: bytes) -> dict[str, str]:
    match = _EXPECT.search(body)
    assert match, "fixture lacks an 'expect:' header comment"
    text = match.group(1).decode("latin-1" if b"iso-8859-1" in body[:100] else "utf-8")
    pairs = [p.strip() for p in text.split(";") if p.strip()]
    return dict(p.split("=", 1) for p in pairs)


def _result(body: bytes) -> FetchResult:
    return FetchResult(url="fixture", final_url="fixture", status=200, body=body)


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_fixture(path: Path):
    body = path.read_bytes()
    expect = _expectations(body)
    if "error" in expect:
        with pytest.raises(ParseError, match=re.escape(expect["error"])):
            parse(_result(body))
        return
    feed = parse(_result(body))
    assert len(feed.entries) == int(expect["entries"])
    if "warning" in expect:
        assert any(expect["warning"] in w for w in feed.warnings), feed.warnings
    if "absent" in expect:
        for entry in feed.entries:
            fields = " ".join(str(v) for v in entry.__dict__.values())
            assert expect["absent"] not in fields
    for key, value in expect.items():
        field_match = re.fullmatch(r"(title|content|guid|published|kind)(\d+)", key)
        if not field_match:
            continue
        entry = feed.entries[int(field_match.group(2))]
        name = field_match.group(1)
        if name == "title":
            assert entry.title == value
        elif name == "content":
            assert value in entry.content_html
        elif name == "guid":
            assert entry.guid == value
        elif name == "published":
            assert entry.published_at is not None and entry.published_at.isoformat() == value
        elif name == "kind":
            assert entry.content_kind == value


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
