"""A human agent who took the call is recorded on the right channel, like the bot: the bridge plays the agent's
voice into the caller's outbound track, whose every sent frame the recording takes. Real WebRTC on 127.0.0.1
between a plain aiortc peer (the agent's browser) and the bridge."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import av
import numpy as np

from agent.handover.bridge import Bridge
from agent.media.peer import MediaPeer
from agent.media.tracks import OUT_RATE, OutboundAudioTrack
from agent.recordings.recorder import CallRecorder
from tests.handover.test_bridge import LOOPBACK, CallerLeg, rms, tone, until


class RecordedCaller(CallerLeg):
    """The caller's leg with a real outbound track, as `Call.play` has."""

    def __init__(self, track: OutboundAudioTrack) -> None:
        super().__init__()
        self.track = track

    def play(self, pcm48k: np.ndarray) -> None:
        super().play(pcm48k)
        self.track.enqueue(pcm48k)


async def _send(track: OutboundAudioTrack) -> None:
    """What aiortc's sender does with the caller's outbound track: take a frame every 20 ms."""
    while True:
        await track.recv()


async def test_the_agents_voice_is_on_the_right_channel(tmp_path: Path) -> None:
    track = OutboundAudioTrack()
    recorder = CallRecorder(tmp_path / "handed-over.ogg")
    track.on_frame = recorder.sent_frame
    track.open()
    sender = asyncio.create_task(_send(track))
    caller = RecordedCaller(track)
    bridge = Bridge(caller, agent_id="ana", transcriber=None, on_transcript=print, on_lost=print, hosts=LOOPBACK)
    browser = MediaPeer(hosts=LOOPBACK, label="browser")
    try:
        await bridge.answer(await browser.offer())
        await browser.apply_answer(bridge.peer.pc.localDescription.sdp)
        browser.outbound.open()
        bridge.start()
        await browser.wait_connected(10)
        await until(lambda: bool(caller.taps), 10)
        browser.outbound.enqueue(tone(OUT_RATE, 1.0))  # the agent speaks for a second
        await until(lambda: sum(p.size for p in caller.played) >= OUT_RATE * 0.8, 10)
        await track.wait_idle()
        await asyncio.sleep(0.3)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        track.stop()
        await browser.close()
        await bridge.close()
    info = await recorder.finish()
    assert info.complete
    with av.open(str(info.path)) as container:
        resampler = av.AudioResampler(format="s16p", layout="stereo", rate=OUT_RATE)
        pcm = np.concatenate([o.to_ndarray() for f in container.decode(audio=0) for o in resampler.resample(f)], axis=1)
    assert rms(pcm[1]) > 1000, rms(pcm[1])  # the agent's tone, ~1 s of a short recording
    assert rms(pcm[0]) < 50, rms(pcm[0])  # no caller audio was fed
