"""The long-running daemon: APScheduler jobs, signals, live reload, health.

One APScheduler job per enabled source. The store's ``next_poll_at`` (interval,
feed ttl/max-age, error backoff and Retry-After, all computed by ``polling.next_poll``
when a poll is recorded) is the truth: after each poll the job is moved to
``next_run(state)``, that time plus jitter; a job that still fires early (its
interval trigger is only the safety net for a run that never rescheduled, e.g. a
misfire) finds the source not due and skips. ``polling.next_run`` and
``polling.is_overdue`` are pure, tested with a fixed clock.

Threads: APScheduler's default executor is a thread pool of ``[daemon] workers``.
Fetching overlaps well in threads, but parsing, extraction and MinHash are CPU-bound
and share one core under the GIL (docs/facts.md#processes-vs-threads: two processes 1.7-1.9x one); a process pool
(or several daemons on PostgreSQL) is the later step for CPU-heavy loads.

Signals: SIGTERM/SIGINT stop new polls, let in-flight ones finish their current item
within ``shutdown_timeout`` (the pipeline checks the stop flag between items; each
item is its own transaction), then exit 0; a second signal exits at once. SIGHUP
re-reads the config: sources added, removed or changed are rescheduled; an invalid
file is reported in one line and the running config kept.

One daemon per SQLite store: an ``flock`` on ``<db>.lock`` held for the daemon's
life. PostgreSQL takes no lock: several daemons may share it; today each polls every
source (duplicates are harmless: conditional GETs and the store's advisory locks),
and ``_store_lock`` is where leased polls (``UPDATE sources SET lease_until=...
WHERE next_poll_at <= now() ... FOR UPDATE SKIP LOCKED``) would go.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ingest import dedup, polling
from ingest.config import Config, SourceConfig, load
from ingest.errors import ConfigError, StoreError, StoreLocked
from ingest.fetch import Fetcher
from ingest.metrics import Metrics
from ingest.models import SourceReport, SourceState
from ingest.pipeline import Deps, process_source, utcnow
from ingest.polling import is_overdue, next_run
from ingest.store import Store

log = logging.getLogger("ingest.daemon")

# A run that waited longer than this in the worker queue is dropped (APScheduler's
# misfire) and the next one coalesced; at least one interval.
MISFIRE_GRACE = 30.0


# ---------------------------------------------------------------------------- store lock


class StoreLock:
    """An exclusive ``flock`` on ``<sqlite file>.lock`` for the daemon's life."""

    def __init__(self, path: Path) -> None:
        import fcntl

        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(self._fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreLocked(
                f"another ingest daemon (pid {holder}) already runs on {str(path)[:-5]}; one daemon per SQLite "
                "store (use PostgreSQL for several)"
            ) from exc
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Drop the lock (it also goes when the process ends, however it ends)."""
        os.close(self._fd)


def _store_lock(url: str) -> StoreLock | None:
    """The lock for a SQLite file store; None for PostgreSQL and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None  # PostgreSQL: several daemons allowed; leased polls would start here
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return StoreLock(Path(path + ".lock"))


# ---------------------------------------------------------------------------- the daemon


class Daemon:
    """Scheduler, store, fetcher, metrics and the current config of one running daemon."""

    def __init__(self, config: Config, store: Store, *, rng: random.Random | None = None) -> None:
        self._config = config
        self.store = store
        self.metrics = Metrics()
        self.rng = rng or random.Random()
        self.started_at = utcnow()
        self._stopping = threading.Event()
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._due: dict[str, datetime] = {}  # source -> when its job is planned (for lag and overdue)
        self._old_fetchers: list[Fetcher] = []
        self.deps = Deps(config, store, Fetcher(config.fetch), should_stop=self._stopping.is_set)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(config.daemon.workers)}, timezone=timezone.utc,
        )
        # A poll still running when its safety-net trigger fires is expected (backoff
        # moved it); count it instead of APScheduler's warning line. Misfires (a run
        # that waited in the queue past its grace time) are overload: counted and logged.
        self.scheduler.add_listener(lambda _e: self.metrics.overlaps.inc(), EVENT_JOB_MAX_INSTANCES)
        self.scheduler.add_listener(lambda _e: self.metrics.missed.inc(), EVENT_JOB_MISSED)
        logging.getLogger("apscheduler.scheduler").addFilter(_drop_max_instances)
        self.metrics.gauge("ingest_polls_in_flight", "Polls running now", lambda: float(self._inflight))
        self.metrics.gauge("ingest_sources_scheduled", "Sources with a poll job", lambda: float(len(self._due)))
        self.metrics.gauge("ingest_sources_overdue", "Sources whose poll is late", lambda: float(len(self.overdue())))

    @property
    def config(self) -> Config:
        return self._config

    # -- jobs

    def start(self) -> None:
        """Schedule every enabled source (first polls spread out) and start the scheduler."""
        states = self.store.sync_sources(self._config.sources)
        now = self.deps.clock()
        for source in self._config.sources:
            self._schedule(source, states.get(source.name), now, spread=True)
        self.scheduler.start()

    def _schedule(self, source: SourceConfig, state: SourceState | None, now: datetime, *, spread: bool) -> None:
        job_id = f"poll:{source.name}"
        when = next_run(state, source.interval, now, jitter=self._config.daemon.jitter, rng=self.rng, spread=spread)
        if not source.enabled or when is None:
            self._unschedule(source.name)
            if state is not None and state.disabled_reason:
                log.warning("%s: not polled: %s", source.name, state.disabled_reason)
            return
        self._due[source.name] = when
        self.scheduler.add_job(
            self._poll, IntervalTrigger(seconds=source.interval, timezone=timezone.utc), args=[source.name],
            id=job_id, name=source.name, next_run_time=when, max_instances=1, coalesce=True,
            misfire_grace_time=int(max(source.interval, MISFIRE_GRACE)), replace_existing=True,
        )

    def _unschedule(self, name: str) -> None:
        self._due.pop(name, None)
        try:
            self.scheduler.remove_job(f"poll:{name}")
        except JobLookupError:
            pass

    def _poll(self, name: str) -> None:
        """The job: poll one source if it is due, then move the job to its next time."""
        deps = self.deps  # a reload swaps deps; this poll keeps the one it started with
        source = next((s for s in deps.config.sources if s.name == name and s.enabled), None)
        with self._inflight_cond:  # stop() sets the flag under this lock: no poll slips past it
            if source is None or self._stopping.is_set():
                return
            self._inflight += 1
        started = time.perf_counter()
        try:
            state = self.store.source_state(name)
            now = deps.clock()
            if state is None:
                return
            if not polling.is_due(state, now):  # not yet due, or disabled (410)
                self.metrics.skipped.inc()
                self._reschedule(source, state, now)
                return
            planned = self._due.get(name)
            if planned is not None:
                self.metrics.lag_seconds.observe(max(0.0, (now - planned).total_seconds()))
            report = process_source(source, state, deps)
            self.metrics.observe(report)
            _log_poll(report, time.perf_counter() - started)
            self._reschedule(source, self.store.source_state(name), deps.clock())
        except StoreError as exc:
            self.metrics.store_error(name)
            log.error("%s: %s", name, exc, extra={"source": name, "event": "poll", "status": "error",
                                                  "error_kind": exc.kind})
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()

    def _reschedule(self, source: SourceConfig, state: SourceState | None, now: datetime) -> None:
        when = next_run(state, source.interval, now, jitter=self._config.daemon.jitter, rng=self.rng)
        if when is None:
            self._unschedule(source.name)
            if state is not None:
                log.warning("%s: no longer polled: %s", source.name, state.disabled_reason)
            return
        try:
            self.scheduler.modify_job(f"poll:{source.name}", next_run_time=when)
            self._due[source.name] = when
        except JobLookupError:
            pass  # removed by a reload while this poll ran

    # -- reload

    def reload(self) -> bool:
        """Re-read the config file; apply it, or report why not and keep the old one."""
        old = self._config
        try:
            new = load(old.path)
        except ConfigError as exc:
            self.metrics.reloads.labels("invalid").inc()
            log.error("reload: %s; keeping the running config", exc)
            return False
        new, kept = _keep_restart_only(old, new)
        for what in kept:
            log.warning("reload: %s changed; that takes a restart (keeping the running value)", what)
        for warning in new.warnings:
            log.warning("config: %s", warning)
        fetcher = self.deps.fetcher
        if new.fetch != old.fetch:
            self._old_fetchers.append(fetcher)  # polls in flight still use it; closed at exit
            fetcher = Fetcher(new.fetch)
        try:
            states = self.store.sync_sources(new.sources)
        except StoreError as exc:
            self.metrics.reloads.labels("invalid").inc()
            log.error("reload: %s; keeping the running config", exc)
            return False
        self.deps = replace(self.deps, config=new, fetcher=fetcher)
        self._config = new
        before = {s.name: s for s in old.sources}
        after = {s.name: s for s in new.sources}
        now = self.deps.clock()
        for name in before.keys() - after.keys():
            self._unschedule(name)
        added = changed = 0
        for name, source in after.items():
            if before.get(name) == source:
                continue  # unchanged: its job (or its absence, if disabled) stands
            added += name not in before
            changed += name in before
            self._schedule(source, states.get(name), now, spread=False)
        self.metrics.reloads.labels("ok").inc()
        log.info("reload: %d sources (%d added, %d removed, %d changed)", len(after), added,
                 len(before.keys() - after.keys()), changed)
        return True

    # -- health

    def overdue(self) -> list[str]:
        """Names of scheduled sources whose poll is late (see ``is_overdue``)."""
        now = utcnow()
        intervals = {s.name: s.interval for s in self._config.sources}
        return sorted(n for n, due in list(self._due.items()) if is_overdue(due, intervals.get(n, 0.0), now))

    def health(self) -> dict[str, Any]:
        """Scheduler alive, store reachable, sources overdue; ``ok`` false means 503."""
        thread = getattr(self.scheduler, "_thread", None)
        alive = self.scheduler.running and thread is not None and thread.is_alive() and not self._stopping.is_set()
        try:
            self.store.ping()
            store = "ok"
        except StoreError as exc:
            store = str(exc)
        overdue = self.overdue()
        scheduled = len(self._due)
        # every source late at once means the workers are wedged, not that feeds are slow
        wedged = scheduled > 0 and len(overdue) == scheduled
        return {
            "ok": alive and store == "ok" and not wedged,
            "scheduler": "running" if alive else "stopped",
            "store": store,
            "sources": scheduled,
            "overdue": len(overdue),
            "overdue_sources": overdue[:50],
            "in_flight": self._inflight,
            "uptime": round((utcnow() - self.started_at).total_seconds(), 1),
        }

    # -- stop

    def stop(self, timeout: float) -> int:
        """Stop new polls, wait up to ``timeout`` s for in-flight ones; return how many remain."""
        with self._inflight_cond:
            self._stopping.set()
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        with self._inflight_cond:
            while self._inflight and (remaining := deadline - time.monotonic()) > 0:
                self._inflight_cond.wait(remaining)
            left = self._inflight
        if not left:
            for fetcher in [self.deps.fetcher, *self._old_fetchers]:
                fetcher.close()
        return left


