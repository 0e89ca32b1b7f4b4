"""Keypad presses over real WebRTC on 127.0.0.1: the simulated phone presses keys, the bot hears them.

The phone sends RFC 4733 events the way WhatsApp's app (libwebrtc) does, and the test checks at the bot's
receiver, packet by packet, that they are on the audio stream itself (its SSRC, its sequence numbers),
shaped as RFC 4733 says, and that the caller's audio around them still decodes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from agent.dialogue.flow import load_flow
from agent.media.dtmf import KeyPress, parse_event
from agent.media.peer import MediaPeer
from agent.media.sdp import normalise_bic_answer, shape_offer
from agent.media.tracks import IN_RATE, OUT_RATE, InboundAudio
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.natural_caller import QuietTranscriber
from agent.simulator.session import DEFAULT_LINES, Simulation
from tests.wer import wer

LOOPBACK = ["127.0.0.1"]
TONE_HZ = 1000.0


@dataclass
class Seen:
    """Every RTP packet the bot's receiver got, and the audio and keys that came out of them."""

    packets: list[Any] = field(default_factory=list)
    keys: list[KeyPress] = field(default_factory=list)
    audio: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def sink(self, pcm: np.ndarray, now: float) -> None:
        self.audio.append((pcm.copy(), now))

    def loud_after(self, t: float, threshold: float = 1000.0) -> np.ndarray:
        parts = [p for p, at in self.audio if at > t and np.sqrt(np.mean(np.square(p.astype(np.float64)))) > threshold]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


@dataclass
class Line:
    bot: MediaPeer
    user: SimulatedUser
    answer: str
    seen: Seen


def record_packets(peer: MediaPeer, seen: Seen) -> None:
    """Wrap the bot's receiver once more, outside the keypad hook, to see every packet as it arrives."""
    (transceiver,) = peer.pc.getTransceivers()
    receiver = transceiver.receiver
    inner = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        seen.packets.append(packet)
        await inner(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle


@pytest.fixture
async def line() -> AsyncIterator[Line]:
    user = SimulatedUser(transcriber=QuietTranscriber(), hosts=LOOPBACK)
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    seen = Seen()
    bot.keys.listeners.append(seen.keys.append)
    inbound: InboundAudio | None = None
    try:
        answer = await bot.answer(await user.make_offer())
        record_packets(bot, seen)
        await user.apply_answer(answer)
        await asyncio.gather(bot.wait_connected(10), user.peer.wait_connected(10))
        inbound = InboundAudio(await bot.remote_track(timeout=5), seen.sink)
        yield Line(bot=bot, user=user, answer=answer, seen=seen)
    finally:
        if inbound is not None:
            await inbound.close()
        await user.close()
        await bot.close()


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(OUT_RATE * seconds)) / OUT_RATE
    return (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / IN_RATE)[int(np.argmax(spectrum))])


async def test_keys_pressed_on_the_phone_reach_the_bot_on_the_audio_stream(line: Line) -> None:
    assert "a=rtpmap:126 telephone-event/8000" in line.answer
    user, seen = line.user, line.seen
    await user.play(tone(0.4), label="tone before")
    await asyncio.sleep(0.2)
    await user.press_keys("12#")
    keys_done = time.monotonic()
    await user.play(tone(0.6), label="tone after")
    deadline = time.monotonic() + 3
    while len(seen.keys) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)

    # The bot got exactly the three presses, each about as long as the 100 ms tone.
    assert [k.digit for k in seen.keys] == ["1", "2", "#"]
    assert all(k.duration_ms == 100 for k in seen.keys), seen.keys
    assert seen.keys[0].at < seen.keys[1].at < seen.keys[2].at

    # Packet by packet (loopback loses nothing): one SSRC, one run of sequence numbers.
    packets = seen.packets
    assert {p.ssrc for p in packets} == {packets[0].ssrc}, "events must use the audio stream's SSRC"
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "sequence numbers must be shared"
    audio_pt = packets[0].payload_type
    events = [p for p in packets if p.payload_type == 126]
    assert audio_pt == 111 and len(events) == 3 * (5 + 2)  # 5 updates (the last with E) + 2 more ends, per key
    by_ts: dict[int, list[Any]] = {}
    for p in events:
        by_ts.setdefault(p.timestamp, []).append(p)
    assert len(by_ts) == 3, "one RTP timestamp per key press"
    for (ts, group), key in zip(sorted(by_ts.items()), "12#", strict=True):
        parsed = [parse_event(p.payload) for p in group]
        assert {e.key for e in parsed} == {key}
        assert [p.marker for p in group] == [1] + [0] * (len(group) - 1), "marker on the first packet only"
        durations = [e.duration for e in parsed]
        assert durations == sorted(durations) and durations[0] == 160 and durations[-1] == 800
        assert [e.end for e in parsed] == [False] * 4 + [True] * 3, "three end packets"
        assert all(e.volume == 10 for e in parsed)
        # The event's timestamp is on the audio clock: the slot after the previous audio packet.
        index = packets.index(group[0])
        before = packets[index - 1]
        assert before.payload_type == audio_pt and ts == (before.timestamp + 960) % 2**32
    # Audio resumes on the same clock after the last key: its timestamp counts the event slots.
    last_event = events[-1]
    after = packets[packets.index(last_event) + 1]
    assert after.payload_type == audio_pt
    assert after.timestamp > last_event.timestamp

    # Opus decoding was not disturbed: the tone after the keys arrived intact.
    loud = seen.loud_after(keys_done)
    assert loud.size >= IN_RATE * 0.4, "the caller's audio after the keys did not arrive"
    assert abs(peak_hz(loud) - TONE_HZ) < 20


