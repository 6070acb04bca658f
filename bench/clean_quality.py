"""Cleaning quality over the labelled set in fixtures/clean/: boilerplate removed, sentences kept.

Each case is ``NN-slug.html`` (input) with ``NN-slug.toml`` (``kind`` page|entry,
``source``, ``title``, ``keep`` = sentences that must survive, ``remove`` = boilerplate
that must go). The REAL stages run: ``extract`` (a page case as a fetched full-text
page, an entry case as the feed's content) then ``clean`` with the built-in rules.

Reported per kind, per half (odd case numbers were used to tune the rules, even ones
were held out) and overall: share of ``remove`` strings absent from the clean text,
share of ``keep`` strings present, and extraction+cleaning speed (items/s, median of
``--runs`` passes). Prints a table and writes bench/results/clean_quality.json.

    python -m bench.clean_quality [--runs 5] [--show-failures] [--baseline DIR [--rounds 5]]

``--baseline DIR``: another checkout of the project (say, main's): extract+clean speed
of that tree and of this one, measured in turns (a subprocess each, ``--rounds`` times,
so that machine load falls on both alike); medians of the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ingest.clean import paragraph_fingerprint
from ingest.config import ExtractConfig
from ingest.extract import FRAGMENT_STRATEGIES
# inputs and load_cases stay importable from here: --baseline runs _SPEED in other checkouts, older ones included
from tests.clean_cases import Case, Outcome, inputs, load_cases, other_dropped, run_case, score  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "clean_quality.json"
def speed(cases: list[Case], runs: int, fragment: str = "auto", cfg: ExtractConfig | None = None) -> dict[str, float]:
    """Items per second through extract+clean: median and spread of ``runs`` passes."""
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for case in cases:
            run_case(case, cfg, fragment=fragment)
        rates.append(len(cases) / (time.perf_counter() - started))
    return {"runs": runs, "median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
            "max": round(max(rates), 1)}


# one turn: extract+clean items/s (speed's median), then clean alone on the extracted documents
_SPEED = """
import json, statistics, time
from bench.clean_quality import inputs, load_cases, speed
from ingest.clean import clean, ruleset
from ingest.config import ExtractConfig
from ingest.extract import extract
cases = load_cases()
documents = [extract(*inputs(case), ExtractConfig()) for case in cases]
rules = ruleset(True)
def clean_rate(clock=time.perf_counter, passes=1):
    started = clock()
    for _ in range(passes):
        for document in documents:
            clean(document, rules)
    return passes * len(documents) / (clock() - started)
# clean alone also by CPU time (four passes a run): on a shared machine other processes' load
# moves wall-clock rates by a factor of two between turns, CPU time much less
print(json.dumps([speed(cases, {runs})["median"], statistics.median(clean_rate() for _ in range({runs})),
                  statistics.median(clean_rate(time.process_time, 4) for _ in range({runs}))]))
