"""Paragraph sightings per source, and the paragraphs learned as boilerplate.

The store records which paragraph fingerprints each item carries and answers how often a
paragraph was seen among a source's recent items; what counts as boilerplate is
``learned.learnable``'s rule. Everything runs inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from sqlalchemy import and_, insert, select
from sqlalchemy.engine import Connection

from ingest.learned import learnable
from ingest.store import schema as t
from ingest.store.engine import Database
from ingest.store.statements import Q, insert_rows


def learned_keys(db: Database, source_id: int) -> frozenset[str]:
    """Keys of the paragraphs learned as boilerplate of one source."""
    with db.read() as conn:
        rows = conn.execute(select(t.boilerplate.c.key).where(t.boilerplate.c.source_id == source_id))
        return frozenset(r.key for r in rows)


def record_sightings(conn: Connection, source_id: int, item_id: int, sightings: Sequence[tuple[str, str]]) -> bool:
    """Record the item's paragraph fingerprints (with their lengths); False when it has none."""
    chars = {k: len(p) for k, p in sightings}
    keys = sorted(chars)
    if keys:
        insert_rows(conn, t.paragraphs, ("source_id", "key", "item_id", "chars"),
                    [(source_id, k, item_id, chars[k]) for k in keys])
    return bool(keys)


def learn(
    conn: Connection, source_id: int, item_id: int, sightings: Sequence[tuple[str, str]],
    settings: tuple[int, int], now: datetime,
) -> tuple[str, ...]:
    """Learn the item's paragraphs that are now boilerplate of its source; their keys.

    ``settings`` is (min_count, window): a paragraph seen in ``min_count`` different
    texts among the source's last ``window`` items (``learned.learnable``).
    """
    min_count, window = settings
    texts = dict(sightings)
    # one query answers "nothing new to learn", the case of almost every item
    frequent = [
        r.key for r in conn.execute(
            Q.frequent_paragraphs,
            {"b_source": source_id, "b_item": item_id, "b_window": window, "b_min": min_count},
        )
    ]
    if not frequent:
        return ()
    known = {
        r.key for r in conn.execute(select(t.boilerplate.c.key).where(t.boilerplate.c.source_id == source_id))
    }
    recent = [r.id for r in conn.execute(Q.recent_items, {"b_source": source_id, "b_window": window})]
    contents: dict[int, dict[str, int]] = {}  # item -> paragraph fingerprint -> chars
    for r in conn.execute(
        select(t.paragraphs.c.item_id, t.paragraphs.c.key, t.paragraphs.c.chars)
        .where(and_(t.paragraphs.c.source_id == source_id, t.paragraphs.c.item_id.in_(recent)))
    ):
        if r.key not in known:
            contents.setdefault(r.item_id, {})[r.key] = r.chars or 1
    learned = [
        {"source_id": source_id, "key": key, "text": texts[key], "seen": seen, "window": window, "learned_at": now}
        for key, seen in learnable(frequent, contents, min_count)
    ]
    if learned:
        conn.execute(insert(t.boilerplate), learned)
    return tuple(row["key"] for row in learned)


def carriers(conn: Connection, source_id: int, keys: frozenset[str]) -> list[int]:
    """Ids of the source's items that carry any of the paragraph ``keys``."""
    return [
        r.item_id for r in conn.execute(
            select(t.paragraphs.c.item_id).distinct()
            .where(and_(t.paragraphs.c.source_id == source_id, t.paragraphs.c.key.in_(sorted(keys))))
            .order_by(t.paragraphs.c.item_id)
        )
    ]
