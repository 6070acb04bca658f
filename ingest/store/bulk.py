"""Rewrites of many stored items at once: prune, resign, re-clean, re-partition.

Each public function is one transaction (``db.begin(immediate=True)``), so a crash
leaves the store as it was before; ``reclean_items`` also runs inside the per-item
transaction of ``Writer.commit_item`` when an item teaches its source a paragraph.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from ingest.models import DedupDecision, Fingerprint, Removal, StoredItem
from ingest.store import schema as t
from ingest.store.clusters import Policy, recount, reelect
from ingest.store.engine import CHUNK, Database, DryRun, utcnow
from ingest.store.migrations import set_meta
from ingest.store.statements import evidence_json, write_index

# What re-cleaning a stored text gives: the new text, its fingerprint and the removals;
# None when nothing changed. Made by the pipeline (clean + dedup), applied here.
Recleaned = tuple[str, Fingerprint, tuple[Removal, ...]]


def reclean_items(
    conn: Connection, item_ids: Sequence[int], reclean: Callable[[str, datetime | None], Recleaned | None],
    now: datetime,
) -> int:
    """Re-clean stored items: new text, signature, features and LSH bands, removals appended.

    ``reclean`` gets each text with the item's time (published, else fetched): the
    rare-entity index keys are grouped by it.

    The dedup decision and cluster of each item stay as they were: the item was
    judged on the text it had then, and moving items between clusters after the
    fact would change what users have already seen.
    """
    changed = 0
    for start in range(0, len(item_ids), CHUNK):
        chunk = list(item_ids[start : start + CHUNK])
        for row in conn.execute(_texts.where(t.items.c.id.in_(chunk))).all():
            result = reclean(row.text, row.published_at or row.fetched_at)
            if result is None:
                continue
            new_text, fp, removals = result
            conn.execute(update(t.items).where(t.items.c.id == row.id).values(
                text=new_text, content_hash=fp.content_hash, shingle_count=fp.shingle_count,
                signature=fp.signature, features=fp.features or None, updated_at=now,
            ))
            conn.execute(delete(t.lsh_bands).where(t.lsh_bands.c.item_id == row.id))
            write_index(conn, row.id, fp, removals)
            changed += 1
    return changed


_texts = select(t.items.c.id, t.items.c.text, t.items.c.published_at, t.items.c.fetched_at)


def reprocess(
    db: Database, source_id: int, reclean: Callable[[str, datetime | None], Recleaned | None],
    at: datetime | None = None,
) -> tuple[int, int]:
    """Re-clean every stored item of one source in one transaction: (items seen, items changed)."""
    with db.begin(immediate=True) as conn:
        ids = [r.id for r in conn.execute(
            select(t.items.c.id).where(t.items.c.source_id == source_id).order_by(t.items.c.id)
        )]
        return len(ids), reclean_items(conn, ids, reclean, at or utcnow())


def resign(
    db: Database, fingerprint: Callable[[str, datetime | None], Fingerprint], scheme: dict[str, Any],
) -> int:
    """Re-sign every stored text (with its time: published, else fetched) and rebuild the LSH index.

    One transaction.
    """
    count = 0
    with db.begin(immediate=True) as conn:
        conn.execute(delete(t.lsh_bands))
        ids = [r.id for r in conn.execute(select(t.items.c.id).order_by(t.items.c.id))]
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            rows = conn.execute(_texts.where(t.items.c.id.in_(chunk))).all()
            bands: list[dict[str, int]] = []
            for row in rows:
                fp = fingerprint(row.text, row.published_at or row.fetched_at)
                conn.execute(
                    update(t.items).where(t.items.c.id == row.id).values(
                        signature=fp.signature, shingle_count=fp.shingle_count, content_hash=fp.content_hash,
                        features=fp.features or None,
                    )
                )
                bands += [{"key": k, "item_id": row.id} for k in sorted(set(fp.band_keys))]
                count += 1
            if bands:
                conn.execute(insert(t.lsh_bands), bands)
        set_meta(conn, "signature_scheme", json.dumps(scheme, sort_keys=True))
    return count


def prune(
    db: Database, before: datetime, policy: Policy, *, dry_run: bool = False, now: datetime | None = None,
) -> dict[str, int]:
    """Delete items published (else fetched) before ``before``, in one transaction.

    Clusters left empty are deleted; a cluster that lost its canonical item elects
    another under ``policy`` (recorded as a canonical change). The LSH bands,
    removals and paragraph sightings of the deleted items go with them. With
    ``dry_run`` everything is done and then rolled back, so the counts are exact.
    """
    now = now or utcnow()
    when = func.coalesce(t.items.c.published_at, t.items.c.fetched_at)
    counts = {"items": 0, "clusters_deleted": 0, "clusters_shrunk": 0, "canonicals_reelected": 0,
              "lsh_bands": 0, "removals": 0, "paragraphs": 0}
    try:
        with db.begin(immediate=True) as conn:
            doomed = [r.id for r in conn.execute(select(t.items.c.id).where(when < before).order_by(t.items.c.id))]
            counts["items"] = len(doomed)
            touched = {
                r.id: r.canonical_item_id for r in conn.execute(
                    select(t.clusters.c.id, t.clusters.c.canonical_item_id).where(
                        t.clusters.c.id.in_(select(t.items.c.cluster_id).where(when < before))
                    )
                )
            }
            doomed_set = set(doomed)
            # the canonical pointer is a foreign key: release it before the item goes
            lost = [cid for cid, canonical in touched.items() if canonical in doomed_set]
            for start in range(0, len(lost), CHUNK):
                conn.execute(update(t.clusters).where(t.clusters.c.id.in_(lost[start : start + CHUNK]))
                             .values(canonical_item_id=None))
            for start in range(0, len(doomed), CHUNK):
                chunk = doomed[start : start + CHUNK]
                # explicit rather than relying on ON DELETE CASCADE, so the counts can be reported
                for name, table in (("lsh_bands", t.lsh_bands), ("removals", t.removals),
                                    ("paragraphs", t.paragraphs)):
                    counts[name] += conn.execute(delete(table).where(table.c.item_id.in_(chunk))).rowcount
                conn.execute(delete(t.items).where(t.items.c.id.in_(chunk)))
            for cluster_id in sorted(touched):
                if not recount(conn, cluster_id):
                    counts["clusters_deleted"] += 1
                    continue
                counts["clusters_shrunk"] += 1
                if reelect(conn, cluster_id, touched[cluster_id], policy, now,
                           "the canonical item was pruned (retention)"):
                    counts["canonicals_reelected"] += 1
            if dry_run:
                raise DryRun
    except DryRun:
        pass
    return counts


def history(db: Database) -> list[StoredItem]:
    """Every stored item with its fingerprint, in (published else fetched, id) order, for replaying dedup."""
    when = func.coalesce(t.items.c.published_at, t.items.c.fetched_at)
    with db.read() as conn:
        bands: dict[int, list[int]] = {}
        for r in conn.execute(select(t.lsh_bands.c.item_id, t.lsh_bands.c.key).order_by(t.lsh_bands.c.item_id)):
            bands.setdefault(r.item_id, []).append(r.key)
        rows = conn.execute(
            select(t.items, t.sources.c.name.label("source"), t.sources.c.priority.label("priority"))
            .join(t.sources, t.sources.c.id == t.items.c.source_id)
            .order_by(when, t.items.c.id)
        ).all()
    return [
        StoredItem(
            item_id=r.id, source=r.source, priority=r.priority or 0, identity=r.identity, url=r.url,
            canonical_url=r.canonical_url, title=r.title, author=r.author, language=r.language,
            published_at=r.published_at, fetched_at=r.fetched_at, input_kind=r.input_kind, text=r.text,
            cluster_id=r.cluster_id,
            fingerprint=Fingerprint(
                r.content_hash, r.shingle_count, r.signature, tuple(sorted(bands.get(r.id, ()))), r.features or b"",
            ),
        )
        for r in rows
    ]


def apply_clusters(
    db: Database, assignment: dict[int, int | None], groups: dict[int, list[int]],
    decisions: dict[int, DedupDecision], policy: Policy, *, now: datetime | None = None,
) -> dict[str, int]:
    """Re-partition items in one transaction: ``groups`` maps a label to its item ids and
    ``assignment`` a label to the existing cluster id it keeps (None: a new cluster).

    Items get their new cluster and decision; each changed cluster gets its size and
    a canonical re-elected under ``policy`` (changes recorded); clusters left empty go.
    """
    now = now or utcnow()
    counts = {"items_moved": 0, "clusters_created": 0, "clusters_deleted": 0, "canonicals_changed": 0}
    with db.begin(immediate=True) as conn:
        old = {r.id: r.cluster_id for r in conn.execute(select(t.items.c.id, t.items.c.cluster_id))}
        previous = {r.id: r.canonical_item_id for r in conn.execute(select(t.clusters.c.id, t.clusters.c.canonical_item_id))}
        touched: set[int] = set()
        for label in sorted(groups):
            cluster_id = assignment.get(label)
            if cluster_id is None:
                cluster_id = conn.execute(
                    insert(t.clusters).values(size=0, created_at=now, updated_at=now).returning(t.clusters.c.id)
                ).scalar_one()
                counts["clusters_created"] += 1
            for item_id in groups[label]:
                if item_id not in old:
                    continue  # pruned since the history was read
                decision = decisions.get(item_id)
                values: dict[str, Any] = {"cluster_id": cluster_id}
                if decision is not None:
                    values.update(
                        decision_method=decision.method, decision_similarity=decision.similarity,
                        decision_containment=decision.containment,
                        decision_matched_item_id=decision.matched_item_id, decision_reason=decision.reason,
                        decision_evidence=evidence_json(decision),
                    )
                if old[item_id] != cluster_id:
                    counts["items_moved"] += 1
                    touched.update((old[item_id], cluster_id))
                conn.execute(update(t.items).where(t.items.c.id == item_id).values(**values))
        for cluster_id in sorted(touched):
            if not recount(conn, cluster_id, changed_at=now):
                counts["clusters_deleted"] += 1
                continue
            if reelect(conn, cluster_id, previous.get(cluster_id), policy, now,
                       "re-clustering changed the members"):
                counts["canonicals_changed"] += 1
    return counts
