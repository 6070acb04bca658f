"""The one module that knows the order of the stages.

``process_source(source, deps) -> SourceReport`` runs fetch -> parse -> extract ->
clean -> dedup -> store for one source; ``run_once(deps)`` does it for every enabled
source with bounded concurrency and returns a ``RunReport``. A failing source is
recorded on its row and reported in one line; the others go on. Only a store that
cannot be written stops the run.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Callable, Iterator

from ingest import dedup, polling
from ingest.clean import RuleSet, clean, paragraph_key, ruleset, strip_learned
from ingest.config import Config, SourceConfig
from ingest.errors import FetchError, Gone, HTTPStatusError, IngestError, StoreError
from ingest.extract import extract
from ingest.fetch import Fetcher
from ingest.models import Document, Entry, FetchResult, Fingerprint, PollRecord, Removal, SourceReport, SourceState
from ingest.parse import parse
from ingest.store import CanonicalMember, Store
from ingest.urls import canonical_url, redact_url

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

    @property
    def scheme(self) -> dedup.SignatureScheme:
        return dedup.scheme_for(self.config.dedup)


@dataclass
class RunReport:
    sources: list[SourceReport]
    clusters: int = 0
    elapsed: float = 0.0

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if not s.ok]

    def summary(self) -> dict[str, object]:
        """The ``--json`` summary object."""
        return {
            "sources": len(self.sources),
            "sources_failed": len(self.failed),
            "items_new": sum(s.items_new for s in self.sources),
            "items_updated": sum(s.items_updated for s in self.sources),
            "duplicates": sum(s.duplicates for s in self.sources),
            "clusters": self.clusters,
            "errors": [{"source": s.source, "error": s.error} for s in self.failed],
        }


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - started


def run_once(
    deps: Deps,
    sources: list[SourceConfig] | None = None,
    on_done: Callable[[SourceReport], None] | None = None,
) -> RunReport:
    """Poll every enabled source once (``sources`` to choose); report what happened."""
    started = time.perf_counter()
    chosen = [s for s in (sources if sources is not None else deps.config.sources) if s.enabled]
    states = deps.store.sync_sources(deps.config.sources)
    reports: list[SourceReport] = []
    workers = max(1, min(deps.config.fetch.concurrency, deps.config.daemon.workers, len(chosen) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
        futures = {pool.submit(process_source, s, states[s.name], deps): s for s in chosen}
        for future in as_completed(futures):
            report = future.result()  # StoreError propagates: the store is unusable
            reports.append(report)
            if on_done:
                on_done(report)
    reports.sort(key=lambda r: r.source)
    return RunReport(reports, clusters=deps.store.counts()["clusters"], elapsed=time.perf_counter() - started)


def process_source(source: SourceConfig, state: SourceState, deps: Deps) -> SourceReport:
    """Poll one source: fetch, parse, and process each new or changed entry."""
    try:
        return _process(source, state, deps)
    except StoreError:
        raise
    except Exception as exc:  # a bug must cost one source, not the run; logged with its traceback
        log.exception("%s: internal error", source.name)
        message = f"internal error: {type(exc).__name__}: {exc}"
        _record_failure(source, state, deps, message, "internal", None, requests=0)
        return SourceReport(source.name, ok=False, error=message, error_kind="internal")


def _process(source: SourceConfig, state: SourceState, deps: Deps) -> SourceReport:
    cfg = deps.config
    timer = _Timer()
    if state.disabled_reason:
        return SourceReport(source.name, ok=False, error=f"disabled: {state.disabled_reason}", error_kind="disabled")

    with timer.stage("fetch"):
        try:
            result = deps.fetcher.fetch_feed(source, state)
        except FetchError as exc:
            retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
            disabled = str(exc) if isinstance(exc, Gone) else None
            _record_failure(source, state, deps, str(exc), exc.kind, retry_after, requests=1, disabled=disabled)
            return SourceReport(source.name, ok=False, error=str(exc), error_kind=exc.kind, requests=1)

    moved = _moved(result, state)
    if result.not_modified or (result.body_hash and result.body_hash == state.body_hash and not moved):
        _record_success(source, state, deps, result, None, moved)
        return SourceReport(source.name, ok=True, not_modified=True, requests=result.requests, timings=timer.totals)

    with timer.stage("parse"):
        try:
            feed = parse(result)
        except IngestError as exc:
            _record_failure(source, state, deps, str(exc), exc.kind, None, requests=result.requests)
            return SourceReport(source.name, ok=False, error=str(exc), error_kind=exc.kind, requests=result.requests)

    counts = {"new": 0, "updated": 0, "unchanged": 0, "duplicates": 0}
    item_errors: list[str] = []
    known = deps.store.known_entries(state.source_id)
    learned = deps.store.learned_boilerplate(state.source_id)
    rules = ruleset(cfg.extract.builtin_rules, source.strip)
    requests_sent = result.requests
    for entry in feed.entries:
        if known.get(entry.identity) == entry.entry_hash:
            counts["unchanged"] += 1
            continue
        page, page_note = None, None
        if source.full_text and entry.url:
            with timer.stage("fetch"):
                page, page_note = _fetch_page(deps.fetcher, entry)
                requests_sent += 1
        try:
            with timer.stage("extract"):
                document = extract(entry, page, cfg.extract)
                if page_note:
                    document = _with_note(document, page_note)
                document = clean(document, rules, learned)
            with timer.stage("dedup"):
                fp = dedup.fingerprint(document.text, deps.scheme)
            with timer.stage("store"):
                outcome = deps.store.commit_item(
                    source_id=state.source_id,
                    entry=entry,
                    canonical_url=_canonical(entry.url),
                    document=document,
                    fp=fp,
                    decide=partial(dedup.decide, document.text, document.title, cfg=cfg.dedup),
                    policy=partial(_canonical_key, policy=cfg.dedup.canonical),
                    max_candidates=cfg.dedup.max_candidates,
                    paragraph_keys=_paragraph_keys(document),
                    learn=(cfg.extract.boilerplate_min_count, cfg.extract.boilerplate_window),
                    fetched_at=deps.clock(),
                    reclean=partial(_without_learned, scheme=deps.scheme),
                )
        except StoreError:
            raise
        except IngestError as exc:
            item_errors.append(f"{entry.identity}: {exc}")
            continue
        counts[outcome.status] += 1
        if outcome.status == "new" and outcome.decision and outcome.decision.kind == "duplicate":
            counts["duplicates"] += 1
        if outcome.learned:
            learned = learned | frozenset(outcome.learned)

    _record_success(source, state, deps, result, feed.ttl, moved, requests=requests_sent)
    return SourceReport(
        source.name, ok=True, items_seen=len(feed.entries), items_new=counts["new"], items_updated=counts["updated"],
        items_unchanged=counts["unchanged"], duplicates=counts["duplicates"], warnings=feed.warnings,
        item_errors=tuple(item_errors), requests=requests_sent, timings=timer.totals,
    )


def _without_learned(
    text: str, learned: frozenset[str], scheme: dedup.SignatureScheme
) -> tuple[str, Fingerprint, tuple[Removal, ...]] | None:
    """A stored text re-cleaned of newly learned paragraphs, re-fingerprinted (None: unchanged)."""
    cleaned, removed = strip_learned(text, learned)
    return (cleaned, dedup.fingerprint(cleaned, scheme), removed) if removed else None


def _recleaned(
    text: str, rules: RuleSet, learned: frozenset[str], scheme: dedup.SignatureScheme
) -> tuple[str, Fingerprint, tuple[Removal, ...]] | None:
    """A stored text cleaned again with the rules and learned paragraphs in force now."""
    document = clean(Document(title="", text=text), rules, learned)
    if document.text == text:
        return None
    return document.text, dedup.fingerprint(document.text, scheme), document.removals


def reprocess(deps: Deps, sources: list[SourceConfig] | None = None) -> dict[str, tuple[int, int]]:
    """Re-clean the stored items of ``sources`` with today's rules and learned boilerplate.

    Stored text is already clean, so this applies what was added since it was stored
    (paragraphs learned later, new `strip` patterns, new built-in rules) and keeps each
    item's dedup decision. Returns source name -> (items seen, items changed).
    """
    chosen = sources if sources is not None else list(deps.config.sources)
    states = deps.store.sync_sources(deps.config.sources)
    done: dict[str, tuple[int, int]] = {}
    for source in chosen:
        state = states[source.name]
        rules = ruleset(deps.config.extract.builtin_rules, source.strip)
        learned = deps.store.learned_boilerplate(state.source_id)
        done[source.name] = deps.store.reprocess(
            state.source_id, partial(_recleaned, rules=rules, learned=learned, scheme=deps.scheme), at=deps.clock(),
        )
    return done


def _fetch_page(fetcher: Fetcher, entry: Entry) -> tuple[FetchResult | None, str | None]:
    try:
        return fetcher.fetch_page(entry.url or ""), None
    except FetchError as exc:
        return None, f"full text not fetched ({exc.kind}): {exc}"


def _with_note(document: Document, note: str) -> Document:
    return replace(document, notes=document.notes + (note,))


def _paragraph_keys(document: Document) -> list[tuple[str, str]]:
    seen = [(paragraph_key(p), p) for p in document.paragraphs]
    seen += [(paragraph_key(r.text), r.text) for r in document.removals if r.rule == "learned"]
    return seen


def _canonical(url: str | None) -> str | None:
    if url and url.lower().startswith(("http://", "https://")):
        return canonical_url(url)
    return None


def _canonical_key(member: CanonicalMember, policy: str) -> tuple:
    return dedup.canonical_key(
        dedup.Member(member.item_id, member.published_at, member.fetched_at, member.priority, member.length), policy
    )


def _moved(result: FetchResult, state: SourceState) -> str | None:
    if result.permanent_redirect and result.permanent_redirect != (state.effective_url or state.url):
        return result.permanent_redirect
    return None


def _record_success(
    source: SourceConfig, state: SourceState, deps: Deps, result: FetchResult, ttl: float | None,
    moved: str | None, requests: int | None = None,
) -> None:
    now = deps.clock()
    if moved:
        log.warning("%s: feed moved permanently to %s; polling the new URL from now on", source.name, redact_url(moved))
    keep_validators = result.not_modified
    deps.store.record_poll(
        state.source_id,
        PollRecord(
            at=now, ok=True,
            next_poll_at=polling.next_poll(now, source.interval, deps.config.fetch, max_age=result.max_age, ttl=ttl, rng=deps.rng),
            etag=(result.etag or state.etag) if keep_validators else result.etag,
            last_modified=(result.last_modified or state.last_modified) if keep_validators else result.last_modified,
            body_hash=None if keep_validators else result.body_hash,
            effective_url=moved, requests=result.requests if requests is None else requests,
        ),
    )


def _record_failure(
    source: SourceConfig, state: SourceState, deps: Deps, error: str, kind: str, retry_after: float | None,
    *, requests: int, disabled: str | None = None,
) -> None:
    now = deps.clock()
    deps.store.record_poll(
        state.source_id,
        PollRecord(
            at=now, ok=False, error=error, error_kind=kind, disabled_reason=disabled, requests=requests,
            next_poll_at=polling.next_poll(
                now, source.interval, deps.config.fetch, consecutive_errors=state.consecutive_errors + 1,
                retry_after=retry_after, rng=deps.rng,
            ),
        ),
    )
