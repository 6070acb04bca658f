"""The long-running daemon: claim due sources from the store, poll them, keep the leases alive.

The sources table is the queue (``store/leases.py``): every claim tick the daemon's
``Worker`` claims as many due sources as it has free poll slots (``[daemon] workers``)
and polls each under its lease; a poll that ends claims the next at once. APScheduler 3
drives the ticks and the housekeeping, never one job per source: the claim tick, the
lease heartbeat (every lease/3), the fleet figures for /healthz and /metrics, and the
retention prune. Parsing, extraction and MinHash run in the daemon's process pool
(``[daemon] processes``, forked before any thread starts), so one daemon uses every
core (docs/facts.md#processes-vs-threads).

Several daemons may share one PostgreSQL store: they are symmetric, claim work through
the store and need no coordinator; they must run the same source list (checked at
start and on reload: ``store/workers.py``). One daemon per SQLite store: an ``flock``
on ``<db>.lock`` held for the daemon's life.

Signals: SIGTERM/SIGINT stop new claims, let in-flight polls finish their current
item within ``shutdown_timeout`` (the pipeline checks the stop flag between items;
each item is its own transaction), give their leases back, then exit 0; a second
signal exits at once. SIGHUP re-reads the config; an invalid file is reported in
one line and the running config kept.
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
from concurrent.futures import ThreadPoolExecutor as Threads
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ingest import dedup, polling, pool
from ingest.config import Config, SourceConfig, load
from ingest.errors import ConfigError, StoreError, StoreLocked
from ingest.fetch import Fetcher
from ingest.logs import set_worker
from ingest.metrics import Metrics
from ingest.models import SourceReport
from ingest.pipeline import Deps, canonical_policy, utcnow
from ingest.store import Store
from ingest.store.leases import Lease
from ingest.worker import Worker, release_dead_workers, worker_name

log = logging.getLogger("ingest.daemon")

# Seconds between claim ticks. A poll that ends claims the next source at once, so the
# tick only matters for sources that become due while every slot is idle.
CLAIM_TICK = 1.0
# Seconds between refreshes of the fleet figures (leases held, sources overdue).
FLEET_REFRESH = 15.0
# A source is overdue when its next poll is this late and nobody holds its lease.
OVERDUE_GRACE = 60.0
# Longest pause between claim attempts while the store does not answer.
STORE_RETRY_MAX = 60.0


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
    """The worker, scheduler, store, fetcher, metrics and current config of one running daemon."""

    def __init__(
        self, config: Config, store: Store, *, cpu: Any = None, rng: random.Random | None = None,
        replace_sources: bool = False,
    ) -> None:
        self._config = config
        self.store = store
        self.owner = worker_name(config)
        self.metrics = Metrics(self.owner)
        self.started_at = utcnow()
        self._replace_sources = replace_sources
        self._stopping = threading.Event()
        self._old_fetchers: list[Fetcher] = []
        self._pages = Threads(max_workers=config.fetch.concurrency, thread_name_prefix="page")
        self.deps = Deps(config, store, Fetcher(config.fetch), rng=rng or random.Random(), cpu=cpu, io=self._pages,
                         should_stop=self._stopping.is_set)
        self.worker = Worker(self.deps, owner=self.owner, capacity=config.daemon.workers, on_done=self._done,
                             on_claim=self._claimed, on_error=self._failed)
        self._fleet: dict[str, int] = {"leases_held": 0, "leases_fleet": 0, "overdue": 0}
        store.db.on_lock_wait = self.metrics.lock_wait_seconds.observe
        self._digest: str | None = None
        self._enabled: tuple[Config | None, dict[str, SourceConfig]] = (None, {})
        self._store_down_since: float | None = None
        self._retry_at = 0.0
        self.scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(4)}, timezone=timezone.utc)
        m = self.metrics
        m.gauge("ingest_polls_in_flight", "Polls running now", lambda: float(self.worker.in_flight))
        m.gauge("ingest_leases_held", "Source leases this worker holds (counted in SQL)",
                lambda: float(self._fleet["leases_held"]))
        m.gauge("ingest_sources_overdue", "Sources whose poll is late and that no worker holds (counted in SQL)",
                lambda: float(self._fleet["overdue"]))
        m.gauge("ingest_fenced_writes", "Polls whose writes were refused: the lease ran out or was taken over",
                lambda: float(self.worker.fenced))

    @property
    def config(self) -> Config:
        return self._config

    # -- jobs

    def start(self) -> None:
        """Check the source list against the fleet's, register, and start the claim tick and housekeeping."""
        lease = self._config.daemon.lease
        self._digest = self.store.agree_sources(self._config.sources, self.owner, live_within=lease * 3,
                                                replace=self._replace_sources)
        self.store.sync_sources(self._config.sources)
        release_dead_workers(self.store)  # this machine's killed workers need not make us wait a lease
        for host, feeds, wanted, most in polling.overloaded_hosts(self._config.sources, self._config.fetch):
            log.warning("host %s: %d feeds want %.2f polls/s, but per_host_delay allows %.2f: they will be polled "
                        "late; lengthen their interval or lower per_host_delay", host, feeds, wanted, most)
        now = datetime.now(timezone.utc)
        add = self.scheduler.add_job
        add(self._tick, IntervalTrigger(seconds=CLAIM_TICK, timezone=timezone.utc), id="claim", next_run_time=now,
            max_instances=1, coalesce=True, misfire_grace_time=None)
        add(self._heartbeat, IntervalTrigger(seconds=lease / 3, timezone=timezone.utc), id="heartbeat",
            max_instances=1, coalesce=True, misfire_grace_time=None)
        add(self._refresh, IntervalTrigger(seconds=FLEET_REFRESH, timezone=timezone.utc), id="fleet",
            next_run_time=now, max_instances=1, coalesce=True, misfire_grace_time=None)
        if self._config.store.retention:
            add(self._prune, IntervalTrigger(hours=1, timezone=timezone.utc), id="prune",
                next_run_time=now + timedelta(minutes=1), max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.start()

    def _sources(self) -> dict[str, SourceConfig]:
        """The enabled sources of the running config (made once per config: a claim tick reads it)."""
        config = self.deps.config
        if self._enabled[0] is not config:
            self._enabled = (config, {s.name: s for s in config.sources if s.enabled})
        return self._enabled[1]

    def _tick(self) -> None:
        """Claim due sources for the free poll slots (also called when a poll ends)."""
        if self._stopping.is_set() or time.monotonic() < self._retry_at:
            return
        self.worker.drain()
        try:
            self.worker.fill(self._sources(), due_only=True)
        except StoreError as exc:
            self._store_down(exc)
            return
        if self._store_down_since is not None:
            log.info("store answers again after %.0fs; claiming", time.monotonic() - self._store_down_since)
            self._store_down_since = None

    def _store_down(self, exc: StoreError) -> None:
        """One line when the store stops answering, then quiet retries with a growing pause."""
        now = time.monotonic()
        if self._store_down_since is None:
            self._store_down_since = now
            log.error("claim: %s; retrying with a growing pause (up to %gs)", exc, STORE_RETRY_MAX)
        pause = min(STORE_RETRY_MAX, max(CLAIM_TICK, 2 * (now - self._store_down_since)))
        self._retry_at = now + pause

    def _claimed(self, seconds: float, leases: list[Lease]) -> None:
        self.metrics.claim_seconds.observe(seconds)
        now = utcnow()
        for lease in leases:
            due = lease.state.next_poll_at
            self.metrics.lag_seconds.observe(max(0.0, (now - due).total_seconds()) if due else 0.0)

    def _done(self, report: SourceReport, seconds: float) -> None:
        self.metrics.observe(report)
        _log_poll(report, seconds)
        self._tick()  # a slot is free: claim the next due source now, not at the next tick

    def _failed(self, source: str, exc: BaseException) -> None:
        if isinstance(exc, StoreError):
            # an outage fails every poll: one line when it starts (and one when it ends)
            self.metrics.store_error(source)
            self._store_down(exc)
        else:  # process_source turns bugs into reports; this is a bug in the worker itself
            log.error("%s: poll failed: %s: %s", source, type(exc).__name__, exc)

    def _heartbeat(self) -> None:
        """Extend the running polls' leases; renew this worker's registration; notice a replaced source list."""
        try:
            self.worker.heartbeat()
            current = self.store.worker_seen(self.owner)
        except StoreError as exc:
            log.warning("heartbeat: %s", exc)
            return
        if current is not None and current != self._digest:
            log.warning("the store's source list was replaced by another worker; reload this daemon's config "
                        "(SIGHUP) with the same sources to follow it")
            self._digest = current

    def _refresh(self) -> None:
        try:
            self._fleet = self.store.fleet_status(self.owner, OVERDUE_GRACE, self.deps.clock)
        except StoreError as exc:
            log.warning("fleet figures: %s", exc)

    def _prune(self) -> None:
        retention = self._config.store.retention
        if not retention:
            return
        try:
            counts = self.store.prune(utcnow() - timedelta(seconds=retention), canonical_policy(self._config.dedup.canonical))
        except StoreError as exc:
            log.warning("prune: %s", exc)
            return
        if counts["items"]:
            log.info("prune: dropped %d items older than the retention", counts["items"])

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
            self._digest = self.store.agree_sources(new.sources, self.owner, live_within=old.daemon.lease * 3,
                                                    replace=self._replace_sources, previous=old.sources)
            self.store.sync_sources(new.sources)
        except (ConfigError, StoreError) as exc:
            self.metrics.reloads.labels("invalid").inc()
            log.error("reload: %s; keeping the running config", exc)
            return False
        self.deps = replace(self.deps, config=new, fetcher=fetcher)
        self.worker.deps = self.deps
        self._config = new
        before = {s.name: s for s in old.sources}
        after = {s.name: s for s in new.sources}
        added = len(after.keys() - before.keys())
        changed = sum(1 for name in after.keys() & before.keys() if after[name] != before[name])
        self.metrics.reloads.labels("ok").inc()
        log.info("reload: %d sources (%d added, %d removed, %d changed)", len(after), added,
                 len(before.keys() - after.keys()), changed)
        return True

    # -- health

    def health(self) -> dict[str, Any]:
        """Scheduler alive, store reachable, leases and overdue sources; ``ok`` false means 503."""
        thread = getattr(self.scheduler, "_thread", None)
        alive = self.scheduler.running and thread is not None and thread.is_alive() and not self._stopping.is_set()
        try:
            self.store.ping()
            store = "ok"
        except StoreError as exc:
            store = str(exc)
        return {
            "ok": alive and store == "ok",
            "worker": self.owner,
            "scheduler": "running" if alive else "stopped",
            "store": store,
            "sources": len(self._sources()),
            "in_flight": self.worker.in_flight,
            "leases_held": self._fleet["leases_held"],
            "leases_fleet": self._fleet["leases_fleet"],
            "overdue": self._fleet["overdue"],
            "fenced": self.worker.fenced,
            "uptime": round((utcnow() - self.started_at).total_seconds(), 1),
        }

    # -- stop

    def stop(self, timeout: float) -> int:
        """Stop claiming, wait up to ``timeout`` s for in-flight polls; return how many remain."""
        self._stopping.set()
        self.scheduler.shutdown(wait=False)
        left = self.worker.wait_idle(timeout)
        if not left:
            self.worker.close()
            self._pages.shutdown(wait=True, cancel_futures=True)
            for fetcher in [self.deps.fetcher, *self._old_fetchers]:
                fetcher.close()
            try:
                self.store.worker_leave(self.owner)
            except StoreError:
                pass
        return left


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
    lock = _store_lock(config.store.url)
    try:
        # a connection per poll thread, and the claim, heartbeat, fleet and server threads
        store = Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict(),
                           pool_size=config.daemon.workers + 4)
    except BaseException:
        if lock:
            lock.release()
        raise
    # forked before any thread of ours starts (see pool.cpu_pool)
    cpu = pool.cpu_pool(config.daemon.processes)
    try:
        return _serve(config, args, store, cpu)
    finally:
        if cpu is not None:
            cpu.shutdown(wait=False, cancel_futures=True)
        store.close()
        if lock:
            lock.release()


