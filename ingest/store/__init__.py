"""The canonical store: SQLite or PostgreSQL through SQLAlchemy 2 Core (see store.py)."""

from ingest.store.engine import normalize_url
from ingest.store.store import Store
from ingest.store.writer import Writer

__all__ = ["Store", "Writer", "normalize_url"]
