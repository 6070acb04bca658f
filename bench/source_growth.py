"""Time per new item of one source as the source's stored items grow, before/after a change.

One source's store is filled (the real fetch, parse, extract and store of
``pipeline.process_source``, polling a loopback feed of short entries,
tests/test_hostile.py's ``many_entries``) to each size; at each size, copies of the
store receive the same ``--measure`` new entries in fresh processes, alternately with
this checkout's code ("after") and with the code of ``--before`` (a git revision,
exported to a temporary folder; "before"), ABBA-interleaved over ``--repeats``, so
load on the shared machine falls on both alike. The copy polled by older code is
given the schema that code knows: the indexes it lacks are dropped and its schema
version is written back (``--before-schema``, the version of ``--before``).

    python -m bench.source_growth --before 9df455a --sizes 1000,10000,50000
    python -m bench.source_growth --backend postgresql --sizes 1000,10000   # INGEST_TEST_POSTGRES_URL
    python -m bench.source_growth --before 9df455a --sizes 50000 --seed STORE.db   # start from a filled store

Reports ms per new item in the store stage (``SourceReport.timings["store"]``, the
batches' write transactions), for the whole poll, and the poll process's CPU time per
item (far less sensitive to the machine's load than wall time); writes
bench/results/source_growth.json (rewritten after each size).
PostgreSQL copies are ``CREATE DATABASE ... TEMPLATE`` of the filled one (names start
with ``hostile_growth``; all dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "source_growth.json"
FILL_STEP = 5_000  # entries per filling poll: keeps each feed's parse short
# what schema version 4 added (a copy for older code loses it)
ADDED_INDEXES = {3: ["ix_items_source_recent"]}

_POLL = textwrap.dedent("""
    import json, logging, sys, time
    from ingest import dedup
    from ingest.config import load
    from ingest.fetch import Fetcher
    from ingest.pipeline import Deps, process_source
    from ingest.store import Store

    logging.disable(logging.WARNING)
    config = load(sys.argv[1])
    with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
        state = store.sync_sources(config.sources)["hostile"]
        started, cpu = time.monotonic(), time.process_time()
        report = process_source(config.sources[0], state, Deps(config, store, Fetcher(config.fetch)))
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
        stored = store.engine.connect().exec_driver_sql("SELECT count(*) FROM items").scalar_one()
    print(json.dumps({"ok": report.ok, "error": report.error, "new": report.items_new, "seconds": seconds, "cpu": cpu,
                      "timings": report.timings, "stored": stored}))
""")


def _config(directory: Path, url: str, feed: str) -> Path:
    path = directory / f"poll-{time.monotonic_ns()}.toml"
    path.write_text(f'[store]\nurl = "{url}"\n[fetch]\nmax_bytes = 64000000\n'
                    f'[[sources]]\nname = "hostile"\nurl = "{feed}"\n', encoding="utf-8")
    return path


def poll(code: Path, directory: Path, url: str, feed: str) -> dict[str, Any]:
    """One poll of ``feed`` into the store at ``url``, by the code in ``code``, in a fresh process."""
    env = {"PYTHONPATH": str(code), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run([sys.executable, "-c", _POLL, str(_config(directory, url, feed))],
                          check=False, capture_output=True, text=True, env=env, cwd=code, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    got = json.loads(done.stdout)
    if not got["ok"]:
        raise RuntimeError(got["error"])
    return got


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (git archive) under ``into``."""
    archive = into / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before"


class SQLiteStores:
    def __init__(self, directory: Path, seed: Path | None = None) -> None:
        self.directory = directory
        self.main = self.url("filled")
        if seed is not None:  # a consistent copy, even of a store being written (WAL)
            with sqlite3.connect(f"file:{seed}?mode=ro", uri=True) as src, sqlite3.connect(directory / "filled.db") as dst:
                src.backup(dst)

    def url(self, name: str) -> str:
        return f"sqlite:///{self.directory / name}.db"

    @contextmanager
    def copy(self, name: str, schema: int | None) -> Iterator[str]:
        target = self.directory / f"{name}.db"
        with sqlite3.connect(self.directory / "filled.db") as src, sqlite3.connect(target) as dst:
            src.backup(dst)
            if schema is not None:
                _downgrade(dst.execute, schema)
        try:
            yield self.url(name)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        pass


