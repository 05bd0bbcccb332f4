"""A real PostgreSQL server (16, from the `pgserver` wheel) for the store's contract tests:
started once per session on a temporary folder (Unix socket only, no TCP port), stopped at the end.

(Here and not in tests/conftest.py: a conftest there puts tests/ on sys.path, where its
folders named like the packages shadow them.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import shutil
    import tempfile
    from pathlib import Path

    import pgserver  # the dev extra

    # Not under pytest's tmp folder: running as root, pgserver runs PostgreSQL as its own
    # unprivileged user, which must reach the data folder (pytest's is private to us).
    folder = Path(tempfile.mkdtemp(prefix="timeline-postgres-"))
    folder.chmod(0o755)
    server = pgserver.get_server(folder / "data", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's server for one test (its URL)."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(postgres_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
