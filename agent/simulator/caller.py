"""The simulated WhatsApp user: a phone that offers like Meta, speaks lines and listens to the bot.

It plays the *user's* side of the media, so it is built like Meta's relay as seen from the business:
an ICE-lite, ICE-controlled peer offering Opus on payload type 111 and telephone-event on 126, with one
audio stream. It hears the bot through the same decode path a phone would and transcribes what it heard,
so a test checks what a caller actually hears, not what the bot meant to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from agent.media.aiortc_dtmf import send_events_via
from agent.media.dtmf import PAYLOAD_TYPE, KeyTones, check_keys
from agent.media.peer import MediaPeer
from agent.media.tracks import OUT_RATE, InboundAudio, OutboundAudioTrack
from agent.simulator.phone_sdp import local_mid_answer, meta_shaped_answer, meta_shaped_offer
from agent.simulator.room_noise import NoisyMicrophone, RoomNoise
from agent.speech.audio import resample
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.speech.vad import Endpointer, VadConfig

log = logging.getLogger(__name__)

VOICED_DBFS = -45.0


@dataclass
class Heard:
    """One stretch of bot speech as the caller heard it."""

    text: str
    start: float
    end: float


@dataclass
class TurnTiming:
    """Voice-to-voice latency of one caller turn, measured at the caller's ears."""

    said: str
    last_voiced_sent: float
    first_bot_audio: float | None = None
    first_voiced_sent: float | None = None  # when the line's first voiced frame went out (speech onset)

    @property
    def voice_to_voice(self) -> float | None:
        return None if self.first_bot_audio is None else self.first_bot_audio - self.last_voiced_sent


@dataclass
class Conversation:
    """Everything both sides said, in order, from the caller's point of view."""

    entries: list[tuple[str, str, float]] = field(default_factory=list)  # (who, text, t)
    turns: list[TurnTiming] = field(default_factory=list)


def load_audio_file(path: str | Path) -> np.ndarray:
    """Read a WAV/FLAC/any file PyAV can open as int16 mono 48 kHz."""
    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=OUT_RATE)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise ValueError(f"{path}: no audio")
    return np.concatenate(chunks).astype(np.int16)


