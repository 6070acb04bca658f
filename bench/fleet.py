"""Several daemons on one PostgreSQL store: throughput, the claim path at scale, catch-up, sizing.

    python -m bench.fleet sim       [--sources 100000] [--claimers 1 4 8] [--seconds 70] [--repeats 2]
    python -m bench.fleet catchup   [--sources 100000] [--claimers 4] [--seconds 240] [--bins 40]
    python -m bench.fleet daemons   [--daemons 1 2 4] [--feeds 200] [--repeats 2]
    python -m bench.fleet once      [--repeats 5]   (the daemon against ``--once`` on the bench corpus)

(the defaults; docs/sizing.md gives the commands its figures come from). Each prints a
Markdown table and writes ``bench/results/fleet-<command>.json`` (``--name`` to keep
another run).
PostgreSQL from ``INGEST_BENCH_POSTGRES_URL`` (else ``INGEST_TEST_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``); every run gets a fresh schema, dropped
afterwards. ``--before CHECKOUT`` runs the ingest of another checkout interleaved with
this one (sim, catchup), to measure a change. Everything is served and stored on
loopback. Not run by pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import fleet_sim as sim

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The server the benchmark uses (loopback by default)."""
    return os.environ.get("INGEST_BENCH_POSTGRES_URL") or os.environ.get("INGEST_TEST_POSTGRES_URL") or DEFAULT_URL


def fresh_schema(base: str) -> contextlib.AbstractContextManager[str]:
    """A new PostgreSQL schema for one run, dropped afterwards; yields the store URL that uses it."""
    from tests.pgschema import postgres_schema

    return postgres_schema(base, "fleetbench")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_at_end": os.getloadavg()}


def load() -> list[float]:
    """The 1, 5 and 15-minute load averages now (the machine is shared: stated with every run)."""
    return [round(v, 2) for v in os.getloadavg()]


