"""The real syndicated copies (../shared/realcopies): loader, loopback feeds, pipeline run, scoring.

Shared by ``bench/realcopies.py`` and ``tests/test_dedup_real.py`` (tests never import
bench/). The data stays in ../shared: nothing here copies it into the repository.

- ``load()``: the labelled items (None when the folder is absent);
- ``run_pipeline(items, workdir)``: one RSS feed per site served on a loopback HTTP
  server, a config naming only the store and the sources (plus fetch politeness off),
  the real ``ingest --once`` in-process on a fresh SQLite store, and the partition read
  back with plain SQL (item id -> cluster label);
- ``score(items, labels, split)``: pairwise and B-cubed precision/recall/F1, recall per
  relation, spun items joined, hard negatives merged, for the items of one split.
"""

from __future__ import annotations

import contextlib
import html
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tests.conftest import once_in_process, write_config_file
from tests.loopback import Item, Loopback, rss

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FOLDER = SHARED / "realcopies"
RELATIONS = ("original", "copy", "edited", "teaser", "spun")
SPLITS = ("check", "tune")


@dataclass(frozen=True)
class RealItem:
    """One labelled page opening."""

    id: str
    cluster: str  # story id; "neg-..." is a hard negative, alone in its story
    relation: str  # original | copy | edited | teaser | spun | different-article
    url: str
    site: str
    title: str
    text: str
    split: str  # tune | check

    @property
    def negative(self) -> bool:
        return self.relation == "different-article"

    @property
    def paragraphs(self) -> list[str]:
        """The text's non-empty lines (the pages' paragraphs, as the corpus gives them)."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]


def load(folder: Path = FOLDER) -> list[RealItem] | None:
    """Every item of ``folder/corpus.jsonl`` in file order, or None when the folder is absent."""
    path = folder / "corpus.jsonl"
    if not path.is_file():
        return None
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                raw = json.loads(line)
                items.append(RealItem(
                    id=raw["id"], cluster=raw["cluster"], relation=raw["relation"], url=raw["url"],
                    site=raw["site"], title=raw.get("title") or "", text=raw["text"], split=raw["split"],
                ))
    return items


# ---------------------------------------------------------------------------- feeds and pipeline


def feed(site: str, items: Iterable[RealItem]) -> bytes:
    """An RSS 2.0 feed of one site: link and guid are the page URL, content the text as HTML paragraphs."""
    entries = [Item(guid=i.url, link=i.url, title=i.title,
                    content="".join(f"<p>{html.escape(p)}</p>" for p in i.paragraphs)) for i in items]
    return rss(entries, title=site, link=f"https://{site}/")


def by_site(items: Iterable[RealItem]) -> dict[str, list[RealItem]]:
    """Items grouped by site, sites sorted."""
    grouped: dict[str, list[RealItem]] = defaultdict(list)
    for item in items:
        grouped[item.site].append(item)
    return dict(sorted(grouped.items()))


# Politeness is not a dedup setting: all feeds come from one loopback host, so the
# per-host delay and concurrency limits are lifted to the run's overall concurrency.
POLITENESS = {"per_host_delay": 0, "per_host_concurrency": 8}


def run_pipeline(
    items: Sequence[RealItem], workdir: Path, *, dedup: Mapping[str, Any] | None = None,
    texts: dict[str, str] | None = None,
) -> dict[str, int]:
    """Serve ``items`` as feeds on loopback, run ``ingest --once`` on a fresh store: item id -> cluster id.

    ``dedup`` adds a [dedup] section (ablations and the decision as it was); without it
    the config names only the store and the sources (and lifts fetch politeness).
    ``texts``, when given, receives each item's stored (clean) text.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store.db"
    if store.exists():
        raise RuntimeError(f"{store} exists: the run needs a fresh store")
    groups = by_site(items)
    with Loopback() as server:
        sources = []
        for n, (site, members) in enumerate(groups.items()):
            path = f"/feeds/{n}.xml"
            server.respond(path, feed(site, members), headers={"Content-Type": "application/rss+xml"})
            sources.append({"name": site, "url": server.url(path)})
        sections: dict[str, Any] = {"fetch": POLITENESS, **({"dedup": dict(dedup)} if dedup else {})}
        once_in_process(write_config_file(workdir, store_url=f"sqlite:///{store}", sources=sources, **sections))
    return read_partition(store, items, texts)


