"""The persistence seam: records wacall keeps across restarts, and the small `Store` protocol over them.

The named methods are synchronous, for the CLI, tests and start-up: each is one short transaction. The
event loop instead uses `submit`, which runs a job on the store's writer thread and returns a future, so a
slow disk or a database locked by another process never stalls the loop (and so every call's audio). The
SQLite store (`agent/store/sqlite.py`) and the PostgreSQL one (`agent/store/postgres.py`) implement it with
the same SQL and machinery; nothing outside `agent/store/` knows about SQL.

The records are plain data (str, int, Decimal, aware datetimes, JSON-able dicts/lists) so this module has no
imports from the rest of wacall: the domain (`agent.whatsapp.rules`) converts to and from them, never the
other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "DB_FILENAME",
    "ENDED_BY_RESTART",
    "ENDED_STATE",
    "MISSED_REASONS",
    "CallEventRecord",
    "CallRecord",
    "CampaignCount",
    "ContactEvent",
    "RecordingRecord",
    "Store",
    "StoreError",
    "UserStateRecord",
    "default_db_path",
]

T = TypeVar("T")

DB_FILENAME = "wacall.sqlite3"
ENDED_BY_RESTART = "ended_by_restart"
#: The one terminal call state. Any other state (ringing, dialing, connecting, active, handover, or one added
#: later) counts as live, so a restart can never leave a new kind of call looking alive forever.
ENDED_STATE = "ended"
#: Call events of a terminate Meta never acknowledged (its network or servers failed every retry), and of
#: the terminate that finally got through: Meta bills a call until it hears of its end.
ENDING_OWED = "ending_owed"
ENDING_SETTLED = "ending_settled"
#: Reasons a contact event records for a call nobody took.
MISSED_REASONS = ("rejected", "unanswered", "after_hours", "over_capacity")


class StoreError(RuntimeError):
    """The database cannot be used (newer schema, corrupt file, unwritable directory)."""


def default_db_path(data_dir: str | Path) -> Path:
    """`<data_dir>/wacall.sqlite3`: one file to back up, next to whatever else the data dir holds."""
    return Path(data_dir) / DB_FILENAME


@dataclass
class CallRecord:
    """One call as wacall saw it: enough to list it, bill it and replay what the caller said."""

    id: str
    direction: str
    from_number: str | None = None
    to_number: str | None = None
    phone_number_id: str | None = None
    state: str = "ringing"
    outcome: str | None = None
    end_reason: str | None = None
    created_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    cost: Decimal | None = None
    currency: str = "USD"
    biz_opaque_callback_data: str | None = None
    flow: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    transcript: list[Any] = field(default_factory=list)
    handled_by: str | None = None  # the human agent who last talked to the caller, if the call was handed over
    # The handover, when there was one (None otherwise): totals add up across a requeue after a dropped agent.
    handover_queue: str | None = None
    queue_wait_s: float | None = None
    talk_s: float | None = None
    handover_outcome: str | None = None  # answered, abandoned, timed_out, returned_to_bot, agent/caller_hung_up
    # Placed by `wacall simulate` (simulated Meta and caller), kept apart from real calls in listings and restarts.
    simulated: bool = False
    # What the caller came from: a call button's or deep link's payload, and which ("button" or "link").
    payload: str | None = None
    payload_source: str | None = None
    # The worker holding the call's media (WACALL_WORKER_ID), when several share a database (agent/cluster.py).
    owner: str | None = None


@dataclass(frozen=True)
class CampaignCount:
    """Calls per payload (one campaign's button or link): how many came, were answered, were handed over."""

    payload: str
    source: str | None
    calls: int
    answered: int
    handed_over: int


@dataclass(frozen=True)
class RecordingRecord:
    """A call's recording file. Written when recording starts (so a crash still leaves the partial file
    referenced, and retention finds it), completed with its length and size when the call ends."""

    call_id: str
    path: str
    started_at: datetime
    ended_at: datetime | None = None
    duration_s: float | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class CallEventRecord:
    """One webhook-derived event for a call, with the raw payload kept for audits and replays."""

    call_id: str
    event: str
    at: datetime
    payload: Mapping[str, Any] | None
    dedupe_key: str
    received_at: datetime | None = None
    seq: int | None = None
    # False until the runtime has acted on it: a webhook event left unhandled is handled at start-up.
    handled: bool = True
    # The delivery's facts the handler needs besides the event (number, contact), to rebuild it later.
    envelope: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class UserStateRecord:
    """The persisted shape of `agent.whatsapp.rules.UserCallingState` (see its docstring for meaning)."""

    phone_number_id: str
    user: str
    permission_status: str = "none"
    permission_expires_at: datetime | None = None
    permission_source: str | None = None
    permission_updated_at: datetime | None = None
    permission_requests: Sequence[datetime] = ()
    requests_reset_at: datetime | None = None
    consecutive_unanswered: int = 0
    needs_system_message: bool = False
    window_refreshed_at: datetime | None = None
    connected_calls: Sequence[datetime] = ()


@dataclass(frozen=True)
class ContactEvent:
    """Something a human should follow up: today, a missed call and why it was missed."""

    at: datetime
    user: str
    kind: str = "missed_call"
    reason: str = "unanswered"
    phone_number_id: str | None = None
    call_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@runtime_checkable
class Store(Protocol):
    """What the runtime needs from persistence. Every method is one short transaction."""

    # calls
    def save_call(self, call: CallRecord) -> None: ...
    def update_call(self, call_id: str, **changes: Any) -> CallRecord | None: ...
    def get_call(self, call_id: str) -> CallRecord | None: ...
    def recent_calls(self, limit: int = 20) -> list[CallRecord]: ...
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
    ) -> list[CallRecord]: ...
    def campaign_counts(
        self, *, since: datetime | None = None, until: datetime | None = None, simulated: bool | None = None
    ) -> list[CampaignCount]: ...
    def live_calls(self) -> list[CallRecord]: ...
    def unsettled_endings(self) -> list[CallRecord]: ...
    def mark_live_calls_ended(
        self, *, now: datetime, reason: str = ENDED_BY_RESTART, simulated: bool | None = None
    ) -> list[str]: ...

    # call events
    def record_event(
        self,
        call_id: str,
        event: str,
        at: datetime,
        payload: Mapping[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
        received_at: datetime | None = None,
    ) -> bool: ...
    def list_events(self, call_id: str, *, settle: bool = True) -> list[CallEventRecord]: ...
    def unhandled_events(self, limit: int = 10_000) -> list[CallEventRecord]: ...
    def mark_handled(self, dedupe_keys: Sequence[str]) -> int: ...

    # asynchronous writes: `fn` gets a transaction (agent.store.sqlite.StoreTx) on the writer thread
    def submit(self, fn: Callable[[Any], T], *, deadline_s: float = ...) -> Future[T]: ...
    def flush(self, timeout: float | None = None) -> bool: ...

    # per-user calling state
    def get_user_state(self, phone_number_id: str, user: str) -> UserStateRecord | None: ...
    def put_user_state(self, state: UserStateRecord) -> None: ...

    # recordings
    def save_recording(self, recording: RecordingRecord) -> None: ...
    def get_recording(self, call_id: str) -> RecordingRecord | None: ...
    def delete_recording(self, call_id: str) -> RecordingRecord | None: ...
    def recordings_started_before(self, cutoff: datetime, limit: int = 1000) -> list[RecordingRecord]: ...

    # contact events
    def add_contact_event(self, event: ContactEvent) -> int: ...
    def list_contact_events(self, *, user: str | None = None, limit: int = 100) -> list[ContactEvent]: ...

    def close(self) -> None: ...
