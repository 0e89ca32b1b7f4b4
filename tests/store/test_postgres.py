"""What only the PostgreSQL store has: one schema with SQLite's, migrations that run once however many
workers start together (under an advisory lock), a write lock shared across processes, a clear error for a
server that is down or a psycopg that is missing, and a dropped connection replaced. The behaviour both
backends share is tested on both in test_sqlite.py and test_writer.py."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from agent.config import Settings  # noqa: E402
from agent.runtime import open_store  # noqa: E402
from agent.store import postgres as pg_module  # noqa: E402
from agent.store.base import CallRecord, StoreError, default_db_path  # noqa: E402
from agent.store.dialect import postgres_ddl, postgres_params, split_script  # noqa: E402
from agent.store.postgres import MIGRATION_LOCK_KEY, WRITE_LOCK_KEY, PostgresStore  # noqa: E402
from agent.store.select import open_configured_store  # noqa: E402
from agent.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore, StoreBusyError  # noqa: E402
from tests.pg_server import PgServer  # noqa: E402

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DOWN = "postgresql://wacall:s3cret-pw@127.0.0.1:1/wacall"  # nothing listens on port 1: refused at once


@pytest.fixture
def empty_url(postgres_server: PgServer) -> Iterator[str]:
    """A database with no tables yet, so the migrations run."""
    url = postgres_server.new_database(migrated=False)
    yield url
    postgres_server.drop(url)


def wait_until(condition: object, what: str, timeout: float = 10.0) -> None:
    """Polls `condition()`; for states another thread reaches, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def advisory_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
        return int(row[0])


# -- one schema, migrated once -----------------------------------------------------------------------------


def test_migrations_build_sqlites_schema_and_are_idempotent(empty_url: str, tmp_path: Path) -> None:
    with PostgresStore(empty_url) as store:
        assert store.schema_version == SCHEMA_VERSION
    with PostgresStore(empty_url) as store:  # a restart: nothing left to do, nothing done twice
        assert store.schema_version == SCHEMA_VERSION
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    on_postgres = {(t, c) for t, c in rows if t != "schema_version" and c != "rowid"}
    with SqliteStore(default_db_path(tmp_path)):
        pass
    with sqlite3.connect(default_db_path(tmp_path)) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        on_sqlite = {
            (t, r[1]) for t in tables if not t.startswith("sqlite_") for r in raw.execute(f"PRAGMA table_info({t})")
        }
    assert on_postgres == on_sqlite


def test_two_workers_starting_together_migrate_once(empty_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(pg_module, "postgres_ddl", lambda sql: ran.append(sql) or postgres_ddl(sql))
    start = threading.Barrier(2)
    opened: list[PostgresStore] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(empty_url))
        except BaseException as exc:
            failed.append(exc)

    workers = [threading.Thread(target=open_one) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    try:
        assert failed == []
        assert [s.schema_version for s in opened] == [SCHEMA_VERSION, SCHEMA_VERSION]
        assert len(ran) == sum(len(split_script(m)) for m in _MIGRATIONS)  # every statement once, not twice
        opened[0].save_call(CallRecord(id="wacid.A", direction="USER_INITIATED", created_at=T0))
        assert opened[1].get_call("wacid.A") is not None
    finally:
        for s in opened:
            s.close()


def test_a_start_waits_for_the_migration_lock_and_gives_up_with_a_clear_error(empty_url: str) -> None:
    holder = psycopg.connect(empty_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        with pytest.raises(StoreError, match="held the migration lock"):
            PostgresStore(empty_url, migration_lock_timeout_s=0.1)
        opened: list[PostgresStore] = []
        worker = threading.Thread(target=lambda: opened.append(PostgresStore(empty_url)))
        worker.start()
        wait_until(lambda: advisory_waiters(empty_url) == 1, "the store to wait for the migration lock")
        assert worker.is_alive() and opened == []
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        worker.join(30)
        [store] = opened
        assert store.schema_version == SCHEMA_VERSION
        store.close()
    finally:
        holder.close()


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this wacall understands"):
        PostgresStore(postgres_url)


# -- the write lock ----------------------------------------------------------------------------------------


def test_write_lock_held_elsewhere_fails_a_job_at_its_deadline_and_retries_until_then(postgres_url: str) -> None:
    """Another process (a second worker mid-transaction) holds the write lock: as SQLite's file lock."""
    store = PostgresStore(postgres_url, lock_timeout_ms=50)
    outsider = psycopg.connect(postgres_url, autocommit=True)
    try:
        outsider.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK_KEY,))
        started = time.monotonic()
        short = store.submit(lambda tx: tx.record_event("wacid.S", "connect", T0), deadline_s=0.3)
        long = store.submit(lambda tx: tx.record_event("wacid.L", "connect", T0), deadline_s=10)
        with pytest.raises(StoreBusyError):
            short.result(5)
        assert time.monotonic() - started < 2
        assert not long.done()
        assert store.get_call("wacid.X") is None  # reads never wait for the write lock
        outsider.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
        assert long.result(5).stored
        assert store.list_events("wacid.S") == []
    finally:
        outsider.close()
        store.close()


