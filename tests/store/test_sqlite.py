"""The store, on SQLite and on PostgreSQL alike (the `open_store` fixture runs each test on both): survives a
restart intact, stores a re-delivered webhook once, and takes writes from many threads at once. Tests of the
SQLite file itself (its location, WAL, old versions, damage) run on SQLite only."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agent.store.base import (
    ENDED_BY_RESTART,
    CallRecord,
    ContactEvent,
    Store,
    StoreError,
    UserStateRecord,
    default_db_path,
)
from agent.store.sqlite import SCHEMA_VERSION, SqliteStore
from agent.whatsapp.pricing import BUSINESS_INITIATED, RateCard, price_call
from agent.whatsapp.rules import (
    PermissionStatus,
    UserCallingState,
    record_business_call_answered,
    record_business_call_unanswered,
    record_permission_granted,
    record_permission_request,
    record_user_message,
)
from tests.conftest import StoreOpener

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PNID = "106540000000002"


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(open_store: StoreOpener) -> SqliteStore:
    return open_store(clock=FixedClock(T0))


def connect_payload(call_id: str, ts: int = 1760681506) -> dict[str, object]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290000000001",
                "changes": [
                    {
                        "field": "calls",
                        "value": {
                            "calls": [
                                {
                                    "id": call_id,
                                    "from": "15550002222",
                                    "to": "15550001111",
                                    "event": "connect",
                                    "timestamp": str(ts),
                                    "direction": "USER_INITIATED",
                                    "session": {"sdp_type": "offer", "sdp": "v=0\r\n"},
                                }
                            ]
                        },
                    }
                ],
            }
        ],
    }


def test_new_database_is_created_under_the_data_dir(data_dir: Path) -> None:
    with SqliteStore(default_db_path(data_dir), clock=FixedClock(T0)) as store:
        assert store.schema_version == SCHEMA_VERSION == 8
        assert isinstance(store, Store)
    assert default_db_path(data_dir) == data_dir / "wacall.sqlite3"
    assert (data_dir / "wacall.sqlite3").exists()
    with sqlite3.connect(data_dir / "wacall.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert SqliteStore.in_data_dir(data_dir).path == str(data_dir / "wacall.sqlite3")


def test_restart_keeps_everything_and_ends_live_calls(open_store: StoreOpener) -> None:
    card = RateCard.from_csv("country,calling_code,usd_per_minute\nES,34,0.0313\n")
    cost = price_call(BUSINESS_INITIATED, "34600000001", 61, card)
    completed = CallRecord(
        id="wacid.DONE",
        direction="BUSINESS_INITIATED",
        from_number="34910000000",
        to_number="34600000001",
        phone_number_id=PNID,
        state="ended",
        outcome="completed",
        end_reason="remote_completed",
        created_at=T0,
        answered_at=T0 + timedelta(seconds=20),
        ended_at=T0 + timedelta(seconds=81),
        duration_s=61.0,
        cost=cost,
        biz_opaque_callback_data="outreach-991",
        flow="demo",
        slots={"order": "ON-12853", "date": "mañana"},
        transcript=[{"who": "user", "text": "¿Dónde está mi pedido?"}, {"who": "bot", "text": "Llega hoy."}],
        handled_by="bot",
    )
    active = CallRecord(
        id="wacid.LIVE",
        direction="USER_INITIATED",
        from_number="15550002222",
        to_number="15550001111",
        phone_number_id=PNID,
        state="active",
        created_at=T0 + timedelta(minutes=5),
        answered_at=T0 + timedelta(minutes=5, seconds=2),
        cost=Decimal("0.0000"),
        flow="demo",
    )
    ringing = CallRecord(
        id="wacid.RING", direction="USER_INITIATED", state="ringing", created_at=T0 + timedelta(minutes=6)
    )
    state = record_user_message(UserCallingState.new(PNID, "34600000001"), T0 - timedelta(hours=1))
    state = record_permission_request(state, T0 - timedelta(hours=1))
    state = record_permission_granted(state, T0 - timedelta(minutes=30), permanent=False)
    state = record_business_call_unanswered(state, T0 - timedelta(minutes=10))
    state = record_business_call_answered(state, T0 + timedelta(seconds=20))
    missed = [
        ContactEvent(
            at=T0 + timedelta(hours=10),
            user="15550002222",
            reason="after_hours",
            phone_number_id=PNID,
            call_id="wacid.LATE",
            detail={"rule": "hours.closed"},
        ),
        ContactEvent(at=T0 + timedelta(hours=11), user="15550003333", reason="over_capacity", phone_number_id=PNID),
    ]

    first = open_store(clock=FixedClock(T0))
    for call in (completed, active, ringing):
        first.save_call(call)
    assert first.record_event("wacid.DONE", "connect", T0, connect_payload("wacid.DONE"))
    assert first.record_event("wacid.DONE", "terminate", T0 + timedelta(seconds=81), {"status": "COMPLETED"})
    assert first.record_event("wacid.LIVE", "connect", T0 + timedelta(minutes=5), connect_payload("wacid.LIVE"))
    first.put_user_state(state.to_record())
    ids = [first.add_contact_event(e) for e in missed]
    events_before = {cid: first.list_events(cid) for cid in ("wacid.DONE", "wacid.LIVE")}
    first.close()

    restart_at = T0 + timedelta(hours=12)
    second = open_store(clock=FixedClock(restart_at))
    assert sorted(second.mark_live_calls_ended(now=restart_at)) == ["wacid.LIVE", "wacid.RING"]

    assert second.get_call("wacid.DONE") == completed
    assert str(second.get_call("wacid.DONE").cost) == "0.0344"  # 61 s = 11 pulses x 0.0313 / 10, exact
    live = second.get_call("wacid.LIVE")
    assert (live.state, live.end_reason, live.outcome, live.ended_at) == (
        "ended",
        ENDED_BY_RESTART,
        "interrupted",
        restart_at,
    )
    assert (live.answered_at, live.cost, live.from_number, live.flow) == (
        active.answered_at,
        Decimal("0.0000"),
        "15550002222",
        "demo",
    )
    ring = second.get_call("wacid.RING")
    assert (ring.state, ring.end_reason, ring.answered_at) == ("ended", ENDED_BY_RESTART, None)
    assert second.live_calls() == []
    assert {cid: second.list_events(cid) for cid in ("wacid.DONE", "wacid.LIVE")} == events_before
    assert second.list_events("wacid.DONE")[0].payload == connect_payload("wacid.DONE")
    restored = UserCallingState.from_record(second.get_user_state(PNID, "34600000001"))
    assert restored == state
    assert restored.permission is PermissionStatus.TEMPORARY
    assert restored.connected_calls == (T0 + timedelta(seconds=20),)
    listed = second.list_contact_events()
    assert [e.id for e in listed] == list(reversed(ids))
    assert [(e.reason, e.user, e.call_id, dict(e.detail)) for e in listed] == [
        ("over_capacity", "15550003333", None, {}),
        ("after_hours", "15550002222", "wacid.LATE", {"rule": "hours.closed"}),
    ]
    # A retried webhook after the restart is still recognised as already stored.
    assert not second.record_event("wacid.DONE", "connect", T0, connect_payload("wacid.DONE"))
    second.close()

    third = open_store()
    assert third.mark_live_calls_ended(now=restart_at + timedelta(hours=1)) == []
    assert third.get_call("wacid.LIVE").ended_at == restart_at
    assert [c.id for c in third.recent_calls()] == ["wacid.RING", "wacid.LIVE", "wacid.DONE"]
    third.close()


def test_duplicate_webhook_is_stored_once(store: SqliteStore) -> None:
    payload = connect_payload("wacid.A")
    assert store.record_event("wacid.A", "connect", T0, payload) is True
    assert store.record_event("wacid.A", "connect", T0, connect_payload("wacid.A")) is False
    assert len(store.list_events("wacid.A")) == 1
    # Same call and event, different content (a later retry with a new timestamp) is a new event.
    assert store.record_event("wacid.A", "connect", T0 + timedelta(seconds=5), connect_payload("wacid.A", 1760681511))
    assert store.record_event("wacid.A", "terminate", T0, None)
    assert store.record_event("wacid.A", "custom", T0, {"n": 1}, dedupe_key="meta-msg-1")
    assert not store.record_event("wacid.A", "custom", T0, {"n": 2}, dedupe_key="meta-msg-1")
    assert [e.event for e in store.list_events("wacid.A")] == ["connect", "connect", "terminate", "custom"]
    assert store.list_events("wacid.A")[0].received_at == T0


def test_terminate_before_connect_is_kept(store: SqliteStore) -> None:
    assert store.record_event("wacid.EARLY", "terminate", T0, {"status": "FAILED"})
    assert store.get_call("wacid.EARLY") is None
    assert store.list_events("wacid.EARLY")[0].payload == {"status": "FAILED"}


def test_update_call(store: SqliteStore) -> None:
    store.save_call(CallRecord(id="wacid.U", direction="USER_INITIATED", created_at=T0))
    updated = store.update_call(
        "wacid.U",
        state="active",
        answered_at=T0 + timedelta(seconds=3),
        slots={"name": "Ana"},
        cost=Decimal("0"),
    )
    assert updated is not None
    assert (updated.state, updated.answered_at, updated.slots, updated.cost) == (
        "active",
        T0 + timedelta(seconds=3),
        {"name": "Ana"},
        Decimal("0"),
    )
    assert store.get_call("wacid.U") == updated
    assert store.update_call("wacid.NOPE", state="ended") is None
    with pytest.raises(ValueError, match="unknown call field"):
        store.update_call("wacid.U", colour="blue")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.update_call("wacid.U", ended_at=datetime(2026, 11, 24, 10, 0))
    assert store.get_call("wacid.U") == updated  # the refused update changed nothing


def test_save_call_overwrites_and_defaults_created_at(store: SqliteStore) -> None:
    store.save_call(CallRecord(id="wacid.S", direction="USER_INITIATED"))
    assert store.get_call("wacid.S").created_at == T0
    store.save_call(CallRecord(id="wacid.S", direction="USER_INITIATED", state="ended", created_at=T0))
    assert store.get_call("wacid.S").state == "ended"
    assert len(store.recent_calls()) == 1


def test_recent_calls_newest_first_with_limit(store: SqliteStore) -> None:
    for i in range(5):
        store.save_call(CallRecord(id=f"wacid.{i}", direction="USER_INITIATED", created_at=T0 + timedelta(minutes=i)))
    assert [c.id for c in store.recent_calls(3)] == ["wacid.4", "wacid.3", "wacid.2"]


def test_contact_events_by_user(store: SqliteStore) -> None:
    for i, user in enumerate(["111", "222", "111"]):
        store.add_contact_event(ContactEvent(at=T0 + timedelta(minutes=i), user=user, reason="unanswered"))
    mine = store.list_contact_events(user="111")
    assert [e.at for e in mine] == [T0 + timedelta(minutes=2), T0]
    assert len(store.list_contact_events(limit=1)) == 1


def test_user_state_missing_and_replaced(store: SqliteStore) -> None:
    assert store.get_user_state(PNID, "999") is None
    record = UserStateRecord(phone_number_id=PNID, user="999", permission_status="permanent", needs_system_message=True)
    store.put_user_state(record)
    assert store.get_user_state(PNID, "999") == UserStateRecord(
        phone_number_id=PNID, user="999", permission_status="permanent", needs_system_message=True
    )
    store.put_user_state(UserStateRecord(phone_number_id=PNID, user="999", permission_status="revoked"))
    assert store.get_user_state(PNID, "999").permission_status == "revoked"
    assert store.get_user_state("other-number", "999") is None


def test_concurrent_writes_from_threads(store: SqliteStore) -> None:
    threads, per_thread = 8, 40
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                call_id = f"wacid.T{n}.{i}"
                store.save_call(
                    CallRecord(id=call_id, direction="USER_INITIATED", created_at=T0 + timedelta(seconds=i))
                )
                store.record_event(call_id, "connect", T0, {"n": n, "i": i})
                store.update_call(call_id, state="ended", ended_at=T0 + timedelta(seconds=i + 1))
                store.add_contact_event(ContactEvent(at=T0, user=f"u{n}", reason="rejected", call_id=call_id))
                store.put_user_state(UserStateRecord(phone_number_id=PNID, user=f"u{n}", consecutive_unanswered=i))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(store.recent_calls(limit=10_000)) == threads * per_thread
    assert all(c.state == "ended" for c in store.recent_calls(limit=10_000))
    assert len(store.list_contact_events(limit=10_000)) == threads * per_thread
    assert all(store.get_user_state(PNID, f"u{n}").consecutive_unanswered == per_thread - 1 for n in range(threads))
    assert sum(len(store.list_events(f"wacid.T{n}.{i}")) for n in range(threads) for i in range(per_thread)) == (
        threads * per_thread
    )


def test_same_webhook_from_many_threads_is_stored_once(store: SqliteStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def deliver() -> None:
        start.wait()
        stored = store.record_event("wacid.RACE", "connect", T0, connect_payload("wacid.RACE"))
        with lock:
            results.append(stored)

    workers = [threading.Thread(target=deliver) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) == [False] * 5 + [True]
    assert len(store.list_events("wacid.RACE")) == 1


def test_version_1_file_is_upgraded_with_the_handover_columns(data_dir: Path) -> None:
    from agent.store import sqlite as sqlite_module

    data_dir.mkdir(parents=True, exist_ok=True)
    path = default_db_path(data_dir)
    with sqlite3.connect(path) as raw:
        raw.executescript(sqlite_module._SCHEMA_V1)
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "INSERT INTO calls (id, direction, state, created_at) VALUES ('wacid.OLD', 'USER_INITIATED', 'ended', "
            "'2026-01-01T00:00:00+00:00')"
        )
    store = SqliteStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        old = store.get_call("wacid.OLD")
        assert old is not None and old.handover_queue is None and old.talk_s is None
        updated = store.update_call(
            "wacid.OLD",
            handled_by="ana",
            handover_queue="support",
            queue_wait_s=12.5,
            talk_s=61.0,
            handover_outcome="agent_hung_up",
        )
        assert updated is not None
        assert (updated.handled_by, updated.handover_queue, updated.queue_wait_s, updated.talk_s) == (
            "ana",
            "support",
            12.5,
            61.0,
        )
        assert updated.handover_outcome == "agent_hung_up"
    finally:
        store.close()


def test_newer_schema_is_refused(data_dir: Path) -> None:
    path = default_db_path(data_dir)
    SqliteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this wacall understands"):
        SqliteStore(path)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wacall.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the wacall database"):
        SqliteStore(path)


def test_closed_store_refuses_use(store: SqliteStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        store.get_call("wacid.X")


def test_in_memory_store() -> None:
    with SqliteStore(":memory:") as mem:
        mem.save_call(CallRecord(id="wacid.M", direction="USER_INITIATED", created_at=T0))
        assert mem.get_call("wacid.M") is not None


def test_simulated_calls_are_flagged_and_restarts_only_end_their_own_kind(open_store: StoreOpener) -> None:
    """`wacall simulate` writes to the same data dir as `serve`: neither may end the other's live calls."""
    with open_store() as store:
        store.save_call(CallRecord(id="wacid.REAL", direction="USER_INITIATED", state="active", created_at=T0))
        store.save_call(
            CallRecord(id="wacid.SIM", direction="USER_INITIATED", state="active", created_at=T0, simulated=True)
        )
        assert store.get_call("wacid.SIM").simulated is True
        assert store.get_call("wacid.REAL").simulated is False
        later = T0 + timedelta(minutes=1)
        assert store.mark_live_calls_ended(now=later, simulated=True) == ["wacid.SIM"]
        assert store.get_call("wacid.REAL").ended_at is None
        assert store.mark_live_calls_ended(now=later, simulated=False) == ["wacid.REAL"]
        assert [c.simulated for c in store.recent_calls()] == [True, False]


def test_version_2_file_is_upgraded_with_the_simulated_flag(data_dir: Path) -> None:
    from agent.store import sqlite as sqlite_module

    data_dir.mkdir(parents=True, exist_ok=True)
    path = default_db_path(data_dir)
    with sqlite3.connect(path) as raw:
        raw.executescript(sqlite_module._SCHEMA_V1)
        raw.executescript(sqlite_module._SCHEMA_V2)
        raw.execute("PRAGMA user_version = 2")
        raw.execute(
            "INSERT INTO calls (id, direction, state, created_at) VALUES ('wacid.OLD', 'USER_INITIATED', 'ended', "
            "'2026-01-01T00:00:00+00:00')"
        )
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 8
        old = store.get_call("wacid.OLD")
        assert old is not None and old.simulated is False
