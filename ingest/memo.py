"""A least-recently-used cache bounded by entries and by the size of its keys.

``functools.lru_cache`` bounds entries only, so what it holds grows with its inputs:
dedup's caches of decoded features and shingled texts held 254 MB and 147 MB with
the 19 KB texts of the full-text hostile case (bench/cache_memory.py), against about
1 MB for news-sized texts. ``memo(entries, size)`` also evicts until the summed
``len()`` of the cached keys is at most ``size``, so long inputs take fewer places.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import wraps
from typing import Callable, Hashable, Sized, TypeVar

R = TypeVar("R")


def memo(entries: int, size: int) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Cache a function of a sized first argument (bytes or str) and hashable others."""

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        cache: OrderedDict[tuple[Hashable, ...], R] = OrderedDict()
        held = 0
        lock = threading.Lock()

        @wraps(fn)
        def cached(first: Sized, *rest: Hashable) -> R:
            nonlocal held
            key = (first, *rest)
            with lock:
                if key in cache:
                    cache.move_to_end(key)
                    return cache[key]
            value = fn(first, *rest)
            cost = len(first)
            if cost > size:  # never cached: it alone is over the bound
                return value
            with lock:
                if key not in cache:
                    cache[key] = value
                    held += cost
                    while len(cache) > entries or held > size:
                        old, _ = cache.popitem(last=False)
                        held -= len(old[0])  # type: ignore[arg-type]
            return value

        def cache_clear() -> None:
            nonlocal held
            with lock:
                cache.clear()
                held = 0

        def cache_info() -> tuple[int, int]:
            """(entries, summed key size) held now."""
            with lock:
                return len(cache), held

        cached.cache_clear = cache_clear  # type: ignore[attr-defined]
        cached.cache_info = cache_info  # type: ignore[attr-defined]
        return cached

    return wrap
