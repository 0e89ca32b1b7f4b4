"""The handover desk shared by several workers (agent/handover/shared.py), on a real PostgreSQL database.

Two workers here are two stores on one database (as two processes have), each with its own `SharedDesk`
and, in the service-level test, its own `HandoverService` with fake calls and bridges, real LISTEN
connections and the real internal accept route over HTTP. tests/e2e/test_cluster_handover.py has the real
`wacall serve` processes, media and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.handover.queues import (
    DEFAULT_HOLD_MESSAGE,
    Connected,
    Ended,
    Hold,
    Offer,
    Outcome,
    Requeued,
    WaitingCall,
    decode_event,
    dump_desk,
    encode_event,
    load_desk,
)
from agent.handover.service import AGENT_LOST_MESSAGE, ActionError, HandoverService
from agent.handover.shared import MESSAGE_PREFIX, Routed, SharedDesk, desk_key, sign, verify
from tests.handover.test_service import ASKED, FakeBridge, FakeCall, settings

psycopg = pytest.importorskip("psycopg")

from agent.cluster import Identity  # noqa: E402
from agent.store import leases  # noqa: E402
from agent.store.postgres import PostgresStore  # noqa: E402

KEY = desk_key("an app secret")


def waiting(call_id: str = "wacid.1") -> WaitingCall:
    return WaitingCall(call_id=call_id, queue="support", reason="asked", transcript=(("caller", "a person"),))


# --- without a database -----------------------------------------------------------------------------------


def test_a_desk_dumped_to_json_and_loaded_back_routes_the_same() -> None:
    config = settings()
    desk = config.desk()
    desk.enqueue(waiting("wacid.1"), 100.0)
    desk.enqueue(waiting("wacid.2"), 101.0)
    desk.agent_available("ana", 102.0)  # offered wacid.1, expiring at 122
    desk.agent_available("ben", 103.0)
    desk.decline("ben", "wacid.2", 104.0)
    state = json.loads(json.dumps(dump_desk(desk)))
    copy = load_desk([q.to_queue() for q in config.queues], [a.to_agent() for a in config.agents], state)
    assert copy.snapshot(110.0) == desk.snapshot(110.0)
    assert copy.record("wacid.1") == desk.record("wacid.1")
    # And the loaded copy goes on exactly as the original does: the offer times out, ben stays skipped.
    assert copy.tick(125.0) == desk.tick(125.0)
    assert copy.snapshot(125.0) == desk.snapshot(125.0)


def test_events_cross_as_json() -> None:
    desk = settings().desk()
    events = [*desk.enqueue(waiting(), 1.0), *desk.agent_available("ana", 2.0), *desk.accept("ana", "wacid.1", 3.0)]
    events += desk.hangup_by_agent("wacid.1", 9.0)
    assert any(isinstance(e, Ended) for e in events)
    assert [decode_event(json.loads(json.dumps(encode_event(e)))) for e in events] == events


def test_forwarded_accepts_are_signed_and_expire() -> None:
    body = b'{"agent_id": "ana"}'
    signature = sign(KEY, body, now=1000.0)
    assert verify(KEY, body, signature, now=1010.0)
    assert not verify(KEY, body + b" ", signature, now=1010.0)
    assert not verify(desk_key("another secret"), body, signature, now=1010.0)
    assert not verify(KEY, body, signature, now=1100.0)  # a minute later: a replay
    assert not verify(KEY, body, "", now=1000.0)
    assert desk_key("s") != b"s" and len(desk_key("s")) == 32


# --- on PostgreSQL -------------------------------------------------------------------------------------------


class Workers:
    """Stores (one per worker, as separate processes have), their leases, and a listener per channel."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: dict[str, PostgresStore] = {}
        self.listener = psycopg.connect(url, autocommit=True)

    def join(self, name: str, *, url: str | None = None, lease_s: float = 60.0, at: datetime | None = None) -> None:
        store = self.stores.get(name) or PostgresStore(self.url)
        self.stores[name] = store
        now = at or datetime.now(UTC)
        store.submit(lambda tx: leases.heartbeat(tx, name, url, now, lease_s)).result()
        self.listener.execute(f"LISTEN {Identity(name).channel}")

    def desk(self, name: str, *, steady: bool = True) -> SharedDesk:
        config = settings()
        return SharedDesk(
            self.stores[name],
            [q.to_queue() for q in config.queues],
            [a.to_agent() for a in config.agents],
            worker_id=name,
            channel_of=lambda worker: Identity(worker).channel,
            key=KEY,
            judges_leases=lambda: steady,
        )

    def desks(self, *names: str) -> list[SharedDesk]:
        """These workers joined, each with its desk (steady, lease 60 s)."""
        for name in names:
            self.join(name)
        return [self.desk(name) for name in names]

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """(worker, message) of every message named by a notification since the last call (left in place)."""
        by_channel = {Identity(name).channel: name for name in self.stores}
        out = []
        for note in list(self.listener.notifies(timeout=0.2, stop_after=None)):
            message_id = SharedDesk.message_id(note.payload)
            assert message_id is not None, note.payload
            row = self.listener.execute(
                "SELECT worker, payload FROM handover_messages WHERE id = %s", (message_id,)
            ).fetchone()
            assert row is not None and row[0] == by_channel[note.channel]
            out.append((row[0], json.loads(row[1])))
        return out

    def close(self) -> None:
        self.listener.close()
        for store in self.stores.values():
            store.close()


