"""The whole `ingest --once` run through the CLI, against a real loopback HTTP server."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from bench import corpus

from .conftest import FIXTURES

DEMO = FIXTURES / "feeds" / "demo"
SOURCES = ["afp-wire", "axadle", "worldtimes-blog", "reuters-wire", "sportsdesk", "rssdigest", "newsnow-syndicate"]


def _serve(httpserver: HTTPServer, name: str, body: bytes | None = None, status: int = 200) -> str:
    path = f"/{name}.xml"
    data = body if body is not None else (DEMO / f"{name}.xml").read_bytes()
    httpserver.expect_request(path).respond_with_data(data, status=status, content_type="application/rss+xml")
    return httpserver.url_for(path)


def _config(write_config, urls: dict[str, str], store: str = "sqlite:///store.db", extra: str = "") -> Path:
    sources = "".join(f'[[sources]]\nname = "{n}"\nurl = "{u}"\n\n' for n, u in urls.items())
    return write_config(f'[store]\nurl = "{store}"\n[fetch]\nper_host_delay = 0\n{extra}\n{sources}')


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def demo_run(httpserver: HTTPServer, write_config, cli):
    urls = {name: _serve(httpserver, name) for name in SOURCES}
    config = _config(write_config, urls)
    first = cli("--once", "--json", "-c", str(config))
    return config, first


def test_once_collapses_copies_and_keeps_stories_apart(demo_run, cli):
    config, first = demo_run
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert set(summary) == {
        "sources", "sources_failed", "items_new", "items_updated", "duplicates", "clusters", "errors", "timings",
        "polled_elsewhere", "deferred",
    }
    assert summary["polled_elsewhere"] == summary["deferred"] == []
    assert set(summary["timings"]) <= {"fetch", "parse", "extract", "dedup", "store"} and summary["timings"]["store"] > 0
    assert summary["sources"] == len(SOURCES) and summary["sources_failed"] == 0
    assert summary["items_new"] > summary["clusters"] > 0
    assert summary["duplicates"] == summary["items_new"] - summary["clusters"]

    items = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    clusters = _jsonl(cli("clusters", "--json", "-c", str(config)).stdout)
    assert len(items) == summary["items_new"] and len(clusters) == summary["clusters"]
    assert {"id", "source", "url", "guid", "title", "published", "text", "cluster", "canonical"} <= set(items[0])
    assert {"cluster", "canonical", "size", "items"} <= set(clusters[0])

    # labels: which stored item is which corpus item (by source + guid)
    labelled = {(i.source, i.guid): i for i in corpus.load() + corpus.seed_items()}
    story_of = {item["id"]: labelled[(item["source"], item["guid"])].story for item in items}
    relation_of = {item["id"]: labelled[(item["source"], item["guid"])].relation for item in items}
    for cluster in clusters:
        stories = {story_of[m["id"]] for m in cluster["items"]}
        assert len(stories) == 1, f"cluster {cluster['cluster']} mixes stories {stories}"
        assert sum(1 for m in cluster["items"] if m["id"] == cluster["canonical"]) == 1
        for member in cluster["items"]:
            assert 0.0 <= member["similarity"] <= 1.0
    seed_cluster = [c for c in clusters if {story_of[m["id"]] for m in c["items"]} == {"seed-kazakhstan"}]
    assert len(seed_cluster) == 1 and seed_cluster[0]["size"] == 3
    # every non-paraphrased copy of a story shares one cluster
    for story in {story_of[i] for i in story_of}:
        members = [i for i in story_of if story_of[i] == story and relation_of[i] != "paraphrase"]
        assert len({next(c["cluster"] for c in clusters if any(m["id"] == i for m in c["items"])) for i in members}) == 1


def test_second_run_adds_nothing(demo_run, cli):
    config, first = demo_run
    again = cli("--once", "--json", "-c", str(config))
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["items_new"] == 0 and summary["items_updated"] == 0 and summary["duplicates"] == 0
    assert summary["clusters"] == json.loads(first.stdout)["clusters"]


def test_seed_disclaimer_and_cookie_banner_are_removed(demo_run, cli):
    config, _ = demo_run
    items = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    seed = next(i for i in items if i["source"] == "axadle")
    text = seed["text"]
    for gone in ("Post Disclaimer", "auto-generated from the Syndicate feed", "This website uses cookies"):
        assert gone not in text
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith("Bursts of gunfire echoed through the streets of Kazakhstan")
    assert paragraphs[-1].startswith("“Literally in three days a revolution has taken place")


def test_reopened_store_gives_the_same_clusters(demo_run, cli):
    config, _ = demo_run
    one = cli("clusters", "--json", "-c", str(config)).stdout
    two = cli("clusters", "--json", "-c", str(config)).stdout
    assert one == two and _jsonl(one)


def test_a_failing_source_is_one_line_and_the_others_go_on(httpserver: HTTPServer, write_config, cli):
    urls = {"afp-wire": _serve(httpserver, "afp-wire"), "broken": _serve(httpserver, "broken", b"<html>oops</html>"),
            "missing": httpserver.url_for("/missing.xml")}
    httpserver.expect_request("/missing.xml").respond_with_data("no", status=404)
    result = cli("--once", "--json", "-c", str(_config(write_config, urls)))
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["sources_failed"] == 2 and summary["items_new"] > 0
    errors = {e["source"]: e["error"] for e in summary["errors"]}
    assert errors["missing"].startswith("fetch: HTTP 404")
    assert errors["broken"].startswith("parse: ")
    stderr_lines = [line for line in result.stderr.splitlines() if "source '" in line]
    assert len(stderr_lines) == 2 and "Traceback" not in result.stderr


def test_every_source_failing_exits_1(httpserver: HTTPServer, write_config, cli):
    httpserver.expect_request("/gone.xml").respond_with_data("", status=500)
    urls = {"a": httpserver.url_for("/gone.xml"), "b": str(FIXTURES / "no-such-file.xml")}
    result = cli("--once", "-c", str(_config(write_config, urls)))
    assert result.returncode == 1
    assert "source 'a': fetch: HTTP 500" in result.stderr and "source 'b': fetch: no such file" in result.stderr


def test_unusable_store_exits_1(write_config, cli, tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    config = _config(write_config, {"x": str(DEMO / "afp-wire.xml")}, store="sqlite:///blocker/store.db")
    result = cli("--once", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("ingest: store: ") and "Traceback" not in result.stderr


def test_changed_entry_is_updated_in_place(httpserver: HTTPServer, write_config, cli, tmp_path):
    body = (DEMO / "afp-wire.xml").read_bytes()
    feed = tmp_path / "feed.xml"
    feed.write_bytes(body)
    config = _config(write_config, {"afp-wire": str(feed)})
    assert cli("--once", "-c", str(config)).returncode == 0
    before = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    feed.write_bytes(body.replace(b"Bursts of gunfire echoed", b"Sustained bursts of gunfire echoed"))
    result = cli("--once", "--json", "-c", str(config))
    summary = json.loads(result.stdout)
    assert summary["items_new"] == 0 and summary["items_updated"] == 1
    after = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert any("Sustained bursts" in i["text"] for i in after)


def test_show_explains_an_item(demo_run, cli):
    config, _ = demo_run
    items = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    seed = next(i for i in items if i["source"] == "axadle")
    shown = cli("show", str(seed["id"]), "-c", str(config))
    assert shown.returncode == 0
    assert "not-edited-auto-generated" in shown.stdout and "cookie-consent" in shown.stdout
    detail = json.loads(cli("show", str(seed["id"]), "--json", "-c", str(config)).stdout)
    assert detail["cluster"] == seed["cluster"] and len(detail["members"]) == 3
    assert any("Post Disclaimer" in r["text"] for r in detail["removed"])
    missing = cli("show", "999999", "-c", str(config))
    assert missing.returncode == 1 and "no item with id 999999" in missing.stderr


# ---------------------------------------------------------------- learned boilerplate, end to end

_FOOTER = "Harbour Times is owned by its readers. Become a member from $5 a month and support local journalism."
_STORIES = [
    ("Seawall upgrade approved", "The council approved a 4.2 million dollar upgrade of the Eastern Beach seawall on "
     "Tuesday after engineers found cracks along a third of its length.", "Work will start in autumn and take two "
     "years, with the boat ramp closed for six months while the southern section is rebuilt."),
    ("Ferry timetable changes", "The harbour ferry will run every twenty minutes at peak times from March, the "
     "operator said, after a year of complaints about crowded morning sailings.", "Weekend services will start an "
     "hour earlier, and a new late sailing will leave the city wharf at half past eleven on Fridays."),
    ("Bakery wins national award", "A Wharf Street bakery has won a national award for its sourdough, beating more "
     "than three hundred entries in the annual judging held in the capital.", "The owners said they would keep "
     "their prices as they are and hire two more apprentices before the summer season."),
    ("Netball final tickets sold out", "Tickets for Saturday's netball grand final sold out within an hour, the "
     "league said, the fastest sale in the competition's forty year history.", "Organisers will put up a big "
     "screen on the foreshore so fans without tickets can watch the match together."),
]


def _harbour_feed(stories) -> bytes:
    items = "".join(
        f"<item><title>{title}</title><link>https://harbour.example/{i}</link><guid>https://harbour.example/{i}</guid>"
        f"<pubDate>Tue, 0{i + 1} Apr 2025 08:00:00 GMT</pubDate>"
        f"<content:encoded><![CDATA[<p>{a}</p><p>{b} [ref HT-{i}]</p><p>{_FOOTER}</p>]]></content:encoded></item>"
        for i, (title, a, b) in enumerate(stories)
    )
    return (f'<?xml version="1.0"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
            f"<channel><title>Harbour Times</title><link>https://harbour.example/</link>{items}</channel></rss>").encode()


def test_repeated_footer_is_learned_removed_everywhere_and_listed(write_config, cli, tmp_path):
    feed = tmp_path / "harbour.xml"
    feed.write_bytes(_harbour_feed(_STORIES[:3]))
    config = _config(write_config, {"harbour": str(feed)})
    first = cli("--once", "--json", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["items_new"] == 3

    # the third story made the footer boilerplate; the two before it were re-cleaned too
    items = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert len(items) == 3
    for item, (_, a, b) in zip(items, _STORIES):
        assert _FOOTER not in item["text"]
        assert item["text"].startswith(a) and b in item["text"]
        shown = json.loads(cli("show", str(item["id"]), "--json", "-c", str(config)).stdout)
        assert {"rule": "learned", "position": "whole", "text": _FOOTER} in shown["removed"]
    assert len({i["cluster"] for i in items}) == 3

    listed = cli("boilerplate", "-c", str(config))
    assert listed.returncode == 0 and "Harbour Times is owned by its readers" in listed.stdout
    (row,) = _jsonl(cli("boilerplate", "--json", "--source", "harbour", "-c", str(config)).stdout)
    assert (row["source"], row["seen"], row["window"], row["removed"]) == ("harbour", 3, 50, 3)

    # a later item loses the footer on the way in
    feed.write_bytes(_harbour_feed(_STORIES))
    assert json.loads(cli("--once", "--json", "-c", str(config)).stdout)["items_new"] == 1
    latest = _jsonl(cli("items", "--json", "-c", str(config)).stdout)[-1]
    assert latest["title"] == _STORIES[3][0] and _FOOTER not in latest["text"]
    text_view = cli("show", str(latest["id"]), "-c", str(config)).stdout
    assert f"[learned, whole] {_FOOTER}" in text_view


def test_reprocess_applies_a_new_strip_pattern_to_stored_items(write_config, cli, tmp_path):
    feed = tmp_path / "harbour.xml"
    feed.write_bytes(_harbour_feed(_STORIES[:2]))
    config = _config(write_config, {"harbour": str(feed)})
    assert cli("--once", "-c", str(config)).returncode == 0
    before = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert all("[ref HT-" in i["text"] for i in before)

    text = config.read_text().replace('url = "' + str(feed) + '"', 'url = "' + str(feed) + '"\nstrip = ["\\\\s*\\\\[ref HT-\\\\d+\\\\]"]')
    config.write_text(text)
    result = cli("reprocess", "--source", "harbour", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "harbour: 2 of 2 items re-cleaned"
    after = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert [i["cluster"] for i in after] == [i["cluster"] for i in before]
    assert all("[ref HT-" not in i["text"] for i in after)
    assert cli("reprocess", "--source", "nope", "-c", str(config)).returncode == 2


# ---------------------------------------------------------------------------- process pool (issue 7)


def _run_in_process(httpserver: HTTPServer, tmp_path: Path, processes: int, extra_feeds: dict[str, bytes]):
    """One in-process run_once over the demo sources (+ extra feeds); (stored items, cluster memberships)."""
    from ingest.config import from_dict
    from ingest.dedup import scheme_for
    from ingest.fetch import Fetcher
    from ingest.pipeline import Deps
    from ingest.worker import run_once
    from ingest.store import Store

    urls = {name: _serve(httpserver, name) for name in SOURCES}
    urls.update({name: _serve(httpserver, name, body) for name, body in extra_feeds.items()})
    raw = {
        "store": {"url": f"sqlite:///{tmp_path / f'p{processes}.db'}"},
        "fetch": {"per_host_delay": 0},
        "daemon": {"workers": 1, "processes": processes},  # one polling thread: sources in config order
        "sources": [{"name": n, "url": u} for n, u in urls.items()],
    }
    config = from_dict(raw, tmp_path / "ingest.toml")
    with Store.open(config.store.url, scheme_for(config.dedup).as_dict()) as store:
        fetcher = Fetcher(config.fetch)
        try:
            report = run_once(Deps(config, store, fetcher))
        finally:
            fetcher.close()
        assert not report.failed
        items = {(i.source, i.guid): i.text for i in store.items()}
        id_key = {i.item_id: (i.source, i.guid) for i in store.items()}
        clusters = sorted(sorted(id_key[m.item_id] for m in c.members) for c in store.clusters())
    return items, clusters


def _boilerplate_feed(count: int) -> bytes:
    """A feed whose entries all end with the same promo paragraph (learned as boilerplate on the way)."""
    promo = "Subscribe to the Harbour Gazette morning briefing for the stories that matter to the coast, every day."
    items = [
        corpus.Item(
            id=f"gazette/{n}", story=f"gazette-{n}", event=f"gazette-{n}", source="gazette", relation="original",
            title=f"Harbour council notes, week {n}", url=f"https://gazette.example/{n}", guid=f"gazette-{n}",
            published=datetime(2025, 3, 1 + n, 8, 0, tzinfo=timezone.utc),
            text="\n\n".join([
                f"The harbour council met for the {n}th time this season and heard {n * 3} complaints about moorings.",
                f"Councillor number {n} proposed {n + 2} new berths near the eastern breakwater, citing waiting lists.",
                promo,
            ]),
        )
        for n in range(1, count + 1)
    ]
    return corpus.rss("gazette", items).encode("utf-8")


def test_process_pool_gives_the_same_items_and_clusters_as_one_process(httpserver: HTTPServer, tmp_path: Path):
    extra = {"gazette": _boilerplate_feed(12)}  # > one pool task: items cleaned before the promo was learned
    serial_items, serial_clusters = _run_in_process(httpserver, tmp_path, 1, extra)
    pooled_items, pooled_clusters = _run_in_process(httpserver, tmp_path, 2, extra)
    assert pooled_clusters == serial_clusters and any(len(c) > 1 for c in serial_clusters)
    assert pooled_items == serial_items
    gazette = [text for (source, _), text in serial_items.items() if source == "gazette"]
    # learned after its third sighting: the later items are stored without it, in both runs
    assert sum("Harbour Gazette morning briefing" not in text for text in gazette) >= 6


def test_cpu_pool_runs_work_in_other_processes_at_lower_priority():
    import os

    from ingest.pool import WORKER_NICE, cpu_pool

    assert cpu_pool(1) is None
    pool = cpu_pool(2)
    assert pool is not None
    with pool:
        assert pool.submit(os.getpid).result() != os.getpid()
        # the store writer (this process) comes first when the CPUs are busy
        assert pool.submit(os.nice, 0).result() == min(19, os.nice(0) + WORKER_NICE)


def test_show_lists_removals_in_text_order_with_rule_names(demo_run, cli):
    config, _ = demo_run
    items = _jsonl(cli("items", "--json", "-c", str(config)).stdout)
    seed = next(i for i in items if i["source"] == "axadle")
    detail = json.loads(cli("show", str(seed["id"]), "--json", "-c", str(config)).stdout)
    assert [(r["rule"], r["position"]) for r in detail["removed"]] == [
        ("disclaimer-heading", "end"), ("not-edited-auto-generated", "end"), ("cookie-consent", "whole"),
    ]
    shown = cli("show", str(seed["id"]), "-c", str(config)).stdout
    disclaimer = detail["removed"][1]["text"]
    assert len(disclaimer) > 300 and f"[not-edited-auto-generated, end] {disclaimer}\n" in shown  # whole, not cut
    assert shown.index("[disclaimer-heading, end]") < shown.index("[not-edited-auto-generated, end]") \
        < shown.index("[cookie-consent, whole]")


def test_source_option_polls_only_the_named_sources(write_config, cli):
    config = _config(write_config, {"afp-wire": str(DEMO / "afp-wire.xml"), "axadle": str(DEMO / "axadle.xml")})
    only = cli("--once", "--json", "--source", "axadle", "-c", str(config))
    assert only.returncode == 0 and json.loads(only.stdout)["sources"] == 1
    unknown = cli("--once", "--source", "nope", "-c", str(config))
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == ["ingest: config: --source: no source named nope"]


@pytest.mark.parametrize("args", [["items", "--limit", "-1"], ["search", "x", "--limit", "0"], ["bogus"], ["show", "abc"]])
def test_usage_errors_are_one_line_exit_2(args, cli):
    result = cli(*args, "-c", str(FIXTURES.parent / "config" / "demo.toml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("ingest: usage: ")
