"""The right channel is what the caller heard: every frame the outbound track sends, whoever queued it (the
bot's speech, or a human agent's voice, which the handover bridge plays through `Call.play` into this track)."""

from __future__ import annotations

import numpy as np

from agent.media.tracks import FRAME_SAMPLES, OutboundAudioTrack


async def test_every_sent_frame_reaches_the_listener_and_a_failing_one_is_detached() -> None:
    now = [0.0]
    track = OutboundAudioTrack(clock=lambda: now[0])
    seen: list[tuple[np.ndarray | None, float]] = []
    track.on_frame = lambda samples, t: seen.append((samples, t))
    track.open()
    agent_voice = np.full(FRAME_SAMPLES, 1234, dtype=np.int16)
    track.enqueue(agent_voice)  # what `Call.play` does with the bridged agent's audio
    await track.recv()
    now[0] += 0.02
    await track.recv()
    assert seen[0][0] is not None and np.array_equal(seen[0][0], agent_voice)
    assert seen[1] == (None, 0.02)  # silence is sent too: the recording's timeline keeps going

    def broken(samples: np.ndarray | None, t: float) -> None:
        raise RuntimeError("disk gone")

    track.on_frame = broken
    now[0] += 0.02
    await track.recv()  # the call's audio goes on
    assert track.on_frame is None
    track.stop()
