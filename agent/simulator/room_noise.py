"""The room a simulated caller phones from: steady background noise at a set level, under everything sent.

Real callers are never in digital silence, and a bot's voice-activity detection must tell a noisy pause
from speech. The noise is added at the caller's microphone, that is to every 20 ms frame the caller's
phone encodes to Opus, so it is there under speech, in pauses inside a line and while the caller is
quiet between lines, exactly as the bot would receive it.

The noise is a seeded buffer shaped in the frequency domain and played in a loop: an inverse FFT is
periodic, so the loop has no seam, and a run with the same seed sends the same samples.
"""

from __future__ import annotations

import av
import numpy as np

from agent.media.opus_out import FRAME_SAMPLES, OpusFrameEncoder

RATE = 48000
LOOP_S = 8.0
FULL_SCALE = 32768.0
_HIGH_PASS_HZ = 40.0  # no rumble below what a phone's microphone passes


def dbfs(pcm: np.ndarray) -> float:
    """RMS level relative to int16 full scale (a full-scale square wave is 0 dBFS)."""
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * float(np.log10(max(rms, 1e-9) / FULL_SCALE))


def noise_buffer(level_dbfs: float, color: str = "pink", *, seed: int = 0, seconds: float = LOOP_S) -> np.ndarray:
    """`seconds` of noise (float64, int16 scale) whose RMS is exactly `level_dbfs`.

    white: flat spectrum (fan, hiss); pink: -3 dB/octave (a room, distant traffic); brown: -6 dB/octave
    (rumble, a car).
    """
    n = int(RATE * seconds)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    shape = np.ones_like(freqs)
    audible = freqs >= _HIGH_PASS_HZ
    if color == "pink":
        shape[audible] = 1 / np.sqrt(freqs[audible] / _HIGH_PASS_HZ)
    elif color == "brown":
        shape[audible] = _HIGH_PASS_HZ / freqs[audible]
    elif color != "white":
        raise ValueError(f"unknown noise color {color!r}")
    shape[~audible] = 0.0
    noise = np.fft.irfft(spectrum * shape, n)
    rms = float(np.sqrt(np.mean(np.square(noise))))
    return noise * (FULL_SCALE * 10 ** (level_dbfs / 20) / rms)


class RoomNoise:
    """An endless, seamless stream of room noise; `take(n)` returns the next n samples."""

    def __init__(self, level_dbfs: float, color: str = "pink", *, seed: int = 0) -> None:
        self.level_dbfs = level_dbfs
        self.color = color
        self._buffer = noise_buffer(level_dbfs, color, seed=seed)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float64)
        filled = 0
        while filled < n:
            step = min(n - filled, self._buffer.size - self._pos)
            out[filled : filled + step] = self._buffer[self._pos : self._pos + step]
            filled += step
            self._pos = (self._pos + step) % self._buffer.size
        return out

    def mix(self, pcm: np.ndarray | None, n: int) -> np.ndarray:
        """`pcm` (int16, or None for silence) with the next n samples of noise under it, as int16."""
        noisy = self.take(n)
        if pcm is not None:
            noisy += pcm.astype(np.float64)
        return np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)


class NoisyMicrophone(OpusFrameEncoder):
    """The caller's phone encoder with the room under every frame: speech, pauses and idle time alike.

    The outbound track hands the encoder each 20 ms frame, or None when it has nothing queued; with a room
    there is no digital silence any more, so every frame is encoded.
    """

    def __init__(self, room: RoomNoise, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.room = room

    def packet(self, samples: np.ndarray | None, pts: int) -> av.Packet:
        n = samples.size if samples is not None else FRAME_SAMPLES
        return super().packet(self.room.mix(samples, n), pts)
