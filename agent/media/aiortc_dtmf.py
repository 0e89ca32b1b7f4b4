"""DTMF through aiortc, which has none: every use of aiortc's private parts for it is in this module.

Pinned to the aiortc range in pyproject.toml (``aiortc>=1.14,<1.17``); tests/media/test_aiortc_dtmf.py
fails with "aiortc changed X; agent/media/aiortc_dtmf.py must be updated" when an upgrade moves one of them.

1. Negotiation: aiortc offers and answers only the codecs in ``aiortc.codecs.CODECS``. Appending
   telephone-event/8000 (payload type 126, as Meta uses) makes it part of our BIC offer and of our answer
   whenever an offer has it. Opus stays first, so it is still what the sender encodes; an offer's
   telephone-event/48000 finds no match and stays out of the answer, as Meta requires (spec §7.5).
2. Receiving: a receiver hands every packet of its SSRC to the jitter buffer and the decoder, and the
   decoder has no idea what a telephone-event is (it would raise and stop the caller's audio). The
   receiver's ``_handle_rtp_packet`` is wrapped, per receiver, to take the event packets out first (still
   counted in the RTCP receiver statistics, so they do not show up as loss to the sender).
3. Sending (the simulated phone): the event packets must carry the audio stream's SSRC, sequence numbers
   and timestamp base, all of which live in locals of aiortc's sender loop, so they cannot be made
   outside it (SRTP would refuse our own sequence numbers as replays). Instead the sender makes them
   itself: the track hands it an `EventFrame`, which aiortc "packs" like a pre-encoded Opus packet (its
   bytes become the payload, its pts the timestamp) into a packet with the next sequence number; the
   payload is an `EventPayload` (bytes that know their payload type and marker), and the sender's
   packet history, which sees every packet just before it is serialised, rewrites those two header
   fields. The hook is per sender; nothing is patched for the whole process but the codec list.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters
from aiortc.codecs import CODECS
from aiortc.rtp import RtpPacket

from agent.media.dtmf import CLOCK_RATE, PAYLOAD_TYPE, TelephoneEvent, TonePacket, parse_event

log = logging.getLogger(__name__)

MIME_TYPE = "audio/telephone-event"
TIME_BASE = fractions.Fraction(1, 48000)  # the audio stream's: event timestamps share its base
_HISTORY = "_RTCRtpSender__rtp_history"
_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"

TELEPHONE_EVENT = RTCRtpCodecParameters(mimeType=MIME_TYPE, clockRate=CLOCK_RATE, channels=1, payloadType=PAYLOAD_TYPE)


def register_telephone_event() -> None:
    """Let aiortc negotiate telephone-event/8000 (idempotent; after Opus, so Opus stays the send codec)."""
    audio = CODECS["audio"]
    if not any(c.mimeType.lower() == MIME_TYPE and c.clockRate == CLOCK_RATE for c in audio):
        audio.append(TELEPHONE_EVENT)


# ---- receiving ----------------------------------------------------------------------------------------

EventSink = Callable[[TelephoneEvent, RtpPacket], None]


def take_event_packets(receiver: Any, payload_type: Callable[[], int | None], sink: EventSink) -> bool:
    """Route `receiver`'s telephone-event packets to `sink` instead of its decoder; False if this aiortc differs.

    `payload_type` is asked per packet, since the negotiated one is known only once the remote SDP is in.
    """
    original = getattr(receiver, "_handle_rtp_packet", None)
    if original is None or getattr(original, "_takes_events", False):
        return original is not None

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        pt = payload_type()
        if pt is None or packet.payload_type != pt:
            await original(packet, arrival_time_ms)
            return
        if not getattr(receiver, "_enabled", True):
            return
        stats = getattr(receiver, _REMOTE_STREAMS, {}).get(packet.ssrc)
        if stats is not None:
            stats.add(packet)  # RTCP reports: an event packet is a received packet, not a lost one
        try:
            event = parse_event(packet.payload)
        except ValueError as exc:
            log.debug("ignoring a malformed telephone-event packet: %s", exc)
            return
        sink(event, packet)

    handle._takes_events = True  # type: ignore[attr-defined]
    receiver._handle_rtp_packet = handle
    return True


# ---- sending ------------------------------------------------------------------------------------------


class EventPayload(bytes):
    """A telephone-event payload that carries the RTP header fields it needs through aiortc's sender."""

    payload_type: int
    marker: int

    def __new__(cls, data: bytes, *, payload_type: int, marker: bool) -> EventPayload:
        self = super().__new__(cls, data)
        self.payload_type = payload_type
        self.marker = int(marker)
        return self


class EventFrame:
    """What the track returns in place of an Opus packet while a key is down.

    aiortc's Opus encoder packs pre-encoded media with ``bytes(frame)`` and ``frame.pts``/``time_base``:
    this object answers both, with the event payload and the timestamp of the key going down.
    """

    def __init__(self, tone: TonePacket, payload_type: int) -> None:
        self.pts = tone.start_pts
        self.time_base = TIME_BASE
        self._payload = EventPayload(tone.payload, payload_type=payload_type, marker=tone.marker)

    def __bytes__(self) -> bytes:
        return self._payload


class _EventAwareHistory(dict[int, RtpPacket]):
    """The sender's retransmission history, which sees each packet right before it is serialised."""

    def __setitem__(self, key: int, packet: RtpPacket) -> None:
        payload = packet.payload
        if isinstance(payload, EventPayload):
            packet.payload_type = payload.payload_type
            packet.marker = payload.marker
        super().__setitem__(key, packet)


def send_events_via(sender: Any) -> bool:
    """Make `sender` put `EventFrame`s out as telephone-event packets; False if this aiortc differs."""
    history = getattr(sender, _HISTORY, None)
    if not isinstance(history, dict):
        return False
    if not isinstance(history, _EventAwareHistory):
        setattr(sender, _HISTORY, _EventAwareHistory(history))
    return True