def _serve(config: Config, args: argparse.Namespace, store: Store, cpu: Any) -> int:
    from ingest.server import Server, parse_listen

    daemon = Daemon(config, store, cpu=cpu, replace_sources=getattr(args, "replace_sources", False))
    set_worker(daemon.owner)
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
    server = Server(daemon, parse_listen(config.daemon.listen)) if config.daemon.listen else None
    if server:
        server.start()
    enabled = sum(1 for s in config.sources if s.enabled)
    log.info(
        "daemon started as worker %s: %d sources, %d workers, %s%s (pid %d)", daemon.owner, enabled,
        config.daemon.workers, f"{cpu._max_workers} processes" if cpu is not None else "no process pool",
        f", health and metrics on http://{server.address[0]}:{server.address[1]}/" if server else "", os.getpid(),
    )
    while not requests["stop"]:
        wake.wait(5.0)
        wake.clear()
        if requests["reload"] and not requests["stop"]:
            requests["reload"] = False
            daemon.reload()

    timeout = daemon.config.daemon.shutdown_timeout
    log.info("stopping: waiting up to %gs for %d polls in flight", timeout, daemon.worker.in_flight)
    left = daemon.stop(timeout)
    if server:
        server.close()
    if left:
        # Their current items are still being written or fetched; what is committed is
        # whole, the rest is done again on the next start (their polls were not recorded).
        log.warning("stopped with %d polls still running after %gs; they are redone on the next start", left, timeout)
        logging.shutdown()
        sys.stdout.flush()
        if cpu is not None:
            cpu.shutdown(wait=False, cancel_futures=True)
        os._exit(0)
    log.info("stopped")
    return 0
