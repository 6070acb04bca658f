"""RSS held by dedup's in-process caches when the texts are long (the full-text hostile case).

``features.decode`` keeps up to 2,048 decoded feature sets and ``dedup.prepare`` up to
256 shingled texts; bounded by entries only (as they were), what they hold grew with the
size of the texts; ``ingest/memo.py`` bounds their inputs' size too. This fills both with the texts of tests/test_hostile.py's linked pages (30 KB
HTML, about 19 KB of text each) and reports the RSS they add as they fill.

    python -m bench.cache_memory            # about a minute; prints the figures, writes JSON

One process, no store, no network.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from ingest import dedup, features
from ingest.config import DedupConfig
from tests.test_hostile import _page

RESULTS = Path(__file__).resolve().parent / "results" / "cache_memory.json"
DECODED = (500, 1000, 2048, 2600)
PREPARED = (128, 256, 400)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def _text(i: int) -> str:
    return "\n\n".join(re.findall(r"<p>(.*?)</p>", _page(i).decode()))


def measure() -> dict[str, Any]:
    """RSS added by each cache at several fill levels (MB)."""
    cfg = DedupConfig()
    scheme = dedup.scheme_for(cfg)
    blobs = [dedup.fingerprint(_text(i), scheme).features for i in range(max(DECODED))]
    gc.collect()
    start = _rss_mb()
    decoded: dict[int, float] = {}
    for n, blob in enumerate(blobs, 1):
        features.decode(blob)
        if n in DECODED:
            gc.collect()
            decoded[n] = round(_rss_mb() - start, 1)
    start = _rss_mb()
    prepared: dict[int, float] = {}
    for n in range(1, max(PREPARED) + 1):
        dedup.prepare(_text(n), cfg.shingle_size)
        if n in PREPARED:
            gc.collect()
            prepared[n] = round(_rss_mb() - start, 1)
    return {
        "name": "cache_memory", "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "text_chars": len(_text(0)), "feature_bytes_mean": sum(map(len, blobs)) / len(blobs),
        "decode_rss_added_mb": decoded, "prepare_rss_added_mb": prepared,
    }


def main() -> int:
    result = measure()
    for name in ("decode_rss_added_mb", "prepare_rss_added_mb"):
        print(name, ", ".join(f"{n}: +{mb:.0f} MB" for n, mb in result[name].items()))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
