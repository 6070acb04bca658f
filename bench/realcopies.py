"""Dedup quality on real syndicated copies (../shared/realcopies), through the real pipeline.

    PYTHONPATH=. python -m bench.realcopies [--runs 5] [--json-out PATH]

Serves the labelled page openings as RSS feeds on loopback (one feed per site; link
and guid = the page URL, title as given, content = the text as HTML paragraphs),
writes a config naming only the store and the sources (fetch politeness lifted: all
feeds come from one loopback host, see tests/realcopies.py), runs ``ingest --once``
in-process on a fresh SQLite store and reads the partition back with plain SQL.
Sources are polled concurrently, so item arrival order varies: the pipeline runs
``--runs`` times and every figure is the median with its range.

Scored separately for the ``check`` split (pairs whose two items are both in check:
the figures to quote) and the ``tune`` split (what the thresholds were chosen on).
Baselines, same scoring, same run: URL/GUID only; exact title (empty titles never
match); textbook MinHash on the raw text at Jaccard 0.5 (estimated, LSH candidates);
and the decision as it was before the sentence and entity evidence (the pipeline with
``[dedup] paraphrase = false``, which switches every new signal off).

The data is never copied into the repository; when ../shared/realcopies is absent the
benchmark says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from tests import realcopies as rc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "realcopies.json"
# the decision as it was before this benchmark existed: every new signal off
TODAY = {"paraphrase": False}


def baseline_url(items: Sequence[rc.RealItem]) -> dict[str, int]:
    """Miniflux: one story when the GUID or the URL was seen before."""
    return rc.union(items, lambda i: (("url", i.url),))


def baseline_title(items: Sequence[rc.RealItem]) -> dict[str, int]:
    """FreshRSS/Inoreader style: identical normalised title (an empty title matches nothing)."""
    from ingest.text import normalize_words

    return rc.union(items, lambda i: ((" ".join(normalize_words(i.title)),) if normalize_words(i.title) else ()))


def baseline_minhash(items: Sequence[rc.RealItem], threshold: float = 0.5) -> dict[str, int]:
    """Textbook MinHash on the raw text: LSH candidates (ingest's bands), join the most similar at J >= threshold."""
    from ingest import dedup
    from ingest.config import DedupConfig

    cfg = DedupConfig()
    scheme = dedup.scheme_for(cfg)
    index: dict[int, list[int]] = defaultdict(list)
    signatures: list[bytes] = []
    labels: list[int] = []
    for n, item in enumerate(items):
        values = dedup.signature_of(dedup.shingles(item.text, cfg.shingle_size), cfg.num_perm, cfg.seed)
        signature = values.astype("<u4").tobytes()
        keys = dedup.band_keys(values, scheme.rows)
        seen = {o for k in keys for o in index[k]}
        best = max(((dedup.estimated_jaccard(signature, signatures[o]), o) for o in seen), default=(0.0, -1))
        labels.append(labels[best[1]] if best[0] >= threshold else n)
        signatures.append(signature)
        for k in keys:
            index[k].append(n)
    return {item.id: label for item, label in zip(items, labels)}


def cleaning_figures() -> dict[str, Any] | str:
    """bench.real_cleaning.measure(shared, split) per split, when that module exists."""
    try:
        from bench import real_cleaning  # type: ignore[attr-defined]
    except ImportError:
        return "not available"
    return {split: real_cleaning.measure(rc.SHARED, split) for split in rc.SPLITS}


def _flatten(scores: dict[str, Any]) -> dict[str, float]:
    """The figures of one score dict as name -> number (the rows of the table)."""
    out = {
        "pairwise P": scores["pairwise"]["precision"], "pairwise R": scores["pairwise"]["recall"],
        "pairwise F1": scores["pairwise"]["f1"], "false pairs": scores["pairwise"]["false_pairs"],
        "B-cubed P": scores["bcubed"]["precision"], "B-cubed R": scores["bcubed"]["recall"],
        "B-cubed F1": scores["bcubed"]["f1"],
    }
    for relation, found in scores["recall_by_relation"].items():
        out[f"recall {relation}"] = round(found["found"] / found["pairs"], 4) if found["pairs"] else 1.0
    out["spun items joined"] = scores["spun_items_joined"]["joined"]
    negatives = scores["hard_negatives"]
    out["hard-negative pairs merged"] = negatives["pairs_merged"]
    out["hard-negative items merged"] = negatives["items_merged"]
    return out


def _counts(scores: dict[str, Any]) -> dict[str, int]:
    """What the figures of one split are out of: true pairs, pairs per relation, spun items, hard negatives."""
    return {
        "items": scores["items"], "true pairs": scores["pairwise"]["true_pairs"],
        **{f"{r} pairs": f["pairs"] for r, f in scores["recall_by_relation"].items()},
        "spun items": scores["spun_items_joined"]["items"], "hard negatives": scores["hard_negatives"]["items"],
    }


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure over runs."""
    return {
        name: {"median": statistics.median(r[name] for r in runs), "min": min(r[name] for r in runs),
               "max": max(r[name] for r in runs)}
        for name in runs[0]
    }


def measure(items: Sequence[rc.RealItem], runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every contestant's figures per split (pipelines ``runs`` times, interleaved)."""
    pipelines = {"ingest": None, "decision before": TODAY}
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in pipelines}
    seconds: dict[str, list[float]] = {name: [] for name in pipelines}
    with tempfile.TemporaryDirectory(prefix="realcopies-") as tmp:
        for run in range(runs):
            for name, dedup in pipelines.items():
                started = time.perf_counter()
                labels = rc.run_pipeline(items, Path(tmp) / f"{name.replace(' ', '-')}-{run}", dedup=dedup)
                seconds[name].append(time.perf_counter() - started)
                per_run[name].append(labels)
                log(f"run {run + 1}/{runs} {name}: {seconds[name][-1]:.1f} s")
    fixed = {
        "URL/GUID only": baseline_url(items),
        "exact title": baseline_title(items),
        "MinHash raw J>=0.5": baseline_minhash(items),
    }
    out: dict[str, Any] = {}
    for split in rc.SPLITS:
        table: dict[str, Any] = {}
        for name, labelled in per_run.items():
            table[name] = _summary([_flatten(rc.score(items, labels, split)) for labels in labelled])
        for name, labels in fixed.items():
            table[name] = _summary([_flatten(rc.score(items, labels, split))])
        out[split] = table
        out[f"{split} counts"] = _counts(rc.score(items, fixed["URL/GUID only"], split))
    out["all items, ingest"] = _summary([_flatten(rc.score(items, labels)) for labels in per_run["ingest"]])
    out["all items, decision before"] = _summary(
        [_flatten(rc.score(items, labels)) for labels in per_run["decision before"]]
    )
    out["seconds per pipeline run"] = {name: statistics.median(s) for name, s in seconds.items()}
    return out


