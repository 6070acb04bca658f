"""The claim path at web scale, without fetching: 100,000 sources, N claimer processes.

``python -m bench.fleet sim`` and ``python -m bench.fleet catchup`` (see bench/fleet.py)
fill a fresh PostgreSQL schema with ``--sources`` source rows whose hosts are skewed
like the web's (``host_sizes``: a few hosts with thousands of feeds, a long tail of
hosts with one or two), then start claimer processes. Each claimer is one daemon's
claim loop without the fetch: ``--slots`` threads, each claims one source with the
real ``leases.claim`` (``[fetch]`` politeness at its defaults, the daemon's
``names=`` set of every source unless ``--no-names``), waits ``--poll`` seconds
(the simulated poll), then records it with the real ``leases.complete`` and a next
poll time from the real ``polling.next_delay`` (interval, 0.1 jitter, and the push of
a poll that started late by a random share of its lateness). A thread that
finds nothing waits for the next claim tick (1 s, the daemon's ``CLAIM_TICK``), as the
daemon does.

Every claim is logged: wall time, claim latency, and each claimed source's lag (the
claim's database time, the lease's ``claimed_at``, minus the ``next_poll_at`` it was claimed
with) and host size class. CPU seconds of the claimers and of their PostgreSQL
backends (found by ``application_name`` in pg_stat_activity, read from /proc) are
taken at the start and the end of the measured window.

No time is compressed: the intervals are the real 15 minutes and the politeness
delays the real 0.5 s, so the demand (sources / interval = 111 polls/s for 100k) and
each host's budget (1 / per_host_delay = 2 claims/s) are the real ones; a window of a
few minutes samples the stationary stream of a schedule whose phases are uniform over
the interval. What a short window cannot show (the next round's phases) is shown by
the ``next_poll_at`` histogram written at the end.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLAIM_TICK = 1.0  # the daemon's (ingest/daemon.py)
# Seconds between filling the store and the first source falling due (steady state):
# starting 8 claimer processes and reading 100k names took up to 10 s on the loaded
# machine, and a backlog built meanwhile would be measured as the fleet's lag.
LEAD = 20.0
APP = "fleetbench"


# ---------------------------------------------------------------------------- the population


def host_sizes(sources: int, top: int = 4000, tail_share: float = 0.6, seed: int = 1) -> list[int]:
    """Feeds per host: a Zipf head (``top`` / rank, while above 2) and a tail of hosts with 1 or 2.

    With the defaults 100,000 sources give about 31,000 in the Zipf head (4000, 2000,
    1333, ... feeds) and the rest on tens of thousands of one- and two-feed hosts,
    roughly how a large crawl's feeds spread over hosts (blog platforms and news
    groups at the head, single sites in the tail). An assumption, not a measurement.
    """
    rng = random.Random(seed)
    sizes: list[int] = []
    head, total, rank = sources * (1 - tail_share), 0, 1
    while total < head and top // rank > 2:
        sizes.append(min(top // rank, int(head) - total))
        total += sizes[-1]
        rank += 1
    while total < sources:
        sizes.append(min(rng.choice((1, 1, 2)), sources - total))
        total += sizes[-1]
    return sizes


def size_class(size: int, budget: float) -> str:
    """The label of a host of ``size`` feeds: over its politeness budget, big, small."""
    if size > budget:
        return "over budget"
    return "head (>2 feeds)" if size > 2 else "tail (1-2 feeds)"


def populate(url: str, sources: int, interval: float, overdue: tuple[float, float] | None, seed: int) -> dict[str, int]:
    """Write ``sources`` source rows and their hosts; phases uniform over the interval, or all overdue.

    ``overdue`` = (earliest, latest) seconds in the past: every ``next_poll_at`` is set back
    into that range (an outage); else uniform over the next ``interval`` seconds.
    Returns host -> feeds.
    """
    from sqlalchemy import insert, text

    from ingest.store import Store
    from ingest.store import schema as t

    rng = random.Random(seed)
    sizes = host_sizes(sources)
    hosts = {f"h{rank:05d}.example": size for rank, size in enumerate(sizes)}
    rows = []
    for host, size in hosts.items():
        for _ in range(size):
            rows.append(host)
    rng.shuffle(rows)  # ids do not follow hosts
    if overdue:  # seconds from now: in the past after an outage
        offsets = [-rng.uniform(*overdue) for _ in rows]
    else:  # from LEAD s on: the claimers are started and connected before the first is due
        offsets = [LEAD + rng.uniform(0.0, interval) for _ in rows]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    with Store.open(url) as store, store.db.engine.begin() as conn:
        # one statement over two arrays: 100k rows in seconds (row by row took 46 s)
        conn.execute(text(
            "INSERT INTO sources (name, url, config_hash, priority, consecutive_errors, error_count, poll_count,"
            " request_count, active, host, next_poll_at, last_polled_at)"
            " SELECT 's' || lpad((n - 1)::text, 6, '0'), 'http://' || h || '/feed/' || (n - 1), :hash, 0, 0, 0, 0,"
            " 0, true, h, now() + make_interval(secs => o), now() + make_interval(secs => o - :interval)"
            " FROM unnest(CAST(:hosts AS text[]), CAST(:offsets AS float8[])) WITH ORDINALITY AS u(h, o, n)"),
            {"hosts": rows, "offsets": offsets, "hash": "0" * 16, "interval": interval})
        conn.execute(insert(t.hosts), [{"host": h, "next_allowed_at": epoch} for h in hosts])
        conn.execute(text("ANALYZE sources"))
        conn.execute(text("ANALYZE hosts"))
    return hosts


# ---------------------------------------------------------------------------- one claimer


@dataclass(frozen=True)
class ClaimerArgs:
    url: str
    owner: str
    slots: int
    poll: float
    interval: float
    seconds: float
    names: bool  # pass every source's name, as the daemon does
    out: str
    seed: int


def claimer(args: ClaimerArgs) -> None:
    """One claimer process: ``slots`` threads claiming, 'polling' and completing until ``seconds`` pass."""
    from sqlalchemy import select

    from ingest.config import FetchConfig
    from ingest.models import PollRecord
    from ingest.polling import next_delay
    from ingest.store import Store, leases
    from ingest.store import schema as t

    fetch = FetchConfig()
    politeness = leases.Politeness(fetch.per_host_concurrency, fetch.per_host_delay)
    lease_seconds = 60.0
    store = Store.open(args.url)
    # a connection per slot, kept: the default pool (5 + 10 overflow) closes the overflow
    # ones on return, and the backends' CPU (read by pid) would go with them
    from sqlalchemy import create_engine

    from ingest.store import normalize_url

    store.db.engine.dispose()
    store.db.engine = create_engine(normalize_url(args.url), pool_size=args.slots + 1, max_overflow=0,
                                    pool_pre_ping=True)
    with store.db.engine.connect() as conn:
        # as the daemon: its enabled sources' names made once per config, passed as a set
        names = frozenset(conn.execute(select(t.sources.c.name)).scalars()) if args.names else None
        hosts = dict(conn.execute(select(t.sources.c.id, t.sources.c.host)).all())
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731 (PostgreSQL uses its own clock anyway)
    records: list[list[Any]] = []  # [wall, latency, [[lag, source_id], ...]]
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    errors: list[str] = []

    def slot(index: int) -> None:
        rng = random.Random(f"{args.seed}/{args.owner}/{index}")
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                got = leases.claim(store.db, owner=args.owner, limit=1, lease_seconds=lease_seconds,
                                   politeness=politeness, clock=clock, names=names)
            except Exception as exc:  # a claim that failed is a finding, not a crash
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(CLAIM_TICK)
                continue
            latency = time.perf_counter() - started
            lags = []
            for lease in got:
                due = lease.state.next_poll_at
                lags.append([(lease.claimed_at - due).total_seconds() if due else 0.0, lease.source_id])
            with lock:
                records.append([time.time(), latency, lags])
            if not got:
                time.sleep(CLAIM_TICK)
                continue
            if args.poll:
                time.sleep(args.poll)
            for lease, (lag, _) in zip(got, lags):
                # the daemon's push of a late poll (pipeline._record_success: overdue=)
                delay = next_delay(args.interval, fetch, jitter=0.1, overdue=max(0.0, lag), rng=rng)
                poll = PollRecord(at=clock(), ok=True, next_poll_in=delay, requests=1)
                leases.complete(store.db, lease, lease.source_id, poll, clock)

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(args.slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    usage = os.times()
    for record in records:
        for pair in record[2]:
            pair[1] = hosts.get(pair[1])
    Path(args.out).write_text(json.dumps({"owner": args.owner, "records": records, "errors": errors[:20],
                                          "error_count": len(errors), "cpu": usage.user + usage.system}),
                              encoding="utf-8")


# ---------------------------------------------------------------------------- measuring


def backend_cpu(url: str) -> float:
    """CPU seconds (user + system) of the PostgreSQL backends serving this benchmark's connections."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        pids = list(conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                                 {"a": APP}).scalars())
    engine.dispose()
    return sum(proc_cpu(pid) for pid in pids)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def histogram(url: str, bins: int, width: float) -> list[int]:
    """Sources by ``next_poll_at`` - now, in ``bins`` bins of ``width`` s from now (earlier in the first)."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT LEAST(:b - 1, GREATEST(0, floor(extract(epoch FROM next_poll_at - now()) / :w)))::int AS bin,"
            " count(*) FROM sources GROUP BY 1 ORDER BY 1"), {"b": bins, "w": width}).all()
    engine.dispose()
    counts = [0] * bins
    for b, n in rows:
        counts[b] = n
    return counts


def _env(ingest_root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ingest_root)}


def populate_with(ingest_root: Path, url: str, sources: int, interval: float,
                  overdue: tuple[float, float] | None, seed: int) -> dict[str, int]:
    """``populate`` in a subprocess running the ``ingest`` of ``ingest_root`` (its schema, its indexes)."""
    spec = json.dumps({"url": url, "sources": sources, "interval": interval, "overdue": overdue, "seed": seed})
    done = subprocess.run([sys.executable, __file__, "populate", spec], env=_env(ingest_root), cwd="/",
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"populate failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run_claimers(url: str, claimers: int, slots: int, poll: float, interval: float, seconds: float,
                 names: bool, work: Path, seed: int, ingest_root: Path = ROOT) -> dict[str, Any]:
    """Start ``claimers`` claimer processes on the populated store; their merged records and CPU."""
    outs, procs = [], []
    env = _env(ingest_root)
    app_url = url + f"&application_name={APP}"
    for n in range(claimers):
        out = work / f"claimer-{n}-{uuid.uuid4().hex[:6]}.json"
        outs.append(out)
        spec = json.dumps(ClaimerArgs(app_url, f"claimer{n}", slots, poll, interval, seconds, names, str(out),
                                      seed).__dict__)
        procs.append(subprocess.Popen([sys.executable, __file__, "claimer", spec], env=env, cwd=work))
    # the backends exist once every claimer has connected: sample them a moment after start
    time.sleep(min(3.0, seconds / 4))
    started, pg_before, (busy0, total0) = time.time(), backend_cpu(url), machine_cpu()
    pg_after = pg_before
    while any(p.poll() is None for p in procs):
        # read the backends' CPU before the claimers exit and their backends go
        if time.time() > started + seconds - 4 - min(3.0, seconds / 4) and pg_after == pg_before:
            pg_after, (busy1, total1), ended = backend_cpu(url), machine_cpu(), time.time()
        time.sleep(0.2)
    if pg_after == pg_before:
        pg_after, (busy1, total1), ended = backend_cpu(url), machine_cpu(), time.time()
    codes = [p.wait() for p in procs]
    merged: list[list[Any]] = []
    cpu = 0.0
    errors: list[str] = []
    for out in outs:
        data = json.loads(out.read_text(encoding="utf-8"))
        merged += data["records"]
        cpu += data["cpu"]
        errors += data["errors"]
        out.unlink()
    window = ended - started
    return {"records": merged, "claimer_cpu_s": cpu, "exit_codes": codes, "errors": errors[:10],
            "pg_cpu_share": (pg_after - pg_before) / window, "machine_busy_share": (busy1 - busy0) / (total1 - total0),
            "window_s": window}


def summarise(records: list[list[Any]], hosts: dict[str, int], budget: float, skip: float,
              seconds: float) -> dict[str, Any]:
    """Claims/s, polls claimed/s, claim latency and lag p50/p99 (overall and by host class), after ``skip`` s."""
    if not records:
        return {}
    start = min(r[0] for r in records)
    kept = [r for r in records if r[0] >= start + skip]
    span = max(1e-9, seconds - skip)
    latencies = [r[1] for r in kept]
    hit = [r[1] for r in kept if r[2]]
    lags: dict[str, list[float]] = {}
    for r in kept:
        for lag, host in r[2]:
            lags.setdefault(size_class(hosts.get(host, 1), budget), []).append(lag)
    every = [lag for values in lags.values() for lag in values]
    out = {
        "claims": len(kept), "claims_per_s": len(kept) / span, "polls_per_s": len(every) / span,
        "claim_ms_p50": 1000 * percentile(latencies, 0.5), "claim_ms_p99": 1000 * percentile(latencies, 0.99),
        "claim_hit_ms_p50": 1000 * percentile(hit, 0.5), "claim_hit_ms_p99": 1000 * percentile(hit, 0.99),
        "lag_s_p50": percentile(every, 0.5), "lag_s_p99": percentile(every, 0.99),
        "by_class": {k: {"polls": len(v), "lag_s_p50": percentile(v, 0.5), "lag_s_p99": percentile(v, 0.99)}
                     for k, v in sorted(lags.items())},
    }
    return out


def median(values: list[float]) -> float:
    """The median, nan when empty."""
    return statistics.median(values) if values else float("nan")


def main(argv: list[str]) -> int:
    """(internal) ``populate SPEC`` or ``claimer SPEC``: run with PYTHONPATH at the checkout measured."""
    command, spec = argv[0], json.loads(argv[1])
    if command == "populate":
        overdue = tuple(spec["overdue"]) if spec["overdue"] else None
        hosts = populate(spec["url"], spec["sources"], spec["interval"], overdue, spec["seed"])
        print(json.dumps(hosts))
    else:
        claimer(ClaimerArgs(**spec))
    return 0


if __name__ == "__main__":
    sys.path.pop(0)  # run as a file: bench/ itself is not a package root
    sys.exit(main(sys.argv[1:]))
