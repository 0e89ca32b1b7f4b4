"""Stereo Opus in an Ogg file, encoded and written on a thread of its own as the call goes.

Encoding and disk writes must never run on the event loop (a slow disk would stall every call's audio), and
an hour-long call must not sit in memory: blocks go through a bounded queue to one thread per recording,
which encodes them at once and lets the Ogg muxer flush each page to disk (about a second of audio), so the
file grows during the call and a crash loses at most the last page. When the queue is full (the disk cannot
keep up) blocks are dropped and counted rather than blocking the loop or growing without bound.
"""

from __future__ import annotations

import contextlib
import fractions
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np

log = logging.getLogger(__name__)

RATE = 48000
FRAME = 960  # 20 ms: libopus takes whole frames
QUEUE_BLOCKS = 500  # blocks of ~20 ms: ten seconds of slack for a slow disk
_STOP = object()


class OggOpusWriter:
    """Owns one .ogg file and the thread writing it; `put` from the loop, `close` + `join` when done."""

    def __init__(self, path: Path, *, bitrate: int = 32000, name: str = "recording") -> None:
        self.path = path
        self._bitrate = bitrate
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self.samples = 0  # per channel, encoded into the file
        self.dropped_blocks = 0
        self.error: BaseException | None = None
        self._closed = False
        self._stopped = False  # the thread has taken the stop marker
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, block: np.ndarray) -> None:
        """Queue (n, 2) int16 samples; never blocks."""
        if self._closed or block.size == 0:
            return
        try:
            self._queue.put_nowait(block)
        except queue.Full:
            self.dropped_blocks += 1
            if self.dropped_blocks == 1:
                log.warning("recording %s: the disk is not keeping up; dropping audio", self.path.name)

    def close(self) -> None:
        """No more audio: the thread finishes the file (flushes the encoder, writes the last page) and exits."""
        if self._closed:
            return
        self._closed = True
        # The stop marker must get through even when the queue is full: it waits for room off the loop.
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            threading.Thread(target=self._queue.put, args=(_STOP,), name="recording-stop", daemon=True).start()

    def join(self, timeout: float | None = None) -> bool:
        """Blocking: call from a worker thread (`asyncio.to_thread`). True once the file is complete."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def seconds(self) -> float:
        return self.samples / RATE

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # a full disk, a removed directory: the call goes on without recording
            self.error = exc
            log.error("recording %s failed: %s", self.path.name, exc)
            while not self._stopped:  # keep the producer's queue moving until it stops
                self._stopped = self._queue.get() is _STOP

    def _write(self) -> None:
        # Private: recordings are personal data, readable by the service's user only.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.touch(mode=0o600)
        # flush_packets: each finished Ogg page goes to the file at once instead of waiting in a 32 kB buffer.
        container = av.open(str(self.path), "w", format="ogg", options={"flush_packets": "1"})
        try:
            stream = container.add_stream("libopus", rate=RATE, layout="stereo")
            stream.bit_rate = self._bitrate
            # Complexity 5, as for the outbound track: half libopus's default CPU for speech that sounds the same,
            # which matters with a dozen calls recording on two cores.
            stream.options = {"application": "voip", "compression_level": "5"}
            time_base = fractions.Fraction(1, RATE)
            carry = np.zeros((0, 2), dtype=np.int16)
            while True:
                item = self._queue.get()
                if item is _STOP:
                    self._stopped = True
                    break
                assert isinstance(item, np.ndarray)
                carry = np.concatenate([carry, item]) if carry.size else item
                whole = carry.shape[0] - carry.shape[0] % FRAME
                for start in range(0, whole, FRAME):
                    self._encode(container, stream, carry[start : start + FRAME], time_base)
                carry = carry[whole:]
            if carry.shape[0]:
                tail = np.zeros((FRAME, 2), dtype=np.int16)
                tail[: carry.shape[0]] = carry
                self._encode(container, stream, tail, time_base)
            for packet in stream.encode(None):
                container.mux(packet)
        finally:
            with contextlib.suppress(Exception):
                container.close()

    def _encode(self, container: Any, stream: Any, block: np.ndarray, time_base: fractions.Fraction) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self.samples
        frame.time_base = time_base
        self.samples += block.shape[0]
        for packet in stream.encode(frame):
            container.mux(packet)
