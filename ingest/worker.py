"""A worker: claim sources from the store, poll them through the pipeline, complete them.

The loop of ``ingest --once`` (``run_once``: every chosen source once, then stop) and
of the daemon (``Worker.fill`` on each claim tick and after each poll). A source is
polled only under a lease claimed from the store (``store/leases.py``), so any number
of workers on one PostgreSQL store never poll one source at once, the per-host limits
hold for all of them, and a killed worker's sources are taken over once its leases
run out. The CPU-bound stages run in the worker's process pool (``Deps.cpu``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from ingest import pool, polling
from ingest.config import Config, SourceConfig
from ingest.errors import StoreError
from ingest.models import SourceReport
from ingest.pipeline import Deps, process_source
from ingest.store import Store
from ingest.store.leases import Lease, Politeness, claim_waits, leased_elsewhere

log = logging.getLogger("ingest")

# A run waits for a host's delay up to this long; a source whose host asked for more
# (a 429 or 503 with Retry-After) is left for a later run instead of holding this one.
DEFER_AFTER = 30.0
# Seconds a stopping run waits for polls in flight to reach a stop point (an item
# committed, a pool wait or a fetch given up) before it returns without them; a poll
# blocked in a slow fetch is abandoned: its lease is given back, so whatever it does
# later is fenced out and the next run polls that source in full.
STOP_GRACE = 1.0


def worker_name(config: Config, role: str = "") -> str:
    """This worker's name: ``[daemon] name``, else host:pid (``role`` appended, e.g. ``once``)."""
    base = config.daemon.name or f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{role}" if role else base


def release_dead_workers(store: Store) -> None:
    """Give back the leases of this machine's workers that are no longer running (a killed run)."""
    for owner in store.release_dead(socket.gethostname(), _alive):
        log.info("leases of worker %s released: its process is gone", owner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class RunReport:
    """What one ``run_once`` did: a report per polled source, the sources another worker was polling."""

    sources: list[SourceReport]
    clusters: int = 0
    elapsed: float = 0.0
    elsewhere: dict[str, str] = field(default_factory=dict)  # source -> the worker polling it
    deferred: dict[str, str] = field(default_factory=dict)  # source -> why it waits for a later run
    stopped: bool = False  # the stop flag was seen: sources not polled or not finished are left for later
    abandoned: int = 0  # polls still running when run_once returned (stopped runs only)

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
            "polled_elsewhere": sorted(self.elsewhere),
            "deferred": sorted(self.deferred),
            "timings": self.timings(),
        }

    def timings(self) -> dict[str, float]:
        """Seconds per stage summed over sources (threads overlap: compare shares, not to elapsed)."""
        totals: dict[str, float] = {}
        for report in self.sources:
            for stage, seconds in report.timings.items():
                totals[stage] = round(totals.get(stage, 0.0) + seconds, 4)
        return totals


