"""Tests for `OutboundAudioTrack`, the bot's voice as aiortc pulls it.

The track is driven directly through `recv()`, the way aiortc's RTP sender drives it, so no peer
connection is needed. Where the behaviour is about timing, a fake clock and a recording `sleep` make the
check exact; the one real-time check uses a tolerant lower bound only.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from agent.media import tracks
from agent.media.tracks import FRAME_SAMPLES, OUT_RATE, OutboundAudioTrack


def samples_of(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1)


def ramp(n: int, start: int = 1) -> np.ndarray:
    """Distinct non-zero int16 values, so order and gaps are visible after reassembly."""
    return (np.arange(start, start + n) % 30000 + 1).astype(np.int16)


async def read_frames(track: OutboundAudioTrack, count: int) -> list[av.AudioFrame]:
    return [await track.recv() for _ in range(count)]


class FakeTime:
    """A clock that only moves when the track sleeps (or when the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_sleep = asyncio.sleep

        async def fake_sleep(delay: float, result: object = None) -> object:
            self.sleeps.append(delay)
            self.now += delay
            return await real_sleep(0, result)

        # `tracks.asyncio` is the asyncio module: patch only for this test, and only `sleep`.
        monkeypatch.setattr(tracks.asyncio, "sleep", fake_sleep)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    fake.install(monkeypatch)
    return fake


async def test_nothing_is_sent_before_open() -> None:
    """The first media packet counts as "answered" on the phone; it must wait for accept's 200 OK."""
    track = OutboundAudioTrack()
    track.enqueue(ramp(FRAME_SAMPLES))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(track.recv(), timeout=0.1)
    assert track.frames_sent == 0
    track.open()
    frame = await asyncio.wait_for(track.recv(), timeout=1)
    np.testing.assert_array_equal(samples_of(frame), ramp(FRAME_SAMPLES))
    track.stop()


async def test_frames_are_20ms_mono_48k_with_increasing_pts() -> None:
    track = OutboundAudioTrack()
    track.open()
    frames = await read_frames(track, 4)
    for n, frame in enumerate(frames):
        assert frame.sample_rate == OUT_RATE == 48000
        assert frame.samples == FRAME_SAMPLES == 960
        assert frame.layout.name == "mono"
        assert frame.format.name == "s16"
        assert frame.time_base == fractions.Fraction(1, 48000)
        assert frame.pts == n * 960
    assert track.frames_sent == 4
    track.stop()


async def test_silence_when_nothing_is_queued() -> None:
    """WhatsApp hangs up after 20 s without media, so an idle bot still sends (silent) frames."""
    track = OutboundAudioTrack()
    track.open()
    for frame in await read_frames(track, 3):
        assert not samples_of(frame).any()
    assert not track.playing
    track.stop()


async def test_queued_audio_comes_out_in_order_across_frame_boundaries() -> None:
    track = OutboundAudioTrack()
    audio = ramp(2500)
    # Chunk sizes that straddle frame boundaries in different places.
    track.enqueue(audio[:700])
    track.enqueue(audio[700:2000])
    track.enqueue(audio[2000:])
    assert track.queued_ms == 2500 * 1000 // 48000
    track.open()
    out = np.concatenate([samples_of(f) for f in await read_frames(track, 3)])
    np.testing.assert_array_equal(out[:2500], audio)
    # The last frame is padded with silence, not with stale samples.
    assert not out[2500:].any()
    assert not track.playing
    track.stop()


async def test_enqueue_accepts_any_int_dtype_and_ignores_empty_chunks() -> None:
    track = OutboundAudioTrack()
    track.enqueue(np.array([], dtype=np.int16))
    assert not track.playing
    track.enqueue(np.full((2, 480), 7, dtype=np.int32))
    assert track.queued_ms == 20
    track.open()
    np.testing.assert_array_equal(samples_of(await track.recv()), np.full(960, 7, dtype=np.int16))
    track.stop()


async def test_flush_empties_at_once_and_reports_dropped_ms() -> None:
    """Barge-in: the caller speaks over the bot, and the rest of the bot's sentence must go now."""
    track = OutboundAudioTrack()
    track.enqueue(ramp(OUT_RATE))  # 1 s
    track.open()
    first = await track.recv()
    assert samples_of(first).any()
    dropped = track.flush()
    assert dropped == 1000 - 20
    assert track.queued_ms == 0
    assert not track.playing
    assert not samples_of(await track.recv()).any()
    assert track.flush() == 0
    track.stop()


async def test_wait_idle_returns_when_queued_audio_has_been_sent() -> None:
    track = OutboundAudioTrack()
    await asyncio.wait_for(track.wait_idle(), timeout=1)  # idle from the start
    track.enqueue(ramp(2 * FRAME_SAMPLES))
    waiter = asyncio.create_task(track.wait_idle())
    track.open()
    await track.recv()
    await asyncio.sleep(0)
    assert not waiter.done()
    await track.recv()
    await asyncio.wait_for(waiter, timeout=1)
    track.stop()


async def test_wait_idle_returns_on_flush() -> None:
    track = OutboundAudioTrack()
    track.enqueue(ramp(OUT_RATE))
    waiter = asyncio.create_task(track.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()
    track.flush()
    await asyncio.wait_for(waiter, timeout=1)
    track.stop()


async def test_play_start_and_end_callbacks(fake_time: FakeTime) -> None:
    track = OutboundAudioTrack(clock=fake_time.clock)
    events: list[tuple[str, float]] = []
    track.on_play_start = lambda t: events.append(("start", t))
    track.on_play_end = lambda t: events.append(("end", t))
    track.open()
    await read_frames(track, 2)  # silence: no events
    assert events == []
    track.enqueue(ramp(int(FRAME_SAMPLES * 1.5)))
    await read_frames(track, 2)  # one full frame, one half frame of speech
    assert events == [("start", pytest.approx(100.04))]
    await track.recv()  # first silent frame after speech
    assert events == [("start", pytest.approx(100.04)), ("end", pytest.approx(100.08))]
    await read_frames(track, 2)
    assert len(events) == 2
    # A second utterance fires a second start.
    track.enqueue(ramp(FRAME_SAMPLES))
    await track.recv()
    assert [name for name, _ in events] == ["start", "end", "start"]
    track.stop()


async def test_pacing_follows_the_clock_exactly(fake_time: FakeTime) -> None:
    track = OutboundAudioTrack(clock=fake_time.clock)
    track.open()
    await read_frames(track, 25)
    # The first frame goes at once; each later one waits for its 20 ms slot.
    assert fake_time.sleeps == [pytest.approx(0.02)] * 24
    assert fake_time.now == pytest.approx(100.48)


async def test_a_stalled_loop_skips_ahead_instead_of_bursting(fake_time: FakeTime) -> None:
    """After a stall, sending all the late frames at once would overflow the far end's jitter buffer."""
    track = OutboundAudioTrack(clock=fake_time.clock)
    track.open()
    await read_frames(track, 2)
    assert len(fake_time.sleeps) == 1
    fake_time.now += 5.0  # the event loop was blocked for 5 s
    await track.recv()
    assert len(fake_time.sleeps) == 1  # late frame goes at once...
    await track.recv()
    assert fake_time.sleeps[1:] == [pytest.approx(0.02)]  # ...and pacing resumes from now
    track.stop()


async def test_pacing_is_roughly_real_time() -> None:
    """25 frames of 20 ms cannot come out faster than real time (tolerant lower bound only)."""
    track = OutboundAudioTrack()
    track.open()
    start = time.monotonic()
    await read_frames(track, 25)
    assert time.monotonic() - start >= 0.45
    track.stop()


async def test_stop_makes_recv_raise() -> None:
    track = OutboundAudioTrack()
    track.open()
    await track.recv()
    track.stop()
    assert track.readyState == "ended"
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_stop_wakes_a_recv_waiting_for_open() -> None:
    """aiortc's sender may be parked in recv() when a call that never got accepted is torn down."""
    track = OutboundAudioTrack()
    pending = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    assert not pending.done()
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, timeout=1)
    assert track.frames_sent == 0


async def test_stop_releases_wait_idle() -> None:
    track = OutboundAudioTrack()
    track.enqueue(ramp(OUT_RATE))
    waiter = asyncio.create_task(track.wait_idle())
    track.stop()
    await asyncio.wait_for(waiter, timeout=1)


async def test_when_played_reports_the_real_send_time_of_a_sample(fake_time: FakeTime) -> None:
    """The simulated caller times its turns by this: after a stall the stamp is when the frame went out."""
    track = OutboundAudioTrack(clock=fake_time.clock)
    track.open()
    await read_frames(track, 1)
    first = track.enqueue(ramp(FRAME_SAMPLES * 3))
    second = track.enqueue(ramp(FRAME_SAMPLES))
    assert (first, second) == (0, FRAME_SAMPLES * 3)
    sent: list[tuple[str, float]] = []
    track.when_played(first + FRAME_SAMPLES * 2 + 5, lambda t: sent.append(("third frame", t)))
    track.when_played(first, lambda t: sent.append(("first frame", t)))
    await read_frames(track, 1)
    assert sent == [("first frame", pytest.approx(100.02))]
    fake_time.now += 0.1  # the loop stalled: the third frame goes out late
    await read_frames(track, 2)
    assert sent[1] == ("third frame", pytest.approx(100.12))  # not 100.06, where real time would put it
    track.stop()


async def test_when_played_never_fires_for_flushed_audio(fake_time: FakeTime) -> None:
    track = OutboundAudioTrack(clock=fake_time.clock)
    track.open()
    start = track.enqueue(ramp(FRAME_SAMPLES * 4))
    fired: list[float] = []
    track.when_played(start + FRAME_SAMPLES * 3, fired.append)
    await read_frames(track, 1)
    track.flush()
    later = track.enqueue(ramp(FRAME_SAMPLES))
    assert later == FRAME_SAMPLES * 4  # positions keep counting across a flush
    await read_frames(track, 3)
    assert fired == []
    track.stop()
