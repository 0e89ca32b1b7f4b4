"""Which store a deployment uses: PostgreSQL when `WACALL_DATABASE_URL` names one, else the SQLite file in
the data dir. Here rather than in the runtime so `wacall serve`, `wacall calls` and `wacall report` agree,
and so psycopg is imported only by deployments that use PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from agent.store.base import StoreError
from agent.store.sqlite import SqliteStore

__all__ = ["POSTGRES_SCHEMES", "open_configured_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_configured_store(database_url: str, data_dir: str | Path) -> SqliteStore:
    """The store the settings name; a `StoreError` that says what to fix when it cannot be opened."""
    if not database_url:
        return SqliteStore.in_data_dir(data_dir)
    if not database_url.startswith(POSTGRES_SCHEMES):
        scheme = database_url.partition("://")[0] if "://" in database_url else "(none)"
        raise StoreError(
            f"WACALL_DATABASE_URL must be a postgresql:// URL (scheme {scheme!r} is not supported); "
            "leave it unset to keep the SQLite file in the data dir"
        )
    try:
        from agent.store.postgres import PostgresStore
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "psycopg":
            raise
        raise StoreError(
            "WACALL_DATABASE_URL names a PostgreSQL database but psycopg is not installed: "
            "it is one of wacall's dependencies: reinstall wacall from the lock (bash .ci/install)"
        ) from None
    return PostgresStore(database_url)
