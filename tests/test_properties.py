"""Property tests (hypothesis): feed it anything, and the store keeps its invariants.

- Generated RSS 2.0, Atom, RDF and JSON Feed documents (deep nesting, encodings and
  charsets that lie, entities, odd and missing dates, empty and huge fields, invalid
  UTF-8): ``parse`` raises nothing but ``ParseError``, and ``process_source`` returns
  a report and never stores half an item (the invariants of tests/storecheck.py).
- Generated configs (one key of a valid config set to any value, unknown keys,
  broken TOML): a ``ConfigError`` of one line naming the key, never another error.
- Random sequences of polls (new, updated and removed entries, copies across two
  sources), prune, recluster and resign keep every invariant after every step.

Bounded with ``settings(max_examples=..., deadline=...)``: the file runs in well
under a minute and draws the same examples every run; ``HYPOTHESIS_PROFILE=long`` runs
10x the examples, drawn anew each run.
"""

from __future__ import annotations

import codecs
import json
import os
import random
import tempfile
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import dedup
from ingest.config import SPEC, Config, from_dict
from ingest.errors import ConfigError, ParseError
from ingest.fetch import Fetcher
from ingest.models import FetchResult
from ingest.parse import parse
from ingest.pipeline import Deps, process_source
from ingest.store import Store
from tests.conftest import POSTGRES_URL
from tests.corpus import syndicated
from tests.pgschema import postgres_schema
from tests.storecheck import check_invariants

# default: the same examples every run (derandomized), so the suite and CI are repeatable;
# long: ten times as many, drawn anew each run, to look for new failures (two were
# found that way: a 2.7 KB guid over PostgreSQL's index row limit, JSON Feed
# "authors": true), each then kept as a plain regression test
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 1

# ---------------------------------------------------------------------------- documents

_NASTY = [
    "", " ", "&amp;", "&nbsp;", "&undefined;", "&#0;", "&#xD800;", "&#1114112;", "]]>", "<![CDATA[", "<script>x</script>",
    "<p>unclosed", "</item>", "\x00", "\x0b\x0c", "\ufeff", "\u202e", "caf\u00e9", "\U0001f600", "\ud7ff", "a" * 3000,
]
_DATES = [
    "", "yesterday", "Mon, 32 Feb 2026 25:61:00 +9999", "0000-00-00T00:00:00Z", "9999-12-31T23:59:59Z",
    "1970-01-01", "Tue, 10 Jun 2003 04:00:00 GMT", "2026-13-45", "-1", "1e308", "2026-01-05T06:00:00+14:00",
]
_CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "utf-16", "shift_jis", "koi8-r", "x-bogus", ""]

field_text = st.one_of(
    st.sampled_from(_NASTY),
    st.text(max_size=80),
    # empty to huge (about 100 KB a field; six entries make a 0.6 MB body)
    st.builds(lambda w, n: (w + " ") * n, st.sampled_from(["word", "Ünïcödé", "&lt;b&gt;"]),
              st.sampled_from([0, 1, 30, 300, 20_000])),
)
dates = st.one_of(st.sampled_from(_DATES), st.text(max_size=30))


def _x(text: str, raw: bool) -> str:
    """A field as XML: escaped, or raw (markup and entities as they come)."""
    return text if raw else escape(text)


@st.composite
def xml_feeds(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """An RSS 2.0, Atom or RDF document, encoded with a charset that may not be the declared one."""
    kind = draw(st.sampled_from(["rss", "atom", "rdf"]))
    raw = draw(st.booleans())
    entries = []
    for _ in range(draw(st.integers(0, 6))):
        title, body, guid, when = draw(field_text), draw(field_text), draw(field_text), draw(dates)
        depth = draw(st.integers(0, 300))
        nested = "<div>" * depth + _x(body, raw) + "</div>" * depth
        if kind == "atom":
            entries.append(f"<entry><id>{_x(guid, raw)}</id><title>{_x(title, raw)}</title><updated>{when}</updated>"
                           f"<content type='html'>{escape(nested)}</content></entry>")
        elif kind == "rdf":
            entries.append(f"<item rdf:about='{escape(guid)}'><title>{_x(title, raw)}</title><link>{_x(guid, raw)}</link>"
                           f"<description>{_x(nested, raw)}</description><dc:date>{when}</dc:date></item>")
        else:
            entries.append(f"<item><guid>{_x(guid, raw)}</guid><title>{_x(title, raw)}</title><pubDate>{when}</pubDate>"
                           f"<description>{_x(nested, raw)}</description></item>")
    body = "".join(entries)
    if kind == "atom":
        doc = f"<feed xmlns='http://www.w3.org/2005/Atom'><title>t</title>{body}</feed>"
    elif kind == "rdf":
        doc = ("<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' xmlns='http://purl.org/rss/1.0/' "
               f"xmlns:dc='http://purl.org/dc/elements/1.1/'><channel><title>t</title></channel>{body}</rdf:RDF>")
    else:
        doc = f"<rss version='2.0'><channel><title>t</title>{body}</channel></rss>"
    declared = draw(st.sampled_from(_CHARSETS))
    if draw(st.booleans()):
        doc = f"<!DOCTYPE x [<!ENTITY e '{'&#38;' * draw(st.integers(0, 50))}'>]>" + doc
    if declared:
        doc = f"<?xml version='1.0' encoding='{declared}'?>" + doc
    actual = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252", "shift_jis"]))
    data = doc.encode(actual, errors="replace")
    if draw(st.booleans()):  # invalid UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80" * 5])) + data[at:]
    header = draw(st.sampled_from([None, "application/rss+xml", "text/xml; charset=" + draw(st.sampled_from(_CHARSETS)),
                                   "text/html", "application/octet-stream"]))
    return data, header


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), field_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)


