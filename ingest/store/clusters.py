"""Cluster rows: canonical election, absorbing a lone item, recounting, dropping.

Each function works inside the caller's transaction (a ``Connection``). Which member
is canonical is decided by ``policy`` (``dedup.canonical_key`` for a policy name):
the store records the outcome and every change of canonical.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from ingest.models import Member
from ingest.store import schema as t
from ingest.store.statements import Q

Policy = Callable[[Member], tuple]


def elect_canonical(conn: Connection, cluster_id: int, new_item_id: int | None, policy: Policy, now: datetime) -> None:
    """Re-elect the cluster's canonical item; record a change of canonical."""
    current = conn.execute(Q.canonical_of, {"b_cluster": cluster_id}).scalar_one()
    if new_item_id is not None and current is not None:
        # a new member only has to beat the current canonical
        found = conn.execute(Q.members_by_id, {"b_ids": [current, new_item_id]})
    else:
        found = conn.execute(Q.members_of_cluster, {"b_cluster": cluster_id})
    members = [Member(r.id, r.published_at, r.fetched_at, r.priority or 0, r.length or 0) for r in found]
    set_canonical(conn, cluster_id, current, min(members, key=policy).item_id, now)


def set_canonical(conn: Connection, cluster_id: int, current: int | None, best: int, now: datetime) -> None:
    """Make ``best`` the cluster's canonical item; record the change when there was one before."""
    if best == current:
        return
    conn.execute(Q.set_canonical, {"b_cluster": cluster_id, "b_item": best, "b_now": now})
    if current is not None:
        conn.execute(Q.record_change, {
            "cluster_id": cluster_id, "old_item_id": current, "new_item_id": best, "changed_at": now,
            "reason": "a better candidate under the canonical policy",
        })


def absorb(conn: Connection, lone: int, cluster_id: int, policy: Policy, now: datetime) -> None:
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
    drop_cluster(conn, lone)
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(size=t.clusters.c.size + 1, updated_at=now))
    elect_canonical(conn, cluster_id, item_id, policy, now)


def reelect(
    conn: Connection, cluster_id: int, previous: int | None, policy: Policy, now: datetime, reason: str,
) -> bool:
    """Elect a canonical among all members of a cluster whose canonical may have left; record a change."""
    # with no current canonical, elect_canonical looks at every member and records nothing
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(canonical_item_id=None))
    elect_canonical(conn, cluster_id, None, policy, now)
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


def recount(conn: Connection, cluster_id: int, changed_at: datetime | None = None) -> int:
    """Count a cluster's members again and store the size (and ``changed_at``); drop it when empty (0)."""
    size = conn.execute(
        select(func.count()).select_from(t.items).where(t.items.c.cluster_id == cluster_id)
    ).scalar_one()
    if size == 0:
        drop_cluster(conn, cluster_id)
        return 0
    values: dict[str, Any] = {"size": size} if changed_at is None else {"size": size, "updated_at": changed_at}
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(**values))
    return size


def drop_cluster(conn: Connection, cluster_id: int) -> None:
    """Delete a cluster that no longer has items, with its history of canonical changes."""
    conn.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(canonical_item_id=None))
    conn.execute(delete(t.canonical_changes).where(t.canonical_changes.c.cluster_id == cluster_id))
    conn.execute(delete(t.clusters).where(t.clusters.c.id == cluster_id))