def _dbfs(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * np.log10(max(rms, 1e-9) / 32768.0)


class SimulatedUser:
    """A WhatsApp user on a call: offer, speak, listen, transcribe, time."""

    def __init__(
        self,
        *,
        transcriber: Transcriber,
        synthesizer: Synthesizer | None = None,
        hosts: Sequence[str] = ("127.0.0.1",),
        listen_silence_ms: int = 700,
        background_noise: RoomNoise | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.peer_hosts = list(hosts)
        self.peer = MediaPeer(hosts=hosts, label="sim-user")
        if background_noise is not None:
            # The room is heard through the phone's microphone: under speech, in pauses, between lines.
            self.peer.outbound = OutboundAudioTrack(encoder=NoisyMicrophone(background_noise))
        self.peer.outbound.keypad = KeyTones()
        self._keypad_ready = False
        self.keys_pressed: list[tuple[str, float]] = []  # (keys, when the last one was sent)
        self.conversation = Conversation()
        self._endpointer = Endpointer(VadConfig(aggressiveness=3, end_silence_ms=listen_silence_ms, pause_ms=None))
        self._inbound: InboundAudio | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._heard: list[Heard] = []
        self._heard_changed = asyncio.Condition()
        self.last_bot_audio_at: float | None = None
        self.first_bot_audio_at: float | None = None
        self.bot_speaking = False
        self.hung_up = False
        self._voiced_log: deque[tuple[float, bool]] = deque(maxlen=50 * 120)  # 2 minutes of 20 ms frames
        self._mark_t: float | None = None
        self.first_audio_after: float | None = None
        self._close_callbacks: list[Callable[[], object]] = []
        self._stream_t0: float | None = None
        self._last_frame_at: float | None = None  # when the decoder last handed over a frame (monotonic)
        # Called with (receive time, voiced) for every chunk of bot audio, e.g. to log when the bot spoke.
        self.audio_listeners: list[Callable[[float, bool], None]] = []

    # signalling ---------------------------------------------------------------
    async def make_offer(self) -> str:
        pc = self.peer.pc
        transceiver = pc.addTransceiver(self.peer.outbound, direction="sendrecv")
        self._keypad_ready = send_events_via(transceiver.sender)
        ice = transceiver.sender.transport.transport
        # Meta's relay is ICE-lite and so always controlled; aiortc would make the offerer controlling.
        ice._role_set = True
        ice._connection.ice_controlling = False
        return meta_shaped_offer(await self.peer.offer())

    async def answer_business_call(self, offer_sdp: str) -> str:
        """The phone rings with a business's call: answer like Meta's relay (ICE-lite, sha-256, active)."""
        from aiortc import RTCSessionDescription

        from agent.media.peer import limit_host_addresses
        from agent.media.sdp import normalise_line_endings

        pc = self.peer.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=normalise_line_endings(offer_sdp), type="offer"))
        self._keypad_ready = send_events_via(pc.addTrack(self.peer.outbound))
        limit_host_addresses(pc, self.peer_hosts)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = meta_shaped_answer(pc.localDescription.sdp)
        self._inbound = InboundAudio(await self.peer.remote_track(timeout=5), self._on_audio)
        self.peer.outbound.open()
        return answer

    async def apply_answer(self, answer_sdp: str) -> None:
        mid = self.peer.pc.getTransceivers()[0].mid or "0"
        await self.peer.apply_answer(local_mid_answer(answer_sdp, mid))
        track = await self.peer.remote_track(timeout=5)
        self._inbound = InboundAudio(track, self._on_audio)
        # A phone's microphone is live from pickup: send silence so the business gets media both ways.
        self.peer.outbound.open()

    # listening ----------------------------------------------------------------
    def _on_audio(self, pcm: np.ndarray, now: float) -> None:
        self._last_frame_at = time.monotonic()
        if self._stream_t0 is None:
            self._stream_t0 = now
        voiced = _dbfs(pcm) > VOICED_DBFS
        self._voiced_log.append((now, voiced))
        for listener in self.audio_listeners:
            listener(now, voiced)
        if voiced and self._mark_t is not None and self.first_audio_after is None and now > self._mark_t:
            self.first_audio_after = now
        if voiced:
            if self.first_bot_audio_at is None:
                self.first_bot_audio_at = now
            self.last_bot_audio_at = now
            for turn in self.conversation.turns:
                if turn.first_bot_audio is None and now > turn.last_voiced_sent:
                    turn.first_bot_audio = now
        for event in self._endpointer.feed(pcm):
            if event.kind == "start":
                self.bot_speaking = True
            elif event.kind == "end":
                self.bot_speaking = False
                if event.audio is not None:
                    start = now - event.audio.size / 16000
                    task = asyncio.create_task(self._transcribe(event.audio, start, now))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)

    async def _transcribe(self, audio: np.ndarray, start: float, end: float) -> None:
        text = (await self.transcriber.transcribe(audio)).strip()
        if not text:
            return
        async with self._heard_changed:
            self._heard.append(Heard(text, start, end))
            self.conversation.entries.append(("bot", text, start))
            self._heard_changed.notify_all()

    def mark(self) -> None:
        """Start watching for the bot's next audio (`first_audio_after`)."""
        self._mark_t = time.monotonic()
        self.first_audio_after = None

    @property
    def bot_audible(self) -> bool:
        return self.last_bot_audio_at is not None and time.monotonic() - self.last_bot_audio_at < 0.15

    def bot_stopped_after(self, t: float, gap_s: float = 0.3) -> float | None:
        """Seconds from `t` until the bot's audio stopped at the caller (start of a gap ≥ `gap_s`)."""
        last_voiced: float | None = None
        for when, voiced in self._voiced_log:
            if when < t:
                continue
            if voiced:
                last_voiced = when
            elif when - (last_voiced if last_voiced is not None else t) >= gap_s:
                return max(0.0, (last_voiced if last_voiced is not None else t) - t)
        return None

    async def media_quiet(self, quiet_s: float = 0.3, limit_s: float = 2.0) -> None:
        """Wait until no audio has come out of the phone's decoder for `quiet_s` (at most `limit_s`): after the
        business hangs up, the phone still plays what reached it, however busy the machine is."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            last = self._last_frame_at
            if last is None or time.monotonic() - last >= quiet_s:
                return
            await asyncio.sleep(0.05)

    def call_ended(self) -> None:
        """The call is over: whatever the bot was saying is complete, so stop waiting for silence."""
        if self.hung_up:
            return
        self.hung_up = True
        if self._endpointer.in_speech:
            silence = np.zeros(16000 * 2, dtype=np.int16)
            self._on_audio(silence, time.monotonic())

    async def listen(self, *, quiet_s: float = 1.2, timeout: float = 30.0, min_utterances: int = 1) -> str:
        """Wait until the bot has spoken and then stayed quiet for `quiet_s`; return what it said."""
        start_index = len(self._heard)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            quiet_for = time.monotonic() - (self.last_bot_audio_at or 0)
            heard_enough = len(self._heard) - start_index >= min_utterances
            if heard_enough and not self.bot_speaking and quiet_for >= quiet_s and not self._pending:
                break
            if self.hung_up and not self._pending:
                break
        else:
            log.warning("listen timed out after %.1f s", timeout)
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        return " ".join(h.text for h in self._heard[start_index:])

    @property
    def heard(self) -> list[Heard]:
        return list(self._heard)

    # speaking -----------------------------------------------------------------
    async def say(self, text: str) -> TurnTiming:
        if self.synthesizer is None:
            raise RuntimeError("no synthesizer: give the simulated user one to speak text")
        pcm = await self.synthesizer.synthesize(text)
        return await self.play(pcm, label=text)

    async def press_keys(self, keys: str, *, tone_ms: int = 100, gap_ms: int = 100) -> None:
        """Press keys on the call's keypad, as WhatsApp's app sends them: RFC 4733 events on the audio stream
        (its SSRC, sequence numbers and timestamps), each tone in place of the audio, `gap_ms` between keys.
        Returns once the last key's end packets are out (or the call ended)."""
        keys = check_keys(keys)
        if not self._keypad_ready:
            raise RuntimeError("the keypad works once the call is set up (and with the pinned aiortc only)")
        track = self.peer.outbound
        keypad = track.keypad
        assert keypad is not None
        keypad.payload_type = self._key_payload_type()
        done = keypad.press(keys, tone_ms=tone_ms, gap_ms=gap_ms)
        while not done.done() and track.readyState == "live":
            await asyncio.wait({done}, timeout=0.1)
        if done.done() and not done.cancelled():
            now = time.monotonic()
            self.keys_pressed.append((keys, now))
            self.conversation.entries.append(("caller", f"[keys {keys}]", now))

    def _key_payload_type(self) -> int:
        """The telephone-event/8000 payload type the business agreed to; Meta uses 126 even without (§7.5)."""
        remote = self.peer.pc.remoteDescription
        match = re.search(r"^a=rtpmap:(\d+) telephone-event/8000\s*$", remote.sdp if remote else "", re.MULTILINE)
        if match is None:
            log.info("the business did not negotiate telephone-event/8000; sending keys on %d anyway", PAYLOAD_TYPE)
            return PAYLOAD_TYPE
        return int(match.group(1))

    async def play_file(self, path: str | Path) -> TurnTiming:
        return await self.play(load_audio_file(path), label=str(path))

    async def play(self, pcm48k: np.ndarray, *, label: str) -> TurnTiming:
        """Speak into the call; returns once the audio has been sent, with the turn's timing record."""
        if self.synthesizer is not None and self.synthesizer.sample_rate != OUT_RATE:
            pcm48k = resample(pcm48k, self.synthesizer.sample_rate, OUT_RATE)
        if pcm48k.size == 0:
            raise ValueError(f"nothing to play for {label!r}")
        voiced = np.flatnonzero(np.abs(pcm48k.astype(np.int32)) > 500)
        first_voiced = int(voiced[0]) if voiced.size else 0
        last_voiced = int(voiced[-1]) if voiced.size else pcm48k.size - 1
        loop = asyncio.get_running_loop()
        started: asyncio.Future[float] = loop.create_future()
        first_sent: asyncio.Future[float] = loop.create_future()
        last_sent: asyncio.Future[float] = loop.create_future()
        track = self.peer.outbound

        def settle(future: asyncio.Future[float]) -> Callable[[float], None]:
            return lambda t: None if future.done() else future.set_result(t)

        position = track.enqueue(pcm48k)
        track.when_played(position, settle(started))
        track.when_played(position + first_voiced, settle(first_sent))
        track.when_played(position + last_voiced, settle(last_sent))
        t0 = await self._sent_or_stopped(started)
        # Stamped when the frames really went out: a busy process sends late, and that must not count
        # as the bot's delay.
        onset = await self._sent_or_stopped(first_sent)
        last = await self._sent_or_stopped(last_sent)
        timing = TurnTiming(said=label, last_voiced_sent=last, first_voiced_sent=onset)
        self.conversation.turns.append(timing)
        self.conversation.entries.append(("caller", label, t0))
        await track.wait_idle()
        return timing

    async def _sent_or_stopped(self, sent: asyncio.Future[float]) -> float:
        """When the watched frame went out, or now if the call ended first (the frame never will)."""
        track = self.peer.outbound
        while not sent.done() and track.readyState == "live":
            await asyncio.wait({sent}, timeout=0.1)
            if track.last_recv_at is not None and time.monotonic() - track.last_recv_at > 2.0:
                log.warning("the call's media stopped while the caller was talking")
                break
        return sent.result() if sent.done() else time.monotonic()

    def on_close(self, callback: Callable[[], object]) -> None:
        self._close_callbacks.append(callback)

    async def close(self) -> None:
        for callback in self._close_callbacks:
            callback()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._inbound is not None:
            await self._inbound.close()
        await self.peer.close()
        with contextlib.suppress(Exception):
            self._endpointer.reset()