def commit(root: Path) -> str | None:
    """The checkout's ``git describe`` (None outside git)."""
    import subprocess

    done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or None


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of ``values`` (nan when empty)."""
    if not values:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def write(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/fleet-<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"fleet-{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return path


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- sim: steady state at 100k


def run_sim(args: argparse.Namespace) -> dict[str, Any]:
    """Steady state: phases uniform over the interval, N claimers for ``seconds``; interleaved, repeated."""
    roots = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    runs: list[dict[str, Any]] = []
    budget = args.interval / 0.5  # feeds a host can have at the default per_host_delay (one claim per 0.5 s)
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        for repeat in range(args.repeats):
            for n in args.claimers:
                for poll, slots in args.modes:
                    for label, root in roots.items():
                        load_before = load()
                        with fresh_schema(postgres_url()) as url:
                            hosts = sim.populate_with(root, url, args.sources, args.interval, None, repeat)
                            raw = sim.run_claimers(url, n, slots, poll, args.interval, args.seconds,
                                                   not args.no_names, Path(tmp), repeat, root)
                            figures = sim.summarise(raw["records"], hosts, budget, args.skip, raw["window_s"]
                                                    + min(3.0, args.seconds / 4))
                        run = {"code": label, "claimers": n, "slots": slots, "poll_s": poll, "repeat": repeat,
                               "load_before": load_before, "load_after": load(), **figures,
                               **{k: v for k, v in raw.items() if k != "records"}}
                        runs.append(run)
                        log(f"  sim {label} claimers={n} poll={poll} slots={slots}: {figures.get('polls_per_s', 0):.0f}"
                            f" polls/s, claim p99 {figures.get('claim_ms_p99', float('nan')):.0f} ms, lag p99 "
                            f"{figures.get('lag_s_p99', float('nan')):.1f} s, pg {raw['pg_cpu_share']:.2f} cores")
    return {"name": "sim", "machine": machine(), "commit": commit(ROOT),
            "before_commit": commit(args.before) if args.before else None, "sources": args.sources,
            "interval_s": args.interval, "seconds": args.seconds, "skip_s": args.skip, "names": not args.no_names,
            "host_sizes_top": sim.host_sizes(args.sources)[:10], "hosts": len(sim.host_sizes(args.sources)),
            "over_budget_feeds": sum(s for s in sim.host_sizes(args.sources) if s > budget), "runs": runs}


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if key in r and r[key] == r[key]]
    return statistics.median(values) if values else float("nan")


def sim_table(result: dict[str, Any]) -> str:
    """The sim figures: one row per (code, claimers, mode), medians over repeats."""
    lines = [
        f"{result['sources']} sources, interval {result['interval_s']:.0f} s (demand "
        f"{result['sources'] / result['interval_s']:.0f} polls/s), {result['hosts']} hosts (largest "
        f"{result['host_sizes_top'][:4]}), {result['over_budget_feeds']} feeds on hosts over their politeness "
        f"budget; {result['seconds']:.0f} s per run, first {result['skip_s']:.0f} s dropped; medians of "
        f"{max(r['repeat'] for r in result['runs']) + 1} runs",
        "",
        "| code | claimers x slots | poll s | polls/s | claims/s | claim ms p50 / p99 | lag s p50 / p99 (in budget) "
        "| lag s p99 (over budget) | claimer CPU cores | PostgreSQL cores | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["code"], run["claimers"], run["slots"], run["poll_s"]), []).append(run)
    for (code, n, slots, poll), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][3], kv[0][0])):
        inb = [r["by_class"].get("tail (1-2 feeds)", {}) for r in runs] + [r["by_class"].get("head (>2 feeds)", {})
                                                                           for r in runs]
        over = [r["by_class"].get("over budget", {}).get("lag_s_p99", float("nan")) for r in runs]
        cpu = statistics.median([r["claimer_cpu_s"] / r["window_s"] for r in runs])
        lines.append(
            f"| {code} | {n} x {slots} | {poll:g} | {_median_of(runs, 'polls_per_s'):.0f} | "
            f"{_median_of(runs, 'claims_per_s'):.0f} | {_median_of(runs, 'claim_ms_p50'):.1f} / "
            f"{_median_of(runs, 'claim_ms_p99'):.0f} | "
            f"{statistics.median([c.get('lag_s_p50', float('nan')) for c in inb]):.1f} / "
            f"{statistics.median([c.get('lag_s_p99', float('nan')) for c in inb]):.1f} | "
            f"{statistics.median(over):.0f} | {cpu:.2f} | {_median_of(runs, 'pg_cpu_share'):.2f} | "
            f"{_median_of(runs, 'machine_busy_share') * 100:.0f} % |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- catch-up after an outage


def overdue_counts(url: str, over_hosts: list[str], grace: float = 60.0) -> dict[str, int]:
    """Sources late by more than ``grace`` s and not leased: on hosts within their budget, and over it."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE NOT host = ANY(CAST(:over AS text[]))) AS inside,"
            " count(*) FILTER (WHERE host = ANY(CAST(:over AS text[]))) AS over FROM sources"
            " WHERE next_poll_at < now() - make_interval(secs => :grace)"
            " AND (lease_until IS NULL OR lease_until <= now())"), {"over": over_hosts, "grace": grace}).one()
    engine.dispose()
    return {"in_budget": row.inside, "over_budget": row.over}


