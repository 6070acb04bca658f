"""Kill ``ingest`` at random moments and check what it leaves: processes and store.

Used by tests/test_reliability.py and bench/crash.py. ``CorpusServer`` serves a
``tests.corpus`` corpus on loopback (optionally holding every answer until released:
a slow server without sleeps). ``spawn`` starts ``python -m ingest`` in its own
session; ``survivors`` scans /proc (no psutil) for live processes of a run, found by
the run's config path in their command line (forked pool workers keep their parent's)
or by their parent pid. ``crash_series`` kills runs with SIGKILL, checks that none of
a killed run's processes lives 3 s later, then finishes with an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.corpus import Corpus
from tests.loopback import Handler, Loopback

ROOT = Path(__file__).resolve().parent.parent
# after a kill, a run's processes must be gone within this (the acceptance bound)
GONE_WITHIN = 3.0
# seconds from spawning `python -m ingest` to its first poll (imports, store open) on
# this 2-core machine, give or take; kill moments start from it
STARTUP = 1.0


class CorpusServer(Loopback):
    """A loopback server of a corpus's feeds; ``hold()`` makes every answer wait for ``release()``."""

    def __init__(self, corpus: Corpus) -> None:
        super().__init__()
        self.corpus = corpus
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Semaphore(0)  # one release per request that arrived while held
        for path, body in corpus.documents().items():
            self.route(path, self._answer(body))

    def _answer(self, body: bytes):  # type: ignore[no-untyped-def]
        def answer(handler: Handler) -> None:
            if not self._open.is_set():
                self.waiting.release()
                self._open.wait(120)  # bounded: a test that forgets to release still ends
            handler.reply(200, body, {"Content-Type": "application/rss+xml"})
        return answer

    def base(self) -> str:
        return self.url("").rstrip("/")

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.release()
        super().close()


