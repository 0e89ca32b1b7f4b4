"""Audio in and out of a peer connection.

Outbound: WhatsApp hangs up on a call that stops sending media, so the bot's track always produces paced
20 ms frames — speech when there is some, silence otherwise — and can be flushed at once for barge-in.
Inbound: the caller's Opus is decoded by aiortc; we convert it to the 16 kHz mono int16 the VAD and
Whisper want, off the RTP path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.media.aiortc_dtmf import EventFrame
from agent.media.dtmf import KeyTones
from agent.media.opus_out import OpusFrameEncoder

log = logging.getLogger(__name__)

OUT_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = OUT_RATE * FRAME_MS // 1000
IN_RATE = 16000


class OutboundAudioTrack(MediaStreamTrack):
    """The bot's voice: a queue of PCM played out in real time, silence when empty.

    Nothing is sent until `open()` is called, because the WhatsApp client counts the first media packet
    as "answered" and starts its call timer then; our media must wait for accept's 200 OK.
    """

    kind = "audio"

    def __init__(self, clock: Callable[[], float] = time.monotonic, encoder: OpusFrameEncoder | None = None) -> None:
        super().__init__()
        self._clock = clock
        self._encoder = encoder  # set: recv returns Opus packets (see agent.media.opus_out)
        self._chunks: deque[np.ndarray] = deque()
        self._offset = 0
        self._queued = 0
        self._open = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._start: float | None = None
        self._pts = 0
        self._was_playing = False
        self._paused = False
        self.frames_sent = 0
        self.on_play_start: Callable[[float], None] | None = None
        self.on_play_end: Callable[[float], None] | None = None
        # Each 20 ms frame as it is sent (None: silence), e.g. for the call's recording: what the caller heard.
        self.on_frame: Callable[[np.ndarray | None, float], None] | None = None
        self._enqueued = 0  # samples ever queued: positions for `when_played`
        self._consumed = 0  # samples ever taken from the queue (played or flushed)
        self._watchers: list[tuple[int, Callable[[float], None]]] = []
        self.last_recv_at: float | None = None  # when the sender last took a frame
        # Keys pressed on this phone (the simulated caller's): their tones take the place of audio frames.
        self.keypad: KeyTones | None = None

    def open(self) -> None:
        self._open.set()

    @property
    def playing(self) -> bool:
        return self._queued > 0

    @property
    def queued_ms(self) -> int:
        return self._queued * 1000 // OUT_RATE

    def enqueue(self, pcm: np.ndarray) -> int:
        """Queue int16 mono 48 kHz samples behind whatever is already queued; returns the position of the
        first one, for `when_played`."""
        start = self._enqueued
        if pcm.size == 0:
            return start
        self._chunks.append(np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1))
        self._queued += pcm.size
        self._enqueued += pcm.size
        self._idle.clear()
        return start

    def when_played(self, position: int, callback: Callable[[float], None]) -> None:
        """Call `callback(now)` when the frame holding sample `position` (from `enqueue`) goes out: the real
        send time, which under load can be later than the start time plus the audio's length."""
        self._watchers.append((position, callback))
        self._watchers.sort(key=lambda w: w[0])

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop speaking at once but keep the queue: the caller may only be saying "uh-huh"."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def flush(self) -> int:
        """Drop everything queued (barge-in); returns how many ms were dropped."""
        dropped = self._queued
        self._consumed += dropped
        self._watchers = [w for w in self._watchers if w[0] >= self._consumed]  # dropped audio is never sent
        self._paused = False
        self._chunks.clear()
        self._offset = 0
        self._queued = 0
        self._idle.set()
        return dropped * 1000 // OUT_RATE

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _next_samples(self) -> np.ndarray | None:
        if not self._queued:
            return None
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._chunks:
            chunk = self._chunks[0]
            take = min(FRAME_SAMPLES - filled, chunk.size - self._offset)
            out[filled : filled + take] = chunk[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= chunk.size:
                self._chunks.popleft()
                self._offset = 0
        self._queued -= filled
        self._consumed += filled
        return out

    def _notify_played(self, now: float) -> None:
        while self._watchers and self._watchers[0][0] < self._consumed:
            _, callback = self._watchers.pop(0)
            callback(now)

    async def recv(self) -> av.AudioFrame | av.Packet | EventFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._open.is_set():
            await self._open.wait()
        if self._start is None:
            self._start = self._clock()
        else:
            delay = self._start + self._pts / OUT_RATE - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                # We fell behind (a stalled loop): skip ahead rather than burst old frames.
                self._start = self._clock() - self._pts / OUT_RATE
        if self.readyState != "live":
            raise MediaStreamError
        now = self.last_recv_at = self._clock()
        tone = self.keypad.tick(self._pts) if self.keypad is not None else None
        if tone is not None:
            # A key is down: this frame slot carries its event packet, and queued speech waits, as on a phone.
            assert self.keypad is not None
            self._pts += FRAME_SAMPLES
            return EventFrame(tone, self.keypad.payload_type)
        samples = None if self._paused else self._next_samples()
        if samples is not None and not self._was_playing:
            self._was_playing = True
            if self.on_play_start:
                self.on_play_start(now)
        if samples is None and not self._paused and self._was_playing:
            self._was_playing = False
            self._idle.set()
            if self.on_play_end:
                self.on_play_end(now)
        elif samples is not None and not self._queued:
            self._idle.set()
        if self._watchers:
            self._notify_played(now)
        if self.on_frame is not None:
            try:
                self.on_frame(samples, now)
            except Exception:  # a failing listener must not end aiortc's sender loop (a silent call)
                log.exception("outbound frame listener failed; detaching it")
                self.on_frame = None
        if self._encoder is not None:
            try:
                packet = self._encoder.packet(samples, self._pts)
            except Exception:
                # An exception here would end aiortc's sender loop: the call would go silent for good.
                log.exception("Opus encoding failed; sending silence for this frame")
                packet = self._encoder.silence(self._pts)
            self._pts += FRAME_SAMPLES
            self.frames_sent += 1
            return packet
        return self._frame(samples if samples is not None else np.zeros(FRAME_SAMPLES, dtype=np.int16))

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUT_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, OUT_RATE)
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        if self.keypad is not None:
            self.keypad.cancel()
        self._open.set()
        self._idle.set()