def _cell(figure: dict[str, float]) -> str:
    median, low, high = figure["median"], figure["min"], figure["max"]
    fmt = (lambda v: f"{v:g}") if float(median).is_integer() and float(high).is_integer() else (lambda v: f"{v:.3f}")
    return fmt(median) if low == high else f"{fmt(median)} [{fmt(low)}-{fmt(high)}]"


def print_table(results: dict[str, Any]) -> None:
    """One markdown table per contestant group: check and tune side by side."""
    names = list(results["check"])
    rows = list(results["check"][names[0]])
    header = ["metric"] + [f"{n} ({s})" for n in names for s in ("check", "tune")]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [_cell(results[s][n][row]) for n in names for s in ("check", "tune")]
        print(f"| {row} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pipeline runs per contestant (arrival order varies)")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    items = rc.load()
    if items is None:
        print(f"{rc.FOLDER} is absent: nothing to measure (the data is never copied into the repository)")
        return 0
    counts = {s: sum(1 for i in items if i.split == s) for s in rc.SPLITS}
    stories, sites = len({i.cluster for i in items}), len({i.site for i in items})
    print(f"{len(items)} items ({counts}), {stories} stories, {sites} sites")
    results = measure(items, args.runs, lambda line: print(line, file=sys.stderr))
    results["runs"] = args.runs
    results["cleaning (bench.real_cleaning)"] = cleaning_figures()
    for split in rc.SPLITS:
        print(f"{split}: " + ", ".join(f"{v} {k}" for k, v in results[f"{split} counts"].items()))
    print_table(results)
    print(f"\nall items, ingest: pairwise F1 {_cell(results['all items, ingest']['pairwise F1'])}; "
          f"decision before: {_cell(results['all items, decision before']['pairwise F1'])}")
    cleaning = results["cleaning (bench.real_cleaning)"]
    if isinstance(cleaning, dict):
        rates = ("removal_rate", "sentence_keep_rate", "paragraph_keep_rate")
        print("\n| cleaning (bench.real_cleaning) | check | tune |\n|---|---|---|")
        for rate in rates:
            print(f"| {rate.replace('_', ' ')} | {cleaning['check'].get(rate, '-')} | {cleaning['tune'].get(rate, '-')} |")
    else:
        print(f"cleaning (bench.real_cleaning): {cleaning}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out.relative_to(ROOT) if args.json_out.is_relative_to(ROOT) else args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
