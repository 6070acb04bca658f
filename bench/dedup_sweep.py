"""Parameter sweep for dedup, on the clean texts the real pipeline stored.

    PYTHONPATH=. python -m bench.dedup_sweep [--json-out PATH]

The pipeline runs once per corpus variant (as written; with site chrome and cut-offs,
see bench.dedup_quality.noisy) to get each item's stored clean text and arrival order.
Each setting is then replayed in memory with the same functions the store uses
(``dedup.fingerprint`` band keys as the index, top ``max_candidates`` by band hits plus
the canonical item of every candidate cluster, ``dedup.decide``, the earliest
policy), which is ~100x faster than re-running the pipeline. Reported per setting:
pairwise F1 without paraphrases, hard-negative precision, teaser / edited recall, LSH
candidate recall (share of true copy pairs, paraphrases excluded, that share at least
one index key) and background collisions (index candidates per lookup from other
events). Tuning is cross-checked: the best setting on the b- half is
scored on the a- half and vice versa.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

from tests.dedup_corpus import ROOT, Item, load
from tests.dedup_scoring import noisy, run_pipeline
from ingest import dedup
from ingest.config import DedupConfig
from ingest.models import Candidate

RESULTS = ROOT / "bench" / "results" / "dedup_sweep.json"


def replay(items: Sequence[Item], texts: dict[str, str], cfg: DedupConfig, rows: int) -> tuple[dict[str, str], dict]:
    """Run the dedup decisions in arrival order in memory; labels and LSH figures."""
    scheme = dedup.scheme_for(cfg, rows=rows)
    by_id = {i.id: i for i in items}
    order = [i for i in texts if i in by_id]
    index: dict[int, list[int]] = defaultdict(list)
    cluster_of: list[int] = []
    canonical: dict[int, int] = {}
    fps = []
    collisions = 0
    for n, item_id in enumerate(order):
        item = by_id[item_id]
        fp = dedup.fingerprint(texts[item_id], scheme)
        hits: Counter[int] = Counter()
        for key in set(fp.band_keys) | set(fp.probe_keys):
            hits.update(index.get(key, ()))
        collisions += sum(1 for j in hits if by_id[order[j]].event != item.event)
        chosen = [j for j, _ in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.max_candidates]]
        chosen += [canonical[cluster_of[j]] for j in chosen if canonical[cluster_of[j]] not in chosen]
        exact = [j for j in range(n) if fps[j].content_hash == fp.content_hash and j not in chosen]
        candidates = [
            Candidate(
                item_id=j, cluster_id=cluster_of[j], title=by_id[order[j]].title, text=texts[order[j]],
                is_canonical=canonical[cluster_of[j]] == j, band_hits=hits.get(j, 0),
                same_content=fps[j].content_hash == fp.content_hash, features=fps[j].features,
                signature=fps[j].signature, shingle_count=fps[j].shingle_count,
            )
            for j in dict.fromkeys(exact + chosen)
        ]
        decision = dedup.decide(
            texts[item_id], candidates, cfg, shingle_count=fp.shingle_count, features=fp.features,
            signature=fp.signature,
        )
        cluster = decision.cluster_id if decision.kind == "duplicate" and decision.cluster_id is not None else n
        cluster_of.append(cluster)
        fps.append(fp)
        key = lambda j: dedup.canonical_key(  # noqa: E731
            dedup.Member(j, by_id[order[j]].published, None, 0, len(texts[order[j]])), cfg.canonical
        )
        canonical[cluster] = n if cluster == n else min((canonical[cluster], n), key=key)
        for lone in decision.absorb:  # as Store._absorb: only a cluster that still has one item
            members = [j for j, c in enumerate(cluster_of) if c == lone]
            if lone != cluster and len(members) == 1:
                cluster_of[members[0]] = cluster
                del canonical[lone]
                canonical[cluster] = min((canonical[cluster], members[0]), key=key)
        for k in set(fp.band_keys):
            index[k].append(n)
    # LSH candidate recall over true copy pairs (paraphrases apart)
    keys = [set(fp.band_keys) for fp in fps]
    proposed = total = para_proposed = para_total = 0
    for a, b in combinations(range(len(order)), 2):
        ia, ib = by_id[order[a]], by_id[order[b]]
        if ia.story != ib.story:
            continue
        shared = bool(keys[a] & keys[b])
        if "paraphrase" in (ia.relation, ib.relation):
            para_total += 1
            para_proposed += shared
        else:
            total += 1
            proposed += shared
    labels = {order[j]: f"c{cluster_of[j]}" for j in range(len(order))}
    lsh = {
        "candidate_recall": round(proposed / total, 4) if total else 1.0,
        "candidate_recall_paraphrase": round(para_proposed / para_total, 4) if para_total else 1.0,
        "background_per_lookup": round(collisions / len(order), 3),
    }
    return labels, lsh


def summary(items: Sequence[Item], labels: dict[str, str], lsh: dict) -> dict[str, float]:
    """The few numbers a sweep row shows."""
    from tests.dedup_scoring import score

    s = score(items, labels)
    return {
        "precision": s["no_paraphrase"]["precision"], "recall": s["no_paraphrase"]["recall"],
        "f1": s["no_paraphrase"]["f1"], "f1_all": s["all"]["f1"], "hardneg": s["hard_negatives"]["precision"],
        "teaser": s["relations"].get("teaser", {}).get("recall", 1.0),
        "edited": s["relations"]["edited (all but teaser, paraphrase)"]["recall"],
        "paraphrase": s["relations"].get("paraphrase", {}).get("recall", 0.0), **lsh,
    }


def settings() -> list[tuple[str, dict[str, Any], int]]:
    """The grid: one axis at a time around the defaults, then a few joint variants."""
    base = DedupConfig()
    grid: list[tuple[str, dict[str, Any], int]] = [("defaults", {}, dedup.LSH_ROWS)]
    for size in (2, 4, 5):
        grid.append((f"shingle_size={size}", {"shingle_size": size}, dedup.LSH_ROWS))
    for t in (0.2, 0.25, 0.35, 0.4, 0.5):
        grid.append((f"threshold={t}", {"threshold": t}, dedup.LSH_ROWS))
    for c in (0.5, 0.6, 0.7, 0.9):
        grid.append((f"containment={c}", {"containment": c}, dedup.LSH_ROWS))
    for p in (0, 1, 3):
        grid.append((f"min_passages={p}", {"min_passages": p}, dedup.LSH_ROWS))
    for share in (0.4, 0.5, 0.7, 0.8):
        grid.append((f"passage_share={share}", {"passage_share": share}, dedup.LSH_ROWS))
    for perm in (64, 256):
        grid.append((f"num_perm={perm}", {"num_perm": perm}, dedup.LSH_ROWS))
    for rows in (2, 3, 5, 8):
        grid.append((f"rows={rows} (bands={base.num_perm // rows})", {}, rows))
    for m in (5, 50):
        grid.append((f"max_candidates={m}", {"max_candidates": m}, dedup.LSH_ROWS))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    parser.add_argument("--only", metavar="PREFIX", help="only settings whose label starts with PREFIX")
    args = parser.parse_args()
    corpus = load()
    variants = {"corpus": corpus, "noisy": noisy(corpus), "harsh": noisy(corpus, harsh=True)}
    texts: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="dedup-sweep-") as tmp:
        for name, items in variants.items():
            texts[name] = {}
            run_pipeline(items, Path(tmp) / name, texts=texts[name])
    rows_out = []
    cols = ["precision", "recall", "f1", "f1_all", "hardneg", "teaser", "edited", "paraphrase", "candidate_recall", "background_per_lookup"]
    print("| setting | variant | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for label, overrides, rows in settings():
        if args.only and not label.startswith(args.only):
            continue
        cfg = replace(DedupConfig(), **overrides)
        for name, items in variants.items():
            labels, lsh = replay(items, texts[name], cfg, rows)
            result = summary(items, labels, lsh)
            rows_out.append({"setting": label, "variant": name, **result})
            print(f"| {label} | {name} | " + " | ".join(f"{result[c]:.3f}" for c in cols) + " |", flush=True)
    cross = cross_check(variants, texts)
    print("\ncross-check (tune on one writer's half over all variants, score on the other's):")
    for row in cross:
        print(f"  tuned on {row['tuned_on']}: best {row['best']}")
        print(f"    F1 there {row['f1_tuned']}")
        print(f"    F1 on {row['scored_on']} {row['f1_other']}, min(precision, hard negatives) {row['precision_other']}")
        print(f"    defaults on {row['scored_on']}: F1 {row['f1_defaults_other']}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"rows": rows_out, "cross_check": cross}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out.relative_to(ROOT) if args.json_out.is_relative_to(ROOT) else args.json_out}")


def cross_check(variants: dict[str, Sequence[Item]], texts: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Pick threshold/containment/passages on one writer's half, report them on the other's.

    A setting qualifies when precision and hard-negative precision are >= 0.99 on every
    variant of the tuning half; among those, the best mean F1 over the variants wins
    (ties go to the stricter threshold).
    """
    grid = [
        {"threshold": t, "containment": c, "min_passages": m, "passage_share": ps}
        for t in (0.2, 0.3, 0.4) for c in (0.6, 0.8) for m in (0, 2) for ps in (0.5, 0.6, 0.7)
    ]

    def run(half: str, params: dict[str, Any]) -> dict[str, dict[str, float]]:
        out = {}
        for name, items in variants.items():
            chosen = [i for i in items if i.story.startswith(half + "-")]
            labels, lsh = replay(chosen, texts[name], replace(DedupConfig(), **params), dedup.LSH_ROWS)
            out[name] = summary(chosen, labels, lsh)
        return out

    def rank(result: dict[str, dict[str, float]], params: dict[str, Any]) -> tuple:
        safe = all(min(r["precision"], r["hardneg"]) >= 0.99 for r in result.values())
        return (safe, sum(r["f1"] for r in result.values()) / len(result), params["threshold"])

    out = []
    for tune, other in (("b", "a"), ("a", "b")):
        best_result, best = max(((run(tune, p), p) for p in grid), key=lambda rp: rank(*rp))
        there, defaults = run(other, best), run(other, {})
        out.append({
            "tuned_on": tune, "scored_on": other, "best": best,
            "f1_tuned": {k: v["f1"] for k, v in best_result.items()},
            "f1_other": {k: v["f1"] for k, v in there.items()},
            "precision_other": {k: min(v["precision"], v["hardneg"]) for k, v in there.items()},
            "f1_defaults_other": {k: v["f1"] for k, v in defaults.items()},
        })
    return out


if __name__ == "__main__":
    main()
