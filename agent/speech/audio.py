"""Small PCM helpers shared by VAD, STT, TTS and the media tracks.

Resampling goes through PyAV's libswresample because the same library already decodes the call audio,
its filters are properly band-limited (naive interpolation would alias 22.05 kHz piper output), and it
keeps filter state across chunks for streaming.
"""

from __future__ import annotations

import logging

import av
import numpy as np

logger = logging.getLogger(__name__)

# Anything quieter than this is treated as digital silence, so log10 never sees zero.
_SILENCE_DBFS = -120.0
# Silence appended before one-shot resampling; longer than swresample's filter length at any rate here.
_PAD_SAMPLES = 256


def _as_int16_mono(pcm: np.ndarray) -> np.ndarray:
    """Fail loudly on wrong dtype/shape: silently reinterpreting float audio as int16 would be noise."""
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {arr.dtype}")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"expected mono PCM (1-D), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _frame(pcm: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


def _frames_to_array(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole int16 mono buffer to exactly ``round(len * dst / src)`` samples.

    Each call uses a fresh resampler and flushes it, so the filter tail is not lost. Use
    :class:`StreamResampler` for chunked audio instead: resampling chunks independently clicks at every
    boundary.
    """
    arr = _as_int16_mono(pcm)
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate or arr.size == 0:
        return arr.copy()
    expected = round(arr.size * dst_rate / src_rate)
    # libswresample swallows very short inputs entirely (even after flushing), so pad with silence and
    # cut back to the exact length; swr compensates its own delay, so the output stays time-aligned.
    padded = np.concatenate([arr, np.zeros(_PAD_SAMPLES, dtype=np.int16)])
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst_rate)
    frames = resampler.resample(_frame(padded, src_rate))
    frames += resampler.resample(None)
    out = _frames_to_array(frames)[:expected]
    if out.size < expected:
        out = np.concatenate([out, np.zeros(expected - out.size, dtype=np.int16)])
    return out


class StreamResampler:
    """Resample a stream of int16 mono chunks, keeping filter state between them.

    Output lags input by the filter delay (a few samples); call :meth:`flush` at end of stream to get the
    remainder. Not thread-safe: one instance per stream.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._resampler: av.AudioResampler | None = None
        self._new()

    def _new(self) -> None:
        self._resampler = (
            None
            if self.src_rate == self.dst_rate
            else av.AudioResampler(format="s16", layout="mono", rate=self.dst_rate)
        )

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample one chunk; may return slightly fewer samples than the ratio suggests (filter delay)."""
        arr = _as_int16_mono(pcm)
        if self._resampler is None or arr.size == 0:
            return arr.copy()
        return _frames_to_array(self._resampler.resample(_frame(arr, self.src_rate)))

    def flush(self) -> np.ndarray:
        """Drain the filter tail and start fresh, so the instance can be reused for a new stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        tail = _frames_to_array(self._resampler.resample(None))
        self._new()
        return tail


def int16_to_float32(pcm: np.ndarray) -> np.ndarray:
    """Scale to [-1, 1) the way Whisper and onnx models expect (divide by 32768, not 32767)."""
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def float32_to_int16(audio: np.ndarray) -> np.ndarray:
    """Clip before converting: float overshoot would otherwise wrap around into loud clicks."""
    return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level relative to int16 full scale (a full-scale square wave is 0 dBFS); -120 for silence.

    Accepts int16, or float in [-1, 1], so callers need not convert just to gate on energy.
    """
    arr = np.asarray(pcm)
    if arr.size == 0:
        return _SILENCE_DBFS
    x = arr.astype(np.float64)
    if arr.dtype == np.int16:
        x /= 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 10 ** (_SILENCE_DBFS / 20):
        return _SILENCE_DBFS
    return 20.0 * float(np.log10(rms))


def trim_leading_quiet(pcm: np.ndarray, rate: int, *, threshold_dbfs: float = -50.0, keep_ms: int = 10) -> np.ndarray:
    """Drop the near-silence before the first sound, keeping `keep_ms` of it so the onset does not click.

    piper starts most lines with 40-50 ms of silence; at the start of a reply that is pure waiting for the
    caller, added to every answer.
    """
    step = max(1, rate // 200)  # 5 ms windows
    usable = pcm.size - pcm.size % step
    if usable == 0:
        return pcm
    windows = pcm[:usable].astype(np.float64).reshape(-1, step) / 32768.0
    levels = 10 * np.log10(np.maximum(np.mean(windows**2, axis=1), 1e-12))
    loud = np.flatnonzero(levels > threshold_dbfs)
    if loud.size == 0:
        return pcm
    start = max(0, int(loud[0]) * step - rate * keep_ms // 1000)
    return pcm[start:]
