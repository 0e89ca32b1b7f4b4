"""The private parts of aiortc that keypad input relies on, checked one by one.

aiortc has no DTMF; agent/media/aiortc_dtmf.py reaches into it. These tests fail with a message naming
what moved when an aiortc upgrade (pyproject pins ``aiortc>=1.14,<1.17``) breaks one of those parts, so
the break shows up here instead of as calls whose keys are silently lost (or whose audio stops).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import CODECS, get_capabilities
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtp import RtpPacket

from agent.media.aiortc_dtmf import (
    EventFrame,
    EventPayload,
    _EventAwareHistory,
    register_telephone_event,
    send_events_via,
    take_event_packets,
)
from agent.media.dtmf import TonePacket, build_event

FIX = "agent/media/aiortc_dtmf.py must be updated"


def changed(what: str) -> str:
    return f"aiortc changed {what}; {FIX}"


def test_aiortc_is_in_the_pinned_range() -> None:
    major, minor = (int(p) for p in version("aiortc").split(".")[:2])
    assert (1, 14) <= (major, minor) < (1, 17), changed(f"to version {version('aiortc')} (checked: 1.14-1.16)")


def test_codec_list_takes_telephone_event_after_opus() -> None:
    assert isinstance(CODECS.get("audio"), list), changed("aiortc.codecs.CODECS (no audio list)")
    register_telephone_event()
    register_telephone_event()  # idempotent
    names = [(c.mimeType.lower(), c.clockRate) for c in get_capabilities("audio").codecs]
    assert names.count(("audio/telephone-event", 8000)) == 1, changed("how CODECS becomes capabilities")
    assert names[0] == ("audio/opus", 48000), changed("the codec order (Opus must stay first)")


def test_receiver_entry_point_and_statistics() -> None:
    handler = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
    assert handler is not None and inspect.iscoroutinefunction(handler), changed("RTCRtpReceiver._handle_rtp_packet")
    assert list(inspect.signature(handler).parameters) == ["self", "packet", "arrival_time_ms"], changed(
        "the signature of RTCRtpReceiver._handle_rtp_packet"
    )
    source = inspect.getsource(RTCRtpReceiver)
    assert "self.__remote_streams[packet.ssrc].add(packet)" in source, changed(
        "RTCRtpReceiver's RTCP statistics (__remote_streams)"
    )
    dtls = inspect.getsource(__import__("aiortc.rtcdtlstransport", fromlist=["x"]))
    assert "receiver._handle_rtp_packet(" in dtls, changed("how the DTLS transport hands packets to a receiver")


async def test_take_event_packets_wraps_one_receiver_only() -> None:
    class FakeReceiver:
        _enabled = True

        def __init__(self) -> None:
            self.audio: list[int] = []
            self._RTCRtpReceiver__remote_streams: dict[int, object] = {}

        async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
            self.audio.append(packet.sequence_number)

    receiver, other = FakeReceiver(), FakeReceiver()
    events: list[tuple[int, int]] = []
    assert take_event_packets(receiver, lambda: 126, lambda e, p: events.append((e.event, p.sequence_number)))
    assert take_event_packets(receiver, lambda: 126, lambda e, p: None)  # a second call does not wrap again
    await receiver._handle_rtp_packet(RtpPacket(payload_type=111, sequence_number=1, payload=b"x" * 20), 0)
    event = build_event(3, end=False, duration=160)
    await receiver._handle_rtp_packet(RtpPacket(payload_type=126, sequence_number=2, payload=event), 0)
    await other._handle_rtp_packet(RtpPacket(payload_type=126, sequence_number=3, payload=b"abcd"), 0)
    assert receiver.audio == [1] and events == [(3, 2)] and other.audio == [3]


def test_sender_history_and_packing() -> None:
    source = inspect.getsource(RTCRtpSender._run_rtp)
    history_at = source.find("self.__rtp_history[")
    serialize_at = source.find("packet.serialize(")
    assert 0 <= history_at < serialize_at, changed(
        "RTCRtpSender._run_rtp: the packet history is no longer filled before the packet is serialised"
    )
    assert "payloads, timestamp = self.__encoder.pack(data)" in inspect.getsource(RTCRtpSender._next_encoded_frame), (
        changed("RTCRtpSender._next_encoded_frame: pre-encoded media is no longer packed by the encoder")
    )
    frame = EventFrame(TonePacket(build_event(1, end=True, duration=800), True, 4800), 126)
    payloads, timestamp = OpusEncoder().pack(frame)  # type: ignore[arg-type]
    assert timestamp == 4800, changed("OpusEncoder.pack (timestamps of pre-encoded packets)")
    assert isinstance(payloads[0], EventPayload) and payloads[0].payload_type == 126 and payloads[0].marker == 1, (
        changed("OpusEncoder.pack (it no longer keeps the payload object from bytes())")
    )


async def test_send_events_via_swaps_the_history_of_a_real_sender() -> None:
    class Track:
        kind = "audio"
        id = "t"

        def stop(self) -> None: ...

    class Transport:
        state = "new"

        def _register_rtp_sender(self, *args: object, **kwargs: object) -> None: ...

    try:
        sender = RTCRtpSender(Track(), Transport())  # type: ignore[arg-type]
    except Exception as exc:  # pragma: no cover - only when aiortc changed its constructor
        pytest.fail(changed(f"the RTCRtpSender constructor ({exc!r})"))
    assert send_events_via(sender), changed("RTCRtpSender.__rtp_history (no longer a dict)")
    history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
    assert isinstance(history, _EventAwareHistory)
    packet = RtpPacket(payload_type=111, marker=1, sequence_number=5, timestamp=9)
    packet.payload = EventPayload(b"\x01\x0a\x00\xa0", payload_type=126, marker=False)
    history[5] = packet
    assert (packet.payload_type, packet.marker) == (126, 0)
    parsed = RtpPacket.parse(packet.serialize())
    assert (parsed.payload_type, parsed.marker, parsed.payload) == (126, 0, b"\x01\x0a\x00\xa0")
