"""Prometheus metrics of the daemon, in a registry of its own (never the global one).

Counters carry the source *name* (never its URL, which may hold credentials).
Latency histograms carry no source label: 500 sources times 12 buckets would be
6,000 series for little use; per-source slowness shows in the poll log lines.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, exposition, generate_latest

from ingest.models import SourceReport

# seconds: loopback answers in milliseconds, slow feeds take up to fetch.timeout (20 s)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)

# The classic text format 0.0.4 that every Prometheus reads (prometheus-client 0.22+
# labels its output 1.0.0 by default; generate_latest's body is the same text).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", CONTENT_TYPE_LATEST)


class Metrics:
    """The daemon's counters, histograms and gauges."""

    def __init__(self, worker: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # which worker of a fleet these figures are from (join on it in queries)
        Gauge("ingest_worker_info", "This worker's name (constant 1)", ["worker"], registry=r).labels(worker).set(1)
        self.polls = Counter(
            "ingest_polls", "Polls by source and outcome (ok, not_modified, error)", ["source", "outcome"], registry=r
        )
        self.errors = Counter(
            "ingest_poll_errors", "Failed polls by source and error kind (fetch kinds, parse, store, internal)",
            ["source", "kind"], registry=r,
        )
        self.items = Counter(
            "ingest_items",
            "Items stored by source and outcome: new, updated, duplicate (duplicates are new items that joined "
            "an existing cluster, so they are also counted as new)",
            ["source", "outcome"], registry=r,
        )
        self.item_errors = Counter("ingest_item_errors", "Entries skipped because they failed", ["source"], registry=r)
        self.fetch_seconds = Histogram(
            "ingest_fetch_seconds", "Time spent fetching per poll (feed and full-text pages)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.processing_seconds = Histogram(
            "ingest_processing_seconds", "Time spent parsing, extracting, cleaning, deduplicating and storing per poll",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.lag_seconds = Histogram(
            "ingest_scheduler_lag_seconds", "Delay between when a source was due and when this worker claimed it",
            buckets=_LAG_BUCKETS, registry=r,
        )
        self.reloads = Counter("ingest_config_reloads", "SIGHUP reloads by result (ok, invalid)", ["result"], registry=r)
        self.claim_seconds = Histogram(
            "ingest_claim_seconds", "Time one claim of due sources took in the store", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lock_wait_seconds = Histogram(
            "ingest_lock_wait_seconds", "Time an item waited for its advisory locks (PostgreSQL)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time (``read`` must be cheap and never raise)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe(self, report: SourceReport) -> None:
        """Count one poll from its report."""
        name = report.source
        if report.ok:
            self.polls.labels(name, "not_modified" if report.not_modified else "ok").inc()
        else:
            self.polls.labels(name, "error").inc()
            self.errors.labels(name, report.error_kind or "error").inc()
        for outcome, count in (("new", report.items_new), ("updated", report.items_updated),
                               ("duplicate", report.duplicates)):
            if count:
                self.items.labels(name, outcome).inc(count)
        if report.item_errors:
            self.item_errors.labels(name).inc(len(report.item_errors))
        fetch = report.timings.get("fetch", 0.0)
        if "fetch" in report.timings:
            self.fetch_seconds.observe(fetch)
        processing = sum(v for k, v in report.timings.items() if k != "fetch")
        if processing:
            self.processing_seconds.observe(processing)

    def store_error(self, source: str) -> None:
        """Count a poll that the store could not record."""
        self.polls.labels(source, "error").inc()
        self.errors.labels(source, "store").inc()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
