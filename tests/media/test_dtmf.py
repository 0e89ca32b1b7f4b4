"""RFC 4733 payloads, the press assembler (loss, repeats, same key twice, long presses) and the tone player."""

from __future__ import annotations

import asyncio

import pytest

from agent.media.dtmf import (
    MAX_DURATION,
    KeyPress,
    KeyPressAssembler,
    KeyReceiver,
    KeyTones,
    TelephoneEvent,
    build_event,
    check_keys,
    parse_event,
)
from agent.media.jitter import LowLatencyAudioJitterBuffer

# ---- the payload ----------------------------------------------------------------------------------


def test_parse_reads_the_rfc_4733_layout() -> None:
    # event 11 (#) | E=1 R=0 volume=10 | duration 800 (100 ms at 8 kHz)
    event = parse_event(bytes([11, 0b1000_1010, 0x03, 0x20]))
    assert event == TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert event.key == "#" and event.duration_ms == 100


def test_parse_ignores_the_reserved_bit_and_reads_the_full_volume_range() -> None:
    event = parse_event(bytes([0, 0b0111_1111, 0xFF, 0xFF]))
    assert event == TelephoneEvent(event=0, end=False, volume=63, duration=65535)


@pytest.mark.parametrize(("code", "key"), [(0, "0"), (9, "9"), (10, "*"), (11, "#"), (12, "A"), (15, "D"), (16, None)])
def test_event_codes_map_to_keys(code: int, key: str | None) -> None:
    assert parse_event(bytes([code, 0, 0, 0])).key == key


def test_parse_refuses_a_short_payload() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        parse_event(b"\x01\x02\x03")


def test_build_and_parse_round_trip() -> None:
    payload = build_event(5, end=True, duration=1234, volume=7)
    assert len(payload) == 4
    assert parse_event(payload) == TelephoneEvent(event=5, end=True, volume=7, duration=1234)
    with pytest.raises(ValueError):
        build_event(5, end=False, duration=70000)


def test_keys_are_checked() -> None:
    assert check_keys("12#*a") == "12#*A"
    with pytest.raises(ValueError, match="'x'"):
        check_keys("1x")


# ---- the assembler --------------------------------------------------------------------------------


def ev(key: int, duration: int, *, end: bool = False) -> TelephoneEvent:
    return TelephoneEvent(event=key, end=end, volume=10, duration=duration)


def press_packets(asm: KeyPressAssembler, key: int, ts: int, t0: float, final: int = 800) -> list[KeyPress]:
    out: list[KeyPress] = []
    t = t0
    for d in range(160, final, 160):
        out += asm.feed(ev(key, d), ts, t)
        t += 0.02
    for _ in range(3):
        out += asm.feed(ev(key, final, end=True), ts, t)
        t += 0.02
    return out


def test_one_press_is_reported_once_despite_three_end_packets() -> None:
    asm = KeyPressAssembler()
    assert press_packets(asm, 1, 1000, 10.0) == [KeyPress("1", 100, 10.0)]
    assert asm.duplicates == 2


def test_repeated_start_packets_are_one_press() -> None:
    asm = KeyPressAssembler()
    out = asm.feed(ev(7, 160), 500, 1.0) + asm.feed(ev(7, 160), 500, 1.01) + asm.feed(ev(7, 160), 500, 1.02)
    out += asm.feed(ev(7, 400, end=True), 500, 1.05)
    assert out == [KeyPress("7", 50, 1.0)]


def test_the_same_key_twice_is_told_apart_by_timestamp() -> None:
    asm = KeyPressAssembler()
    first = press_packets(asm, 5, 1000, 1.0)
    second = press_packets(asm, 5, 1000 + 960 * 12, 1.3)
    assert first + second == [KeyPress("5", 100, 1.0), KeyPress("5", 100, 1.3)]


def test_lost_end_packets_are_reported_when_the_next_press_starts() -> None:
    asm = KeyPressAssembler()
    out = asm.feed(ev(1, 160), 1000, 1.0) + asm.feed(ev(1, 480), 1000, 1.04)  # ends never arrive
    assert out == []
    out = asm.feed(ev(2, 160), 9000, 1.3)
    assert out == [KeyPress("1", 60, 1.0)]  # the longest duration seen
    assert asm.feed(ev(2, 800, end=True), 9000, 1.4) == [KeyPress("2", 100, 1.3)]


def test_lost_end_packets_are_reported_after_the_timeout() -> None:
    asm = KeyPressAssembler(timeout_s=1.0)
    asm.feed(ev(9, 320), 1000, 5.0)
    assert asm.pending_since == 5.0
    assert asm.expire(5.5) == []
    assert asm.expire(6.0) == [KeyPress("9", 40, 5.0)]
    assert asm.pending_since is None
    # A straggler of the same press afterwards does not make it a second one.
    assert asm.feed(ev(9, 800, end=True), 1000, 6.1) == []


