"""Several daemons on one PostgreSQL store: throughput, the claim path at scale, catch-up, sizing.

    python -m bench.fleet sim       [--sources 100000] [--claimers 1 4 8] [--seconds 60] [--repeats 2]
    python -m bench.fleet catchup   [--sources 100000] [--claimers 4 8] [--seconds 240]
    python -m bench.fleet daemons   [--daemons 1 2 4] [--feeds 400] [--repeats 3]
    python -m bench.fleet once      [--repeats 5]   (the daemon against ``--once`` on the bench corpus)

Each prints a Markdown table and writes ``bench/results/fleet-<command>.json``.
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
import uuid
from pathlib import Path
from typing import Any, Iterator

from bench import fleet_sim as sim

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The server the benchmark uses (loopback by default)."""
    return os.environ.get("INGEST_BENCH_POSTGRES_URL") or os.environ.get("INGEST_TEST_POSTGRES_URL") or DEFAULT_URL


@contextlib.contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A new PostgreSQL schema for one run, dropped afterwards; yields the store URL that uses it."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    schema = f"fleetbench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(base))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_at_end": os.getloadavg()}


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
                        with fresh_schema(postgres_url()) as url:
                            hosts = sim.populate_with(root, url, args.sources, args.interval, None, repeat)
                            raw = sim.run_claimers(url, n, slots, poll, args.interval, args.seconds,
                                                   not args.no_names, Path(tmp), repeat, root)
                            figures = sim.summarise(raw["records"], hosts, budget, args.skip, raw["window_s"]
                                                    + min(3.0, args.seconds / 4))
                        run = {"code": label, "claimers": n, "slots": slots, "poll_s": poll, "repeat": repeat,
                               **figures, **{k: v for k, v in raw.items() if k != "records"}}
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
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--skip", type=float, default=10.0, help="seconds dropped at the start (warm-up)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-names", action="store_true", help="claim without the daemon's names= list")
    p.add_argument("--before", type=Path, default=None, metavar="CHECKOUT")
    p.add_argument("--name", default="sim")
    args = parser.parse_args(argv)
    if args.command == "sim":
        result = run_sim(args)
        print(sim_table(result))
    path = write(args.name, result)
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
