"""Read models: what the listing, showing and exporting commands ask of the store.

Every answer is a frozen dataclass of ``ingest.models`` (``ItemRow``, ``ClusterRow``,
``ItemDetail``, ``LearnedParagraph``, ``Story``), in one vocabulary: ``item_id``,
``cluster_id``, ``canonical_item_id``, ``*_at`` for times.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import and_, func, select

from ingest.models import (
    CanonicalChange, ClusterMember, ClusterRow, Copy, ItemDetail, ItemRow, LearnedParagraph, Removal, Signal, Story,
)
from ingest.store import schema as t
from ingest.store.engine import CHUNK, Database


def counts(db: Database) -> dict[str, int]:
    """Items, clusters and active sources stored."""
    with db.read() as conn:
        return {
            "items": conn.execute(select(func.count()).select_from(t.items)).scalar_one(),
            "clusters": conn.execute(select(func.count()).select_from(t.clusters)).scalar_one(),
            "sources": conn.execute(
                select(func.count()).select_from(t.sources).where(t.sources.c.active.is_(True))
            ).scalar_one(),
        }


def items(db: Database, *, source: str | None = None, limit: int | None = None) -> list[ItemRow]:
    """Stored items with their source name, cluster and whether they are canonical, by id."""
    query = (
        select(
            t.items.c.id, t.sources.c.name.label("source"), t.items.c.url, t.items.c.guid, t.items.c.title,
            t.items.c.author, t.items.c.published_at, t.items.c.fetched_at, t.items.c.text,
            t.items.c.cluster_id, t.items.c.input_kind,
            (t.clusters.c.canonical_item_id == t.items.c.id).label("canonical"),
        )
        .join(t.sources, t.sources.c.id == t.items.c.source_id)
        .join(t.clusters, t.clusters.c.id == t.items.c.cluster_id)
        .order_by(t.items.c.id)
    )
    if source:
        query = query.where(t.sources.c.name == source)
    if limit:
        query = query.limit(limit)
    with db.read() as conn:
        return [
            ItemRow(
                item_id=r.id, source=r.source, url=r.url, guid=r.guid, title=r.title, author=r.author,
                published_at=r.published_at, fetched_at=r.fetched_at, text=r.text, cluster_id=r.cluster_id,
                is_canonical=bool(r.canonical), input_kind=r.input_kind,
            )
            for r in conn.execute(query)
        ]


def _member_query():  # type: ignore[no-untyped-def]
    return (
        select(
            t.items.c.id, t.items.c.cluster_id, t.sources.c.name.label("source"), t.items.c.url, t.items.c.title,
            t.items.c.signature, t.items.c.published_at, t.items.c.decision_method,
        )
        .join(t.sources, t.sources.c.id == t.items.c.source_id)
        .order_by(t.items.c.id)
    )


def _member(r) -> ClusterMember:  # type: ignore[no-untyped-def]
    return ClusterMember(r.id, r.source, r.url, r.title, r.signature, r.published_at, r.decision_method)


def clusters(db: Database, *, min_size: int = 1) -> list[ClusterRow]:
    """Clusters of at least ``min_size`` items with their members (signatures included)."""
    with db.read() as conn:
        cluster_rows = conn.execute(
            select(t.clusters).where(t.clusters.c.size >= min_size).order_by(t.clusters.c.id)
        ).all()
        wanted = [c.id for c in cluster_rows]
        members: dict[int, list[ClusterMember]] = {}
        for start in range(0, len(wanted), CHUNK):
            for r in conn.execute(_member_query().where(t.items.c.cluster_id.in_(wanted[start : start + CHUNK]))):
                members.setdefault(r.cluster_id, []).append(_member(r))
    return [
        ClusterRow(c.id, c.canonical_item_id, c.size, c.updated_at, tuple(members.get(c.id, ())))
        for c in cluster_rows
    ]


def item(db: Database, item_id: int) -> ItemDetail | None:
    """One item with everything known about it: decision, removals, cluster members (None: no such item)."""
    with db.read() as conn:
        row = conn.execute(
            select(t.items, t.sources.c.name.label("source"))
            .join(t.sources, t.sources.c.id == t.items.c.source_id)
            .where(t.items.c.id == item_id)
        ).first()
        if row is None:
            return None
        removals = tuple(
            Removal(rule=r.rule, text=r.text, position=r.position) for r in conn.execute(
                select(t.removals.c.rule, t.removals.c.position, t.removals.c.text)
                .where(t.removals.c.item_id == item_id).order_by(t.removals.c.id)
            )
        )
        cluster = conn.execute(select(t.clusters).where(t.clusters.c.id == row.cluster_id)).first()
        members = tuple(_member(r) for r in conn.execute(_member_query().where(t.items.c.cluster_id == row.cluster_id)))
        changes = tuple(
            CanonicalChange(r.id, r.cluster_id, r.old_item_id, r.new_item_id, r.changed_at, r.reason)
            for r in conn.execute(
                select(t.canonical_changes).where(t.canonical_changes.c.cluster_id == row.cluster_id)
                .order_by(t.canonical_changes.c.id)
            )
        )
    return ItemDetail(
        item_id=row.id, source=row.source, url=row.url, guid=row.guid, title=row.title, author=row.author,
        published_at=row.published_at, fetched_at=row.fetched_at, input_kind=row.input_kind, text=row.text,
        notes=row.notes, content_hash=row.content_hash, signature=row.signature, cluster_id=row.cluster_id,
        canonical_item_id=cluster.canonical_item_id if cluster else None,
        decision_method=row.decision_method, decision_similarity=row.decision_similarity,
        decision_containment=row.decision_containment, decision_matched_item_id=row.decision_matched_item_id,
        decision_reason=row.decision_reason, removals=removals, members=members, canonical_changes=changes,
        decision_evidence=tuple(Signal(**s) for s in json.loads(row.decision_evidence or "[]")),
    )


def boilerplate(db: Database, source: str | None = None) -> list[LearnedParagraph]:
    """Learned paragraphs per source, oldest first, with the number of items each was removed from."""
    removed = (
        select(func.count(t.removals.c.item_id.distinct()))
        .select_from(t.removals.join(t.items, t.items.c.id == t.removals.c.item_id))
        .where(and_(t.removals.c.rule == "learned", t.removals.c.text == t.boilerplate.c.text,
                    t.items.c.source_id == t.boilerplate.c.source_id))
        .correlate(t.boilerplate)
        .scalar_subquery()
    )
    query = (
        select(t.sources.c.name.label("source"), t.boilerplate.c.key, t.boilerplate.c.text,
               t.boilerplate.c.seen, t.boilerplate.c.window, t.boilerplate.c.learned_at,
               removed.label("removed"))
        .join(t.sources, t.sources.c.id == t.boilerplate.c.source_id)
        .order_by(t.sources.c.name, t.boilerplate.c.learned_at)
    )
    if source:
        query = query.where(t.sources.c.name == source)
    with db.read() as conn:
        return [LearnedParagraph(**r._mapping) for r in conn.execute(query)]


def stories(
    db: Database, *, since: datetime | None = None, source: str | None = None, limit: int | None = None,
) -> list[Story]:
    """Clusters as stories, most recently changed first: canonical item plus the other copies."""
    canonical = t.items.alias("canonical")
    query = (
        select(
            t.clusters.c.id, t.clusters.c.uid, t.clusters.c.created_at, t.clusters.c.updated_at,
            canonical.c.id.label("item_id"), t.sources.c.name.label("source"), canonical.c.title, canonical.c.url,
            canonical.c.author, canonical.c.language, canonical.c.published_at, canonical.c.text,
        )
        .join(canonical, canonical.c.id == t.clusters.c.canonical_item_id)
        .join(t.sources, t.sources.c.id == canonical.c.source_id)
        .order_by(t.clusters.c.updated_at.desc(), t.clusters.c.id.desc())
    )
    if since is not None:
        query = query.where(t.clusters.c.updated_at >= since)
    if source is not None:
        member, member_source = t.items.alias("member"), t.sources.alias("member_source")
        query = query.where(
            select(member.c.id)
            .join(member_source, member_source.c.id == member.c.source_id)
            .where(and_(member.c.cluster_id == t.clusters.c.id, member_source.c.name == source))
            .exists()
        )
    if limit:
        query = query.limit(limit)
    with db.read() as conn:
        rows = conn.execute(query).all()
        copies: dict[int, list[Copy]] = {}
        ids = [r.id for r in rows]
        for start in range(0, len(ids), CHUNK):
            for r in conn.execute(
                select(t.items.c.id, t.items.c.cluster_id, t.sources.c.name, t.items.c.url, t.items.c.title,
                       t.items.c.published_at)
                .join(t.sources, t.sources.c.id == t.items.c.source_id)
                .join(t.clusters, t.clusters.c.id == t.items.c.cluster_id)
                .where(and_(t.items.c.cluster_id.in_(ids[start : start + CHUNK]),
                            t.items.c.id != t.clusters.c.canonical_item_id))
                .order_by(t.items.c.id)
            ):
                copies.setdefault(r.cluster_id, []).append(Copy(r.id, r.name, r.url, r.title, r.published_at))
    return [
        Story(
            cluster_id=r.id, uid=r.uid, created_at=r.created_at, updated_at=r.updated_at, item_id=r.item_id,
            source=r.source, title=r.title, url=r.url, author=r.author, language=r.language,
            published_at=r.published_at, text=r.text, copies=tuple(copies.get(r.id, ())),
        )
        for r in rows
    ]
