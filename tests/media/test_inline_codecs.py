"""Audio codecs on the event loop: encoders run inline, other executor work still gets a thread."""

from __future__ import annotations

import asyncio
import fractions
import threading

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from agent.media.inline_codecs import AudioCodecInlineExecutor, InlineDecodeQueue, encode_audio_inline

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def frame(i: int) -> av.AudioFrame:
    samples = (np.sin(np.arange(960) / 10) * 6000).astype(np.int16).reshape(1, -1)
    f = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    f.sample_rate = 48000
    f.pts = i * 960
    f.time_base = fractions.Fraction(1, 48000)
    return f


async def test_audio_encoders_run_inline_and_anything_else_on_a_thread() -> None:
    loop = asyncio.get_running_loop()
    encode_audio_inline(loop)
    encode_audio_inline(loop)  # once per loop
    encoder = OpusEncoder()
    payloads, _ = await loop.run_in_executor(None, encoder.encode, frame(0), False)
    assert payloads and len(payloads[0]) > 10
    where = await loop.run_in_executor(None, threading.current_thread)
    assert where is not threading.current_thread()  # e.g. getaddrinfo must not block the loop


def test_inline_executor_passes_encoder_errors_on() -> None:
    with AudioCodecInlineExecutor(max_workers=1) as pool:
        future = pool.submit(OpusEncoder().encode, "not a frame", False)
        assert isinstance(future.exception(), AssertionError)


async def test_decode_queue_hands_frames_straight_to_the_track() -> None:
    frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
    q = InlineDecodeQueue(frames)
    encoder = OpusEncoder()
    for i in range(3):
        payloads, ts = encoder.encode(frame(i))
        q.put((OPUS, JitterFrame(payloads[0], ts)))
    assert frames.qsize() == 3 and q.decoded == 3
    got = [frames.get_nowait() for _ in range(3)]
    # aiortc's encoder sends a stereo stream; the bot hears it as one channel, at the tone's level.
    assert all(f.sample_rate == 48000 and f.samples == 960 and f.layout.name == "mono" for f in got)
    pcm = got[-1].to_ndarray().reshape(-1).astype(np.float64)
    assert 3000 < np.sqrt(np.mean(pcm**2)) < 5500  # 6000 / sqrt 2, give or take the codec
    q.put((OPUS, JitterFrame(b"\xff\xff\xff\xff garbage", 0)))  # undecodable: counted, not raised
    stop = threading.Thread(target=q.get)
    stop.start()
    q.put(None)  # what aiortc's receiver sends its decoder thread on stop
    stop.join(timeout=2)
    assert not stop.is_alive()


def test_a_payload_without_a_decoder_is_dropped_not_raised() -> None:
    """telephone-event is negotiated; if its packets ever reached the decoder, audio must go on."""
    import asyncio as _asyncio

    from agent.media.aiortc_dtmf import TELEPHONE_EVENT
    from agent.media.inline_codecs import InlineDecodeQueue

    frames: _asyncio.Queue[object] = _asyncio.Queue()
    decode = InlineDecodeQueue(frames)
    decode.put((TELEPHONE_EVENT, object()))
    assert decode.errors == 1 and frames.empty()
