"""ingest.logs: text and JSON lines on stderr, credentials from URLs never written (also by the daemon)."""

from __future__ import annotations

import json
import logging

import pytest

from ingest.logs import redact, set_worker, setup_logging


class Captured:
    """What reached stderr (pytest's capsys), read once per call."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]):
    """stderr as the handler that setup_logging installs sees it; root logging restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield Captured(capsys)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_redact_removes_user_info_from_every_url() -> None:
    line = "fetch: HTTP 500 from http://alice:s3cret@127.0.0.1:8080/feed and https://tok@host/x?a=b"
    out = redact(line)
    assert "s3cret" not in out and "alice" not in out and "tok@" not in out
    assert "http://***@127.0.0.1:8080/feed" in out and "https://***@host/x?a=b" in out
    assert redact("no urls, user@example.org mail stays") == "no urls, user@example.org mail stays"


def test_text_lines_are_redacted(captured: Captured) -> None:
    setup_logging("info", "text")
    logging.getLogger("ingest.test").warning("polling %s", "http://bob:hunter2@127.0.0.1/feed")
    line = captured.getvalue()
    assert "hunter2" not in line and "WARNING ingest.test: polling http://***@127.0.0.1/feed" in line


def test_json_lines_carry_poll_fields_and_are_redacted(captured: Captured) -> None:
    setup_logging("debug", "json")
    logging.getLogger("ingest.daemon").info(
        "a: ok", extra={"source": "a", "event": "poll", "status": "ok", "items_new": 2, "items_updated": 0,
                        "duplicates": 1, "elapsed": 0.5},
    )
    try:
        raise ValueError("boom at http://u:pw123@127.0.0.1/")
    except ValueError:
        logging.getLogger("ingest").exception("failed")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["level"] == "info" and first["source"] == "a" and first["status"] == "ok"
    assert first["items_new"] == 2 and first["duplicates"] == 1 and first["elapsed"] == 0.5
    assert "pw123" not in second["exception"] and "***@127.0.0.1" in second["exception"]


def test_every_line_names_the_worker_once_it_is_known(captured: Captured) -> None:
    setup_logging("info", "text")
    set_worker("host-a:4711")
    logging.getLogger("ingest.daemon").info("a: ok")
    line = captured.getvalue()
    assert line.startswith("[host-a:4711] ") and "INFO ingest.daemon: a: ok" in line
    setup_logging("info", "json")  # a new setup names no worker until told
    logging.getLogger("ingest.daemon").info("before")
    set_worker("host-b:1")
    logging.getLogger("ingest.daemon").info("after")
    before, after = (json.loads(line) for line in captured.getvalue().splitlines())
    assert "worker" not in before and after["worker"] == "host-b:1"


def test_level_filters(captured: Captured) -> None:
    setup_logging("warning", "text")
    logging.getLogger("ingest").info("quiet")
    logging.getLogger("ingest").warning("loud")
    out = captured.getvalue()
    assert "quiet" not in out and "loud" in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_daemon_never_logs_a_source_password(fmt: str, write_config, server, start_daemon) -> None:
    server.respond("/feed", b"oops", status=500)
    server.respond("/moved", status=301, headers={"Location": server.url("/feed", "carol:pa55word")})
    config = write_config(store_url="sqlite:///store.db", defaults={"interval": 1}, sources={
        "secret": server.url("/feed", "alice:s3cr3t-pw"), "redirected": server.url("/moved", "dave:d4ve-pw"),
    })
    daemon = start_daemon(config, "--log-format", fmt, "--log-level", "debug")
    # both sources have failed (the redirected one through the Location that carries a password)
    daemon.wait_for(lambda: daemon.log.count("HTTP 500") >= 2 and "secret: failed" in daemon.log
                    and "redirected: failed" in daemon.log, 10, "failed polls")
    assert daemon.stop() == 0
    log = daemon.log
    for secret in ("s3cr3t-pw", "pa55word", "d4ve-pw", "alice", "carol", "dave:"):
        assert secret not in log, f"{secret!r} logged"
    assert "***@127.0.0.1" in log
    if fmt == "json":
        records = [json.loads(line) for line in log.splitlines()]
        polls = [r for r in records if r.get("event") == "poll"]
        assert polls and all(r["status"] == "error" and r["error_kind"] == "http_status" for r in polls)