def run_catchup(args: argparse.Namespace) -> dict[str, Any]:
    """Every source overdue by 45-60 min (a one-hour outage), then N claimers: the backlog, lag, next wave."""
    import threading

    roots = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    budget = args.interval / 0.5
    runs = []
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        for n in args.claimers:
            for label, root in roots.items():
                load_before = load()
                with fresh_schema(postgres_url()) as url:
                    # a one-hour outage: each source was due once in its first 15 minutes
                    # (its next poll time stays there), so all are 45-60 minutes late
                    hosts = sim.populate_with(root, url, args.sources, args.interval,
                                              (3600.0 - args.interval, 3600.0), 0)
                    over = sorted(h for h, size in hosts.items() if size > budget)
                    box: dict[str, Any] = {}
                    worker = threading.Thread(target=lambda: box.update(sim.run_claimers(
                        url, n, args.slots, args.poll, args.interval, args.seconds, not args.no_names, Path(tmp),
                        0, root)))
                    started = time.time()
                    worker.start()
                    samples = []
                    while worker.is_alive():
                        samples.append({"t": round(time.time() - started, 1), **overdue_counts(url, over)})
                        time.sleep(args.sample)
                    worker.join()
                    samples.append({"t": round(time.time() - started, 1), **overdue_counts(url, over)})
                    wave = sim.histogram(url, args.bins, args.bin_width)
                records = box["records"]
                t0 = min((r[0] for r in records), default=started)
                buckets: dict[int, list[float]] = {}
                for r in records:
                    for lag, host in r[2]:
                        if hosts.get(host, 1) <= budget:
                            buckets.setdefault(int((r[0] - t0) // args.bucket), []).append(lag)
                series = [{"t": b * args.bucket, "polls_per_s": len(v) / args.bucket,
                           "lag_s_p50": sim.percentile(v, 0.5), "lag_s_p99": sim.percentile(v, 0.99)}
                          for b, v in sorted(buckets.items())]
                cleared = next((s["t"] for s in samples if s["in_budget"] == 0), None)
                steady = next((s["t"] for s in series if s["lag_s_p99"] < args.steady_lag), None)
                polled = sum(wave)
                runs.append({
                    "code": label, "claimers": n, "slots": args.slots, "poll_s": args.poll,
                    "backlog_start": samples[0], "cleared_in_budget_s": cleared, "lag_steady_s": steady,
                    "over_budget_left": samples[-1]["over_budget"], "samples": samples, "series": series,
                    "next_wave": wave, "next_wave_peak_per_s": max(wave[1:]) / args.bin_width,
                    "pg_cpu_share": box["pg_cpu_share"], "claimer_cpu_s": box["claimer_cpu_s"],
                    "window_s": box["window_s"], "machine_busy_share": box["machine_busy_share"],
                    "errors": box["errors"], "sources_counted": polled, "load_before": load_before,
                    "load_after": load(),
                })
                log(f"  catchup {label} claimers={n}: in-budget backlog cleared at {cleared} s, lag p99 < "
                    f"{args.steady_lag} s from {steady} s, next-wave peak {runs[-1]['next_wave_peak_per_s']:.0f}/s")
    return {"name": "catchup", "machine": machine(), "commit": commit(ROOT),
            "before_commit": commit(args.before) if args.before else None, "sources": args.sources,
            "interval_s": args.interval, "seconds": args.seconds, "bin_width_s": args.bin_width,
            "steady_lag_s": args.steady_lag, "over_budget_hosts": [s for s in sim.host_sizes(args.sources) if s > budget],
            "runs": runs}


def catchup_table(result: dict[str, Any]) -> str:
    """The catch-up figures, and the next wave's shape."""
    demand = result["sources"] / result["interval_s"]
    lines = [
        f"{result['sources']} sources all 45-60 min overdue; claimers for {result['seconds']:.0f} s; hosts over "
        f"their politeness budget (feeds {result['over_budget_hosts']}) drain at 2 claims/s each and are counted "
        "apart",
        "",
        "| code | claimers x slots | in-budget backlog at start | cleared after s | polls/s while clearing | lag p99 "
        f"< {result['steady_lag_s']:g} s after s | over-budget left | next wave peak polls/s (steady {demand:.0f}) "
        "| PostgreSQL cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        clearing = [s["polls_per_s"] for s in r["series"] if r["cleared_in_budget_s"] is None
                    or s["t"] < r["cleared_in_budget_s"]]
        lines.append(
            f"| {r['code']} | {r['claimers']} x {r['slots']} | {r['backlog_start']['in_budget']} | "
            f"{r['cleared_in_budget_s'] if r['cleared_in_budget_s'] is not None else 'not in the run'} | "
            f"{statistics.median(clearing) if clearing else float('nan'):.0f} | "
            f"{r['lag_steady_s'] if r['lag_steady_s'] is not None else 'not in the run'} | {r['over_budget_left']} | "
            f"{r['next_wave_peak_per_s']:.0f} | {r['pg_cpu_share']:.2f} |"
        )
    for r in result["runs"]:
        width = result["bin_width_s"]
        wave = r["next_wave"]
        lines.append(f"\nnext_poll_at after the run ({r['code']}, {r['claimers']} claimers), sources per {width:.0f} s "
                     f"from the end (first bin: due already): " + " ".join(str(v) for v in wave))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- daemons: 1, 2, 4 on one store

FARM_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 10))  # eight loopback hosts


