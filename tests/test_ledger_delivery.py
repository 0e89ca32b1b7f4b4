"""Webhook deliveries under faults: a delivery is stored whole or not at all, stored events are handled
exactly once even across a crash, another number's events leave our users alone, and a database locked
by another process delays the delivery, never the event loop. The exactly-once tests run on SQLite and on
PostgreSQL (`database_url`).

The runtime is real (ledger, SQLite store, app) but its speech models are stand-ins: these tests exercise
the webhook path, and connect handling is replaced by a recorder so no WebRTC is involved.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agent.app import create_app
from agent.config import Settings
from agent.ledger import CallLedger
from agent.runtime import Models, Runtime
from agent.store.base import default_db_path
from agent.store.select import open_configured_store
from agent.store.sqlite import SqliteStore, StoreTx
from agent.whatsapp.webhooks import CallWebhook, parse_webhook

APP_SECRET = "test-app-secret"
OUR_NUMBER = "106540000000002"
OTHER_NUMBER = "999990000000009"
USER = "15550002222"


class NoTranscriber:
    async def transcribe(self, audio16k: np.ndarray) -> str:
        return ""


class NoSynthesizer:
    sample_rate = 48_000

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        yield np.zeros(480, dtype=np.int16)

    async def synthesize(self, text: str) -> np.ndarray:
        return np.zeros(480, dtype=np.int16)


def settings_for(data_dir: Path, database_url: str = "") -> Settings:
    return Settings(
        data_dir=str(data_dir), app_secret=APP_SECRET, phone_number_id=OUR_NUMBER, database_url=database_url
    )


def make_runtime(data_dir: Path, database_url: str = "") -> Runtime:
    models = Models(transcriber=NoTranscriber(), synthesizer=NoSynthesizer())
    return Runtime(settings_for(data_dir, database_url), models)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """Empty for the SQLite file in the data dir, else a fresh PostgreSQL database: each test runs on both."""
    return "" if backend == "sqlite" else str(request.getfixturevalue("postgres_url"))


def call_event(call_id: str, event: str = "connect", ts: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": call_id,
        "from": USER,
        "to": "15550001111",
        "event": event,
        "timestamp": str(ts if ts is not None else int(time.time())),
        "direction": "USER_INITIATED",
    }
    if event == "connect":
        body["session"] = {"sdp_type": "offer", "sdp": "v=0\r\n"}
    else:
        body["status"] = "COMPLETED"
    return body


def delivery(calls: list[dict[str, Any]], phone_number_id: str = OUR_NUMBER) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290000000001",
                "changes": [
                    {
                        "field": "calls",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
                            "contacts": [{"profile": {"name": "Ana"}, "wa_id": USER}],
                            "calls": calls,
                        },
                    }
                ],
            }
        ],
    }


def message_delivery(phone_number_id: str) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290000000001",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550009999", "phone_number_id": phone_number_id},
                            "contacts": [{"profile": {"name": "Ana"}, "wa_id": USER}],
                            "messages": [
                                {"from": USER, "id": "wamid.M1", "timestamp": str(int(time.time())), "type": "text"}
                            ],
                        },
                    }
                ],
            }
        ],
    }


def signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    sig = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": sig}


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wacall-store-writer"]


@pytest.fixture(autouse=True)
def no_leaked_writer_threads() -> Iterator[None]:
    before = set(writer_threads())
    yield
    leaked = [t for t in writer_threads() if t not in before]
    assert leaked == [], f"writer threads left running: {leaked}"


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connect the runtime acts on (instead of answering it), by call id."""
    seen: list[str] = []

    async def record(self: Runtime, event: CallWebhook) -> None:
        seen.append(event.call.id)

    monkeypatch.setattr(Runtime, "_on_connect", record)
    return seen


async def settled(runtime: Runtime) -> None:
    """Wait for handler tasks and the writes they queued."""
    for _ in range(50):
        tasks = [t for t in runtime._tasks if not t.done()]
        if not tasks:
            break
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(runtime.store.flush, 5.0)


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://wacall.test")


# ---- a delivery is all or nothing -----------------------------------------------------------------


