"""The dedup corpus through the real pipeline, its noisy variants, baselines and scores.

``run_pipeline`` runs ``ingest --once`` over fixtures/dedup (tests/dedup_corpus.py) on a
fresh SQLite store and reads the clusters back; ``noisy`` dresses the corpus like real
republished pages (site chrome, captions, related headlines, copies cut short);
``baseline_*`` are the GUID/URL, exact-title and raw-MinHash baselines; ``score`` gives
pairwise and B-cubed precision/recall/F1, recall per relation and the hard-negative
figure. Used by tests/test_dedup.py and by ``python -m bench.dedup_quality``, which
prints them (bench imports tests, never the other way round).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ingest.text import normalize_words
from tests.conftest import once_in_process, write_config_file
from tests.dedup_corpus import Item, feeds_by_source, rss

# Relations whose recall the acceptance targets cover (docs/facts.md#what-republishers-change).
EDITED = ("exact", "boilerplate", "reheadline", "para_edit", "update")


# ---------------------------------------------------------------------------- running


def run_pipeline(
    items: Sequence[Item], workdir: Path, *, dedup: Mapping[str, Any] | None = None, clean: bool = True,
    texts: dict[str, str] | None = None,
) -> dict[str, str]:
    """Run ``ingest --once`` over ``items`` (one feed per source); item id -> cluster label.

    ``texts``, when given, receives each item's stored (clean) text, in store order.
    """
    from ingest.config import load as load_config
    from ingest.store import Store

    workdir.mkdir(parents=True, exist_ok=True)
    feeds = workdir / "feeds"
    feeds.mkdir(exist_ok=True)
    # one worker: sources are processed in a fixed order, so runs are repeatable
    sections: dict[str, Any] = {"fetch": {"concurrency": 1}, "daemon": {"workers": 1, "processes": 1}}
    if not clean:
        # the baseline without cleaning: no built-in rules, nothing learned
        sections["extract"] = {"builtin_rules": False, "boilerplate_min_count": 1000000}
    if dedup:
        sections["dedup"] = dict(dedup)
    sources = []
    for source, members in feeds_by_source(items).items():
        path = feeds / f"{source}.xml"
        path.write_text(rss(source, members, f"https://{source}.example/"), encoding="utf-8")
        sources.append({"name": source, "url": str(path)})
    config_path = write_config_file(workdir, store_url=f"sqlite:///{workdir / 'store.db'}", sources=sources,
                                    **sections)
    once_in_process(config_path)
    config = load_config(config_path)
    by_key = {(i.source, i.guid): i.id for i in items}
    with Store.open(config.store.url) as store:
        stored = store.items()
    labels = {by_key[(row.source, row.guid)]: f"c{row.cluster_id}" for row in stored}
    if texts is not None:
        texts.update((by_key[(row.source, row.guid)], row.text) for row in stored)
    missing = {i.id for i in items} - set(labels)
    if missing:
        raise RuntimeError(f"items not stored: {sorted(missing)[:5]}")
    return labels


def baseline_url(items: Iterable[Item]) -> dict[str, str]:
    """Miniflux: an entry is a duplicate when its GUID or URL was seen (union of both)."""
    return _union(items, lambda i: (("guid", i.source, i.guid), ("url", i.url)))


def baseline_title(items: Iterable[Item]) -> dict[str, str]:
    """Inoreader-style duplicate filter: identical normalised title."""
    return _union(items, lambda i: (("title", " ".join(normalize_words(i.title))),))


def baseline_minhash(items: Sequence[Item], threshold: float | None = None) -> dict[str, str]:
    """Textbook MinHash dedup on the raw feed text: same shingles, signature and LSH bands
    as ingest, a candidate joins the cluster of its most similar match when the
    signatures' estimated Jaccard reaches the same threshold; no cleaning, no
    containment, no paragraph evidence. Items arrive in the pipeline's order (by source)."""
    from ingest import dedup
    from ingest.config import DedupConfig

    cfg = DedupConfig()
    scheme = dedup.scheme_for(cfg)
    limit = cfg.threshold if threshold is None else threshold
    index: dict[int, list[str]] = defaultdict(list)
    signatures: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for source, members in feeds_by_source(items).items():
        for item in members:
            shingle_set = dedup.shingles(item.text, cfg.shingle_size)
            values = dedup.signature_of(shingle_set, cfg.num_perm, cfg.seed)
            signature = values.astype("<u4").tobytes()
            keys = dedup.band_keys(values, scheme.rows)
            seen = {other for k in keys for other in index[k]}
            scored = [(dedup.estimated_jaccard(signature, signatures[o]), o) for o in seen]
            best = max(scored, default=(0.0, ""))
            labels[item.id] = labels[best[1]] if best[0] >= limit else item.id
            signatures[item.id] = signature
            for k in keys:
                index[k].append(item.id)
    return labels


