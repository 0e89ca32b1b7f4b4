"""The bridge over real WebRTC on 127.0.0.1, with a plain aiortc peer standing in for the agent's browser.

The browser test (tests/e2e/test_console_browser.py) covers Chromium itself; this one needs neither a
browser nor a network namespace, so the relay, the lag cap and the "agent's audio dropped" path are
checked on every machine.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from agent.handover.bridge import MAX_LAG_MS, Bridge, _Relay
from agent.media.peer import MediaPeer
from agent.media.tracks import OUT_RATE, InboundAudio
from tests.handover.test_service import FakeCall

LOOPBACK = ["127.0.0.1"]


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) if pcm.size else 0.0


class CallerLeg(FakeCall):
    """The caller's side as the bridge sees it: taps to feed, and what `play` was given."""

    def __init__(self) -> None:
        super().__init__()
        self.played: list[np.ndarray] = []

    def play(self, pcm48k: np.ndarray) -> None:
        self.played.append(pcm48k)


async def until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_audio_crosses_both_ways_and_a_closed_browser_is_reported() -> None:
    caller = CallerLeg()
    lost: list[str] = []
    bridge = Bridge(caller, agent_id="ana", transcriber=None, on_transcript=print, on_lost=lost.append, hosts=LOOPBACK)
    browser = MediaPeer(hosts=LOOPBACK, label="browser")
    heard: list[np.ndarray] = []
    inbound: InboundAudio | None = None
    try:
        await bridge.answer(await browser.offer())  # a full-ICE offerer, as a browser is
        answer = bridge.peer.pc.localDescription.sdp
        await browser.apply_answer(answer)
        browser.outbound.open()
        bridge.start()
        await browser.wait_connected(10)
        inbound = InboundAudio(await browser.remote_track(5), lambda pcm, t: heard.append(pcm))
        await until(lambda: bool(caller.taps), 10)

        # The agent speaks: one second of tone reaches the caller's outbound track.
        browser.outbound.enqueue(tone(OUT_RATE, 1.0))
        await until(lambda: sum(p.size for p in caller.played) >= OUT_RATE * 0.8, 10)
        played = np.concatenate(caller.played)
        assert rms(played[OUT_RATE // 5 :]) > 2000

        # The caller speaks: 16 kHz chunks through the tap reach the browser.
        (tap,) = caller.taps
        chunk = tone(16000, 0.02)
        for _ in range(50):
            tap(chunk, time.monotonic())
            await asyncio.sleep(0.02)
        await until(lambda: any(rms(p) > 2000 for p in heard), 5)
        assert bridge.to_agent.frames == 50

        # The browser goes away: reported once, and closing afterwards removes the tap.
        await browser.close()
        await until(lambda: bool(lost), 15)
        assert lost == ["the agent's audio connection dropped"]
        await bridge.close()
        assert caller.taps == []
    finally:
        if inbound is not None:
            await inbound.close()
        await browser.close()
        await bridge.close()


async def test_closing_the_bridge_is_not_reported_as_lost() -> None:
    lost: list[str] = []
    bridge = Bridge(CallerLeg(), agent_id="ana", transcriber=None, on_transcript=print, on_lost=lost.append)
    bridge.start()
    await asyncio.sleep(0)
    await bridge.close()
    await bridge.close()
    assert lost == []


@pytest.mark.parametrize("queued_ms", [0, MAX_LAG_MS, MAX_LAG_MS + 20])
def test_relay_cuts_a_queue_that_lags_too_far_behind(queued_ms: int) -> None:
    out: list[np.ndarray] = []
    flushed: list[bool] = []
    relay = _Relay(out.append, lambda: queued_ms, lambda: flushed.append(True), MAX_LAG_MS)
    relay.push(tone(16000, 0.02))
    assert relay.frames == 1
    assert flushed == ([True] if queued_ms > MAX_LAG_MS else [])
    assert out[0].dtype == np.int16  # upsampled to 48 kHz (less the filter's delay on the first chunk)
