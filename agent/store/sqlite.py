"""The embedded store: one SQLite file holding calls, their events, per-user calling state and contact events.

Why these choices:

* **stdlib sqlite3, one write connection and one read connection.** Writes are serialised (one writer is all
  SQLite allows anyway), which rules out "database is locked" between our own threads; reads use their own
  connection so, in WAL mode, they never wait for a write in progress. Methods are safe from any thread.
* **One writer thread, group commit.** The event loop must never wait for a lock or an fsync (an outside
  write lock once froze every call's audio for 4.6 s). Once anything asks for an asynchronous write
  (`submit`), a single writer thread owns all writes: it takes every queued job, runs each in its own
  SAVEPOINT (a job is all-or-nothing, e.g. one webhook delivery) and commits them with one fsync. The sync
  methods then queue and wait too, so writes keep one order whoever makes them. Before that (the CLI,
  tests) they run inline: no thread is started for a process that only reads.
* **Short busy timeout, retried by the writer.** A 250 ms SQLite busy timeout, retried until the job's
  deadline, so an outside lock delays writes (never the loop) and a delivery that cannot be stored in time
  fails, which answers Meta 500 and makes it retry.
* **A `handled` mark on webhook events.** Stored is not handled: a crash between the commit and the handling,
  or handling that raised, leaves `handled = 0`, and such events are handled at start-up or on redelivery.
* **WAL + synchronous=FULL.** WAL lets a reader (`wacall calls`) run during writes; FULL makes a committed
  webhook survive power loss too, at a cost of one fsync per write, which this volume can afford.
* **`user_version` migrations.** Each schema change is one entry in `_MIGRATIONS`; a file written by a newer
  wacall is refused instead of being silently misread. The same entries build the PostgreSQL schema
  (`agent/store/postgres.py`, translated in `agent/store/dialect.py`), so they are written in the SQL both
  understand: TEXT/INTEGER/REAL columns, `INSERT … ON CONFLICT`, `RETURNING`, `?`/`:name` parameters.
* **Times as ISO-8601 UTC text, money as decimal text.** Both sort and read correctly in the sqlite3 shell,
  and neither loses precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from agent.store.base import (
    ENDED_BY_RESTART,
    ENDED_STATE,
    ENDING_OWED,
    ENDING_SETTLED,
    CallEventRecord,
    CallRecord,
    CampaignCount,
    ContactEvent,
    RecordingRecord,
    StoreError,
    UserStateRecord,
    default_db_path,
)
from agent.store.dialect import Connection, Row, split_script
from agent.store.facts import CALL_FACTS_QUERY, CallFacts, facts_from_row

__all__ = ["SCHEMA_VERSION", "EventWrite", "SqliteStore", "StoreBusyError", "StoreTx", "default_db_path"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: SQLite's own wait for a lock, per attempt: short, so the writer thread can check deadlines between tries.
BUSY_TIMEOUT_MS = 250
#: How long a synchronous write (CLI, tests, code not yet moved off the loop) keeps retrying a locked database.
SYNC_WRITE_DEADLINE_S = 5.0
#: How long a fire-and-forget write keeps retrying: long, as nobody waits for it and losing it loses data.
BACKGROUND_WRITE_DEADLINE_S = 60.0
#: At most this many jobs share one transaction, so one commit never grows without bound under a flood.
MAX_BATCH = 256
#: A read waits at most this long for writes queued before it (read-your-writes) before reading anyway.
READ_SETTLE_S = 0.5
#: close() waits at most this long for queued writes: a database locked from outside must not hold up an exit.
CLOSE_WAIT_S = 8.0

_SCHEMA_V1 = """
CREATE TABLE calls (
    id                       TEXT PRIMARY KEY,
    direction                TEXT NOT NULL,
    from_number              TEXT,
    to_number                TEXT,
    phone_number_id          TEXT,
    state                    TEXT NOT NULL,
    outcome                  TEXT,
    end_reason               TEXT,
    created_at               TEXT NOT NULL,
    answered_at              TEXT,
    ended_at                 TEXT,
    duration_s               REAL,
    cost                     TEXT,
    currency                 TEXT NOT NULL DEFAULT 'USD',
    biz_opaque_callback_data TEXT,
    flow                     TEXT,
    slots                    TEXT NOT NULL DEFAULT '{}',
    transcript               TEXT NOT NULL DEFAULT '[]',
    handled_by               TEXT
);
CREATE INDEX calls_by_created ON calls (created_at DESC);
CREATE INDEX calls_by_state ON calls (state);

-- No foreign key to calls: a terminate can arrive before its connect (spec §1.2) and must still be kept.
CREATE TABLE call_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     TEXT NOT NULL,
    event       TEXT NOT NULL,
    at          TEXT NOT NULL,
    payload     TEXT,
    dedupe_key  TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL
);
CREATE INDEX call_events_by_call ON call_events (call_id, seq);

