"""ingest.recluster: comparing partitions (merges, splits, moves) and keeping stored cluster ids.

Pure functions over item -> cluster maps. Replaying dedup over a store and applying
the result (``ingest recluster``): tests/test_maintenance.py.
"""

from __future__ import annotations

from ingest import recluster


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