@st.composite
def json_feeds(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A JSON Feed whose fields may be of any JSON type, and whose items may be anything."""
    keys = ["id", "url", "title", "content_html", "content_text", "summary", "date_published", "authors", "tags",
            "attachments", "language", "author"]
    items = draw(st.lists(st.one_of(
        json_values, st.fixed_dictionaries({}, optional={k: st.one_of(json_values, dates) for k in keys}),
    ), max_size=6))
    doc: dict[str, Any] = {"version": draw(st.sampled_from(["https://jsonfeed.org/version/1.1",
                                                            "https://jsonfeed.org/version/1", "2", ""])),
                           "title": draw(json_values), "items": items if draw(st.integers(0, 9)) else draw(json_values)}
    data = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]
    return data, "application/feed+json"


feeds = st.one_of(xml_feeds(), json_feeds())


def _result(body: bytes, content_type: str | None) -> FetchResult:
    return FetchResult(url="http://feeds.invalid/f", final_url="http://feeds.invalid/f", status=200, body=body,
                       content_type=content_type, body_hash=str(hash(body)), fetched_at=datetime.now(timezone.utc))


@settings(max_examples=100 * SCALE)
@given(feeds)
def test_parse_raises_only_parse_error(doc: tuple[bytes, str | None]) -> None:
    try:
        feed = parse(_result(*doc))
    except ParseError as exc:
        assert str(exc).startswith("parse: ") and "\n" not in str(exc)
        return
    for entry in feed.entries:
        assert entry.identity and entry.entry_hash


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pipeline_store(request: pytest.FixtureRequest):
    """One store and a local feed file for the pipeline property (hypothesis reuses it across examples)."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("INGEST_TEST_POSTGRES_URL not set")
    with tempfile.TemporaryDirectory(prefix="ingest-prop-") as folder, ExitStack() as stack:
        path = Path(folder) / "feed.xml"
        url = (f"sqlite:///{folder}/store.db" if request.param == "sqlite"
               else stack.enter_context(postgres_schema(POSTGRES_URL)))  # type: ignore[arg-type]
        raw = {"store": {"url": url}, "sources": [{"name": "f", "url": str(path)}]}
        config = from_dict(raw, Path(folder) / "ingest.toml")
        with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
            fetcher = Fetcher(config.fetch)
            yield config, store, fetcher, path
            fetcher.close()


@settings(max_examples=30 * SCALE)
@given(feeds)
def test_process_source_returns_a_report_and_stores_no_half_item(pipeline_store, doc) -> None:
    config, store, fetcher, path = pipeline_store
    path.write_bytes(doc[0])
    state = store.sync_sources(config.sources)["f"]
    report = process_source(config.sources[0], state, Deps(config, store, fetcher))
    assert report.source == "f"
    assert report.ok or (report.error and report.error_kind != "internal"), report.error
    check_invariants(store)


# ---------------------------------------------------------------------------- configs

_VALID = {"store": {"url": "sqlite:///store.db"}, "sources": [{"name": "a", "url": "http://feeds.invalid/a"}]}
any_value = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=20),
    st.sampled_from(["1s", "-5m", "0", "90d", "1e9h", "[", "(?P<", "sqlite:///", "postgresql://", "ftp://x"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
section_key = st.sampled_from([(s, k) for s, keys in SPEC.items() for k in keys])


def _load(raw: dict[str, Any]) -> Config | ConfigError:
    try:
        return from_dict(raw, Path(tempfile.gettempdir()) / "ingest.toml")
    except ConfigError as exc:
        return exc


@settings(max_examples=200 * SCALE)
@given(section_key, any_value)
def test_one_bad_key_is_one_line_naming_it(where: tuple[str, str], value: Any) -> None:
    section, key = where
    raw = json.loads(json.dumps(_VALID))
    if section == "source":
        raw["sources"][0][key] = value
    else:
        raw.setdefault(section, {})[key] = value
    if value is None:  # TOML has no null: a key given no value is not given
        return
    got = _load(raw)
    if isinstance(got, ConfigError):
        message = str(got)
        assert "\n" not in message and message.startswith("config: ")
        assert key in message, message


# Keys without control characters: a quoted TOML key holding a newline ("\n" = 1) is
# named verbatim, so the message spans two lines (config.py quotes keys with '...';
# reported, not fixed here: config.py is outside this work)
printable_keys = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)


@settings(max_examples=100 * SCALE)
@given(st.dictionaries(printable_keys, any_value.filter(lambda v: v is not None), max_size=4),
       st.sampled_from(["", "store", "fetch", "dedup", "daemon", "defaults"]))
def test_unknown_keys_are_named(extra: dict[str, Any], section: str) -> None:
    raw = json.loads(json.dumps(_VALID))
    target = raw if not section else raw.setdefault(section, {})
    known = set(SPEC.get(section, {})) | ({"store", "fetch", "extract", "dedup", "daemon", "defaults", "sources",
                                           "sources_files"} if not section else set())
    unknown = {k: v for k, v in extra.items() if k not in known}
    target.update(unknown)
    got = _load(raw)
    if unknown:
        assert isinstance(got, ConfigError) and "\n" not in str(got)
        assert all(k in str(got) for k in unknown), str(got)


@settings(max_examples=100 * SCALE)
@given(st.text(max_size=200))
def test_any_config_file_loads_or_is_one_config_error(text: str) -> None:
    from ingest.config import load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ingest.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)