@pytest.fixture
def workers(postgres_url: str) -> Iterator[Workers]:
    running = Workers(postgres_url)
    try:
        yield running
    finally:
        running.close()


def kinds(routed: list[Routed]) -> list[tuple[str, bool, bool]]:
    return [(type(r.event).__name__, r.call_here, r.agent_here) for r in routed]


def test_a_caller_on_one_worker_is_offered_to_an_agent_on_another_and_each_worker_is_told_its_part(
    workers: Workers,
) -> None:
    a, b = workers.desks("a", "b")

    def enqueue(desk: Any, side: Any) -> list[Any]:
        side.owners["wacid.1"], side.nodes["wacid.1"] = "a", ["anything_else"]
        return desk.enqueue(waiting(), 10.0)  # type: ignore[no-any-return]

    done = a.submit(enqueue, 10.0).result()
    assert kinds(done.mine) == [("Hold", True, False), ("Announce", True, False)]

    def available(desk: Any, side: Any) -> list[Any]:
        side.presence["ana"] = "b"
        return desk.agent_available("ana", 11.0)  # type: ignore[no-any-return]

    done = b.submit(available, 11.0).result()
    assert done.mine == [Routed(Offer("ana", "wacid.1", 31.0), call_here=False, agent_here=True)]
    assert workers.messages() == []  # the offer concerns only the agent's worker

    done = a.submit(lambda desk, side: desk.accept("ana", "wacid.1", 12.0), 12.0).result()
    assert kinds(done.mine) == [("Connected", True, False)]
    assert workers.messages() == [
        ("b", {"event": encode_event(Connected("ana", "wacid.1")), "call": False, "agent": True, "talking": None})
    ]
    # Any worker reads the same desk: b sees the call being talked to, and where its caller is.
    desk, side = b.read()
    assert desk.snapshot(13.0)["talking"][0]["agent_id"] == "ana"
    assert side.owners == {"wacid.1": "a"} and side.presence == {"ana": "b"}

    done = b.submit(lambda desk, side: desk.hangup_by_agent("wacid.1", 20.0), 20.0).result()
    (ended,) = done.mine
    assert isinstance(ended.event, Ended) and ended.event.record.outcome is Outcome.AGENT_HUNG_UP
    assert (ended.call_here, ended.agent_here, ended.talking) == (False, True, "ana")
    ((worker, message),) = workers.messages()
    assert worker == "a" and message["call"] is True and message["agent"] is False
    assert decode_event(message["event"]) == ended.event
    assert b.read()[1].owners == {}  # the call is off the desk


def test_two_workers_routing_at_once_offer_a_caller_to_one_agent_only(workers: Workers) -> None:
    a, b = workers.desks("a", "b")

    def enqueue(desk: Any, side: Any) -> list[Any]:
        side.owners["wacid.1"] = "a"
        return desk.enqueue(waiting(), 10.0)  # type: ignore[no-any-return]

    a.submit(enqueue, 10.0).result()

    def available(agent: str, worker: str) -> Any:
        def op(desk: Any, side: Any) -> list[Any]:
            side.presence[agent] = worker
            return desk.agent_available(agent, 11.0)  # type: ignore[no-any-return]

        return op

    for _ in range(5):  # both agents come in at the same moment, on different workers
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(lambda: a.submit(available("ana", "a"), 11.0).result()),
                pool.submit(lambda: b.submit(available("ben", "b"), 11.0).result()),
            ]
            results = [f.result() for f in futures]
        offers = [e for r in results for e in r.events if isinstance(e, Offer)]
        assert len(offers) == 1  # one caller, one offer, decided once
        statuses = sorted(x["status"] for x in a.read()[0].snapshot(12.0)["agents"])
        assert statuses == ["available", "offered"]
        for agent, d in (("ana", a), ("ben", b)):  # both away again for the next round
            d.submit(lambda desk, side, agent=agent: desk.agent_away(agent, 12.0), 12.0).result()
        workers.messages()


