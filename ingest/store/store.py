"""The canonical store: sources, items, clusters, the LSH index and provenance.

``Store.open(url, scheme)`` migrates the schema and checks that the store's
signatures were made the way the running config would make them. Every item is
written by ``commit_item`` in one transaction with its dedup decision, LSH bands,
removals and cluster change, so a crash never leaves half an item.

The decision itself is a pure function passed in (``decide``): the store gathers
candidates inside the transaction, calls it, and writes what it returns. On
PostgreSQL the transaction first takes advisory locks on the item's band keys,
content hash and URL, so concurrent workers deciding copies of one story serialise
and agree on one cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import (
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ingest.config import SourceConfig
from ingest.errors import SignatureMismatch, StoreError
from ingest.models import (
    Candidate,
    Copy,
    DedupDecision,
    Document,
    Entry,
    Fingerprint,
    ItemOutcome,
    Member,
    PollRecord,
    Removal,
    SearchHit,
    SourceState,
    Story,
    StoredItem,
)
from ingest.store import schema as t

# Candidate item ids are read in chunks below SQLite's bound-parameter limit.
_CHUNK = 500
# Items read per LSH/paragraph key in a lookup (the newest first); see _candidates.
KEY_CAP = 50

# What re-cleaning a stored text gives: the new text, its fingerprint and the removals;
# None when nothing changed. Made by the pipeline (clean + dedup), applied by the store.
Recleaned = tuple[str, Fingerprint, tuple[Removal, ...]]


def normalize_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _config_hash(source: SourceConfig) -> str:
    return hashlib.sha256(source.url.encode("utf-8")).hexdigest()[:16]


class Store:
    """A connection to one store. Thread-safe (one pooled engine)."""

    def __init__(self, engine: Engine, scheme: dict[str, Any] | None) -> None:
        self.engine = engine
        self.scheme = scheme
        self.is_postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; threads that wait for it in SQLite's busy
        # handler sleep in steps of up to 100 ms, so with many polling threads the
        # lock sat idle most of the time (bench: store 82% of thread time). Waiting
        # on a Python lock hands the writer slot over at once.
        self._writer = None if self.is_postgres else threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, url: str, scheme: dict[str, Any] | None = None, *, check_scheme: bool = True) -> "Store":
        """Open (creating and migrating) the store at ``url``; check the signature scheme."""
        url = normalize_url(url)
        try:
            engine = create_engine(url, future=True, pool_pre_ping=url.startswith("postgresql"))
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot open {url!r}: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        store = cls(engine, scheme)
        try:
            store._migrate()
            if scheme is not None and check_scheme:
                store._check_scheme(scheme)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"cannot open {engine.url.render_as_string(hide_password=True)}: {_short(exc)}") from exc
        except StoreError:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(7306329)"))  # one migrator at a time
            row = None
            if not self.engine.dialect.has_table(conn, "meta"):
                version = 0
            else:
                row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version")).first()
                version = int(row[0]) if row else 0
            if version > t.SCHEMA_VERSION:
                raise StoreError(f"store schema version {version} is newer than this ingest ({t.SCHEMA_VERSION})")
            found = version
            for number, _description, migrate in t.MIGRATIONS:
                if number > version:
                    migrate(conn)
                    version = number
            # Write only when something changed: a read-only open (``ingest items`` next to a
            # running daemon) must not upgrade its read transaction to a write, which SQLite
            # refuses at once with "database is locked" while the daemon is writing (WAL).
            if version != found or row is None:
                self._set_meta(conn, "schema_version", str(version))

    def _check_scheme(self, scheme: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            if self.is_postgres:
                # two daemons opening a new store at once would both insert the scheme row
                conn.execute(text("SELECT pg_advisory_xact_lock(7306329)"))
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "signature_scheme")).first()
            if row is None:
                self._set_meta(conn, "signature_scheme", json.dumps(scheme, sort_keys=True))
                return
            stored = json.loads(row[0])
        differences = [
            f"{key}: store has {stored.get(key)!r}, config gives {scheme.get(key)!r}"
            for key in sorted(set(stored) | set(scheme))
            if stored.get(key) != scheme.get(key)
        ]
        if differences:
            raise SignatureMismatch(
                "signatures in the store were made differently ("
                + "; ".join(differences)
                + "): run `ingest resign` to re-sign the stored text with the current settings"
            )

    def stored_scheme(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "signature_scheme")).first()
        return json.loads(row[0]) if row else None

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        done = conn.execute(update(t.meta).where(t.meta.c.key == key).values(value=value)).rowcount
        if not done:
            conn.execute(insert(t.meta).values(key=key, value=value))

    def ping(self) -> None:
        """Raise StoreError unless the store answers."""
        database = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if database and database != ":memory:" and not database.startswith("file:") and not os.path.exists(database):
            # a pooled SQLite connection keeps reading a deleted or moved file through its
            # open descriptor: only the path tells that new writes would be lost
            raise StoreError(f"store unreachable: {database} no longer exists")
        try:
            with self.engine.connect() as conn:
                conn.execute(select(func.count()).select_from(t.meta))
        except SQLAlchemyError as exc:
            raise StoreError(f"store unreachable: {_short(exc)}") from exc

    # ------------------------------------------------------------------ sources

    def sync_sources(self, configs: Iterable[SourceConfig]) -> dict[str, SourceState]:
        """Insert or update source rows from the config; a changed URL resets fetch state."""
        configs = list(configs)
        # immediate: it reads then writes; a deferred SQLite transaction whose snapshot a
        # poll's commit made stale cannot take the write lock ("database is locked" at
        # once, no busy wait) - seen on a SIGHUP reload while the daemon was polling
        with self._begin(immediate=True) as conn:
            if self.is_postgres:  # two daemons starting at once would both insert a new source
                conn.execute(text("SELECT pg_advisory_xact_lock(7306330)"))
            rows = {r.name: r for r in conn.execute(select(t.sources))}
            for source in configs:
                row = rows.get(source.name)
                digest = _config_hash(source)
                if row is None:
                    conn.execute(
                        insert(t.sources).values(
                            name=source.name, url=source.url, config_hash=digest, priority=source.priority,
                            consecutive_errors=0, error_count=0, poll_count=0, request_count=0, active=True,
                        )
                    )
                elif row.config_hash != digest:
                    conn.execute(
                        update(t.sources).where(t.sources.c.id == row.id).values(
                            url=source.url, config_hash=digest, priority=source.priority, active=True,
                            effective_url=None, etag=None, last_modified=None, body_hash=None,
                            disabled_reason=None, consecutive_errors=0, next_poll_at=None, feed_ttl=None,
                        )
                    )
                elif row.priority != source.priority or not row.active:
                    conn.execute(
                        update(t.sources).where(t.sources.c.id == row.id).values(priority=source.priority, active=True)
                    )
            names = {s.name for s in configs}
            stale = [r.id for r in rows.values() if r.name not in names and r.active]
            if stale:
                conn.execute(update(t.sources).where(t.sources.c.id.in_(stale)).values(active=False))
        return {s.name: s for s in self.source_states() if s.name in {c.name for c in configs}}

    def source_states(self, include_inactive: bool = False) -> list[SourceState]:
        query = select(t.sources).order_by(t.sources.c.name)
        if not include_inactive:
            query = query.where(t.sources.c.active.is_(True))
        with self.engine.connect() as conn:
            return [_state(row) for row in conn.execute(query)]

    def source_state(self, name: str) -> SourceState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.sources).where(t.sources.c.name == name)).first()
        return _state(row) if row else None

    def record_poll(self, source_id: int, poll: PollRecord) -> None:
        """Keep the outcome of one poll: validators on success, error counts on failure."""
        values: dict[str, Any] = {
            "last_polled_at": poll.at,
            "next_poll_at": poll.next_poll_at,
            "poll_count": t.sources.c.poll_count + 1,
            "request_count": t.sources.c.request_count + poll.requests,
        }
        if poll.ok:
            values.update(
                last_success_at=poll.at, consecutive_errors=0, last_error=None, last_error_kind=None, feed_ttl=poll.ttl
            )
            if poll.etag is not None or poll.last_modified is not None or poll.body_hash is not None:
                values.update(etag=poll.etag, last_modified=poll.last_modified)
            if poll.body_hash is not None:
                values["body_hash"] = poll.body_hash
        else:
            values.update(
                last_error=poll.error, last_error_kind=poll.error_kind,
                consecutive_errors=t.sources.c.consecutive_errors + 1, error_count=t.sources.c.error_count + 1,
            )
        if poll.effective_url is not None:
            values["effective_url"] = poll.effective_url
        if poll.disabled_reason is not None:
            values["disabled_reason"] = poll.disabled_reason
        with self._begin() as conn:
            conn.execute(update(t.sources).where(t.sources.c.id == source_id).values(**values))

    # ------------------------------------------------------------------ items

    def known_entries(self, source_id: int) -> dict[str, str]:
        """identity -> entry hash of the source's stored items (to skip unchanged entries)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.identity, t.items.c.entry_hash).where(t.items.c.source_id == source_id)
            )
            return {r.identity: r.entry_hash for r in rows}

    def learned_boilerplate(self, source_id: int) -> frozenset[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.boilerplate.c.key).where(t.boilerplate.c.source_id == source_id))
            return frozenset(r.key for r in rows)

    def writer(self) -> "_WriterContext":
        """A batch of item writes: ``with store.writer() as w: w.commit_item(...)``.

        SQLite: one write transaction for the batch, each item in its own savepoint, so
        an item that fails leaves nothing and the others still commit, and a crash loses
        the uncommitted batch but never half an item. Most of a SQLite commit is writing
        the pages an item touched (items, FTS, LSH and paragraph indexes) to the WAL;
        the items of a batch share many of them (bench/run.py: see the README).
        PostgreSQL: each item commits on its own, so its advisory locks are held for one
        item and two workers' batches cannot deadlock on each other's keys.
        """
        return _WriterContext(self)

    def commit_item(self, **item: Any) -> ItemOutcome:
        """Write one item in its own transaction (``Writer.commit_item`` has the arguments)."""
        with self.writer() as writer:
            return writer.commit_item(**item)

    def _lookup(
        self, conn: Connection, fp: Fingerprint, canonical_url: str | None, exclude: int | None, limit: int
    ) -> tuple[list[Candidate], dict[int, Member]]:
        """The candidates for an item with ``fp``, and the canonical member of each candidate cluster."""
        ids: dict[int, int] = {}
        flags: dict[int, set[str]] = {}
        hits: dict[int, int] = {}
        keys = sorted(set(fp.band_keys))
        # One statement: items with the same content hash or canonical URL, then one
        # index seek per key, each capped at the newest KEY_CAP items: a key that many
        # items share (a boilerplate paragraph not learned yet, a band of a very short
        # text) cannot make the lookup grow with the store; hits are counted here.
        for start in range(0, max(len(keys), 1), _KEYS_PER_LOOKUP):
            chunk = keys[start : start + _KEYS_PER_LOOKUP]
            params: dict[str, Any] = {f"k{i}": key for i, key in enumerate(chunk)} | {"cap": KEY_CAP}
            if start == 0:
                params |= {"hash": fp.content_hash, "url": canonical_url, "limit": limit}
            lookup = _candidate_lookup(len(chunk), start == 0, conn.dialect.paramstyle)
            for item_id, kind, count in conn.exec_driver_sql(lookup, params):
                if item_id == exclude:
                    continue
                if kind == _SAME_CONTENT:
                    ids.setdefault(item_id, 0)
                    flags.setdefault(item_id, set()).add("same_content")
                elif kind == _SAME_URL:
                    ids.setdefault(item_id, 0)
                    flags.setdefault(item_id, set()).add("same_url")
                else:
                    hits[item_id] = hits.get(item_id, 0) + count
        for item_id, count in sorted(hits.items(), key=lambda kv: (-kv[1], -kv[0]))[: limit + 1]:
            ids[item_id] = max(ids.get(item_id, 0), count)
        if not ids:
            return [], {}
        # with the canonical item of every candidate cluster, always verified too (a
        # canonical item lies in its own cluster, so it adds no cluster)
        rows = [r for r in self._candidate_rows(conn, list(ids)) if r.id != exclude]
        candidates = [
            Candidate(
                item_id=r.id, cluster_id=r.cluster_id, title=r.title, text=r.text,
                is_canonical=r.canonical_item_id == r.id, band_hits=ids.get(r.id, 0),
                same_url="same_url" in flags.get(r.id, ()), same_content="same_content" in flags.get(r.id, ()),
            )
            for r in rows
        ]
        canonicals = {
            r.cluster_id: Member(r.id, r.published_at, r.fetched_at, r.priority or 0, len(r.text))
            for r in rows if r.canonical_item_id == r.id
        }
        return candidates, canonicals

    def candidates(self, fp: Fingerprint, canonical_url: str | None = None, limit: int = 20) -> list[Candidate]:
        """The candidates a new item with fingerprint ``fp`` would be verified against (read-only)."""
        with self.engine.connect() as conn:
            return self._lookup(conn, fp, canonical_url, None, limit)[0]

    def _candidate_rows(self, conn: Connection, ids: list[int]) -> list[Any]:
        rows: dict[int, Any] = {}
        for start in range(0, len(ids), _CHUNK):
            for row in conn.execute(_Q.candidate_rows, {"b_ids": ids[start : start + _CHUNK]}):
                rows.setdefault(row.id, row)
        return list(rows.values())

    def _absorb(
        self, conn: Connection, lone: int, cluster_id: int, policy: Callable[[Member], tuple], now: datetime,
    ) -> None:
        """Move the item of the one-item cluster ``lone`` into ``cluster_id`` (if it still has one item)."""
        if lone == cluster_id:
            return
        row = conn.execute(select(t.clusters.c.size, t.clusters.c.canonical_item_id).where(t.clusters.c.id == lone)).first()
        if row is None or row.size != 1 or row.canonical_item_id is None:
            return
        item_id = row.canonical_item_id
        conn.execute(update(t.items).where(t.items.c.id == item_id).values(
            cluster_id=cluster_id,
            decision_reason=func.coalesce(t.items.c.decision_reason, "") + f"; moved into cluster {cluster_id} by a later copy",
        ))
        _drop_cluster(conn, lone)
        conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(size=t.clusters.c.size + 1, updated_at=now))
        self._elect_canonical(conn, cluster_id, item_id, policy, now)

    def _elect_canonical(
        self, conn: Connection, cluster_id: int, new_item_id: int | None,
        policy: Callable[[Member], tuple], now: datetime,
    ) -> None:
        """Re-elect the cluster's canonical item; record a change of canonical."""
        current = conn.execute(_Q.canonical_of, {"b_cluster": cluster_id}).scalar_one()
        if new_item_id is not None and current is not None:
            # a new member only has to beat the current canonical
            found = conn.execute(_Q.members_by_id, {"b_ids": [current, new_item_id]})
        else:
            found = conn.execute(_Q.members_of_cluster, {"b_cluster": cluster_id})
        members = [Member(r.id, r.published_at, r.fetched_at, r.priority or 0, r.length or 0) for r in found]
        _set_canonical(conn, cluster_id, current, min(members, key=policy).item_id, now)

    def _learn(
        self, conn: Connection, source_id: int, item_id: int, paragraph_keys: Sequence[tuple[str, str]],
        learn: tuple[int, int], now: datetime,
    ) -> tuple[str, ...]:
        """Mark paragraphs seen in >= min_count different texts among the source's last ``window`` items.

        Items, not clusters, are counted, but versions of one text count once: two
        carriers are one text when the rest of their paragraphs (this one and learned
        boilerplate left out) overlap by half or more, weighted by length. So
        successive versions of one story ("UPDATE 1", "UPDATE 2" under new guids) never
        make their shared article paragraphs boilerplate, while short items that dedup
        put in one cluster *because* of a shared footer still teach it.
        """
        min_count, window = learn
        texts = dict(paragraph_keys)
        # one query answers "nothing new to learn", the case of almost every item
        frequent = [
            r.key for r in conn.execute(
                _Q.frequent_paragraphs,
                {"b_source": source_id, "b_item": item_id, "b_window": window, "b_min": min_count},
            )
        ]
        if not frequent:
            return ()
        known = {
            r.key for r in conn.execute(select(t.boilerplate.c.key).where(t.boilerplate.c.source_id == source_id))
        }
        recent = [
            r.id for r in conn.execute(
                select(t.items.c.id).where(t.items.c.source_id == source_id).order_by(t.items.c.id.desc()).limit(window)
            )
        ]
        contents: dict[int, dict[str, int]] = {}  # item -> paragraph key -> chars
        for r in conn.execute(
            select(t.paragraphs.c.item_id, t.paragraphs.c.key, t.paragraphs.c.chars)
            .where(and_(t.paragraphs.c.source_id == source_id, t.paragraphs.c.item_id.in_(recent)))
        ):
            if r.key not in known:
                contents.setdefault(r.item_id, {})[r.key] = r.chars or 1
        rows = []
        for key in frequent:
            carriers = [
                {k: c for k, c in content.items() if k != key}
                for item_id, content in sorted(contents.items()) if key in content
            ]
            seen = _distinct_texts(carriers)
            if seen >= min_count:
                rows.append(_Seen(key, seen))
        learned = [
            {"source_id": source_id, "key": r.key, "text": texts[r.key], "seen": r.seen, "window": window,
             "learned_at": now}
            for r in rows
        ]
        if learned:
            conn.execute(insert(t.boilerplate), learned)
        return tuple(row["key"] for row in learned)

    def _reclean(
        self, conn: Connection, item_ids: Sequence[int], reclean: Callable[[str], Recleaned | None], now: datetime,
    ) -> int:
        """Re-clean stored items: new text, signature and LSH bands, removals appended.

        The dedup decision and cluster of each item stay as they were: the item was
        judged on the text it had then, and moving items between clusters after the
        fact would change what users have already seen.
        """
        changed = 0
        for start in range(0, len(item_ids), _CHUNK):
            chunk = list(item_ids[start : start + _CHUNK])
            for row in conn.execute(select(t.items.c.id, t.items.c.text).where(t.items.c.id.in_(chunk))).all():
                result = reclean(row.text)
                if result is None:
                    continue
                new_text, fp, removals = result
                conn.execute(update(t.items).where(t.items.c.id == row.id).values(
                    text=new_text, content_hash=fp.content_hash, shingle_count=fp.shingle_count,
                    signature=fp.signature, updated_at=now,
                ))
                conn.execute(delete(t.lsh_bands).where(t.lsh_bands.c.item_id == row.id))
                _write_index(conn, row.id, fp, removals)
                changed += 1
        return changed

    def reprocess(
        self, source_id: int, reclean: Callable[[str], Recleaned | None], at: datetime | None = None,
    ) -> tuple[int, int]:
        """Re-clean every stored item of one source in one transaction: (items seen, items changed)."""
        with self._begin(immediate=True) as conn:
            ids = [r.id for r in conn.execute(
                select(t.items.c.id).where(t.items.c.source_id == source_id).order_by(t.items.c.id)
            )]
            return len(ids), self._reclean(conn, ids, reclean, at or _now())

    def resign(self, fingerprint: Callable[[str], Fingerprint], scheme: dict[str, Any]) -> int:
        """Re-sign every stored text and rebuild the LSH index, in one transaction."""
        count = 0
        with self._begin(immediate=True) as conn:
            conn.execute(delete(t.lsh_bands))
            ids = [r.id for r in conn.execute(select(t.items.c.id).order_by(t.items.c.id))]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                rows = conn.execute(select(t.items.c.id, t.items.c.text).where(t.items.c.id.in_(chunk))).all()
                bands: list[dict[str, int]] = []
                for row in rows:
                    fp = fingerprint(row.text)
                    conn.execute(
                        update(t.items).where(t.items.c.id == row.id).values(
                            signature=fp.signature, shingle_count=fp.shingle_count, content_hash=fp.content_hash
                        )
                    )
                    bands += [{"key": k, "item_id": row.id} for k in sorted(set(fp.band_keys))]
                    count += 1
                if bands:
                    conn.execute(insert(t.lsh_bands), bands)
            self._set_meta(conn, "signature_scheme", json.dumps(scheme, sort_keys=True))
        return count

    # ------------------------------------------------------------------ queries

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "items": conn.execute(select(func.count()).select_from(t.items)).scalar_one(),
                "clusters": conn.execute(select(func.count()).select_from(t.clusters)).scalar_one(),
                "sources": conn.execute(
                    select(func.count()).select_from(t.sources).where(t.sources.c.active.is_(True))
                ).scalar_one(),
            }

    def items(self, *, source: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored items with their source name, cluster and whether they are canonical."""
        query = (
            select(
                t.items.c.id, t.sources.c.name.label("source"), t.items.c.url, t.items.c.guid, t.items.c.title,
                t.items.c.author, t.items.c.published_at, t.items.c.fetched_at, t.items.c.text,
                t.items.c.cluster_id.label("cluster"), t.items.c.input_kind,
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
        with self.engine.connect() as conn:
            return [dict(r._mapping, canonical=bool(r.canonical)) for r in conn.execute(query)]

    def clusters(self, *, min_size: int = 1) -> list[dict[str, Any]]:
        """Clusters with their members (signatures included, for similarity to the canonical)."""
        with self.engine.connect() as conn:
            cluster_rows = conn.execute(
                select(t.clusters).where(t.clusters.c.size >= min_size).order_by(t.clusters.c.id)
            ).all()
            wanted = [c.id for c in cluster_rows]
            members: dict[int, list[dict[str, Any]]] = {}
            for start in range(0, len(wanted), _CHUNK):
                for r in conn.execute(
                    select(
                        t.items.c.id, t.items.c.cluster_id, t.sources.c.name.label("source"), t.items.c.url,
                        t.items.c.title, t.items.c.signature, t.items.c.published_at, t.items.c.decision_method,
                    )
                    .join(t.sources, t.sources.c.id == t.items.c.source_id)
                    .where(t.items.c.cluster_id.in_(wanted[start : start + _CHUNK]))
                    .order_by(t.items.c.id)
                ):
                    members.setdefault(r.cluster_id, []).append(dict(r._mapping))
        return [
            {"cluster": c.id, "canonical": c.canonical_item_id, "size": c.size, "updated_at": c.updated_at,
             "items": members.get(c.id, [])}
            for c in cluster_rows
        ]

    def item(self, item_id: int) -> dict[str, Any] | None:
        """One item with everything known about it: decision, removals, cluster members."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.items, t.sources.c.name.label("source"))
                .join(t.sources, t.sources.c.id == t.items.c.source_id)
                .where(t.items.c.id == item_id)
            ).first()
            if row is None:
                return None
            out = dict(row._mapping)
            out["removals"] = [
                dict(r._mapping) for r in conn.execute(
                    select(t.removals.c.rule, t.removals.c.position, t.removals.c.text)
                    .where(t.removals.c.item_id == item_id).order_by(t.removals.c.id)
                )
            ]
            cluster = conn.execute(select(t.clusters).where(t.clusters.c.id == row.cluster_id)).first()
            out["canonical_item_id"] = cluster.canonical_item_id if cluster else None
            out["members"] = [
                dict(r._mapping) for r in conn.execute(
                    select(t.items.c.id, t.sources.c.name.label("source"), t.items.c.title, t.items.c.url,
                           t.items.c.signature, t.items.c.decision_method)
                    .join(t.sources, t.sources.c.id == t.items.c.source_id)
                    .where(t.items.c.cluster_id == row.cluster_id).order_by(t.items.c.id)
                )
            ]
            out["canonical_changes"] = [
                dict(r._mapping) for r in conn.execute(
                    select(t.canonical_changes).where(t.canonical_changes.c.cluster_id == row.cluster_id)
                    .order_by(t.canonical_changes.c.id)
                )
            ]
        return out

    def boilerplate(self, source: str | None = None) -> list[dict[str, Any]]:
        """Learned paragraphs: source, key, text, seen (stories), window, learned_at, removed (items)."""
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
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # ------------------------------------------------------------------ feeds out

    def store_uid(self) -> str:
        """A UUID naming this store, made on first use: the id of the feeds it exports."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "store_uid")).first()
        if row is not None:
            return row[0]
        with self._begin(immediate=True) as conn:
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "store_uid")).first()
            if row is not None:  # another writer made it in between
                return row[0]
            value = str(uuid.uuid4())
            self._set_meta(conn, "store_uid", value)
            return value

    def stories(
        self, *, since: datetime | None = None, source: str | None = None, limit: int | None = None,
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
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            copies: dict[int, list[Copy]] = {}
            ids = [r.id for r in rows]
            for start in range(0, len(ids), _CHUNK):
                for r in conn.execute(
                    select(t.items.c.id, t.items.c.cluster_id, t.sources.c.name, t.items.c.url, t.items.c.title,
                           t.items.c.published_at)
                    .join(t.sources, t.sources.c.id == t.items.c.source_id)
                    .join(t.clusters, t.clusters.c.id == t.items.c.cluster_id)
                    .where(and_(t.items.c.cluster_id.in_(ids[start : start + _CHUNK]),
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

    def has_source(self, name: str) -> bool:
        """Whether a source of that name has ever been stored."""
        with self.engine.connect() as conn:
            return conn.execute(select(t.sources.c.id).where(t.sources.c.name == name)).first() is not None

    # ------------------------------------------------------------------ search

    def search(self, query: str, *, all_copies: bool = False, limit: int = 20) -> list[SearchHit]:
        """Full-text search over title and clean text, best first; one hit per cluster unless all_copies."""
        from ingest.search import fts5_query, plain_query

        per_cluster = "" if all_copies else "WHERE rn = 1"
        query = plain_query(query)
        match = fts5_query(query)  # raises SearchError on both backends when nothing is searchable
        if self.is_postgres:
            vector = "items.search_vector"
            sql = (
                "SELECT item_id, cluster_id, score FROM ("
                f" SELECT items.id AS item_id, items.cluster_id, ts_rank({vector}, q) AS score,"
                f" row_number() OVER (PARTITION BY items.cluster_id ORDER BY ts_rank({vector}, q) DESC, items.id) AS rn"
                f" FROM items, websearch_to_tsquery('simple'::regconfig, :q) AS q WHERE {vector} @@ q"
                f") AS hits {per_cluster} ORDER BY score DESC, item_id LIMIT :limit"
            )
            params = {"q": query, "limit": limit}
        else:
            # title hits weigh twice body hits (bm25 column weights); bm25 is lower-is-better
            # FTS5's auxiliary functions cannot appear in a window: rank in a materialised CTE first
            sql = (
                "WITH matched AS MATERIALIZED ("
                " SELECT items.id AS item_id, items.cluster_id, -bm25(items_fts, 2.0, 1.0) AS score"
                " FROM items_fts JOIN items ON items.id = items_fts.rowid WHERE items_fts MATCH :q"
                "), ranked AS (SELECT *, row_number() OVER (PARTITION BY cluster_id ORDER BY score DESC, item_id) AS rn"
                f" FROM matched) SELECT item_id, cluster_id, score FROM ranked {per_cluster}"
                " ORDER BY score DESC, item_id LIMIT :limit"
            )
            params = {"q": match, "limit": limit}
        try:
            with self.engine.connect() as conn:
                matches = conn.execute(text(sql), params).all()
                snippets: dict[int, str] = {}
                if matches and not self.is_postgres:
                    # snippets only for the hits shown: making one for every match cost most of
                    # the query time when a common word matched thousands of items
                    snippets = {
                        r.rowid: r.snippet for r in conn.execute(
                            text(
                                "SELECT rowid, snippet(items_fts, 1, '[', ']', '...', 16) AS snippet FROM items_fts"
                                " WHERE items_fts MATCH :q AND rowid IN :ids"
                            ).bindparams(bindparam("ids", expanding=True)),
                            {"q": match, "ids": [m.item_id for m in matches]},
                        )
                    }
                if self.is_postgres and matches:
                    snippets = {
                        r.id: r.snippet for r in conn.execute(
                            text(
                                "SELECT id, ts_headline('simple'::regconfig, text, websearch_to_tsquery('simple'::regconfig, :q),"
                                " 'StartSel=[, StopSel=], MaxWords=24, MinWords=10') AS snippet FROM items"
                                " WHERE id IN :ids"
                            ).bindparams(bindparam("ids", expanding=True)),
                            {"q": query, "ids": [m.item_id for m in matches]},
                        )
                    }
                cluster_rows = {
                    r.id: r for r in conn.execute(
                        select(t.clusters.c.id, t.clusters.c.canonical_item_id, t.clusters.c.size)
                        .where(t.clusters.c.id.in_({m.cluster_id for m in matches}))
                    )
                }
                shown = {m.item_id: m.item_id if all_copies else cluster_rows[m.cluster_id].canonical_item_id
                         for m in matches}
                details = {
                    r.id: r for r in conn.execute(
                        select(t.items.c.id, t.sources.c.name, t.items.c.title, t.items.c.url, t.items.c.published_at)
                        .join(t.sources, t.sources.c.id == t.items.c.source_id)
                        .where(t.items.c.id.in_(set(shown.values())))
                    )
                }
        except SQLAlchemyError as exc:
            raise StoreError(f"search failed: {_short(exc)}") from exc
        hits = []
        for m in matches:
            item = details[shown[m.item_id]]
            hits.append(SearchHit(
                item_id=item.id, cluster_id=m.cluster_id, source=item.name, title=item.title, url=item.url,
                published_at=item.published_at, score=round(float(m.score), 6),
                snippet=" ".join((snippets.get(m.item_id) or "").split()), cluster_size=cluster_rows[m.cluster_id].size,
            ))
        return hits

    # ------------------------------------------------------------------ retention and re-clustering

    def prune(
        self, before: datetime, policy: Callable[[Member], tuple], *, dry_run: bool = False,
        now: datetime | None = None,
    ) -> dict[str, int]:
        """Delete items published (else fetched) before ``before``, in one transaction.

        Clusters left empty are deleted; a cluster that lost its canonical item elects
        another under ``policy`` (recorded as a canonical change). The LSH bands,
        removals and paragraph sightings of the deleted items go with them. With
        ``dry_run`` everything is done and then rolled back, so the counts are exact.
        """
        now = now or _now()
        when = func.coalesce(t.items.c.published_at, t.items.c.fetched_at)
        counts = {"items": 0, "clusters_deleted": 0, "clusters_shrunk": 0, "canonicals_reelected": 0,
                  "lsh_bands": 0, "removals": 0, "paragraphs": 0}
        try:
            with self._begin(immediate=True) as conn:
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
                for start in range(0, len(lost), _CHUNK):
                    conn.execute(update(t.clusters).where(t.clusters.c.id.in_(lost[start : start + _CHUNK]))
                                 .values(canonical_item_id=None))
                for start in range(0, len(doomed), _CHUNK):
                    chunk = doomed[start : start + _CHUNK]
                    # explicit rather than relying on ON DELETE CASCADE, so the counts can be reported
                    for name, table in (("lsh_bands", t.lsh_bands), ("removals", t.removals),
                                        ("paragraphs", t.paragraphs)):
                        counts[name] += conn.execute(delete(table).where(table.c.item_id.in_(chunk))).rowcount
                    conn.execute(delete(t.items).where(t.items.c.id.in_(chunk)))
                for cluster_id in sorted(touched):
                    if not _recount(conn, cluster_id):
                        counts["clusters_deleted"] += 1
                        continue
                    counts["clusters_shrunk"] += 1
                    if self._reelect(conn, cluster_id, touched[cluster_id], policy, now,
                                     "the canonical item was pruned (retention)"):
                        counts["canonicals_reelected"] += 1
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        return counts

    def _reelect(
        self, conn: Connection, cluster_id: int, previous: int | None, policy: Callable[[Member], tuple],
        now: datetime, reason: str,
    ) -> bool:
        """Elect a canonical among all members of a cluster whose canonical may have left; record a change."""
        # with no current canonical, _elect_canonical looks at every member and records nothing
        conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(canonical_item_id=None))
        self._elect_canonical(conn, cluster_id, None, policy, now)
        elected = conn.execute(select(t.clusters.c.canonical_item_id).where(t.clusters.c.id == cluster_id)).scalar_one()
        if previous is None or elected == previous:  # a new cluster's first election is no change
            return False
        conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(updated_at=now))
        conn.execute(
            insert(t.canonical_changes).values(
                cluster_id=cluster_id, old_item_id=previous, new_item_id=elected, changed_at=now, reason=reason,
            )
        )
        return True

    def history(self) -> list[StoredItem]:
        """Every stored item with its fingerprint, in (published else fetched, id) order, for replaying dedup."""
        when = func.coalesce(t.items.c.published_at, t.items.c.fetched_at)
        with self.engine.connect() as conn:
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
                fingerprint=Fingerprint(r.content_hash, r.shingle_count, r.signature, tuple(sorted(bands.get(r.id, ())))),
            )
            for r in rows
        ]

    def apply_clusters(
        self, assignment: dict[int, int | None], groups: dict[int, list[int]], decisions: dict[int, DedupDecision],
        policy: Callable[[Member], tuple], *, now: datetime | None = None,
    ) -> dict[str, int]:
        """Re-partition items in one transaction: ``groups`` maps a label to its item ids and
        ``assignment`` a label to the existing cluster id it keeps (None: a new cluster).

        Items get their new cluster and decision; each changed cluster gets its size and
        a canonical re-elected under ``policy`` (changes recorded); clusters left empty go.
        """
        now = now or _now()
        counts = {"items_moved": 0, "clusters_created": 0, "clusters_deleted": 0, "canonicals_changed": 0}
        with self._begin(immediate=True) as conn:
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
                        )
                    if old[item_id] != cluster_id:
                        counts["items_moved"] += 1
                        touched.update((old[item_id], cluster_id))
                    conn.execute(update(t.items).where(t.items.c.id == item_id).values(**values))
            for cluster_id in sorted(touched):
                if not _recount(conn, cluster_id, changed_at=now):
                    counts["clusters_deleted"] += 1
                    continue
                if self._reelect(conn, cluster_id, previous.get(cluster_id), policy, now,
                                 "re-clustering changed the members"):
                    counts["canonicals_changed"] += 1
        return counts

    # ------------------------------------------------------------------ helpers

    def _begin(self, immediate: bool = False):  # type: ignore[no-untyped-def]
        return _Transaction(self.engine, immediate, self._writer if immediate else None)


class Writer:
    """Writes items, each with its dedup decision, inside a ``Store.writer()`` batch."""

    def __init__(self, store: Store, conn: Connection | None) -> None:
        self._store = store
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
        paragraph_keys: Sequence[tuple[str, str]] = (),
        learn: tuple[int, int] | None = None,
        fetched_at: datetime | None = None,
        reclean: Callable[[str, frozenset[str]], Recleaned | None] | None = None,
    ) -> ItemOutcome:
        """Write one item, its dedup decision and its cluster change, all or nothing.

        ``decide`` gets the candidates found inside the transaction and returns the
        decision (pure: dedup.decide). With ``learn`` (min_count, window), paragraphs
        this item makes boilerplate of its source are learned and, with ``reclean``,
        removed from the source's stored items that carry them (this one included), in
        the same transaction.
        """
        store = self._store
        with self._item() as conn:
            now = fetched_at or _now()
            existing = conn.execute(_Q.existing, {"b_source": source_id, "b_identity": entry.identity}).first()
            if existing and existing.content_hash == fp.content_hash and existing.title == document.title:
                conn.execute(_Q.touch_entry, {"b_item": existing.id, "b_entry_hash": entry.entry_hash})
                return ItemOutcome(existing.id, "unchanged", existing.cluster_id)

            if store.is_postgres:
                _advisory_locks(conn, fp, canonical_url)
            exclude = existing.id if existing else None
            candidates, canonicals = store._lookup(conn, fp, canonical_url, exclude, max_candidates)
            decision = decide(candidates)
            row = _item_values(source_id, entry, canonical_url, document, fp, decision, now)

            if existing is None:
                joins = decision.kind == "duplicate" and decision.cluster_id is not None
                if joins:
                    cluster_id = decision.cluster_id
                else:
                    cluster_id = conn.execute(_Q.new_cluster, {"b_now": now}).scalar_one()
                item_id = conn.execute(
                    _Q.insert_item, dict(row, cluster_id=cluster_id, fetched_at=now)
                ).scalar_one()
                if joins:
                    conn.execute(_Q.grow_cluster, {"b_cluster": cluster_id, "b_now": now})
                    current = canonicals.get(cluster_id)
                    if current is None:
                        store._elect_canonical(conn, cluster_id, item_id, policy, now)
                    else:  # the new member only has to beat the canonical, read with the candidates
                        priority = conn.execute(_Q.source_priority, {"b_source": source_id}).scalar_one()
                        new = Member(item_id, document.published_at, now, priority or 0, len(document.text))
                        best = min((current, new), key=policy).item_id
                        _set_canonical(conn, cluster_id, current.item_id, best, now)
                else:  # a new cluster's first member is its canonical: no election, no change to record
                    conn.execute(_Q.first_member, {"b_cluster": cluster_id, "b_item": item_id, "b_now": now})
                for lone in decision.absorb:
                    store._absorb(conn, lone, cluster_id, policy, now)
                status = "new"
            else:
                item_id = existing.id
                cluster_id = existing.cluster_id
                size = conn.execute(_Q.cluster_size, {"b_cluster": cluster_id}).scalar_one()
                moved = (
                    decision.kind == "duplicate" and decision.cluster_id not in (None, cluster_id) and size == 1
                )
                if moved:
                    old_cluster, cluster_id = cluster_id, decision.cluster_id
                if not moved and decision.kind == "duplicate" and decision.cluster_id != cluster_id:
                    # an item keeps its cluster once it has company; the decision is still kept
                    row["decision_reason"] = f"kept in cluster {cluster_id}; " + row["decision_reason"]
                conn.execute(update(t.items).where(t.items.c.id == item_id).values(cluster_id=cluster_id, **row))
                for statement in _Q.drop_index:
                    conn.execute(statement, {"b_item": item_id})
                if moved:
                    _drop_cluster(conn, old_cluster)
                    conn.execute(_Q.grow_cluster, {"b_cluster": cluster_id, "b_now": now})
                store._elect_canonical(conn, cluster_id, None, policy, now)
                status = "updated"

            _write_index(conn, item_id, fp, document.removals)
            chars = {k: len(p) for k, p in paragraph_keys}
            pkeys = sorted(chars)
            if pkeys:
                _insert_rows(conn, t.paragraphs, ("source_id", "key", "item_id", "chars"),
                             [(source_id, k, item_id, chars[k]) for k in pkeys])
            learned = store._learn(conn, source_id, item_id, paragraph_keys, learn, now) if pkeys and learn else ()
            if learned and reclean is not None:
                keys = frozenset(learned)
                carriers = [
                    r.item_id for r in conn.execute(
                        select(t.paragraphs.c.item_id).distinct()
                        .where(and_(t.paragraphs.c.source_id == source_id, t.paragraphs.c.key.in_(sorted(keys))))
                        .order_by(t.paragraphs.c.item_id)
                    )
                ]
                store._reclean(conn, carriers, lambda text_: reclean(text_, keys), now)
            return ItemOutcome(item_id, status, cluster_id, decision, learned)

    @contextmanager
    def _item(self) -> Iterator[Connection]:
        """The connection to write one item with, all or nothing; database errors as StoreError."""
        if self._conn is None:
            with self._store._begin(immediate=True) as conn:
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
            raise StoreError(_short(exc)) from exc


class _WriterContext:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._transaction: _Transaction | None = None

    def __enter__(self) -> Writer:
        if self._store.is_postgres:
            return Writer(self._store, None)
        self._transaction = self._store._begin(immediate=True)
        return Writer(self._store, self._transaction.__enter__())

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if self._transaction is None:
            return False
        return self._transaction.__exit__(exc_type, exc, tb)


class _DryRun(Exception):
    """Raised inside a transaction to roll it back after computing what it would do."""


class _Transaction:
    """A write transaction that turns database errors into StoreError.

    ``immediate`` takes SQLite's write lock at BEGIN: the candidate lookup and the
    writes of one dedup decision then see no other writer in between, so two copies
    processed at once by two threads or processes cannot both start a cluster.
    """

    def __init__(self, engine: Engine, immediate: bool, lock: threading.Lock | None = None) -> None:
        self._engine = engine
        self._immediate = immediate
        self._lock = lock

    def __enter__(self) -> Connection:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._conn = self._engine.connect()
            if self._immediate:
                self._conn = self._conn.execution_options(sqlite_immediate=True)
            self._tx = self._conn.begin()
            return self._conn
        except BaseException as exc:
            if self._lock is not None:
                self._lock.release()
            if isinstance(exc, SQLAlchemyError):
                raise StoreError(_short(exc)) from exc
            raise

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        try:
            if exc_type is None:
                self._tx.commit()
            else:
                self._tx.rollback()
        except SQLAlchemyError as error:
            raise StoreError(_short(error)) from error
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.release()
        if isinstance(exc, SQLAlchemyError):
            raise StoreError(_short(exc)) from exc
        return False


@dataclass(frozen=True)
class _Seen:
    key: str
    seen: int


# Two carriers of a paragraph are versions of one text when the rest of their
# paragraphs overlap by at least this share (length-weighted Jaccard).
_SAME_TEXT = 0.5


def _distinct_texts(carriers: list[dict[str, int]]) -> int:
    """How many of ``carriers`` (paragraph key -> length) are not versions of an earlier one."""
    distinct: list[dict[str, int]] = []
    for content in carriers:
        if all(_weighted_jaccard(content, other) < _SAME_TEXT for other in distinct):
            distinct.append(content)
    return len(distinct)


def _weighted_jaccard(a: dict[str, int], b: dict[str, int]) -> float:
    union = sum(a.values()) + sum(c for k, c in b.items() if k not in a)
    if union == 0:
        return 1.0  # two items that are nothing but this paragraph: one text
    return sum(c for k, c in a.items() if k in b) / union


# what a row of _candidate_lookup says: the item shares a band/paragraph key, the
# content hash, or the canonical URL
_SHARED_KEY, _SAME_CONTENT, _SAME_URL = 0, 1, 2
# keys per lookup statement: far below SQLite's bound-parameter limit
_KEYS_PER_LOOKUP = 100


@lru_cache(maxsize=64)
def _candidate_lookup(count: int, exact: bool, paramstyle: str) -> str:
    """(item_id, kind, hits) rows: items with ``hash`` or ``url`` (when ``exact``), and
    items found by ``count`` per-key index seeks, each capped at the ``cap`` newest
    items, with the number of keys they share. Counted in SQL: a copy shares dozens of
    keys, and one row per item instead of one per key and item is less to fetch.

    SQL text for the driver, written once per key count and parameter style: building
    it as an expression of ~60 subqueries for every new item cost more than all the
    other store work together (bench/run.py profile: 14 of 75 s under cProfile), and
    even a prebuilt text() spent most of its time binding the ~60 parameters. Same
    query on SQLite and PostgreSQL.
    """
    def p(name: str) -> str:
        return f"%({name})s" if paramstyle == "pyformat" else f":{name}"

    arms = [
        f'SELECT item_id, {_SHARED_KEY} AS kind FROM (SELECT item_id FROM lsh_bands WHERE "key" = {p(f"k{i}")} '
        f"ORDER BY item_id DESC LIMIT {p('cap')}) AS arm{i}"
        for i in range(count)
    ]
    if exact:
        arms[:0] = [
            f"SELECT id AS item_id, {_SAME_CONTENT} AS kind FROM (SELECT id FROM items WHERE content_hash = {p('hash')} "
            f"ORDER BY id LIMIT {p('limit')}) AS same_content",
            f"SELECT id AS item_id, {_SAME_URL} AS kind FROM (SELECT id FROM items WHERE canonical_url = {p('url')} "
            f"ORDER BY id LIMIT {p('limit')}) AS same_url",
        ]
    return f"SELECT item_id, kind, count(*) AS hits FROM ({' UNION ALL '.join(arms)}) AS found GROUP BY item_id, kind"


def _by(name: str) -> Any:
    return bindparam(name)


def _in(name: str) -> Any:
    return bindparam(name, expanding=True)


def _recent_floor() -> Any:
    """The smallest id among the last ``b_window`` items of source ``b_source`` (0: none)."""
    recent = (
        select(t.items.c.id).where(t.items.c.source_id == _by("b_source"))
        .order_by(t.items.c.id.desc()).limit(_by("b_window")).subquery()
    )
    return select(func.coalesce(func.min(recent.c.id), 0)).scalar_subquery()


def _members() -> Any:
    return select(
        t.items.c.id, t.items.c.published_at, t.items.c.fetched_at, t.sources.c.priority,
        func.length(t.items.c.text).label("length"),
    ).join(t.sources, t.sources.c.id == t.items.c.source_id)


_member, _cluster = t.items.alias("member"), t.clusters.alias("member_cluster")
_own = t.paragraphs.alias("own")


class _Q:
    """The statements of the per-item path, built once.

    Building a statement costs more than running it: 75 us to build, compile-cache
    and run an indexed SELECT against 17 us for a prebuilt one (SQLAlchemy 2.0 here),
    and an item runs a dozen. Bind names start with ``b_`` to stay clear of the
    column names SQLAlchemy reserves for INSERT/UPDATE values.
    """

    existing = select(t.items.c.id, t.items.c.content_hash, t.items.c.cluster_id, t.items.c.title).where(
        t.items.c.source_id == _by("b_source"), t.items.c.identity == _by("b_identity")
    )
    touch_entry = update(t.items).where(t.items.c.id == _by("b_item")).values(entry_hash=_by("b_entry_hash"))
    # candidate items, and the canonical item of each candidate's cluster
    candidate_rows = (
        select(
            t.items.c.id, t.items.c.cluster_id, t.items.c.title, t.items.c.text, t.clusters.c.canonical_item_id,
            t.items.c.published_at, t.items.c.fetched_at, t.sources.c.priority,
        )
        .join(t.clusters, t.clusters.c.id == t.items.c.cluster_id)
        .join(t.sources, t.sources.c.id == t.items.c.source_id)
        .where(or_(
            t.items.c.id.in_(_in("b_ids")),
            t.items.c.id.in_(
                select(_cluster.c.canonical_item_id)
                .join(_member, _member.c.cluster_id == _cluster.c.id)
                .where(_member.c.id.in_(_in("b_ids")))
            ),
        ))
    )
    new_cluster = (
        insert(t.clusters).values(size=0, created_at=_by("b_now"), updated_at=_by("b_now")).returning(t.clusters.c.id)
    )
    insert_item = insert(t.items).returning(t.items.c.id)
    first_member = (
        update(t.clusters).where(t.clusters.c.id == _by("b_cluster"))
        .values(size=1, canonical_item_id=_by("b_item"), updated_at=_by("b_now"))
    )
    grow_cluster = (
        update(t.clusters).where(t.clusters.c.id == _by("b_cluster"))
        .values(size=t.clusters.c.size + 1, updated_at=_by("b_now"))
    )
    cluster_size = select(t.clusters.c.size).where(t.clusters.c.id == _by("b_cluster"))
    canonical_of = select(t.clusters.c.canonical_item_id).where(t.clusters.c.id == _by("b_cluster"))
    members_by_id = _members().where(t.items.c.id.in_(_in("b_ids")))
    members_of_cluster = _members().where(t.items.c.cluster_id == _by("b_cluster"))
    source_priority = select(t.sources.c.priority).where(t.sources.c.id == _by("b_source"))
    record_change = insert(t.canonical_changes)
    set_canonical = (
        update(t.clusters).where(t.clusters.c.id == _by("b_cluster"))
        .values(canonical_item_id=_by("b_item"), updated_at=_by("b_now"))
    )
    drop_index = tuple(
        delete(table).where(table.c.item_id == _by("b_item")) for table in (t.lsh_bands, t.removals, t.paragraphs)
    )
    # the item's paragraphs (not yet boilerplate) seen in >= b_min of the source's last
    # b_window items: source ids only grow, so "among the last N" is "id >= the Nth newest"
    frequent_paragraphs = (
        select(t.paragraphs.c.key)
        .where(
            t.paragraphs.c.source_id == _by("b_source"),
            t.paragraphs.c.key.in_(  # the new item's paragraphs, already written
                select(_own.c.key).where(_own.c.item_id == _by("b_item"), _own.c.source_id == _by("b_source"))
            ),
            t.paragraphs.c.item_id >= _recent_floor(),
            t.paragraphs.c.key.not_in(select(t.boilerplate.c.key).where(t.boilerplate.c.source_id == _by("b_source"))),
        )
        .group_by(t.paragraphs.c.key)
        .having(func.count() >= _by("b_min"))
    )


def _set_canonical(conn: Connection, cluster_id: int, current: int | None, best: int, now: datetime) -> None:
    """Make ``best`` the cluster's canonical item; record the change when there was one before."""
    if best == current:
        return
    conn.execute(_Q.set_canonical, {"b_cluster": cluster_id, "b_item": best, "b_now": now})
    if current is not None:
        conn.execute(_Q.record_change, {
            "cluster_id": cluster_id, "old_item_id": current, "new_item_id": best, "changed_at": now,
            "reason": "a better candidate under the canonical policy",
        })