def test_only_the_end_packet_arrives() -> None:
    asm = KeyPressAssembler()
    assert asm.feed(ev(3, 800, end=True), 1000, 2.0) == [KeyPress("3", 100, 2.0)]


def test_out_of_order_update_after_the_end_is_ignored() -> None:
    asm = KeyPressAssembler()
    asm.feed(ev(4, 160), 1000, 1.0)
    assert asm.feed(ev(4, 800, end=True), 1000, 1.1) == [KeyPress("4", 100, 1.0)]
    assert asm.feed(ev(4, 640), 1000, 1.12) == []


def test_a_long_press_is_one_press() -> None:
    asm = KeyPressAssembler()
    assert press_packets(asm, 0, 1000, 1.0, final=16000) == [KeyPress("0", 2000, 1.0)]


def test_a_press_longer_than_the_duration_field_continues_in_segments() -> None:
    """RFC 4733 §2.5.2.1: past 0xFFFF the sender starts a new segment, a new timestamp for the same key."""
    asm = KeyPressAssembler()
    out = asm.feed(ev(8, 60000), 1000, 1.0) + asm.feed(ev(8, MAX_DURATION), 1000, 9.0)
    next_ts = 1000 + MAX_DURATION * 6  # on the 48 kHz audio clock
    out += asm.feed(ev(8, 4000), next_ts, 9.1) + asm.feed(ev(8, 8000, end=True), next_ts, 9.6)
    assert out == [KeyPress("8", (MAX_DURATION + 8000) * 1000 // 8000, 1.0)]


def test_events_that_are_not_keys_are_ignored() -> None:
    asm = KeyPressAssembler()
    assert asm.feed(ev(16, 800, end=True), 1000, 1.0) == []  # flash
    assert asm.ignored == 1


async def test_receiver_reports_a_press_without_end_after_the_timeout_and_closes_its_timer() -> None:
    receiver = KeyReceiver(timeout_s=0.1)
    got: list[KeyPress] = []
    receiver.listeners.append(got.append)

    def broken(_press: KeyPress) -> None:
        raise RuntimeError("a listener bug must not stop the others")

    receiver.listeners.insert(0, broken)
    receiver.on_event(ev(6, 160), 1000)
    await asyncio.sleep(0.05)
    receiver.on_event(ev(6, 320), 1000)
    assert got == []
    await asyncio.sleep(0.2)
    assert [(p.digit, p.duration_ms) for p in got] == [("6", 40)]
    receiver.on_event(ev(7, 160), 5000)
    receiver.close()
    await asyncio.sleep(0.2)
    assert len(got) == 1  # closed: the pending press is dropped with the call


# ---- the tone player (the simulated phone) -----------------------------------------------------------


async def test_tones_replace_audio_frames_as_rfc_4733_packets() -> None:
    tones = KeyTones()
    done = tones.press("1#", tone_ms=100, gap_ms=40)
    slots = [tones.tick(960 * n) for n in range(20)]
    assert done.done()
    sent = [(n, s) for n, s in enumerate(slots) if s is not None]
    assert [n for n, _ in sent] == [*range(0, 7), *range(9, 16)]  # 7 packets, a 40 ms gap of audio, 7 more
    first = [s for n, s in sent if n < 7]
    events = [parse_event(s.payload) for s in first]
    assert [e.key for e in events] == ["1"] * 7
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [s.marker for s in first] == [True] + [False] * 6
    assert {s.start_pts for s in first} == {0}
    assert {s.start_pts for n, s in sent if n >= 9} == {960 * 9}
    assert not tones.busy


async def test_tones_can_be_cancelled() -> None:
    tones = KeyTones()
    done = tones.press("123")
    tones.tick(0)
    tones.cancel()
    assert done.cancelled() and tones.tick(960) is None


# ---- the audio jitter buffer skips the event's sequence numbers --------------------------------------


class Packet:
    def __init__(self, seq: int, payload: bytes = b"\x00" * 40) -> None:
        self.sequence_number = seq
        self.timestamp = seq * 960
        self.payload = payload


def test_jitter_buffer_does_not_wait_for_sequence_numbers_used_by_events() -> None:
    buffer = LowLatencyAudioJitterBuffer(max_wait=2)
    assert buffer.add(Packet(10))[1] is not None
    buffer.skip(11)
    assert buffer.add(Packet(12))[1] is not None  # at once: 11 was an event, not a missing audio packet
    buffer.skip(14)  # an event packet overtook the audio packet 13
    assert buffer.add(Packet(13))[1] is not None
    assert buffer.add(Packet(15))[1] is not None
    assert buffer.skipped == 0