def write_config(directory: Path, store_url: str, corpus: Corpus, base_url: str, extra: str = "") -> Path:
    """A config of every corpus feed (no politeness delay on loopback), a unique file name."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ingest-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\n[fetch]\nper_host_delay = "0s"\nper_host_concurrency = 8\n'
        f'[defaults]\ninterval = "2s"\n[daemon]\nshutdown_timeout = "2s"\n{extra}\n' + corpus.config_sources(base_url),
        encoding="utf-8",
    )
    return path


def spawn(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """``python -m ingest -c CONFIG ARGS`` in its own session; stderr to ``log`` (else a pipe)."""
    env = {k: v for k, v in os.environ.items() if k != "INGEST_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    stderr = open(log, "ab") if log else subprocess.PIPE
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest", "-c", str(config), *args], cwd=config.parent, env=env,
            stdout=subprocess.DEVNULL if log else subprocess.PIPE, stderr=stderr, start_new_session=True,
        )
    finally:
        if log:
            stderr.close()  # type: ignore[union-attr]


def _status(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def survivors(marker: str, parent: int | None = None) -> list[int]:
    """Live (not zombie) processes whose command line holds ``marker`` or whose parent is ``parent``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            status = _status(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # gone while we looked
            continue
        if status.get("State", "").startswith(("Z", "X")):
            continue
        if marker.encode() in cmdline or (parent is not None and status.get("PPid", "").strip() == str(parent)):
            found.append(int(pid))
    return sorted(found)


def wait_gone(marker: str, parent: int | None, within: float = GONE_WITHIN) -> list[int]:
    """Wait up to ``within`` s for every process of a run to end; the ones still alive."""
    deadline = time.monotonic() + within
    while True:
        alive = survivors(marker, parent)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    """SIGKILL processes this harness started (cleanup after a failed check)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Kill:
    """One killed run: when, how it ended, what was left."""

    after: float  # seconds after start
    returncode: int | None
    items: int  # items in the store right after the kill
    left_alive: list[int]  # processes of the run alive GONE_WITHIN s after the kill
    gone_in: float  # seconds until none was left


@dataclass
class Series:
    kills: list[Kill] = field(default_factory=list)
    finished_early: int = 0  # runs that ended before their kill moment
    final_returncode: int | None = None
    final_seconds: float = 0.0
    final_stderr: str = ""


def crash_series(
    config: Path, mode: str, kills: int, rng: random.Random, total: int, log: Path, store_url: str,
) -> Series:
    """``kills`` runs (``--once`` or the daemon) killed with SIGKILL at random moments, then one uninterrupted ``--once``.

    A moment is either a random time in the start-up (imports, store open, first
    fetches: a quarter of the kills) or the moment the store reaches a random number
    of items between what it holds and ``total`` (about an even share of the rest per
    kill to come; plus up to 0.2 s): run times vary too much on a shared machine for
    a random delay alone to land mid-run.
    """
    series = Series()
    args = ("--once",) if mode == "once" else ()
    while len(series.kills) < kills:
        now_items = count_items(store_url)
        by_time = rng.random() < 0.25 or total - now_items < 20
        # about an even share of what is left per kill still to come, so kills spread over the corpus
        share = rng.uniform(0.2, 1.8) / (kills - len(series.kills) + 1)
        target = now_items + max(1, int(share * (total - now_items)))
        delay = rng.uniform(0.2, STARTUP + 0.5) if by_time else rng.uniform(0.0, 0.2)
        started = time.monotonic()
        proc = spawn(config, *args, log=log)
        if not _wait_moment(proc, store_url, None if by_time else target, delay):
            series.finished_early += 1  # done before its moment: the next run is killed instead
            if series.finished_early > 2 * kills + 5:
                raise AssertionError(f"{series.finished_early} runs ended before their kill moment")
            continue
        delay = time.monotonic() - started
        children = survivors(str(config), proc.pid)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait()
        alive = wait_gone(str(config), proc.pid)
        gone_in = round(time.monotonic() - killed_at, 3)
        series.kills.append(Kill(round(delay, 2), proc.returncode, count_items(store_url), alive, gone_in))
        kill_all(alive + [p for p in children if p in survivors(str(config))])
    started = time.monotonic()
    final = spawn(config, "--once")
    try:
        _, err = final.communicate(timeout=600)
    finally:
        if final.poll() is None:
            final.kill()
            final.wait()
    series.final_returncode = final.returncode
    series.final_stderr = err.decode("utf-8", "replace") if isinstance(err, bytes) else (err or "")
    series.final_seconds = round(time.monotonic() - started, 2)
    return series


def _wait_moment(proc: subprocess.Popen, store_url: str, target: int | None, delay: float) -> bool:
    """Wait until the store holds ``target`` items (if given), then ``delay`` s more; False if the run ended first."""
    deadline = time.monotonic() + 600
    while target is not None and count_items(store_url) < target:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"the store never reached {target} items")
        time.sleep(0.02)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        return True


def run_to_end(config: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """One uninterrupted ``ingest --once``."""
    proc = spawn(config, "--once")
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def open_store(url: str):  # type: ignore[no-untyped-def]
    """The store at ``url`` opened for reading checks."""
    from ingest.store import Store

    return Store.open(url)


_engines: dict[str, Any] = {}


def count_items(url: str) -> int:
    """How many items the store at ``url`` holds (0 before it has an items table); plain SQL."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    if url not in _engines:
        _engines[url] = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        with _engines[url].connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM items")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0


class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb and pg_ctl as the ``postgres`` user, a free port).

    For faults that need a server to go away and come back: the shared server on
    127.0.0.1:5432 is never restarted (other tests use it). ``unavailable()`` says why
    one cannot be made here (no binaries, not root, no postgres user).
    """

    def __init__(self, folder: Path) -> None:
        import glob
        import socket

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        self.bin = Path(bins[-1]).parent if bins else None
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def unavailable() -> str | None:
        """Why no private server can be made here, or None."""
        import glob
        import pwd

        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)"
        if os.geteuid() != 0:
            return "not root: cannot run initdb as the postgres user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user"
        return None

    def _as_postgres(self, *args: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def __enter__(self) -> "PrivatePostgres":
        assert self.bin is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chown(self.folder, *_postgres_ids())
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")
        self.start()
        return self

    def start(self) -> None:
        """Start the server and wait until it answers."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
                          "-w", "-o", options, "start")

    def stop(self) -> None:
        """Stop it (fast: open connections are ended)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def __exit__(self, *exc: object) -> None:
        import shutil

        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)  # its data folder (about 41 MB) goes with it


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
