"""Dedup quality on the labelled corpus: the real pipeline against three baselines.

    PYTHONPATH=. python -m bench.dedup_quality [--json-out PATH] [--part a|b]

Renders one RSS feed per source from fixtures/dedup/*.toml into a temp dir, writes a
temp config, runs ``ingest --once`` in-process (ingest.cli.main) on a fresh SQLite
store and reads the clusters back from the store. Scores, all on pairs of items:

- pairwise precision / recall / F1 over all pairs (true pair = same story), and
  B-cubed F1 (per-item precision and recall of its cluster, averaged);
- per relation: recall of every pair (copy of that relation, another item of its
  story); paraphrases are reported apart and overall figures are given with and
  without them;
- hard negatives: pairs of items from different stories of one event; the figure is
  the share of those pairs kept apart.

Baselines, computed in the same command: GUID/URL only (Miniflux: same GUID or URL),
exact normalised title (Inoreader's duplicate filter), and textbook MinHash on the
raw feed text (same shingles, signature, LSH bands and Jaccard threshold; no
cleaning, containment or paragraph evidence). An ablation, ``ingest_uncleaned``,
runs the full pipeline with cleaning off (built-in rules off, nothing learned).

Every figure is given for the corpus as written and for a noisy variant (``noisy``:
site chrome, captions, related headlines, copies cut at 60-100%), which stands in
for real republished pages (docs/facts.md#real-copies).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from tests.dedup_corpus import ROOT, Item, load
from tests.dedup_scoring import baseline_minhash, baseline_title, baseline_url, noisy, run_pipeline, score

RESULTS = ROOT / "bench" / "results" / "dedup_quality.json"


# ---------------------------------------------------------------------------- report


def evaluate(items: Sequence[Item], *, dedup: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Scores of the pipeline and of the three baselines on ``items``."""
    with tempfile.TemporaryDirectory(prefix="dedup-quality-") as tmp:
        runs = {
            "ingest": run_pipeline(items, Path(tmp) / "ingest", dedup=dedup),
            "ingest_uncleaned": run_pipeline(items, Path(tmp) / "raw", dedup=dedup, clean=False),
        }
    runs["minhash_raw"] = baseline_minhash(items)
    runs["guid_url_only"] = baseline_url(items)
    runs["exact_title"] = baseline_title(items)
    return {name: score(items, labels) for name, labels in runs.items()}


def print_report(results: Mapping[str, Mapping[str, Any]]) -> None:
    names = list(results)
    rows: list[list[str]] = []

    def row(label: str, get) -> None:  # type: ignore[no-untyped-def]
        rows.append([label] + [f"{get(results[n]):.3f}" for n in names])

    for part, title in (("no_paraphrase", "without paraphrases"), ("all", "all items")):
        for metric in ("precision", "recall", "f1", "bcubed_f1"):
            row(f"{title}: pairwise {metric}" if metric != "bcubed_f1" else f"{title}: B-cubed F1",
                lambda r, p=part, m=metric: r[p][m])
    row("hard negatives kept apart", lambda r: r["hard_negatives"]["precision"])
    for rel in next(iter(results.values()))["relations"]:
        pairs = next(iter(results.values()))["relations"][rel]["pairs"]
        row(f"recall {rel} ({pairs} pairs)", lambda r, x=rel: r["relations"][x]["recall"])
    width = max(len(r[0]) for r in rows)
    print("| " + "metric".ljust(width) + " | " + " | ".join(names) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * (len(n) + 2) for n in names) + "|")
    for r in rows:
        print("| " + r[0].ljust(width) + " | " + " | ".join(v.rjust(len(n)) for v, n in zip(r[1:], names)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["a", "b"], help="only the a- or b- half of the corpus")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    args = parser.parse_args()
    items = load(pattern=f"{args.part}-*.toml" if args.part else "*.toml")
    print(f"{len(items)} items, {len({i.story for i in items})} stories, {len({i.source for i in items})} sources")
    out: dict[str, Any] = {"items": len(items)}
    variants = {
        "corpus": ("as written", items),
        "noisy": ("site chrome, captions, related headlines, copies cut at 60-100%", noisy(items)),
        "harsh": ("more chrome, another story's opening paragraph, copies cut at 30-100%, 2% words changed",
                  noisy(items, harsh=True)),
    }
    for name, (description, variant) in variants.items():
        print(f"\n## {name}: {description}")
        out[name] = evaluate(variant)
        print_report(out[name])
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out.relative_to(ROOT) if args.json_out.is_relative_to(ROOT) else args.json_out}")


if __name__ == "__main__":
    main()
