"""Tables of the canonical store (SQLAlchemy 2 Core; the same on SQLite and PostgreSQL).

``migrations.py`` creates and upgrades them (an append-only list of versions); the
``meta`` table records the version reached and how signatures were made.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("effective_url", Text),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("body_hash", String(64)),
    Column("last_polled_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_error", Text),
    Column("last_error_kind", String(40)),
    Column("consecutive_errors", Integer, nullable=False, default=0),
    Column("error_count", Integer, nullable=False, default=0),
    Column("poll_count", Integer, nullable=False, default=0),
    Column("request_count", Integer, nullable=False, default=0),
    Column("next_poll_at", UTCDateTime),
    Column("disabled_reason", Text),
    Column("feed_ttl", Float),  # RSS <ttl> in seconds from the last parsed body
    Column("priority", Integer, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),  # false once removed from the config
    # The sources table is the queue (schema version 2): a worker claims a due source by
    # writing its name, a fresh token and an expiry from the database's clock; recording
    # the poll and committing its items check the token (a worker that lost its lease
    # cannot write). ``host`` is the politeness key (host[:port] of the feed's URL).
    Column("host", String(300)),
    Column("lease_owner", String(200)),
    Column("lease_token", String(32)),
    Column("lease_until", UTCDateTime),
    # the claim walks this index in order and stops at its page (leases._candidates); not
    # partial: the claim's ``active IS true`` does not imply a ``WHERE active`` predicate to
    # PostgreSQL's planner, which then sorted every due row (a seq scan, 66 ms at 100k);
    # (host, lease_until) counts a host's live leases without reading its rows
    Index("ix_sources_due", "next_poll_at", "id"),
    Index("ix_sources_host", "host", "lease_until"),
)

# Per-host politeness shared by every worker: no request to a host before
# ``next_allowed_at`` (``[fetch] per_host_delay`` after the last claim, pushed back by
# 429/Retry-After); in-flight polls per host are counted from live leases, so a
# killed worker's count goes when its leases expire.
hosts = Table(
    "hosts",
    metadata,
    Column("host", String(300), primary_key=True),
    Column("next_allowed_at", UTCDateTime, nullable=False),
    # the claim's anti-join reads the few hosts in their delay, not every host (53,000 hosts
    # in bench/fleet.py's 100k: a 4-7 ms scan a claim without it)
    Index("ix_hosts_allowed", "next_allowed_at"),
)

# The workers (daemons and --once runs) using the store, and the source list they run:
# a worker refuses to start while live workers run another list (``sources.agree``).
workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(200), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("sources_digest", String(64), nullable=False),
)

clusters = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True),
    # nullable: a cluster row is written just before its first item
    Column("canonical_item_id", Integer, ForeignKey("items.id", use_alter=True, name="fk_cluster_canonical")),
    Column("size", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # a stable name for the story: exported entry ids come from it, so they survive a
    # change of canonical item and a re-clustering that keeps the cluster
    Column("uid", String(36), nullable=False, unique=True, default=lambda: str(uuid.uuid4())),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("identity", Text, nullable=False),  # guid, else link, else hash of the entry
    Column("guid", Text),
    Column("url", Text),
    Column("canonical_url", Text),
    Column("title", Text, nullable=False, default=""),
    Column("author", Text),
    Column("language", String(35)),
    Column("published_at", UTCDateTime),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("input_kind", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("shingle_count", Integer, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("cluster_id", Integer, ForeignKey("clusters.id"), nullable=False),
    # the decision that put the item in its cluster, kept so it can be explained
    Column("decision_method", String(16), nullable=False),
    Column("decision_similarity", Float, nullable=False, default=0.0),
    Column("decision_containment", Float, nullable=False, default=0.0),
    Column("decision_matched_item_id", Integer),
    Column("decision_reason", Text, nullable=False, default=""),
    Column("notes", Text),
    # dedup features (sentences with numbers, rare entities; ingest.features) and the
    # signals of the decision as JSON (migration 2; NULL for items stored before it)
    Column("features", LargeBinary),
    Column("decision_evidence", Text),
    UniqueConstraint("source_id", "identity", name="uq_items_source_identity"),
    Index("ix_items_cluster", "cluster_id"),
    Index("ix_items_content_hash", "content_hash"),
    Index("ix_items_canonical_url", "canonical_url"),
    Index("ix_items_published", "published_at"),
    # a source's newest items (boilerplate learning's "last N items of the source"):
    # without it SQLite read and sorted every item of the source for each new item, a
    # cost per item that grew with the source (docs/reliability.md#hostile-inputs)
    Index("ix_items_source_recent", "source_id", "id"),
)

# The LSH index: one row per (band key, item). A lookup is one indexed IN query, so
# its cost depends on the candidates found, not on how many items are stored, and
# nothing is held in memory between items.
lsh_bands = Table(
    "lsh_bands",
    metadata,
    Column("key", BigInteger, nullable=False),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("key", "item_id", name="pk_lsh_bands"),
    Index("ix_lsh_bands_item", "item_id"),
    sqlite_with_rowid=False,
)

removals = Table(
    "removals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("rule", Text, nullable=False),
    Column("position", String(8), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_removals_item", "item_id"),
)

canonical_changes = Table(
    "canonical_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("old_item_id", Integer),
    Column("new_item_id", Integer, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_canonical_changes_cluster", "cluster_id"),
)

# Paragraph sightings per source, for learning boilerplate (a paragraph repeated
# verbatim across a source's recent items), and the paragraphs learned.
paragraphs = Table(
    "paragraphs",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("key", String(16), nullable=False),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("chars", Integer, nullable=False, default=0),  # length, to weigh paragraphs when comparing items
    PrimaryKeyConstraint("source_id", "key", "item_id", name="pk_paragraphs"),
    Index("ix_paragraphs_item", "item_id"),
    sqlite_with_rowid=False,
)

boilerplate = Table(
    "boilerplate",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("key", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("seen", Integer, nullable=False),
    Column("window", Integer, nullable=False),
    Column("learned_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("source_id", "key", name="pk_boilerplate"),
)


# Full-text search over items' title and clean text. SQLite: an external-content FTS5
# table (the text is stored once, in items) kept in step by triggers, so every write
# path (commit_item, prune, re-clustering, resign) updates it without knowing of it.
# PostgreSQL: a GIN index on the same expression that `Store.search` queries. The
# 'simple' configuration and FTS5's unicode61 tokenizer both index words without
# stemming, so the two backends find the same items for one query. On PostgreSQL the
# vector is a stored generated column: ranking then reads it instead of re-parsing
# every matching text (measured at 2,000 items: median query 2.3 s re-parsing).
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE items_fts USING fts5(title, text, content='items', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
    "INSERT INTO items_fts(rowid, title, text) VALUES (new.id, new.title, new.text); END",
    "CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN "
    "INSERT INTO items_fts(items_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text); END",
    "CREATE TRIGGER items_fts_update AFTER UPDATE OF title, text ON items BEGIN "
    "INSERT INTO items_fts(items_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text); "
    "INSERT INTO items_fts(rowid, title, text) VALUES (new.id, new.title, new.text); END",
]
POSTGRES_TSVECTOR = "to_tsvector('simple'::regconfig, title || ' ' || text)"
POSTGRES_FTS = [
    f"ALTER TABLE items ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({POSTGRES_TSVECTOR}) STORED",
    "CREATE INDEX ix_items_fts ON items USING gin (search_vector)",
]
