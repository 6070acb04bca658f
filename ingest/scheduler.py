"""The long-running daemon (being built: see issue 6)."""

from __future__ import annotations

import argparse

from ingest.config import Config
from ingest.errors import IngestError


def run_daemon(config: Config, args: argparse.Namespace) -> int:
    raise IngestError("daemon mode is not available in this build yet; use --once")
