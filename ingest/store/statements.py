"""The statements of the per-item path, built once, and the raw row writers.

Building a statement costs more than running it: 75 us to build, compile-cache and
run an indexed SELECT against 17 us for a prebuilt one (SQLAlchemy 2.0 here), and an
item runs a dozen. Bind names start with ``b_`` to stay clear of the column names
SQLAlchemy reserves for INSERT/UPDATE values.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Sequence

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from ingest.models import DedupDecision, Fingerprint, Removal
from ingest.store import schema as t

# Items read per LSH/paragraph key in a lookup (the newest first): a key that many
# items share (a boilerplate paragraph not learned yet, a band of a very short text)
# cannot make the lookup grow with the store.
KEY_CAP = 50
# What a row of ``candidate_lookup`` says: the item has the same content hash or the
# same canonical URL, or (kind >= FIRST_KEY) it shares the key number kind - FIRST_KEY.
SAME_CONTENT, SAME_URL, FIRST_KEY = 1, 2, 3
# Keys per lookup statement: far below SQLite's bound-parameter limit.
KEYS_PER_LOOKUP = 100


@lru_cache(maxsize=64)
def candidate_lookup(count: int, exact: bool, paramstyle: str) -> str:
    """(item_id, kind) rows: items with ``hash`` or ``url`` (when ``exact``), and items
    found by ``count`` per-key index seeks, each capped at the ``cap`` newest items, one
    row per (item, key): the caller counts the keys an item shares, and sees which keys
    hit the cap (hot keys, shared by boilerplate not yet learned: they are not locked).

    SQL text for the driver, written once per key count and parameter style: building
    it as an expression of ~60 subqueries for every new item cost more than all the
    other store work together (bench/run.py profile: 14 of 75 s under cProfile), and
    even a prebuilt text() spent most of its time binding the ~60 parameters. Same
    query on SQLite and PostgreSQL.
    """
    def p(name: str) -> str:
        return f"%({name})s" if paramstyle == "pyformat" else f":{name}"

    arms = [
        f'SELECT item_id, {FIRST_KEY + i} AS kind FROM (SELECT item_id FROM lsh_bands WHERE "key" = {p(f"k{i}")} '
        f"ORDER BY item_id DESC LIMIT {p('cap')}) AS arm{i}"
        for i in range(count)
    ]
    if exact:
        arms[:0] = [
            f"SELECT id AS item_id, {SAME_CONTENT} AS kind FROM (SELECT id FROM items WHERE content_hash = {p('hash')} "
            f"ORDER BY id LIMIT {p('limit')}) AS same_content",
            f"SELECT id AS item_id, {SAME_URL} AS kind FROM (SELECT id FROM items WHERE canonical_url = {p('url')} "
            f"ORDER BY id LIMIT {p('limit')}) AS same_url",
        ]
    return " UNION ALL ".join(arms)


def _by(name: str) -> Any:
    return bindparam(name)


def _in(name: str) -> Any:
    return bindparam(name, expanding=True)


def _recent() -> Any:
    """Ids of the last ``b_window`` items of source ``b_source``, the newest first.

    Read through ix_items_source_recent (source_id, id): without it SQLite read every
    item of the source and sorted them, for every new item (docs/reliability.md#hostile-inputs).
    """
    return (
        select(t.items.c.id).where(t.items.c.source_id == _by("b_source"))
        .order_by(t.items.c.id.desc()).limit(_by("b_window"))
    )


def _recent_floor() -> Any:
    """The smallest id among the last ``b_window`` items of source ``b_source`` (0: none)."""
    recent = _recent().subquery()
    return select(func.coalesce(func.min(recent.c.id), 0)).scalar_subquery()


def _members() -> Any:
    return select(
        t.items.c.id, t.items.c.published_at, t.items.c.fetched_at, t.sources.c.priority,
        func.length(t.items.c.text).label("length"),
    ).join(t.sources, t.sources.c.id == t.items.c.source_id)


_member, _cluster = t.items.alias("member"), t.clusters.alias("member_cluster")
_own = t.paragraphs.alias("own")


class Q:
    """Prebuilt statements of the per-item path (see the module docstring)."""

    existing = select(t.items.c.id, t.items.c.content_hash, t.items.c.cluster_id, t.items.c.title).where(
        t.items.c.source_id == _by("b_source"), t.items.c.identity == _by("b_identity")
    )
    touch_entry = update(t.items).where(t.items.c.id == _by("b_item")).values(entry_hash=_by("b_entry_hash"))
    # candidate items, and the canonical item of each candidate's cluster
    candidate_rows = (
        select(
            t.items.c.id, t.items.c.cluster_id, t.items.c.title, t.items.c.text, t.clusters.c.canonical_item_id,
            t.items.c.published_at, t.items.c.fetched_at, t.sources.c.priority, t.items.c.features,
            t.items.c.signature, t.items.c.shingle_count,
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
    recent_items = _recent()
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


def evidence_json(decision: DedupDecision) -> str | None:
    """A decision's signals as the JSON stored in ``items.decision_evidence`` (None: none)."""
    return json.dumps([s.as_dict() for s in decision.evidence]) if decision.evidence else None


def write_index(conn: Connection, item_id: int, fp: Fingerprint, removals: Sequence[Removal] = ()) -> None:
    """Insert an item's LSH band keys and its cleaning removals (after old rows were deleted)."""
    keys = sorted(set(fp.band_keys))
    if keys:
        insert_rows(conn, t.lsh_bands, ("key", "item_id"), [(k, item_id) for k in keys])
    if removals:
        insert_rows(conn, t.removals, ("item_id", "rule", "position", "text"),
                    [(item_id, r.rule, r.position, r.text) for r in removals])


def insert_rows(conn: Connection, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
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