def _recount(conn: Connection, cluster_id: int, changed_at: datetime | None = None) -> int:
    """Count a cluster's members again and store the size (and ``changed_at``); drop it when empty (0)."""
    size = conn.execute(
        select(func.count()).select_from(t.items).where(t.items.c.cluster_id == cluster_id)
    ).scalar_one()
    if size == 0:
        _drop_cluster(conn, cluster_id)
        return 0
    values: dict[str, Any] = {"size": size} if changed_at is None else {"size": size, "updated_at": changed_at}
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(**values))
    return size


def _drop_cluster(conn: Connection, cluster_id: int) -> None:
    """Delete a cluster that no longer has items, with its history of canonical changes."""
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(canonical_item_id=None))
    conn.execute(delete(t.canonical_changes).where(t.canonical_changes.c.cluster_id == cluster_id))
    conn.execute(delete(t.clusters).where(t.clusters.c.id == cluster_id))


def _write_index(conn: Connection, item_id: int, fp: Fingerprint, removals: Sequence[Removal] = ()) -> None:
    """Insert an item's LSH band keys and its cleaning removals (after old rows were deleted)."""
    keys = sorted(set(fp.band_keys))
    if keys:
        _insert_rows(conn, t.lsh_bands, ("key", "item_id"), [(k, item_id) for k in keys])
    if removals:
        _insert_rows(conn, t.removals, ("item_id", "rule", "position", "text"),
                     [(item_id, r.rule, r.position, r.text) for r in removals])


