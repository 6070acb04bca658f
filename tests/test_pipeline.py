"""The pipeline end to end: `ingest --once` over real feeds, and process_source's stop flag.

Demo feeds served from a loopback server (``demo_run``): copies collapse into one
cluster per story, a second run adds nothing, the seed story loses its disclaimer and
cookie banner, a changed entry is updated in place; a repeated footer is learned as
boilerplate and removed from every item; the daemon's stop flag leaves the rest of a
feed for the next poll. Messages and exit codes of the CLI: tests/test_cli.py; the
process pool: tests/test_pool.py; reprocess: tests/test_maintenance.py.
"""

from __future__ import annotations

import json
import random

from tests import dedup_corpus as corpus
from ingest.config import load
from ingest.fetch import Fetcher
from ingest.pipeline import Deps, process_source
from ingest.store import Store

from .conftest import DEMO_FEEDS, DEMO_RUN_SOURCES, HARBOUR_FOOTER, HARBOUR_STORIES, harbour_feed, jsonl


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
    assert summary["sources"] == len(DEMO_RUN_SOURCES) and summary["sources_failed"] == 0
    assert summary["items_new"] > summary["clusters"] > 0
    assert summary["duplicates"] == summary["items_new"] - summary["clusters"]

    items = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    clusters = jsonl(cli("clusters", "--json", "-c", str(config)).stdout)
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
    items = jsonl(cli("items", "--json", "-c", str(config)).stdout)
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
    assert one == two and jsonl(one)


def test_changed_entry_is_updated_in_place(write_config, cli, tmp_path):
    body = (DEMO_FEEDS / "afp-wire.xml").read_bytes()
    feed = tmp_path / "feed.xml"
    feed.write_bytes(body)
    config = write_config(store_url="sqlite:///store.db", sources={"afp-wire": feed})
    assert cli("--once", "-c", str(config)).returncode == 0
    before = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    feed.write_bytes(body.replace(b"Bursts of gunfire echoed", b"Sustained bursts of gunfire echoed"))
    result = cli("--once", "--json", "-c", str(config))
    summary = json.loads(result.stdout)
    assert summary["items_new"] == 0 and summary["items_updated"] == 1
    after = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert any("Sustained bursts" in i["text"] for i in after)



# ---------------------------------------------------------------- learned boilerplate, end to end


def test_repeated_footer_is_learned_removed_everywhere_and_listed(write_config, cli, tmp_path):
    feed = tmp_path / "harbour.xml"
    feed.write_bytes(harbour_feed(HARBOUR_STORIES[:3]))
    config = write_config(store_url="sqlite:///store.db", sources={"harbour": feed})
    first = cli("--once", "--json", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["items_new"] == 3

    # the third story made the footer boilerplate; the two before it were re-cleaned too
    items = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert len(items) == 3
    for item, (_, a, b) in zip(items, HARBOUR_STORIES):
        assert HARBOUR_FOOTER not in item["text"]
        assert item["text"].startswith(a) and b in item["text"]
        shown = json.loads(cli("show", str(item["id"]), "--json", "-c", str(config)).stdout)
        assert {"rule": "learned", "position": "whole", "text": HARBOUR_FOOTER} in shown["removed"]
    assert len({i["cluster"] for i in items}) == 3

    listed = cli("boilerplate", "-c", str(config))
    assert listed.returncode == 0 and "Harbour Times is owned by its readers" in listed.stdout
    (row,) = jsonl(cli("boilerplate", "--json", "--source", "harbour", "-c", str(config)).stdout)
    assert (row["source"], row["seen"], row["window"], row["removed"]) == ("harbour", 3, 50, 3)

    # a later item loses the footer on the way in
    feed.write_bytes(harbour_feed(HARBOUR_STORIES))
    assert json.loads(cli("--once", "--json", "-c", str(config)).stdout)["items_new"] == 1
    latest = jsonl(cli("items", "--json", "-c", str(config)).stdout)[-1]
    assert latest["title"] == HARBOUR_STORIES[3][0] and HARBOUR_FOOTER not in latest["text"]
    text_view = cli("show", str(latest["id"]), "-c", str(config)).stdout
    assert f"[learned, whole] {HARBOUR_FOOTER}" in text_view


# ---------------------------------------------------------------------------- the stop flag


def words(seed: int, n: int = 60) -> str:
    """A distinct text per seed (so items are not duplicates of each other)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "tango", "zulu",
                                "harbour", "council", "budget", "river", "museum", "railway", "storm"])
                    + str(rng.randrange(1000)) for _ in range(n))


def test_stop_flag_leaves_the_rest_of_the_feed_for_the_next_poll(write_config, server) -> None:
    server.feed("/f", [(f"g{i}", f"https://example.org/g{i}", f"title {i}", words(i)) for i in range(5)])
    config = load(write_config(store_url="sqlite:///store.db", sources={"f": server.url("/f")}))
    # the flag is read before the source starts, after its fetch, then before each item: stop after two items
    calls = iter([False, False, False, False, True])
    with Store.open(config.store.url) as store:
        fetcher = Fetcher(config.fetch)
        states = store.sync_sources(config.sources)
        report = process_source(config.sources[0], states["f"], Deps(config, store, fetcher,
                                                                     should_stop=lambda: next(calls, True)))
        assert report.ok and report.items_new == 2
        assert any("stopped with 3 entries not processed" in w for w in report.warnings)
        assert store.counts()["items"] == 2
        after = store.source_state("f")
        assert after is not None and after.next_poll_at is None and after.body_hash is None  # poll not recorded
        report = process_source(config.sources[0], after, Deps(config, store, fetcher))
        assert report.items_new == 3 and report.items_unchanged == 2
        fetcher.close()


def test_a_link_too_long_to_index_is_not_a_url_key() -> None:
    from ingest.pipeline import _canonical

    assert _canonical("https://example.com/a?utm_source=x") == "https://example.com/a"
    assert _canonical("https://example.com/" + "a" * 1100) is None
    assert _canonical("mailto:someone@example.com") is None
