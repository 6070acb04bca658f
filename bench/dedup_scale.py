"""Dedup cost at 10k, 100k and 1M stored items: per-item lookup + decide time and peak memory.

    PYTHONPATH=. python -m bench.dedup_scale [--sizes 10000 100000 1000000] [--probes 200]

For each size a SQLite store is filled once (cached under --cache; a fresh subprocess)
with synthetic news-like items: Zipf-distributed vocabulary (the commonest ranks
are real function words), two paragraphs of 22-34 words (a feed summary's length), so unrelated items share
common word triples the way real news does and background collisions in the LSH
index are realistic. Each text also names 2-4 capitalised entities drawn (Zipf
again, its head left out) from 200,000 made-up names, and a three-digit figure: a few names recur all
year, as real ones do, so the rare-entity keys meet background items too. Items are
published one every 31.5 s (a million a year: 10k items are 3.6 days, about one
dedup window), the probes just after the newest. Each item is fingerprinted with
exactly the scheme ``ingest`` uses (bands of the MinHash, lead bands, paragraph keys,
rare-entity bands in their time bucket, sentence keys, stored features; the batched
MinHash below is checked value-for-value against ``dedup.fingerprint``), and rows are
written in bulk (executemany in one transaction, keys sorted, secondary indexes built
afterwards; PRAGMAs relaxed for the fill only).

Then, in another fresh subprocess per size, the real read path is timed for each
probe (best of three runs; the first run is reported too): ``dedup.fingerprint`` + ``Store.candidates`` (the store's LSH lookup) +
``dedup.decide``. Half the probes are copies of stored items (a navigation line and
a share prompt added, the last sentence cut), half are new unrelated texts. Reported:
median and p95 time per probe, copies found, candidates per unrelated lookup
(background collisions), and the probe process's peak RSS.
"""
# (docs/dedup.md: the cost of the decision at scale)

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import uuid
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from tests.dedup_corpus import ROOT

RESULTS = ROOT / "bench" / "results" / "dedup_scale.json"
REPEAT = 3
FUNCTION_WORDS = (
    "the of and to a in said on for that is with was at by as from his it be has have are an he will "
    "after were its who their but not had been this more than they over into also up about two year "
    "new one last which when would government police people three first million percent could"
).split()


# ---------------------------------------------------------------------------- synthetic news


class Writer:
    """Zipf-distributed news-like paragraphs; deterministic per seed."""

    def __init__(self, seed: int, vocabulary: int = 40_000, exponent: float = 1.07) -> None:
        rng = np.random.default_rng(12345)  # the vocabulary is the same for every writer
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"] + ["an", "er", "in", "or", "el", "ust"]
        words = list(FUNCTION_WORDS)
        seen = set(words)
        while len(words) < vocabulary:
            word = "".join(rng.choice(syllables, size=int(rng.integers(2, 5))))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = np.array(words, dtype=object)
        p = 1.0 / np.arange(1, vocabulary + 1) ** exponent
        self.cdf = np.cumsum(p / p.sum())
        self.rng = np.random.default_rng(seed)

    def texts(self, count: int, seed: int | None = None) -> list[list[list[str]]]:
        """``count`` texts, each two paragraphs (lists of words) of 22-34 words: feed-summary length.

        Each text names 2-4 entities (capitalised, mid-paragraph) and one three-digit figure.
        """
        rng = self.rng if seed is None else np.random.default_rng(seed)
        lengths = rng.integers(22, 35, size=(count, 2))
        ids = np.searchsorted(self.cdf, rng.random(int(lengths.sum())))
        ids = np.minimum(ids, len(self.words) - 1)
        flat = self.words[ids].tolist()
        names = rng.integers(2, 5, size=count)
        drawn = np.minimum(np.searchsorted(_NAMES_CDF, rng.random(int(names.sum()))), NAMES - 1)
        figures = rng.integers(100, 1000, size=count)
        out, pos, at = [], 0, 0
        for i, row in enumerate(lengths):
            paragraphs = []
            for n in row:
                paragraphs.append(flat[pos : pos + n])
                pos += n
            for k in range(int(names[i])):  # after the first word of a paragraph, never opening it
                paragraph = paragraphs[k % 2]
                paragraph.insert(1 + (k * 7) % (len(paragraph) - 1), _name(int(drawn[at])))
                at += 1
            paragraphs[1].insert(3, str(int(figures[i])))
            out.append(paragraphs)
        return out


# Made-up entity names: Zipf-distributed from rank NAMES_FROM on, so some recur through
# a whole year of items. The head of the distribution is left out: names that frequent
# in English at large are common words to wordfreq, not rare entities (the commonest
# name here is in ~1 % of items, a year's most-named rare entity in real news).
NAMES = 200_000
NAMES_FROM = 300
_NAMES_CDF = np.cumsum(p := 1.0 / np.arange(NAMES_FROM, NAMES_FROM + NAMES) ** 1.0) / p.sum()


