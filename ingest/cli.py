"""Command line: the only place for argv, environment, exit codes and user-facing messages.

Exit status: 0 the run completed (even if some sources failed), 1 every source failed
or the store is unusable, 2 a config or usage error, 130 / 143 ``--once`` stopped by
SIGINT / SIGTERM. Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from ingest import __version__
from ingest.errors import ConfigError, IngestError, NotFound, SearchError, StoreError

if TYPE_CHECKING:  # the heavy modules are imported by the commands that use them: `ingest --help` stays fast
    from ingest.config import Config, SourceConfig
    from ingest.models import ClusterMember, ClusterRow
    from ingest.store import Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("ingest")


# ---------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit status 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ingest: usage: {self.prog}: {message} (see --help)\n")


# What `ingest export --format` writes (ingest/export.py renders each; a test keeps them in step).
EXPORT_FORMATS = ("atom", "jsonfeed", "jsonl", "csv")


def _common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """-c, --log-level and --log-format: on the main parser with their defaults, on each
    command without (SUPPRESS), so ``ingest -c FILE items`` keeps the FILE given first."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-c", "--config", metavar="FILE", default=default(None),
                        help="config file (else $INGEST_CONFIG, else ./ingest.toml)")
    parser.add_argument("--log-level", default=default("info"), choices=["debug", "info", "warning", "error"],
                        help="least severe log lines written to stderr (default: info)")
    parser.add_argument("--log-format", default=default("text"), choices=["text", "json"],
                        help="log lines as text or as one JSON object each (default: text)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (docs/cli.md is checked against it)."""
    common = _Parser(add_help=False)
    _common_options(common, defaults=False)

    parser = _Parser(
        prog="ingest",
        description="Poll syndication feeds, clean article text, collapse syndicated copies into clusters.",
        epilog="Without a command: run the daemon (or one pass with --once). "
               "New here? Try the offline demo: ingest --once -c config/demo.toml",
    )
    _common_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    parser.add_argument("--once", action="store_true", help="poll every source once and exit (for cron)")
    parser.add_argument("--json", action="store_true", help="with --once: print the summary as one JSON object")
    parser.add_argument("--source", action="append", metavar="NAME", help="with --once: only these sources")
    parser.add_argument("--due", action="store_true",
                        help="with --once: only sources whose next poll time has come (interval, ttl, backoff, Retry-After)")
    parser.add_argument("--replace-sources", action="store_true",
                        help="make this config's source list the store's, even while other workers run another")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("items", parents=[common], help="list stored items")
    p.add_argument("--json", action="store_true", help="JSON Lines, one item each")
    p.add_argument("--source", metavar="NAME", help="only the items of this source")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N items (the first by id)")

    p = sub.add_parser("clusters", parents=[common], help="list clusters of copies")
    p.add_argument("--json", action="store_true", help="JSON Lines, one cluster each")
    p.add_argument("--min-size", type=int, default=1, metavar="N", help="only clusters with at least N items")

    p = sub.add_parser("show", parents=[common], help="one item: clean text, removed parts, cluster")
    p.add_argument("id", type=int, help="the item's id (from items, clusters or search)")
    p.add_argument("--json", action="store_true", help="the same as one JSON object")

    p = sub.add_parser("sources", parents=[common], help="sources and their fetch state")
    p.add_argument("--json", action="store_true", help="JSON Lines, one source each")
    p.add_argument("--export-opml", action="store_true", help="write the effective source list as OPML 2.0")
    p.add_argument("-o", "--output", metavar="PATH", help="with --export-opml: write to PATH instead of stdout")

    p = sub.add_parser("boilerplate", parents=[common], help="paragraphs learned as boilerplate per source")
    p.add_argument("--source", metavar="NAME", help="only this source's paragraphs")
    p.add_argument("--json", action="store_true", help="JSON Lines, one paragraph each")

    p = sub.add_parser("reprocess", parents=[common],
                       help="re-clean stored items with today's rules and learned boilerplate (dedup decisions kept)")
    p.add_argument("--source", action="append", metavar="NAME", help="only these sources")

    sub.add_parser("resign", parents=[common], help="re-sign stored text with the current dedup settings, rebuild the index")

    p = sub.add_parser("export", parents=[common], help="one entry per story (cluster) as Atom, JSON Feed, JSON Lines or CSV")
    p.add_argument("--format", default="atom", choices=EXPORT_FORMATS, help="the output format")
    p.add_argument("--since", metavar="DATE", help="only clusters changed since DATE (ISO 8601) or for a duration (e.g. 2d)")
    p.add_argument("--source", metavar="NAME", help="only clusters holding an item of this source")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="the N most recently changed clusters")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")

    p = sub.add_parser("search", parents=[common], help="full-text search over stored clean text and titles")
    p.add_argument("query", help='words (all required), "a phrase", OR, -word')
    p.add_argument("--all-copies", action="store_true", help="every matching item, not one per cluster")
    p.add_argument("--json", action="store_true", help="JSON Lines, one hit each")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="at most N hits")

    p = sub.add_parser("prune", parents=[common], help="drop items older than [store] retention")
    p.add_argument("--dry-run", action="store_true", help="report what would be dropped, change nothing")

    p = sub.add_parser("recluster", parents=[common], help="re-run dedup over the stored history; report merges and splits")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="[dedup] threshold to use instead of the config's (raises containment and passage_share to at least X too)")
    p.add_argument("--containment", type=float, metavar="Y", help="[dedup] containment to use instead")
    p.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its usage line
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    from ingest.config import find_path, load
    from ingest.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    try:
        path = find_path(args.config)
        if args.config is None and not path.exists():
            _error(_how_to_start(path))
            return EXIT_USAGE
        config = load(path)
        for warning in config.warnings:
            log.warning("config: %s", warning)
        handler = COMMANDS.get(args.command or ("once" if args.once else "daemon"))
        assert handler is not None
        return handler(config, args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except SearchError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except IngestError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # `ingest items | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        # A database error the store did not wrap (a connection lost between two of its
        # statements, outside an item's write) is still the store's failure: one line, no
        # traceback. Anything else is a bug and keeps its traceback.
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        from ingest.store.engine import short

        _error(f"store: {short(exc)}")
        return EXIT_FAILED


def _how_to_start(path: Path) -> str:
    """The message for a first run with no config: where ingest looked, and how to start."""
    example = Path(__file__).resolve().parent.parent / "config" / "ingest.example.toml"
    copy = f"cp {example} ingest.toml" if example.is_file() else "write an ingest.toml (docs/configuration.md)"
    return (
        f"config: no config file ({path} not found, -c FILE not given, $INGEST_CONFIG not set). "
        f"To try the offline demo from a checkout: ingest --once -c config/demo.toml. "
        f"To follow your own feeds: {copy}, list them under [[sources]], then ingest --once -c ingest.toml"
    )


def _error(message: str) -> None:
    print(f"ingest: {message}", file=sys.stderr)


def open_store(config: Config, check_scheme: bool = True) -> Store:
    """The config's store, opened (and migrated); its signature scheme checked unless ``check_scheme`` is false."""
    from ingest.dedup import scheme_for
    from ingest.store import Store

    return Store.open(config.store.url, scheme_for(config.dedup).as_dict(), check_scheme=check_scheme)


def _chosen_sources(config: Config, names: list[str] | None) -> list[SourceConfig]:
    """The config's sources, or only those named by ``--source`` (unknown names are an error)."""
    sources = list(config.sources)
    if names:
        unknown = set(names) - {s.name for s in sources}
        if unknown:
            raise ConfigError(f"--source: no source named {', '.join(sorted(unknown))}")
        sources = [s for s in sources if s.name in names]
    return sources


# ---------------------------------------------------------------------------- commands


class _Interrupt:
    """``--once``'s SIGINT and SIGTERM: the first stops new work (the pipeline's stop flag), a second exits at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.flag = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            # Second signal: leave now. Every item is its own transaction (or savepoint),
            # so at most the one being written is rolled back; the workers die with us.
            os.write(2, f"ingest: {signal.Signals(signum).name} again: exiting at once\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self.flag.set()
        # from now on only the one line below says what happened (no per-source lines)
        logging.getLogger("ingest").setLevel(logging.WARNING)

    def message(self, stored: int) -> str:
        """The one line an interrupted run prints."""
        name = signal.Signals(self.signum or signal.SIGINT).name
        return f"interrupted ({name}): {stored} items stored, the rest is done on the next run"


def cmd_once(config: Config, args: argparse.Namespace) -> int:
    from ingest.fetch import Fetcher
    from ingest.logs import set_worker
    from ingest.pipeline import Deps
    from ingest.progress import Progress
    from ingest.worker import run_once, worker_name

    sources = _chosen_sources(config, args.source)
    enabled = [s for s in sources if s.enabled]
    owner = worker_name(config, "once")
    set_worker(owner)
    with _Interrupt() as interrupt, open_store(config) as store:
        # a fleet sharing the store must run one source list: this run's is checked too
        store.agree_sources(config.sources, owner, live_within=config.daemon.lease * 3,
                            replace=args.replace_sources)
        before = store.counts()["items"]
        fetcher = Fetcher(config.fetch)
        progress = Progress(total=len(enabled), stream=sys.stderr)
        try:
            report = run_once(
                Deps(config, store, fetcher, should_stop=interrupt.flag.is_set, exits_when_stopped=True), sources,
                on_done=progress.update, due_only=args.due, on_start=progress.start, owner=owner,
            )
        finally:
            progress.close()
            fetcher.close()
            try:
                store.worker_leave(owner)
            except StoreError:
                pass  # the store is what failed: the error below says so; the row ages out
        if interrupt.signum is not None:
            _error(interrupt.message(store.counts()["items"] - before))
            # Exit now, without the interpreter's shutdown: it would join polls still
            # blocked in a fetch (whatever they do next is never committed: they see the
            # flag first) and the pool's threads; the workers die with this process.
            store.close()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + interrupt.signum)
    for failed in report.failed:
        _error(f"source {failed.source!r}: {failed.error}")
    for source in report.sources:
        for problem in source.item_errors:
            log.warning("%s: item skipped: %s", source.source, problem)
        for warning in source.warnings:
            log.info("%s: %s", source.source, warning)
    for name, holder in sorted(report.elsewhere.items()):
        log.info("%s: not polled: worker %s is polling it now", name, holder)
    for name, reason in sorted(report.deferred.items()):
        log.warning("%s: not polled this run: %s", name, reason)
    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['sources']} sources ({summary['sources_failed']} failed), "
            f"{summary['items_new']} new items, {summary['items_updated']} updated, "
            f"{summary['duplicates']} duplicates collapsed, {summary['clusters']} clusters "
            f"in {report.elapsed:.1f}s"
        )
    if report.sources and len(report.failed) == len(report.sources):
        return EXIT_FAILED
    return EXIT_OK


def cmd_daemon(config: Config, args: argparse.Namespace) -> int:
    from ingest.daemon import run_daemon

    return run_daemon(config, args)


def cmd_items(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, check_scheme=False) as store:
        rows = store.items(source=args.source, limit=args.limit)
    _emit(
        args.json,
        [{"id": r.item_id, "source": r.source, "url": r.url, "guid": r.guid, "title": r.title,
          "published": _iso(r.published_at), "text": r.text, "cluster": r.cluster_id, "canonical": r.is_canonical}
         for r in rows],
        ["id", "source", "cluster", "canon", "published", "title"],
        [[r.item_id, r.source, r.cluster_id, "*" if r.is_canonical else "", _day(r.published_at), r.title]
         for r in rows],
    )
    return EXIT_OK


def cmd_clusters(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, check_scheme=False) as store:
        clusters = store.clusters(min_size=args.min_size)
    out = [_cluster_view(c) for c in clusters]
    if args.json:
        for c in out:
            _jsonl(c)
        return EXIT_OK
    for c in out:
        print(f"cluster {c['cluster']}  size {c['size']}  canonical item {c['canonical']}")
        for m in c["items"]:
            mark = "*" if m["id"] == c["canonical"] else " "
            print(f"  {mark} {m['id']:>6}  {m['similarity']:.2f}  {m['source'][:20]:<20}  {m['title'][:70]}")
    return EXIT_OK


def _similarities(members: Sequence[ClusterMember], canonical_id: int | None) -> dict[int, float | None]:
    """Each member's estimated Jaccard to the canonical item (None when the canonical is unknown)."""
    from ingest.dedup import estimated_jaccard

    canonical = next((m.signature for m in members if m.item_id == canonical_id), None)
    return {
        m.item_id: None if canonical is None
        else 1.0 if m.item_id == canonical_id
        else round(estimated_jaccard(m.signature, canonical), 3)
        for m in members
    }


def _cluster_view(cluster: ClusterRow) -> dict[str, Any]:
    similarity = _similarities(cluster.members, cluster.canonical_item_id)
    return {
        "cluster": cluster.cluster_id,
        "canonical": cluster.canonical_item_id,
        "size": cluster.size,
        "items": [
            {
                "id": m.item_id, "source": m.source, "url": m.url, "title": m.title,
                "similarity": 1.0 if similarity[m.item_id] is None else similarity[m.item_id],
            }
            for m in cluster.members
        ],
    }


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, check_scheme=False) as store:
        item = store.item(args.id)
    if item is None:
        raise NotFound(f"no item with id {args.id}")
    similarity = _similarities(item.members, item.canonical_item_id)
    members = [
        {"id": m.item_id, "source": m.source, "title": m.title, "url": m.url, "method": m.decision_method,
         "similarity": similarity[m.item_id]}
        for m in item.members
    ]
    if args.json:
        print(json.dumps({
            "id": item.item_id, "source": item.source, "url": item.url, "guid": item.guid, "title": item.title,
            "author": item.author, "published": _iso(item.published_at), "input": item.input_kind,
            "text": item.text, "removed": [{"rule": r.rule, "position": r.position, "text": r.text} for r in item.removals],
            "cluster": item.cluster_id, "canonical": item.canonical_item_id,
            "decision": {"method": item.decision_method, "similarity": item.decision_similarity,
                         "containment": item.decision_containment, "matched_item": item.decision_matched_item_id,
                         "reason": item.decision_reason,
                         "evidence": [s.as_dict() for s in item.decision_evidence]},
            "members": members, "notes": item.notes,
            "canonical_changes": [
                {"id": c.change_id, "cluster_id": c.cluster_id, "old_item_id": c.old_item_id,
                 "new_item_id": c.new_item_id, "changed_at": _iso(c.changed_at), "reason": c.reason}
                for c in item.canonical_changes
            ],
        }, indent=2))
        return EXIT_OK
    print(f"item {item.item_id}  source {item.source}  input {item.input_kind}")
    print(f"title: {item.title}")
    print(f"url: {item.url}")
    print(f"published: {_iso(item.published_at) or '-'}")
    print()
    print(item.text)
    print()
    print(f"removed ({len(item.removals)}):")
    for r in item.removals:  # in text order, whole (a user audits exactly what went)
        print(f"  [{r.rule}, {r.position}] {r.text}")
    if item.notes:
        print(f"notes: {item.notes}")
    print()
    print(f"cluster {item.cluster_id}, canonical item {item.canonical_item_id}")
    print(f"decision: {item.decision_method} - {item.decision_reason}")
    for s in item.decision_evidence:  # the signals that decided, with their bars
        print(f"  {'pass' if s.passed else 'fail'}  {s.name:<13} {s.value:>8g}  (threshold {s.threshold:g})")
    for m in members:
        mark = "*" if m["id"] == item.canonical_item_id else " "
        sim = f"{m['similarity']:.2f}" if m["similarity"] is not None else "  - "
        print(f"  {mark} {m['id']:>6}  {sim}  {m['method']:<12} {m['source'][:20]:<20}  {m['title'][:60]}")
    for c in item.canonical_changes:
        print(f"  canonical {c.old_item_id} -> {c.new_item_id} at {_iso(c.changed_at)}: {c.reason}")
    return EXIT_OK


