"""Two live audio streams laid on one 48 kHz timeline, so the recording's channels stay in step.

Neither side arrives as a steady stream: the caller's phone stops sending in silence (Opus DTX) and after a
network stall sends a burst, while the bot's track ticks every 20 ms. Each chunk is therefore placed by the
clock time it arrived at, not appended blindly: a side that has fallen behind the clock is padded with
silence up to it, and a side that runs far ahead of it (a burst) loses what does not fit, so a long call
never drifts. Only the stretch both sides have reached is handed out, and a side that has gone quiet is
padded once it lags more than `max_wait_s`, so the other side's audio is never held for long.

Pure and cheap (numpy slices, no I/O): it runs on the event loop, in the tap callbacks.
"""

from __future__ import annotations

import numpy as np

RATE = 48000
# Arrival jitter below this is normal and is not treated as a gap (the chunk is simply appended).
LATE_TOLERANCE_S = 0.12
# A side this far ahead of the clock drops the excess: bursts after a stall must not shift the channel for good.
MAX_AHEAD_S = 0.5
# The other side's audio waits at most this long for a silent side before that side is padded.
MAX_WAIT_S = 0.3


class _Side:
    def __init__(self) -> None:
        self.end = 0  # samples placed so far (absolute, from the timeline's start)
        self.chunks: list[np.ndarray] = []  # placed but not yet handed out
        self.pending = 0

    def append(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self.chunks.append(pcm)
            self.pending += pcm.size
            self.end += pcm.size

    def pad_to(self, position: int) -> None:
        if position > self.end:
            self.append(np.zeros(position - self.end, dtype=np.int16))

    def take(self, n: int) -> np.ndarray:
        data = np.concatenate(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        out, rest = data[:n], data[n:]
        self.chunks = [rest] if rest.size else []
        self.pending -= out.size
        return out


class StereoTimeline:
    """Left (caller) and right (bot or agent) int16 mono at 48 kHz in; interleaved stereo blocks out."""

    def __init__(self, start: float, *, rate: int = RATE) -> None:
        self.start = start
        self.rate = rate
        self.left = _Side()
        self.right = _Side()
        self.written = 0  # samples per channel handed out
        self.dropped = 0  # samples dropped from bursts that ran ahead of the clock

    def _position(self, t: float) -> int:
        return max(0, round((t - self.start) * self.rate))

    def push(self, side: _Side, pcm: np.ndarray, t: float) -> None:
        """Place `pcm`, which arrived at clock time `t` (its last sample's time, near enough)."""
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        expected_end = self._position(t)
        begin = expected_end - pcm.size
        if side.end < begin - round(LATE_TOLERANCE_S * self.rate):
            side.pad_to(begin)
        room = expected_end + round(MAX_AHEAD_S * self.rate) - side.end
        if room < pcm.size:
            self.dropped += pcm.size - max(0, room)
            pcm = pcm[: max(0, room)]
        side.append(pcm)

    def ready(self, now: float) -> np.ndarray | None:
        """The stretch both sides have reached, as (n, 2) int16; a side silent past `MAX_WAIT_S` is padded."""
        floor = self._position(now) - round(MAX_WAIT_S * self.rate)
        for side in (self.left, self.right):
            side.pad_to(floor)
        return self._take(min(self.left.end, self.right.end))

    def drain(self) -> np.ndarray | None:
        """Everything left, the shorter side padded with silence: the call is over."""
        end = max(self.left.end, self.right.end)
        self.left.pad_to(end)
        self.right.pad_to(end)
        return self._take(end)

    def _take(self, upto: int) -> np.ndarray | None:
        n = upto - self.written
        if n <= 0:
            return None
        self.written = upto
        return np.stack([self.left.take(n), self.right.take(n)], axis=1)
