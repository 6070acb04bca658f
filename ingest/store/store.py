"""The canonical store's facade: one object that opens a store and answers for it.

``Store.open(url, scheme)`` migrates the schema and checks that the store's
signatures were made the way the running config would make them. The work lives in
the modules below it, which import downward and are handed the ``Database``, never
this class:

    engine      the engine, transactions, SQLite pragmas
    migrations  schema versions, the meta table, the signature-scheme check
    statements  prebuilt per-item statements and raw row writers
    sources     sources and their poll state
    leases      the sources table as the queue: claims, heartbeats, fenced completion
    workers     the workers sharing the store and the source list they agree on
    clusters    canonical election, absorbing lone items, recounting
    boilerplate paragraph sightings and learned paragraphs
    writer      the per-item transaction with its candidate lookup (``Batch``, ``Writer``)
    bulk        prune, resign, re-clean, re-partition
    queries     read models (items, clusters, one item, learned paragraphs, stories)
    search      full-text search
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ingest.config import SourceConfig
from ingest.errors import StoreError
from ingest.models import (
    Candidate, ClusterRow, DedupDecision, Fingerprint, ItemDetail, ItemOutcome, ItemRow, LearnedParagraph, Member,
    PollRecord, SearchHit, SourceState, Story, StoredItem,
)
from ingest.store import boilerplate, bulk, leases, migrations, queries, search, sources, workers, writer
from ingest.store import schema as t
from ingest.store.bulk import Recleaned
from ingest.store.engine import Database, short


class Store:
    """A connection to one store. Thread-safe (one pooled engine)."""

    def __init__(self, db: Database, scheme: dict[str, Any] | None) -> None:
        self.db = db
        self.scheme = scheme

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def is_postgres(self) -> bool:
        return self.db.is_postgres

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls, url: str, scheme: dict[str, Any] | None = None, *, check_scheme: bool = True, pool_size: int = 5,
    ) -> "Store":
        """Open (creating and migrating) the store at ``url``; check the signature scheme."""
        db = Database.connect(url, pool_size)
        try:
            migrations.migrate(db)
            if scheme is not None and check_scheme:
                migrations.check_signature_scheme(db, scheme)
        except SQLAlchemyError as exc:
            db.dispose()
            raise StoreError(f"cannot open {db.display_url}: {db.explain(exc)}") from exc
        except StoreError:
            db.dispose()
            raise
        return cls(db, scheme)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            raise StoreError(f"store unreachable: {short(exc)}") from exc

    def stored_scheme(self) -> dict[str, Any] | None:
        """How the stored signatures were made (None: not recorded yet)."""
        return migrations.stored_scheme(self.db)

    def store_uid(self) -> str:
        """A UUID naming this store, made on first use: the id of the feeds it exports."""
        return migrations.store_uid(self.db)

    # ------------------------------------------------------------------ sources

    def sync_sources(self, configs: Iterable[SourceConfig]) -> dict[str, SourceState]:
        """Insert or update source rows from the config; a changed URL resets fetch state."""
        return sources.sync_sources(self.db, configs)

    def source_states(self, include_inactive: bool = False) -> list[SourceState]:
        return sources.source_states(self.db, include_inactive)

    def source_state(self, name: str) -> SourceState | None:
        return sources.source_state(self.db, name)

    def has_source(self, name: str) -> bool:
        """Whether a source of that name has ever been stored."""
        return sources.has_source(self.db, name)

    def record_poll(self, source_id: int, poll: PollRecord) -> None:
        """Keep the outcome of one poll: validators on success, error counts on failure."""
        leases.complete(self.db, None, source_id, poll, clock=lambda: poll.at)

    # ------------------------------------------------------------------ leases (see leases.py)

    def claim(self, **kwargs: Any) -> list[leases.Lease]:
        """Claim sources to poll (``leases.claim`` has the arguments)."""
        return leases.claim(self.db, **kwargs)

    def heartbeat(self, held: Iterable[leases.Lease], lease_seconds: float, clock: leases.Clock) -> set[str]:
        """Extend the leases still held; the tokens extended."""
        return leases.heartbeat(self.db, held, lease_seconds, clock)

    def complete(self, lease: leases.Lease | None, source_id: int, poll: PollRecord, clock: leases.Clock) -> bool:
        """Record a poll and release its lease; False when the lease was lost (nothing written)."""
        return leases.complete(self.db, lease, source_id, poll, clock)

    def release(self, lease: leases.Lease) -> bool:
        """Give a lease back without recording a poll."""
        return leases.release(self.db, lease)

    def release_dead(self, host: str, alive: Callable[[int], bool]) -> list[str]:
        """Give back the leases of this host's workers whose process is gone (``leases.release_dead``)."""
        return leases.release_dead(self.db, host, alive)

    def fleet_status(self, owner: str, grace: float, clock: leases.Clock) -> dict[str, int]:
        """Leases held (this worker, all) and sources overdue by more than ``grace`` s, counted in SQL."""
        return leases.fleet_status(self.db, owner, grace, clock)

    # ------------------------------------------------------------------ workers (see workers.py)

    def agree_sources(self, configs: Sequence[SourceConfig], worker_id: str, **kwargs: Any) -> str:
        """Check this worker's source list against the fleet's and register it (``workers.agree``)."""
        return workers.agree(self.db, configs, worker_id, **kwargs)

    def worker_seen(self, worker_id: str) -> str | None:
        """Renew this worker's registration; the digest of the store's source list now."""
        return workers.seen(self.db, worker_id)

    def live_workers(self, within: float) -> list[dict[str, Any]]:
        """The workers seen in the last ``within`` seconds."""
        return workers.live(self.db, within)

    def worker_leave(self, worker_id: str) -> None:
        """Remove this worker's registration (a clean stop)."""
        workers.leave(self.db, worker_id)

    def known_entries(self, source_id: int) -> dict[str, str]:
        """identity -> entry hash of the source's stored items (to skip unchanged entries)."""
        return sources.known_entries(self.db, source_id)

    # ------------------------------------------------------------------ items

    def learned_boilerplate(self, source_id: int) -> frozenset[str]:
        """Keys of the paragraphs learned as boilerplate of one source."""
        return boilerplate.learned_keys(self.db, source_id)

    def writer(self) -> writer.Batch:
        """A batch of item writes: ``with store.writer() as w: w.commit_item(...)`` (see ``writer.Batch``)."""
        return writer.Batch(self.db)

    def commit_item(self, **item: Any) -> ItemOutcome:
        """Write one item in its own transaction (``Writer.commit_item`` has the arguments)."""
        with self.writer() as batch:
            return batch.commit_item(**item)

    def candidates(self, fp: Fingerprint, canonical_url: str | None = None, limit: int = 20) -> list[Candidate]:
        """The candidates a new item with fingerprint ``fp`` would be verified against (read-only)."""
        with self.db.read() as conn:
            return writer.lookup(conn, fp, canonical_url, None, limit)[0]

    # ------------------------------------------------------------------ bulk

    def reprocess(
        self, source_id: int, reclean: Callable[[str, datetime | None], Recleaned | None], at: datetime | None = None,
    ) -> tuple[int, int]:
        """Re-clean every stored item of one source in one transaction: (items seen, items changed)."""
        return bulk.reprocess(self.db, source_id, reclean, at)

    def resign(self, fingerprint: Callable[[str, datetime | None], Fingerprint], scheme: dict[str, Any]) -> int:
        """Re-sign every stored text (with its time) and rebuild the LSH index, in one transaction."""
        return bulk.resign(self.db, fingerprint, scheme)

    def prune(
        self, before: datetime, policy: Callable[[Member], tuple], *, dry_run: bool = False,
        now: datetime | None = None,
    ) -> dict[str, int]:
        """Delete items published (else fetched) before ``before`` (see ``bulk.prune``)."""
        return bulk.prune(self.db, before, policy, dry_run=dry_run, now=now)

    def history(self) -> list[StoredItem]:
        """Every stored item with its fingerprint, in (published else fetched, id) order."""
        return bulk.history(self.db)

    def apply_clusters(
        self, assignment: dict[int, int | None], groups: dict[int, list[int]], decisions: dict[int, DedupDecision],
        policy: Callable[[Member], tuple], *, now: datetime | None = None,
    ) -> dict[str, int]:
        """Re-partition items in one transaction (see ``bulk.apply_clusters``)."""
        return bulk.apply_clusters(self.db, assignment, groups, decisions, policy, now=now)

    # ------------------------------------------------------------------ queries

    def counts(self) -> dict[str, int]:
        """Items, clusters and active sources stored."""
        return queries.counts(self.db)

    def items(self, *, source: str | None = None, limit: int | None = None) -> list[ItemRow]:
        """Stored items with their source name, cluster and whether they are canonical."""
        return queries.items(self.db, source=source, limit=limit)

    def clusters(self, *, min_size: int = 1) -> list[ClusterRow]:
        """Clusters with their members (signatures included, for similarity to the canonical)."""
        return queries.clusters(self.db, min_size=min_size)

    def item(self, item_id: int) -> ItemDetail | None:
        """One item with everything known about it: decision, removals, cluster members."""
        return queries.item(self.db, item_id)

    def boilerplate(self, source: str | None = None) -> list[LearnedParagraph]:
        """Learned paragraphs per source, with the items each was removed from."""
        return queries.boilerplate(self.db, source)

    def stories(
        self, *, since: datetime | None = None, source: str | None = None, limit: int | None = None,
    ) -> list[Story]:
        """Clusters as stories, most recently changed first: canonical item plus the other copies."""
        return queries.stories(self.db, since=since, source=source, limit=limit)

    def search(self, query: str, *, all_copies: bool = False, limit: int = 20) -> list[SearchHit]:
        """Full-text search over title and clean text, best first; one hit per cluster unless all_copies."""
        return search.search(self.db, query, all_copies=all_copies, limit=limit)