async def test_the_same_key_twice_is_two_presses(line: Line) -> None:
    await line.user.press_keys("55", tone_ms=160, gap_ms=60)
    deadline = time.monotonic() + 3
    while len(line.seen.keys) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert [(k.digit, k.duration_ms) for k in line.seen.keys] == [("5", 160), ("5", 160)]


async def test_a_long_press(line: Line) -> None:
    await line.user.press_keys("0", tone_ms=1500)
    deadline = time.monotonic() + 4
    while not line.seen.keys and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert [(k.digit, k.duration_ms) for k in line.seen.keys] == [("0", 1500)]


# ---- through the whole stack: signed webhooks, Graph API, the Call, the default flow --------------------


@pytest.mark.e2e
async def test_keys_reach_the_call_and_speech_after_them_is_still_understood(models: Models) -> None:
    async with Simulation.start(models) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)  # the greeting
            call = sim.runtime.calls[sim_call.id]
            taps: list[KeyPress] = []
            call.add_key_tap(taps.append)
            await user.press_keys("1")  # the demo's menu: 1 is orders
            after_key = await user.listen(timeout=30)
            await user.say(DEFAULT_LINES[1])  # "No, that's all. Goodbye."
            await user.listen(timeout=30)

            assert [k.digit for k in call.key_presses] == ["1"]
            assert all(80 <= k.duration_ms <= 120 for k in call.key_presses), call.key_presses
            assert taps == call.key_presses
            flow = load_flow("prompts/demo.yaml")
            expected = " ".join(flow.nodes["order_status"].say + flow.nodes["anything_else"].say)
            assert wer(expected, after_key) <= 0.2, (expected, after_key)
            # The caller's words after the key went through Opus, VAD and Whisper as usual.
            assert call.conversation is not None
            caller_heard = [e.text for e in call.conversation.transcript if e.who == "caller"]
            assert caller_heard[0] == "[keys] 1", caller_heard
            assert len(caller_heard) == 2 and wer(DEFAULT_LINES[1], caller_heard[1]) <= 0.2, caller_heard
            await sim.meta.user_hangup(sim_call.id)
            await asyncio.wait_for(call.ended.wait(), 10)
            await call.wait_closed()
        finally:
            await user.close()


async def test_keys_on_a_call_the_business_placed() -> None:
    """BIC: our offer carries 126/8000, the phone answers like Meta, and its keys arrive just the same."""
    user = SimulatedUser(transcriber=QuietTranscriber(), hosts=LOOPBACK)
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    keys: list[KeyPress] = []
    bot.keys.listeners.append(keys.append)
    try:
        offer = shape_offer(await bot.offer())
        assert "a=rtpmap:126 telephone-event/8000" in offer
        answer = await user.answer_business_call(offer)
        assert "a=rtpmap:126 telephone-event/8000" in answer
        await bot.apply_answer(normalise_bic_answer(answer))
        await asyncio.gather(bot.wait_connected(10), user.peer.wait_connected(10))
        assert bot.key_payload_type == 126
        bot.outbound.open()
        await user.press_keys("9*")
        deadline = time.monotonic() + 3
        while len(keys) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [(k.digit, k.duration_ms) for k in keys] == [("9", 100), ("*", 100)]
    finally:
        await user.close()
        await bot.close()