class PostgresStores:
    def __init__(self, admin_url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._admin = admin_url
        self._base = admin_url.rsplit("/", 1)[0]
        self._run("DROP DATABASE IF EXISTS hostile_growth_filled")
        self._run("CREATE DATABASE hostile_growth_filled")
        self.main = f"{self._base}/hostile_growth_filled"

    def _run(self, sql: str, url: str | None = None) -> None:
        with self._psycopg.connect(url or self._admin, autocommit=True) as conn:
            conn.execute(sql)

    @contextmanager
    def copy(self, name: str, schema: int | None) -> Iterator[str]:
        self._run(f"DROP DATABASE IF EXISTS hostile_growth_{name}")
        self._run(f"CREATE DATABASE hostile_growth_{name} TEMPLATE hostile_growth_filled")
        url = f"{self._base}/hostile_growth_{name}"
        if schema is not None:
            with self._psycopg.connect(url, autocommit=True) as conn:
                _downgrade(conn.execute, schema)
        with self._psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        try:
            yield url
        finally:
            self._run(f"DROP DATABASE IF EXISTS hostile_growth_{name}")

    def close(self) -> None:
        self._run("DROP DATABASE IF EXISTS hostile_growth_filled")


def _downgrade(execute: Any, schema: int) -> None:
    """Make a store look as schema version ``schema`` left it (the later indexes dropped)."""
    for version, names in ADDED_INDEXES.items():
        if version >= schema:
            for name in names:
                execute(f"DROP INDEX IF EXISTS {name}")
    execute(f"UPDATE meta SET value = '{schema}' WHERE key = 'schema_version'")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tests.loopback import Loopback
    from tests.test_hostile import many_entries

    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="source-growth-") as tmp, Loopback() as server:
        work = Path(tmp)
        before = export(args.before, work) if args.before else None
        stores: Any = (PostgresStores(os.environ["INGEST_TEST_POSTGRES_URL"]) if args.backend == "postgresql"
                       else SQLiteStores(work, args.seed))
        try:
            stored, fill_seconds = _count(stores.main) if args.seed else 0, 0.0
            # a seed larger than a size: measured at the seed's count
            for size in sorted({max(size, stored) for size in sizes}):
                while stored < size:  # fill with this checkout's code
                    step = min(FILL_STEP, size - stored)
                    server.respond("/feed", many_entries(step, first=stored), headers={"Content-Type": "application/rss+xml"})
                    got = poll(ROOT, work, stores.main, server.url("/feed"))
                    stored, fill_seconds = got["stored"], fill_seconds + got["seconds"]
                    print(f"filled {stored} items ({got['seconds'] / max(got['new'], 1) * 1000:.1f} ms/item)", flush=True)
                server.respond("/feed", many_entries(args.measure, first=size + 10_000_000),
                               headers={"Content-Type": "application/rss+xml"})
                order = ["before", "after", "after", "before"] * args.repeats if before else ["after"] * args.repeats
                for n, variant in enumerate(order):
                    code, schema = (before, args.before_schema) if variant == "before" else (ROOT, None)
                    with stores.copy(f"m{n}", schema) as url:
                        got = poll(code, work, url, server.url("/feed"))
                    assert got["new"] == args.measure, got
                    row = {"size": size, "variant": variant, "new": got["new"],
                           "store_ms_per_item": got["timings"].get("store", 0.0) / got["new"] * 1000,
                           "poll_ms_per_item": got["seconds"] / got["new"] * 1000,
                           "poll_cpu_ms_per_item": got["cpu"] / got["new"] * 1000, "load": os.getloadavg()[0]}
                    rows.append(row)
                    print(f"{size:>7} {variant:<6} store {row['store_ms_per_item']:6.2f} ms/item, "
                          f"poll {row['poll_ms_per_item']:6.2f} ms/item, CPU {row['poll_cpu_ms_per_item']:6.2f} "
                          f"ms/item (load {row['load']:.1f})", flush=True)
                _write(args, summarise(args, rows))  # so far: a cut run keeps what it measured
        finally:
            stores.close()
    return summarise(args, rows)


def _count(url: str) -> int:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT count(*) FROM items").fetchone()[0]


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def summarise(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = []
    for size in sorted({r["size"] for r in rows}):
        line: dict[str, Any] = {"size": size}
        for variant in ("before", "after"):
            mine = [r for r in rows if r["size"] == size and r["variant"] == variant]
            if mine:
                line[variant] = {
                    "store_ms_per_item_median": statistics.median(r["store_ms_per_item"] for r in mine),
                    "poll_ms_per_item_median": statistics.median(r["poll_ms_per_item"] for r in mine),
                    "poll_cpu_ms_per_item_median": statistics.median(r["poll_cpu_ms_per_item"] for r in mine),
                    "runs": len(mine),
                }
        summary.append(line)
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            check=False, capture_output=True, text=True).stdout.strip()
    return {
        "name": "source_growth",
        "command": "python -m bench.source_growth " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_at_end": os.getloadavg()},
        "backend": args.backend, "measure": args.measure, "repeats": args.repeats,
        "seed": str(args.seed) if args.seed else None,
        "ingest_commit": commit, "before_commit": args.before, "date": time.strftime("%Y-%m-%d"),
        "summary": summary, "runs": rows,
    }


def _cell(line: dict[str, Any], variant: str, key: str, width: int) -> str:
    return f"{line[variant][key]:>{width}.2f}" if variant in line else " " * (width - 1) + "-"


def table(result: dict[str, Any]) -> str:
    """The summary as a text table."""
    head = (f"{'stored':>7}  {'before store':>12}  {'after store':>11}  {'before poll':>11}  {'after poll':>10}"
            f"  {'before CPU':>10}  {'after CPU':>9}")
    lines = [head + "  (ms per new item, median; CPU: the poll process's CPU time)"]
    for line in result["summary"]:
        lines.append(f"{line['size']:>7}  {_cell(line, 'before', 'store_ms_per_item_median', 12)}  "
                     f"{_cell(line, 'after', 'store_ms_per_item_median', 11)}  "
                     f"{_cell(line, 'before', 'poll_ms_per_item_median', 11)}  "
                     f"{_cell(line, 'after', 'poll_ms_per_item_median', 10)}  "
                     f"{_cell(line, 'before', 'poll_cpu_ms_per_item_median', 10)}  "
                     f"{_cell(line, 'after', 'poll_cpu_ms_per_item_median', 9)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.source_growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="stored items of the source to measure at")
    parser.add_argument("--measure", type=int, default=500, help="new items per measured poll")
    parser.add_argument("--repeats", type=int, default=1, help="ABBA rounds (before, after, after, before) per size")
    parser.add_argument("--before", help="git revision to compare with (omit: this code only)")
    parser.add_argument("--before-schema", type=int, default=3, help="the schema version of --before")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=Path, help="start from a copy of this SQLite store (one source named "
                        "'hostile' filled with tests/test_hostile.py's many_entries, as this bench fills it)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.seed and args.backend != "sqlite":
        parser.error("--seed is a SQLite store")
    result = bench(args)
    print(table(result))
    _write(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
