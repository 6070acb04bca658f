"""Progress of --once: a redrawn bar on a terminal, one plain line per source otherwise."""

from __future__ import annotations

import io

from ingest.models import SourceReport
from ingest.progress import Progress

from .conftest import DEMO_FEEDS


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def reports() -> list[SourceReport]:
    return [
        SourceReport("a", ok=True, items_new=3, items_updated=1, duplicates=2),
        SourceReport("b", ok=False, error="fetch: HTTP 500", error_kind="http_status"),
        SourceReport("c", ok=True, not_modified=True),
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(total=3, stream=stream)
    for report in reports():
        progress.update(report)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "ingest: [1/3] a: ok, 3 new, 1 updated, 2 duplicates",
        "ingest: [2/3] b: failed, 0 new, 0 updated, 0 duplicates",
        "ingest: [3/3] c: ok, 0 new, 0 updated, 0 duplicates (not modified)",
    ]
    assert "\r" not in stream.getvalue()


def test_bar_redrawn_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress(total=3, stream=stream, width=30)
    for report in reports():
        progress.update(report)
    progress.close()
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[##########--------------------] 1/3 sources, 4 items, 0 failed")
    assert frames[-1].startswith("[##############################] 3/3 sources, 4 items, 1 failed")
    assert stream.getvalue().endswith("\n")  # the shell prompt starts on its own line


def test_once_without_a_terminal_prints_plain_lines(write_config, cli) -> None:
    config = write_config(store_url="sqlite:///store.db", sources={"afp": DEMO_FEEDS / "afp-wire.xml"})
    result = cli("--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "ingest: [1/1] afp: ok, " in result.stderr and "\r" not in result.stderr
