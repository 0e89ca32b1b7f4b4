"""Shared fixtures: the real models, loaded once per test session (they are read-only and thread-safe), and
the store backends (SQLite, and PostgreSQL from tests/pg_server.py) that store tests run on alike."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.config import Settings
from agent.runtime import Models
from agent.store.base import default_db_path
from agent.store.sqlite import SqliteStore
from tests import pg_server as pg

BACKENDS = ("sqlite", "postgres")


def _db_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


#: What either backend raises for a failed statement.
DB_ERRORS = _db_errors()

#: Opens a store on the test's own database (the same one every time, as a restart would).
StoreOpener = Callable[..., SqliteStore]


@pytest.fixture(scope="session")
def models() -> Iterator[Models]:
    loaded = Models.load(Settings())
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PgServer]:
    """A PostgreSQL server for the whole session, started only if a test asks for one."""
    reason = pg.skip_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}")
        pytest.skip(reason)
    with pg.pg_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: pg.PgServer) -> Iterator[str]:
    """An empty, migrated database of the test's own (from the pool, see tests/pg_server.py)."""
    url = postgres_server.checkout()
    yield url
    postgres_server.checkin(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens stores on this test's database, on each backend in turn; closes whatever it opened."""
    opened: list[SqliteStore] = []
    if backend == "sqlite":
        path = default_db_path(tmp_path / "data")

        def make(**kwargs: Any) -> SqliteStore:
            return SqliteStore(path, **kwargs)
    else:
        from agent.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")

        def make(**kwargs: Any) -> SqliteStore:
            return PostgresStore(url, **kwargs)

    def tracked(**kwargs: Any) -> SqliteStore:
        store = make(**kwargs)
        opened.append(store)
        return store

    yield tracked
    for store in opened:
        store.close()
