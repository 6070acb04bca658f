"""The sources table as the queue: claims, leases, heartbeats, fenced completion, politeness.

Every worker (a daemon, an ``--once`` run) polls a source only while it holds the
source's lease: ``claim`` picks due, unleased sources whose host is free and writes
the worker's name, a fresh token and an expiry computed from the database's clock;
``heartbeat`` extends the leases of polls still running; ``complete`` records the
poll and releases the lease only if the token is still the worker's, so a worker
paused past its lease (and whose source another worker may have taken) cannot
write; the writer checks the same token before each item (``holds``).

PostgreSQL: the claim locks its candidate rows with ``FOR UPDATE SKIP LOCKED`` (two
workers never claim one source, and neither waits for the other), then the free host
rows the same way, so ``[fetch] per_host_concurrency`` and ``per_host_delay`` hold for
the whole fleet. In-flight polls per host are counted from live leases: a killed
worker's count disappears with its leases. SQLite: the same statements in one
``BEGIN IMMEDIATE`` transaction (one writer at a time), timed by the worker's clock.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

from sqlalchemy import and_, case, exists, func, or_, select, text, tuple_, update
from sqlalchemy.engine import Connection

from ingest.models import PollRecord, SourceState
from ingest.store import schema as t
from ingest.store.engine import Database, utcnow
from ingest.store.sources import add_hosts, poll_values, state_of

Clock = Callable[[], datetime]
S, H = t.sources.c, t.hosts.c


@dataclass(frozen=True)
class Lease:
    """A worker's right to poll one source until ``until`` (extended by heartbeats)."""

    source_id: int
    name: str
    token: str
    owner: str
    until: datetime
    state: SourceState  # the source's poll state when it was claimed
    claimed_at: datetime | None = None  # on the schedule's clock (next_poll_at's): how late the poll starts


@dataclass(frozen=True)
class Politeness:
    """Per-host limits the claim enforces for the fleet (from ``[fetch]``)."""

    concurrency: int
    delay: float  # seconds between two claims of one host's sources


def database_now(conn: Connection, db: Database, clock: Clock) -> datetime:
    """The schedule's time (when sources are due, when a poll is recorded): PostgreSQL's ``now()``, else ``clock()``."""
    if db.is_postgres:
        return conn.execute(text("SELECT now()")).scalar_one()
    return clock()


def lease_now(conn: Connection, db: Database) -> datetime:
    """The time leases and host delays run on: PostgreSQL's ``now()``, else this machine's clock.

    Never a test's fixed clock: leases coordinate processes, and a host's delay must pass.
    """
    if db.is_postgres:
        return conn.execute(text("SELECT now()")).scalar_one()
    return utcnow()


def _times(conn: Connection, db: Database, clock: Clock) -> tuple[datetime, datetime]:
    """(``database_now``, ``lease_now``) in one round trip: on PostgreSQL both are the transaction's ``now()``."""
    if db.is_postgres:
        now = database_now(conn, db, clock)
        return now, now
    return database_now(conn, db, clock), lease_now(conn, db)


def _pollable() -> object:
    return and_(S.active.is_(True), S.disabled_reason.is_(None))


# A ``names`` list longer than this is applied to the candidates in Python, not in SQL.
# The daemon passes every enabled source: 100,000 names are 100,000 bind parameters,
# over PostgreSQL's limit of 65,535 (every claim failed) and SQLite's of 32,766; as one
# array parameter (``name = ANY(...)``) they cost 180 ms a claim (bench/fleet.py, 100k).
NAMES_IN_SQL = 1000


