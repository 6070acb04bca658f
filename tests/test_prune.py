"""Retention: Store.prune and `ingest prune` keep clusters, canonicals and the LSH index consistent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from .conftest import check_store_consistent, ingest_once, run_cli, store_snapshot, write_demo_config
from ingest.config import load
from ingest.pipeline import canonical_policy
from ingest.store import Store

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _dates(store: Store) -> list[datetime]:
    return sorted(i.published_at or i.fetched_at for i in store.items())


def test_prune_keeps_every_remaining_clusters_canonical(demo_config: Path) -> None:
    config = load(demo_config)
    policy = canonical_policy(config.dedup.canonical)
    with Store.open(config.store.url) as store:
        dates = _dates(store)
        cutoff = dates[len(dates) // 2]  # about half the items go
        expected_gone = sum(1 for d in dates if d < cutoff)
        canonicals = {c.cluster_id: c.canonical_item_id for c in store.clusters()}
        counts = store.prune(cutoff, policy, now=NOW)
        assert counts["items"] == expected_gone > 0
        check_store_consistent(store)
        assert len(store.items()) == len(dates) - expected_gone
        assert all((i.published_at or i.fetched_at) >= cutoff for i in store.items())
        after = {c.cluster_id: c.canonical_item_id for c in store.clusters()}
        assert len(after) == len(canonicals) - counts["clusters_deleted"]
        changed = [cid for cid in after if after[cid] != canonicals[cid]]
        assert len(changed) == counts["canonicals_reelected"]
        for cluster_id in changed:  # each re-election is recorded with its reason
            item = store.item(after[cluster_id])
            assert item.canonical_changes[-1].new_item_id == after[cluster_id]
            assert "pruned" in item.canonical_changes[-1].reason


def test_prune_elects_by_the_configured_policy(store_url: str, tmp_path: Path) -> None:
    """With canonical = priority, the new canonical is the remaining member of highest priority."""
    path = write_demo_config(tmp_path, store_url)
    path.write_text(path.read_text() + '\n[dedup]\ncanonical = "priority"\n')
    assert not ingest_once(path).failed
    config = load(path)
    with Store.open(config.store.url) as store:
        dates = _dates(store)
        store.prune(dates[len(dates) // 3], canonical_policy("priority"), now=NOW)
        priorities = {s.name: s.priority for s in config.sources}
        for cluster in store.clusters():
            canonical = next(m for m in cluster.members if m.item_id == cluster.canonical_item_id)
            assert priorities[canonical.source] == max(priorities[m.source] for m in cluster.members)


def test_dry_run_changes_nothing_and_reports_the_same_counts(demo_config: Path) -> None:
    config = load(demo_config)
    policy = canonical_policy(config.dedup.canonical)
    with Store.open(config.store.url) as store:
        dates = _dates(store)
        cutoff = dates[len(dates) // 2]
        before = store_snapshot(store)
        preview = store.prune(cutoff, policy, dry_run=True, now=NOW)
        assert store_snapshot(store) == before
        assert preview == store.prune(cutoff, policy, now=NOW)
        assert store_snapshot(store) != before


def test_prune_everything_leaves_an_empty_consistent_store(demo_config: Path) -> None:
    config = load(demo_config)
    with Store.open(config.store.url) as store:
        counts = store.prune(NOW, canonical_policy(config.dedup.canonical), now=NOW)
        assert counts["items"] > 0 and counts["lsh_bands"] > 0 and counts["paragraphs"] > 0
        assert store.counts()["items"] == 0 and store.counts()["clusters"] == 0
        check_store_consistent(store)


def test_cli_prune_needs_retention_then_drops_items_older_than_it(tmp_path: Path, sqlite_url: str) -> None:
    path = write_demo_config(tmp_path, sqlite_url)
    assert not ingest_once(path).failed
    done = run_cli("prune", "-c", str(path))
    assert done.returncode == 2 and "retention" in done.stderr and len(done.stderr.strip().splitlines()) == 1

    with Store.open(sqlite_url) as store:
        items = len(store.items())
        oldest = _dates(store)[0]
    # a retention reaching back to just after the oldest item drops exactly the items before it
    keep = datetime.now(timezone.utc) - oldest - timedelta(hours=1)
    path = write_demo_config(tmp_path, sqlite_url, store={"retention": f"{int(keep.total_seconds())}s"})
    done = run_cli("prune", "-c", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("would drop ") and int(done.stdout.split()[2]) >= 1
    with Store.open(sqlite_url) as store:
        assert len(store.items()) == items
    done = run_cli("prune", "-c", str(path))
    assert done.returncode == 0, done.stderr
    dropped = int(done.stdout.split()[1])
    with Store.open(sqlite_url) as store:
        assert len(store.items()) == items - dropped
        check_store_consistent(store)