def read_partition(
    store: Path, items: Sequence[RealItem], texts: dict[str, str] | None = None
) -> dict[str, int]:
    """Item id -> cluster id, read back from the store with plain SQL (the URL identifies an item)."""
    by_url = {i.url: i.id for i in items}
    with contextlib.closing(sqlite3.connect(store)) as conn:
        rows = conn.execute("SELECT url, cluster_id, text FROM items").fetchall()
    labels = {by_url[url]: cluster for url, cluster, _ in rows}
    if texts is not None:
        texts.update((by_url[url], text) for url, _, text in rows)
    missing = set(by_url.values()) - set(labels)
    if missing:
        raise RuntimeError(f"{len(missing)} items not stored, e.g. {sorted(missing)[:3]}")
    return labels


# ---------------------------------------------------------------------------- scoring


def _prf(hits: int, predicted: int, true: int) -> dict[str, float]:
    precision = hits / predicted if predicted else 1.0
    recall = hits / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def score(items: Sequence[RealItem], labels: Mapping[str, Any], split: str | None = None) -> dict[str, Any]:
    """Scores of a partition (item id -> label) on the items of ``split`` (None: all items).

    Pairs count only when both items are in the split. A hard-negative pair is a
    predicted pair with a hard negative in it; a spun item is joined when its predicted
    cluster holds another member of its story.
    """
    chosen = [i for i in items if split is None or i.split == split]
    predicted: dict[Any, list[RealItem]] = defaultdict(list)
    for item in chosen:
        predicted[labels[item.id]].append(item)
    story_size = Counter(i.cluster for i in chosen)
    true_pairs = sum(n * (n - 1) // 2 for n in story_size.values())
    predicted_pairs = hits = negative_pairs = 0
    for members in predicted.values():
        for a, b in combinations(members, 2):
            predicted_pairs += 1
            if a.cluster == b.cluster:
                hits += 1
            if a.negative or b.negative:
                negative_pairs += 1
    # B-cubed: each item's precision and recall of its predicted cluster, averaged
    b_precision = b_recall = 0.0
    for members in predicted.values():
        same = Counter(i.cluster for i in members)
        for item in members:
            b_precision += same[item.cluster] / len(members)
            b_recall += same[item.cluster] / story_size[item.cluster]
    n = len(chosen) or 1
    bp, br = b_precision / n, b_recall / n
    by_relation: dict[str, dict[str, int]] = {}
    for relation in RELATIONS:
        found = total = 0
        for item in chosen:
            if item.relation != relation:
                continue
            for other in chosen:
                if other is not item and other.cluster == item.cluster:
                    total += 1
                    found += labels[other.id] == labels[item.id]
        by_relation[relation] = {"found": found, "pairs": total}
    cluster_size = Counter(labels[i.id] for i in chosen)
    joined = lambda item: any(  # noqa: E731
        o is not item and o.cluster == item.cluster and labels[o.id] == labels[item.id] for o in chosen
    )
    spun = [i for i in chosen if i.relation == "spun"]
    negatives = [i for i in chosen if i.negative]
    return {
        "items": len(chosen),
        "pairwise": {**_prf(hits, predicted_pairs, true_pairs), "true_pairs": true_pairs,
                     "predicted_pairs": predicted_pairs, "false_pairs": predicted_pairs - hits},
        "bcubed": {"precision": round(bp, 4), "recall": round(br, 4),
                   "f1": round(2 * bp * br / (bp + br), 4) if bp + br else 0.0},
        "recall_by_relation": by_relation,
        "spun_items_joined": {"joined": sum(1 for i in spun if joined(i)), "items": len(spun)},
        "hard_negatives": {
            "items": len(negatives),
            "pairs_merged": negative_pairs,
            "items_merged": sum(1 for i in negatives if cluster_size[labels[i.id]] > 1),
        },
    }


# ---------------------------------------------------------------------------- baselines


def union(items: Sequence[RealItem], keys: Any) -> dict[str, int]:
    """Items sharing any key of ``keys(item)`` in one cluster (union-find); item id -> label."""
    parent = list(range(len(items)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[Any, int] = {}
    for n, item in enumerate(items):
        for key in keys(item):
            if key in first:
                parent[find(n)] = find(first[key])
            else:
                first[key] = n
    return {item.id: find(n) for n, item in enumerate(items)}
