"""ingest.maintenance: re-clean, re-sign and re-cluster what is stored, through the CLI.

``ingest reprocess`` applies a new strip pattern to stored items and keeps their ids and
clusters; ``ingest resign`` re-signs a store whose MinHash scheme the config changed;
``ingest recluster`` replays dedup over the stored history (dry run and apply). The
comparison of partitions itself: tests/test_recluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from ingest.config import load
from ingest.store import Store, schema as t

from .conftest import HARBOUR_STORIES, check_store_consistent, harbour_feed, jsonl, run_cli, store_snapshot


def test_reprocess_applies_a_new_strip_pattern_to_stored_items(write_config, cli, tmp_path):
    feed = tmp_path / "harbour.xml"
    feed.write_bytes(harbour_feed(HARBOUR_STORIES[:2]))
    config = write_config(store_url="sqlite:///store.db", sources={"harbour": feed})
    assert cli("--once", "-c", str(config)).returncode == 0
    before = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert all("[ref HT-" in i["text"] for i in before)

    write_config(store_url="sqlite:///store.db", sources=[{"name": "harbour", "url": feed,
                                                           "strip": [r"\s*\[ref HT-\d+\]"]}])
    result = cli("reprocess", "--source", "harbour", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "harbour: 2 of 2 items re-cleaned"
    after = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert [i["cluster"] for i in after] == [i["cluster"] for i in before]
    assert all("[ref HT-" not in i["text"] for i in after)
    assert cli("reprocess", "--source", "nope", "-c", str(config)).returncode == 2


def test_cli_refuses_a_changed_scheme_and_resign_fixes_it(cli, write_config, tmp_path):
    from tests.dedup_corpus import feeds_by_source, load as load_corpus, rss as corpus_rss

    items = load_corpus(pattern="a-floods-tavera-2025--*.toml")
    sources = []
    for source, members in feeds_by_source(items).items():
        (tmp_path / f"{source}.xml").write_text(corpus_rss(source, members), encoding="utf-8")
        sources.append({"name": source, "url": f"{source}.xml"})
    store_url = f"sqlite:///{tmp_path / 's.db'}"
    config = write_config(store_url=store_url, daemon={"processes": 1}, sources=sources)
    assert cli("--once", "-c", str(config)).returncode == 0
    before = cli("clusters", "--json", "-c", str(config)).stdout
    changed = write_config(store_url=store_url, dedup={"num_perm": 64, "shingle_size": 4}, daemon={"processes": 1},
                           sources=sources)
    refused = cli("--once", "-c", str(changed))
    assert refused.returncode == 1
    assert "num_perm: store has 128, config gives 64" in refused.stderr and "shingle_size" in refused.stderr
    assert "ingest resign" in refused.stderr and "Traceback" not in refused.stderr
    resigned = cli("resign", "-c", str(changed))
    assert resigned.returncode == 0 and f"re-signed {len(items)} items" in resigned.stdout
    assert cli("--once", "-c", str(changed)).returncode == 0
    after = cli("clusters", "--json", "-c", str(changed)).stdout
    strip = lambda out: [{k: v for k, v in json.loads(line).items() if k != "items"} | {  # noqa: E731
        "members": sorted(m["id"] for m in json.loads(line)["items"])} for line in out.splitlines()]
    assert strip(after) == strip(before)


# ---------------------------------------------------------------------------- recluster


def _recluster(config: Path, *args: str) -> dict:
    done = run_cli("recluster", "-c", str(config), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dry_run_at_0_99_reports_splits_and_changes_nothing(demo_config: Path) -> None:
    with Store.open(load(demo_config).store.url) as store:
        before = store_snapshot(store)
    report = _recluster(demo_config, "--dry-run", "--threshold", "0.99")
    assert report["splits"] > 0
    assert report["clusters_after"] > report["clusters_before"]
    assert report["applied"] is None and report["dry_run"] is True
    with Store.open(load(demo_config).store.url) as store:
        assert store_snapshot(store) == before
    # deterministic: the same question gets the same answer
    assert _recluster(demo_config, "--dry-run", "--threshold", "0.99") == report


def test_apply_then_replay_is_a_fixed_point_and_keeps_uids(demo_config: Path) -> None:
    url = load(demo_config).store.url
    with Store.open(url) as store:
        uids = {c.uid: c.item_id for c in store.stories()}
        before_ids = {c.cluster_id for c in store.clusters()}
    preview = _recluster(demo_config, "--dry-run", "--threshold", "0.99")
    applied = _recluster(demo_config, "--threshold", "0.99")
    assert applied["applied"]["items_moved"] == preview["items_moved"]
    with Store.open(url) as store:
        check_store_consistent(store)
        clusters = store.clusters()
        assert len(clusters) == preview["clusters_after"]
        # every stored cluster kept its id (and uid): splitting only adds clusters
        assert before_ids <= {c.cluster_id for c in clusters}
        assert set(uids) <= {s.uid for s in store.stories()}
        with store.engine.connect() as conn:
            # the moved items' stored decisions now explain their new clusters
            alone = conn.execute(select(t.items.c.decision_method).where(t.items.c.cluster_id.not_in(before_ids)))
            assert {m for m in alone.scalars()} == {"none"}
    # replaying the applied partition with the same settings changes nothing more
    again = _recluster(demo_config, "--dry-run", "--threshold", "0.99")
    assert (again["merges"], again["splits"], again["items_moved"]) == (0, 0, 0)
    # and the config's own settings merge the split copies back
    back = _recluster(demo_config)
    assert back["merges"] == preview["splits"] > 0
    with Store.open(url) as store:
        check_store_consistent(store)
        assert len(store.clusters()) == preview["clusters_before"]
