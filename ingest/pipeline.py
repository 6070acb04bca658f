"""The one module that knows the order of the stages.

``process_source(source, deps) -> SourceReport`` runs fetch -> parse -> extract ->
clean -> dedup -> store for one source; ``run_once(deps)`` does it for every enabled
source with bounded concurrency and returns a ``RunReport``. A failing source is
recorded on its row and reported in one line; the others go on. Only a store that
cannot be written stops the run.

Stopping (``Deps.should_stop``: the daemon's SIGTERM, ``--once``'s SIGINT/SIGTERM):
no source starts after the flag, no item is committed after it (the one being
written commits whole or not at all: it is one transaction or savepoint), waits for
the process pool and page fetches give up within ``pool.STOP_CHECK`` s, and a source
stopped anywhere records no poll: not a failure, no backoff, and its validators stay
as they were, so the next run fetches it in full and does the rest.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Callable, Iterator, Sequence

from ingest import dedup, pool, polling
from ingest.clean import RuleSet, clean, paragraph_fingerprint, ruleset, strip_learned
from ingest.config import Config, ExtractConfig, SourceConfig
from ingest.errors import FetchError, Gone, HTTPStatusError, IngestError, LeaseLost, StoreError
from ingest.extract import extract
from ingest.fetch import Fetcher
from ingest.models import (
    INDEX_KEY_MAX_BYTES, Document, Entry, FetchResult, Fingerprint, ItemOutcome, Member, ParsedFeed, PollRecord,
    Removal, SourceReport, SourceState,
)
from ingest.parse import parse
from ingest.store import Store, Writer
from ingest.store.leases import Lease
from ingest.urls import canonical_url, is_http_url, redact_url

log = logging.getLogger("ingest")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Deps:
    """What the stages need from outside: config, store, HTTP client, clock."""

    config: Config
    store: Store
    fetcher: Fetcher
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    # Optional executors (run_once sets them for a run): ``cpu`` runs parse, extract,
    # clean and fingerprint (a process pool uses every core: feedparser and
    # trafilatura hold the GIL); ``io`` fetches a source's article pages concurrently.
    # Without them a source is processed in the calling thread, one entry at a time.
    cpu: Executor | None = None
    io: Executor | None = None
    # The stop flag (the daemon's, or --once's on SIGINT/SIGTERM), checked before each
    # source, after its fetch, in pool waits, before each page and between items: a
    # stopping run finishes the item in hand (its own transaction) and leaves the rest
    # for the next run.
    should_stop: Callable[[], bool] | None = None
    # The caller ends its process right after a stopped run (--once): run_once then
    # leaves its pool workers to die with it instead of terminating them (see pool.abandon)
    exits_when_stopped: bool = False

    def stopping(self) -> bool:
        """True once the run was asked to stop."""
        return self.should_stop is not None and self.should_stop()

    @property
    def scheme(self) -> dedup.SignatureScheme:
        return dedup.scheme_for(self.config.dedup)


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


def process_source(source: SourceConfig, state: SourceState, deps: Deps, lease: Lease | None = None) -> SourceReport:
    """Poll one source: fetch, parse, and process each new or changed entry.

    With ``lease`` (a worker's claim on the source), every item and the poll record
    are written only while the lease is held; a lost lease ends the poll, fenced.
    """
    if deps.stopping():
        return _stopped(source, "stopped before it started")
    try:
        return _process(source, state, deps, lease)
    except LeaseLost as exc:
        log.warning("%s: %s; this worker stops polling it", source.name, exc)
        return SourceReport(source.name, ok=False, error=str(exc), error_kind=exc.kind, fenced=True)
    except StoreError:
        raise
    except pool.Stopped:
        return _stopped(source, "stopped while its entries were prepared")
    except Exception as exc:  # a bug must cost one source, not the run; logged with its traceback
        if deps.stopping():
            # what a stop breaks (a pool shut down under a wait, a fetch cut short) is
            # no bug of the source: nothing is recorded, the next run polls it in full
            log.debug("%s: %s: %s while stopping", source.name, type(exc).__name__, exc)
            return _stopped(source, "stopped")
        log.exception("%s: internal error", source.name)
        message = f"internal error: {type(exc).__name__}: {exc}"
        try:
            _record_failure(source, state, deps, lease, message, "internal", None, requests=0)
        except LeaseLost:
            pass  # the source is another worker's now; nothing of ours to record
        return SourceReport(source.name, ok=False, error=message, error_kind="internal")


def _process(source: SourceConfig, state: SourceState, deps: Deps, lease: Lease | None) -> SourceReport:
    cfg = deps.config
    timer = _Timer()
    if state.disabled_reason:
        return SourceReport(source.name, ok=False, error=f"disabled: {state.disabled_reason}", error_kind="disabled")

    with timer.stage("fetch"):
        try:
            result = deps.fetcher.fetch_feed(source, state)
        except FetchError as exc:
            if deps.stopping():  # a fetch cut short by the stop is not the source's failure
                return _stopped(source, "stopped while its feed was fetched")
            retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
            disabled = f"{exc} (since {deps.clock():%Y-%m-%d %H:%M} UTC)" if isinstance(exc, Gone) else None
            busy = isinstance(exc, HTTPStatusError) and (exc.status == 429 or exc.status == 503 and bool(retry_after))
            _record_failure(source, state, deps, lease, str(exc), exc.kind, retry_after, requests=exc.requests,
                            disabled=disabled, host_busy=busy)
            return SourceReport(source.name, ok=False, error=str(exc), error_kind=exc.kind, requests=exc.requests)

    if deps.stopping():
        return _stopped(source, "stopped after its feed was fetched")
    moved = _moved(result, state)
    # 304, or a server that ignores validators but sends the same bytes: nothing to parse
    if result.not_modified or (result.body_hash and result.body_hash == state.body_hash and not moved):
        _record_success(source, state, deps, lease, result, state.ttl, moved)
        return SourceReport(source.name, ok=True, not_modified=True, requests=result.requests, timings=timer.totals)

    try:
        feed, seconds = pool.call(deps.cpu, parse_timed, result, stop=deps.should_stop)
        timer.add("parse", seconds)
    except IngestError as exc:
        _record_failure(source, state, deps, lease, str(exc), exc.kind, None, requests=result.requests)
        return SourceReport(source.name, ok=False, error=str(exc), error_kind=exc.kind, requests=result.requests)

    counts = {"new": 0, "updated": 0, "unchanged": 0, "duplicates": 0}
    item_errors: list[str] = []
    known = deps.store.known_entries(state.source_id)
    learned = deps.store.learned_boilerplate(state.source_id)
    rules = ruleset(cfg.extract.builtin_rules, source.strip)
    fresh = [e for e in feed.entries if known.get(e.identity) != e.entry_hash]
    counts["unchanged"] = len(feed.entries) - len(fresh)
    requests_sent = result.requests + (sum(1 for e in fresh if e.url) if source.full_text else 0)
    prepared_with = learned
    done = 0
    stopped = False
    for chunk in _prepared(fresh, source, deps, learned, timer, result.fetched_at or deps.clock()):
        # the chunk's items are ready: one write batch (each item still all or nothing)
        with timer.stage("store"), deps.store.writer() as writer:
            for item in chunk:
                if deps.stopping():  # the items before this one are committed with the batch
                    stopped = True
                    break
                done += 1
                if item.error is not None:
                    item_errors.append(f"{item.entry.identity}: {item.error}")
                    continue
                if learned is not prepared_with:
                    # an earlier item of this source made paragraphs boilerplate after the
                    # worker cleaned this one: clean it again, exactly as a serial run would
                    # (rare; inside the batch, so its time counts as store time)
                    item = _cleaned_again(item, rules, learned, deps.scheme)
                try:
                    outcome = _commit(writer, item, state.source_id, deps, lease)
                except StoreError:
                    raise
                except IngestError as exc:
                    item_errors.append(f"{item.entry.identity}: {exc}")
                    continue
                counts[outcome.status] += 1
                if outcome.status == "new" and outcome.decision and outcome.decision.kind == "duplicate":
                    counts["duplicates"] += 1
                if outcome.learned:
                    learned = learned | frozenset(outcome.learned)
        if stopped:
            # No poll recorded: validators, body hash and next_poll_at stay as they were,
            # so the next start fetches the feed in full and does the remaining entries.
            left = len(fresh) - done
            log.info("%s: stopping with %d entries not processed; they are done on the next poll", source.name, left)
            return SourceReport(
                source.name, ok=True, items_seen=len(feed.entries) - left, items_new=counts["new"],
                items_updated=counts["updated"], items_unchanged=counts["unchanged"], duplicates=counts["duplicates"],
                warnings=feed.warnings + (f"stopped with {left} entries not processed",),
                item_errors=tuple(item_errors), requests=requests_sent, timings=timer.totals, stopped=True,
            )

    _record_success(source, state, deps, lease, result, feed.ttl, moved, requests=requests_sent)
    return SourceReport(
        source.name, ok=True, items_seen=len(feed.entries), items_new=counts["new"], items_updated=counts["updated"],
        items_unchanged=counts["unchanged"], duplicates=counts["duplicates"], warnings=feed.warnings,
        item_errors=tuple(item_errors), requests=requests_sent, timings=timer.totals,
    )


def _stopped(source: SourceConfig, why: str) -> SourceReport:
    """The report of a source the stop flag interrupted: nothing recorded, all left for the next run."""
    return SourceReport(source.name, ok=True, warnings=(why,), stopped=True)


def _commit(writer: Writer, item: Prepared, source_id: int, deps: Deps, lease: Lease | None) -> ItemOutcome:
    """Write one prepared item with its dedup decision (all or nothing); again if PostgreSQL dropped the connection.

    On PostgreSQL each item is its own transaction: one that failed because the
    connection went (a server restart, pg_terminate_backend) committed nothing, so
    writing it again on a new connection is safe; tried again after each of
    ``RECONNECT_WAITS``. SQLite's batch is one transaction: nothing to retry there.
    """
    waits = list(RECONNECT_WAITS)
    while True:
        try:
            return _commit_once(writer, item, source_id, deps, lease)
        except StoreError as exc:
            if not (deps.store.is_postgres and waits and _connection_lost(exc)) or deps.stopping():
                raise
            log.warning("store: connection lost while writing an item (%s); writing it again", exc)
            time.sleep(waits.pop(0))


# Seconds waited before each new attempt at an item whose PostgreSQL connection went:
# a restarting server answers again within a few seconds (pg_ctl restart: ~1 s).
RECONNECT_WAITS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _connection_lost(exc: StoreError) -> bool:
    """Whether a store error is a lost or refused PostgreSQL connection (nothing of the item committed)."""
    cause = exc.__cause__
    if getattr(cause, "connection_invalidated", False):
        return True
    import psycopg  # only PostgreSQL stores get here

    return isinstance(getattr(cause, "orig", None), psycopg.OperationalError)


def _commit_once(writer: Writer, item: Prepared, source_id: int, deps: Deps, lease: Lease | None) -> ItemOutcome:
    cfg = deps.config
    document, fp = item.document, item.fp
    assert document is not None and fp is not None
    return writer.commit_item(
        source_id=source_id,
        entry=item.entry,
        canonical_url=_canonical(item.entry.url),
        document=document,
        fp=fp,
        decide=partial(
            dedup.decide, document.text, cfg=cfg.dedup, shingle_count=fp.shingle_count,
            features=fp.features, when=item.when, signature=fp.signature,
        ),
        policy=canonical_policy(cfg.dedup.canonical),
        max_candidates=cfg.dedup.max_candidates,
        sightings=item.sightings,
        learn=(cfg.extract.boilerplate_min_count, cfg.extract.boilerplate_window),
        fetched_at=deps.clock(),
        reclean=partial(_without_learned, scheme=deps.scheme),
        lease=lease,
    )


def _cleaned_again(item: Prepared, rules: RuleSet, learned: frozenset[str], scheme: dedup.SignatureScheme) -> Prepared:
    """``item`` cleaned from its raw extraction with the learned paragraphs known now."""
    assert item.raw is not None
    document = clean(item.raw, rules, learned)
    fp = dedup.fingerprint(document.text, scheme, item.when)
    return replace(item, document=document, fp=fp, sightings=tuple(_sightings(document)))


def _without_learned(
    text: str, learned: frozenset[str], when: datetime | None, scheme: dedup.SignatureScheme
) -> tuple[str, Fingerprint, tuple[Removal, ...]] | None:
    """A stored text (of time ``when``) re-cleaned of newly learned paragraphs, re-fingerprinted (None: unchanged)."""
    cleaned, removed = strip_learned(text, learned)
    return (cleaned, dedup.fingerprint(cleaned, scheme, when), removed) if removed else None


# ---------------------------------------------------------------------------- CPU work (in pool workers)


@dataclass(frozen=True)
class Prepared:
    """One entry made ready for the store: extracted, cleaned and fingerprinted (or its error)."""

    entry: Entry
    raw: Document | None = None  # extracted (page note included), before cleaning
    document: Document | None = None  # cleaned with the learned keys the task was given
    fp: Fingerprint | None = None
    error: str | None = None
    sightings: tuple[tuple[str, str], ...] = ()  # (fingerprint, text) of ``document``'s paragraphs, for learning boilerplate
    extract_seconds: float = 0.0  # extract + clean
    dedup_seconds: float = 0.0  # fingerprint
    when: datetime | None = None  # published, else the feed's fetch time: the dedup time window's reference


def parse_timed(result: FetchResult) -> tuple[ParsedFeed, float]:
    """``parse(result)`` and the seconds it took (runs in a pool worker)."""
    started = time.perf_counter()
    feed = parse(result)
    return feed, time.perf_counter() - started


def prepare_entries(
    jobs: Sequence[tuple[Entry, FetchResult | None, str | None]],
    source: SourceConfig,
    extract_cfg: ExtractConfig,
    learned: frozenset[str],
    scheme: dedup.SignatureScheme,
    fetched_at: datetime | None = None,
) -> list[Prepared]:
    """Extract, clean and fingerprint entries (with their pages and page notes); pure, for pool workers.

    ``fetched_at`` (the feed's fetch time) stands in for a missing publication time.
    """
    rules = ruleset(extract_cfg.builtin_rules, source.strip)
    out: list[Prepared] = []
    for entry, page, note in jobs:
        started = time.perf_counter()
        try:
            raw = extract(entry, page, extract_cfg)
            if note:
                raw = _with_note(raw, note)
            document = clean(raw, rules, learned)
        except IngestError as exc:
            out.append(Prepared(entry, error=str(exc)))
            continue
        sightings = tuple(_sightings(document))
        extracted = time.perf_counter()
        when = document.published_at or fetched_at
        fp = dedup.fingerprint(document.text, scheme, when)
        out.append(Prepared(
            entry, raw, document, fp, None, sightings, extracted - started, time.perf_counter() - extracted, when,
        ))
    return out


def _prepared(
    fresh: list[Entry], source: SourceConfig, deps: Deps, learned: frozenset[str], timer: _Timer,
    fetched_at: datetime,
) -> Iterator[list[Prepared]]:
    """The entries to store, prepared, in order and in write batches (in the pool when there is one)."""
    chunks = [fresh[i : i + pool.CHUNK_ENTRIES] for i in range(0, len(fresh), pool.CHUNK_ENTRIES)]
    args = (source, deps.config.extract, learned, deps.scheme, fetched_at)
    calls = ((_pages(chunk, source, deps, timer), *args) for chunk in chunks)
    for batch in pool.in_order(deps.cpu, prepare_entries, calls, stop=deps.should_stop):
        yield _accounted(batch, timer)


def _accounted(items: list[Prepared], timer: _Timer) -> list[Prepared]:
    # work done in a worker is counted where it was done, not as time waited for it
    for item in items:
        timer.add("extract", item.extract_seconds)
        timer.add("dedup", item.dedup_seconds)
    return items


def _pages(
    chunk: list[Entry], source: SourceConfig, deps: Deps, timer: _Timer
) -> list[tuple[Entry, FetchResult | None, str | None]]:
    if not source.full_text:
        return [(entry, None, None) for entry in chunk]
    with timer.stage("fetch"):
        fetch = partial(_fetch_page, deps.fetcher, stop=deps.should_stop)
        pages = list(deps.io.map(fetch, chunk)) if deps.io is not None else [fetch(e) for e in chunk]
    return [(entry, page, note) for entry, (page, note) in zip(chunk, pages)]


def _fetch_page(fetcher: Fetcher, entry: Entry, stop: Callable[[], bool] | None = None) -> tuple[FetchResult | None, str | None]:
    if not entry.url or (stop is not None and stop()):  # a stopping run commits no more items: no page needed
        return None, None
    try:
        return fetcher.fetch_page(entry.url or ""), None
    except FetchError as exc:
        return None, f"full text not fetched ({exc.kind}): {exc}"


def _with_note(document: Document, note: str) -> Document:
    return replace(document, notes=document.notes + (note,))


def _sightings(document: Document) -> list[tuple[str, str]]:
    seen = [(paragraph_fingerprint(p), p) for p in document.paragraphs]
    seen += [(paragraph_fingerprint(r.text), r.text) for r in document.removals if r.rule == "learned"]
    return seen


def _canonical(url: str | None) -> str | None:
    """The indexed form of an http(s) link; None for others and for links too long to index."""
    if not is_http_url(url):
        return None
    canonical = canonical_url(url)
    return canonical if len(canonical.encode("utf-8", "surrogatepass")) <= INDEX_KEY_MAX_BYTES else None


def canonical_policy(name: str) -> Callable[[Member], tuple]:
    """The store's canonical-election key for a ``[dedup] canonical`` policy name."""
    return partial(dedup.canonical_key, policy=name)


def _moved(result: FetchResult, state: SourceState) -> str | None:
    if result.permanent_redirect and result.permanent_redirect != (state.effective_url or state.url):
        return result.permanent_redirect
    return None


def _record_success(
    source: SourceConfig, state: SourceState, deps: Deps, lease: Lease | None, result: FetchResult,
    ttl: float | None, moved: str | None, requests: int | None = None,
) -> None:
    if moved:
        log.warning("%s: feed moved permanently to %s; polling the new URL from now on", source.name, redact_url(moved))
    keep_validators = result.not_modified
    delay = polling.next_delay(source.interval, deps.config.fetch, max_age=result.max_age, ttl=ttl,
                               jitter=deps.config.daemon.jitter, overdue=_overdue(state, lease), rng=deps.rng)
    _record(deps, lease, state, PollRecord(
        at=deps.clock(), ok=True, next_poll_in=delay,
        etag=(result.etag or state.etag) if keep_validators else result.etag,
        last_modified=(result.last_modified or state.last_modified) if keep_validators else result.last_modified,
        body_hash=None if keep_validators else result.body_hash,
        effective_url=moved, requests=result.requests if requests is None else requests, ttl=ttl,
    ))


def _record_failure(
    source: SourceConfig, state: SourceState, deps: Deps, lease: Lease | None, error: str, kind: str,
    retry_after: float | None, *, requests: int, disabled: str | None = None, host_busy: bool = False,
) -> None:
    cfg = deps.config.fetch
    delay = polling.next_delay(source.interval, cfg, consecutive_errors=state.consecutive_errors + 1,
                               retry_after=retry_after, rng=deps.rng)
    _record(deps, lease, state, PollRecord(
        at=deps.clock(), ok=False, error=error, error_kind=kind, disabled_reason=disabled, requests=requests,
        next_poll_in=delay,
        # a host that said "too many requests" or "come back later" waits for the fleet
        host_retry_after=(retry_after or cfg.backoff_base) if host_busy else None,
    ))


def _overdue(state: SourceState, lease: Lease | None) -> float:
    """Seconds the poll started after the source was due (both on the schedule's clock)."""
    if lease is None or lease.claimed_at is None or state.next_poll_at is None:
        return 0.0
    return max(0.0, (lease.claimed_at - state.next_poll_at).total_seconds())


def _record(deps: Deps, lease: Lease | None, state: SourceState, poll: PollRecord) -> None:
    """Record the poll (fenced by ``lease``); LeaseLost when this worker no longer holds it."""
    if not deps.store.complete(lease, state.source_id, poll, clock=deps.clock):
        raise LeaseLost(f"lease on source {state.name!r} lost (expired or taken over): poll not recorded")
