"""Cleaning on real data: real disclaimers on real articles, through the real stages.

Reads ../shared/realcopies (never copied into the repository): each real boilerplate
line of disclaimers.txt glued onto real corpus texts the way it stands on its own
site's pages, plus the corpus items' own in-situ disclaimer strings, run through
``ingest.extract.extract`` (a feed entry whose content is the article HTML) and
``ingest.clean.clean`` with the built-in rules. Definitions (article sentence and
paragraph, glue modes, when a line counts as removed) are in tests/realdata.py.

Per split: disclaimers removed (glued and in situ), article sentences and paragraphs
kept, and false removals (article paragraphs lost from texts with nothing glued on).
On ``tune`` also a leave-sites-out estimate: sites in ``realdata.FOLDS`` folds by a
hash, each fold measured on its own sites with the rules that only ever took out lines
of that fold's sites left out (tests/realdata.py, ``leave_sites_out``), and again with
the word-list terms that only such lines hold left out too (a stricter, lower figure);
and removal per class of line (``realdata.line_class``, by the line's words), in full
and left out.
Prints tables and writes bench/results/real_cleaning.json (figures only, no text).
Tune rules on ``tune`` only (the leave-sites-out figure is the estimate to trust);
quote ``check``.

    python -m bench.real_cleaning [--split check|tune|all] [--show-failures] [--no-folds]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from tests import realdata

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "real_cleaning.json"


def measure(shared: Path, split: str) -> dict[str, float | int]:
    """Cleaning figures for ``split`` of the real copies under ``shared`` (see tests/realdata.py)."""
    return realdata.measure(shared, split)


def _row(label: str, f: dict[str, float | int]) -> str:
    return (f"{label:<8} {100 * f['removal_rate']:>6.2f}% {f['disclaimers_removed']:>4}/{f['disclaimers_total']:<4}"
            f" {f['glued_removed']:>5}/{f['glued_total']:<5} {f['in_situ_removed']:>4}/{f['in_situ_total']:<4}"
            f" {100 * f['sentence_keep_rate']:>7.2f}% {f['sentences_kept']:>5}/{f['sentences_total']:<5}"
            f" {100 * f['paragraph_keep_rate']:>7.2f}% {f['paragraphs_kept']:>5}/{f['paragraphs_total']:<5}"
            f" {100 * f['shared_sentence_keep_rate']:>7.2f}% {f['shared_sentences_kept']:>4}/{f['shared_sentences_total']:<4}"
            f" {f['false_removals']:>10}")


def folds(data: realdata.Data, split: str, show: bool) -> dict[str, object]:
    """The leave-sites-out figures of ``split``, rules only and rules and terms: per fold, pooled, per class (printed)."""
    out: dict[str, object] = {}
    full = realdata.by_class(realdata.runs(data, split))
    classes: dict[str, dict[str, int]] = {name: {"removed": removed, "total": total}
                                          for name, (removed, total) in full.items()}
    for label, terms in (("rules", False), ("rules and terms", True)):
        found = realdata.leave_sites_out(data, split, terms)
        pooled = [run for fold in found for run in fold["runs"]]
        part: dict[str, object] = {"folds": [], "pooled": realdata.score(pooled)}
        print(f"\nleave sites out ({split}, {realdata.FOLDS} folds by site hash; {label} that only the fold's own"
              f" sites' lines support taken out)")
        for fold in found:
            figures = realdata.score(fold["runs"])
            part["folds"].append({"fold": fold["fold"], "sites": fold["sites"], "dropped_rules": fold["dropped_rules"],
                                  "dropped_terms": fold["dropped_terms"], **figures})
            print(_row(f"fold {fold['fold']}", figures) + f"  sites {fold['sites']}, rules out: "
                  + (", ".join(fold["dropped_rules"]) or "none")
                  + (f"; {len(fold['dropped_terms'])} terms out" if terms else ""))
        print(_row("pooled", part["pooled"]))
        out[label.replace(" ", "_")] = part
        for name, (removed, _total) in realdata.by_class(pooled).items():
            classes[name][f"removed_{label.replace(' ', '_')}_left_out"] = removed
        if show and not terms:
            print("\nleft with the fold's sites left out (rules):")
            _show(pooled)
    out["classes"] = classes
    print(f"\n{'class of line':<26} {'all rules':>14} {'rules left out':>16} {'and terms':>16}")
    for name, c in sorted(classes.items(), key=lambda kv: kv[1].get("removed_rules_left_out", 0) / kv[1]["total"]):
        cells = [c["removed"], c.get("removed_rules_left_out", 0), c.get("removed_rules_and_terms_left_out", 0)]
        print(f"{name:<26}" + "".join(f" {100 * n / c['total']:>6.1f}% {n:>3}/{c['total']:<3}" for n in cells))
    return out


def _show(found: list[realdata.Run]) -> None:
    for run in found:
        if run.kind != "bare" and not run.removed:
            where = f"{run.item.site} ({run.mode or 'in situ'})"
            print(f"  left      [{where}] {run.line[:110]!r}")
    for run in found:
        if run.kind in ("bare", "glued") and run.lost_paragraphs:
            rules = sorted({r.rule for r in run.document.removals})
            glued = f" +{run.line[:40]!r}" if run.line else ""
            for paragraph in run.lost_paragraphs:
                print(f"  lost      [{run.item.site}{glued}; {', '.join(rules)}] {paragraph[:110]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "check", "all"), default=None,
                        help="one split (default: tune and check, each on its own)")
    parser.add_argument("--show-failures", action="store_true",
                        help="print each disclaimer left in and each article paragraph lost")
    parser.add_argument("--no-folds", action="store_true", help="skip the leave-sites-out estimate")
    parser.add_argument("--shared", type=Path, default=realdata.SHARED)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if not realdata.available(args.shared):
        print(f"real_cleaning: {realdata.directory(args.shared)} not found: nothing measured")
        return 0
    data = realdata.load(args.shared)
    splits = (args.split,) if args.split else realdata.SPLITS
    results: dict[str, dict[str, float | int]] = {}
    header = (f"{'split':<8} {'removed':>16} {'glued':>12} {'in situ':>10} {'sentences kept':>20}"
              f" {'paragraphs kept':>20} {'shared kept':>18} {'false rem.':>10}")
    print(header + f" {'s':>5}")
    for split in splits:
        started = time.perf_counter()
        found = realdata.runs(data, split)
        figures = realdata.score(found)
        figures["seconds"] = round(time.perf_counter() - started, 2)
        results[split] = figures
        print(_row(split, figures) + f" {figures['seconds']:>5.1f}")
        if args.show_failures:
            _show(found)
    left_out = {} if args.no_folds else {
        split: folds(data, split, args.show_failures) for split in splits if split == "tune"}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}",
        "hosts_per_line": realdata.HOSTS_PER_LINE, "min_sentence_words": realdata.MIN_SENTENCE_WORDS,
        "splits": results, "folds": realdata.FOLDS, "leave_sites_out": left_out,
    }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
