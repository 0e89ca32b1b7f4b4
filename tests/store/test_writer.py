"""The store's writer thread: jobs commit together but fail alone, the thread stops on close, sync callers keep
their order with queued writes, and a v3 database migrates with its events counted as handled.

The writer is shared by both backends, so these run on SQLite and PostgreSQL (the `open_store` fixture);
what is about the SQLite file (an outside lock on it, a damaged one, an old version) runs on SQLite only,
with PostgreSQL's counterparts in test_postgres.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.store.base import CallRecord, default_db_path
from agent.store.sqlite import SCHEMA_VERSION, SqliteStore, StoreBusyError, StoreTx
from tests.conftest import DB_ERRORS, StoreOpener

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wacall-store-writer"]


@pytest.fixture
def store(open_store: StoreOpener) -> SqliteStore:
    return open_store()


def test_no_thread_until_an_asynchronous_write_and_none_after_close(open_store: StoreOpener) -> None:
    before = len(writer_threads())
    store = open_store()
    store.save_call(CallRecord(id="wacid.SYNC", direction="USER_INITIATED", created_at=T0))
    assert len(writer_threads()) == before  # the CLI and sync-only users never start it
    store.submit(lambda tx: tx.save_call(CallRecord(id="wacid.ASYNC", direction="USER_INITIATED", created_at=T0)))
    assert len(writer_threads()) == before + 1
    store.close()
    assert len(writer_threads()) == before
    reopened = open_store()
    assert reopened.get_call("wacid.ASYNC") is not None  # close committed what was queued
    reopened.close()


def test_a_failing_job_keeps_nothing_and_does_not_spoil_the_jobs_sharing_its_transaction(store: SqliteStore) -> None:
    gate = threading.Event()
    store.submit(lambda tx: gate.wait(5))  # holds the writer so the next three share one batch

    def half_then_fail(tx: StoreTx) -> None:
        tx.record_event("wacid.HALF", "connect", T0, {"n": 1})
        raise ValueError("second event is bad")

    ok1 = store.submit(lambda tx: tx.record_event("wacid.A", "connect", T0, {"n": 1}))
    bad = store.submit(half_then_fail)
    ok2 = store.submit(lambda tx: tx.record_event("wacid.B", "connect", T0, {"n": 1}))
    gate.set()
    assert ok1.result(5).stored and ok2.result(5).stored
    with pytest.raises(ValueError, match="second event is bad"):
        bad.result(5)
    assert store.list_events("wacid.HALF") == []
    assert len(store.list_events("wacid.A")) == len(store.list_events("wacid.B")) == 1


def test_sync_writes_and_reads_keep_order_with_queued_writes(store: SqliteStore) -> None:
    store.submit(lambda tx: tx.save_call(CallRecord(id="wacid.O", direction="USER_INITIATED", created_at=T0)))
    store.submit(lambda tx: tx.update_call("wacid.O", state="active"))
    updated = store.update_call("wacid.O", outcome="resolved")  # runs after the queued writes
    assert updated is not None and (updated.state, updated.outcome) == ("active", "resolved")
    store.submit(lambda tx: tx.update_call("wacid.O", state="ended"))
    got = store.get_call("wacid.O")  # a read waits for writes queued before it
    assert got is not None and got.state == "ended"


def test_locked_database_fails_a_job_at_its_deadline_and_retries_until_then(tmp_path: Path) -> None:
    store = SqliteStore(default_db_path(tmp_path))
    outsider = sqlite3.connect(default_db_path(tmp_path), isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        short = store.submit(lambda tx: tx.record_event("wacid.S", "connect", T0), deadline_s=0.3)
        long = store.submit(lambda tx: tx.record_event("wacid.L", "connect", T0), deadline_s=10)
        with pytest.raises(StoreBusyError):
            short.result(5)
        assert time.monotonic() - started < 2
        assert not long.done()
        outsider.execute("COMMIT")
        assert long.result(5).stored
        assert store.list_events("wacid.S") == []
    finally:
        outsider.close()
        store.close()


async def test_awaiting_a_job_does_not_block_the_loop_and_cancelling_a_queued_one_skips_it(store: SqliteStore) -> None:
    gate = threading.Event()
    store.submit(lambda tx: gate.wait(5))
    skipped = store.submit(lambda tx: tx.record_event("wacid.CANCELLED", "connect", T0))
    assert skipped.cancel()
    kept = asyncio.wrap_future(store.submit(lambda tx: tx.record_event("wacid.KEPT", "connect", T0)))
    await asyncio.sleep(0.05)
    assert not kept.done()  # waiting on the writer, while the loop runs
    gate.set()
    assert (await kept).stored
    assert store.list_events("wacid.CANCELLED") == []


def test_version_3_file_migrates_and_its_events_count_as_handled(tmp_path: Path) -> None:
    from agent.store import sqlite as sqlite_module

    path = default_db_path(tmp_path)
    with sqlite3.connect(path) as raw:
        for script in sqlite_module._MIGRATIONS[:3]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 3")
        raw.execute(
            "INSERT INTO call_events (call_id, event, at, payload, dedupe_key, received_at) VALUES "
            "('wacid.OLD', 'connect', '2026-01-01T00:00:00+00:00', NULL, 'k-old', '2026-01-01T00:00:00+00:00')"
        )
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        [old] = store.list_events("wacid.OLD")
        assert old.handled is True and old.envelope is None
        assert store.unhandled_events() == []
        written = store.submit(
            lambda tx: tx.record_event("wacid.NEW", "connect", T0, {}, handled=False, envelope={"kind": "call"})
        ).result(5)
        assert written.stored and not written.handled
        assert [e.call_id for e in store.unhandled_events()] == ["wacid.NEW"]
        assert store.mark_handled([e.dedupe_key for e in store.unhandled_events()]) == 1
        assert store.unhandled_events() == []


def test_submit_after_close_is_refused(store: SqliteStore) -> None:
    store.close()
    from agent.store.base import StoreError

    with pytest.raises(StoreError, match="closed"):
        store.submit(lambda tx: None)


def test_a_job_that_breaks_the_transaction_fails_its_whole_batch_and_the_writer_goes_on(store: SqliteStore) -> None:
    gate = threading.Event()
    store.submit(lambda tx: gate.wait(5))

    def breaks(tx: StoreTx) -> None:
        tx.conn.execute("ROLLBACK")  # as SQLite does by itself on some I/O errors
        raise OSError("disk full")

    before = store.submit(lambda tx: tx.record_event("wacid.BEFORE", "connect", T0))
    broken = store.submit(breaks)
    after = store.submit(lambda tx: tx.record_event("wacid.AFTER", "connect", T0))
    gate.set()
    for future in (before, broken, after):
        with pytest.raises(DB_ERRORS):  # nobody is left waiting
            future.result(5)
    assert store.list_events("wacid.BEFORE") == [] and store.list_events("wacid.AFTER") == []
    assert store.submit(lambda tx: tx.record_event("wacid.LATER", "connect", T0)).result(5).stored


class _DamagedOnce:
    """A connection whose next BEGIN fails as a damaged or unreadable database file does."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self._real, self.failed = real, False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and not self.failed:
            self.failed = True
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self._real.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_damaged_database_fails_the_batch_and_the_writer_lives_on(tmp_path: Path) -> None:
    """Before: a DatabaseError other than 'locked' killed the writer thread, and every later write (webhook
    deliveries included) waited for ever."""
    store = SqliteStore(default_db_path(tmp_path))
    store.submit(lambda tx: None).result(5)  # the writer is running
    store._conn = _DamagedOnce(store._conn)  # type: ignore[assignment]
    failed = store.submit(lambda tx: tx.record_event("wacid.LOST", "connect", T0))
    with pytest.raises(sqlite3.DatabaseError):
        failed.result(5)
    assert writer_threads(), "the writer thread died"
    assert store.submit(lambda tx: tx.record_event("wacid.LATER", "connect", T0)).result(5).stored
    store.close()


def test_unhandled_events_are_listed_oldest_first_and_marked_handled_once(store: SqliteStore) -> None:
    for call_id in ("wacid.P1", "wacid.P2"):
        store.submit(lambda tx, c=call_id: tx.record_event(c, "connect", T0, {}, handled=False, envelope={"n": c}))
    store.record_event("wacid.DONE", "connect", T0, {})
    pending = store.unhandled_events()
    assert [(e.call_id, e.handled, e.envelope) for e in pending] == [
        ("wacid.P1", False, {"n": "wacid.P1"}),
        ("wacid.P2", False, {"n": "wacid.P2"}),
    ]
    keys = [e.dedupe_key for e in pending]
    assert store.mark_handled([*keys, keys[0]]) == 2  # the count the ledger logs: rows changed, over all keys
    assert store.mark_handled(keys) == 0
    assert store.unhandled_events() == []
