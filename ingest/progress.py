"""Progress of a one-shot run: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from ingest.models import SourceReport


class Progress:
    """Counts finished sources and items; redraws one line when ``stream`` is a TTY."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self.done = 0
        self.items = 0
        self.failed = 0
        self.started = time.monotonic()
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def start(self, total: int) -> None:
        """The number of sources the run will poll, once known (``--due`` leaves some out)."""
        self.total = total

    def update(self, report: SourceReport) -> None:
        self.done += 1
        self.items += report.items_new + report.items_updated
        self.failed += 0 if report.ok else 1
        if self.tty:
            filled = int(self.width * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(
                f"\r[{bar}] {self.done}/{self.total} sources, {self.items} items, {self.failed} failed "
                f"({time.monotonic() - self.started:.0f}s)"
            )
            self.stream.flush()
        else:
            state = "ok" if report.ok else "failed"
            extra = " (not modified)" if report.not_modified else ""
            self.stream.write(
                f"ingest: [{self.done}/{self.total}] {report.source}: {state}, {report.items_new} new, "
                f"{report.items_updated} updated, {report.duplicates} duplicates{extra}\n"
            )

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()
