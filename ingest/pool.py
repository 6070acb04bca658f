"""The process pool for the CPU-bound stages, and handing work to it in order.

feedparser, trafilatura and MinHash hold the GIL: threads share one core, two
processes do 1.7-1.9x one (docs/facts.md#processes-vs-threads). ``cpu_pool`` makes forked, niced
workers; ``in_order`` submits chunks of work and yields their results in order,
merging chunks that are already done into one batch so a lagging store catches up
with fewer, larger commits. ``pipeline.py`` decides what the work is.

Workers die with their parent: after ``kill -9`` of ``ingest --once`` (or the OOM
killer) forked workers used to move under PID 1 and wait forever, about 65 MB each
(14 left by 8 kills). Each worker asks the kernel for SIGKILL when its parent dies
(Linux ``PR_SET_PDEATHSIG``), and a thread in it also checks every
``PARENT_CHECK`` s that its parent is still the process that made it (other
platforms, and the moment between fork and prctl). Workers ignore SIGINT: Ctrl-C
reaches the whole process group, and the parent decides what an interrupt means.
``shutdown(now=True)`` terminates workers instead of waiting for them, ``abandon``
leaves them to die with a process that exits next; waits take a ``stop`` callable
and raise ``Stopped`` soon after it turns true.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
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
# Chunks of one source submitted ahead of the one the store writes (see in_order):
# enough to keep two workers busy while a batch is written, few enough that fetched
# pages waiting in memory stay bounded (AHEAD x CHUNK_ENTRIES pages).
AHEAD = 8
# Niceness added to process pool workers (see _worker_init).
WORKER_NICE = 10
# Seconds between a worker's checks that its parent is alive (the fallback to prctl),
# and between a waiting caller's checks of its stop flag: a stop is seen within this.
PARENT_CHECK = 0.5
STOP_CHECK = 0.05
# Seconds ``shutdown`` gives terminated workers to exit before it kills them.
TERMINATE_GRACE = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Stopped(Exception):
    """A wait gave up because the caller's stop flag turned true (not an error: a stop)."""


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
        # PR_SET_PDEATHSIG fires when the thread that forked the worker ends: the pool
        # must be made by a thread that outlives it (run_once's caller, the main thread)
        pool = ProcessPoolExecutor(
            max_workers=count, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
        )
        pool.submit(int).result()  # with fork, the first submit starts every worker
    finally:
        gc.unfreeze()
    return pool


