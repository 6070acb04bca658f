"""Kill ``ingest`` with SIGKILL at random moments; check the store and the processes.

    python -m bench.crash --kills 20 --backend sqlite|postgresql --mode once|daemon [--feeds 40 --items 50]

Serves a seeded syndicated corpus (tests/corpus.py, >= 2,000 items by default) on
loopback, runs it once uninterrupted into a reference store, then kills ``--kills``
runs of ``--once`` or of the daemon at random moments (tests/crashkit.py) and
finishes with one uninterrupted ``--once``. The store must then equal the
reference (items by source + guid, clusters as sets of them) and keep every
invariant (tests/storecheck.py); no process of a killed run may live 3 s after its
kill. Prints a table, writes bench/results/crash.json (one entry per backend+mode,
earlier entries kept). PostgreSQL: ``$INGEST_TEST_POSTGRES_URL`` (fresh schemas,
dropped afterwards); unset, it says so and exits 0. Needs the test extra
(``pip install -e '.[test]'``): the harness lives under tests/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "crash.json"


def run(args: argparse.Namespace) -> dict:
    """One reference run and one kill series; what they gave."""
    from tests import crashkit
    from tests.corpus import syndicated
    from tests.pgschema import postgres_schema
    from tests.storecheck import check_invariants, contents, poll_errors

    corpus = syndicated(args.feeds, args.items, seed=args.seed)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-")))
        if args.backend == "sqlite":
            urls = [f"sqlite:///{work / 'reference.db'}", f"sqlite:///{work / 'crash.db'}"]
        else:
            base = os.environ["INGEST_TEST_POSTGRES_URL"]
            urls = [stack.enter_context(postgres_schema(base, "crash")) for _ in range(2)]
        server = stack.enter_context(crashkit.CorpusServer(corpus))
        started = time.monotonic()
        reference = crashkit.run_to_end(crashkit.write_config(work / "reference", urls[0], corpus, server.base()))
        reference_seconds = time.monotonic() - started
        if reference.returncode != 0:
            raise SystemExit(f"bench.crash: the reference run failed: {reference.stderr[-500:]}")
        with crashkit.open_store(urls[0]) as store:
            expected = contents(store)
        config = crashkit.write_config(work / "crash", urls[1], corpus, server.base())
        series = crashkit.crash_series(config, args.mode, args.kills, random.Random(args.seed), len(expected[0]),
                                       work / "crash" / "runs.log", urls[1])
        problems = []
        with crashkit.open_store(urls[1]) as store:
            try:
                check_invariants(store)
            except AssertionError as exc:
                problems.append(f"invariant: {exc}")
            got = contents(store)
            errors = poll_errors(store)
        left = crashkit.survivors(str(work))
        crashkit.kill_all(left)
    if got[0] != expected[0]:
        problems.append(f"items: {len(got[0] - expected[0])} extra, {len(expected[0] - got[0])} missing")
    if got[1] != expected[1]:
        problems.append(f"clusters: {len(got[1] ^ expected[1])} differ")
    if errors:
        problems.append(f"sources with errors: {sorted(errors)[:5]}")
    if any(k.left_alive for k in series.kills) or left:
        problems.append("processes outlived a kill")
    if series.final_returncode != 0:
        problems.append(f"final run exit {series.final_returncode}")
    return {
        "backend": args.backend, "mode": args.mode, "feeds": args.feeds, "items": len(expected[0]),
        "clusters": len(expected[1]), "kills": len(series.kills), "finished_before_kill": series.finished_early,
        "kill_after_s": [k.after for k in series.kills], "items_at_kill": [k.items for k in series.kills],
        "gone_within_s_max": max((k.gone_in for k in series.kills), default=0.0),
        "alive_3s_after_kill": sum(len(k.left_alive) for k in series.kills),
        "reference_s": round(reference_seconds, 1), "final_run_s": series.final_seconds,
        "equal_to_reference": not problems, "problems": problems,
        "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
    }


def table(result: dict) -> str:
    """The result as a small text table."""
    rows = [
        ("backend / mode", f"{result['backend']} / {result['mode']}"),
        ("corpus", f"{result['feeds']} feeds, {result['items']} items, {result['clusters']} clusters"),
        ("kills (runs ended before their moment)", f"{result['kills']} ({result['finished_before_kill']})"),
        ("items in the store at each kill", " ".join(map(str, result["items_at_kill"]))),
        ("slowest end of a killed run's processes", f"{result['gone_within_s_max']:.3f} s"),
        ("processes alive 3 s after a kill", str(result["alive_3s_after_kill"])),
        ("reference run / final run", f"{result['reference_s']} s / {result['final_run_s']} s"),
        ("store equals the reference, invariants hold", "yes" if result["equal_to_reference"] else
         "NO: " + "; ".join(result["problems"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    """Run the series; 0 when the store equals the reference and nothing outlived a kill."""
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--mode", choices=["once", "daemon"], default="once")
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--items", type=int, default=50, help="entries per feed")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    if args.backend == "postgresql" and not os.environ.get("INGEST_TEST_POSTGRES_URL"):
        print("bench.crash: INGEST_TEST_POSTGRES_URL is not set: no PostgreSQL to crash against")
        return 0
    sys.path.insert(0, str(ROOT))
    result = run(args)
    print(table(result))
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous[f"{args.backend}-{args.mode}"] = result
    RESULTS.write_text(json.dumps(previous, indent=2) + "\n")
    return 0 if result["equal_to_reference"] else 1


if __name__ == "__main__":
    sys.exit(main())
