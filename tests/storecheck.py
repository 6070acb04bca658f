"""The store's invariants, checked in one place (property tests, crash harness, bench/crash.py).

``check_invariants(store)`` runs ``conftest.check_store_consistent`` (clusters, sizes,
canonicals, no orphans, FTS5) and adds what a crash could break: every item's LSH
rows are exactly its fingerprint's keys, its stored signature and content hash are
those of its text, paragraph sightings belong to the item's own source, canonical
changes name existing items' clusters, and ``PRAGMA integrity_check`` is ok on
SQLite. ``contents(store)`` is what two runs must agree on: the items by (source,
guid) and the clusters as sets of them. Reads are plain SQL over the tables.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import check_store_consistent

Key = tuple[str, str]  # (source name, guid or identity)


def check_invariants(store: Any, scheme: Any | None = None) -> None:
    """Assert every invariant of ``store`` (``scheme``: a dedup.SignatureScheme; default from the config defaults)."""
    from sqlalchemy import select

    from ingest import dedup
    from ingest.config import DedupConfig
    from ingest.store import schema as t

    check_store_consistent(store)
    scheme = scheme or dedup.scheme_for(DedupConfig())
    with store.engine.connect() as conn:
        keys: dict[int, set[int]] = {}
        for row in conn.execute(select(t.lsh_bands.c.item_id, t.lsh_bands.c.key)):
            keys.setdefault(row.item_id, set()).add(row.key)
        sources = {}
        for row in conn.execute(select(t.items.c.id, t.items.c.source_id, t.items.c.text, t.items.c.signature,
                                       t.items.c.content_hash, t.items.c.cluster_id, t.items.c.published_at,
                                       t.items.c.fetched_at)):
            # the rare-entity keys are bucketed by the item's time, as the pipeline and resign give it
            fp = dedup.fingerprint(row.text, scheme, row.published_at or row.fetched_at)
            assert keys.get(row.id, set()) == set(fp.band_keys), f"item {row.id}: LSH rows differ from its fingerprint"
            assert bytes(row.signature) == fp.signature, f"item {row.id}: stored signature is not its text's"
            assert row.content_hash == fp.content_hash, f"item {row.id}: stored content hash is not its text's"
            sources[row.id] = row.source_id
        for row in conn.execute(select(t.paragraphs.c.item_id, t.paragraphs.c.source_id)):
            assert sources.get(row.item_id) == row.source_id, f"paragraph row of item {row.item_id}: other source"
        cluster_ids = {r.id for r in conn.execute(select(t.clusters.c.id))}
        for row in conn.execute(select(t.canonical_changes.c.cluster_id, t.canonical_changes.c.new_item_id)):
            assert row.cluster_id in cluster_ids, f"canonical change of missing cluster {row.cluster_id}"
        if store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def contents(store: Any) -> tuple[frozenset[Key], frozenset[frozenset[Key]]]:
    """The stored items as (source, guid) and the clusters as sets of them."""
    from sqlalchemy import select

    from ingest.store import schema as t

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.sources.c.name, t.items.c.guid, t.items.c.identity, t.items.c.cluster_id)
            .join(t.sources, t.sources.c.id == t.items.c.source_id)
        ).all()
    clusters: dict[int, set[Key]] = {}
    for row in rows:
        clusters.setdefault(row.cluster_id, set()).add((row.name, row.guid or row.identity))
    items = frozenset(key for members in clusters.values() for key in members)
    assert len(items) == len(rows), "two items share a (source, guid)"
    return items, frozenset(frozenset(m) for m in clusters.values())


def poll_errors(store: Any) -> dict[str, str]:
    """Sources with a failed poll on record: name -> error (an interrupted run must leave none)."""
    from sqlalchemy import select

    from ingest.store import schema as t

    with store.engine.connect() as conn:
        rows = conn.execute(select(t.sources.c.name, t.sources.c.last_error, t.sources.c.error_count)).all()
    return {r.name: r.last_error or "(error cleared by a later success)" for r in rows if r.last_error or r.error_count}