def cmd_sources(config: Config, args: argparse.Namespace) -> int:
    if args.export_opml:
        from ingest.sourcelists import to_opml

        # OPML lists URLs, and an imported OPML may not name local files (see
        # sourcelists): local-file sources stay out, and say so
        local = [s.name for s in config.sources if s.is_local]
        if local:
            log.warning("sources: local-file sources are not written to OPML: %s", ", ".join(local))
        _write(to_opml([s for s in config.sources if not s.is_local]), args.output)
        return EXIT_OK
    with open_store(config, check_scheme=False) as store:
        states = {s.name: s for s in store.sync_sources(config.sources).values()}
    rows = []
    for source in config.sources:
        s = states[source.name]
        rows.append({
            "name": source.name, "url": source.url, "effective_url": s.effective_url or source.url,
            "enabled": source.enabled and not s.disabled_reason, "disabled_reason": s.disabled_reason,
            "last_success": _iso(s.last_success_at), "last_error": s.last_error, "last_error_kind": s.last_error_kind,
            "consecutive_errors": s.consecutive_errors, "error_count": s.error_count, "next_poll": _iso(s.next_poll_at),
            "polls": s.poll_count, "requests": s.request_count,
        })
    _emit(
        args.json, rows,
        ["name", "last success", "errors", "next poll", "last error"],
        [[r["name"], r["last_success"] or "-", f"{r['consecutive_errors']}/{r['error_count']}",
          r["next_poll"] or "-", (f"DISABLED: {r['disabled_reason']}" if r["disabled_reason"] else r["last_error"] or "")[:90]]
         for r in rows],
    )
    return EXIT_OK