def test_a_dead_workers_agents_and_callers_leave_the_desk(workers: Workers) -> None:
    a, b, c = workers.desks("a", "b", "c")

    def enqueue(call_id: str, owner: str) -> Any:
        def op(desk: Any, side: Any) -> list[Any]:
            side.owners[call_id] = owner
            return desk.enqueue(waiting(call_id), 10.0)  # type: ignore[no-any-return]

        return op

    a.submit(enqueue("wacid.1", "a"), 10.0).result()
    c.submit(enqueue("wacid.2", "c"), 10.5).result()

    def available(desk: Any, side: Any) -> list[Any]:
        side.presence["ana"] = "b"
        return desk.agent_available("ana", 11.0)  # type: ignore[no-any-return]

    b.submit(available, 11.0).result()
    a.submit(lambda desk, side: desk.accept("ana", "wacid.1", 12.0), 12.0).result()
    workers.messages()

    # b (ana's console) and c (wacid.2's caller) stop renewing: their leases run out.
    past = datetime.now(UTC) - timedelta(seconds=120)
    workers.join("b", at=past)
    workers.join("c", at=past)
    # Just back from an outage of the database, a worker judges nobody dead: every lease may look expired.
    done = workers.desk("a", steady=False).submit(lambda desk, side: desk.tick(19.0), 19.0).result()
    assert done.events == [] and b.read()[1].presence == {"ana": "b"}
    done = a.submit(lambda desk, side: desk.tick(20.0), 20.0).result()
    # ana is gone: her caller goes back to the front of the queue; c's caller is off the desk.
    assert Requeued("wacid.1", "ana") in done.events
    gone = [e for e in done.events if isinstance(e, Ended)]
    assert [(e.record.call_id, e.record.outcome) for e in gone] == [("wacid.2", Outcome.ABANDONED)]
    assert ("Requeued", True, False) in kinds(done.mine)  # told to a, which holds wacid.1
    assert workers.messages() == []  # nothing sent to the dead
    desk, side = a.read()
    assert side.presence == {} and side.owners == {"wacid.1": "a"}
    assert desk.agent("ana").status.value == "away"
    assert [w["call_id"] for w in desk.snapshot(21.0)["waiting"]] == ["wacid.1"]


def test_a_worker_restarting_under_its_old_id_clears_what_its_last_process_left(workers: Workers) -> None:
    a, b = workers.desks("a", "b")

    def enqueue(desk: Any, side: Any) -> list[Any]:
        side.owners["wacid.1"] = "a"
        side.presence["ben"] = "a"
        return [*desk.enqueue(waiting(), 10.0), *desk.agent_available("ben", 10.0)]

    a.submit(enqueue, 10.0).result()
    b.submit(lambda desk, side: side.presence.update(ana="b") or desk.agent_available("ana", 10.5), 10.5).result()
    workers.messages()
    # a's process dies and comes back at once, its lease never running out: its caller and ben's console are
    # gone with the old process, so they leave the desk; ana, on b, is told the call she was offered went.
    done = workers.desk("a").rejoin(20.0)
    desk, side = b.read()
    assert side.owners == {} and side.presence == {"ana": "b"}
    assert desk.snapshot(21.0)["waiting"] == [] and desk.agent("ben").status.value == "away"
    assert [(e.record.call_id, e.record.outcome) for e in done.events if isinstance(e, Ended)] == [
        ("wacid.1", Outcome.ABANDONED)
    ]
    told_b = [m["event"] for worker, m in workers.messages() if worker == "b"]
    assert told_b[-1] == {"kind": "OfferWithdrawn", "agent_id": "ana", "call_id": "wacid.1", "reason": "caller_hung_up"}