def claim(
    db: Database, *, owner: str, limit: int, lease_seconds: float, politeness: Politeness, clock: Clock,
    names: Collection[str] | None = None, due_only: bool = True,
) -> list[Lease]:
    """Claim up to ``limit`` sources (of ``names``, when given) for ``owner``; their leases.

    A source is claimable when it is active and not disabled, its lease (if any) has
    run out, its host is free (no claim within ``politeness.delay``, fewer than
    ``politeness.concurrency`` live leases) and, with ``due_only``, its next poll time
    has come (a source never polled is due at once). The most overdue go first.
    """
    if limit <= 0 or names is not None and not names:
        return []
    wanted = None
    if names is not None and len(names) > NAMES_IN_SQL:
        wanted = names if isinstance(names, AbstractSet) else set(names)  # a dict's keys: no copy
    with db.begin(immediate=True) as conn:
        due_at, now = _times(conn, db, clock)
        # candidates: sources of a host still in its delay are left out here, so a host
        # with thousands of due feeds cannot crowd the others out
        where = [
            _pollable(), or_(S.lease_until.is_(None), S.lease_until <= now),
            ~exists().where(and_(H.host == S.host, H.next_allowed_at > now)),
        ]
        if names is not None and wanted is None:
            where.append(S.name.in_(list(names)))
        free: dict[str, int] = {}
        chosen: list[int] = []
        taken: Counter[str] = Counter()
        for rows in _candidates(conn, where, due_at if due_only else None, max(limit * 4, limit + 16), limit, chosen):
            if wanted is not None:
                rows = [r for r in rows if r.name in wanted]
            hosts = sorted({r.host for r in rows if r.host} - free.keys())
            free.update(dict.fromkeys(hosts, 0))
            free.update(_free_hosts(conn, hosts, politeness, now))
            for row in rows:
                if len(chosen) >= limit:
                    break
                if row.host:  # a local file has no host: nothing to be polite to
                    if taken[row.host] >= free[row.host]:
                        continue
                    taken[row.host] += 1
                chosen.append(row.id)
        if not chosen:
            return []
        until = now + timedelta(seconds=lease_seconds)
        tokens = {source_id: uuid.uuid4().hex for source_id in chosen}
        claimed = {}
        for source_id, token in tokens.items():
            claimed[source_id] = conn.execute(
                update(t.sources).where(S.id == source_id)
                .values(lease_owner=owner, lease_token=token, lease_until=until).returning(*t.sources.c)
            ).one()
        if politeness.delay > 0 and taken:
            conn.execute(update(t.hosts).where(H.host.in_(sorted(taken)))
                         .values(next_allowed_at=now + timedelta(seconds=politeness.delay)))
    return [
        Lease(source_id, claimed[source_id].name, tokens[source_id], owner, until, state_of(claimed[source_id]),
              claimed_at=due_at)
        for source_id in chosen
    ]


def _candidates(
    conn: Connection, where: list[Any], due_at: datetime | None, size: int, limit: int, chosen: list[int],
) -> Iterator[list[Any]]:
    """Pages of candidate rows, locked, most overdue first, until ``chosen`` has ``limit`` or none are left.

    Never-polled sources first (by id), then by (next_poll_at, id), each walked in the
    order of ``ix_sources_due`` (a plain index on both backends: no NULLS FIRST), so a
    page costs its own rows, not a sort of every due source (100,000 overdue: 280 ms
    a claim with the sort). The pages grow fourfold: when the first is taken up by
    sources that cannot be claimed (their host is at its concurrency, another worker
    locked them, they are not in ``names``), the next reaches past them.
    """
    later = S.next_poll_at.is_not(None) if due_at is None else S.next_poll_at <= due_at
    for segment, key in ((S.next_poll_at.is_(None), (S.id,)), (later, (S.next_poll_at, S.id))):
        after: tuple[Any, ...] | None = None
        page = size
        while len(chosen) < limit:
            query = select(S.id, S.name, S.host, S.next_poll_at).where(*where, segment)
            if after is not None:
                query = query.where(tuple_(*key) > tuple_(*after))
            rows = conn.execute(
                query.order_by(*key).limit(page).with_for_update(skip_locked=True, of=t.sources)
            ).all()
            if rows:
                yield rows
            if len(rows) < page:
                break
            after = tuple(getattr(rows[-1], c.name) for c in key)
            page *= 4


def _free_hosts(conn: Connection, hosts: list[str], politeness: Politeness, now: datetime) -> dict[str, int]:
    """Of ``hosts``, those this claim may use, locked, with how many of their sources it may take."""
    if not hosts:
        return {}
    # one round trip: the free hosts locked, each with its live leases counted (by
    # ix_sources_host) in the same statement
    busy = select(func.count()).where(S.host == H.host, S.lease_until > now).scalar_subquery()
    rows = conn.execute(
        select(H.host, busy.label("n")).where(H.host.in_(hosts), H.next_allowed_at <= now).order_by(H.host)
        .with_for_update(skip_locked=True, of=t.hosts)
    ).all()
    if not rows:
        return {}
    per_claim = 1 if politeness.delay > 0 else politeness.concurrency
    return {r.host: max(0, min(per_claim, politeness.concurrency - r.n)) for r in rows}


def heartbeat(db: Database, leases: Iterable[Lease], lease_seconds: float, clock: Clock) -> set[str]:
    """Extend the leases still held (token unchanged, not yet run out); the tokens extended."""
    leases = list(leases)
    if not leases:
        return set()
    kept = set()
    with db.begin() as conn:
        now = lease_now(conn, db)
        until = now + timedelta(seconds=lease_seconds)
        for lease in leases:
            done = conn.execute(
                update(t.sources).where(S.id == lease.source_id, S.lease_token == lease.token, S.lease_until > now)
                .values(lease_until=until)
            ).rowcount
            if done:
                kept.add(lease.token)
    return kept