def cmd_boilerplate(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, check_scheme=False) as store:
        rows = store.boilerplate(args.source)
    # seen: in how many different stories of the source's last `window` items the
    # paragraph stood when it was learned; removed: items it was taken out of
    _emit(
        args.json,
        [{**asdict(r), "learned_at": _iso(r.learned_at)} for r in rows],
        ["source", "seen", "window", "removed", "learned", "paragraph"],
        [[r.source, r.seen, r.window, r.removed, _day(r.learned_at), r.text[:90]] for r in rows],
    )
    return EXIT_OK


def cmd_reprocess(config: Config, args: argparse.Namespace) -> int:
    from ingest.maintenance import reprocess

    sources = _chosen_sources(config, args.source)
    with open_store(config) as store:
        done = reprocess(config, store, sources)
    for name, (seen, changed) in sorted(done.items()):
        print(f"{name}: {changed} of {seen} items re-cleaned")
    return EXIT_OK


def cmd_resign(config: Config, args: argparse.Namespace) -> int:
    from ingest.maintenance import resign

    with open_store(config, check_scheme=False) as store:
        count = resign(config, store)
    print(f"re-signed {count} items and rebuilt the LSH index")
    return EXIT_OK


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    from ingest.export import FeedInfo, render

    since = _since(args.since)
    with open_store(config, check_scheme=False) as store:
        if args.source and not store.has_source(args.source):
            raise ConfigError(f"--source: no source named {args.source!r} in the store")
        stories = store.stories(since=since, source=args.source, limit=args.limit)
        info = FeedInfo(id=f"urn:uuid:{store.store_uid()}", title="ingest: deduplicated stories",
                        updated=datetime.now(timezone.utc))
    _write(render(stories, args.format, info), args.output)
    log.info("exported %d stories as %s", len(stories), args.format)
    return EXIT_OK


