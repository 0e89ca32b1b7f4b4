"""The outbound track's own Opus encoding: speech survives a round trip, steady silence is one canned packet."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from agent.media.opus_out import FRAME_SAMPLES, SETTLE_FRAMES, SILENCE, OpusFrameEncoder
from agent.media.tracks import OutboundAudioTrack


def tone(frames: int) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / 48000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def decode(payloads: list[bytes]) -> np.ndarray:
    codec = av.CodecContext.create("libopus", "r")
    out: list[np.ndarray] = []
    for i, payload in enumerate(payloads):
        packet = av.Packet(payload)
        packet.pts = i * FRAME_SAMPLES
        packet.time_base = fractions.Fraction(1, 48000)
        for frame in codec.decode(packet):
            out.append(frame.to_ndarray().reshape(frame.samples, -1)[:, 0])
    return np.concatenate(out)


@pytest.mark.parametrize("complexity", [0, 5, 10])
def test_speech_round_trips_and_silence_settles_into_the_canned_packet(complexity: int) -> None:
    enc = OpusFrameEncoder(complexity=complexity)
    speech = tone(10)
    packets = [enc.packet(speech[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], i * FRAME_SAMPLES) for i in range(10)]
    packets += [enc.packet(None, (10 + i) * FRAME_SAMPLES) for i in range(SETTLE_FRAMES + 5)]
    assert [p.pts for p in packets] == [i * FRAME_SAMPLES for i in range(len(packets))]
    payloads = [bytes(p) for p in packets]
    assert payloads[-5:] == [SILENCE] * 5  # after the settle frames: no encoding at all
    assert len(SILENCE) <= 8
    assert enc.encoded == 10 + SETTLE_FRAMES and enc.canned == 5
    heard = decode(payloads)
    rms = float(np.sqrt(np.mean(heard[960 : 9 * 960].astype(np.float64) ** 2)))
    assert 4000 < rms < 7500  # the tone's level (8000 / sqrt 2), give or take the codec
    assert np.abs(heard[-5 * 960 :]).max() < 50


async def test_the_track_hands_out_packets_when_given_an_encoder() -> None:
    track = OutboundAudioTrack(encoder=OpusFrameEncoder())
    track.open()
    track.enqueue(tone(2))
    first, second, third = [await track.recv() for _ in range(3)]
    assert all(isinstance(p, av.Packet) for p in (first, second, third))
    assert (first.pts, second.pts, third.pts) == (0, FRAME_SAMPLES, 2 * FRAME_SAMPLES)
    assert len(bytes(first)) > 20  # speech, encoded
    track.stop()


@pytest.mark.parametrize("complexity", [-1, 11])
def test_an_out_of_range_complexity_is_refused(complexity: int) -> None:
    with pytest.raises(ValueError, match="complexity"):
        OpusFrameEncoder(complexity=complexity)