def test_a_bad_config_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from ingest.cli import main

    path = tmp_path / "ingest.toml"
    path.write_text('[fetch]\ntimeout = "soon"\n[[sources]]\nname = "a"\nurl = "http://feeds.invalid/a"\n')
    assert main(["--once", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timeout" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- store operations

_CORPUS = syndicated(2, 12, seed=9, copy_share=0.5)
_START = datetime(2026, 1, 5, tzinfo=timezone.utc)

operations = st.lists(st.one_of(
    st.tuples(st.just("new"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("update"), st.integers(0, 1), st.integers(0, 20)),
    st.tuples(st.just("remove"), st.integers(0, 1), st.integers(0, 20)),
    st.tuples(st.just("prune"), st.integers(0, 30)),
    st.tuples(st.just("recluster"), st.sampled_from([0.2, 0.3, 0.6])),
    st.tuples(st.just("resign")),
), min_size=1, max_size=8)


class _Feeds:
    """Two local feed files whose entries the operations add, change and drop."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pool = {f: [e for e in _CORPUS.entries if e.feed == f] for f in (0, 1)}
        self.live: dict[int, list[tuple[str, str, str, datetime]]] = {0: [], 1: []}
        self.edits = 0

    def add(self, feed: int, count: int) -> None:
        for entry in self.pool[feed][:count]:
            when = _START + timedelta(days=len(self.live[feed]) + feed)
            self.live[feed].append((entry.guid, entry.title, "\n\n".join(entry.paragraphs), when))
        self.pool[feed] = self.pool[feed][count:]

    def update(self, feed: int, index: int) -> None:
        if self.live[feed]:
            guid, title, text, when = self.live[feed][index % len(self.live[feed])]
            self.edits += 1
            self.live[feed][index % len(self.live[feed])] = (guid, title, text + f"\n\nCorrection number {self.edits}.", when)

    def remove(self, feed: int, index: int) -> None:
        if self.live[feed]:
            self.live[feed].pop(index % len(self.live[feed]))

    def write(self) -> None:
        for feed, entries in self.live.items():
            items = "".join(
                f"<item><guid>{escape(g)}</guid><title>{escape(t)}</title><pubDate>{w:%a, %d %b %Y %H:%M:%S} +0000</pubDate>"
                f"<description>{escape(''.join(f'<p>{p}</p>' for p in x.split(chr(10) * 2)))}</description></item>"
                for g, t, x, w in entries
            )
            (self.folder / f"f{feed}.xml").write_text(f"<rss version='2.0'><channel><title>f</title>{items}</channel></rss>")


@settings(max_examples=25 * SCALE)
@given(operations)
def test_random_polls_prunes_reclusters_and_resigns_keep_the_invariants(ops: list[tuple]) -> None:
    from ingest.maintenance import recluster_store, resign
    from ingest.pipeline import canonical_policy

    with tempfile.TemporaryDirectory(prefix="ingest-ops-") as name:
        folder = Path(name)
        feeds = _Feeds(folder)
        raw = {"store": {"url": f"sqlite:///{folder}/store.db"},
               "sources": [{"name": f"s{f}", "url": str(folder / f"f{f}.xml")} for f in (0, 1)]}
        config = from_dict(raw, folder / "ingest.toml")
        feeds.write()
        with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
            fetcher = Fetcher(config.fetch)
            deps = Deps(config, store, fetcher, rng=random.Random(1))
            for op in ops:
                if op[0] in ("new", "update", "remove"):
                    getattr(feeds, "add" if op[0] == "new" else op[0])(op[1], op[2])
                    feeds.write()
                    source = config.sources[op[1]]
                    report = process_source(source, store.sync_sources(config.sources)[source.name], deps)
                    assert report.ok, report.error
                elif op[0] == "prune":
                    store.prune(_START + timedelta(days=op[1] / 2), canonical_policy(config.dedup.canonical))
                elif op[0] == "recluster":
                    from dataclasses import replace

                    recluster_store(store, replace(config.dedup, threshold=op[1]), dry_run=False)
                else:
                    resign(config, store)
                check_invariants(store)
            fetcher.close()
