"""The process pool for the CPU-bound stages, and handing work to it in order.

feedparser, trafilatura and MinHash hold the GIL: threads share one core, two
processes do 1.7-1.9x one (docs/facts.md#processes-vs-threads). ``cpu_pool`` makes forked, niced
workers; ``in_order`` submits chunks of work and yields their results in order,
merging chunks that are already done into one batch so a lagging store catches up
with fewer, larger commits. ``pipeline.py`` decides what the work is.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

# Below this many sources a run stays in one process: forking workers and shipping
# bodies to them costs more than a small run's parsing and extraction.
POOL_MIN_SOURCES = 4
# Entries per task sent to the process pool, and items per store write batch: small
# enough that one big source keeps both cores busy, its first items reach the store
# early and a batch holds SQLite's write lock briefly (~30 ms); large enough that
# pickling and task overhead stay small and a commit's WAL writes are shared. On the
# 1k-item bench corpus: store cost 3.8 ms an item with one item per commit, 2.6 ms
# with 8; the whole run 7 % faster with 16 than with 8, 32 no clearly better.
CHUNK_ENTRIES = 16
# Most items one write batch takes when several chunks are ready at once.
MAX_BATCH = 64
# Niceness added to process pool workers (see _worker_init).
WORKER_NICE = 10


def cpu_pool(processes: int) -> ProcessPoolExecutor | None:
    """A process pool for parse/extract/clean/fingerprint (``processes`` 0: one per CPU), or None for 1."""
    count = processes or os.cpu_count() or 1
    if count <= 1:
        return None
    # fork: workers inherit the imported libraries (a spawned worker would spend about
    # a second importing trafilatura, datasketch and numpy). Forking is safe here
    # because the workers are started at once, before the caller starts threads.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    # the workers' collectors leave what they inherit alone (modules, rules, config), so
    # those pages stay shared with this process, as the gc docs advise before a fork;
    # this process goes on collecting as before
    gc.freeze()
    try:
        pool = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_worker_init)
        pool.submit(int).result()  # with fork, the first submit starts every worker
    finally:
        gc.unfreeze()
    return pool


def _worker_init() -> None:
    """Run in each pool worker first: yield the CPU to the process that writes the store.

    The store writer is the one serial stage; with two CPU-bound workers and the
    writer on two cores, the kernel's fair share left the writer runnable but not
    running about a third of the time (writer lock held 4.1 s for 2.9 s of its CPU per
    1k bench items). Niced workers still take every idle cycle; the run was 16 % faster.
    """
    try:
        os.nice(WORKER_NICE)
    except OSError:  # a platform or sandbox that refuses: run at normal priority
        pass


def call(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in ``executor`` (waiting for it), or here when there is none."""
    return executor.submit(fn, *args).result() if executor is not None else fn(*args)


def in_order(
    executor: Executor | None, fn: Callable[..., list[T]], calls: Iterable[tuple[Any, ...]], max_batch: int = MAX_BATCH,
) -> Iterator[list[T]]:
    """The results of ``fn(*args)`` for each of ``calls``, in order, in batches.

    Without an executor each call runs here when its batch is asked for (``calls`` is
    consumed lazily). With one, every call is submitted at once; a batch is the next
    call's results plus those of the calls after it that are already done, up to
    ``max_batch`` results. Calls not yet started are cancelled when the caller stops.
    """
    if executor is None:
        for args in calls:
            yield fn(*args)
        return
    futures: list[Future[list[T]]] = [executor.submit(fn, *args) for args in calls]
    try:
        done = 0
        while done < len(futures):
            ready = list(futures[done].result())
            done += 1
            while done < len(futures) and futures[done].done() and len(ready) < max_batch:
                ready += futures[done].result()
                done += 1
            yield ready
    finally:
        for future in futures:
            future.cancel()