async def test_delivery_failing_half_way_stores_nothing_and_metas_retry_is_handled(
    tmp_path: Path, connects: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported loss: [good connect, event that fails to store] answered 500 with the connect kept, so
    Meta's retry was a "duplicate" and the call was never handled."""
    runtime = make_runtime(tmp_path)
    real_record = StoreTx.record_event
    failures = {"left": 1}

    def flaky(self: StoreTx, call_id: str, *args: Any, **kwargs: Any) -> Any:
        if call_id == "wacid.BAD" and failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_record(self, call_id, *args, **kwargs)

    monkeypatch.setattr(StoreTx, "record_event", flaky)
    body, headers = signed(delivery([call_event("wacid.GOOD"), call_event("wacid.BAD", "terminate")]))
    try:
        async with client_for(runtime) as client:
            first = await client.post("/webhook", content=body, headers=headers)
            assert first.status_code == 500
            assert runtime.store.list_events("wacid.GOOD") == []  # nothing of the delivery was kept
            retry = await client.post("/webhook", content=body, headers=headers)
            assert retry.status_code == 200
            await settled(runtime)
        assert connects == ["wacid.GOOD"]
        assert [e.handled for e in runtime.store.list_events("wacid.GOOD")] == [True]
        assert [e.handled for e in runtime.store.list_events("wacid.BAD")] == [True]
    finally:
        await runtime.aclose()


async def test_an_event_that_can_never_be_stored_fails_the_whole_delivery(tmp_path: Path, connects: list[str]) -> None:
    """A timestamp no datetime can hold is refused as malformed (400, not a 500 retried for ever), and the
    delivery is never half-stored."""
    runtime = make_runtime(tmp_path)
    body, headers = signed(delivery([call_event("wacid.GOOD"), call_event("wacid.BAD", "terminate", ts=10**15)]))
    try:
        async with client_for(runtime) as client:
            for _ in range(2):
                assert (await client.post("/webhook", content=body, headers=headers)).status_code == 400
        await settled(runtime)
        assert runtime.store.list_events("wacid.GOOD") == []
        assert connects == []
    finally:
        await runtime.aclose()


# ---- stored but not handled ------------------------------------------------------------------------


async def store_without_handling(data_dir: Path, payload: dict[str, Any], database_url: str = "") -> None:
    """What a crash right after the commit leaves behind: the delivery stored, nothing handled."""
    store = open_configured_store(database_url, data_dir)
    try:
        ledger = CallLedger(store, phone_number_id=OUR_NUMBER)
        fresh = await ledger.record_webhook(parse_webhook(json.dumps(payload).encode()))
        assert len(fresh.calls) == 1
    finally:
        store.close()


async def test_crash_between_commit_and_handling_is_handled_at_start_up_exactly_once(
    tmp_path: Path, connects: list[str], database_url: str
) -> None:
    payload = delivery([call_event("wacid.CRASH")])
    await store_without_handling(tmp_path, payload, database_url)
    with open_configured_store(database_url, tmp_path) as store:
        assert [e.handled for e in store.list_events("wacid.CRASH")] == [False]

    runtime = make_runtime(tmp_path, database_url)  # start-up, inside a running loop: pending events are handled
    try:
        await runtime.handle_pending()
        # Meta's retry of the same delivery arrives while or after it is handled: not handled again.
        body, headers = signed(payload)
        async with client_for(runtime) as client:
            assert (await client.post("/webhook", content=body, headers=headers)).status_code == 200
        await settled(runtime)
        assert connects == ["wacid.CRASH"]
        assert runtime.store.unhandled_events() == []
    finally:
        await runtime.aclose()

    again = make_runtime(tmp_path, database_url)  # a second restart finds nothing left to do
    try:
        await again.handle_pending()
        await settled(again)
        assert connects == ["wacid.CRASH"]
    finally:
        await again.aclose()


async def test_redelivery_of_a_stored_but_unhandled_event_is_handled_exactly_once(
    tmp_path: Path, connects: list[str], database_url: str
) -> None:
    """Start-up built outside the loop (as `wacall serve` does): the redelivery is what finds the event."""
    payload = delivery([call_event("wacid.REDELIVERED")])
    await store_without_handling(tmp_path, payload, database_url)
    runtime = await asyncio.to_thread(make_runtime, tmp_path, database_url)  # no running loop in __init__
    body, headers = signed(payload)
    try:
        async with client_for(runtime) as client:
            for _ in range(3):
                assert (await client.post("/webhook", content=body, headers=headers)).status_code == 200
                await settled(runtime)
        assert connects == ["wacid.REDELIVERED"]
        assert runtime.store.unhandled_events() == []
    finally:
        await runtime.aclose()


async def test_a_stored_event_nobody_is_handling_counts_as_fresh_on_redelivery(
    tmp_path: Path, connects: list[str]
) -> None:
    """Stored by another ledger after this runtime's start-up check: only the redelivery can find it."""
    runtime = make_runtime(tmp_path)
    payload = delivery([call_event("wacid.LATE")])
    try:
        await runtime.handle_pending()
        other = CallLedger(runtime.store, phone_number_id=OUR_NUMBER)
        await other.record_webhook(parse_webhook(json.dumps(payload).encode()))
        assert connects == []
        fresh = await runtime.accept_webhook(parse_webhook(json.dumps(payload).encode()))
        assert fresh.duplicates == 0 and len(fresh.calls) == 1
        dup = await runtime.accept_webhook(parse_webhook(json.dumps(payload).encode()))  # while being handled
        assert dup.duplicates == 1 and not dup
        await settled(runtime)
        assert (await runtime.accept_webhook(parse_webhook(json.dumps(payload).encode()))).duplicates == 1
        await settled(runtime)
        assert connects == ["wacid.LATE"]
    finally:
        await runtime.aclose()


async def test_a_handler_that_raises_is_logged_and_marked_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(self: Runtime, event: CallWebhook) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(Runtime, "_on_connect", boom)
    runtime = make_runtime(tmp_path)
    try:
        await runtime.accept_webhook(parse_webhook(json.dumps(delivery([call_event("wacid.RAISES")])).encode()))
        await settled(runtime)
        assert "failed handling connect" in caplog.text
        assert [e.handled for e in runtime.store.list_events("wacid.RAISES")] == [True]
    finally:
        await runtime.aclose()


# ---- another number --------------------------------------------------------------------------------


async def test_another_numbers_events_are_stored_but_do_not_change_our_users_state(tmp_path: Path) -> None:
    store = SqliteStore.in_data_dir(tmp_path)
    try:
        ledger = CallLedger(store, phone_number_id=OUR_NUMBER)
        await ledger.record_webhook(
            parse_webhook(json.dumps(delivery([call_event("wacid.OTHER")], OTHER_NUMBER)).encode())
        )
        await ledger.record_webhook(parse_webhook(json.dumps(message_delivery(OTHER_NUMBER)).encode()))
        assert [e.event for e in store.list_events("wacid.OTHER")] == ["connect"]
        assert [e.event for e in store.list_events(f"user:{USER}")] == ["message"]
        assert store.get_user_state(OUR_NUMBER, USER) is None
        assert store.get_user_state(OTHER_NUMBER, USER) is None

        # Our own number's connect does open the user's window (§8.1).
        await ledger.record_webhook(parse_webhook(json.dumps(delivery([call_event("wacid.OURS")])).encode()))
        state = store.get_user_state(OUR_NUMBER, USER)
        assert state is not None and state.window_refreshed_at is not None
    finally:
        store.close()


# ---- an outside write lock -------------------------------------------------------------------------


async def test_loop_stays_responsive_while_another_connection_holds_the_write_lock(
    tmp_path: Path, connects: list[str]
) -> None:
    runtime = make_runtime(tmp_path)
    outsider = sqlite3.connect(default_db_path(tmp_path), isolation_level=None)
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - start - 0.01)

    body, headers = signed(delivery([call_event("wacid.LOCKED")]))
    beat = asyncio.create_task(heartbeat())
    try:
        outsider.execute("BEGIN IMMEDIATE")
        async with client_for(runtime) as client:
            post = asyncio.create_task(client.post("/webhook", content=body, headers=headers))
            await asyncio.sleep(1.0)
            assert not post.done()  # waiting for the lock, on the writer thread
            runtime.ledger.call_updated("wacid.NONE", state="ended")  # a fire-and-forget write queues too
            outsider.execute("COMMIT")
            response = await post
        await settled(runtime)
        stop.set()
        await beat
        assert response.status_code == 200
        assert connects == ["wacid.LOCKED"]
        assert max(lags) <= 0.1, f"event loop stalled {max(lags) * 1000:.0f} ms"
    finally:
        stop.set()
        await beat
        outsider.close()
        await runtime.aclose()