"""


def interleaved(baseline: Path, rounds: int, runs: int = 3) -> dict[str, object]:
    """Items/s of ``baseline``'s tree and of this one, measured in turns: extract+clean, and clean alone."""
    rates: dict[str, list[list[float]]] = {"baseline": [], "this": []}
    for _ in range(rounds):
        for name, tree in (("baseline", baseline), ("this", ROOT)):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run([sys.executable, "-c", _SPEED.format(runs=runs)], cwd=tree, env=env,
                                  capture_output=True, text=True, check=True)
            rates[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: dict[str, object] = {"baseline": str(baseline), "rounds": rounds, "runs_per_round": runs, "all": rates}
    for name in rates:
        out[f"{name}_items_per_s"] = round(statistics.median(r[0] for r in rates[name]), 1)
        out[f"{name}_clean_only_items_per_s"] = round(statistics.median(r[1] for r in rates[name]), 1)
        out[f"{name}_clean_only_cpu_items_per_s"] = round(statistics.median(r[2] for r in rates[name]), 1)
    return out


def learning_sweep(ks: tuple[int, ...] = (2, 3, 4), window: int = 50) -> dict[int, list[dict[str, object]]]:
    """What learned boilerplate would learn on the labelled dedup corpus for each K.

    Per source, items in publication order, the last ``window`` of them; a paragraph
    is learned when it stands in >= K different stories (the corpus's story labels
    stand in for dedup clusters). Read the list: anything that is not boilerplate
    there is real text that K would have stripped.
    """
    from tests import dedup_corpus as corpus

    by_source: dict[str, list] = {}
    for item in corpus.load():
        by_source.setdefault(item.source, []).append(item)
    sightings: dict[tuple[str, str], dict[str, str]] = {}  # (source, key) -> story -> paragraph
    for source, items in by_source.items():
        for item in sorted(items, key=lambda i: i.published)[-window:]:
            for paragraph in item.paragraphs:
                sightings.setdefault((source, paragraph_fingerprint(paragraph)), {})[item.story] = paragraph
    return {
        k: [{"source": source, "stories": len(stories), "paragraph": next(iter(stories.values()))}
            for (source, _), stories in sorted(sightings.items()) if len(stories) >= k]
        for k in ks
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed passes over the set (median reported)")
    parser.add_argument("--show-failures", action="store_true", help="print each lost sentence and left boilerplate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=Path, help="another checkout: compare extract+clean speed, in turns")
    parser.add_argument("--rounds", type=int, default=5, help="turns of the --baseline comparison")
    args = parser.parse_args(argv)

    cases = load_cases()
    outcomes = [run_case(c) for c in cases]
    groups: dict[str, list[Outcome]] = {"all": outcomes}
    for kind in ("entry", "page"):
        groups[kind] = [o for o in outcomes if o.case.kind == kind]
    for half in ("tuned", "held-out"):
        groups[half] = [o for o in outcomes if o.case.half == half]
    scores = {name: score(group) for name, group in groups.items()}
    rates = {"all": speed(cases, args.runs)}
    for kind in ("entry", "page"):
        rates[kind] = speed([c for c in cases if c.kind == kind], args.runs)

    print(f"{'set':<9} {'cases':>5} {'removed':>16} {'kept':>16} {'items/s':>8}")
    for name, s in scores.items():
        rate = f"{rates[name]['median']:>8.1f}" if name in rates else f"{'':>8}"
        print(f"{name:<9} {s['cases']:>5} {s['removed_pct']:>6.2f}% {s['removed']:>3}/{s['remove']:<4}"
              f" {s['kept_pct']:>6.2f}% {s['kept']:>3}/{s['keep']:<4} {rate}")
    # the choices behind extract.py: how to read feed fragments, and what extraction
    # alone (no rules) removes from pages and entries
    # "other dropped": paragraphs of the entry's plain block text that no label calls
    # boilerplate and that are missing from the clean text (list items, captions, or
    # unlabelled chrome: read the printed list before calling them losses)
    variants: dict[str, dict[str, object]] = {}
    no_rules = ExtractConfig(builtin_rules=False)
    entries = [c for c in cases if c.kind == "entry"]
    for strategy in FRAGMENT_STRATEGIES:
        for label, cfg in (("rules", None), ("no rules", no_rules)):
            outcomes_ = [run_case(c, cfg, strategy) for c in entries]
            dropped = [d for o in outcomes_ for d in other_dropped(o)]
            variants[f"entry {strategy}, {label}"] = {
                **score(outcomes_), "other_dropped": len(dropped), "other_dropped_text": dropped,
                "items_per_s": speed(entries, args.runs, strategy)["median"] if cfg is None else None,
            }
    variants["page, no rules"] = score([run_case(c, no_rules) for c in cases if c.kind == "page"])
    # trafilatura's fallback extractors (readability, jusText), off by default: what they change
    fallbacks = ExtractConfig(trafilatura_fallbacks=True)
    for kind in ("page", "entry"):
        chosen = [c for c in cases if c.kind == kind]
        variants[f"{kind}, trafilatura fallbacks"] = {
            **score([run_case(c, fallbacks) for c in chosen]), "items_per_s": speed(chosen, args.runs, cfg=fallbacks)["median"],
        }
    print()
    print(f"{'variant':<28} {'removed':>16} {'kept':>16} {'other dropped':>13} {'items/s':>8}")
    for name, s in variants.items():
        rate = f"{s['items_per_s']:>8.1f}" if s.get("items_per_s") else f"{'':>8}"
        other = f"{s['other_dropped']:>13}" if "other_dropped" in s else f"{'':>13}"
        print(f"{name:<28} {s['removed_pct']:>6.2f}% {s['removed']:>3}/{s['remove']:<4}"
              f" {s['kept_pct']:>6.2f}% {s['kept']:>3}/{s['keep']:<4} {other} {rate}")
        if args.show_failures:
            for text in s.get("other_dropped_text", ()):
                print(f"      other dropped: {text[:100]}")
    print()
    inputs_used: dict[str, int] = {}
    for o in outcomes:
        inputs_used[o.document.input_kind] = inputs_used.get(o.document.input_kind, 0) + 1
    print(f"inputs used: {inputs_used}")
    failures = [o for o in outcomes if o.missing or o.left]
    for o in failures:
        print(f"  {o.case.id}: {len(o.missing)} lost, {len(o.left)} left")
        if args.show_failures:
            for k in o.missing:
                print(f"      lost: {k[:110]}")
            for r in o.left:
                print(f"      left: {r[:110]}")

    compared = None
    if args.baseline:
        compared = interleaved(args.baseline.resolve(), args.rounds)
        print()
        print(f"in turns ({args.rounds} rounds, medians), baseline {args.baseline} / this tree:"
              f" extract+clean {compared['baseline_items_per_s']} / {compared['this_items_per_s']} items/s,"
              f" clean alone {compared['baseline_clean_only_items_per_s']} / {compared['this_clean_only_items_per_s']}"
              f" items/s (by CPU time {compared['baseline_clean_only_cpu_items_per_s']} /"
              f" {compared['this_clean_only_cpu_items_per_s']})")

    sweep = learning_sweep()
    print()
    print("learned boilerplate on fixtures/dedup (window 50), paragraphs learned per K:")
    for k, learned in sweep.items():
        print(f"  K={k}: {len(learned)}")
        for row in learned:
            print(f"      {row['source']:<18} {row['stories']} stories  {str(row['paragraph'])[:80]}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}",
        "scores": scores, "speed_items_per_s": rates, "variants": variants, "compared_with_baseline": compared,
        "learning_sweep": {str(k): v for k, v in sweep.items()}, "inputs": inputs_used,
        "failures": {o.case.id: {"lost": list(o.missing), "left": list(o.left)} for o in failures},
    }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
