"""ingest.worker: ``run_once`` and the Worker's claims, in-process against loopback feeds.

Per-host concurrency and per-host delay hold across a run's polling threads (each poll
is claimed under the host's limits), and ``due_only`` polls only what is due while a
plain run polls everything. Several workers on one store (leases, fencing):
tests/test_fleet.py; ``--once --due`` through the CLI: tests/test_cli.py.
"""

from __future__ import annotations

import time
from datetime import timedelta

from .conftest import T0
from .loopback import rss


def test_per_host_concurrency_holds_under_the_thread_pool(server, pipeline):
    """Six sources on one host, six workers: never more than 2 requests in flight there."""

    def slow(h):
        # the server is slow on purpose (this is the test): while two answers are pending,
        # a third request would overlap them if the limit did not hold
        time.sleep(0.6)
        h.reply(200, rss([]), {"Content-Type": "application/rss+xml"})

    sources = []
    for n in range(6):
        server.route(f"/f{n}", slow)
        sources.append({"name": f"s{n}", "url": server.url(f"/f{n}")})
    p = pipeline(sources, fetch={"per_host_concurrency": 2, "concurrency": 8}, daemon={"workers": 6})
    report = p.run()
    assert not report.failed
    assert len(server.hits()) == 6
    assert server.max_in_flight == 2  # 2, not 1: the limit allows parallelism and holds it


def test_per_host_delay_spaces_requests_under_the_thread_pool(server, pipeline):
    """Five sources on one host, five workers, per_host_delay 0.25 s: starts spread over >= 1 s."""
    for n in range(5):
        server.respond(f"/f{n}", rss([]), headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": f"s{n}", "url": server.url(f"/f{n}")} for n in range(5)],
                 fetch={"per_host_concurrency": 5, "per_host_delay": 0.25}, daemon={"workers": 5})
    assert not p.run().failed
    starts = sorted(r.at for r in server.hits())
    # spacing is enforced at the client; arrival times at the server jitter a little on a busy machine
    assert starts[-1] - starts[0] >= 4 * 0.25 * 0.8
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.25 / 3


def test_due_only_respects_next_poll_at_and_once_does_not(server, pipeline):
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 900}])
    p.run()
    p.now = T0 + timedelta(seconds=60)
    assert p.run(due_only=True).sources == []  # not due for 900 s
    assert len(server.hits("/feed")) == 1
    p.run()  # --once: every source, due or not
    assert len(server.hits("/feed")) == 2
    p.now = T0 + timedelta(seconds=60 + 901)
    assert len(p.run(due_only=True).sources) == 1
    assert len(server.hits("/feed")) == 3