# --- two services -------------------------------------------------------------------------------------------


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def two_services(
    workers: Workers, listening: tuple[str, ...] = ("a", "b")
) -> AsyncIterator[tuple[HandoverService, HandoverService]]:
    """Worker a (with the internal accept route served over HTTP at its worker URL) and worker b, each with
    its own service and store, and a LISTEN connection for those `listening`."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from agent.app import _forwarded_accept
    from agent.cluster_listener import listen
    from agent.handover.shared import ACCEPT_PATH
    from agent.simulator.session import bound_socket, serve

    sock = bound_socket()
    workers.join("a", url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    workers.join("b")
    FakeBridge.made.clear()
    services = {
        name: HandoverService(
            settings(),
            store=workers.stores[name],
            clock=time.time,
            tick_s=0.25,  # each worker redraws its consoles from the shared desk at every tick
            bridge_factory=FakeBridge,
            shared=workers.desk(name),
        )
        for name in ("a", "b")
    }

    async def nothing() -> None:
        return None

    def delivered(name: str) -> Any:
        async def on_keys(keys: list[str]) -> None:
            for key in keys:
                services[name].on_worker_message(key)

        return on_keys

    listeners = [
        asyncio.create_task(listen(workers.url, Identity(n).channel, on_keys=delivered(n), on_connected=nothing))
        for n in listening
    ]
    app = Starlette(routes=[Route(ACCEPT_PATH, _forwarded_accept(services["a"]), methods=["POST"])])
    try:
        async with serve(app, sock):
            await asyncio.sleep(0.3)  # the listeners are connected
            yield services["a"], services["b"]
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for service in services.values():
            await service.aclose()


async def offered_across(service_a: HandoverService, service_b: HandoverService, call: FakeCall) -> list[Any]:
    """a's caller waits; ana, on b, goes available and is offered the call. Returns what b's console got."""
    pushed: list[dict[str, Any]] = []
    service_a.on_handover(call, ASKED)
    service_b.subscribe("ana", pushed.append)
    await until(lambda: any(m["type"] == "state" and m["state"]["waiting"] for m in pushed))
    await until(lambda: bool(call.said))  # the hold line, spoken by a, which holds the caller
    assert call.said[0] == DEFAULT_HOLD_MESSAGE
    service_b.set_available("ana", True)
    await until(lambda: any(m["type"] == "offer" for m in pushed))
    offer = service_b.view("ana")["offer"]
    assert offer is not None and offer["call_id"] == call.id
    assert offer["call"]["reason"] == ASKED.reason
    return pushed


async def test_an_agent_on_one_worker_takes_a_call_held_by_another(workers: Workers) -> None:
    import httpx

    from agent.handover.shared import ACCEPT_PATH

    call = FakeCall()
    async with two_services(workers) as (service_a, service_b):
        pushed = await offered_across(service_a, service_b, call)
        url = workers.stores["a"]._rows("SELECT url FROM workers WHERE id = 'a'")[0]["url"]

        # A forged accept is refused by the owner; a real one is forwarded there and connects the call.
        async with httpx.AsyncClient() as client:
            forged = await client.post(
                f"{url}{ACCEPT_PATH}",
                content=b'{"agent_id": "ana", "call_id": "wacid.1", "sdp": "x"}',
                headers={"x-wacall-desk-signature": sign(desk_key("wrong"), b"x")},
            )
        assert forged.status_code == 403
        assert await service_b.accept("ana", call.id, "v=0 offer") == "v=0 answer"
        (bridge,) = FakeBridge.made
        assert bridge.call is call and bridge.agent_id == "ana" and bridge.started
        assert call.handled_by == "ana"
        await until(lambda: any(m["type"] == "connected" for m in pushed))

        # What the caller says on a's bridge shows live on b's console.
        bridge.on_text("caller", "my parcel is late")
        await until(lambda: any(m["type"] == "transcript" for m in pushed))
        await until(
            lambda: (
                (service_b.view("ana")["call"] or {}).get("live") == [{"who": "caller", "text": "my parcel is late"}]
            )
        )
        assert service_b.view("ana")["call"]["nodes"] == ["anything_else", "callback"]

        # The agent hangs up on b: a hangs the call up, once, and writes the record.
        service_b.hang_up("ana", call.id)
        await until(lambda: call.hangups == ["agent_hung_up"])
        await until(lambda: any(m["type"] == "call_ended" for m in pushed))
        assert [m["reason"] for m in pushed if m["type"] == "call_ended"] == ["agent_hung_up"]
        assert bridge.closed
        service_a.call_ended(call)  # the runtime tells the desk when the call is over: nothing more happens
        await asyncio.sleep(0.3)
        assert call.hangups == ["agent_hung_up"]
        await until(lambda: service_b.view("ana")["me"]["status"] == "available")
        record = service_a.records[call.id]
        assert record.outcome is Outcome.AGENT_HUNG_UP and record.handled_by == "ana"


async def test_a_decline_and_a_return_to_the_bot_from_another_worker(workers: Workers) -> None:
    call = FakeCall()
    async with two_services(workers) as (service_a, service_b):
        pushed = await offered_across(service_a, service_b, call)
        service_b.decline("ana", call.id)  # ana passes: still available, the caller keeps waiting on a
        await until(lambda: service_b.view("ana")["me"]["status"] == "available")
        assert service_b.view("ana")["waiting"][0]["offered_to"] is None
        assert call.hangups == [] and not FakeBridge.made

        service_b.set_available("ana", False)  # away and back: the decline no longer applies
        await until(lambda: service_b.view("ana")["me"]["status"] == "away")
        pushed.clear()
        service_b.set_available("ana", True)
        await until(lambda: any(m["type"] == "offer" for m in pushed))
        assert await service_b.accept("ana", call.id, "v=0 offer") == "v=0 answer"
        await until(lambda: (service_b.view("ana")["call"] or {}).get("call_id") == call.id)
        with pytest.raises(ActionError):
            service_b.return_to_bot("ana", call.id, "no_such_node")  # b knows a's flow nodes from the desk
        service_b.return_to_bot("ana", call.id, "anything_else")
        await until(lambda: call.resumed == ["anything_else"])
        await until(lambda: any(m["type"] == "call_ended" for m in pushed))
        assert [m["reason"] for m in pushed if m["type"] == "call_ended"] == ["returned_to_bot"]
        assert call.hangups == [] and FakeBridge.made[0].closed
        assert service_a.records[call.id].outcome is Outcome.RETURNED_TO_BOT


async def test_a_message_whose_notification_was_lost_is_caught_up_and_acted_on_once(workers: Workers) -> None:
    call = FakeCall()
    async with two_services(workers, listening=("b",)) as (service_a, service_b):  # a hears no NOTIFY
        pushed = await offered_across(service_a, service_b, call)
        await service_b.accept("ana", call.id, "v=0 offer")
        await until(lambda: (service_b.view("ana")["call"] or {}).get("call_id") == call.id)
        service_b.hang_up("ana", call.id)  # the Ended for a is left for it, its NOTIFY unheard
        await until(lambda: any(m["type"] == "call_ended" for m in pushed))
        await asyncio.sleep(0.3)
        assert call.hangups == []
        service_a.catch_up()  # what the cluster's heartbeat does
        service_a.catch_up()
        await until(lambda: call.hangups == ["agent_hung_up"])
        await asyncio.sleep(0.3)
        service_a.catch_up()
        await asyncio.sleep(0.3)
        assert call.hangups == ["agent_hung_up"]
        assert workers.stores["a"]._rows("SELECT COUNT(*) AS n FROM handover_messages")[0]["n"] == 0


async def test_the_agents_audio_dropping_on_the_callers_worker_requeues_the_caller_and_tells_the_console(
    workers: Workers,
) -> None:
    call = FakeCall()
    async with two_services(workers) as (service_a, service_b):
        pushed = await offered_across(service_a, service_b, call)
        await service_b.accept("ana", call.id, "v=0 offer")
        (bridge,) = FakeBridge.made
        await until(lambda: service_a.desk.agent("ana").call_id == call.id and bridge.started)
        bridge.on_lost("the agent's audio connection dropped")  # seen on a, where the media is
        await until(lambda: any(m["type"] == "call_ended" for m in pushed))
        assert [m["reason"] for m in pushed if m["type"] == "call_ended"] == ["disconnected"]
        assert any(m["type"] == "alert" and "audio lost" in m["message"] for m in pushed)
        await until(lambda: AGENT_LOST_MESSAGE in call.said)  # the caller hears it and is back in the queue
        await until(lambda: [w["call_id"] for w in service_b.view("ana")["waiting"]] == [call.id])
        assert service_b.view("ana")["me"]["status"] == "away" and bridge.closed and call.hangups == []


def test_messages_between_workers_parse_and_nothing_else_does() -> None:
    assert SharedDesk.message_id(MESSAGE_PREFIX + "42") == 42
    assert SharedDesk.message_id(MESSAGE_PREFIX + "x") is None and SharedDesk.message_id("wacid.1:connect") is None
    assert SharedDesk.parse_message("{not json") is None
    routed = SharedDesk.parse_message(
        json.dumps({"event": encode_event(Hold("wacid.1", "hi")), "call": True, "agent": False})
    )
    assert routed == Routed(Hold("wacid.1", "hi"), call_here=True, agent_here=False)
    assert SharedDesk.parse_message(json.dumps({"push": "ana", "message": {"type": "alert"}})) == (
        "ana",
        {"type": "alert"},
    )
