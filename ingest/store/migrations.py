"""Schema versions, the ``meta`` table and the signature-scheme check.

``migrate(db)`` brings a store to ``SCHEMA_VERSION`` through the append-only
``MIGRATIONS``; ``check_signature_scheme(db, scheme)`` refuses a store whose MinHash
signatures were made with other settings than the running config (they would not be
comparable: datasketch 2.0 changed its default scheme, and seed, permutations and
shingle size all change every value).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.engine import Connection

from ingest.errors import SignatureMismatch, StoreError
from ingest.store import schema as t
from ingest.store.engine import Database

# Advisory lock taken by whoever migrates or records the scheme on PostgreSQL: one
# migrator at a time, and two daemons opening a new store at once do not both insert.
_MIGRATION_LOCK = 7306329


def _create_v1(conn: Connection) -> None:
    t.metadata.create_all(conn)
    for statement in t.SQLITE_FTS if conn.dialect.name == "sqlite" else t.POSTGRES_FTS:
        conn.exec_driver_sql(statement)


def _add_missing(conn: Connection, table: Any) -> None:
    """Add the columns and indexes of ``table`` that an older store lacks (none on a new store).

    Version 1 creates the tables from today's metadata, so a store made new already has
    every later column; a store made by an older ingest gets them here.
    """
    inspector = inspect(conn)
    have = {c["name"] for c in inspector.get_columns(table.name)}
    for column in table.columns:
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
    indexes = {i["name"] for i in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(conn)


def _v2_leases(conn: Connection) -> None:
    _add_missing(conn, t.sources)
    t.metadata.create_all(conn, tables=[t.hosts, t.workers])


def _v3_dedup_evidence(conn: Connection) -> None:
    _add_missing(conn, t.items)  # items.features and items.decision_evidence


def _v4_source_recent(conn: Connection) -> None:
    _add_missing(conn, t.items)  # ix_items_source_recent


# Append-only: (version, description, function). Never edit a released entry; add one.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _create_v1),
    (2, "sources as a leased queue: host, lease columns, hosts and workers tables", _v2_leases),
    # items stored before it have no features until `ingest resign` (the signature
    # scheme names the features, so the store asks for it)
    (3, "items.features and items.decision_evidence (dedup)", _v3_dedup_evidence),
    (4, "index of a source's items by id (its newest items, read for each new item)", _v4_source_recent),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(db: Database) -> None:
    """Create the schema, or upgrade it to ``SCHEMA_VERSION``; refuse a newer one."""
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        row = None
        if not db.engine.dialect.has_table(conn, "meta"):
            version = 0
        else:
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version")).first()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"store schema version {version} is newer than this ingest ({SCHEMA_VERSION})")
        found = version
        for number, _description, step in MIGRATIONS:
            if number > version:
                step(conn)
                version = number
        # Write only when something changed: a read-only open (``ingest items`` next to a
        # running daemon) must not upgrade its read transaction to a write, which SQLite
        # refuses at once with "database is locked" while the daemon is writing (WAL).
        if version != found or row is None:
            set_meta(conn, "schema_version", str(version))


def check_signature_scheme(db: Database, scheme: dict[str, Any]) -> None:
    """Record ``scheme`` in a new store; raise SignatureMismatch when the store's differs."""
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "signature_scheme")).first()
        if row is None:
            set_meta(conn, "signature_scheme", json.dumps(scheme, sort_keys=True))
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


def stored_scheme(db: Database) -> dict[str, Any] | None:
    """The signature scheme the store's signatures were made with (None: not recorded yet)."""
    value = get_meta(db, "signature_scheme")
    return json.loads(value) if value is not None else None


def get_meta(db: Database, key: str) -> str | None:
    """One value of the ``meta`` table."""
    with db.engine.connect() as conn:
        row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == key)).first()
    return row[0] if row is not None else None


def set_meta(conn: Connection, key: str, value: str) -> None:
    """Write one value of the ``meta`` table inside the caller's transaction."""
    done = conn.execute(update(t.meta).where(t.meta.c.key == key).values(value=value)).rowcount
    if not done:
        conn.execute(insert(t.meta).values(key=key, value=value))


def store_uid(db: Database) -> str:
    """A UUID naming this store, made on first use: the id of the feeds it exports."""
    value = get_meta(db, "store_uid")
    if value is not None:
        return value
    with db.begin(immediate=True) as conn:
        row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "store_uid")).first()
        if row is not None:  # another writer made it in between
            return row[0]
        value = str(uuid.uuid4())
        set_meta(conn, "store_uid", value)
        return value