def _drop_max_instances(record: logging.LogRecord) -> bool:
    return "maximum number of running instances" not in record.getMessage()


def _keep_restart_only(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the settings that need a restart taken from ``old``; and their names."""
    kept = []
    if new.store != old.store:
        kept.append("[store]")
    if new.dedup != old.dedup:
        kept.append("[dedup] (signatures must stay comparable: `ingest resign`, then restart)")
    if new.daemon.workers != old.daemon.workers:
        kept.append("daemon.workers")
    if new.daemon.listen != old.daemon.listen:
        kept.append("daemon.listen")
    daemon = replace(new.daemon, workers=old.daemon.workers, listen=old.daemon.listen)
    return replace(new, store=old.store, dedup=old.dedup, daemon=daemon), kept


def _log_poll(report: SourceReport, elapsed: float) -> None:
    fields: dict[str, Any] = {
        "source": report.source, "event": "poll", "items_new": report.items_new,
        "items_updated": report.items_updated, "duplicates": report.duplicates, "elapsed": round(elapsed, 3),
    }
    if report.ok:
        status = "not_modified" if report.not_modified else "ok"
        log.info(
            "%s: %s, %d new, %d updated, %d duplicates in %.2fs", report.source, status.replace("_", " "),
            report.items_new, report.items_updated, report.duplicates, elapsed, extra={**fields, "status": status},
        )
        for problem in report.item_errors:
            log.warning("%s: item skipped: %s", report.source, problem, extra={"source": report.source})
    else:
        log.warning(
            "%s: failed (%s): %s in %.2fs", report.source, report.error_kind, report.error, elapsed,
            extra={**fields, "status": "error", "error_kind": report.error_kind},
        )


# ---------------------------------------------------------------------------- entry point


def run_daemon(config: Config, args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit status (0 after a clean stop)."""
    from ingest.server import Server, parse_listen

    lock = _store_lock(config.store.url)
    try:
        store = Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict())
    except BaseException:
        if lock:
            lock.release()
        raise
    daemon = Daemon(config, store)
    server = None
    if config.daemon.listen:
        server = Server(daemon, parse_listen(config.daemon.listen))

    wake = threading.Event()
    requests = {"stop": 0, "reload": False}

    def on_stop(signum: int, _frame: Any) -> None:
        requests["stop"] += 1
        if requests["stop"] > 1:
            # Second signal: leave now. Every item is its own transaction, so SQLite
            # (WAL) rolls back at most the one being written; nothing is half-stored.
            os.write(2, f"ingest: {signal.Signals(signum).name} again: exiting at once\n".encode())
            os._exit(128 + signum)
        wake.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        requests["reload"] = True
        wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    daemon.start()
    if server:
        server.start()
    enabled = sum(1 for s in config.sources if s.enabled)
    log.info(
        "daemon started: %d sources, %d workers%s (pid %d)", enabled, config.daemon.workers,
        f", health and metrics on http://{server.address[0]}:{server.address[1]}/" if server else "", os.getpid(),
    )
    while not requests["stop"]:
        wake.wait(5.0)
        wake.clear()
        if requests["reload"] and not requests["stop"]:
            requests["reload"] = False
            daemon.reload()

    timeout = daemon.config.daemon.shutdown_timeout
    log.info("stopping: waiting up to %gs for %d polls in flight", timeout, daemon._inflight)
    left = daemon.stop(timeout)
    if server:
        server.close()
    if left:
        # Their current items are still being written or fetched; what is committed is
        # whole, the rest is done again on the next start (their polls were not recorded).
        log.warning("stopped with %d polls still running after %gs; they are redone on the next start", left, timeout)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    store.close()
    if lock:
        lock.release()
    log.info("stopped")
    return 0
