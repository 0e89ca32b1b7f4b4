"""The agent's leg of a handed-over call, and the relay that joins it to the caller's leg.

The agent's browser offers WebRTC to wacall; a `MediaPeer` answers it exactly as it answers Meta (same SDP
checks, same per-connection ICE host list, no STUN), so the console needs no media server of its own.

Both legs arrive here as 16 kHz mono int16 (`InboundAudio`, the path VAD and Whisper already use), so the
relay only upsamples each leg to the other leg's 48 kHz outbound track, and the same 16 kHz stream feeds the
live transcript. Delay added by the relay is one 20 ms frame plus the resampler's few samples; anything that
piles up in an outbound queue (clock drift between the legs, a burst after a network stall, audio that
arrived before the agent's leg started sending) is dropped once it passes `MAX_LAG_MS`, because a
conversation that lags further and further behind is worse than a short gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from agent.media.peer import MediaError, MediaPeer
from agent.media.tracks import OUT_RATE, InboundAudio, OutboundAudioTrack
from agent.speech.audio import StreamResampler
from agent.speech.stt import Transcriber
from agent.speech.vad import Endpointer, VadConfig

log = logging.getLogger(__name__)

IN_RATE = 16000
MAX_LAG_MS = 240
AGENT_CONNECT_TIMEOUT_S = 15.0
# Live transcript: a slightly longer end-of-utterance silence than the bot's turn-taking uses, since nobody
# waits on these lines; fewer, longer lines read better on the console.
LIVE_VAD = VadConfig(end_silence_ms=600, pause_ms=None)


class BridgedCall(Protocol):
    """What the bridge needs of the caller's `Call`."""

    def add_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None: ...
    def remove_audio_tap(self, tap: Callable[[np.ndarray, float], None]) -> None: ...
    def play(self, pcm48k: np.ndarray) -> None: ...
    def flush_audio(self) -> None: ...


def queued_ms(call: object) -> int:
    """How much audio waits in the caller's outbound track (0 when the call has no peer, e.g. in unit tests)."""
    peer = getattr(call, "peer", None)
    outbound = getattr(peer, "outbound", None)
    return int(getattr(outbound, "queued_ms", 0))


class LiveTranscript:
    """VAD + Whisper over one leg, one utterance at a time so each side's lines stay in order."""

    def __init__(
        self,
        who: str,
        transcriber: Transcriber,
        on_text: Callable[[str, str], None],
        vad: VadConfig = LIVE_VAD,
    ) -> None:
        self.who = who
        self._transcriber = transcriber
        self._on_text = on_text
        self._endpointer = Endpointer(vad)
        self._pending: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def feed(self, pcm16k: np.ndarray) -> None:
        if self._closed:
            return
        for event in self._endpointer.feed(pcm16k):
            if event.kind == "end" and event.audio is not None:
                self._pending.put_nowait(event.audio)
                if self._worker is None:
                    self._worker = asyncio.create_task(self._run(), name=f"live-transcript-{self.who}")

    async def _run(self) -> None:
        while True:
            audio = await self._pending.get()
            try:
                text = (await self._transcriber.transcribe(audio)).strip()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live transcript (%s): speech-to-text failed; line skipped", self.who)
                continue
            if text:
                self._on_text(self.who, text)

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


class _Relay:
    """16 kHz in, 48 kHz queued on an outbound track, with the lag cap."""

    def __init__(
        self,
        enqueue: Callable[[np.ndarray], None],
        lag_ms: Callable[[], int],
        flush: Callable[[], object],
        max_lag_ms: int,
    ) -> None:
        self._up = StreamResampler(IN_RATE, OUT_RATE)
        self._enqueue, self._lag_ms, self._flush = enqueue, lag_ms, flush
        self._max_lag_ms = max_lag_ms
        self.frames = 0
        self.dropped = 0  # how often the queue had to be cut back

    def push(self, pcm16k: np.ndarray) -> None:
        pcm48k = self._up.process(pcm16k)
        if self._lag_ms() > self._max_lag_ms:
            self._flush()
            self.dropped += 1
        self._enqueue(pcm48k)
        self.frames += 1


