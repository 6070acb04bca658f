"""Source rows: the config's sources in the store, their poll state, what each holds."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ingest.config import SourceConfig
from ingest.models import PollRecord, SourceState
from ingest.store import schema as t
from ingest.store.engine import Database
from ingest.urls import host_of, is_http_url

# Advisory lock of sync_sources on PostgreSQL: two daemons starting at once would
# both insert a new source.
_SYNC_LOCK = 7306330


def _config_hash(source: SourceConfig) -> str:
    return hashlib.sha256(source.url.encode("utf-8")).hexdigest()[:16]


def sync_sources(db: Database, configs: Iterable[SourceConfig]) -> dict[str, SourceState]:
    """Insert or update source rows from the config; a changed URL resets fetch state."""
    configs = list(configs)
    # immediate: it reads then writes; a deferred SQLite transaction whose snapshot a
    # poll's commit made stale cannot take the write lock ("database is locked" at
    # once, no busy wait) - seen on a SIGHUP reload while the daemon was polling
    with db.begin(immediate=True) as conn:
        if db.is_postgres:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_SYNC_LOCK})"))
        rows = {r.name: r for r in conn.execute(select(t.sources))}
        for source in configs:
            row = rows.get(source.name)
            digest = _config_hash(source)
            host = _host(source.url)
            if row is None:
                conn.execute(
                    insert(t.sources).values(
                        name=source.name, url=source.url, config_hash=digest, priority=source.priority,
                        consecutive_errors=0, error_count=0, poll_count=0, request_count=0, active=True, host=host,
                    )
                )
            elif row.config_hash != digest:
                conn.execute(
                    update(t.sources).where(t.sources.c.id == row.id).values(
                        url=source.url, config_hash=digest, priority=source.priority, active=True,
                        effective_url=None, etag=None, last_modified=None, body_hash=None,
                        disabled_reason=None, consecutive_errors=0, next_poll_at=None, feed_ttl=None, host=host,
                    )
                )
            elif row.priority != source.priority or not row.active or row.host is None and host:
                conn.execute(
                    update(t.sources).where(t.sources.c.id == row.id).values(
                        priority=source.priority, active=True, host=_host(row.effective_url or source.url),
                    )
                )
        names = {s.name for s in configs}
        stale = [r.id for r in rows.values() if r.name not in names and r.active]
        if stale:
            conn.execute(update(t.sources).where(t.sources.c.id.in_(stale)).values(active=False))
        add_hosts(conn, (h for h in conn.execute(select(t.sources.c.host).distinct()).scalars() if h))
    return {s.name: s for s in source_states(db) if s.name in names}


def _host(url: str | None) -> str | None:
    """The politeness key of a feed URL (None for a local file: nothing to be polite to)."""
    return host_of(url) or None if url and is_http_url(url) else None


def add_hosts(conn: Connection, hosts: Iterable[str]) -> None:
    """Rows in ``hosts`` for hosts not there yet (free at once); safe when two workers add one host."""
    rows = [{"host": h, "next_allowed_at": _EPOCH} for h in sorted(set(hosts))]
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(t.hosts).values(rows).on_conflict_do_nothing(index_elements=["host"]))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def source_states(db: Database, include_inactive: bool = False) -> list[SourceState]:
    """Every (active) source's state, by name."""
    query = select(t.sources).order_by(t.sources.c.name)
    if not include_inactive:
        query = query.where(t.sources.c.active.is_(True))
    with db.read() as conn:
        return [state_of(row) for row in conn.execute(query)]


def source_state(db: Database, name: str) -> SourceState | None:
    """One source's state (None when no source of that name is stored)."""
    with db.read() as conn:
        row = conn.execute(select(t.sources).where(t.sources.c.name == name)).first()
    return state_of(row) if row else None


def has_source(db: Database, name: str) -> bool:
    """Whether a source of that name has ever been stored."""
    with db.read() as conn:
        return conn.execute(select(t.sources.c.id).where(t.sources.c.name == name)).first() is not None


def poll_values(poll: PollRecord, now: datetime) -> dict[str, Any]:
    """The source columns one poll sets: validators on success, error counts on failure; times from ``now``."""
    values: dict[str, Any] = {
        "last_polled_at": now,
        "next_poll_at": now + timedelta(seconds=poll.next_poll_in),
        "poll_count": t.sources.c.poll_count + 1,
        "request_count": t.sources.c.request_count + poll.requests,
    }
    if poll.ok:
        values.update(
            last_success_at=now, consecutive_errors=0, last_error=None, last_error_kind=None, feed_ttl=poll.ttl
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
        values["host"] = host_of(poll.effective_url) or None
    if poll.disabled_reason is not None:
        values["disabled_reason"] = poll.disabled_reason
    return values


def known_entries(db: Database, source_id: int) -> dict[str, str]:
    """identity -> entry hash of the source's stored items (to skip unchanged entries)."""
    with db.read() as conn:
        rows = conn.execute(
            select(t.items.c.identity, t.items.c.entry_hash).where(t.items.c.source_id == source_id)
        )
        return {r.identity: r.entry_hash for r in rows}


def state_of(row: Any) -> SourceState:
    return SourceState(
        source_id=row.id, name=row.name, url=row.url, effective_url=row.effective_url, etag=row.etag,
        last_modified=row.last_modified, body_hash=row.body_hash, last_polled_at=row.last_polled_at,
        last_success_at=row.last_success_at, last_error=row.last_error, last_error_kind=row.last_error_kind,
        consecutive_errors=row.consecutive_errors or 0, error_count=row.error_count or 0,
        next_poll_at=row.next_poll_at, disabled_reason=row.disabled_reason, ttl=row.feed_ttl,
        poll_count=row.poll_count or 0, request_count=row.request_count or 0,
    )