class Worker:
    """Claims sources for ``owner`` and polls up to ``capacity`` of them at once in threads."""

    def __init__(
        self, deps: Deps, *, owner: str, capacity: int,
        on_done: Callable[[SourceReport, float], None] | None = None,
        on_claim: Callable[[float, list[Lease]], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.deps = deps  # swapped by a daemon's reload; a poll keeps the one it started with
        self.owner = owner
        self.capacity = capacity
        self.on_done = on_done  # (report, seconds) in the poll's thread, after its lease is settled
        self.on_claim = on_claim  # (seconds the claim took, the leases claimed)
        self.on_error = on_error  # (source, exception) when a poll raised (the store failed)
        self.fenced = 0  # polls whose writes were refused because the lease was lost
        self._threads = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="poll")
        self._lock = threading.Lock()
        self._running: dict[str, Lease] = {}  # token -> lease of each poll running now
        self._pending: set[Future[SourceReport]] = set()  # polls whose report is not collected yet

    @property
    def in_flight(self) -> int:
        """Polls running now."""
        with self._lock:
            return len(self._running)

    @property
    def pending(self) -> int:
        """Polls started whose reports ``collect`` has not returned yet."""
        with self._lock:
            return len(self._pending)

    def leases(self) -> list[Lease]:
        """The leases of the polls running now."""
        with self._lock:
            return list(self._running.values())

    def fill(
        self, sources: Mapping[str, SourceConfig], *, due_only: bool = True,
        skip: Callable[[Lease, SourceConfig], bool] | None = None,
    ) -> list[str]:
        """Claim as many of ``sources`` as there are free slots and start polling them; the names claimed.

        A claimed source for which ``skip`` says so is given back at once instead of polled.
        """
        deps = self.deps
        with self._lock:
            free = self.capacity - len(self._running)
            if free <= 0 or deps.stopping() or not sources:
                return []
            started = time.perf_counter()
            leases = deps.store.claim(
                owner=self.owner, limit=free, lease_seconds=deps.config.daemon.lease, clock=deps.clock,
                politeness=Politeness(deps.config.fetch.per_host_concurrency, deps.config.fetch.per_host_delay),
                names=sources.keys(), due_only=due_only,
            )
            if self.on_claim:
                self.on_claim(time.perf_counter() - started, leases)
            for lease in leases:
                if skip is not None and skip(lease, sources[lease.name]):
                    deps.store.release(lease)
                    continue
                self._running[lease.token] = lease
                self._pending.add(self._threads.submit(self._poll, sources[lease.name], lease, deps))
        return [lease.name for lease in leases]

    def _poll(self, source: SourceConfig, lease: Lease, deps: Deps) -> SourceReport:
        started = time.perf_counter()
        try:
            report = process_source(source, lease.state, deps, lease)
            if report.fenced:
                self.fenced += 1
            elif report.stopped or report.error_kind == "disabled":
                deps.store.release(lease)  # nothing recorded: the source is claimable again at once
        except BaseException as exc:
            try:
                deps.store.release(lease)
            except StoreError:
                pass  # the store is what failed; the lease runs out by itself
            if self.on_error:
                self.on_error(source.name, exc)
            raise
        finally:
            with self._lock:
                self._running.pop(lease.token, None)
        if self.on_done:
            self.on_done(report, time.perf_counter() - started)
        return report

    def heartbeat(self) -> list[Lease]:
        """Extend the leases of the polls still running; the leases that could not be extended."""
        held = self.leases()
        if not held:
            return []
        kept = self.deps.store.heartbeat(held, self.deps.config.daemon.lease, self.deps.clock)
        lost = [lease for lease in held if lease.token not in kept and lease.token in self._tokens()]
        for lease in lost:
            log.warning("%s: lease lost (ran out before its heartbeat); the poll's next write is refused", lease.name)
        return lost

    def _tokens(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def collect(self, timeout: float) -> list[SourceReport]:
        """Wait up to ``timeout`` s for a poll to end; the reports not collected before (raises what a poll raised)."""
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return []
        done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        with self._lock:
            self._pending -= done
        return [future.result() for future in done]

    def drain(self) -> list[SourceReport]:
        """The reports of the polls that ended, without waiting (a poll that raised was passed to ``on_error``)."""
        with self._lock:
            done = {future for future in self._pending if future.done()}
            self._pending -= done
        return [future.result() for future in done if future.exception() is None]

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the started polls to end; how many still run."""
        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)
        return self.in_flight

    def give_back(self) -> int:
        """Release the leases of the polls still running (a stopping run abandons them); how many."""
        held = self.leases()
        for lease in held:
            try:
                self.deps.store.release(lease)
            except StoreError:
                pass  # the lease runs out by itself
        return len(held)

    def close(self, wait_for_polls: bool = True) -> None:
        """Stop the poll threads (after the running polls, unless ``wait_for_polls`` is false)."""
        self._threads.shutdown(wait=wait_for_polls, cancel_futures=True)


def run_once(
    deps: Deps,
    sources: list[SourceConfig] | None = None,
    on_done: Callable[[SourceReport], None] | None = None,
    *,
    due_only: bool = False,
    on_start: Callable[[int], None] | None = None,
    owner: str | None = None,
) -> RunReport:
    """Poll every enabled source once (``sources`` to choose), each under a lease; report what happened.

    ``due_only`` polls only the sources whose next poll time (interval, ttl, backoff,
    Retry-After) has come, as the daemon does; without it every source is polled, as
    cron users expect. Next to other live workers (daemons of a fleet, another run) a
    source one of them is polling is left to it, and so is one polled less than half
    its interval ago (``RunReport.elsewhere``): such a run never double-polls.
    """
    started = time.perf_counter()
    chosen = [s for s in (sources if sources is not None else deps.config.sources) if s.enabled]
    states = deps.store.sync_sources(deps.config.sources)
    if due_only:
        now = deps.clock()
        chosen = [s for s in chosen if polling.is_due(states[s.name], now)]
    if on_start:
        on_start(len(chosen))  # how many sources this run polls (a progress bar's total)
    capacity = max(1, min(deps.config.fetch.concurrency, deps.config.daemon.workers, len(chosen) or 1))
    # the process pool is made before any poll thread runs: its workers are forked
    # from a process with one thread (see pool.cpu_pool)
    own_cpu = deps.cpu is None and len(chosen) >= pool.POOL_MIN_SOURCES
    cpu = pool.cpu_pool(deps.config.daemon.processes) if own_cpu else deps.cpu
    io = deps.io or ThreadPoolExecutor(max_workers=deps.config.fetch.concurrency, thread_name_prefix="page")
    run_deps = replace(deps, cpu=cpu, io=io)
    owner = owner or worker_name(deps.config, "once")
    release_dead_workers(deps.store)
    worker = Worker(run_deps, owner=owner, capacity=capacity)
    beat = _Heartbeat(worker, deps.config.daemon.lease / 3)
    reports: list[SourceReport] = []
    elsewhere: dict[str, str] = {}
    deferred: dict[str, str] = {}

    def done(report: SourceReport) -> None:
        reports.append(report)
        if on_done and not report.stopped:  # an interrupted poll is no progress to show
            on_done(report)

    polled_just_now: set[str] = set()

    def fleet() -> bool:
        """Other live workers use the store now (asked before each claim: one may start after this run)."""
        return any(w["worker_id"] != owner for w in deps.store.live_workers(deps.config.daemon.lease * 3))

    def recent(lease: Lease, source: SourceConfig) -> bool:
        """Polled by another worker less than half an interval ago (both times on the store's schedule clock)."""
        last, claimed_at = lease.state.last_polled_at, lease.claimed_at
        if last is None or claimed_at is None or (claimed_at - last).total_seconds() >= source.interval / 2:
            return False
        polled_just_now.add(lease.name)
        return True

    stopped = completed = False
    remaining = {}
    for source in chosen:
        reason = states[source.name].disabled_reason
        if reason:  # 410 Gone: not polled until its URL changes in the config
            done(SourceReport(source.name, ok=False, error=f"disabled: {reason}", error_kind="disabled"))
        else:
            remaining[source.name] = source
    try:
        while (remaining or worker.pending) and not deps.stopping():
            skip = recent if remaining and worker.in_flight < worker.capacity and fleet() else None
            for name in worker.fill(remaining, due_only=False, skip=skip):
                del remaining[name]
                if name in polled_just_now:
                    elsewhere[name] = "another worker, less than half an interval ago"
            for report in worker.collect(timeout=0.05 if remaining else 0.5):
                done(report)
            if remaining and not worker.pending:
                # nothing claimable now: sources another worker polls are left to it;
                # the others wait for their host's delay
                for name, holder in leased_elsewhere(deps.store.db, sorted(remaining), owner).items():
                    elsewhere[name] = holder
                    del remaining[name]
                waits = claim_waits(deps.store.db, sorted(remaining))
                for name in list(remaining):
                    if name not in waits:  # no longer pollable (disabled meanwhile)
                        del remaining[name]
                    elif waits[name] > DEFER_AFTER:  # its host said to come back later (429, Retry-After)
                        deferred[name] = f"its host asked to wait {waits[name]:.0f}s more"
                        del remaining[name]
                pause = min((waits[n] for n in remaining), default=0.0)
                if pause:
                    time.sleep(min(pause, 0.5))
        stopped = deps.stopping()
        stop_by = time.monotonic() + (STOP_GRACE if stopped else 1e9)
        while worker.pending and time.monotonic() < stop_by:  # after a stop: polls reach a stop point
            for report in worker.collect(timeout=max(0.0, stop_by - time.monotonic())):
                done(report)
        abandoned = worker.give_back() if stopped else 0
        completed = True
    except StoreError:  # the store is unusable: polls not yet started must not start
        worker.close(wait_for_polls=False)
        raise
    finally:
        beat.stop()
        # a stopping run waits for no thread: pages and pool workers still busy are dropped
        worker.close(wait_for_polls=not stopped)
        if io is not deps.io:
            io.shutdown(wait=not stopped, cancel_futures=True)
        if own_cpu and stopped and deps.exits_when_stopped:
            pool.abandon(cpu)  # the process exits next: its workers die with it
        elif own_cpu:
            pool.shutdown(cpu, now=stopped or not completed)
    reports.sort(key=lambda r: r.source)
    return RunReport(reports, clusters=deps.store.counts()["clusters"], elapsed=time.perf_counter() - started,
                     elsewhere=elsewhere, deferred=deferred, stopped=stopped, abandoned=abandoned)


class _Heartbeat:
    """A thread extending a worker's leases every ``every`` seconds until stopped."""

    def __init__(self, worker: Worker, every: float) -> None:
        self._worker = worker
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._worker.heartbeat()
            except StoreError as exc:
                log.warning("heartbeat: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
