"""The glue between live calls, the handover desk and the agents' consoles.

`HandoverDesk` decides (pure, clock in, events out); this service is the only place that acts on its events:
it speaks the hold and queue-position lines, rings consoles, bridges an accepting agent to the caller, runs
the fallback when the wait is too long, puts a caller back in the queue when their agent's browser drops,
and writes the handover into the call record. Everything it does to a call goes through the seams `Call`
offers (`say`, `suspend_bot`, `resume_bot`, audio taps, `play`, `hangup`), so a unit test drives it with a
fake call and a fake clock.

Event handling is synchronous (`_apply`); anything that waits (speech, closing a peer, hanging up) is started
as a task owned either by the call (dies with it) or by this service (closing an agent's peer must finish
even when the call is already gone), so a slow line can never hold up routing for other callers.

With several workers on PostgreSQL the desk is shared (agent/handover/shared.py): each change to it is a
write job, its events come back as the job commits, and each worker acts on the part of an event that is
its own (the caller it holds, the consoles connected to it); the rest goes to the other workers by NOTIFY.
With one process (SQLite) the desk is this process's, changed and acted on at once, as always.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agent.conversation import KEYS_PREFIX, TranscriptEntry
from agent.dialogue.effects import Handover
from agent.handover.bridge import Bridge
from agent.handover.config import HandoverSettings
from agent.handover.queues import (
    Abandoned,
    AgentStatus,
    Announce,
    Connected,
    Ended,
    Event,
    HandoverError,
    HandoverRecord,
    Hold,
    MaxWaitReached,
    Offer,
    OfferWithdrawn,
    Outcome,
    Requeued,
    ReturnToBot,
    WaitingCall,
    offer_of,
    talking_agents,
)
from agent.handover.shared import ACCEPT_PATH, SIGNATURE_HEADER, DeskResult, Routed, SharedDesk, Side
from agent.handover.summary import build_summary
from agent.media.sdp import SdpError
from agent.speech.stt import Transcriber
from agent.store.base import Store

log = logging.getLogger(__name__)

TICK_S = 1.0
AGENT_LOST_MESSAGE = "Sorry, the line to my colleague dropped. I am putting you back at the front of the queue."
NOBODY_MESSAGE = (
    "Sorry, none of my colleagues can take your call right now. We will call you back as soon as we can. Goodbye!"
)
KEEP_RECORDS = 200  # finished handovers kept in memory for the console's "recent" list and for tests


class HandoverCall(Protocol):
    """What the service needs of a live `Call` (see agent/call.py, which implements all of it)."""

    id: str
    caller_number: str | None
    caller_name: str | None
    handled_by: str | None
    ended: asyncio.Event
    flow: Any
    conversation: Any

    @property
    def slots(self) -> dict[str, Any]: ...
    async def say(self, text: str) -> None: ...
    def suspend_bot(self) -> None: ...
    def resume_bot(self, node: str | None = None) -> None: ...
    def flush_audio(self) -> None: ...
    def play(self, pcm48k: np.ndarray) -> None: ...
    def add_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None: ...
    def remove_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None: ...
    def transcript_pairs(self) -> list[tuple[str, str]]: ...
    async def hangup(self, reason: str = ...) -> None: ...
    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]: ...


class AgentBridge(Protocol):
    """`Bridge`, as the service uses it (tests substitute one without WebRTC)."""

    async def answer(self, offer_sdp: str) -> str: ...
    def start(self) -> None: ...
    def stop_relay(self) -> None: ...
    async def close(self) -> None: ...


Op = Callable[[Any, Side], list[Event]]
BridgeFactory = Callable[[HandoverCall, str, Callable[[str, str], None], Callable[[str], None]], AgentBridge]
Push = Callable[[dict[str, Any]], None]
RequestPermission = Callable[[str, str | None], Awaitable[Any]]


class ActionError(Exception):
    """An agent's console action that cannot be done now; `status` is the HTTP status the console returns."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Voice:
    """Hold and position lines for one caller, spoken in order and silenced at once when an agent picks up."""

    def __init__(self, call: HandoverCall) -> None:
        self._call = call
        self._lines: deque[str] = deque()
        self._task: asyncio.Task[Any] | None = None

    def say(self, text: str) -> None:
        self._lines.append(text)
        if self._task is None or self._task.done():
            self._task = self._call.spawn(self._run(), "handover-voice")

    async def _run(self) -> None:
        while self._lines:
            await self._call.say(self._lines.popleft())

    def silence(self) -> None:
        self._lines.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._call.flush_audio()

    async def idle(self) -> None:
        """For tests: wait until every queued line has been spoken."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


@dataclass
class _Handed:
    """A call the service is looking after, from the flow's handover until the desk's `Ended`."""

    call: HandoverCall
    handover: Handover
    voice: _Voice
    bridge: AgentBridge | None = None
    agent_id: str | None = None
    live: list[dict[str, str]] = field(default_factory=list)  # what caller and agent said while bridged


class HandoverService:
    """One per process when `handover:` has queues; created and closed by the runtime."""

    def __init__(
        self,
        settings: HandoverSettings,
        *,
        store: Store | None = None,
        transcriber: Transcriber | None = None,
        media_hosts: Sequence[str] | None = None,
        ice_servers: Sequence[str] = (),
        request_permission: RequestPermission | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float | None = TICK_S,
        bridge_factory: BridgeFactory | None = None,
        shared: SharedDesk | None = None,
    ) -> None:
        self.settings = settings
        # With several workers (agent/handover/shared.py) the desk is shared through the database: `desk` is
        # then this worker's copy of it as of the last operation, for reading; changes go through `_op`.
        self.desk = settings.desk()
        self._shared = shared
        self._side = Side()
        self._remote_live: dict[str, list[dict[str, str]]] = {}  # live lines of calls bridged on another worker
        self._tick_job: asyncio.Task[Any] | None = None
        self._store = store
        self._transcriber = transcriber
        self._media_hosts = list(media_hosts) if media_hosts else None
        self._ice_servers = list(ice_servers)
        self._request_permission = request_permission
        self._clock = clock
        self._tick_s = tick_s
        self._bridge_factory = bridge_factory or self._new_bridge
        self._calls: dict[str, _Handed] = {}
        self._offers: dict[str, tuple[str, float]] = {}  # agent -> (call, expires_at) of their open offer
        self._subscribers: dict[str, list[Push]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.records: OrderedDict[str, HandoverRecord] = OrderedDict()
        self.closed = False

    @property
    def shared(self) -> bool:
        """Whether the desk is shared with other workers (agent/handover/shared.py)."""
        return self._shared is not None

    # --- the runtime's side ---------------------------------------------------------------------------------

    def on_handover(self, call: HandoverCall, handover: Handover) -> None:
        """`CallServices.on_handover`, called from inside the conversation's speaking task. The bot is paused
        and the caller queued right here, so no word of theirs can become a bot turn in between; only the slow
        parts (hold lines) run as the call's tasks."""
        if self.closed:
            return
        if call.id in self._calls:
            log.warning("call %s: handed over again while already with the desk; ignored", call.id)
            return
        handed = _Handed(call=call, handover=handover, voice=_Voice(call))
        self._calls[call.id] = handed
        call.suspend_bot()
        self._enter_queue(handed)

    def _enter_queue(self, handed: _Handed) -> None:
        call, handover = handed.call, handed.handover
        transcript = call.transcript_pairs()
        slots = call.slots
        context = getattr(call, "context", None)  # a live Call has one; stand-ins in tests may not
        waiting = WaitingCall(
            call_id=call.id,
            queue=handover.queue,
            reason=handover.reason,
            skills_required=tuple(handover.skills),
            transcript=tuple(transcript),
            slots=slots,
            summary=build_summary(handover.reason, slots, transcript),
            caller_number=call.caller_number or "",
            caller_name=call.caller_name or "",
            payload=context.payload if context else "",
            payload_source=context.source if context else "",
        )
        now = self._clock()
        try:
            if self._shared is None:
                events = self.desk.enqueue(waiting, now)
            elif handover.queue not in {q.name for q in self.settings.queues}:
                raise HandoverError(f"unknown queue {handover.queue!r}")
        except HandoverError as exc:
            # The flow was checked against the config at startup, so this is a flow edited since: the caller
            # must still hear something and get a callback rather than wait in silence.
            log.error("call %s: cannot hand over: %s", call.id, exc)
            self._calls.pop(call.id, None)
            call.spawn(self._give_up(call, "handover_failed"), "handover-give-up")
            return
        log.info("call %s: waiting in queue %s (%s)", call.id, handover.queue, handover.reason or "no reason given")
        self._write(call.id, state="handover", handover_queue=handover.queue)
        self._ensure_ticking()
        if self._shared is None:
            self._apply(events)
            return
        me, nodes = self._shared.worker_id, sorted(getattr(call.flow, "nodes", {}))

        def enqueue(desk: Any, side: Side) -> list[Event]:
            side.owners[waiting.call_id], side.nodes[waiting.call_id] = me, nodes
            return desk.enqueue(waiting, now)  # type: ignore[no-any-return]

        self._op(enqueue)

    def call_ended(self, call: HandoverCall) -> None:
        """From the runtime when any call ends: a caller who hangs up leaves the queue (abandoned) or the agent."""
        if call.id not in self._calls:
            return
        now = self._clock()
        self._op(lambda desk, side: desk.caller_hung_up(call.id, now))
        handed = self._calls.pop(call.id, None)
        if handed is not None:  # never reached the desk
            self._drop_bridge(handed)

    def tick(self) -> None:
        """Offer timeouts, max waits, new offers, position announcements; the loop calls it every `tick_s`."""
        now = self._clock()
        if self._shared is not None:
            if not (self._calls or self._subscribers):
                return  # nothing here to time or to show: the workers holding callers or consoles keep it ticking
            if self._tick_job is None or self._tick_job.done():  # one at a time: a slow database must not pile up
                self._tick_job = self._spawn(self._shared_op(lambda desk, side: desk.tick(now)), "handover-tick-job")
            return
        events = self.desk.tick(now)
        self._apply(events)
        if not events and self._calls:
            self._broadcast()  # wait and talk counters still move

    def queue_depths(self) -> dict[str, int]:
        """Callers waiting (not yet talking to a person) per configured queue, zeros included: the metrics read
        it at scrape time, and a queue that empties must show 0 rather than vanish."""
        depths = {queue.name: 0 for queue in self.settings.queues}
        for waiting in self.desk.snapshot(self._clock())["waiting"]:
            if self._shared is not None and self._side.owners.get(waiting["call_id"]) != self._shared.worker_id:
                continue  # another worker's caller: each worker counts its own, so the sum over workers is right
            depths[waiting["queue"]] = depths.get(waiting["queue"], 0) + 1
        return depths

    async def aclose(self) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for handed in list(self._calls.values()):
            self._drop_bridge(handed)
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for agent_id in list(self._subscribers):
            self._push(agent_id, {"type": "closed"})
        self._subscribers.clear()

    # --- the console's side ---------------------------------------------------------------------------------

    def subscribe(self, agent_id: str, push: Push) -> Callable[[], None]:
        """Receive this agent's console messages (`state`, `offer`, `transcript`…) until the returned unsubscribe."""
        self._subscribers.setdefault(agent_id, []).append(push)
        self._ensure_ticking()
        if self._shared is not None:
            self._op(self._here(agent_id))

        def unsubscribe() -> None:
            pushes = self._subscribers.get(agent_id, [])
            if push in pushes:
                pushes.remove(push)
            if not pushes:
                self._subscribers.pop(agent_id, None)

        return unsubscribe

    def set_available(self, agent_id: str, available: bool) -> None:
        now = self._clock()
        here = self._here(agent_id)

        def change(desk: Any, side: Side) -> list[Event]:
            here(desk, side)
            return desk.agent_available(agent_id, now) if available else desk.agent_away(agent_id, now)  # type: ignore[no-any-return]

        self._op(change)

    def agent_disconnected(self, agent_id: str) -> None:
        """Console gone (signed out, page closed, or its audio dropped): away, and a caller goes back to the queue."""
        now = self._clock()
        me = None if self._shared is None else self._shared.worker_id

        def gone(desk: Any, side: Side) -> list[Event]:
            if me is not None and side.presence.get(agent_id) == me:
                del side.presence[agent_id]
            return desk.agent_disconnected(agent_id, now)  # type: ignore[no-any-return]

        self._op(gone)

    async def accept(self, agent_id: str, call_id: str, offer_sdp: str) -> str:
        """Answer the agent browser's WebRTC offer and connect the call; returns our SDP answer. With several
        workers, a call another worker holds is answered there (`_forward_accept`): the bridge lives with the
        caller's media."""
        if self._shared is not None and call_id not in self._calls:
            owner, offered = self._side.owners.get(call_id), offer_of(self.desk, agent_id)
            if owner is None or owner == self._shared.worker_id or offered is None or offered[0] != call_id:
                raise ActionError(409, "this call is no longer offered to you")
            return await self._forward_accept(owner, agent_id, call_id, offer_sdp)
        return await self._accept_here(agent_id, call_id, offer_sdp)

    async def accept_forwarded(self, body: bytes, signature: str) -> str:
        """The internal route's side: another worker's agent accepts a call this worker holds."""
        if self._shared is None or not self._shared.verify(body, signature):
            raise ActionError(403, "not a signed request from another worker")
        try:
            data = json.loads(body)
            agent_id, call_id, sdp = str(data["agent_id"]), str(data["call_id"]), str(data["sdp"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ActionError(400, "a forwarded accept needs agent_id, call_id and sdp") from exc
        if call_id not in self._calls:
            raise ActionError(409, "this call is no longer offered to you")
        log.info("call %s: agent %s accepts it from another worker's console", call_id, agent_id)
        return await self._accept_here(agent_id, call_id, sdp)

    async def _forward_accept(self, owner: str, agent_id: str, call_id: str, offer_sdp: str) -> str:
        import httpx

        assert self._shared is not None
        url = await asyncio.to_thread(self._shared.worker_url, owner)
        if url is None:
            raise ActionError(503, "the server holding this call has no WACALL_WORKER_URL; it cannot be taken here")
        body = json.dumps({"agent_id": agent_id, "call_id": call_id, "sdp": offer_sdp}).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: self._shared.sign(body)}
        try:
            async with httpx.AsyncClient(timeout=20.0) as client:
                answer = await client.post(url.rstrip("/") + ACCEPT_PATH, content=body, headers=headers)
            data = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("call %s: forwarding %s's accept to worker %s failed: %s", call_id, agent_id, owner, exc)
            raise ActionError(502, "the server holding this call did not answer; try again") from exc
        if answer.status_code != 200 or not isinstance(data, dict) or not isinstance(data.get("sdp"), str):
            message = data.get("error") if isinstance(data, dict) else None
            status = answer.status_code if 400 <= answer.status_code < 500 else 502
            raise ActionError(status, str(message or "the server holding this call refused the accept"))
        return str(data["sdp"])

    async def _accept_here(self, agent_id: str, call_id: str, offer_sdp: str) -> str:
        handed = self._calls.get(call_id)
        # Shared: the desk decides in the accept's own job (this worker's `_offers` knows only its agents).
        offered = self._shared is not None or self._offers.get(agent_id, ("",))[0] == call_id
        if handed is None or not offered:
            raise ActionError(409, "this call is no longer offered to you")
        if handed.bridge is not None:
            raise ActionError(409, "this call is already being connected")
        bridge = self._bridge_factory(
            handed.call,
            agent_id,
            lambda who, text: self._live_line(call_id, who, text),
            lambda why: self._agent_media_lost(agent_id, call_id, why),
        )
        handed.bridge = bridge  # claimed while answering, so a second accept cannot build another peer
        try:
            answer = await bridge.answer(offer_sdp)
        except SdpError as exc:
            handed.bridge = None
            await bridge.close()
            raise ActionError(400, f"the browser's audio offer was refused: {exc}") from exc
        except BaseException:
            handed.bridge = None
            await bridge.close()
            raise
        now = self._clock()
        if self._shared is None:
            events = self.desk.accept(agent_id, call_id, now)
        else:  # its events are acted on as the job's outcome comes back (Connected starts the bridge)
            outcome = await self._shared_op(lambda desk, side: desk.accept(agent_id, call_id, now))
            events = [] if outcome is None else outcome.events
        if not any(isinstance(e, Connected) for e in events):
            # The offer timed out, or the caller hung up, while we answered.
            if handed.bridge is bridge:
                handed.bridge = None
            await bridge.close()
            if self._shared is None:
                self._apply(events)
            raise ActionError(409, "this call is no longer offered to you")
        if self._shared is None:
            self._apply(events)
        return answer

    def decline(self, agent_id: str, call_id: str) -> None:
        now = self._clock()
        self._op(lambda desk, side: desk.decline(agent_id, call_id, now))

    def hang_up(self, agent_id: str, call_id: str) -> None:
        self._own_call(agent_id, call_id)
        now = self._clock()
        self._op(lambda desk, side: desk.hangup_by_agent(call_id, now))

    def return_to_bot(self, agent_id: str, call_id: str, node: str) -> None:
        handed = self._own_call(agent_id, call_id)
        if handed is not None:
            nodes: Any = getattr(handed.call.flow, "nodes", {})
        else:
            nodes = self._side.nodes.get(call_id, [])
        if node not in nodes:
            raise ActionError(400, f"the flow has no node {node!r}")
        now = self._clock()
        self._op(lambda desk, side: desk.return_to_bot(call_id, node, now))

    def view(self, agent_id: str) -> dict[str, Any]:
        """Everything one agent's console shows, JSON-ready."""
        now = self._clock()
        snapshot = self.desk.snapshot(now)
        me = self.desk.agent(agent_id)
        offer = None
        open_offer = self._offers.get(agent_id) if self._shared is None else offer_of(self.desk, agent_id)
        if me.status is AgentStatus.OFFERED and open_offer is not None:
            call_id, expires_at = open_offer
            waiting = next((c for c in snapshot["waiting"] if c["call_id"] == call_id), None)
            offer = {"call": waiting, "call_id": call_id, "expires_in_s": max(0.0, round(expires_at - now, 1))}
        current = None
        if me.status is AgentStatus.BUSY and me.call_id in self._calls:
            handed = self._calls[me.call_id]
            talking = next((c for c in snapshot["talking"] if c["call_id"] == me.call_id), None)
            current = {
                "call_id": me.call_id,
                "call": talking,
                "live": list(handed.live),
                "nodes": sorted(getattr(handed.call.flow, "nodes", {})),
            }
        elif self._shared is not None and me.status is AgentStatus.BUSY and me.call_id is not None:
            # Bridged on another worker: its live lines came here by message, its nodes with the shared desk.
            talking = next((c for c in snapshot["talking"] if c["call_id"] == me.call_id), None)
            current = {
                "call_id": me.call_id,
                "call": talking,
                "live": list(self._remote_live.get(me.call_id, ())),
                "nodes": list(self._side.nodes.get(me.call_id, ())),
            }
        return {
            "me": {"id": agent_id, "name": me.config.name or agent_id, "status": me.status.value},
            "waiting": snapshot["waiting"],
            "talking": snapshot["talking"],
            "agents": snapshot["agents"],
            "offer": offer,
            "call": current,
        }

    # --- events ---------------------------------------------------------------------------------------------

    def _apply(self, events: Sequence[Event]) -> None:
        for event in events:
            try:
                self._apply_one(event)
            except Exception:
                log.exception("handover: failed to act on %r", event)
        if events:
            self._broadcast()

    def _apply_one(
        self, event: Event, *, call_here: bool = True, agent_here: bool = True, talking: str | None = None
    ) -> None:
        """Act on one desk event. With one process both of its parts are acted on here; with a shared desk,
        `call_here` says this worker holds the call (voice, bridge, record) and `agent_here` that it holds the
        agent's console (rings, notices); `talking` names, for `Ended`, the agent who was on the call."""
        handed = self._calls.get(getattr(event, "call_id", "") or "") if call_here else None
        match event:
            case Hold(text=text) | Announce(text=text):
                if handed is not None:
                    handed.voice.say(text)
            case Offer(agent_id=agent_id, call_id=call_id, expires_at=expires_at):
                if agent_here:
                    self._offers[agent_id] = (call_id, expires_at)
                    self._push(agent_id, {"type": "offer", "call_id": call_id})
            case OfferWithdrawn(agent_id=agent_id, call_id=call_id, reason=reason):
                if agent_here:
                    if self._offers.get(agent_id, ("",))[0] == call_id:
                        del self._offers[agent_id]
                    self._push(agent_id, {"type": "offer_withdrawn", "call_id": call_id, "reason": reason})
            case Connected(agent_id=agent_id, call_id=call_id):
                self._offers.pop(agent_id, None)
                if call_here:
                    if handed is None or handed.bridge is None:
                        raise HandoverError(f"call {call_id} connected to {agent_id} without a bridge")
                    handed.voice.silence()
                    handed.agent_id = agent_id
                    handed.call.handled_by = agent_id
                    handed.bridge.start()
                    log.info("call %s: agent %s picked up", call_id, agent_id)
                if agent_here:
                    self._push(agent_id, {"type": "connected", "call_id": call_id})
            case Requeued(call_id=call_id, agent_id=agent_id):
                if handed is not None:
                    self._drop_bridge(handed)
                    handed.voice.silence()
                    handed.voice.say(AGENT_LOST_MESSAGE)
                if call_here:
                    log.warning("call %s: agent %s dropped; back to the front of the queue", call_id, agent_id)
                if agent_here:
                    self._remote_live.pop(call_id, None)
                    self._push(agent_id, {"type": "call_ended", "call_id": call_id, "reason": "disconnected"})
            case ReturnToBot(call_id=call_id, node=node):
                if handed is not None:
                    self._drop_bridge(handed)
                    handed.voice.silence()
                    self._resume_bot(handed.call, node)
            case MaxWaitReached(call_id=call_id, fallback_node=node):
                if handed is not None:
                    handed.voice.silence()
                    if node:
                        self._resume_bot(handed.call, node)
                    else:
                        handed.call.spawn(self._give_up(handed.call, "handover_timed_out"), "handover-give-up")
            case Abandoned(call_id=call_id, waited_s=waited):
                if call_here:
                    log.info("call %s: caller hung up after waiting %.0f s", call_id, waited)
            case Ended(record=record):
                self._finish(record, call_here=call_here, agent_here=agent_here, talking=talking)

    def _finish(
        self, record: HandoverRecord, *, call_here: bool = True, agent_here: bool = True, talking: str | None = None
    ) -> None:
        outcome = record.outcome or Outcome.ANSWERED
        self._remote_live.pop(record.call_id, None)
        if not call_here:  # the caller is on another worker, which writes the record; tell the agent here
            if agent_here and talking is not None:
                self._push(talking, {"type": "call_ended", "call_id": record.call_id, "reason": outcome.value})
            return
        handed = self._calls.pop(record.call_id, None)
        self.records[record.call_id] = record
        while len(self.records) > KEEP_RECORDS:
            self.records.popitem(last=False)
        if handed is None:
            self._write_record(record, continuing=False)
            if agent_here and talking is not None:
                self._push(talking, {"type": "call_ended", "call_id": record.call_id, "reason": outcome.value})
            return
        agent_id = handed.agent_id
        self._drop_bridge(handed)
        call = handed.call
        if record.handled_by:
            call.handled_by = record.handled_by
        continuing = outcome in (Outcome.RETURNED_TO_BOT, Outcome.TIMED_OUT) and not call.ended.is_set()
        self._write_record(record, continuing=continuing)
        if outcome is Outcome.AGENT_HUNG_UP:
            handed.voice.silence()
            call.spawn(call.hangup("agent_hung_up"), "agent-hangup")
        if agent_id is not None and agent_here:
            self._push(agent_id, {"type": "call_ended", "call_id": record.call_id, "reason": outcome.value})
        log.info(
            "call %s: handover ended (%s): waited %.1f s, talked %.1f s%s",
            record.call_id,
            outcome.value,
            record.waited_s,
            record.talk_s,
            f" with {record.handled_by}" if record.handled_by else "",
        )

    def _write_record(self, record: HandoverRecord, *, continuing: bool) -> None:
        changes: dict[str, Any] = {
            "handled_by": record.handled_by,
            "handover_queue": record.queue,
            "queue_wait_s": record.waited_s,
            "talk_s": record.talk_s,
            "handover_outcome": (record.outcome or Outcome.ANSWERED).value,
        }
        if continuing:
            changes["state"] = "active"
        self._write(record.call_id, **changes)

    def _write(self, call_id: str, **changes: Any) -> None:
        """Queued on the store's writer thread when it has one: a locked database must not stall the loop."""
        if self._store is None:
            return
        submit = getattr(self._store, "submit", None)
        try:
            if submit is None:
                self._store.update_call(call_id, **changes)
                return
            future = submit(lambda tx: tx.update_call(call_id, **changes))
        except Exception:
            log.exception("call %s: could not write the handover to the call record", call_id)
            return

        def report(done: Any) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error(
                    "call %s: could not write the handover to the call record", call_id, exc_info=done.exception()
                )

        future.add_done_callback(report)

    # --- helpers --------------------------------------------------------------------------------------------

    def _new_bridge(
        self, call: HandoverCall, agent_id: str, on_text: Callable[[str, str], None], on_lost: Callable[[str], None]
    ) -> AgentBridge:
        return Bridge(
            call,
            agent_id=agent_id,
            transcriber=self._transcriber,
            on_transcript=on_text,
            on_lost=on_lost,
            hosts=self._media_hosts,
            ice_servers=self._ice_servers,
        )

    def _own_call(self, agent_id: str, call_id: str) -> _Handed | None:
        """The call this agent is talking to; None when it is bridged on another worker (shared desk)."""
        handed = self._calls.get(call_id)
        if handed is not None and handed.agent_id == agent_id:
            return handed
        if self._shared is not None and handed is None and talking_agents(self.desk).get(call_id) == agent_id:
            return None
        raise ActionError(409, "you are not talking to this caller")

    def _drop_bridge(self, handed: _Handed) -> None:
        bridge, handed.bridge = handed.bridge, None
        handed.agent_id = None
        if bridge is not None:
            bridge.stop_relay()  # at once: not one more frame of the agent once they are gone
            self._spawn(bridge.close(), "close-agent-leg")

    def keys_pressed(self, call: HandoverCall, digit: str) -> None:
        """A key the caller pressed while with a person: shown live on their console (the call's own transcript
        already has it, written by the conversation)."""
        handed = self._calls.get(call.id)
        if handed is None:
            return
        text = KEYS_PREFIX + digit
        handed.live.append({"who": "caller", "text": text})
        if handed.agent_id is not None:
            self._tell(handed.agent_id, {"type": "transcript", "call_id": call.id, "who": "caller", "text": text})

    def _live_line(self, call_id: str, who: str, text: str) -> None:
        handed = self._calls.get(call_id)
        if handed is None:
            return
        handed.live.append({"who": who, "text": text})
        conversation = getattr(handed.call, "conversation", None)
        if conversation is not None:
            # Into the call's own transcript, so the call record has what was said to the agent too.
            conversation.transcript.append(TranscriptEntry(who, text, self._clock()))
        if handed.agent_id is not None:
            self._tell(handed.agent_id, {"type": "transcript", "call_id": call_id, "who": who, "text": text})

    def _agent_media_lost(self, agent_id: str, call_id: str, why: str) -> None:
        if self.closed or self.desk.agent(agent_id).call_id != call_id:
            return
        self._tell(agent_id, {"type": "alert", "message": f"Call audio lost: {why}."})
        self.agent_disconnected(agent_id)

    def _resume_bot(self, call: HandoverCall, node: str) -> None:
        call.resume_bot(node)

    async def _give_up(self, call: HandoverCall, reason: str) -> None:
        """No agent and no fallback node: tell the caller, ask WhatsApp for permission to call back, hang up."""
        await call.say(NOBODY_MESSAGE)
        if self._request_permission is not None and call.caller_number:
            try:
                await self._request_permission(call.caller_number, None)
            except Exception as exc:  # refused by the rules or by Meta: the hang-up still has to happen
                log.info("call %s: no call-back permission request sent: %s", call.id, exc)
        await call.hangup(reason)

    def _push(self, agent_id: str, message: dict[str, Any]) -> None:
        for push in list(self._subscribers.get(agent_id, ())):
            try:
                push(message)
            except Exception:
                log.exception("console push to %s failed", agent_id)

    def _broadcast(self) -> None:
        for agent_id in list(self._subscribers):
            self._push(agent_id, {"type": "state", "state": self.view(agent_id)})

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _tell(self, agent_id: str, message: dict[str, Any]) -> None:
        """A console message from the call's side: to the agent's console, on whichever worker it is."""
        self._push(agent_id, message)
        if self._shared is None:
            return
        worker = self._side.presence.get(agent_id)
        if worker is not None and worker != self._shared.worker_id:
            self._shared.push(worker, agent_id, message)

    # --- the shared desk (several workers, agent/handover/shared.py) ----------------------------------------

    def _op(self, op: Op) -> None:
        """Change the desk: at once in memory with one process; as a write job on the shared desk."""
        if self._shared is None:
            self._apply(op(self.desk, self._side))
        elif not self.closed:
            self._spawn(self._shared_op(op), "handover-desk")

    async def _shared_op(self, op: Op) -> DeskResult | None:
        assert self._shared is not None
        try:
            outcome = await asyncio.wrap_future(self._shared.submit(op, self._clock()))
        except Exception as exc:
            log.error("handover: the shared desk could not be changed: %s", exc)
            return None
        self.desk, self._side = outcome.desk, outcome.side
        for routed in outcome.mine:
            self._apply_routed(routed)
        self._broadcast()
        return outcome

    def _here(self, agent_id: str) -> Op:
        """The operation noting that this agent's console is on this worker (no desk change by itself)."""
        me = None if self._shared is None else self._shared.worker_id

        def here(desk: Any, side: Side) -> list[Event]:
            if me is not None:
                side.presence[agent_id] = me
            return []

        return here

    def _apply_routed(self, routed: Routed) -> None:
        try:
            self._apply_one(
                routed.event, call_here=routed.call_here, agent_here=routed.agent_here, talking=routed.talking
            )
        except Exception:
            log.exception("handover: failed to act on %r", routed.event)

    def on_worker_message(self, note: str) -> None:
        """A NOTIFY naming a message another worker's desk job (or call) left this one (agent/handover/shared.py)."""
        message_id = SharedDesk.message_id(note)
        if self._shared is not None and not self.closed and message_id is not None:
            self._spawn(self._take([message_id]), "handover-message")

    def catch_up(self) -> None:
        """Messages left for this worker whose NOTIFY never came (the cluster calls this every heartbeat)."""
        if self._shared is not None and not self.closed:
            self._spawn(self._take(None), "handover-catch-up")

    async def _take(self, ids: list[int] | None) -> None:
        assert self._shared is not None
        try:
            if ids is None and not await asyncio.to_thread(self._shared.waiting_messages):
                return  # the usual case: a read, not a write
            payloads = await asyncio.wrap_future(self._shared.take(ids))
        except Exception as exc:
            log.warning("handover: could not read the messages of other workers: %s", exc)
            return
        events = False
        for payload in payloads:
            parsed = SharedDesk.parse_message(payload)
            if isinstance(parsed, Routed):
                events = True
                self._apply_routed(parsed)
            elif parsed is not None:
                agent_id, message = parsed
                if message.get("type") == "transcript":
                    line = {"who": str(message.get("who", "")), "text": str(message.get("text", ""))}
                    self._remote_live.setdefault(str(message.get("call_id", "")), []).append(line)
                self._push(agent_id, message)
        if events:
            self._op(lambda desk, side: [])  # and this worker's copy of the desk brought up to date

    def _ensure_ticking(self) -> None:
        if self._tick_s is None or self.closed:
            return
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_loop(), name="handover-tick")

    async def _tick_loop(self) -> None:
        assert self._tick_s is not None
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.tick()
            except Exception:
                log.exception("handover tick failed")
