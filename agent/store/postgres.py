"""The server store: wacall's tables in PostgreSQL, so several wacall processes can share one database.

Why these choices:

* **A subclass of `SqliteStore`.** The writer thread, group commit, SAVEPOINT per job, read connection and
  every query are the SQLite store's, run through `PgConnection` (which rewrites `?`/`:name` parameters, see
  `agent/store/dialect.py`); only connecting, beginning a write, telling busy from broken and migrating
  differ. The store tests run on both backends, so the two cannot drift.
* **One write lock across processes.** Each write transaction first takes a transaction-scoped advisory
  lock, as SQLite's BEGIN IMMEDIATE takes the file's write lock: a job's read-modify-write (a user's calling
  state) stays correct when several workers share the database, and writes are few and group-committed while
  reads never wait for it. The wait is bounded by `lock_timeout` and retried until the job's deadline, like
  SQLite's busy timeout; serialisation failures and deadlocks count as busy too.
* **Migrations under their own advisory lock**, in one transaction (PostgreSQL's DDL is transactional): two
  workers starting together migrate once, the second finds the work done. The version lives in a
  `schema_version` table, SQLite's `PRAGMA user_version` having no counterpart.
* **Autocommit connections with explicit BEGIN/COMMIT**, the statements the shared machinery issues; a
  connection the server dropped is replaced by the next read or write that finds it gone (see
  `PgConnection`), instead of failing every one after.
* **Messages name the server, never the password**: `path` is the URL without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from agent.store.base import StoreError
from agent.store.dialect import postgres_ddl, postgres_params, split_script
from agent.store.facts import CALL_FACTS_QUERY_POSTGRES
from agent.store.sqlite import (
    _MIGRATIONS,
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
    SYNC_WRITE_DEADLINE_S,
    SqliteStore,
    _utc_now,
)

__all__ = ["MIGRATION_LOCK_KEY", "WRITE_LOCK_KEY", "PgConnection", "PostgresStore", "redacted_url"]

#: Advisory lock keys ("wacall" in ASCII, then which lock). Advisory locks are per database, so two wacall
#: deployments on one server do not share them.
WRITE_LOCK_KEY = 0x776163616C6C0001
MIGRATION_LOCK_KEY = 0x776163616C6C0002
#: How long a starting process waits for another one's migration before giving up with a clear error.
MIGRATION_LOCK_TIMEOUT_S = 60.0
#: How long connecting may take before start-up fails (a server that is down refuses at once).
CONNECT_TIMEOUT_S = 5
#: Errors that mean "someone else holds what we need, try again", like SQLite's "database is locked".
_BUSY = (errors.LockNotAvailable, errors.SerializationFailure, errors.DeadlockDetected)


def redacted_url(url: str) -> str:
    """`postgresql://user@host:port/db`: enough to tell which database, without the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(an invalid URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or 5432)
    return f"postgresql://{user}{host}:{port}/{parts.get('dbname') or ''}"


class PgConnection:
    """A psycopg connection with the `sqlite3.Connection` calls the store makes, in SQLite's parameter style.

    A connection the server dropped (a restart, a failover, an idle timeout) is replaced when a statement
    outside any transaction finds it gone, and that statement is sent again: outside a transaction the store
    only reads or begins one, which are safe to repeat. Inside one the error stands, and the job fails (the
    writer retries nothing it cannot know was not committed).
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[dict[str, Any]]]) -> None:
        self._connect = connect
        self.raw = connect()

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = None, /) -> psycopg.Cursor[dict[str, Any]]:
        # Without parameters the text is sent as written (DDL, BEGIN): nothing to translate.
        query = sql if parameters is None else postgres_params(sql)
        idle = not self.raw.closed and not self.in_transaction
        try:
            return self.raw.execute(query, parameters)
        except psycopg.OperationalError:
            if not (idle and self.raw.broken):
                raise
        with contextlib.suppress(Exception):
            self.raw.close()
        self.raw = self._connect()
        return self.raw.execute(query, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> psycopg.Cursor[dict[str, Any]]:
        cursor = self.raw.cursor()
        cursor.executemany(postgres_params(sql), list(parameters))  # rowcount: the sum over all of them
        return cursor

    def close(self) -> None:
        self.raw.close()


class PostgresStore(SqliteStore):
    """`Store` on a PostgreSQL database, given as a `postgresql://` URL (`WACALL_DATABASE_URL`)."""

    _facts_query = CALL_FACTS_QUERY_POSTGRES
    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], datetime] = _utc_now,
        lock_timeout_ms: int = BUSY_TIMEOUT_MS,
        sync_write_deadline_s: float = SYNC_WRITE_DEADLINE_S,
        connect_timeout_s: int = CONNECT_TIMEOUT_S,
        migration_lock_timeout_s: float = MIGRATION_LOCK_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._lock_timeout_ms = lock_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self._migration_lock_timeout_s = migration_lock_timeout_s
        self._init_plumbing(redacted_url(url), clock, sync_write_deadline_s)
        try:
            self._conn = self._connect_writer()
            self._migrate()
            self._reader = self._connect()
            self._rlock = threading.RLock()
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot use the PostgreSQL database {self.path}: {_first_line(exc)}") from exc
        except StoreError:
            self.close()
            raise

    def _connect(self) -> PgConnection:  # type: ignore[override]  # a PgConnection, not a sqlite3 one
        return PgConnection(self._open_raw)

    def _connect_writer(self) -> PgConnection:
        return PgConnection(lambda: self._open_raw(lock_timeout_ms=self._lock_timeout_ms))

    def _open_raw(self, lock_timeout_ms: int | None = None) -> psycopg.Connection[dict[str, Any]]:
        try:
            raw = psycopg.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self._connect_timeout_s,
                application_name="wacall",
            )
        except psycopg.OperationalError as exc:
            # libpq's message names the host and port and says why (refused, timed out, bad password),
            # never the password itself; `from None` keeps the URL out of the traceback too.
            raise StoreError(
                f"cannot reach the PostgreSQL server for {self.path} (WACALL_DATABASE_URL): {_first_line(exc)}"
            ) from None
        if lock_timeout_ms is not None:  # only the writer waits for locks, and only that long per attempt
            raw.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        return raw

    # plumbing ------------------------------------------------------------------------------------------
    def _begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def _is_busy_error(self, exc: BaseException) -> bool:
        return isinstance(exc, _BUSY)

    def _migrate(self) -> None:
        conn = self._db()
        conn.execute("BEGIN")
        try:
            conn.execute(f"SET LOCAL lock_timeout = {int(self._migration_lock_timeout_s * 1000)}")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
            except errors.LockNotAvailable:
                raise StoreError(
                    f"{self.path}: another wacall process has held the migration lock for over "
                    f"{self._migration_lock_timeout_s:.0f} s; is one stuck?"
                ) from None
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0 if row is None else int(row["version"])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this wacall understands "
                    f"({SCHEMA_VERSION}); upgrade wacall or point it at another database"
                )
            for target in range(version, SCHEMA_VERSION):
                for statement in split_script(_MIGRATIONS[target]):
                    conn.execute(postgres_ddl(statement))
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        with self._rlock:
            row = self._read_db().execute("SELECT version FROM schema_version").fetchone()
            return 0 if row is None else int(row["version"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
