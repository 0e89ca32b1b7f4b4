"""One WhatsApp call: its state, its media peer, its conversation, and the cleanup of all of them.

Everything a call starts is owned here and closed in `end`, whichever side hangs up and whatever fails,
so a finished call leaves no task, thread or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from agent.actions import run_http
from agent.conversation import Conversation, ConversationConfig, ConversationHooks, EndpointCheck, LlmStream
from agent.dialogue.effects import Handover, HttpRequest, Reply, SendCallButton
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow
from agent.media.dtmf import KeyPress
from agent.media.peer import MediaError, MediaPeer
from agent.media.sdp import SdpError, normalise_bic_answer, shape_offer
from agent.media.tracks import InboundAudio
from agent.recordings.recorder import CallRecorder, RecordingInfo
from agent.recordings.service import Recordings
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.whatsapp.graph import GraphClient, GraphError, retryable
from agent.whatsapp.payloads import CallContext

log = logging.getLogger(__name__)

MAX_CALL_GOODBYE = "We have reached the time limit for this call. Please call us again. Goodbye."
GOODBYE_LIMIT_S = 10.0  # the closing line at the maximum length may not hold the hang-up longer than this


class CallEnded(Exception):
    """The call ended while an operation on it was in flight."""


class CallState(StrEnum):
    DIALING = "dialing"
    RINGING = "ringing"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass
class CallServices:
    """What a call borrows from the runtime (shared by all calls, never closed by one)."""

    graph: GraphClient
    transcriber: Transcriber
    synthesizer: Synthesizer
    media_hosts: list[str] | None = None
    ice_servers: list[str] = field(default_factory=list)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    connect_timeout_s: float = 10.0
    # Watchdogs (settings `media.*`, same defaults): no RTP from the caller this long ends the call; so does
    # reaching the maximum length, after `max_call_goodbye`. None turns one off.
    no_rtp_timeout_s: float | None = 20.0
    max_call_s: float | None = 3600.0
    max_call_goodbye: str = MAX_CALL_GOODBYE
    fallback_audio: np.ndarray | None = None
    llm: LlmStream | None = None
    endpoint_check: EndpointCheck | None = None
    # Set by the runtime when handover / permission requests are available.
    on_handover: Callable[[Call, Handover], None] | None = None
    on_permission_request: Callable[[Call, str], None] | None = None
    on_call_button: Callable[[Call, SendCallButton], None] | None = None
    # Keys the caller presses while a person has the call: to that person's console.
    on_handover_keys: Callable[[Call, str], None] | None = None
    # Carries out a flow's `http` steps: the real business systems, or canned answers (`wacall simulate`).
    http: Callable[[HttpRequest], Awaitable[tuple[bool, Any]]] = run_http
    # Call recordings (always set by the runtime; whether a call is recorded depends on its flow and settings).
    recordings: Recordings | None = None


class Call:
    """A user-initiated call answered by the bot."""

    def __init__(
        self,
        *,
        call_id: str,
        services: CallServices,
        flow: Flow,
        caller_number: str | None = None,
        caller_name: str | None = None,
        direction: str = "USER_INITIATED",
        on_ended: Callable[[Call], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ref: str | None = None,
        context: CallContext | None = None,
    ) -> None:
        self.id = call_id
        self.ref = ref or call_id  # our reference, sent as biz_opaque_callback_data on calls we place
        self.services = services
        self.flow = flow
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.context = context  # the call button's or deep link's payload the caller came from
        self.direction = direction
        self.state = CallState.RINGING
        self.end_reason: str | None = None
        self._clock = clock
        self._on_ended = on_ended
        self.created_at = clock()
        self.accepted_at: float | None = None
        self.ended_at: float | None = None
        self.ended = asyncio.Event()
        self.peer: MediaPeer | None = None
        self.conversation: Conversation | None = None
        self._inbound: InboundAudio | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._terminate_sent = False
        self.statuses: list[str] = []
        self._taps: list[Callable[[np.ndarray, float], None]] = []
        self.key_presses: list[KeyPress] = []  # the caller's keypad, in order (RFC 4733 events on the stream)
        self._last_key_at: float | None = None
        self._key_taps: list[Callable[[KeyPress], None]] = []
        self.handover: Handover | None = None
        self.handled_by: str | None = None
        # Why Meta never acknowledged our terminate (every retry failed); None when it did or was not asked.
        self.ending_owed: str | None = None
        self.wall_accepted_at: datetime | None = None
        # Decided once, up front: the flow's opening then includes the recording notice.
        self.recorded = services.recordings is not None and services.recordings.wanted(flow)
        self._recorder: CallRecorder | None = None
        self.recording: RecordingInfo | None = None

    @property
    def user_number(self) -> str | None:
        return self.caller_number

    @property
    def outcome(self) -> str:
        if self.accepted_at is not None:
            return "answered"
        if "REJECTED" in self.statuses or (self.end_reason or "").startswith("bad_offer"):
            return "rejected"
        if self.direction == "BUSINESS_INITIATED":
            return "unanswered"
        return self.end_reason or "missed"

    def __repr__(self) -> str:
        return f"Call({self.id[:18]}…, {self.state})"

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Start a task owned by this call, so `end` can cancel it."""
        task = asyncio.create_task(coro, name=f"{name}:{self.id[:16]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # answering ----------------------------------------------------------------
    async def answer(self, offer_sdp: str) -> None:
        """pre_accept with our answer, wait for media to connect, accept, then start talking."""
        graph = self.services.graph
        if self.state is CallState.ENDED:  # ended (a terminate webhook, shutdown) before we got to answer
            return
        self.state = CallState.CONNECTING
        self.peer = MediaPeer(
            hosts=self.services.media_hosts,
            ice_servers=self.services.ice_servers,
            label=f"call {self.id[:16]}",
        )
        self.peer.keys.listeners.append(self._on_key)
        try:
            answer_sdp = await self.peer.answer(offer_sdp)
        except SdpError as exc:
            log.warning("call %s: rejecting, bad SDP offer: %s", self.id, exc)
            await self._reject(f"bad_offer: {exc}")
            return
        if self.state is CallState.ENDED:
            return
        self._create_conversation()
        try:
            await graph.pre_accept(self.id, answer_sdp)
            await self.peer.wait_connected(self.services.connect_timeout_s)
            if self.state is CallState.ENDED:
                return
            await graph.accept(self.id, answer_sdp)
        except GraphError as exc:
            log.error("call %s: Graph API refused the answer: %s", self.id, exc)
            await self.end(f"graph_error: {exc.code}")
            return
        except MediaError as exc:
            log.error("call %s: %s", self.id, exc)
            await self._reject("media_failed")
            return
        if self.state is CallState.ENDED:
            # Ended while `accept` was in flight: our reject came too late, Meta has the call up and bills it.
            with contextlib.suppress(GraphError):
                await graph.terminate(self.id)
            return
        self._mark_accepted()
        await self._start_media()

    def _mark_accepted(self) -> None:
        self.accepted_at = self._clock()
        self.wall_accepted_at = datetime.now(UTC)
        self.state = CallState.ACTIVE

    # placing a call (business-initiated) ------------------------------------------
    async def dial(self, to: str) -> str:
        """Offer media to Meta with `connect`; Meta answers in a webhook, and the user picks up later."""
        self.state = CallState.DIALING
        self.peer = MediaPeer(
            hosts=self.services.media_hosts, ice_servers=self.services.ice_servers, label=f"call to {to}"
        )
        self.peer.keys.listeners.append(self._on_key)
        offer = shape_offer(await self.peer.offer())
        # The opening line is synthesised while the phone rings and waits in the closed outbound track.
        self._create_conversation()
        meta_id = await self.services.graph.connect(to, offer, biz_opaque_callback_data=self.ref)
        if self.state is CallState.ENDED:
            # Ended (shutdown, hang-up) while Meta was placing it: the phone is ringing, so cancel it now.
            with contextlib.suppress(GraphError):
                await self.services.graph.terminate(meta_id)
            raise CallEnded(f"call {self.ref} ended while it was being placed")
        self.id = meta_id
        self.state = CallState.RINGING
        return self.id

    async def on_answer_sdp(self, sdp: str) -> None:
        """Meta's SDP answer (connect webhook): media can connect while the user's phone still rings."""
        assert self.peer is not None
        try:
            await self.peer.apply_answer(normalise_bic_answer(sdp))
        except SdpError as exc:
            log.error("call %s: Meta's answer was refused: %s", self.id, exc)
            await self.hangup("bad_answer")

    async def on_status(self, status: str) -> None:
        """RINGING / ACCEPTED / REJECTED for calls we placed (spec §2.6)."""
        self.statuses.append(status)
        if self.state is CallState.ENDED:
            return
        if status == "ACCEPTED" and self.accepted_at is None:
            assert self.peer is not None
            try:
                await self.peer.wait_connected(self.services.connect_timeout_s)
            except MediaError as exc:
                log.error("call %s: %s", self.id, exc)
                await self.hangup("media_failed")
                return
            self._mark_accepted()
            await self._start_media()
        elif status == "REJECTED":
            self._terminate_sent = True  # Meta ends it and sends terminate itself
            await self.end("rejected")

    def _create_conversation(self) -> None:
        """Start the dialogue as soon as we know we answer: the greeting is synthesised while ICE and
        DTLS connect, and sits in the (still closed) outbound track until accept returns."""
        assert self.peer is not None
        caller = {"name": self.caller_name or "", "number": self.caller_number or ""}
        self.conversation = Conversation(
            policy=FlowEngine(
                self.flow,
                caller=caller,
                call=self.context.as_template_data() if self.context else None,
                llm_available=self.services.llm is not None,
                recorded=self.recorded,
            ),
            transcriber=self.services.transcriber,
            synthesizer=self.services.synthesizer,
            output=self.peer.outbound,
            on_hangup=self.request_hangup,
            config=self.services.conversation,
            fallback_audio=self.services.fallback_audio,
            clock=self._clock,
            hooks=ConversationHooks(
                llm=self.services.llm,
                endpoint_check=self.services.endpoint_check,
                on_handover=self._handover_requested if self.services.on_handover else None,
                on_permission_request=self._permission_requested if self.services.on_permission_request else None,
                on_call_button=self._call_button_requested if self.services.on_call_button else None,
                on_keys=self._keys_for_agent if self.services.on_handover_keys else None,
                http=self.services.http,
            ),
        )
        self.peer.outbound.on_play_start = self.conversation.on_audio_sent
        self.conversation.start()

    async def _start_media(self) -> None:
        assert self.peer is not None and self.conversation is not None
        if self.recorded:
            self._start_recording()
        # Media may flow only now: accept has returned 200 OK.
        self.peer.outbound.open()
        try:
            track = await self.peer.remote_track(timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            log.error("call %s: no audio track from the caller", self.id)
            await self.hangup("no_caller_audio")
            return
        self._inbound = InboundAudio(track, self._on_caller_audio, clock=self._clock)
        if self._recorder is not None:
            self._inbound.frame_taps.append(self._recorder.caller_frame)
        self.spawn(self._watch_media(), "watch-media")
        if self.services.no_rtp_timeout_s:
            self.spawn(self._watch_rtp(self.services.no_rtp_timeout_s), "watch-rtp")
        if self.services.max_call_s:
            self.spawn(self._watch_length(self.services.max_call_s), "watch-length")

    def _start_recording(self) -> None:
        """Before the first frame goes out, so the recording notice is in the recording from its first word."""
        assert self.peer is not None and self.services.recordings is not None
        try:
            self._recorder = self.services.recordings.open(self.id, clock=self._clock)
        except Exception:
            log.exception("call %s: could not start recording; the call goes on unrecorded", self.id)
            return
        self.peer.outbound.on_frame = self._recorder.sent_frame

    # what other parts (handover, bridge) may do with a live call -------------------
    def _on_caller_audio(self, pcm16k: np.ndarray, t: float) -> None:
        if self.conversation is not None:
            self.conversation.feed(pcm16k, t)
        for tap in list(self._taps):
            tap(pcm16k, t)

    def add_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None:
        """Receive the caller's audio (16 kHz mono int16) as it arrives, e.g. to bridge it to an agent."""
        self._taps.append(tap)

    def remove_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    def _on_key(self, press: KeyPress) -> None:
        """A key the caller pressed: recorded, then the flow's turn (an IVR menu), then any taps."""
        if self.state is CallState.ENDED:
            return
        self.key_presses.append(press)
        self._last_key_at = self._clock()  # telephone-event packets are media too (the no-RTP watchdog)
        log.debug("call %s: key %s (%d ms)", self.id, press.digit, press.duration_ms)
        # Conversation.on_key comes with the flow side of keypad input; until then presses are only recorded.
        on_key = getattr(self.conversation, "on_key", None)
        if on_key is not None:
            try:
                on_key(press)
            except Exception:
                log.exception("call %s: the conversation failed on key %s", self.id, press.digit)
        for tap in list(self._key_taps):
            tap(press)

    def add_key_tap(self, tap: Callable[[KeyPress], None]) -> None:
        """See the caller's key presses as they happen (e.g. a console or a bridged agent)."""
        self._key_taps.append(tap)

    def remove_key_tap(self, tap: Callable[[KeyPress], None]) -> None:
        if tap in self._key_taps:
            self._key_taps.remove(tap)

    def play(self, pcm48k: np.ndarray) -> None:
        """Queue audio (48 kHz mono int16) to the caller: the agent's voice while bridged."""
        if self.peer is not None:
            self.peer.outbound.enqueue(pcm48k)

    def flush_audio(self) -> None:
        if self.peer is not None:
            self.peer.outbound.flush()

    async def say(self, text: str) -> None:
        """Speak to the caller outside the flow (hold and queue-position messages)."""
        if self.conversation is not None:
            await self.conversation.say(text)

    async def say_goodbye(self, text: str) -> None:
        """Shutdown: whatever the bot was saying stops and the caller's words are no longer turns, so this
        last line is heard in full before the terminate."""
        if self.conversation is None:
            return
        self.conversation.suspend()
        await self.conversation.say(text, interruptible=False)

    def suspend_bot(self) -> None:
        if self.conversation is not None:
            self.conversation.suspend()

    def resume_bot(self, node: str | None = None) -> None:
        """Give the call back to the flow, at `node` if given (an agent's choice, or the queue's fallback)."""
        if self.conversation is None:
            return
        engine = self.conversation.policy
        goto = getattr(engine, "goto", None)
        reply = goto(node) if (node and goto) else Reply(lines=[], node=engine.node)
        self.conversation.resume(reply)

    def transcript_pairs(self) -> list[tuple[str, str]]:
        return [] if self.conversation is None else [(e.who, e.text) for e in self.conversation.transcript]

    def _handover_requested(self, handover: Handover) -> None:
        self.handover = handover
        if self.services.on_handover is not None:
            self.services.on_handover(self, handover)

    def _keys_for_agent(self, digit: str) -> None:
        if self.services.on_handover_keys is not None:
            self.services.on_handover_keys(self, digit)

    def _permission_requested(self, reason: str) -> None:
        if self.services.on_permission_request is not None:
            self.services.on_permission_request(self, reason)

    def _call_button_requested(self, button: SendCallButton) -> None:
        if self.services.on_call_button is not None:
            self.services.on_call_button(self, button)

    async def _watch_media(self) -> None:
        assert self.peer is not None
        await self.peer.failed.wait()
        if self.state is not CallState.ENDED:
            log.warning("call %s: media connection lost", self.id)
            await self.hangup("media_lost")

    async def _watch_rtp(self, timeout_s: float) -> None:
        """ICE consent only proves the peer is there: one that keeps it alive but sends no RTP would hold
        the call (and a slot) forever. A silent caller still sends packets (Opus silence, DTX comfort
        noise), so only their absence counts; Meta gives up after 20 s of it, and so do we."""
        started = self._clock()
        step = min(1.0, timeout_s / 4)
        while self.state is not CallState.ENDED:
            await asyncio.sleep(step)
            inbound = self._inbound
            last = inbound.last_frame_at if inbound is not None and inbound.last_frame_at is not None else started
            # A phone sends telephone-event packets instead of audio while a key is held.
            last = max(last, self._last_key_at or started)
            if self._clock() - last >= timeout_s:
                log.warning("call %s: no audio packets from the caller for %.0f s; hanging up", self.id, timeout_s)
                await self.hangup("no_media")
                return

    async def _watch_length(self, max_s: float) -> None:
        """A call may not hold a slot for ever: at the maximum length the bot says a short closing line
        (bounded, so a hung TTS cannot keep the call) and hangs up."""
        accepted = self.accepted_at if self.accepted_at is not None else self._clock()
        await asyncio.sleep(max(0.0, accepted + max_s - self._clock()))
        if self.state is CallState.ENDED:
            return
        log.info("call %s: reached the maximum length of %.0f s; saying goodbye", self.id, max_s)
        goodbye = self.services.max_call_goodbye
        if self.conversation is not None and goodbye:
            self.conversation.suspend()  # the flow must not start another answer over the goodbye
            try:
                await asyncio.wait_for(self.conversation.say(goodbye, interruptible=False), GOODBYE_LIMIT_S)
            except TimeoutError:
                log.warning("call %s: the closing line did not finish in %.0f s", self.id, GOODBYE_LIMIT_S)
            except Exception:
                log.exception("call %s: the closing line failed; hanging up anyway", self.id)
        await self.hangup("max_duration")

    async def _reject(self, reason: str) -> None:
        with contextlib.suppress(GraphError):
            await self.services.graph.reject(self.id)
        self._terminate_sent = True
        await self.end(reason)

    # ending -------------------------------------------------------------------
    async def hangup(self, reason: str = "bot_ended") -> None:
        """The bot ends the call: tell Meta (billing depends on it), then clean up."""
        if self.state is CallState.ENDED or self._terminate_sent:
            return
        if self.state is CallState.DIALING:
            # Meta has not given the call an id yet: end it here, and `dial` cancels it when `connect` returns.
            await self.end(reason)
            return
        self._terminate_sent = True
        try:
            if self.state is CallState.ACTIVE or self.direction == "BUSINESS_INITIATED":
                await self.services.graph.terminate(self.id)
            else:
                await self.services.graph.reject(self.id)
        except GraphError as exc:
            log.warning("call %s: terminate failed: %s", self.id, exc)
            if retryable(exc):  # Meta may never have heard: it bills the call until it does
                self.ending_owed = str(exc) or type(exc).__name__
        await self.end(reason)

    def request_hangup(self, reason: str) -> None:
        """For the conversation, which must not await its own shutdown from inside itself."""
        self.spawn(self.hangup(reason), "hangup")

    async def on_remote_terminate(self, status: str | None) -> None:
        self._terminate_sent = True
        await self.end(f"remote_{(status or 'terminated').lower()}")

    async def end(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        self.ended_at = self._clock()
        current = asyncio.current_task()
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.stop()  # at once and synchronously: the file is closed even if this ending is cut short
        try:
            if self.conversation is not None:
                await self.conversation.close()
            if self._inbound is not None:
                await self._inbound.close()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            if self.peer is not None:
                await self.peer.close()
            if recorder is not None and self.services.recordings is not None:
                self.recording = await self.services.recordings.finish(self.id, recorder)
        finally:
            # Even when cut short (a shutdown deadline cancels us): the record is written and the slot freed.
            log.info("call %s ended: %s", self.id, reason)
            self.ended.set()
            if self._on_ended is not None:
                self._on_ended(self)

    async def wait_closed(self) -> None:
        """Wait for every task the call started (used by shutdown and leak tests)."""
        await self.ended.wait()
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def slots(self) -> dict[str, Any]:
        policy = self.conversation.policy if self.conversation else None
        slots = getattr(policy, "slots", None)
        return dict(slots) if isinstance(slots, dict) else {}

    @property
    def flow_result(self) -> dict[str, Any] | None:
        """Where the flow left the call, for reports: its last node, and whether it gave up (`no_match`)."""
        policy = self.conversation.policy if self.conversation else None
        if policy is None:
            return None
        return {"node": getattr(policy, "node", None), "gave_up": bool(getattr(policy, "gave_up", False))}

    def summary(self) -> dict[str, Any]:
        transcript = [] if self.conversation is None else self.conversation.transcript
        turns = [] if self.conversation is None else self.conversation.turns
        return {
            "id": self.id,
            "direction": self.direction,
            "state": str(self.state),
            "caller": self.caller_number,
            "end_reason": self.end_reason,
            "duration_s": None
            if self.accepted_at is None
            else round((self.ended_at or self._clock()) - self.accepted_at, 2),
            "outcome": self.outcome,
            "slots": self.slots,
            # `at_s`: seconds from the call's start, so a record shows when each side spoke (entries share the
            # call's monotonic clock; clamped so a stray earlier stamp never reads as before the call).
            "transcript": [
                {"who": e.who, "text": e.text, "at_s": round(max(0.0, e.t - self.created_at), 2)} for e in transcript
            ],
            "turns": [t.as_dict() for t in turns],
            "recording": None
            if self.recording is None
            else {
                "path": str(self.recording.path),
                "duration_s": self.recording.duration_s,
                "bytes": self.recording.bytes,
            },
        }