def _union(items: Iterable[Item], keys_of) -> dict[str, str]:  # type: ignore[no-untyped-def]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    owner: dict[object, str] = {}
    for item in items:
        find(item.id)
        for key in keys_of(item):
            if key in owner:
                parent[find(item.id)] = find(owner[key])
            else:
                owner[key] = item.id
    return {i: find(i) for i in parent}


# ---------------------------------------------------------------------------- noise

# Site chrome as real republishers wrap a copy in it (docs/facts.md#what-republishers-change: navigation, captions,
# related links and truncation at different points dilute the overlap of real copies).
_NAV = ("Home | World | Business | Sport | Opinion | Video | Podcasts",
        "News  Politics  Economy  Tech  Culture  Weather  Subscribe",
        "Latest  Local  National  International  Markets  Lifestyle")
_FOOTERS = ("Follow {s} on Facebook, X and Instagram for the latest updates from around the world.",
            "{s} is an independent news site. Tips and corrections: newsroom@{s}.example",
            "Get the {s} app for breaking news alerts, live blogs and the morning briefing.")


_BIOS = (
    "About the author: the {s} newsroom covers politics, business, science and sport from bureaus in twelve "
    "cities, and welcomes tips and corrections from readers at any time of day.",
    "{s} has been independent since its founding by a group of local reporters; it is funded by its readers "
    "and accepts no money from political parties, and its editors can be reached through the contact page.",
    "Our journalism at {s} depends on subscribers. For less than the price of a coffee a week you get every "
    "story, the archive, the puzzles and an ad-free app, and you can cancel whenever you like.",
)
_AGENCY_NOTE = (
    "The news agency receives financial support from several private foundations for its coverage of climate, "
    "health and local government; the agency is solely responsible for all content."
)


def noisy(items: Sequence[Item], seed: int = 7, harsh: bool = False) -> list[Item]:
    """The corpus as republishers deliver it: site chrome, captions, related headlines, cut-offs.

    Per source, a fixed navigation line and footer (learnable boilerplate); per item, a
    block of 3-5 headlines of unrelated stories and a photo caption (not learnable), and
    copies other than teasers cut after 60-100% of their paragraphs. ``harsh`` goes
    further, towards the real copies of docs/facts.md#real-copies: 6-10 headlines, a per-site author
    bio and a "Recommended" block quoting the opening paragraph of another story (body
    length, so it looks like article text), copies cut after 30-100%, and 2% of words
    changed (house style, typos). Deterministic.
    """
    import random
    from dataclasses import replace

    rng = random.Random(seed)
    originals = [i for i in items if i.relation == "original"]
    out = []
    for item in items:
        site = random.Random(f"{seed}:{item.source}")
        nav, footer = site.choice(_NAV), site.choice(_FOOTERS).format(s=item.source)
        paragraphs = item.paragraphs
        low = 0.3 if harsh else 0.6
        if item.relation not in ("original", "teaser") and len(paragraphs) > 3:
            paragraphs = paragraphs[: max(2 if harsh else 3, round(len(paragraphs) * rng.uniform(low, 1.0)))]
        if harsh:
            paragraphs = [_typos(p, rng, 0.02) for p in paragraphs]
        others = [o for o in rng.sample(originals, 14) if o.event != item.event]
        related = [o.title for o in others[: rng.randint(6, 10) if harsh else rng.randint(3, 5)]]
        words = item.title.split()
        caption = f"{' '.join(words[: rng.randint(4, 8)])} (Photo: {item.source} / file)"
        body = [nav, caption, *paragraphs, f"More from {item.source}", *related]
        if harsh:
            # a bio of the site's own wording, the same paragraph on a third of the sites
            # (like a news agency's funding note), and another story's opening paragraph
            body += [site.choice(_BIOS).format(s=item.source)]
            if site.random() < 1 / 3:
                body.append(_AGENCY_NOTE)
            body += ["Recommended", others[-1].paragraphs[0]]
        out.append(replace(item, text="\n\n".join([*body, footer])))
    return out


