"""Re-clustering: replaying dedup over the stored history, comparing and applying partitions."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from .conftest import check_store_consistent, run_cli, store_snapshot
from ingest import recluster
from ingest.config import load
from ingest.store import Store, schema as t


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


def test_text_report_names_merges_and_splits(demo_config: Path) -> None:
    done = run_cli("recluster", "-c", str(demo_config), "--dry-run", "--threshold", "0.99")
    assert done.returncode == 0, done.stderr
    assert " splits, " in done.stdout and "dry run: nothing changed" in done.stdout


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


def test_compare_counts_merges_splits_and_moves() -> None:
    old = {1: 10, 2: 10, 3: 10, 4: 20, 5: 30, 6: 30}
    new = {1: 1, 2: 1, 3: 2, 4: 1, 5: 3, 6: 3}
    diff = recluster.compare(old, new)
    assert diff.clusters_before == 3 and diff.clusters_after == 3
    assert diff.merges == 1  # label 1 holds items of clusters 10 and 20
    assert diff.splits == 1  # cluster 10 went to labels 1 and 2
    assert diff.items_moved == 1  # item 3 left the majority of cluster 10
    assert diff.unchanged == 1  # cluster 30 == label 3
    assert recluster.compare(old, dict(old)).as_dict() == {
        "items": 6, "clusters_before": 3, "clusters_after": 3, "merges": 0, "splits": 0, "items_moved": 0,
        "unchanged": 3,
    }


def test_keep_ids_gives_each_stored_cluster_to_at_most_one_new_cluster() -> None:
    old = {1: 10, 2: 10, 3: 10, 4: 20, 5: 30, 6: 30}
    new = {1: 1, 2: 1, 3: 2, 4: 1, 5: 3, 6: 3}
    kept = recluster.keep_ids(old, new)
    assert kept == {1: 10, 2: None, 3: 30}
    # a tie goes to the new cluster holding the stored cluster's earliest item
    assert recluster.keep_ids({1: 7, 2: 7}, {1: 5, 2: 4}) == {5: 7, 4: None}
    assert recluster.groups_of(new) == {1: [1, 2, 4], 2: [3], 3: [5, 6]}