def test_two_workers_on_one_database_keep_every_read_modify_write(postgres_url: str) -> None:
    """The writer lock spans processes: two stores incrementing one counter lose no update."""
    from agent.store.base import UserStateRecord

    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]

    def bump(tx: object) -> None:
        state = tx.get_user_state("pn", "u") or UserStateRecord(phone_number_id="pn", user="u")  # type: ignore[attr-defined]
        tx.put_user_state(  # type: ignore[attr-defined]
            UserStateRecord(phone_number_id="pn", user="u", consecutive_unanswered=state.consecutive_unanswered + 1)
        )

    try:
        futures = [s.submit(bump) for _ in range(25) for s in stores]
        for f in futures:
            f.result(10)
        assert stores[0].get_user_state("pn", "u").consecutive_unanswered == 50  # type: ignore[union-attr]
    finally:
        for s in stores:
            s.close()


# -- start-up errors and a lost connection -----------------------------------------------------------------


def test_a_server_that_is_down_is_a_clear_start_up_error_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        open_store(Settings(data_dir=str(tmp_path), database_url=DOWN))
    message = str(info.value)
    assert "cannot reach the PostgreSQL server" in message and "127.0.0.1" in message, message
    assert "WACALL_DATABASE_URL" in message
    assert "s3cret-pw" not in "".join(traceback.format_exception(info.value))


def test_wacall_calls_names_the_server_that_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    monkeypatch.delenv("WACALL_CONFIG", raising=False)
    monkeypatch.setenv("WACALL_DATABASE_URL", DOWN)
    monkeypatch.setenv("WACALL_DATA_DIR", str(tmp_path))
    assert main(["calls"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the PostgreSQL server" in err and "s3cret-pw" not in err


def test_the_database_url_is_a_secret_kept_out_of_config_files(tmp_path: Path) -> None:
    from agent.config import ConfigError, load_settings

    config = tmp_path / "wacall.yaml"
    config.write_text(f"database_url: {DOWN}\n")
    with pytest.raises(ConfigError, match="WACALL_DATABASE_URL"):
        load_settings(config, env={})
    assert load_settings(env={"WACALL_DATABASE_URL": DOWN}).database_url.get_secret_value() == DOWN
    assert "s3cret-pw" not in repr(load_settings(env={"WACALL_DATABASE_URL": DOWN}))


def test_without_psycopg_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "agent.store.postgres")
    with pytest.raises(StoreError, match=r"psycopg is not installed.*reinstall wacall from the lock"):
        open_configured_store("postgres://wacall@db.internal/wacall", tmp_path)


def test_only_postgresql_urls_are_taken(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="must be a postgresql:// URL"):
        open_configured_store("mysql://wacall:pw@db/wacall", tmp_path)
    store = open_configured_store("", tmp_path)  # unset: the SQLite file, as before
    assert isinstance(store, SqliteStore) and not isinstance(store, PostgresStore)
    store.close()


def test_a_connection_the_server_dropped_is_replaced(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store:
        store.save_call(CallRecord(id="wacid.BEFORE", direction="USER_INITIATED", created_at=T0))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'wacall'"
            )
        assert store.get_call("wacid.BEFORE") is not None
        store.save_call(CallRecord(id="wacid.AFTER", direction="USER_INITIATED", created_at=T0))
        assert store.submit(lambda tx: tx.get_user_state("pn", "u")).result(5) is None
        assert store.get_call("wacid.AFTER") is not None


# -- the dialect -------------------------------------------------------------------------------------------


def test_parameters_are_translated_outside_literals_and_casts() -> None:
    sql = "SELECT '?', ':x', a::jsonb, b LIKE '50%' FROM t WHERE c = ? AND d = :name AND e = 100 % 7"
    assert postgres_params(sql) == (
        "SELECT '?', ':x', a::jsonb, b LIKE '50%%' FROM t WHERE c = %s AND d = %(name)s AND e = 100 %% 7"
    )  # psycopg reads `%` inside literals too: "only '%s', '%b', '%t' are allowed as placeholders" otherwise


def test_ddl_translation() -> None:
    assert postgres_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v REAL, b BLOB)") == (
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v DOUBLE PRECISION, b BYTEA)"
    )
    assert postgres_ddl("CREATE TABLE r (id INTEGER PRIMARY KEY, n INTEGER)") == (
        "CREATE TABLE r (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n INTEGER)"
    )
    assert postgres_ddl("CREATE TABLE k (name TEXT PRIMARY KEY)") == (
        'CREATE TABLE k (\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY,name TEXT COLLATE "C" PRIMARY KEY)'
    )
    assert split_script("ALTER TABLE t ADD COLUMN x TEXT; -- why; because\nCREATE INDEX i ON t (x);") == [
        "ALTER TABLE t ADD COLUMN x TEXT",
        "CREATE INDEX i ON t (x)",
    ]