def cmd_search(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, check_scheme=False) as store:
        hits = store.search(args.query, all_copies=args.all_copies, limit=args.limit)
    _emit(
        args.json, [{**asdict(h), "published_at": _iso(h.published_at)} for h in hits],
        ["id", "cluster", "copies", "score", "source", "title"],
        [[h.item_id, h.cluster_id, h.cluster_size, f"{h.score:.3f}", h.source, h.title] for h in hits],
    )
    return EXIT_OK


def cmd_prune(config: Config, args: argparse.Namespace) -> int:
    from ingest.pipeline import canonical_policy

    if config.store.retention is None:
        raise ConfigError("prune: [store] retention is off; set it (e.g. retention = \"90d\") to prune")
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=config.store.retention)
    with open_store(config, check_scheme=False) as store:
        counts = store.prune(cutoff, canonical_policy(config.dedup.canonical), dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    print(
        f"{verb} {counts['items']} items older than {_iso(cutoff)}: {counts['clusters_deleted']} clusters emptied, "
        f"{counts['clusters_shrunk']} shrunk, {counts['canonicals_reelected']} canonicals re-elected; "
        f"{counts['lsh_bands']} LSH band rows, {counts['removals']} removals, {counts['paragraphs']} paragraph rows"
    )
    return EXIT_OK


def cmd_recluster(config: Config, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ingest.maintenance import recluster_store
    from ingest.recluster import with_threshold

    cfg = config.dedup
    if args.threshold is not None:
        if not 0.05 <= args.threshold <= 1.0:
            raise ConfigError(f"--threshold must be between 0.05 and 1.0, got {args.threshold}")
        cfg = with_threshold(cfg, args.threshold)
    if args.containment is not None:
        if not 0.3 <= args.containment <= 1.0:
            raise ConfigError(f"--containment must be between 0.3 and 1.0, got {args.containment}")
        cfg = replace(cfg, containment=args.containment)
    with open_store(config) as store:
        done = recluster_store(store, cfg, dry_run=args.dry_run)
    diff, applied = done.diff, done.applied
    report = {**diff.as_dict(), "threshold": cfg.threshold, "containment": cfg.containment,
              "passage_share": cfg.passage_share, "dry_run": args.dry_run, "applied": applied}
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    verb = "would" if args.dry_run else "did"
    print(
        f"{diff.items} items, threshold {cfg.threshold}, containment {cfg.containment}, passage_share "
        f"{cfg.passage_share}: {diff.clusters_before} clusters -> {diff.clusters_after}; "
        f"{diff.merges} merges, {diff.splits} splits, {diff.items_moved} items moved, {diff.unchanged} clusters "
        f"unchanged ({'dry run: nothing changed' if args.dry_run else 'applied' if applied else 'nothing to apply'})"
    )
    if applied:
        print(f"{verb}: {applied['items_moved']} items reassigned, {applied['clusters_created']} clusters created, "
              f"{applied['clusters_deleted']} deleted, {applied['canonicals_changed']} canonicals changed")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "once": cmd_once,
    "daemon": cmd_daemon,
    "items": cmd_items,
    "clusters": cmd_clusters,
    "show": cmd_show,
    "sources": cmd_sources,
    "boilerplate": cmd_boilerplate,
    "resign": cmd_resign,
    "reprocess": cmd_reprocess,
    "export": cmd_export,
    "search": cmd_search,
    "prune": cmd_prune,
    "recluster": cmd_recluster,
}


# ---------------------------------------------------------------------------- output


def _emit(as_json: bool, records: Sequence[dict[str, Any]], headers: list[str], rows: list[list[Any]]) -> None:
    """``records`` as JSON Lines with ``--json``, else ``rows`` as a table under ``headers``."""
    if as_json:
        for record in records:
            _jsonl(record)
    else:
        _table(headers, rows)


def _jsonl(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def _write(text_: str, path: str | None) -> None:
    """To stdout, or to ``path`` (written whole, then renamed, so a reader never sees half)."""
    if not path:
        sys.stdout.write(text_)
        return
    target = Path(path)
    partial_ = target.with_name(target.name + ".part")
    try:
        partial_.write_text(text_, encoding="utf-8")
        partial_.replace(target)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _since(value: str | None) -> datetime | None:
    """``--since``: an ISO 8601 date or time (UTC unless it says), or a duration back from now."""
    if not value:
        return None
    from ingest.config import parse_duration

    try:
        return datetime.now(timezone.utc) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since: expected an ISO 8601 date (2025-09-16) or a duration (2d), got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [min(max([len(h)] + [len(r[i]) for r in cells]), 80) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in cells:
        print("  ".join(c[:w].ljust(w) for c, w in zip(row, widths)).rstrip())
    if not rows:
        print("(none)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