def _insert_rows(conn: Connection, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Many rows of plain values (ints, strings) through the driver's executemany.

    An item writes about 80 index rows; through ``conn.execute(insert(table), dicts)``
    SQLAlchemy builds parameters row by row, which cost more than SQLite's inserts.
    """
    conn.exec_driver_sql(_insert_sql(conn.dialect.paramstyle, table.name, columns), rows)


@lru_cache(maxsize=32)
def _insert_sql(paramstyle: str, table: str, columns: tuple[str, ...]) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join([mark] * len(columns))})'


def _advisory_locks(conn: Connection, fp: Fingerprint, canonical_url: str | None) -> None:
    keys = set(fp.band_keys)
    keys.add(int(fp.content_hash[:15], 16))
    if canonical_url:
        keys.add(int(hashlib.sha256(canonical_url.encode()).hexdigest()[:15], 16))
    # sorted, so two workers always lock in the same order and never deadlock
    conn.execute(
        text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": sorted(keys)},
    )


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
    }


def _state(row: Any) -> SourceState:
    return SourceState(
        source_id=row.id, name=row.name, url=row.url, effective_url=row.effective_url, etag=row.etag,
        last_modified=row.last_modified, body_hash=row.body_hash, last_polled_at=row.last_polled_at,
        last_success_at=row.last_success_at, last_error=row.last_error, last_error_kind=row.last_error_kind,
        consecutive_errors=row.consecutive_errors or 0, error_count=row.error_count or 0,
        next_poll_at=row.next_poll_at, disabled_reason=row.disabled_reason, ttl=row.feed_ttl,
        poll_count=row.poll_count or 0, request_count=row.request_count or 0,
    )


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off: _sqlite_begin emits BEGIN itself
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # an item's savepoint journals every page the item changes (the sub-journal, ~85
    # pages an item): in a temp file that was 70k small writes per 1k items and a
    # third of the writer's system time; in memory the run was 6 % faster
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _short(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc)
    return text_.splitlines()[0][:300] if text_ else type(exc).__name__
