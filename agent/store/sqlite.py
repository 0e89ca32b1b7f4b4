"""The embedded store: one SQLite file holding calls, their events, per-user calling state and contact events.

Why these choices:

* **stdlib sqlite3, one connection behind a lock.** Webhook traffic is a few writes per call, so serialising
  them costs nothing and rules out every "database is locked" and cross-thread-connection surprise. Methods
  are safe from any thread, including `asyncio.to_thread` workers.
* **One short transaction per method** (`BEGIN IMMEDIATE` … `COMMIT`), so the webhook handler can write and
  only then answer 200: if the process dies before the ack, Meta retries and the dedupe key absorbs it.
* **WAL + synchronous=FULL.** WAL lets a reader (`wacall calls`) run during writes; FULL makes a committed
  webhook survive power loss too, at a cost of one fsync per write, which this volume can afford.
* **`user_version` migrations.** Each schema change is one entry in `_MIGRATIONS`; a file written by a newer
  wacall is refused instead of being silently misread.
* **Times as ISO-8601 UTC text, money as decimal text.** Both sort and read correctly in the sqlite3 shell,
  and neither loses precision.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.store.base import (
    ENDED_BY_RESTART,
    ENDED_STATE,
    CallEventRecord,
    CallRecord,
    ContactEvent,
    StoreError,
    UserStateRecord,
    default_db_path,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore", "default_db_path"]

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

#: Index i upgrades a database from user_version i to i + 1. Append, never edit a shipped entry.
_MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3)
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


def _call_from_row(row: sqlite3.Row) -> CallRecord:
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


class SqliteStore:
    """`Store` on a SQLite file (or ":memory:" for throwaway use)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the data directory for {self.path}: {exc}") from exc
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot open the wacall database {self.path}: {exc}") from exc

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, **kwargs: Any) -> SqliteStore:
        return cls(default_db_path(data_dir), **kwargs)

    # plumbing ------------------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so it never fails half-way."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
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
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {target + 1}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # calls ---------------------------------------------------------------------------------------------
    def save_call(self, call: CallRecord) -> None:
        """Insert or fully overwrite one call; `created_at` defaults to now so every row sorts."""
        created = call.created_at or self._clock()
        values = {name: _call_column(name, getattr(call, name)) for name in _CALL_FIELDS}
        values["created_at"] = _ts(created, "created_at")
        columns = ", ".join(_CALL_FIELDS)
        marks = ", ".join(f":{n}" for n in _CALL_FIELDS)
        updates = ", ".join(f"{n} = excluded.{n}" for n in _CALL_FIELDS if n != "id")
        with self._tx() as tx:
            tx.execute(
                f"INSERT INTO calls ({columns}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", values
            )

    def update_call(self, call_id: str, **changes: Any) -> CallRecord | None:
        """Change some fields of a call; returns the updated call, or None if there is no such call."""
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise ValueError(f"unknown call field(s): {', '.join(unknown)}")
        with self._tx() as tx:
            if changes:
                assignments = ", ".join(f"{n} = :{n}" for n in changes)
                params = {n: _call_column(n, v) for n, v in changes.items()} | {"_id": call_id}
                tx.execute(f"UPDATE calls SET {assignments} WHERE id = :_id", params)
            row = tx.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _call_from_row(row)

    def get_call(self, call_id: str) -> CallRecord | None:
        with self._lock:
            row = self._db().execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else _call_from_row(row)

    def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        """Newest first, for `wacall calls`."""
        with self._lock:
            rows = (
                self._db()
                .execute("SELECT * FROM calls ORDER BY created_at DESC, rowid DESC LIMIT ?", (max(0, int(limit)),))
                .fetchall()
            )
        return [_call_from_row(r) for r in rows]

    def live_calls(self) -> list[CallRecord]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT * FROM calls WHERE state != ? AND ended_at IS NULL ORDER BY created_at", (ENDED_STATE,)
                )
                .fetchall()
            )
        return [_call_from_row(r) for r in rows]

    def mark_live_calls_ended(
        self, *, now: datetime, reason: str = ENDED_BY_RESTART, simulated: bool | None = None
    ) -> list[str]:
        """At startup: no call can have survived the previous process, so close every one left open.

        `simulated` limits this to simulated (True) or real (False) calls: a `wacall simulate` sharing the data
        dir with a running server owns only its own calls. `duration_s` is left as it was: the real end is
        unknown (a late terminate webhook may still fill it), and guessing "until the restart" would over-bill.
        """
        stamp = _ts(now, "now")
        query = "SELECT id FROM calls WHERE state != ? AND ended_at IS NULL"
        params: list[Any] = [ENDED_STATE]
        if simulated is not None:
            query += " AND simulated = ?"
            params.append(int(simulated))
        with self._tx() as tx:
            ids = [r["id"] for r in tx.execute(query + " ORDER BY created_at", params)]
            tx.executemany(
                "UPDATE calls SET state = ?, end_reason = ?, outcome = COALESCE(outcome, 'interrupted'), "
                "ended_at = ? WHERE id = ?",
                [(ENDED_STATE, reason, stamp, call_id) for call_id in ids],
            )
        return ids

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
        key = dedupe_key or default_dedupe_key(call_id, event, at, payload)
        with self._tx() as tx:
            cursor = tx.execute(
                "INSERT INTO call_events (call_id, event, at, payload, dedupe_key, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(dedupe_key) DO NOTHING",
                (
                    call_id,
                    event,
                    _ts(at, "at"),
                    None if payload is None else _json(payload),
                    key,
                    _ts(received_at or self._clock(), "received_at"),
                ),
            )
            return cursor.rowcount == 1

    def list_events(self, call_id: str) -> list[CallEventRecord]:
        """In arrival order, which is what happened to us (Meta's `at` order may differ, §1.2)."""
        with self._lock:
            rows = self._db().execute("SELECT * FROM call_events WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
        return [
            CallEventRecord(
                call_id=r["call_id"],
                event=r["event"],
                at=datetime.fromisoformat(r["at"]),
                payload=None if r["payload"] is None else json.loads(r["payload"]),
                dedupe_key=r["dedupe_key"],
                received_at=_dt(r["received_at"]),
                seq=r["seq"],
            )
            for r in rows
        ]

    # per-user calling state ----------------------------------------------------------------------------
    def get_user_state(self, phone_number_id: str, user: str) -> UserStateRecord | None:
        with self._lock:
            row = (
                self._db()
                .execute("SELECT * FROM user_states WHERE phone_number_id = ? AND user_id = ?", (phone_number_id, user))
                .fetchone()
            )
        if row is None:
            return None
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

    def put_user_state(self, state: UserStateRecord) -> None:
        """Replace the whole state: the rules compute a complete new state, so partial writes never mix."""
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
        with self._tx() as tx:
            tx.execute(f"INSERT OR REPLACE INTO user_states ({columns}) VALUES ({marks})", values)

    # contact events ------------------------------------------------------------------------------------
    def add_contact_event(self, event: ContactEvent) -> int:
        with self._tx() as tx:
            cursor = tx.execute(
                "INSERT INTO contact_events (at, phone_number_id, user_id, kind, reason, call_id, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _ts(event.at, "at"),
                    event.phone_number_id,
                    event.user,
                    event.kind,
                    event.reason,
                    event.call_id,
                    _json(dict(event.detail)),
                ),
            )
            return int(cursor.lastrowid or 0)

    def list_contact_events(self, *, user: str | None = None, limit: int = 100) -> list[ContactEvent]:
        """Newest first, optionally for one user."""
        query = "SELECT * FROM contact_events"
        params: list[Any] = []
        if user is not None:
            query += " WHERE user_id = ?"
            params.append(user)
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(max(0, int(limit)))
        with self._lock:
            rows = self._db().execute(query, params).fetchall()
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
