"""The low-delay audio receive buffer: in-order packets out at once, gaps and reordering bounded."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from agent.media.jitter import LowLatencyAudioJitterBuffer

SPEECH = b"\x10" * 120
SILENCE = b"\xf8\xff\xfe"


def packet(seq: int, payload: bytes = SPEECH) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=(seq * 960) % 2**32)
    p.payload = payload
    p._data = payload  # type: ignore[attr-defined]  # what aiortc's receiver sets before the buffer
    return p


def feed(buf: LowLatencyAudioJitterBuffer, seqs: list[int], payload: bytes = SPEECH) -> list[int | None]:
    out: list[int | None] = []
    for seq in seqs:
        pli, frame = buf.add(packet(seq, payload))
        assert pli is False
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def test_in_order_packets_come_out_immediately() -> None:
    buf = LowLatencyAudioJitterBuffer()
    assert feed(buf, [10, 11, 12, 13]) == [10, 11, 12, 13]
    assert buf.skipped == buf.late == 0


def test_sequence_numbers_wrap_around() -> None:
    buf = LowLatencyAudioJitterBuffer()
    assert feed(buf, [65534, 65535, 65536, 65537]) == [65534, 65535, 65536, 65537]


def test_a_reordered_packet_is_waited_for_and_lag_is_shed_at_silence() -> None:
    buf = LowLatencyAudioJitterBuffer(max_wait=2)
    assert feed(buf, [1, 3, 2]) == [1, None, 2]  # 3 is kept while 2 is on its way
    assert feed(buf, [4]) == [3]  # one frame behind now, during speech
    assert feed(buf, [5], SILENCE) == [4]  # the silent frame 5 is dropped: back to no delay
    assert feed(buf, [6]) == [6]
    assert buf.skipped == 1


def test_a_lost_packet_is_given_up_after_max_wait() -> None:
    buf = LowLatencyAudioJitterBuffer(max_wait=2, max_lag=2)
    assert feed(buf, [1, 3, 4]) == [1, None, None]
    out = feed(buf, [5])  # 2 never came: 3 goes out, 4 and 5 wait as lag
    assert out == [3]
    assert feed(buf, [6, 7]) == [4, 5]  # speech: the lag stays within max_lag
    assert buf.late == 0


def test_lag_never_exceeds_max_lag() -> None:
    buf = LowLatencyAudioJitterBuffer(max_wait=3, max_lag=1)
    feed(buf, [1])
    assert feed(buf, [3, 4, 5, 6]) == [None, None, None, 5]  # 2 lost; 3 and 4 dropped to keep lag <= 1
    assert feed(buf, [7]) == [6]


def test_a_silent_head_frame_is_dropped_while_speech_waits() -> None:
    buf = LowLatencyAudioJitterBuffer(max_wait=2)
    feed(buf, [1])
    feed(buf, [3])
    assert feed(buf, [2], SILENCE) == [3]  # 2 is silence: skipping it costs nothing and removes the lag
    assert feed(buf, [4]) == [4]


def test_late_and_duplicate_packets_are_ignored() -> None:
    buf = LowLatencyAudioJitterBuffer()
    assert feed(buf, [1, 2, 3, 2, 3, 4]) == [1, 2, 3, None, None, 4]
    assert buf.late == 2


def test_a_restarted_stream_is_followed() -> None:
    buf = LowLatencyAudioJitterBuffer()
    assert feed(buf, [5000, 5001, 100, 101]) == [5000, 5001, 100, 101]
