"""PCM helpers: resampling must keep length and pitch, and must not alias when downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from agent.speech.audio import StreamResampler, float32_to_int16, int16_to_float32, resample, rms_dbfs

RATE_PAIRS = [(22050, 48000), (48000, 16000), (16000, 48000), (48000, 48000)]


def _sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


def _peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resample_length_and_frequency(src: int, dst: int) -> None:
    out = resample(_sine(1000, src), src, dst)
    assert out.dtype == np.int16
    assert out.size == dst
    assert _peak_hz(out, dst) == pytest.approx(1000, abs=2)
    # Level is preserved (band-limited resampling of an in-band tone): 0.3 FS sine is about -13.5 dBFS.
    assert rms_dbfs(out[dst // 10 : -dst // 10]) == pytest.approx(rms_dbfs(_sine(1000, src)), abs=0.5)


def test_resample_odd_lengths() -> None:
    """swresample drops very short inputs on its own; the helper must still return the exact length."""
    for n in (1, 7, 50, 441, 1000, 22051):
        out = resample(np.full(n, 1000, np.int16), 22050, 48000)
        assert out.size == round(n * 48000 / 22050)


def test_downsampling_filters_out_of_band_tones() -> None:
    """A 10 kHz tone cannot exist at 16 kHz; a naive decimator would fold it to 6 kHz at full level."""
    out = resample(_sine(10000, 48000), 48000, 16000)
    assert rms_dbfs(out[1600:-1600]) < rms_dbfs(_sine(10000, 48000)) - 40


def test_resample_edge_cases() -> None:
    assert resample(np.zeros(0, np.int16), 22050, 48000).size == 0
    same = _sine(1000, 16000)
    out = resample(same, 16000, 16000)
    assert np.array_equal(out, same) and out is not same
    assert resample(same.reshape(1, -1), 16000, 48000).size == 48000
    with pytest.raises(TypeError):
        resample(same.astype(np.float32), 16000, 48000)
    with pytest.raises(ValueError):
        resample(np.zeros((2, 100), np.int16), 16000, 48000)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_stream_resampler_matches_one_shot(src: int, dst: int) -> None:
    signal = _sine(1000, src)
    stream = StreamResampler(src, dst)
    chunk = src // 50  # 20 ms, as frames arrive from a call
    parts = [stream.process(signal[i : i + chunk]) for i in range(0, signal.size, chunk)]
    parts.append(stream.flush())
    out = np.concatenate(parts)
    assert abs(out.size - dst) <= 1
    assert _peak_hz(out, dst) == pytest.approx(1000, abs=2)
    one_shot = resample(signal, src, dst)
    n = min(out.size, one_shot.size) - 64  # the very end differs: flush vs. padding with silence
    # State carried across chunks means no boundary clicks: same samples as resampling in one go.
    assert np.max(np.abs(out[:n].astype(int) - one_shot[:n].astype(int))) <= 2


def test_stream_resampler_reusable_after_flush() -> None:
    stream = StreamResampler(22050, 48000)
    first = np.concatenate([stream.process(_sine(500, 22050)), stream.flush()])
    second = np.concatenate([stream.process(_sine(500, 22050)), stream.flush()])
    assert np.array_equal(first, second)


def test_int16_float_round_trip() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = int16_to_float32(pcm)
    assert f.dtype == np.float32
    assert f.min() == -1.0 and f.max() < 1.0
    assert np.array_equal(float32_to_int16(f), pcm)
    assert np.array_equal(float32_to_int16(np.array([2.0, -2.0])), np.array([32767, -32768], np.int16))


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.zeros(320, np.int16)) == -120.0
    assert rms_dbfs(np.zeros(0, np.int16)) == -120.0
    full = _sine(1000, 16000, amplitude=1.0)
    assert rms_dbfs(full) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(int16_to_float32(full)) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(_sine(1000, 16000, amplitude=0.01)) == pytest.approx(-43.0, abs=0.2)