def complete(db: Database, lease: Lease | None, source_id: int, poll: PollRecord, clock: Clock) -> bool:
    """Record one poll (next poll time from the database's clock) and release the lease.

    With a lease, nothing is written unless the lease is still held (False: fenced).
    A ``Retry-After`` (429/503) also pushes the source's host back for the fleet.
    """
    with db.begin() as conn:
        now, leased_at = _times(conn, db, clock)
        values = poll_values(poll, now)
        where = [S.id == source_id]
        if lease is not None:
            where += [S.lease_token == lease.token, S.lease_until > leased_at]
        done = conn.execute(
            update(t.sources).where(*where).values(**values, lease_owner=None, lease_token=None, lease_until=None)
        ).rowcount
        if done and values.get("host"):
            add_hosts(conn, [values["host"]])
        if done and poll.host_retry_after:
            host = select(S.host).where(S.id == source_id).scalar_subquery()
            until = leased_at + timedelta(seconds=poll.host_retry_after)
            conn.execute(update(t.hosts).where(H.host == host, H.next_allowed_at < until).values(next_allowed_at=until))
    return bool(done)


def release(db: Database, lease: Lease) -> bool:
    """Give a lease back without recording a poll (a stopped worker): the source is claimable again at once."""
    with db.begin() as conn:
        return bool(conn.execute(
            update(t.sources).where(S.id == lease.source_id, S.lease_token == lease.token)
            .values(lease_owner=None, lease_token=None, lease_until=None)
        ).rowcount)


def release_dead(db: Database, host: str, alive: Callable[[int], bool]) -> list[str]:
    """Give back the live leases of workers of this ``host`` whose process is gone; those workers' names.

    A worker's name is ``host:pid[:role]``; a killed ``--once`` run or daemon on this
    machine leaves its leases until they run out, which would make the next run here
    wait up to a lease for sources nobody polls.
    """
    with db.begin() as conn:
        now = lease_now(conn, db)
        owners = conn.execute(
            select(S.lease_owner).distinct().where(S.lease_until > now, S.lease_owner.like(f"{host}:%"))
        ).scalars().all()
        dead = []
        for owner in owners:
            pid = owner[len(host) + 1:].split(":", 1)[0]
            if pid.isdigit() and not alive(int(pid)):
                conn.execute(update(t.sources).where(S.lease_owner == owner)
                             .values(lease_owner=None, lease_token=None, lease_until=None))
                dead.append(owner)
    return dead


def holds(conn: Connection, db: Database, lease: Lease) -> bool:
    """Inside a write transaction: is ``lease`` still held? (PostgreSQL: the row stays share-locked to commit.)"""
    now = lease_now(conn, db)
    query = select(S.id).where(S.id == lease.source_id, S.lease_token == lease.token, S.lease_until > now)
    if db.is_postgres:
        query = query.with_for_update(read=True)
    return conn.execute(query).first() is not None


def leased_elsewhere(db: Database, names: Sequence[str], owner: str) -> dict[str, str]:
    """Of ``names``, the sources another worker holds a live lease on: name -> that worker."""
    if not names:
        return {}
    with db.read() as conn:
        now = lease_now(conn, db)
        rows = conn.execute(select(S.name, S.lease_owner).where(
            S.name.in_(list(names)), S.lease_until > now, S.lease_owner != owner,
        ))
        return {r.name: r.lease_owner for r in rows}


def claim_waits(db: Database, names: Sequence[str]) -> dict[str, float]:
    """Of ``names``, each pollable source's seconds until it may be claimable (a lease or its host's delay)."""
    if not names:
        return {}
    with db.read() as conn:
        now = lease_now(conn, db)
        rows = conn.execute(
            select(S.name, S.lease_until, H.next_allowed_at)
            .select_from(t.sources.outerjoin(t.hosts, H.host == S.host))
            .where(S.name.in_(list(names)), _pollable())
        ).all()
    waits = {}
    for name, lease_until, allowed in rows:
        until = max((w for w in (lease_until, allowed) if w is not None), default=now)
        waits[name] = max(0.0, (until - now).total_seconds())
    return waits


def fleet_status(db: Database, owner: str, grace: float, clock: Clock) -> dict[str, int]:
    """Counted in SQL: leases this worker and all workers hold, and sources overdue by more than ``grace`` s."""
    with db.read() as conn:
        due_at, now = _times(conn, db, clock)
        live = S.lease_until > now
        row = conn.execute(select(
            func.count(case((and_(live, S.lease_owner == owner), 1))).label("mine"),
            func.count(case((live, 1))).label("leased"),
            func.count(case((and_(S.next_poll_at < due_at - timedelta(seconds=grace),
                                  or_(S.lease_until.is_(None), ~live)), 1))).label("overdue"),
        ).where(_pollable())).first()
    return {"leases_held": row.mine, "leases_fleet": row.leased, "overdue": row.overdue}