def _worker_init(parent: int) -> None:
    """Run in each pool worker first: die with ``parent``, leave SIGINT to it, yield the CPU to it.

    The store writer is the one serial stage; with two CPU-bound workers and the
    writer on two cores, the kernel's fair share left the writer runnable but not
    running about a third of the time (writer lock held 4.1 s for 2.9 s of its CPU per
    1k bench items). Niced workers still take every idle cycle; the run was 16 % faster.
    """
    # Ctrl-C and a closed terminal reach the whole process group: the parent decides.
    # SIGTERM is the parent's way to end a worker (see shutdown): the default action,
    # not the handler a forked worker inherits from ``ingest --once``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    try:
        os.nice(WORKER_NICE)
    except OSError:  # a platform or sandbox that refuses: run at normal priority
        pass


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` ends: prctl where there is one, a watching thread always."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc to load: the thread below still watches
            pass
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    # a process whose parent died is re-parented (to PID 1 or a subreaper): its ppid changes
    while os.getppid() == parent:
        threading.Event().wait(PARENT_CHECK)
    os._exit(1)


def shutdown(executor: Executor | None, *, now: bool = False) -> None:
    """End a pool: after a completed run its idle workers exit at once; with ``now`` busy ones are terminated.

    ``now`` (a run that failed, or stops without its process exiting at once): drop
    queued work, terminate the workers, kill those still there after a grace. A run
    whose process exits right after (``--once`` interrupted: ``os._exit``) needs
    neither: ``abandon`` the pool and the kernel kills the workers with their parent
    (Python 3.11's pool handles workers dying under it poorly: a half-sent result
    hung the manager thread, and cancelled work makes it raise; see below).
    """
    if executor is None:
        return
    if not now:
        executor.shutdown(wait=True, cancel_futures=True)
        return
    # ProcessPoolExecutor keeps its workers in _processes (pid -> Process); Python 3.14's
    # terminate_workers() does the same, and shutdown(wait=True) would wait for busy ones
    workers = list((getattr(executor, "_processes", None) or {}).values())
    result_queue = getattr(executor, "_result_queue", None)  # shutdown() drops these references
    call_queue = getattr(executor, "_call_queue", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()
    for process in workers:
        process.join(TERMINATE_GRACE)
        if process.is_alive():
            process.kill()
            process.join(TERMINATE_GRACE)
    # A worker terminated while sending a result leaves half a message in the result
    # pipe: the pool's manager thread then waits for the rest forever, and the
    # interpreter's exit joins that thread (1 interrupted run in 9 hung). This process
    # holds the pipe's last write end (forked, never written here): closing it turns
    # the wait into end-of-file, which the manager thread handles as a broken pool.
    writer = getattr(result_queue, "_writer", None)
    if writer is not None and not any(p.is_alive() for p in workers):
        writer.close()
    # the call queue's feeder thread may be blocked writing to workers that are gone:
    # the interpreter's exit must not join it
    if call_queue is not None:
        call_queue.cancel_join_thread()


def abandon(executor: Executor | None) -> None:
    """Drop a pool's queued work and leave its workers to die with this process (which exits next)."""
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def result(future: Future[T], stop: Callable[[], bool] | None = None) -> T:
    """``future.result()``, raising ``Stopped`` within ``STOP_CHECK`` s of ``stop()`` turning true."""
    if stop is None:
        return future.result()
    while not future.done():
        if stop():
            future.cancel()
            raise Stopped()
        wait([future], timeout=STOP_CHECK, return_when=FIRST_COMPLETED)
    return future.result()


def call(executor: Executor | None, fn: Callable[..., T], *args: Any, stop: Callable[[], bool] | None = None) -> T:
    """``fn(*args)`` in ``executor`` (waiting for it, ``Stopped`` once ``stop()``), or here when there is none."""
    return result(executor.submit(fn, *args), stop) if executor is not None else fn(*args)


def in_order(
    executor: Executor | None, fn: Callable[..., list[T]], calls: Iterable[tuple[Any, ...]], max_batch: int = MAX_BATCH,
    stop: Callable[[], bool] | None = None,
) -> Iterator[list[T]]:
    """The results of ``fn(*args)`` for each of ``calls``, in order, in batches.

    Without an executor each call runs here when its batch is asked for (``calls`` is
    consumed lazily). With one, up to ``AHEAD`` calls are submitted ahead; a batch is the next
    call's results plus those of the calls after it that are already done, up to
    ``max_batch`` results. Calls not yet started are cancelled when the caller stops;
    a wait for a result raises ``Stopped`` once ``stop()`` is true.
    """
    if executor is None:
        for args in calls:
            yield fn(*args)
        return
    # At most AHEAD calls are submitted and not yet handed back: building a call's
    # arguments may fetch its pages, and a feed linking 10,000 pages held every page in
    # memory before the first result (the hostile full-text case).
    # Only the futures not yet handed back are kept: a future holds its results, and a
    # list of all of them kept every prepared item (page text included) of a feed until
    # the feed's end.
    pending = iter(calls)
    ahead: deque[Future[list[T]]] = deque()
    try:
        while True:
            while len(ahead) < AHEAD and (args := next(pending, None)) is not None:
                ahead.append(executor.submit(fn, *args))
            if not ahead:
                return
            ready = list(result(ahead.popleft(), stop))
            while ahead and ahead[0].done() and len(ready) < max_batch:
                ready += ahead.popleft().result()
            yield ready
    finally:
        for future in ahead:
            future.cancel()

