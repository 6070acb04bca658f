"""A fresh PostgreSQL schema for one test or bench run.

Every PostgreSQL test, the crash harness and the benches run in a schema of their own
on the server they are given (``INGEST_TEST_POSTGRES_URL``), made here and dropped
afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def postgres_schema(base_url: str, prefix: str = "t") -> Iterator[str]:
    """A store URL in a new schema (``prefix_<random>``) of the server at ``base_url``,
    dropped with everything in it afterwards; raises when the server does not answer."""
    import sqlalchemy as sa

    from ingest.store import normalize_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalize_url(base_url))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