def _name(rank: int) -> str:
    letters = "bcdfghklmnprstvz"
    vowels = "aeiou"
    word, n = "", rank + 1
    while n:
        n, r = divmod(n, 80)
        word += letters[r % 16] + vowels[r // 16]
    return "Q" + word + "ix"  # unknown to wordfreq: a rare entity


def render(paragraphs: list[list[str]]) -> str:
    return "\n\n".join(" ".join(p)[0].upper() + " ".join(p)[1:] + "." for p in paragraphs)


# One item published every INTERVAL seconds from START: a million a year.
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
INTERVAL = 365 * 86400 / 1_000_000


def published(item_id: int) -> datetime:
    return START + timedelta(seconds=item_id * INTERVAL)


# ---------------------------------------------------------------------------- batched fingerprints


def fingerprints(
    texts: list[list[list[str]]], scheme, whens: list[datetime],  # type: ignore[no-untyped-def]
) -> list[tuple[str, int, bytes, tuple[int, ...], bytes]]:
    """(content_hash, shingle_count, signature, keys, features) as dedup.fingerprint makes them, MinHash batched.

    Lower-cased, the texts' words are normalize_words(render(t)); the MinHash step is
    datasketch's affine32 update_batch applied to many documents at once; features and
    the entity and sentence keys come from dedup's own functions (all checked against
    dedup.fingerprint by ``check``).
    """
    from ingest import features as feats, paraphrase
    import xxhash
    from datasketch.minhash import _fmix

    from ingest import dedup

    def minhash(sets: list[frozenset[str]], num_perm: int) -> np.ndarray:
        template = dedup._template(num_perm, scheme.seed)
        a, b = template.permutations
        hashes, offsets = [], []
        for shingle_set in sets:
            offsets.append(len(hashes))
            hashes.extend(xxhash.xxh32_intdigest(s.encode("utf-8")) for s in shingle_set)
        hv = _fmix(np.array(hashes, dtype=np.uint32).reshape(-1, 1), 32)
        phv = hv * a + b
        return np.minimum.reduceat(phv, offsets, axis=0).astype(np.uint32)

    words = [[w.lower() for p in t for w in p] for t in texts]
    sets = [dedup._shingles_of(w, scheme.shingle_size) for w in words]
    values = minhash(sets, scheme.num_perm)
    leads = [w[: scheme.lead_words] for w in words]  # every paragraph is body (>= 22 words)
    lead_values = minhash([dedup._shingles_of(lead, scheme.shingle_size) for lead in leads], scheme.lead_perm)
    out = []
    for i, text in enumerate(texts):
        keys = dedup.band_keys(values[i], scheme.rows)
        keys += dedup.band_keys(lead_values[i], scheme.rows, first_band=scheme.bands)
        keys += tuple(dict.fromkeys(
            dedup._paragraph_index_key([w.lower() for w in p]) for p in text[: scheme.paragraph_keys]
        ))
        extracted = feats.extract(render(text))
        keys += paraphrase.entity_keys(extracted.entities, paraphrase.buckets(whens[i], scheme)[0], scheme)
        keys += paraphrase.sentence_keys(extracted, scheme)
        content_hash = hashlib.sha256(" ".join(words[i]).encode("utf-8")).hexdigest()
        out.append((content_hash, len(sets[i]), values[i].astype("<u4").tobytes(), keys, feats.encode(extracted)))
    return out


def check(texts: list[list[list[str]]], scheme) -> None:  # type: ignore[no-untyped-def]
    """The batched fingerprints equal dedup.fingerprint's, value for value."""
    from ingest import dedup

    whens = [published(i + 1) for i in range(len(texts))]
    for text, when, made in zip(texts, whens, fingerprints(texts, scheme, whens)):
        real = dedup.fingerprint(render(text), scheme, when)
        content_hash, count, signature, keys, features = made
        assert (real.content_hash, real.shingle_count, real.signature, real.band_keys, real.features) == (
            content_hash, count, signature, keys, features)


# ---------------------------------------------------------------------------- fill (subprocess)


def _batch(job: tuple[int, int]) -> tuple[list, list]:
    from ingest import dedup
    from ingest.config import DedupConfig

    start, count = job
    texts = _WRITER.texts(count, seed=start)
    return texts, fingerprints(texts, dedup.scheme_for(DedupConfig()), [published(start + i + 1) for i in range(count)])


_WRITER = Writer(seed=1)


def _write(conn, start, texts, prints, source_id, now, keys_all, ids_all, filled) -> int:  # type: ignore[no-untyped-def]
    clusters, items = [], []
    for offset, (text, (content_hash, count, signature, keys, features)) in enumerate(zip(texts, prints)):
        item_id = start + offset + 1
        when = published(item_id).replace(tzinfo=None).isoformat(sep=" ")
        clusters.append((item_id, item_id, 1, now, now, str(uuid.UUID(int=item_id))))  # uid: unique per cluster
        items.append((item_id, source_id, f"s{item_id}", f"s{item_id}", f"Story {item_id}", when, when, now,
                      f"e{item_id}", "content", render(text), content_hash, count, signature, item_id, "none", 0.0,
                      0.0, "synthetic", features))
        unique = sorted(set(keys))
        keys_all[filled : filled + len(unique)] = unique
        ids_all[filled : filled + len(unique)] = item_id
        filled += len(unique)
    conn.executemany(
        "INSERT INTO clusters (id, canonical_item_id, size, created_at, updated_at, uid) VALUES (?,?,?,?,?,?)", clusters
    )
    conn.executemany(
        "INSERT INTO items (id, source_id, identity, guid, title, published_at, fetched_at, updated_at, entry_hash, "
        "input_kind, text, content_hash, shingle_count, signature, cluster_id, decision_method, decision_similarity, "
        "decision_containment, decision_reason, features) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", items,
    )
    return filled


def fill(db: Path, size: int) -> dict[str, float]:
    """Create a store at ``db`` holding ``size`` synthetic items, bulk-written."""
    from ingest import dedup
    from ingest.config import DedupConfig, SourceConfig
    from ingest.store import Store
    from ingest.store import schema as t

    started = time.perf_counter()
    scheme = dedup.scheme_for(DedupConfig())
    check(_WRITER.texts(50, seed=-1 % 2**32), scheme)
    db.unlink(missing_ok=True)
    with Store.open(f"sqlite:///{db}", scheme.as_dict()) as store:
        store.sync_sources([SourceConfig(name="synthetic", url="https://synthetic.example/feed")])
        source_id = store.source_states()[0].source_id
    conn = sqlite3.connect(db, isolation_level=None)
    # bench only: no journal, no fsync, a big cache while filling
    conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-400000; PRAGMA foreign_keys=OFF;")
    indexes = [(ix.name, ix.table.name, [c.name for c in ix.columns]) for tab in (t.items, t.lsh_bands) for ix in tab.indexes]
    for name, _table, _cols in indexes:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    now = datetime(2025, 1, 1, tzinfo=timezone.utc).isoformat(sep=" ")
    keys_all = np.empty(size * 72, dtype=np.int64)  # ~42 word keys, 16 entity bands, a few sentences
    ids_all = np.empty(size * 72, dtype=np.int32)
    filled = 0
    conn.execute("BEGIN")
    batch = 5000
    starts = list(range(0, size, batch))
    # fingerprints in two worker processes (the MinHash is the CPU cost); rows written here
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        pending = []
        for start in starts:  # at most a few batches in flight: memory stays bounded
            pending.append((start, pool.submit(_batch, (start, min(batch, size - start)))))
            if len(pending) >= 4:
                done_start, future = pending.pop(0)
                filled = _write(conn, done_start, *future.result(), source_id, now, keys_all, ids_all, filled)
        for done_start, future in pending:
            filled = _write(conn, done_start, *future.result(), source_id, now, keys_all, ids_all, filled)
    fingerprinted = time.perf_counter() - started
    order = np.lexsort((ids_all[:filled], keys_all[:filled]))  # key order: appends to the WITHOUT ROWID tree
    keys_sorted, ids_sorted = keys_all[:filled][order], ids_all[:filled][order]
    del keys_all, ids_all, order
    step = 1_000_000
    for start in range(0, filled, step):
        conn.executemany(
            "INSERT INTO lsh_bands (key, item_id) VALUES (?, ?)",
            zip(keys_sorted[start : start + step].tolist(), ids_sorted[start : start + step].tolist()),
        )
    for name, table, cols in indexes:
        conn.execute(f"CREATE INDEX {name} ON {table} ({', '.join(cols)})")
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return {"items": size, "index_rows": int(filled), "fill_seconds": round(time.perf_counter() - started, 1),
            "fingerprint_seconds": round(fingerprinted, 1), "db_mb": round(db.stat().st_size / 2**20, 1)}


# ---------------------------------------------------------------------------- probe (subprocess)


def probe(db: Path, size: int, count: int) -> dict[str, float]:
    """Time fingerprint + Store.candidates + decide for ``count`` probes; peak RSS of this process."""
    from ingest import dedup
    from ingest.config import DedupConfig
    from ingest.store import Store

    cfg = DedupConfig()
    scheme = dedup.scheme_for(cfg)
    rng = np.random.default_rng(99)
    copies_of = sorted(int(i) for i in rng.choice(np.arange(1, size + 1), size=count // 2 + 10, replace=False))
    with sqlite3.connect(db) as raw:
        stored = {i: raw.execute("SELECT text, cluster_id FROM items WHERE id = ?", (i,)).fetchone() for i in copies_of}
    probes: list[tuple[str, int | None]] = []
    for i in copies_of:
        text, cluster = stored[i]
        body = text.rsplit(" ", 6)[0]  # the last words cut, as a truncating republisher does
        probes.append((f"Home | News | Sport\n\n{body}\n\nShare this article on social media", cluster))
    fresh = Writer(seed=777).texts(count // 2 + 10)
    probes += [(render(t), None) for t in fresh]
    when = published(size + 1)  # the probes come after the newest stored item
    order = rng.permutation(len(probes))
    probes = [probes[i] for i in order]
    warmup, probes = probes[:20], probes[20 : 20 + count]
    times, first, kinds, background, found, copies = [], [], [], [], 0, 0
    with Store.open(f"sqlite:///{db}", scheme.as_dict()) as store:
        for text, _ in warmup:
            store.candidates(dedup.fingerprint(text, scheme, when), None, cfg.max_candidates)
        for text, cluster in probes:
            # each probe runs REPEAT times: the first run is reported apart, the best run
            # is the figure (the machine is shared, and scheduling noise is +-25% or worse)
            runs = []
            for _ in range(REPEAT):
                started = time.perf_counter()
                fp = dedup.fingerprint(text, scheme, when)
                candidates = store.candidates(fp, None, cfg.max_candidates)
                decision = dedup.decide(
                    text, candidates, cfg, shingle_count=fp.shingle_count, features=fp.features,
                    when=when, signature=fp.signature,
                )
                runs.append(time.perf_counter() - started)
            first.append(runs[0])
            times.append(min(runs))
            kinds.append(cluster is not None)
            if cluster is None:
                background.append(len(candidates))
            else:
                copies += 1
                found += decision.kind == "duplicate" and decision.cluster_id == cluster
    copy_times = sorted(t for t, k in zip(times, kinds) if k)
    new_times = sorted(t for t, k in zip(times, kinds) if not k)
    times.sort()
    first.sort()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "items": size, "probes": len(times),
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))] * 1000, 2),
        "median_new_ms": round(statistics.median(new_times) * 1000, 2),
        "median_copy_ms": round(statistics.median(copy_times) * 1000, 2),
        "first_run_median_ms": round(statistics.median(first) * 1000, 2),
        "first_run_p95_ms": round(first[int(0.95 * (len(first) - 1))] * 1000, 2),
        "copies_found": f"{found}/{copies}",
        "background_candidates_per_lookup": round(sum(background) / len(background), 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


# ---------------------------------------------------------------------------- main


def _child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.dedup_scale", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "ingest-dedup-scale")
    parser.add_argument("--refill", action="store_true", help="fill the stores again even if cached")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    parser.add_argument("--fill", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        print(json.dumps(fill(args.db, args.fill)))
        return
    if args.probe:
        print(json.dumps(probe(args.db, args.probe, args.probes)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        db = args.cache / f"store-{size}.db"
        stamp = db.with_suffix(".json")
        if args.refill or not stamp.exists() or not db.exists():
            stamp.write_text(json.dumps(_child("--fill", str(size), "--db", str(db))))
        filled = json.loads(stamp.read_text())
        measured = _child("--probe", str(size), "--db", str(db), "--probes", str(args.probes))
        rows.append({**filled, **measured})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print()
    print("| stored items | index rows | fill (s) | store (MB) | lookup+decide median (ms) | p95 | new texts | copies | "
          "first run median / p95 | copies found | background candidates/lookup | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['items']:,} | {r['index_rows']:,} | {r['fill_seconds']} | {r['db_mb']} | {r['median_ms']} | {r['p95_ms']} | "
              f"{r['median_new_ms']} | {r['median_copy_ms']} | {r['first_run_median_ms']} / {r['first_run_p95_ms']} | "
              f"{r['copies_found']} | {r['background_candidates_per_lookup']} | {r['peak_rss_mb']} |")
    last = rows[-1]
    ratios = {"lookup_median_ratio": round(last["median_ms"] / base["median_ms"], 2),
              "lookup_p95_ratio": round(last["p95_ms"] / base["p95_ms"], 2),
              "peak_rss_ratio": round(last["peak_rss_mb"] / base["peak_rss_mb"], 2)}
    print(f"\n{last['items']:,} vs {base['items']:,}: median lookup x{ratios['lookup_median_ratio']} (target <= 1.2), "
          f"p95 x{ratios['lookup_p95_ratio']}, peak RSS x{ratios['peak_rss_ratio']} (target <= 1.3)")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"rows": rows, **ratios}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