class Bridge:
    """One agent talking to one caller: the agent's peer, both relays and both live transcripts.

    `on_lost` is called (once, synchronously) when the agent's media never connects or drops later; it is
    never called for a `close()`, so the owner can tell "the browser went away" from "we hung up".
    """

    def __init__(
        self,
        call: BridgedCall,
        *,
        agent_id: str,
        transcriber: Transcriber | None,
        on_transcript: Callable[[str, str], None],
        on_lost: Callable[[str], None],
        hosts: Sequence[str] | None = None,
        ice_servers: Sequence[str] = (),
        connect_timeout_s: float = AGENT_CONNECT_TIMEOUT_S,
        max_lag_ms: int = MAX_LAG_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call = call
        self.agent_id = agent_id
        self.peer = MediaPeer(hosts=hosts, ice_servers=ice_servers, label=f"agent {agent_id}")
        self._on_lost = on_lost
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._inbound: InboundAudio | None = None
        self._tapped = False
        self._closed = False  # relay stopped
        self._shut = False  # peer and tasks closed
        self._lost = False
        self.connected_at: float | None = None
        outbound: OutboundAudioTrack = self.peer.outbound
        self.to_agent = _Relay(outbound.enqueue, lambda: outbound.queued_ms, outbound.flush, max_lag_ms)
        self.to_caller = _Relay(call.play, lambda: queued_ms(call), call.flush_audio, max_lag_ms)
        self._listeners: list[LiveTranscript] = []
        if transcriber is not None:
            self._listeners = [
                LiveTranscript("caller", transcriber, on_transcript),
                LiveTranscript("agent", transcriber, on_transcript),
            ]

    async def answer(self, offer_sdp: str) -> str:
        """Answer the browser's (non-trickle) offer; raises `SdpError` for an offer we cannot take."""
        answer = await self.peer.answer(offer_sdp)
        # Unlike Meta's leg there is no accept to wait for: the browser may hear us as soon as DTLS is up.
        self.peer.outbound.open()
        return answer

    def start(self) -> None:
        """Relay both ways once the agent's media connects (the desk has connected the two already)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"bridge:{self.agent_id}")

    async def _run(self) -> None:
        try:
            await self.peer.wait_connected(self._connect_timeout_s)
            track = await self.peer.remote_track(timeout=5)
        except (MediaError, TimeoutError):
            self._report_lost("the agent's audio did not connect")
            return
        self.connected_at = self._clock()
        self._inbound = InboundAudio(track, self._from_agent, clock=self._clock)
        self.call.add_audio_tap(self._from_caller)
        self._tapped = True
        log.info("bridge: agent %s connected to the caller", self.agent_id)
        await self.peer.failed.wait()
        self._report_lost("the agent's audio connection dropped")

    def _from_caller(self, pcm16k: np.ndarray, t: float) -> None:
        if self._closed:
            return
        self.to_agent.push(pcm16k)
        if self._listeners:
            self._listeners[0].feed(pcm16k)

    def _from_agent(self, pcm16k: np.ndarray, t: float) -> None:
        if self._closed:
            return
        self.to_caller.push(pcm16k)
        if self._listeners:
            self._listeners[1].feed(pcm16k)

    def _report_lost(self, why: str) -> None:
        if self._closed or self._lost:
            return
        self._lost = True
        log.warning("bridge: agent %s: %s", self.agent_id, why)
        self._on_lost(why)

    @property
    def closed(self) -> bool:
        return self._closed

    def stop_relay(self) -> None:
        """Stop both directions now (no await), so not one more frame crosses once the agent is gone."""
        self._closed = True
        if self._tapped:
            self._tapped = False
            self.call.remove_audio_tap(self._from_caller)

    async def close(self) -> None:
        """Stop relaying and close the agent's peer; safe to call from the bridge's own `on_lost`."""
        if self._shut:
            return
        self.stop_relay()
        self._shut = True
        current = asyncio.current_task()
        if self._task is not None and self._task is not current:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inbound is not None:
            await self._inbound.close()
        for listener in self._listeners:
            await listener.close()
        await self.peer.close()
        log.info(
            "bridge: agent %s closed: %d chunks to the agent (queue cut back %d times), %d to the caller (%d)",
            self.agent_id,
            self.to_agent.frames,
            self.to_agent.dropped,
            self.to_caller.frames,
            self.to_caller.dropped,
        )