def _typos(paragraph: str, rng, rate: float) -> str:  # type: ignore[no-untyped-def]
    words = paragraph.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = words[i][::-1] if len(words[i]) > 3 else words[i] + "s"
    return " ".join(words)


# ---------------------------------------------------------------------------- scoring


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def score(items: Sequence[Item], labels: Mapping[str, str]) -> dict[str, Any]:
    """Pairwise and B-cubed scores, per-relation recall and hard-negative precision."""
    out: dict[str, Any] = {}
    for name, chosen in (("all", items), ("no_paraphrase", [i for i in items if i.relation != "paraphrase"])):
        tp = fp = fn = 0
        for a, b in combinations(chosen, 2):
            same, merged = a.story == b.story, labels[a.id] == labels[b.id]
            tp += same and merged
            fp += merged and not same
            fn += same and not merged
        out[name] = {**_prf(tp, fp, fn), "bcubed_f1": _bcubed(chosen, labels)}
    relation_pairs: dict[str, list[bool]] = defaultdict(list)
    by_story: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_story[item.story].append(item)
    for item in items:
        if item.relation == "original":
            continue
        for other in by_story[item.story]:
            # a copy's recall is measured against the original and the other copies;
            # pairs with a paraphrase count only under "paraphrase"
            if other.id != item.id and (item.relation == "paraphrase" or other.relation != "paraphrase"):
                relation_pairs[item.relation].append(labels[item.id] == labels[other.id])
    out["relations"] = {
        rel: {"pairs": len(v), "recall": round(sum(v) / len(v), 4)} for rel, v in sorted(relation_pairs.items())
    }
    edited = [m for rel in EDITED for m in relation_pairs.get(rel, [])]
    out["relations"]["edited (all but teaser, paraphrase)"] = {
        "pairs": len(edited), "recall": round(sum(edited) / len(edited), 4) if edited else 1.0,
    }
    negatives = [
        labels[a.id] != labels[b.id]
        for a, b in combinations(items, 2) if a.event == b.event and a.story != b.story
    ]
    out["hard_negatives"] = {
        "pairs": len(negatives), "merged": len(negatives) - sum(negatives),
        "precision": round(sum(negatives) / len(negatives), 4) if negatives else 1.0,
    }
    return out


def _bcubed(items: Sequence[Item], labels: Mapping[str, str]) -> float:
    clusters: dict[str, list[Item]] = defaultdict(list)
    stories: dict[str, int] = defaultdict(int)
    for item in items:
        clusters[labels[item.id]].append(item)
        stories[item.story] += 1
    p = r = 0.0
    for item in items:
        together = sum(1 for o in clusters[labels[item.id]] if o.story == item.story)
        p += together / len(clusters[labels[item.id]])
        r += together / stories[item.story]
    p, r = p / len(items), r / len(items)
    return round(2 * p * r / (p + r), 4) if p + r else 0.0