def serve_farm(directory: Path, port: int, addresses: tuple[str, ...]) -> None:
    """Serve every file under ``directory`` from memory on each of ``addresses`` at ``port``, with ETags (304s)."""
    from bench.run import serve

    serve(directory, port, addresses, etags=True)


def _free_port(address: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (the daemon and its process pool), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    children.setdefault(int(f.read().rsplit(b")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += sim.proc_cpu(current)
        todo += children.get(current, [])
    return total


def _daemon_config(directory: Path, url: str, feeds: list[str], name: str, workers: int) -> Path:
    lines = [
        "[store]", f'url = "{url}"', "",
        "[fetch]", "allow_private_addresses = true  # the farm is on loopback",
        # eight loopback hosts stand for many real ones: no politeness delay (see docs/sizing.md)
        "per_host_delay = 0", "per_host_concurrency = 16", "concurrency = 16", "",
        "[daemon]", f'name = "{name}"', f"workers = {workers}", 'shutdown_timeout = "5s"', "",
        # every source is due again a second after its poll: the fleet polls as fast as it can
        "[defaults]", 'interval = "1s"', "",
    ]
    for n, feed in enumerate(feeds):
        lines += ["[[sources]]", f'name = "f{n:04d}"', f'url = "{feed}"', ""]
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _store_counts(url: str) -> tuple[int, int]:
    """(items stored, polls recorded) in the store, by plain SQL."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            items = conn.execute(sa.text("SELECT count(*) FROM items")).scalar_one()
            polls = conn.execute(sa.text("SELECT coalesce(sum(poll_count), 0) FROM sources")).scalar_one()
    except sa.exc.ProgrammingError:  # the first daemon has not created the schema yet
        items = polls = 0
    finally:
        engine.dispose()
    return int(items), int(polls)


def _stop(procs: list[Any]) -> None:
    import signal

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except Exception:  # noqa: BLE001 (a daemon that does not stop is killed)
            proc.kill()
            proc.wait(10)


def one_fleet(url: str, work: Path, feeds: list[str], daemons: int, workers: int, expected: int,
              window: float, timeout: float, farm_pid: int) -> dict[str, Any]:
    """Start ``daemons`` daemons on ``url``: seconds until ``expected`` items are stored, then polls/s over ``window``."""
    import subprocess

    app_url = url + "&application_name=" + sim.APP
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("INGEST_CONFIG", None)
    procs = []
    started = time.perf_counter()
    for n in range(daemons):
        config = _daemon_config(work, app_url, feeds, f"d{n}", workers)
        procs.append(subprocess.Popen([sys.executable, "-m", "ingest", "--log-level", "error", "-c", str(config)],
                                      cwd=work, env=env, stdout=subprocess.DEVNULL,
                                      stderr=(work / f"d{n}.log").open("w")))
    try:
        items = 0
        while items < expected and time.perf_counter() - started < timeout:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a daemon exited: " + (work / "d0.log").read_text()[-2000:])
            time.sleep(0.25)
            items, _ = _store_counts(url)
        ingest_s = time.perf_counter() - started
        # the polls window: every feed is unchanged now (304s), each due a second after its poll
        _, polls0 = _store_counts(url)
        cpu0 = [tree_cpu(p.pid) for p in procs]
        pg0, farm0, (busy0, total0), t0 = sim.backend_cpu(url), sim.proc_cpu(farm_pid), sim.machine_cpu(), time.perf_counter()
        time.sleep(window)
        _, polls1 = _store_counts(url)
        cpu1 = [tree_cpu(p.pid) for p in procs]
        pg1, farm1, (busy1, total1), t1 = sim.backend_cpu(url), sim.proc_cpu(farm_pid), sim.machine_cpu(), time.perf_counter()
    finally:
        _stop(procs)
    span = t1 - t0
    return {
        "daemons": daemons, "items": items, "ingest_s": ingest_s, "items_per_s": items / ingest_s,
        # CPU from the start until every item was stored (imports and start-up included; the
        # backends' since they connected): what the items phase used
        "ingest_daemon_cores": sum(cpu0) / ingest_s, "ingest_pg_cores": pg0 / ingest_s,
        "polls_per_s": (polls1 - polls0) / span, "daemon_cores": (sum(cpu1) - sum(cpu0)) / span,
        "pg_cores": (pg1 - pg0) / span, "farm_cores": (farm1 - farm0) / span,
        "machine_busy": (busy1 - busy0) / (total1 - total0), "complete": items >= expected,
        "exit_codes": [p.returncode for p in procs],
    }


def run_daemons(args: argparse.Namespace) -> dict[str, Any]:
    """1, 2, 4 daemons on one fresh schema each run, interleaved and repeated, on the loopback farm."""
    import subprocess

    from bench.gen import SEED, generate
    from bench.gen import write as write_corpus

    corpus = generate(args.feeds, args.items, SEED, full_text_share=0.0)
    port = _free_port(FARM_ADDRESSES[0])
    runs = []
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        work = Path(tmp)
        write_corpus(corpus, work / "www", port)
        feeds = [f"http://{FARM_ADDRESSES[s % len(FARM_ADDRESSES)]}:{port}{corpus.feed_path(s)}"
                 for s in range(corpus.sources)]
        farm = subprocess.Popen([sys.executable, "-m", "bench.fleet", "_farm", str(work / "www"), str(port)],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        try:
            assert farm.stdout is not None and farm.stdout.readline().strip() == "ready"
            for repeat in range(args.repeats):
                for daemons in args.daemons:
                    load_before = load()
                    with fresh_schema(postgres_url()) as url:
                        run_dir = work / f"run-{repeat}-{daemons}"
                        run_dir.mkdir()
                        run = one_fleet(url, run_dir, feeds, daemons, args.workers, len(corpus.items),
                                        args.window, args.timeout, farm.pid)
                    run |= {"repeat": repeat, "load_before": load_before, "load_after": load()}
                    runs.append(run)
                    log(f"  daemons={daemons}: {run['items_per_s']:.0f} items/s ({run['items']} in "
                        f"{run['ingest_s']:.1f} s), {run['polls_per_s']:.0f} polls/s; cores: daemons "
                        f"{run['daemon_cores']:.2f}, postgres {run['pg_cores']:.2f}, farm {run['farm_cores']:.2f}, "
                        f"machine {run['machine_busy'] * 100:.0f} %, load {load_before[0]:.1f} -> "
                        f"{run['load_after'][0]:.1f}")
        finally:
            farm.terminate()
            farm.wait()
    return {"name": "daemons", "machine": machine(), "commit": commit(ROOT), "feeds": corpus.sources,
            "items": len(corpus.items), "hosts": len(FARM_ADDRESSES), "workers": args.workers,
            "window_s": args.window, "repeats": args.repeats, "runs": runs}


def daemons_table(result: dict[str, Any]) -> str:
    """Medians per fleet size."""
    lines = [
        f"{result['feeds']} feeds ({result['items']} items, content in the feed) on {result['hosts']} loopback hosts, "
        f"per_host_delay 0; each daemon workers = {result['workers']}, processes = one per CPU; polls/s over "
        f"{result['window_s']:.0f} s once every item is stored (unchanged feeds: 304s, interval 1 s: at most "
        f"{result['feeds']} polls/s, fewer by the wait for the 1 s claim tick); medians of {result['repeats']} "
        "interleaved runs (min-max)",
        "",
        "| daemons | items/s | cores while storing: daemons / PostgreSQL | polls/s | cores while polling: daemons / "
        "PostgreSQL / farm | machine busy | load 1 min before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for daemons in sorted({r["daemons"] for r in result["runs"]}):
        runs = [r for r in result["runs"] if r["daemons"] == daemons]
        ips, pps = spread([r["items_per_s"] for r in runs]), spread([r["polls_per_s"] for r in runs])
        lines.append(
            f"| {daemons} | {ips['median']:.0f} ({ips['min']:.0f}-{ips['max']:.0f}) | "
            f"{_median_of(runs, 'ingest_daemon_cores'):.2f} / {_median_of(runs, 'ingest_pg_cores'):.2f} | "
            f"{pps['median']:.0f} ({pps['min']:.0f}-{pps['max']:.0f}) | {_median_of(runs, 'daemon_cores'):.2f} / "
            f"{_median_of(runs, 'pg_cores'):.2f} / {_median_of(runs, 'farm_cores'):.2f} | "
            f"{_median_of(runs, 'machine_busy') * 100:.0f} % | "
            f"{statistics.median([r['load_before'][0] for r in runs]):.1f} / "
            f"{statistics.median([r['load_after'][0] for r in runs]):.1f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the daemon against --once


def _items_in(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked for a moment
        return -1


def daemon_run(work: Path, manifest: list[dict[str, Any]], run: int, expected: int, timeout: float) -> dict[str, Any]:
    """The daemon on a fresh SQLite store with bench.run's config: seconds from start until ``expected`` items."""
    import subprocess

    from bench.run import _ingest_config

    scratch = work / f"daemon-{run}"
    scratch.mkdir()
    config = _ingest_config(scratch, manifest, None)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("INGEST_CONFIG", None)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ingest", "--log-level", "error", "-c", str(config)], cwd=work,
                            env=env, stdout=subprocess.DEVNULL, stderr=(scratch / "daemon.log").open("w"))
    try:
        items = 0
        while items < expected and time.perf_counter() - started < timeout and proc.poll() is None:
            time.sleep(0.05)
            items = _items_in(scratch / "store.db")
        wall = time.perf_counter() - started
    finally:
        _stop([proc])
    if items < expected:
        raise RuntimeError(f"the daemon stored {items} of {expected} items: " + (scratch / "daemon.log").read_text()[-2000:])
    return {"wall": wall, "items": items, "items_per_s": items / wall}


def run_once_vs_daemon(args: argparse.Namespace) -> dict[str, Any]:
    """``ingest --once`` and the daemon on the bench corpus, interleaved: items/s of each and their ratio."""
    import subprocess

    from bench.gen import SEED, generate
    from bench.gen import write as write_corpus
    from bench.run import run_contestant

    corpus = generate(args.sources, args.items, SEED, 0.3)
    port = _free_port()
    runs: dict[str, list[dict[str, Any]]] = {"once": [], "daemon": []}
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        work = Path(tmp)
        write_corpus(corpus, work / "www", port)
        manifest = [{"name": f"s{s:04d}", "url": f"http://127.0.0.1:{port}{corpus.feed_path(s)}",
                     "full_text": s in corpus.full_text_sources} for s in range(corpus.sources)]
        (work / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        server = subprocess.Popen([sys.executable, "-m", "bench.run", "serve", str(work / "www"), str(port)],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            for run in range(args.repeats):
                once = run_contestant("ingest", work, work / "manifest.json", manifest, None, run)
                runs["once"].append({"wall": once["wall"], "items": once["items"],
                                     "items_per_s": once["items"] / once["wall"]})
                daemon = daemon_run(work, manifest, run, once["items"], args.timeout)
                runs["daemon"].append(daemon)
                log(f"  run {run + 1}: --once {runs['once'][-1]['items_per_s']:.0f} items/s, daemon "
                    f"{daemon['items_per_s']:.0f} items/s ({daemon['items']} items)")
        finally:
            server.terminate()
            server.wait()
    ratios = [d["items_per_s"] / o["items_per_s"] for o, d in zip(runs["once"], runs["daemon"])]
    return {"name": "once", "machine": machine(), "commit": commit(ROOT),
            "corpus": {"sources": corpus.sources, "items_per_source": corpus.items_per_source,
                       "items": len(corpus.items), "full_text_sources": len(corpus.full_text_sources)},
            "repeats": args.repeats, "runs": runs,
            "once_items_per_s": spread([r["items_per_s"] for r in runs["once"]]),
            "daemon_items_per_s": spread([r["items_per_s"] for r in runs["daemon"]]),
            "ratio_per_run": spread(ratios),
            "ratio_of_medians": statistics.median([r["items_per_s"] for r in runs["daemon"]])
            / statistics.median([r["items_per_s"] for r in runs["once"]])}


def once_table(result: dict[str, Any]) -> str:
    """--once against the daemon."""
    c, o, d, r = result["corpus"], result["once_items_per_s"], result["daemon_items_per_s"], result["ratio_per_run"]
    return "\n".join([
        f"bench corpus {c['sources']} x {c['items_per_source']} = {c['items']} items ({c['full_text_sources']} "
        f"full-text sources), SQLite, bench/run.py's config; wall time from process start (imports included) "
        f"until every item is stored; {result['repeats']} interleaved runs",
        "",
        "| run | items/s min / median / max |",
        "|---|---|",
        f"| ingest --once | {o['min']:.0f} / {o['median']:.0f} / {o['max']:.0f} |",
        f"| daemon | {d['min']:.0f} / {d['median']:.0f} / {d['max']:.0f} |",
        "",
        f"daemon / --once per interleaved run: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}; "
        f"ratio of medians {result['ratio_of_medians']:.2f} (target >= 0.9)",
    ])


# ---------------------------------------------------------------------------- main


def _modes(text: str) -> tuple[float, int]:
    poll, slots = text.split("x")
    return float(poll), int(slots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sim", help="100k simulated sources, N claimer processes, steady state")
    p.add_argument("--sources", type=int, default=100_000)
    p.add_argument("--interval", type=float, default=900.0)
    p.add_argument("--claimers", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--modes", type=_modes, nargs="+", default=[(0.0, 4), (0.2, 16)],
                   help="POLLxSLOTS: simulated poll seconds and poll slots per claimer (default 0x4 0.2x16)")
    p.add_argument("--seconds", type=float, default=70.0)
    p.add_argument("--skip", type=float, default=25.0,
                   help="seconds dropped at the start (the first sources fall due after fleet_sim.LEAD = 20 s)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-names", action="store_true", help="claim without the daemon's names= list")
    p.add_argument("--before", type=Path, default=None, metavar="CHECKOUT")
    p.add_argument("--name", default="sim")
    p = sub.add_parser("catchup", help="after a one-hour outage: backlog, lag, the next wave")
    p.add_argument("--sources", type=int, default=100_000)
    p.add_argument("--interval", type=float, default=900.0)
    p.add_argument("--claimers", type=int, nargs="+", default=[4])
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--poll", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--sample", type=float, default=2.0, help="seconds between backlog samples")
    p.add_argument("--bucket", type=float, default=10.0, help="seconds per lag bucket")
    p.add_argument("--steady-lag", type=float, default=2.0, help="lag p99 (s) that counts as steady state")
    p.add_argument("--bins", type=int, default=40)
    p.add_argument("--bin-width", type=float, default=30.0)
    p.add_argument("--no-names", action="store_true")
    p.add_argument("--before", type=Path, default=None, metavar="CHECKOUT")
    p.add_argument("--name", default="catchup")
    p = sub.add_parser("daemons", help="1, 2, 4 real daemons on one PostgreSQL schema, loopback farm")
    p.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--feeds", type=int, default=200)
    p.add_argument("--items", type=int, default=5, help="items per feed")
    p.add_argument("--workers", type=int, default=8, help="[daemon] workers of each daemon")
    p.add_argument("--window", type=float, default=20.0, help="seconds of polls counted after the items")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--name", default="daemons")
    p = sub.add_parser("once", help="the daemon against ingest --once on the bench corpus (SQLite)")
    p.add_argument("--sources", type=int, default=20)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--name", default="once")
    p = sub.add_parser("_farm", help="(internal) serve a folder on the farm's loopback hosts")
    p.add_argument("directory", type=Path)
    p.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.command == "_farm":
        serve_farm(args.directory, args.port, FARM_ADDRESSES + ("127.0.0.1",))
        return 0
    if args.command == "daemons":
        result = run_daemons(args)
        print(daemons_table(result))
    elif args.command == "once":
        result = run_once_vs_daemon(args)
        print(once_table(result))
    elif args.command == "sim":
        result = run_sim(args)
        print(sim_table(result))
    elif args.command == "catchup":
        result = run_catchup(args)
        print(catchup_table(result))
    path = write(args.name, result)
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