AudioSink = Callable[[np.ndarray, float], Awaitable[None] | None]


class InboundAudio:
    """Reads the caller's decoded frames and hands 16 kHz mono int16 chunks to a sink."""

    def __init__(self, track: MediaStreamTrack, sink: AudioSink, clock: Callable[[], float] = time.monotonic):
        self._track = track
        self._sink = sink
        self._clock = clock
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=IN_RATE)
        self.frames = 0
        # Decoded frames as they arrive, before downsampling (e.g. the call's recording, at full 48 kHz).
        self.frame_taps: list[Callable[[av.AudioFrame, float], None]] = []
        # When the last frame came in: one per RTP packet (silence and DTX comfort noise included), so a
        # watchdog can tell a silent caller, who still sends packets, from a peer that sends none.
        self.last_frame_at: float | None = None
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name="inbound-audio")

    async def _run(self) -> None:
        while True:
            try:
                frame = await self._track.recv()
            except MediaStreamError:
                return
            now = self.last_frame_at = self._clock()
            self.frames += 1
            for tap in self.frame_taps:
                try:
                    tap(frame, now)
                except Exception:  # the caller's audio must keep reaching the conversation
                    log.exception("inbound frame tap failed; removing it")
                    self.frame_taps.remove(tap)
                    break
            for out in self._resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                result = self._sink(pcm, now)
                if asyncio.iscoroutine(result):
                    await result

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