class WriteLockHolder:
    """Another process holding the database's write lock: SQLite's file lock, or on PostgreSQL the advisory
    lock every wacall write takes (another worker mid-transaction)."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        if database_url:
            import psycopg

            from agent.store.postgres import WRITE_LOCK_KEY

            self._pg = psycopg.connect(database_url, autocommit=True)
            self._key = WRITE_LOCK_KEY
        else:
            self._sqlite = sqlite3.connect(default_db_path(data_dir), isolation_level=None)
        self.postgres = bool(database_url)

    def hold(self) -> None:
        if self.postgres:
            self._pg.execute("SELECT pg_advisory_lock(%s)", (self._key,))
        else:
            self._sqlite.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.postgres:
            self._pg.execute("SELECT pg_advisory_unlock_all()")
        elif self._sqlite.in_transaction:
            self._sqlite.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        (self._pg if self.postgres else self._sqlite).close()


async def test_delivery_answers_500_when_the_lock_outlasts_its_deadline(
    tmp_path: Path, connects: list[str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setattr(CallLedger, "delivery_deadline_s", 0.4)
    runtime = make_runtime(tmp_path, database_url)
    outsider = WriteLockHolder(tmp_path, database_url)
    body, headers = signed(delivery([call_event("wacid.LATE500")]))
    try:
        outsider.hold()
        async with client_for(runtime) as client:
            assert (await client.post("/webhook", content=body, headers=headers)).status_code == 500
            outsider.release()
            assert runtime.store.list_events("wacid.LATE500") == []
            assert (await client.post("/webhook", content=body, headers=headers)).status_code == 200  # the retry
        await settled(runtime)
        assert connects == ["wacid.LATE500"]
    finally:
        outsider.close()
        await runtime.aclose()


async def test_start_up_rebuilds_every_kind_of_pending_event(
    tmp_path: Path, connects: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def on_terminate(self: Runtime, event: CallWebhook) -> None:
        seen.append(f"terminate {event.call.id} {event.contact.wa_id if event.contact else None}")

    async def on_status(self: Runtime, status: Any) -> None:
        seen.append(f"status {status.status.id} {status.status.status}")

    def on_message(self: Runtime, message: Any) -> None:
        seen.append(f"message {message.user} {message.phone_number_id}")

    monkeypatch.setattr(Runtime, "_on_terminate", on_terminate)
    monkeypatch.setattr(Runtime, "_on_status", on_status)
    monkeypatch.setattr(Runtime, "_on_message", on_message)
    payload = delivery([call_event("wacid.K1"), call_event("wacid.K1", "terminate")])
    payload["entry"][0]["changes"][0]["value"]["statuses"] = [
        {"id": "wacid.K2", "timestamp": str(int(time.time())), "type": "call", "status": "RINGING"}
    ]
    payload["entry"].append(message_delivery(OUR_NUMBER)["entry"][0])
    store = SqliteStore.in_data_dir(tmp_path)
    ledger = CallLedger(store, phone_number_id=OUR_NUMBER)
    fresh = await ledger.record_webhook(parse_webhook(json.dumps(payload).encode()))
    assert len(fresh.keys) == 4
    store.close()

    runtime = make_runtime(tmp_path)
    try:
        await runtime.handle_pending()
        assert connects == ["wacid.K1"]
        assert seen == [f"terminate wacid.K1 {USER}", "status wacid.K2 RINGING", f"message {USER} {OUR_NUMBER}"]
        assert runtime.store.unhandled_events() == []
    finally:
        await runtime.aclose()


async def test_shutdown_mid_delivery_leaves_the_events_not_reached_for_the_next_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def slow(self: Runtime, event: CallWebhook) -> None:
        seen.append(event.call.id)
        started.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(Runtime, "_on_connect", slow)
    runtime = make_runtime(tmp_path)
    payload = delivery([call_event("wacid.CUT"), call_event("wacid.NOT_REACHED")])
    await runtime.accept_webhook(parse_webhook(json.dumps(payload).encode()))
    await started.wait()
    await runtime.aclose()  # cancels the handler half-way through the delivery
    assert seen == ["wacid.CUT"]

    store = SqliteStore.in_data_dir(tmp_path)
    assert [e.call_id for e in store.unhandled_events()] == ["wacid.NOT_REACHED"]
    store.close()

    async def quick(self: Runtime, event: CallWebhook) -> None:
        seen.append(event.call.id)

    monkeypatch.setattr(Runtime, "_on_connect", quick)
    again = make_runtime(tmp_path)
    try:
        await again.handle_pending()
        assert seen == ["wacid.CUT", "wacid.NOT_REACHED"]
    finally:
        await again.aclose()


async def test_a_restart_terminates_answered_calls_and_rejects_only_unanswered_ones(tmp_path: Path) -> None:
    """What the killed process left open is settled with Meta: a call with an agent (state `handover`) or
    one whose `active` write was lost is terminated; a ringing one is rejected, or terminated if Meta says
    it was picked up after all. Their connects are never answered again."""
    from agent.store.base import CallRecord
    from agent.whatsapp.graph import GraphError

    store = SqliteStore.in_data_dir(tmp_path)
    answered_at = datetime.now(UTC)
    for call_id, state, answered in [
        ("wacid.AGENT", "handover", None),
        ("wacid.ACTIVE-LOST", "ringing", answered_at),
        ("wacid.RINGING", "ringing", None),
        ("wacid.PICKED-UP", "connecting", None),
    ]:
        store.save_call(CallRecord(id=call_id, direction="USER_INITIATED", state=state, answered_at=answered))
    store.close()

    sent: list[tuple[str, str]] = []

    class Graph:
        async def terminate(self, call_id: str) -> None:
            sent.append(("terminate", call_id))

        async def reject(self, call_id: str) -> None:
            sent.append(("reject", call_id))
            if call_id == "wacid.PICKED-UP":
                raise GraphError(status=400, message="call already accepted")

        async def aclose(self) -> None:
            pass

    runtime = make_runtime(tmp_path)
    runtime.graph = Graph()  # type: ignore[assignment]
    try:
        assert await runtime.settle_restart() == 4
        assert "wacid.RINGING" in runtime._ended_by_restart
    finally:
        await runtime.aclose()
    assert sorted(sent) == sorted(
        [
            ("terminate", "wacid.AGENT"),
            ("terminate", "wacid.ACTIVE-LOST"),
            ("reject", "wacid.RINGING"),
            ("reject", "wacid.PICKED-UP"),
            ("terminate", "wacid.PICKED-UP"),
        ]
    )


async def test_an_ending_meta_never_acknowledged_is_sent_again_until_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminate whose every retry failed (Meta's side down during a drain) left a clean-looking record,
    and Meta billed the call on: the ending stays owed, is retried while the process runs, and at the next
    start until Meta takes it or says the call is gone."""
    import agent.runtime as runtime_module
    from agent.store.base import ENDING_SETTLED, CallRecord
    from agent.whatsapp.graph import GraphError, GraphTransportError

    store = SqliteStore.in_data_dir(tmp_path)
    for call_id in ("wacid.DOWN-TWICE", "wacid.GONE"):
        answered = datetime.now(UTC)
        store.save_call(CallRecord(id=call_id, direction="USER_INITIATED", state="ended", answered_at=answered))
    store.close()
    first = make_runtime(tmp_path)
    try:
        first.ledger.ending_owed("wacid.DOWN-TWICE", "no answer from Meta")
        first.ledger.ending_owed("wacid.GONE", "HTTP 503")
        first.store.flush()
    finally:
        await first.aclose()

    sent: list[str] = []
    meta_down = True

    class Graph:
        async def terminate(self, call_id: str) -> None:
            sent.append(call_id)
            if call_id == "wacid.GONE":
                raise GraphError(status=400, message="call not found")
            if meta_down:
                raise GraphTransportError("connection refused")

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr(runtime_module, "ENDING_RETRY_WAITS_S", (0.05, 0.05))
    second = make_runtime(tmp_path)
    second.graph = Graph()  # type: ignore[assignment]
    try:
        assert {r.id for r in second.owed_endings} == {"wacid.DOWN-TWICE", "wacid.GONE"}
        assert await second.settle_restart() == 0
        await asyncio.sleep(0.3)  # both later attempts fail too: still owed
        assert sent.count("wacid.DOWN-TWICE") == 3 and sent.count("wacid.GONE") == 1
    finally:
        await second.aclose()

    meta_down = False
    third = make_runtime(tmp_path)
    third.graph = Graph()  # type: ignore[assignment]
    try:
        assert [r.id for r in third.owed_endings] == ["wacid.DOWN-TWICE"], "GONE was settled by Meta's refusal"
        assert await third.settle_restart() == 1
        third.store.flush()
        assert third.store.unsettled_endings() == []
        assert [e.event for e in third.store.list_events("wacid.DOWN-TWICE")][-1] == ENDING_SETTLED
    finally:
        await third.aclose()


async def test_a_call_marks_its_ending_owed_only_when_meta_may_not_have_heard() -> None:
    from agent.call import Call, CallServices, CallState
    from agent.dialogue.flow import load_flow
    from agent.whatsapp.graph import GraphError, GraphTransportError

    outcomes = {}
    for name, error in [
        ("down", GraphTransportError("timed out")),
        ("busy", GraphError(status=503, message="try later")),
        ("gone", GraphError(status=400, message="call not found")),
    ]:

        class Graph:
            async def terminate(self, call_id: str, error: GraphError = error) -> None:
                raise error

        services = CallServices(graph=Graph(), transcriber=NoTranscriber(), synthesizer=NoSynthesizer())  # type: ignore[arg-type]
        call = Call(call_id=f"wacid.{name}", services=services, flow=load_flow("prompts/demo.yaml"))
        call.state = CallState.ACTIVE
        await call.hangup("shutdown")
        outcomes[name] = call.ending_owed is not None
    assert outcomes == {"down": True, "busy": True, "gone": False}
