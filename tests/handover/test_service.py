"""HandoverService: the real desk and a real SQLite record, with a fake call, a fake bridge and a fake clock.

The desk's rules are pinned in test_queues.py; these check that the service *acts* on its events: what the
caller hears, what the consoles get, when the bot comes back, what the call record says, and that nothing
is left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.dialogue.effects import Handover
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import parse_flow
from agent.handover.config import load_handover
from agent.handover.queues import DEFAULT_HOLD_MESSAGE, AgentStatus, Outcome
from agent.handover.service import (
    AGENT_LOST_MESSAGE,
    NOBODY_MESSAGE,
    ActionError,
    HandoverService,
)
from agent.media.sdp import SdpError
from agent.store.base import CallRecord
from agent.store.sqlite import SqliteStore
from agent.whatsapp.payloads import CallContext

POSITION_1 = "You are number 1 in the queue."
ASKED = Handover(queue="support", reason="The caller asked for a person.")


class FakeCall:
    """Records what the service does to it; `say` takes one loop turn, as real speech takes a while."""

    def __init__(self, call_id: str = "wacid.1", nodes: tuple[str, ...] = ("anything_else", "callback")) -> None:
        self.id = call_id
        self.caller_number: str | None = "15550001111"
        self.caller_name: str | None = "Maria"
        self.handled_by: str | None = None
        self.ended = asyncio.Event()
        self.flow = SimpleNamespace(nodes=dict.fromkeys(nodes))
        self.conversation: Any = None
        self.said: list[str] = []
        self.suspended = False
        self.resumed: list[str | None] = []
        self.flushes = 0
        self.taps: list[Callable[[np.ndarray, float], None]] = []
        self.hangups: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def slots(self) -> dict[str, Any]:
        return {"order_number": "A123", "email": None}

    async def say(self, text: str) -> None:
        await asyncio.sleep(0)
        self.said.append(text)

    def suspend_bot(self) -> None:
        self.suspended = True

    def resume_bot(self, node: str | None = None) -> None:
        self.suspended = False
        self.resumed.append(node)

    def flush_audio(self) -> None:
        self.flushes += 1

    def play(self, pcm48k: np.ndarray) -> None:
        pass

    def add_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None:
        self.taps.append(tap)

    def remove_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None:
        self.taps.remove(tap)

    def transcript_pairs(self) -> list[tuple[str, str]]:
        return [("bot", "How can I help?"), ("caller", "I want to talk to a person.")]

    async def hangup(self, reason: str = "bot_ended") -> None:
        self.hangups.append(reason)
        self.ended.set()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class FakeBridge:
    """Stands in for the WebRTC leg: answers any offer but "bad", and lets a test drop the agent's audio."""

    made: ClassVar[list[FakeBridge]] = []

    def __init__(self, call: Any, agent_id: str, on_text: Callable[[str, str], None], on_lost: Callable[[str], None]):
        self.call, self.agent_id, self.on_text, self.on_lost = call, agent_id, on_text, on_lost
        self.started = self.stopped = self.closed = False
        FakeBridge.made.append(self)

    async def answer(self, offer_sdp: str) -> str:
        await asyncio.sleep(0)
        if offer_sdp == "bad":
            raise SdpError("no opus/48000 codec offered in the m=audio line")
        return "v=0 answer"

    def start(self) -> None:
        self.started = True

    def stop_relay(self) -> None:
        self.stopped = True

    async def close(self) -> None:
        self.stop_relay()
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**queue: Any) -> Any:
    return load_handover(
        {
            "queues": [{"name": "support", "max_wait_s": 120, "announce_every_s": 30, "offer_timeout_s": 20, **queue}],
            "agents": [{"id": "ana", "name": "Ana"}, {"id": "ben", "name": "Ben"}],
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> SqliteStore:
    store = SqliteStore(":memory:")
    store.save_call(CallRecord(id="wacid.1", direction="USER_INITIATED", state="active"))
    return store


def make_service(clock: Clock, store: SqliteStore | None = None, **queue: Any) -> tuple[HandoverService, list]:
    FakeBridge.made.clear()
    permissions: list[str] = []

    async def request_permission(to: str, text: str | None) -> str:
        permissions.append(to)
        return "wamid.1"

    service = HandoverService(
        settings(**queue),
        store=store,
        clock=clock,
        tick_s=None,
        bridge_factory=FakeBridge,
        request_permission=request_permission,
    )
    return service, permissions


def console(service: HandoverService, agent_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    service.subscribe(agent_id, messages.append)
    return messages


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages if m["type"] != "state"]


async def settle(call: FakeCall) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    if call._tasks:
        await asyncio.gather(*list(call._tasks), return_exceptions=True)


async def connected(service: HandoverService, clock: Clock, call: FakeCall, agent: str = "ana") -> FakeBridge:
    service.set_available(agent, True)
    assert await service.accept(agent, call.id, "v=0 offer") == "v=0 answer"
    return FakeBridge.made[-1]


async def test_handover_pauses_the_bot_queues_the_caller_and_plays_hold_then_position(
    clock: Clock, store: SqliteStore
) -> None:
    service, _ = make_service(clock, store)
    call = FakeCall()
    service.on_handover(call, ASKED)
    await settle(call)
    assert call.suspended
    assert call.said == [DEFAULT_HOLD_MESSAGE, POSITION_1]
    (waiting,) = service.view("ana")["waiting"]
    assert waiting["reason"] == "The caller asked for a person."
    assert waiting["summary"].startswith("The caller asked for a person. Known: order number: A123.")
    assert waiting["transcript"][-1] == {"who": "caller", "text": "I want to talk to a person."}
    record = store.get_call(call.id)
    assert record is not None and (record.state, record.handover_queue) == ("handover", "support")

    clock.now += 30
    service.tick()
    await settle(call)
    assert call.said[-1] == POSITION_1  # announced again after announce_every_s


async def test_the_console_shows_the_payload_the_caller_came_from(clock: Clock) -> None:
    service, _ = make_service(clock)
    console(service, "ana")
    call = FakeCall()
    call.context = CallContext("summer-sale", "link")  # type: ignore[attr-defined]
    service.on_handover(call, ASKED)
    [waiting] = service.view("ana")["waiting"]
    assert (waiting["payload"], waiting["payload_source"]) == ("summer-sale", "link")


async def test_offer_rings_the_console_and_accept_bridges_with_the_hold_line_cut(clock: Clock) -> None:
    service, _ = make_service(clock)
    ana = console(service, "ana")
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    assert kinds(ana) == ["offer"]
    offer = service.view("ana")["offer"]
    assert offer["call_id"] == call.id and offer["expires_in_s"] == 20
    assert offer["call"]["caller_name"] == "Maria"
    assert (offer["call"]["payload"], offer["call"]["payload_source"]) == ("", "")

    flushes = call.flushes
    clock.now += 5
    bridge = await connected(service, clock, call)
    assert bridge.started and bridge.agent_id == "ana"
    assert call.flushes > flushes  # whatever hold line was playing stops at once
    assert call.handled_by == "ana"
    assert kinds(ana)[-1] == "connected"
    view = service.view("ana")
    assert view["me"]["status"] == "busy" and view["offer"] is None
    assert view["call"]["call_id"] == call.id and "anything_else" in view["call"]["nodes"]


async def test_agent_hangs_up_the_record_has_who_wait_talk_and_outcome(clock: Clock, store: SqliteStore) -> None:
    service, _ = make_service(clock, store)
    ana = console(service, "ana")
    call = FakeCall()
    service.on_handover(call, ASKED)
    clock.now += 12
    bridge = await connected(service, clock, call)
    clock.now += 60
    service.hang_up("ana", call.id)
    await settle(call)
    assert call.hangups == ["agent_hung_up"]
    assert bridge.stopped
    await service.aclose()
    assert bridge.closed
    record = store.get_call(call.id)
    assert record is not None
    assert (record.handled_by, record.handover_queue, record.handover_outcome) == ("ana", "support", "agent_hung_up")
    assert (record.queue_wait_s, record.talk_s) == (12.0, 60.0)
    assert {"type": "call_ended", "call_id": call.id, "reason": "agent_hung_up"} in ana
    assert service.records[call.id].outcome is Outcome.AGENT_HUNG_UP
    assert service.desk.agent("ana").status is AgentStatus.AVAILABLE
    # The runtime's _forget still runs for the ended call: a no-op now.
    service.call_ended(call)


async def test_caller_hanging_up_in_the_queue_is_abandoned(clock: Clock, store: SqliteStore) -> None:
    service, _ = make_service(clock, store)
    call = FakeCall()
    service.on_handover(call, ASKED)
    clock.now += 42
    call.ended.set()
    service.call_ended(call)
    record = store.get_call(call.id)
    assert record is not None
    assert (record.handover_outcome, record.queue_wait_s, record.talk_s, record.handled_by) == (
        "abandoned",
        42.0,
        0.0,
        None,
    )
    assert service.view("ana")["waiting"] == []


async def test_caller_hanging_up_while_talking_closes_the_agent_leg(clock: Clock, store: SqliteStore) -> None:
    service, _ = make_service(clock, store)
    ana = console(service, "ana")
    call = FakeCall()
    service.on_handover(call, ASKED)
    bridge = await connected(service, clock, call)
    clock.now += 7
    call.ended.set()
    service.call_ended(call)
    await service.aclose()
    assert bridge.closed
    assert call.hangups == []  # the caller already hung up
    record = store.get_call(call.id)
    assert record is not None and (record.handover_outcome, record.talk_s) == ("caller_hung_up", 7.0)
    assert {"type": "call_ended", "call_id": call.id, "reason": "caller_hung_up"} in ana


async def test_max_wait_runs_the_queue_fallback_node(clock: Clock, store: SqliteStore) -> None:
    service, _ = make_service(clock, store, fallback_node="callback")
    call = FakeCall()
    service.on_handover(call, ASKED)
    clock.now += 120
    service.tick()
    assert call.resumed == ["callback"] and not call.suspended
    record = store.get_call(call.id)
    assert record is not None
    assert (record.state, record.handover_outcome, record.queue_wait_s) == ("active", "timed_out", 120.0)


async def test_max_wait_without_a_fallback_node_offers_a_callback_and_hangs_up(clock: Clock) -> None:
    service, permissions = make_service(clock)
    call = FakeCall()
    service.on_handover(call, ASKED)
    await settle(call)
    clock.now += 120
    service.tick()
    await settle(call)
    assert call.said[-1] == NOBODY_MESSAGE
    assert permissions == ["15550001111"]
    assert call.hangups == ["handover_timed_out"]


async def test_agent_browser_drops_caller_hears_why_and_goes_back_to_the_front(
    clock: Clock, store: SqliteStore
) -> None:
    service, _ = make_service(clock, store)
    ana = console(service, "ana")
    call = FakeCall()
    service.on_handover(call, ASKED)
    await settle(call)
    bridge = await connected(service, clock, call)
    clock.now += 30
    bridge.on_lost("the agent's audio connection dropped")
    await settle(call)
    assert bridge.stopped
    assert call.said[-3:] == [AGENT_LOST_MESSAGE, DEFAULT_HOLD_MESSAGE, POSITION_1]
    assert call.suspended  # still with the desk, not the bot
    assert {"type": "call_ended", "call_id": call.id, "reason": "disconnected"} in ana
    assert any(m["type"] == "alert" for m in ana)
    assert service.desk.agent("ana").status is AgentStatus.AWAY
    (waiting,) = service.view("ben")["waiting"]
    assert waiting["call_id"] == call.id

    # Ben takes it; the record adds both talks and keeps the last agent.
    clock.now += 10
    await connected(service, clock, call, agent="ben")
    clock.now += 20
    service.hang_up("ben", call.id)
    record = store.get_call(call.id)
    assert record is not None
    assert (record.handled_by, record.talk_s, record.queue_wait_s) == ("ben", 50.0, 10.0)


async def test_console_gone_mid_call_requeues_the_caller(clock: Clock) -> None:
    service, _ = make_service(clock)
    call = FakeCall()
    service.on_handover(call, ASKED)
    await settle(call)
    bridge = await connected(service, clock, call)
    service.agent_disconnected("ana")
    await settle(call)
    assert bridge.stopped and call.said[-3] == AGENT_LOST_MESSAGE
    bridge.on_lost("late")  # the peer notices too, after the fact: ignored
    assert service.desk.snapshot(clock())["waiting"][0]["call_id"] == call.id


async def test_return_to_bot_at_the_agents_chosen_node(clock: Clock, store: SqliteStore) -> None:
    service, _ = make_service(clock, store)
    call = FakeCall()
    service.on_handover(call, ASKED)
    bridge = await connected(service, clock, call)
    with pytest.raises(ActionError) as refused:
        service.return_to_bot("ana", call.id, "no_such_node")
    assert refused.value.status == 400
    with pytest.raises(ActionError):
        service.return_to_bot("ben", call.id, "anything_else")  # not Ben's call
    clock.now += 15
    service.return_to_bot("ana", call.id, "anything_else")
    assert call.resumed == ["anything_else"] and bridge.stopped
    assert call.handled_by == "ana"
    record = store.get_call(call.id)
    assert record is not None
    assert (record.state, record.handover_outcome, record.talk_s) == ("active", "returned_to_bot", 15.0)


async def test_accept_after_the_offer_moved_on_is_refused_without_a_peer(clock: Clock) -> None:
    service, _ = make_service(clock)
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    clock.now += 20
    service.tick()  # rang out: ana is away now
    with pytest.raises(ActionError) as refused:
        await service.accept("ana", call.id, "v=0 offer")
    assert refused.value.status == 409
    assert FakeBridge.made == []
    with pytest.raises(ActionError):
        await service.accept("ben", "wacid.unknown", "v=0 offer")


async def test_offer_withdrawn_while_answering_closes_the_new_peer(clock: Clock) -> None:
    service, _ = make_service(clock)
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    accepting = asyncio.create_task(service.accept("ana", call.id, "v=0 offer"))
    await asyncio.sleep(0)  # the bridge is answering
    call.ended.set()
    service.call_ended(call)  # the caller gives up meanwhile
    with pytest.raises(ActionError):
        await accepting
    assert FakeBridge.made[0].closed


async def test_a_browser_offer_we_cannot_take_is_400_and_the_offer_stands(clock: Clock) -> None:
    service, _ = make_service(clock)
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    with pytest.raises(ActionError) as refused:
        await service.accept("ana", call.id, "bad")
    assert refused.value.status == 400 and "opus" in str(refused.value)
    assert FakeBridge.made[0].closed
    assert await service.accept("ana", call.id, "v=0 offer") == "v=0 answer"


async def test_decline_passes_the_call_to_the_next_agent(clock: Clock) -> None:
    service, _ = make_service(clock)
    ben = console(service, "ben")
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    service.set_available("ben", True)
    service.decline("ana", call.id)
    assert kinds(ben) == ["offer"]
    assert service.view("ana")["me"]["status"] == "available"


async def test_live_transcript_goes_to_the_console_and_the_call_transcript(clock: Clock) -> None:
    service, _ = make_service(clock)
    ana = console(service, "ana")
    call = FakeCall()
    call.conversation = SimpleNamespace(transcript=[])
    service.on_handover(call, ASKED)
    bridge = await connected(service, clock, call)
    bridge.on_text("caller", "My parcel never came.")
    bridge.on_text("agent", "I will send a new one today.")
    lines = [m["text"] for m in ana if m["type"] == "transcript"]
    assert lines == ["My parcel never came.", "I will send a new one today."]
    assert [(e.who, e.text) for e in call.conversation.transcript] == [
        ("caller", "My parcel never came."),
        ("agent", "I will send a new one today."),
    ]
    assert service.view("ana")["call"]["live"][-1] == {"who": "agent", "text": "I will send a new one today."}


async def test_a_queue_the_config_does_not_have_still_ends_the_call_politely(clock: Clock) -> None:
    service, permissions = make_service(clock)
    call = FakeCall()
    service.on_handover(call, Handover(queue="billing"))
    await settle(call)
    assert call.said == [NOBODY_MESSAGE]
    assert call.hangups == ["handover_failed"] and permissions == ["15550001111"]
    assert service.view("ana")["waiting"] == []


async def test_the_tick_loop_runs_while_open_and_stops_on_close(clock: Clock) -> None:
    service = HandoverService(settings(), clock=clock, tick_s=0.01, bridge_factory=FakeBridge)
    ana = console(service, "ana")
    call = FakeCall()
    service.on_handover(call, ASKED)
    service.set_available("ana", True)
    clock.now += 20  # the offer rings out on the next tick, with nobody calling tick() by hand
    for _ in range(100):
        if "offer_withdrawn" in kinds(ana):
            break
        await asyncio.sleep(0.01)
    assert {"type": "offer_withdrawn", "call_id": call.id, "reason": "timeout"} in ana
    await service.aclose()
    assert ana[-1] == {"type": "closed"}
    await settle(call)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "handover-tick"]


FLOW = """
name: t
start: menu
global_intents:
  - name: agent
    examples: ["I want to talk to a person"]
    goto: agent
nodes:
  menu:
    say: "How can I help?"
    intents:
      - name: bye
        examples: ["goodbye"]
        goto: bye
      - name: more
        examples: ["one more thing"]
        goto: anything_else
  anything_else:
    say: "Is there anything else I can help with?"
    intents:
      - name: "no"
        examples: ["no thanks"]
        goto: bye
  agent:
    say: "Let me find a colleague."
    handover:
      queue: support
  bye:
    say: "Goodbye!"
    end: true
"""


def test_a_flow_that_ended_at_a_handover_resumes_at_the_chosen_node() -> None:
    engine = FlowEngine(parse_flow(FLOW))
    engine.start()
    handed = engine.handle("I want to talk to a person")
    assert handed.handover is not None and engine.ended
    reply = engine.goto("anything_else")
    assert reply.lines == ["Is there anything else I can help with?"]
    assert not engine.ended and engine.node == "anything_else"
    assert engine.handle("no thanks").end_call


async def test_keys_the_caller_presses_with_a_person_show_on_their_console(clock: Clock) -> None:
    service, _ = make_service(clock)
    ana = console(service, "ana")
    call = FakeCall()
    call.conversation = SimpleNamespace(transcript=[])
    service.on_handover(call, ASKED)
    await connected(service, clock, call)
    service.keys_pressed(call, "4")
    service.keys_pressed(call, "#")
    assert [m["text"] for m in ana if m["type"] == "transcript"] == ["[keys] 4", "[keys] #"]
    assert service.view("ana")["call"]["live"][-1] == {"who": "caller", "text": "[keys] #"}
    assert call.conversation.transcript == []  # the conversation writes the call's own transcript
