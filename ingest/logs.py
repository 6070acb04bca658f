"""Logging to stderr, as text or JSON lines, with credentials never written."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

# user:password@ in any URL that reaches a log line
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+(?::[^/@\s]*)?@")


def redact(text: str) -> str:
    """``text`` with the user-info part of every URL replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


# The name of the worker this process is (a daemon, an --once run), in every line once known.
_worker: list[str] = []


def set_worker(name: str) -> None:
    """Name this process's worker in every log line from now on (a fleet's logs say who wrote them)."""
    _worker[:] = [name]


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if _worker:  # first, so grep and log shippers see the rest of the line as before
            line = f"[{_worker[0]}] {line}"
        return redact(line)


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if _worker:
            entry["worker"] = _worker[0]
        for key in ("source", "event", "status", "items_new", "items_updated", "duplicates", "error_kind", "elapsed"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once: stderr, the given level and format (no worker named yet)."""
    _worker.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # libraries speak at warning and above only
    for noisy in ("urllib3", "trafilatura", "apscheduler", "htmldate", "courlan", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