CREATE TABLE user_states (
    phone_number_id        TEXT NOT NULL,
    user_id                TEXT NOT NULL,
    permission_status      TEXT NOT NULL,
    permission_expires_at  TEXT,
    permission_source      TEXT,
    permission_updated_at  TEXT,
    permission_requests    TEXT NOT NULL DEFAULT '[]',
    requests_reset_at      TEXT,
    consecutive_unanswered INTEGER NOT NULL DEFAULT 0,
    needs_system_message   INTEGER NOT NULL DEFAULT 0,
    window_refreshed_at    TEXT,
    connected_calls        TEXT NOT NULL DEFAULT '[]',
    updated_at             TEXT NOT NULL,
    PRIMARY KEY (phone_number_id, user_id)
);

CREATE TABLE contact_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    phone_number_id TEXT,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    call_id         TEXT,
    detail          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX contact_events_by_user ON contact_events (user_id, at);
CREATE INDEX contact_events_by_at ON contact_events (at);
"""

# v2: the handover part of a call record (agent console): which queue, how long the caller waited, how long
# they talked to a person, and how the handover ended. Columns rather than JSON so `calls` can be queried and
# summed by queue or agent in the sqlite3 shell.
_SCHEMA_V2 = """
ALTER TABLE calls ADD COLUMN handover_queue TEXT;
ALTER TABLE calls ADD COLUMN queue_wait_s REAL;
ALTER TABLE calls ADD COLUMN talk_s REAL;
ALTER TABLE calls ADD COLUMN handover_outcome TEXT;
"""

# v3: calls placed by `wacall simulate` share the data dir with real ones (so `wacall calls` shows them) and are
# told apart by this flag; a simulation starting up must not end a running server's live calls, nor the reverse.
_SCHEMA_V3 = """
ALTER TABLE calls ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;
"""

# v4: stored is not handled. A webhook event is stored with handled = 0 and marked 1 once the runtime has acted
# on it, so one stored but never handled (a crash in between, a handler that raised) is handled at start-up or
# on redelivery instead of being dropped as a duplicate. Rows already there were handled by the wacall that
# stored them, hence DEFAULT 1. `envelope` keeps what the handler needs beyond the event itself (which number,
# which contact) so a pending event can be rebuilt without the original delivery.
_SCHEMA_V4 = """
ALTER TABLE call_events ADD COLUMN handled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE call_events ADD COLUMN envelope TEXT;
CREATE INDEX call_events_unhandled ON call_events (seq) WHERE handled = 0;
"""

# v5: call context. The payload of the call button or deep link the caller came from (spec §6.4) and which of
# the two, as columns so calls can be filtered and counted per campaign in SQL.
_SCHEMA_V5_CALL_CONTEXT = """
ALTER TABLE calls ADD COLUMN payload TEXT;
ALTER TABLE calls ADD COLUMN payload_source TEXT;
CREATE INDEX calls_by_payload ON calls (payload) WHERE payload IS NOT NULL;
"""

# Call recordings: one row per recorded call, written when recording starts and completed when it ends. A table
# of its own (not columns of `calls`) so deleting a recording, by the API or by retention, is one row, and the
# retention sweep has its own index on when each recording started.
_SCHEMA_RECORDINGS = """
CREATE TABLE recordings (
    call_id     TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    duration_s  REAL,
    bytes       INTEGER
);
CREATE INDEX recordings_by_started ON recordings (started_at);
"""

# Scale-out (several `wacall serve` workers on one PostgreSQL database, agent/cluster.py): each worker's lease
# (renewed by its heartbeat; a worker whose lease ran out is dead and its calls are ended by another), the
# worker owning each call's media (`calls.owner`), and which worker must act on a stored webhook event
# (`call_events.handler`): the one that received it, or the owner of its call. On SQLite, with one process,
# both columns stay empty.
_SCHEMA_CLUSTER = """
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    url          TEXT,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lease_until  TEXT NOT NULL
);
ALTER TABLE calls ADD COLUMN owner TEXT;
CREATE INDEX calls_by_owner ON calls (owner);
CREATE INDEX workers_by_lease ON workers (lease_until);
ALTER TABLE call_events ADD COLUMN handler TEXT;
"""

# The handover desk shared by a deployment's workers (agent/handover/shared.py): one row holding the desk's
# state as a JSON document, changed only inside write jobs, and the messages its jobs leave for each worker
# (named to it by NOTIFY, taken by deleting them, so each is acted on once even when a NOTIFY is lost).
# Unused on SQLite (one process keeps its desk in memory).
_SCHEMA_HANDOVER_DESK = """
CREATE TABLE handover_desk (
    id         INTEGER PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE handover_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    worker     TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX handover_messages_by_worker ON handover_messages (worker);
"""

#: Index i upgrades a database from user_version i to i + 1. Append, never edit a shipped entry. PostgreSQL
#: applies the same entries (see agent/store/dialect.py for what is translated), so keep to portable SQL.
_MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    _SCHEMA_V2,
    _SCHEMA_V3,
    _SCHEMA_V4,
    _SCHEMA_V5_CALL_CONTEXT,
    _SCHEMA_RECORDINGS,
    _SCHEMA_CLUSTER,
    _SCHEMA_HANDOVER_DESK,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_CALL_FIELDS = tuple(f.name for f in fields(CallRecord))
_UPDATABLE = frozenset(_CALL_FIELDS) - {"id"}
_CALL_TIMES = frozenset({"created_at", "answered_at", "ended_at"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None, what: str = "time") -> str | None:
    """Fixed-width UTC text, so string order is time order in SQL."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _json(value: Any) -> str:
    # default=str keeps a stray non-JSON value (a Decimal slot, a datetime) from failing the write that a
    # webhook ack waits on; it is read back as text.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def _times_json(values: Any) -> str:
    return json.dumps([_ts(v) for v in values])


def _times(text: str | None) -> tuple[datetime, ...]:
    return tuple(datetime.fromisoformat(t) for t in json.loads(text or "[]"))


def _call_from_row(row: Row) -> CallRecord:
    return CallRecord(
        id=row["id"],
        direction=row["direction"],
        from_number=row["from_number"],
        to_number=row["to_number"],
        phone_number_id=row["phone_number_id"],
        state=row["state"],
        outcome=row["outcome"],
        end_reason=row["end_reason"],
        created_at=_dt(row["created_at"]),
        answered_at=_dt(row["answered_at"]),
        ended_at=_dt(row["ended_at"]),
        duration_s=row["duration_s"],
        cost=None if row["cost"] is None else Decimal(row["cost"]),
        currency=row["currency"],
        biz_opaque_callback_data=row["biz_opaque_callback_data"],
        flow=row["flow"],
        slots=json.loads(row["slots"]),
        transcript=json.loads(row["transcript"]),
        handled_by=row["handled_by"],
        handover_queue=row["handover_queue"],
        queue_wait_s=row["queue_wait_s"],
        talk_s=row["talk_s"],
        handover_outcome=row["handover_outcome"],
        simulated=bool(row["simulated"]),
        payload=row["payload"],
        payload_source=row["payload_source"],
        owner=row["owner"],
    )


def _call_column(name: str, value: Any) -> Any:
    if name in _CALL_TIMES:
        return _ts(value, name)
    if name == "cost":
        return None if value is None else str(Decimal(value))
    if name in ("slots", "transcript"):
        return _json(value if value is not None else ({} if name == "slots" else []))
    if name == "simulated":
        return int(bool(value))
    return value


def default_dedupe_key(call_id: str, event: str, at: datetime, payload: Mapping[str, Any] | None) -> str:
    """Identical deliveries of one webhook hash the same; any differing field makes a new event."""
    canonical = _json({"call_id": call_id, "event": event, "at": _ts(at), "payload": payload})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class StoreBusyError(StoreError):
    """The database stayed locked (by another process) past the write's deadline; nothing was written."""


@dataclass(frozen=True)
class EventWrite:
    """What storing one event found: `stored` is False for a duplicate, `handled` says if it was acted on."""

    stored: bool
    handled: bool
    seq: int | None = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _event_from_row(r: Row) -> CallEventRecord:
    return CallEventRecord(
        call_id=r["call_id"],
        event=r["event"],
        at=datetime.fromisoformat(r["at"]),
        payload=None if r["payload"] is None else json.loads(r["payload"]),
        dedupe_key=r["dedupe_key"],
        received_at=_dt(r["received_at"]),
        seq=r["seq"],
        handled=bool(r["handled"]),
        envelope=None if r["envelope"] is None else json.loads(r["envelope"]),
    )


def _recording_from_row(row: Row) -> RecordingRecord:
    return RecordingRecord(
        call_id=row["call_id"],
        path=row["path"],
        started_at=datetime.fromisoformat(row["started_at"]),
        ended_at=_dt(row["ended_at"]),
        duration_s=row["duration_s"],
        bytes=row["bytes"],
    )


def _user_state_from_row(row: Row) -> UserStateRecord:
    return UserStateRecord(
        phone_number_id=row["phone_number_id"],
        user=row["user_id"],
        permission_status=row["permission_status"],
        permission_expires_at=_dt(row["permission_expires_at"]),
        permission_source=row["permission_source"],
        permission_updated_at=_dt(row["permission_updated_at"]),
        permission_requests=_times(row["permission_requests"]),
        requests_reset_at=_dt(row["requests_reset_at"]),
        consecutive_unanswered=row["consecutive_unanswered"],
        needs_system_message=bool(row["needs_system_message"]),
        window_refreshed_at=_dt(row["window_refreshed_at"]),
        connected_calls=_times(row["connected_calls"]),
    )


class StoreTx:
    """The write methods inside one open transaction: what a job given to `SqliteStore.submit` works with.

    A job's reads see its own and earlier jobs' writes (same connection), which is what read-modify-write of
    a user's state needs; everything a job does is kept or rolled back together.
    """

    def __init__(self, conn: Connection, clock: Callable[[], datetime]) -> None:
        self.conn = conn
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def save_call(self, call: CallRecord) -> None:
        created = call.created_at or self._clock()
        values = {name: _call_column(name, getattr(call, name)) for name in _CALL_FIELDS}
        values["created_at"] = _ts(created, "created_at")
        columns = ", ".join(_CALL_FIELDS)
        marks = ", ".join(f":{n}" for n in _CALL_FIELDS)
        updates = ", ".join(f"{n} = excluded.{n}" for n in _CALL_FIELDS if n != "id")
        self.conn.execute(
            f"INSERT INTO calls ({columns}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", values
        )

    def update_call(self, call_id: str, **changes: Any) -> CallRecord | None:
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise ValueError(f"unknown call field(s): {', '.join(unknown)}")
        if changes:
            assignments = ", ".join(f"{n} = :{n}" for n in changes)
            params = {n: _call_column(n, v) for n, v in changes.items()} | {"_id": call_id}
            self.conn.execute(f"UPDATE calls SET {assignments} WHERE id = :_id", params)
        row = self.conn.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _call_from_row(row)

    def record_event(
        self,
        call_id: str,
        event: str,
        at: datetime,
        payload: Mapping[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
        received_at: datetime | None = None,
        handled: bool = True,
        envelope: Mapping[str, Any] | None = None,
    ) -> EventWrite:
        """Store an event once. `handled=False` for a webhook event the runtime has yet to act on."""
        key = dedupe_key or default_dedupe_key(call_id, event, at, payload)
        inserted = self.conn.execute(
            "INSERT INTO call_events (call_id, event, at, payload, dedupe_key, received_at, handled, envelope) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(dedupe_key) DO NOTHING RETURNING seq",
            (
                call_id,
                event,
                _ts(at, "at"),
                None if payload is None else _json(payload),
                key,
                _ts(received_at or self._clock(), "received_at"),
                int(handled),
                None if envelope is None else _json(envelope),
            ),
        ).fetchone()
        if inserted is not None:
            return EventWrite(stored=True, handled=handled, seq=inserted["seq"])
        row = self.conn.execute("SELECT seq, handled FROM call_events WHERE dedupe_key = ?", (key,)).fetchone()
        return EventWrite(stored=False, handled=bool(row["handled"]), seq=row["seq"])

    def mark_handled(self, dedupe_keys: Iterable[str]) -> int:
        cursor = self.conn.executemany(
            "UPDATE call_events SET handled = 1 WHERE dedupe_key = ? AND handled = 0", [(k,) for k in dedupe_keys]
        )
        return cursor.rowcount

    def save_recording(self, recording: RecordingRecord) -> None:
        self.conn.execute(
            "INSERT INTO recordings (call_id, path, started_at, ended_at, duration_s, bytes) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE SET path = excluded.path, "
            "started_at = excluded.started_at, ended_at = excluded.ended_at, duration_s = excluded.duration_s, "
            "bytes = excluded.bytes",
            (
                recording.call_id,
                recording.path,
                _ts(recording.started_at, "started_at"),
                _ts(recording.ended_at, "ended_at"),
                recording.duration_s,
                recording.bytes,
            ),
        )

    def delete_recording(self, call_id: str) -> RecordingRecord | None:
        row = self.conn.execute("SELECT * FROM recordings WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM recordings WHERE call_id = ?", (call_id,))
        return _recording_from_row(row)

    def get_user_state(self, phone_number_id: str, user: str) -> UserStateRecord | None:
        row = self.conn.execute(
            "SELECT * FROM user_states WHERE phone_number_id = ? AND user_id = ?", (phone_number_id, user)
        ).fetchone()
        return None if row is None else _user_state_from_row(row)

    def put_user_state(self, state: UserStateRecord) -> None:
        values = {
            "phone_number_id": state.phone_number_id,
            "user_id": state.user,
            "permission_status": state.permission_status,
            "permission_expires_at": _ts(state.permission_expires_at),
            "permission_source": state.permission_source,
            "permission_updated_at": _ts(state.permission_updated_at),
            "permission_requests": _times_json(state.permission_requests),
            "requests_reset_at": _ts(state.requests_reset_at),
            "consecutive_unanswered": int(state.consecutive_unanswered),
            "needs_system_message": int(bool(state.needs_system_message)),
            "window_refreshed_at": _ts(state.window_refreshed_at),
            "connected_calls": _times_json(state.connected_calls),
            "updated_at": _ts(self._clock()),
        }
        columns = ", ".join(values)
        marks = ", ".join(f":{n}" for n in values)
        key = ("phone_number_id", "user_id")
        updates = ", ".join(f"{n} = excluded.{n}" for n in values if n not in key)
        self.conn.execute(
            f"INSERT INTO user_states ({columns}) VALUES ({marks}) "
            f"ON CONFLICT({', '.join(key)}) DO UPDATE SET {updates}",
            values,
        )

    def add_contact_event(self, event: ContactEvent) -> int:
        row = self.conn.execute(
            "INSERT INTO contact_events (at, phone_number_id, user_id, kind, reason, call_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                _ts(event.at, "at"),
                event.phone_number_id,
                event.user,
                event.kind,
                event.reason,
                event.call_id,
                _json(dict(event.detail)),
            ),
        ).fetchone()
        return int(row["id"])

    def mark_live_calls_ended(self, *, now: datetime, reason: str, simulated: bool | None) -> list[str]:
        stamp = _ts(now, "now")
        query = "SELECT id FROM calls WHERE state != ? AND ended_at IS NULL"
        params: list[Any] = [ENDED_STATE]
        if simulated is not None:
            query += " AND simulated = ?"
            params.append(int(simulated))
        ids = [r["id"] for r in self.conn.execute(query + " ORDER BY created_at", params)]
        self.conn.executemany(
            "UPDATE calls SET state = ?, end_reason = ?, outcome = COALESCE(outcome, 'interrupted'), "
            "ended_at = ? WHERE id = ?",
            [(ENDED_STATE, reason, stamp, call_id) for call_id in ids],
        )
        return ids


@dataclass
class _Job:
    fn: Callable[[StoreTx], Any]
    future: Future[Any]
    deadline: float  # time.monotonic() after which a locked database fails the job instead of retrying


_STOP = object()


def _fail(job: _Job, exc: BaseException) -> None:
    if job.future.set_running_or_notify_cancel():
        job.future.set_exception(exc)


class SqliteStore:
    """`Store` on a SQLite file (or ":memory:" for throwaway use).

    Also the machinery every backend shares (writer thread, group commit, the queries): a server backend
    (`agent.store.postgres.PostgresStore`) overrides only how to connect, begin a write, tell "busy" from
    broken, and migrate.
    """

    #: The facts query in this backend's dialect (SQLite's JSON functions differ from PostgreSQL's).
    _facts_query = CALL_FACTS_QUERY
    #: Whether several processes may share this database as workers of one deployment (agent/cluster.py).
    shared = False

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = _utc_now,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        sync_write_deadline_s: float = SYNC_WRITE_DEADLINE_S,
    ) -> None:
        self._busy_timeout_ms = busy_timeout_ms
        self._init_plumbing(str(path), clock, sync_write_deadline_s)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the data directory for {self.path}: {exc}") from exc
        try:
            self._conn = self._connect()
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
            if self.path != ":memory:":
                # Separate connections to ":memory:" would be separate databases; there, reads share the lock.
                self._reader = self._connect()
                self._rlock = threading.RLock()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot open the wacall database {self.path}: {exc}") from exc

    def _init_plumbing(self, path: str, clock: Callable[[], datetime], sync_write_deadline_s: float) -> None:
        """The state every backend needs before it connects; `path` names the database in messages."""
        self.path = path
        self._clock = clock
        self._sync_deadline_s = sync_write_deadline_s
        self._lock = threading.RLock()  # the write connection
        self._conn: Connection | None = None
        self._reader: Connection | None = None
        self._rlock = self._lock
        # The writer thread, started by the first `submit`; `_queued`/`_done` count jobs for read-your-writes.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._settled = threading.Condition()
        self._queued = 0
        self._done = 0
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_ms / 1000
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        return conn

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, **kwargs: Any) -> SqliteStore:
        return cls(default_db_path(data_dir), **kwargs)

    # plumbing ------------------------------------------------------------------------------------------
    def _db(self) -> Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    def _read_db(self) -> Connection:
        conn = self._db()
        return self._reader or conn

    def _begin_write(self, conn: Connection) -> None:
        """Open a transaction that holds the write lock, so it never fails half-way for want of it.

        IMMEDIATE takes SQLite's lock up front, waiting at most the short busy timeout; `_is_busy_error`
        tells the callers whether what this raised is worth retrying.
        """
        conn.execute("BEGIN IMMEDIATE")

    def _is_busy_error(self, exc: BaseException) -> bool:
        """The database is locked by someone else (retry until the deadline), not broken (fail now)."""
        return isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)

    def _begin(self, conn: Connection, deadline: float) -> None:
        """`_begin_write`, retried past the database's short lock wait until `deadline`."""
        while True:
            try:
                self._begin_write(conn)
                return
            except Exception as exc:
                if not self._is_busy_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreBusyError(f"{self.path} stayed locked: {exc}") from exc
                time.sleep(0.01)

    @contextmanager
    def _tx(self, deadline: float | None = None) -> Iterator[Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so it never fails half-way."""
        with self._lock:
            conn = self._db()
            self._begin(conn, deadline if deadline is not None else time.monotonic() + self._sync_deadline_s)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._db()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this wacall understands "
                f"({SCHEMA_VERSION}); upgrade wacall or point it at another data directory"
            )
        for target in range(version, SCHEMA_VERSION):
            with self._tx() as tx:
                for statement in split_script(_MIGRATIONS[target]):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {target + 1}")

    @property
    def schema_version(self) -> int:
        with self._rlock:
            return int(self._read_db().execute("PRAGMA user_version").fetchone()[0])

    # the writer thread ---------------------------------------------------------------------------------
    def submit(self, fn: Callable[[StoreTx], T], *, deadline_s: float = BACKGROUND_WRITE_DEADLINE_S) -> Future[T]:
        """Run `fn` in a write transaction on the writer thread; never blocks the caller.

        `fn` runs in its own SAVEPOINT: if it raises, none of its writes are kept (other jobs sharing the
        transaction are unaffected) and the future carries the exception. The future resolves only after the
        COMMIT, so awaiting it (`asyncio.wrap_future`) means "durably stored". `fn` must only touch the
        database: it runs on another thread and may run again never.
        """
        future: Future[T] = Future()
        with self._writer_lock:
            if self._closed or self._conn is None:
                raise StoreError(f"store {self.path} is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="wacall-store-writer", daemon=True)
                self._writer.start()
            with self._settled:
                self._queued += 1
            self._queue.put(_Job(fn, future, time.monotonic() + deadline_s))
        return future

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write queued before this call is committed (or failed); False on timeout.

        For shutdown and for readers that must see the runtime's fire-and-forget writes. Blocking: from the
        event loop use `await asyncio.to_thread(store.flush)`.
        """
        with self._settled:
            target = self._queued
            return self._settled.wait_for(lambda: self._done >= target, timeout)

    def _settle(self) -> None:
        """Read-your-writes for sync readers: wait (briefly) for writes queued before the read."""
        if self._writer is None or threading.current_thread() is self._writer:
            return
        with self._settled:
            if self._done >= self._queued:
                return
        if not self.flush(READ_SETTLE_S):
            log.warning("reading %s with writes still queued (the database is slow or locked)", self.path)

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Job] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # the writer must outlive any batch: a dead one hangs every write
                log.exception("store writer: a batch failed unexpectedly; its writes are refused")
                for job in batch:
                    if not job.future.done():
                        with contextlib.suppress(Exception):
                            if job.future.running() or job.future.set_running_or_notify_cancel():
                                job.future.set_exception(exc)
            with self._settled:
                self._done += len(batch)
                self._settled.notify_all()

    def _run_batch(self, batch: list[_Job]) -> None:
        """One transaction for the batch, one SAVEPOINT per job; a locked database is retried per deadline."""
        with self._lock:
            try:
                conn = self._db()
            except StoreError as exc:
                for job in batch:
                    _fail(job, exc)
                return
            while True:
                try:
                    self._begin_write(conn)
                    break
                except Exception as exc:  # busy/locked, but also a damaged file, a full disk, a lost server
                    if not self._is_busy_error(exc):
                        for job in batch:
                            _fail(job, exc)
                        return
                    now = time.monotonic()
                    expired = [job for job in batch if job.deadline <= now]
                    for job in expired:
                        _fail(job, StoreBusyError(f"{self.path} stayed locked: {exc}"))
                    batch = [job for job in batch if job.deadline > now]
                    if not batch:
                        return
                    time.sleep(0.01)
            tx = StoreTx(conn, self._clock)
            results: list[tuple[_Job, bool, Any]] = []
            try:
                for job in batch:
                    if not job.future.set_running_or_notify_cancel():
                        continue  # cancelled while queued: its caller no longer wants it
                    conn.execute("SAVEPOINT job")
                    try:
                        value = job.fn(tx)
                    except BaseException as exc:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        results.append((job, False, exc))
                    else:
                        conn.execute("RELEASE job")
                        results.append((job, True, value))
                conn.execute("COMMIT")
            except BaseException as exc:  # the transaction itself failed: nothing of the batch is stored
                if conn.in_transaction:
                    with contextlib.suppress(Exception):  # after an I/O error SQLite may have rolled back
                        conn.execute("ROLLBACK")
                for job in batch:
                    future = job.future
                    if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                        future.set_exception(exc)
                return
        for job, ok, value in results:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _write(self, fn: Callable[[StoreTx], T]) -> T:
        """A synchronous write: inline before the writer thread exists, through it (in order) after."""
        if self._writer is not None and threading.current_thread() is not self._writer:
            return self.submit(fn, deadline_s=self._sync_deadline_s).result()
        with self._tx() as conn:
            return fn(StoreTx(conn, self._clock))

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and close both connections; idempotent."""
        with self._writer_lock:
            self._closed = True
            writer = self._writer
            if writer is not None:
                self._queue.put(_STOP)
        if writer is not None and writer is not threading.current_thread():
            writer.join(CLOSE_WAIT_S)
            if writer.is_alive():  # a database locked from outside: do not hold up the process's exit for it
                log.error("store %s: queued writes not committed after %.0f s; giving up", self.path, CLOSE_WAIT_S)
                return
        with self._lock:
            for conn in (self._reader, self._conn):
                if conn is not None:
                    conn.close()
            self._reader = None
            self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # calls ---------------------------------------------------------------------------------------------
    def save_call(self, call: CallRecord) -> None:
        """Insert or fully overwrite one call; `created_at` defaults to now so every row sorts."""
        self._write(lambda tx: tx.save_call(call))

    def update_call(self, call_id: str, **changes: Any) -> CallRecord | None:
        """Change some fields of a call; returns the updated call, or None if there is no such call."""
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise ValueError(f"unknown call field(s): {', '.join(unknown)}")
        return self._write(lambda tx: tx.update_call(call_id, **changes))

    def _rows(self, query: str, params: Sequence[Any] = (), *, settle: bool = True) -> list[Row]:
        """Every read: after the writes queued before it (unless `settle=False`), on the read connection."""
        if settle:
            self._settle()
        with self._rlock:
            return self._read_db().execute(query, params).fetchall()

    def get_call(self, call_id: str) -> CallRecord | None:
        rows = self._rows("SELECT * FROM calls WHERE id = ?", (call_id,))
        return _call_from_row(rows[0]) if rows else None

    def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        """Newest first, for `wacall calls`."""
        query = "SELECT * FROM calls ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [_call_from_row(r) for r in self._rows(query, (max(0, int(limit)),))]

    def find_calls(
        self,
        *,
        direction: str | None = None,
        number: str | None = None,
        outcome: str | None = None,
        flow: str | None = None,
        handled_by: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
        offset: int = 0,
        payload: str | None = None,
    ) -> list[CallRecord]:
        """Newest first, filtered in SQL so the calls API never loads the whole table to pick a page.

        Every value is a bound parameter; only the fixed clauses below are ever joined into the text.
        `since` is inclusive and `until` exclusive, compared on the fixed-width UTC text `_ts` writes.
        """
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("direction", direction),
            ("outcome", outcome),
            ("flow", flow),
            ("handled_by", handled_by),
            ("payload", payload),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if number is not None:
            where.append("(from_number = ? OR to_number = ?)")
            params += [number, number]
        if since is not None:
            where.append("created_at >= ?")
            params.append(_ts(since, "since"))
        if until is not None:
            where.append("created_at < ?")
            params.append(_ts(until, "until"))
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        query = f"SELECT * FROM calls {clause}ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        params += [max(0, int(limit)), max(0, int(offset))]
        return [_call_from_row(r) for r in self._rows(query, params)]

    def call_facts(self, since: datetime, until: datetime, *, simulated: bool = False) -> list[CallFacts]:
        """Oldest first, what reports add up (agent/analytics.py): one query, no transcripts or payloads.

        `since` is inclusive and `until` exclusive, as in `find_calls`; simulated calls only when asked for.
        """
        params = (_ts(since, "since"), _ts(until, "until"), int(simulated))
        return [facts_from_row(r) for r in self._rows(self._facts_query, params)]

    def campaign_counts(
        self, *, since: datetime | None = None, until: datetime | None = None, simulated: bool | None = None
    ) -> list[CampaignCount]:
        """Calls per payload, most calls first: how each button or link campaign did. Calls without a
        payload are left out; a payload seen from both a button and a link counts once, under the most
        common source. `since`/`until` bound `created_at` as in `find_calls`."""
        where = ["payload IS NOT NULL"]
        params: list[Any] = []
        if since is not None:
            where.append("created_at >= ?")
            params.append(_ts(since, "since"))
        if until is not None:
            where.append("created_at < ?")
            params.append(_ts(until, "until"))
        if simulated is not None:
            where.append("simulated = ?")
            params.append(int(simulated))
        query = (
            "SELECT payload, payload_source, COUNT(*) AS calls, "
            "SUM(CASE WHEN answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answered, "
            "SUM(CASE WHEN handover_queue IS NOT NULL THEN 1 ELSE 0 END) AS handed_over "
            f"FROM calls WHERE {' AND '.join(where)} GROUP BY payload, payload_source"
        )
        merged: dict[str, tuple[list[int], dict[str | None, int]]] = {}
        for row in self._rows(query, params):
            totals, sources = merged.setdefault(row["payload"], ([0, 0, 0], {}))
            totals[0] += row["calls"]
            totals[1] += row["answered"] or 0
            totals[2] += row["handed_over"] or 0
            sources[row["payload_source"]] = sources.get(row["payload_source"], 0) + row["calls"]
        counts = [
            CampaignCount(payload, max(sources, key=lambda s: sources[s]), calls, answered, handed)
            for payload, ([calls, answered, handed], sources) in merged.items()
        ]
        return sorted(counts, key=lambda c: (-c.calls, c.payload))

    def live_calls(self) -> list[CallRecord]:
        query = "SELECT * FROM calls WHERE state != ? AND ended_at IS NULL ORDER BY created_at"
        return [_call_from_row(r) for r in self._rows(query, (ENDED_STATE,))]

    def unsettled_endings(self) -> list[CallRecord]:
        """Ended calls whose terminate Meta never acknowledged (`ending_owed` without `ending_settled`): Meta
        bills them until it hears, so the next start sends it again."""
        query = (
            "SELECT * FROM calls WHERE id IN (SELECT call_id FROM call_events WHERE event = ?) "
            "AND id NOT IN (SELECT call_id FROM call_events WHERE event = ?) ORDER BY created_at"
        )
        return [_call_from_row(r) for r in self._rows(query, (ENDING_OWED, ENDING_SETTLED))]

    def mark_live_calls_ended(
        self, *, now: datetime, reason: str = ENDED_BY_RESTART, simulated: bool | None = None
    ) -> list[str]:
        """At startup: no call can have survived the previous process, so close every one left open.

        `simulated` limits this to simulated (True) or real (False) calls: a `wacall simulate` sharing the data
        dir with a running server owns only its own calls. `duration_s` is left as it was: the real end is
        unknown (a late terminate webhook may still fill it), and guessing "until the restart" would over-bill.
        """
        return self._write(lambda tx: tx.mark_live_calls_ended(now=now, reason=reason, simulated=simulated))

    # call events ---------------------------------------------------------------------------------------
    def record_event(
        self,
        call_id: str,
        event: str,
        at: datetime,
        payload: Mapping[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
        received_at: datetime | None = None,
    ) -> bool:
        """Store an event once; False means this exact event was already stored (a retried webhook)."""
        written = self._write(
            lambda tx: tx.record_event(call_id, event, at, payload, dedupe_key=dedupe_key, received_at=received_at)
        )
        return written.stored

    def list_events(self, call_id: str, *, settle: bool = True) -> list[CallEventRecord]:
        """In arrival order, which is what happened to us (Meta's `at` order may differ, §1.2).

        `settle=False` skips waiting for queued writes, for a caller that knows what it needs is committed
        (webhook events are, before they are handled) and must not wait behind a locked database.
        """
        rows = self._rows("SELECT * FROM call_events WHERE call_id = ? ORDER BY seq", (call_id,), settle=settle)
        return [_event_from_row(r) for r in rows]

    def unhandled_events(self, limit: int = 10_000) -> list[CallEventRecord]:
        """Webhook events stored but never marked handled, oldest first: what start-up must still act on."""
        query = "SELECT * FROM call_events WHERE handled = 0 ORDER BY seq LIMIT ?"
        return [_event_from_row(r) for r in self._rows(query, (max(0, int(limit)),))]

    def mark_handled(self, dedupe_keys: Sequence[str]) -> int:
        """Synchronous `StoreTx.mark_handled`; the runtime queues it with `submit` instead."""
        keys = list(dedupe_keys)
        return self._write(lambda tx: tx.mark_handled(keys))

    # per-user calling state ----------------------------------------------------------------------------
    def save_recording(self, recording: RecordingRecord) -> None:
        """Insert or overwrite a call's recording reference."""
        self._write(lambda tx: tx.save_recording(recording))

    def get_recording(self, call_id: str) -> RecordingRecord | None:
        rows = self._rows("SELECT * FROM recordings WHERE call_id = ?", (call_id,))
        return _recording_from_row(rows[0]) if rows else None

    def delete_recording(self, call_id: str) -> RecordingRecord | None:
        """Remove the reference (the caller deletes the file); returns what was removed, if anything."""
        return self._write(lambda tx: tx.delete_recording(call_id))

    def recordings_started_before(self, cutoff: datetime, limit: int = 1000) -> list[RecordingRecord]:
        """Oldest first: what a retention sweep deletes."""
        query = "SELECT * FROM recordings WHERE started_at < ? ORDER BY started_at LIMIT ?"
        return [_recording_from_row(r) for r in self._rows(query, (_ts(cutoff, "cutoff"), max(0, int(limit))))]

    def get_user_state(self, phone_number_id: str, user: str) -> UserStateRecord | None:
        query = "SELECT * FROM user_states WHERE phone_number_id = ? AND user_id = ?"
        rows = self._rows(query, (phone_number_id, user))
        return _user_state_from_row(rows[0]) if rows else None

    def put_user_state(self, state: UserStateRecord) -> None:
        """Replace the whole state: the rules compute a complete new state, so partial writes never mix."""
        self._write(lambda tx: tx.put_user_state(state))

    # contact events ------------------------------------------------------------------------------------
    def add_contact_event(self, event: ContactEvent) -> int:
        return self._write(lambda tx: tx.add_contact_event(event))

    def list_contact_events(self, *, user: str | None = None, limit: int = 100) -> list[ContactEvent]:
        """Newest first, optionally for one user."""
        query = "SELECT * FROM contact_events"
        params: list[Any] = []
        if user is not None:
            query += " WHERE user_id = ?"
            params.append(user)
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(max(0, int(limit)))
        rows = self._rows(query, params)
        return [
            ContactEvent(
                id=r["id"],
                at=datetime.fromisoformat(r["at"]),
                phone_number_id=r["phone_number_id"],
                user=r["user_id"],
                kind=r["kind"],
                reason=r["reason"],
                call_id=r["call_id"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]
