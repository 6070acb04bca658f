"""The per-item transaction: candidate lookup, dedup decision, item rows, cluster change.

``Writer.commit_item`` writes one item with everything that belongs to it — the item
row, its LSH band keys, removals and paragraph sightings, its cluster decision, any
change of canonical, boilerplate it teaches its source — all or nothing. The decision
itself is a pure function passed in (``dedup.decide``): the writer gathers the
candidates inside the transaction, calls it and writes what it returns.

On PostgreSQL the transaction first takes advisory locks on the item's band keys,
content hash and URL, so concurrent workers deciding copies of one story serialise
and agree on one cluster.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ingest import dedup
from ingest.errors import LeaseLost, StoreError
from ingest.models import Candidate, DedupDecision, Document, Entry, Fingerprint, ItemOutcome, Member
from ingest.store import boilerplate, clusters
from ingest.store import schema as t
from ingest.store.bulk import Recleaned, reclean_items
from ingest.store.engine import CHUNK, Database, Transaction, short, utcnow
from ingest.store.leases import Lease, holds
from ingest.store.statements import (
    FIRST_KEY, KEY_CAP, KEYS_PER_LOOKUP, SAME_CONTENT, SAME_URL, Q, candidate_lookup, evidence_json, write_index,
)


class Writer:
    """Writes items, each with its dedup decision, inside a ``Batch``."""

    def __init__(self, db: Database, conn: Connection | None) -> None:
        self._db = db
        self._conn = conn  # the batch's transaction; None: a transaction per item

    def commit_item(
        self,
        *,
        source_id: int,
        entry: Entry,
        canonical_url: str | None,
        document: Document,
        fp: Fingerprint,
        decide: Callable[[Sequence[Candidate]], DedupDecision],
        policy: Callable[[Member], tuple],
        max_candidates: int,
        sightings: Sequence[tuple[str, str]] = (),
        learn: tuple[int, int] | None = None,
        fetched_at: datetime | None = None,
        reclean: Callable[[str, frozenset[str], datetime | None], Recleaned | None] | None = None,
        lease: Lease | None = None,
    ) -> ItemOutcome:
        """Write one item, its dedup decision and its cluster change, all or nothing.

        ``decide`` gets the candidates found inside the transaction and returns the
        decision (pure: dedup.decide). With ``learn`` (min_count, window), paragraphs
        this item makes boilerplate of its source are learned and, with ``reclean``,
        removed from the source's stored items that carry them (this one included), in
        the same transaction. With ``lease``, nothing is written unless this worker
        still holds the source's lease (``LeaseLost``: fenced out).
        """
        with self._item() as conn:
            now = fetched_at or utcnow()
            if lease is not None and not holds(conn, self._db, lease):
                raise LeaseLost(f"lease on source {lease.name!r} lost (expired or taken over): item not written")
            if self._db.is_postgres:
                # before the existence check: two workers writing the same entry (two
                # `--once` runs, two daemons) serialise on its identity, so the second
                # finds the first's row instead of a duplicate key
                waited = time.perf_counter()
                _advisory_locks(conn, source_id, entry.identity, fp, canonical_url)
                if self._db.on_lock_wait is not None:
                    self._db.on_lock_wait(time.perf_counter() - waited)
            existing = conn.execute(Q.existing, {"b_source": source_id, "b_identity": entry.identity}).first()
            if existing and existing.content_hash == fp.content_hash and existing.title == document.title:
                conn.execute(Q.touch_entry, {"b_item": existing.id, "b_entry_hash": entry.entry_hash})
                return ItemOutcome(existing.id, "unchanged", existing.cluster_id)

            exclude = existing.id if existing else None
            candidates, canonicals = lookup(conn, fp, canonical_url, exclude, max_candidates)
            decision = decide(candidates)
            row = _item_values(source_id, entry, canonical_url, document, fp, decision, now)

            if existing is None:
                joins = decision.kind == "duplicate" and decision.cluster_id is not None
                if joins:
                    cluster_id = decision.cluster_id
                else:
                    cluster_id = conn.execute(Q.new_cluster, {"b_now": now}).scalar_one()
                item_id = conn.execute(Q.insert_item, dict(row, cluster_id=cluster_id, fetched_at=now)).scalar_one()
                if joins:
                    conn.execute(Q.grow_cluster, {"b_cluster": cluster_id, "b_now": now})
                    current = canonicals.get(cluster_id)
                    if current is None:
                        clusters.elect_canonical(conn, cluster_id, item_id, policy, now)
                    else:  # the new member only has to beat the canonical, read with the candidates
                        priority = conn.execute(Q.source_priority, {"b_source": source_id}).scalar_one()
                        new = Member(item_id, document.published_at, now, priority or 0, len(document.text))
                        best = min((current, new), key=policy).item_id
                        clusters.set_canonical(conn, cluster_id, current.item_id, best, now)
                else:  # a new cluster's first member is its canonical: no election, no change to record
                    conn.execute(Q.first_member, {"b_cluster": cluster_id, "b_item": item_id, "b_now": now})
                for lone in decision.absorb:
                    clusters.absorb(conn, lone, cluster_id, policy, now)
                status = "new"
            else:
                item_id = existing.id
                old_cluster = existing.cluster_id
                size = conn.execute(Q.cluster_size, {"b_cluster": old_cluster}).scalar_one()
                cluster_id, row["decision_reason"] = dedup.placement(decision, old_cluster, size)
                conn.execute(update(t.items).where(t.items.c.id == item_id).values(cluster_id=cluster_id, **row))
                for statement in Q.drop_index:
                    conn.execute(statement, {"b_item": item_id})
                if cluster_id != old_cluster:
                    clusters.drop_cluster(conn, old_cluster)
                    conn.execute(Q.grow_cluster, {"b_cluster": cluster_id, "b_now": now})
                clusters.elect_canonical(conn, cluster_id, None, policy, now)
                status = "updated"

            write_index(conn, item_id, fp, document.removals)
            sighted = boilerplate.record_sightings(conn, source_id, item_id, sightings)
            learned = boilerplate.learn(conn, source_id, item_id, sightings, learn, now) if sighted and learn else ()
            if learned and reclean is not None:
                keys = frozenset(learned)
                carriers = boilerplate.carriers(conn, source_id, keys)
                reclean_items(conn, carriers, lambda text_, when: reclean(text_, keys, when), now)
            return ItemOutcome(item_id, status, cluster_id, decision, learned)

    @contextmanager
    def _item(self) -> Iterator[Connection]:
        """The connection to write one item with, all or nothing; database errors as StoreError."""
        if self._conn is None:
            with self._db.begin(immediate=True) as conn:
                yield conn
            return
        # a failing item rolls back to its savepoint, alone. Issued as SQL: SQLAlchemy's
        # begin_nested() cost 8 % of the writer's Python time, and only SQLite gets here
        conn = self._conn
        try:
            conn.exec_driver_sql("SAVEPOINT item")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT item")
                conn.exec_driver_sql("RELEASE SAVEPOINT item")
                raise
            conn.exec_driver_sql("RELEASE SAVEPOINT item")
        except SQLAlchemyError as exc:
            raise StoreError(short(exc)) from exc


class Batch:
    """A batch of item writes: ``with Batch(db) as writer: writer.commit_item(...)``.

    SQLite: one write transaction for the batch, each item in its own savepoint, so
    an item that fails leaves nothing and the others still commit, and a crash loses
    the uncommitted batch but never half an item. Most of a SQLite commit is writing
    the pages an item touched (items, FTS, LSH and paragraph indexes) to the WAL;
    the items of a batch share many of them (docs/facts.md#write-batches).
    PostgreSQL: each item commits on its own, so its advisory locks are held for one
    item and two workers' batches cannot deadlock on each other's keys.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._transaction: Transaction | None = None

    def __enter__(self) -> Writer:
        if self._db.is_postgres:
            return Writer(self._db, None)
        self._transaction = self._db.begin(immediate=True)
        return Writer(self._db, self._transaction.__enter__())

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if self._transaction is None:
            return False
        return self._transaction.__exit__(exc_type, exc, tb)


def lookup(
    conn: Connection, fp: Fingerprint, canonical_url: str | None, exclude: int | None, limit: int
) -> tuple[list[Candidate], dict[int, Member]]:
    """The candidates for an item with ``fp``, and the canonical member of each candidate cluster."""
    ids: dict[int, int] = {}
    flags: dict[int, set[str]] = {}
    hits: dict[int, int] = {}
    per_key: dict[int, int] = {}
    keys = sorted(set(fp.band_keys) | set(fp.probe_keys))  # probe keys: looked up, never stored
    # One statement: items with the same content hash or canonical URL, then one
    # index seek per key, each capped at the newest KEY_CAP items: a key that many
    # items share (a boilerplate paragraph not learned yet, a band of a very short
    # text) cannot make the lookup grow with the store; hits are counted here.
    for start in range(0, max(len(keys), 1), KEYS_PER_LOOKUP):
        chunk = keys[start : start + KEYS_PER_LOOKUP]
        params: dict[str, Any] = {f"k{i}": key for i, key in enumerate(chunk)} | {"cap": KEY_CAP}
        if start == 0:
            params |= {"hash": fp.content_hash, "url": canonical_url, "limit": limit}
        statement = candidate_lookup(len(chunk), start == 0, conn.dialect.paramstyle)
        for item_id, kind in conn.exec_driver_sql(statement, params):
            if kind >= FIRST_KEY:
                key = chunk[kind - FIRST_KEY]
                per_key[key] = per_key.get(key, 0) + 1
            if item_id == exclude:
                continue
            if kind == SAME_CONTENT:
                ids.setdefault(item_id, 0)
                flags.setdefault(item_id, set()).add("same_content")
            elif kind == SAME_URL:
                ids.setdefault(item_id, 0)
                flags.setdefault(item_id, set()).add("same_url")
            else:
                hits[item_id] = hits.get(item_id, 0) + 1
    HOT_KEYS.add_all(key for key, count in per_key.items() if count >= KEY_CAP)
    for item_id, count in sorted(hits.items(), key=lambda kv: (-kv[1], -kv[0]))[: limit + 1]:
        ids[item_id] = max(ids.get(item_id, 0), count)
    if not ids:
        return [], {}
    # with the canonical item of every candidate cluster, always verified too (a
    # canonical item lies in its own cluster, so it adds no cluster)
    rows = [r for r in _candidate_rows(conn, list(ids)) if r.id != exclude]
    candidates = [
        Candidate(
            item_id=r.id, cluster_id=r.cluster_id, title=r.title, text=r.text,
            is_canonical=r.canonical_item_id == r.id, band_hits=ids.get(r.id, 0),
            same_url="same_url" in flags.get(r.id, ()), same_content="same_content" in flags.get(r.id, ()),
            features=r.features or b"", when=r.published_at or r.fetched_at, signature=r.signature,
            shingle_count=r.shingle_count,
        )
        for r in rows
    ]
    canonicals = {
        r.cluster_id: Member(r.id, r.published_at, r.fetched_at, r.priority or 0, len(r.text))
        for r in rows if r.canonical_item_id == r.id
    }
    return candidates, canonicals


def _candidate_rows(conn: Connection, ids: list[int]) -> list[Any]:
    rows: dict[int, Any] = {}
    for start in range(0, len(ids), CHUNK):
        for row in conn.execute(Q.candidate_rows, {"b_ids": ids[start : start + CHUNK]}):
            rows.setdefault(row.id, row)
    return list(rows.values())


def _advisory_locks(
    conn: Connection, source_id: int, identity: str, fp: Fingerprint, canonical_url: str | None,
) -> None:
    """Transaction-scoped locks on the item's identity, band keys, content hash and URL.

    Copies of one story share band keys, hash or URL, so two workers deciding them
    serialise and agree on one cluster; the same entry shares its identity. Sorted,
    so two workers always lock in the same order and never deadlock; held for one
    item (safe behind PgBouncer's transaction pooling).
    """
    # a hot key (shared by KEY_CAP or more items: boilerplate not learned yet) would
    # serialise every writer of the fleet on one lock; copies share other keys too
    keys = {key for key in fp.band_keys if key not in HOT_KEYS}
    keys.add(_key63(fp.content_hash))
    keys.add(_key63(hashlib.sha256(f"{source_id}\x00{identity}".encode()).hexdigest()))
    if canonical_url:
        keys.add(_key63(hashlib.sha256(canonical_url.encode()).hexdigest()))
    conn.execute(
        text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": sorted(keys)},
    )


def _key63(hex_digest: str) -> int:
    return int(hex_digest[:15], 16)


class _HotKeys:
    """Index keys this process saw shared by KEY_CAP or more items (bounded: the newest kept)."""

    def __init__(self, most: int = 100_000) -> None:
        self._keys: dict[int, None] = {}
        self._most = most
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add_all(self, keys: Iterable[int]) -> None:
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)
                self._keys[key] = None
            while len(self._keys) > self._most:
                del self._keys[next(iter(self._keys))]


HOT_KEYS = _HotKeys()


def _item_values(
    source_id: int, entry: Entry, canonical_url: str | None, document: Document, fp: Fingerprint,
    decision: DedupDecision, now: datetime,
) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "identity": entry.identity,
        "guid": entry.guid,
        "url": entry.url,
        "canonical_url": canonical_url,
        "title": document.title,
        "author": document.author,
        "language": (document.language or "")[:35] or None,
        "published_at": document.published_at,
        "updated_at": now,
        "entry_hash": entry.entry_hash,
        "input_kind": document.input_kind,
        "text": document.text,
        "content_hash": fp.content_hash,
        "shingle_count": fp.shingle_count,
        "signature": fp.signature,
        "decision_method": decision.method,
        "decision_similarity": decision.similarity,
        "decision_containment": decision.containment,
        "decision_matched_item_id": decision.matched_item_id,
        "decision_reason": decision.reason,
        "notes": "\n".join(document.notes) or None,
        "features": fp.features or None,
        "decision_evidence": evidence_json(decision),
    }
