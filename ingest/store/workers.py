"""The workers using a store, and the one source list they must share.

Several daemons on one PostgreSQL store poll the store's sources, so they must agree
on them: a daemon with another list would mark the others' sources inactive, and
poll with other intervals. The store keeps the list (and its digest) in ``meta``;
every worker registers in ``workers`` with the digest it runs and renews ``seen_at``
with its heartbeats. ``agree`` lets a worker start when its list is the store's, when
no live worker runs the store's list (it is stale), when it is the change a
reloading daemon propagates (the store's list is this daemon's previous one), or when
told to replace it; otherwise it refuses with one line naming the difference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, insert, select, text, update

from ingest.config import SourceConfig
from ingest.errors import SourceListMismatch
from ingest.store import schema as t
from ingest.store.engine import Database
from ingest.store.leases import lease_now
from ingest.store.migrations import set_meta

_AGREE_LOCK = 7306331  # PostgreSQL advisory lock: one worker checks and records the list at a time
# Fields that decide how a source is polled (tags are labels only).
_FIELDS = ("url", "interval", "full_text", "priority", "strip", "enabled")


def listing(configs: Iterable[SourceConfig]) -> dict[str, dict[str, Any]]:
    """The source list as stored: name -> the fields that decide how it is polled."""
    out = {}
    for source in sorted(configs, key=lambda s: s.name):
        fields = asdict(source)
        out[source.name] = {key: list(v) if isinstance(v, tuple) else v for key, v in fields.items() if key in _FIELDS}
    return out


def digest(source_list: dict[str, dict[str, Any]]) -> str:
    """A short digest of a source list."""
    return hashlib.sha256(json.dumps(source_list, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def agree(
    db: Database, configs: Sequence[SourceConfig], worker_id: str, *, live_within: float,
    replace: bool = False, previous: Sequence[SourceConfig] | None = None,
) -> str:
    """Make sure this worker runs the store's source list (see the module docstring); record it; its digest."""
    mine = listing(configs)
    mine_digest = digest(mine)
    with db.begin(immediate=True) as conn:
        if db.is_postgres:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_AGREE_LOCK})"))
        now = lease_now(conn, db)
        stored_row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "source_list")).first()
        stored = json.loads(stored_row[0]) if stored_row else None
        stored_digest = digest(stored) if stored is not None else None
        if stored_digest not in (None, mine_digest) and not replace:
            propagating = previous is not None and stored_digest == digest(listing(previous))
            holders = [
                r.worker_id for r in conn.execute(
                    select(t.workers.c.worker_id).where(
                        t.workers.c.worker_id != worker_id, t.workers.c.sources_digest == stored_digest,
                        t.workers.c.seen_at > now - timedelta(seconds=live_within),
                    ).order_by(t.workers.c.worker_id)
                )
            ]
            if holders and not propagating:
                raise SourceListMismatch(
                    f"this config's source list differs from the one {len(holders)} live worker(s) sharing the store "
                    f"run ({', '.join(holders[:3])}): {describe(stored or {}, mine)}. Give every worker the same "
                    "sources, or start this one with --replace-sources to make its list the store's"
                )
        set_meta(conn, "source_list", json.dumps(mine, sort_keys=True))
        _register(conn, worker_id, mine_digest, now)
    return mine_digest


def _register(conn: Any, worker_id: str, source_digest: str, now: datetime) -> None:
    done = conn.execute(update(t.workers).where(t.workers.c.worker_id == worker_id)
                        .values(seen_at=now, sources_digest=source_digest)).rowcount
    if not done:
        conn.execute(insert(t.workers).values(worker_id=worker_id, started_at=now, seen_at=now,
                                              sources_digest=source_digest))


def seen(db: Database, worker_id: str) -> str | None:
    """Renew this worker's ``seen_at``; the digest of the store's source list now (None: none recorded)."""
    with db.begin() as conn:
        conn.execute(update(t.workers).where(t.workers.c.worker_id == worker_id).values(seen_at=lease_now(conn, db)))
        row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "source_list")).first()
    return digest(json.loads(row[0])) if row else None


def leave(db: Database, worker_id: str) -> None:
    """Remove this worker's row (a clean stop)."""
    with db.begin() as conn:
        conn.execute(delete(t.workers).where(t.workers.c.worker_id == worker_id))


def live(db: Database, within: float) -> list[dict[str, Any]]:
    """The workers seen in the last ``within`` seconds: id, started_at, seen_at, sources_digest."""
    with db.read() as conn:
        now = lease_now(conn, db)
        rows = conn.execute(select(t.workers).where(t.workers.c.seen_at > now - timedelta(seconds=within))
                            .order_by(t.workers.c.worker_id))
        return [dict(r._mapping) for r in rows]


def describe(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], most: int = 3) -> str:
    """How two source lists differ, in a few words: added, removed and changed sources (and which fields)."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = [
        f"{name} ({', '.join(k for k in _FIELDS if old[name].get(k) != new[name].get(k))})"
        for name in sorted(set(old) & set(new)) if old[name] != new[name]
    ]
    parts = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            shown = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
            parts.append(f"{len(names)} {label}: {shown}")
    return "; ".join(parts) or "the same sources"
