"""A low-delay receive buffer for Opus audio, in place of aiortc's fixed 80 ms one.

aiortc holds every audio packet until four later ones have arrived (``prefetch=4``): 80 ms added to every
caller word before the bot can hear it, and to every barge-in. The bot does not play the caller's audio
back, it analyses it, so it has no use for a smooth playout delay; what it needs is each packet as soon as
it is in order. Each Opus RTP packet is a whole 20 ms frame, so a packet can go to the decoder the moment it
arrives when it is the next one expected.

Packets that arrive out of order wait for the missing one for at most ``max_wait`` packets; then the gap is
given up (a lost packet is 20 ms of audio, which VAD and speech recognition shrug off). aiortc's receiver
takes one frame per packet in, so frames left waiting by a reordering are shed at the next silent frame (or
when more than ``max_lag`` pile up) rather than kept as extra delay for the rest of the call.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

SEQ_MOD = 1 << 16
SILENT_OPUS_BYTES = 8
MAX_MISORDER = 100  # further behind than this is a restarted stream, not a late packet


def _ahead(seq: int, ref: int) -> int:
    """How far `seq` is after `ref` (negative when before), modulo 16-bit wrap-around."""
    diff = (seq - ref) % SEQ_MOD
    return diff - SEQ_MOD if diff >= SEQ_MOD // 2 else diff


class LowLatencyAudioJitterBuffer:
    """Drop-in for ``aiortc.jitterbuffer.JitterBuffer`` on an audio receiver (same ``add`` contract)."""

    def __init__(self, *, max_wait: int = 2, max_lag: int = 2) -> None:
        if max_wait < 0 or max_lag < 0:
            raise ValueError("max_wait and max_lag must be >= 0")
        self.max_wait = max_wait
        self.max_lag = max_lag
        self._next: int | None = None
        self._pending: dict[int, RtpPacket | None] = {}  # None: a slot given up
        self.emitted = 0
        self.late = 0
        self.skipped = 0

    @property
    def capacity(self) -> int:
        return self.max_wait + self.max_lag + 1

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._next is None:
            self._next = seq
        behind = -_ahead(seq, self._next)
        if behind > MAX_MISORDER:
            log.debug("audio stream restarted at seq %d (expected %d)", seq, self._next)
            self._pending.clear()
            self._next = seq
        elif behind > 0 or seq in self._pending:
            self.late += 1  # a duplicate, or its slot was already given up
            return False, None
        self._pending[seq] = packet
        out: RtpPacket | None = None
        while out is None:
            if not self._pending:
                return False, None
            if self._next not in self._pending:
                if max(_ahead(s, self._next) for s in self._pending) <= self.max_wait:
                    return False, None  # the missing packet may still come
                self._skip_to_oldest()
            head = self._pending.pop(self._head_seq())
            self._next = (self._head_seq() + 1) % SEQ_MOD
            if head is None:
                continue  # a slot already given up
            waiting = [s for s, p in self._pending.items() if p is not None]
            # One frame goes out per packet in, so frames left waiting by a reordering would stay as delay:
            # shed them where it costs nothing (a silent frame) or when there are too many.
            if waiting and (len(waiting) > self.max_lag or _is_silent(head)):
                self.skipped += 1
                continue
            out = head
        for s in waiting:
            if _is_silent(self._pending[s]):  # type: ignore[arg-type]
                self._pending[s] = None
                self.skipped += 1
        self.emitted += 1
        data: bytes = getattr(out, "_data", out.payload)
        return False, JitterFrame(data=data, timestamp=out.timestamp)

    def skip(self, seq: int) -> None:
        """Another packet of the stream used `seq` (a telephone-event): not a gap to wait for."""
        if self._next is None:
            self._next = (seq + 1) % SEQ_MOD
            return
        ahead = _ahead(seq, self._next)
        if ahead == 0:
            self._next = (seq + 1) % SEQ_MOD
            while self._pending.get(self._next, 0) is None:  # slots already given up
                del self._pending[self._next]
                self._next = (self._next + 1) % SEQ_MOD
        elif 0 < ahead <= MAX_MISORDER and seq not in self._pending:
            self._pending[seq] = None

    def _head_seq(self) -> int:
        assert self._next is not None
        return self._next

    def _skip_to_oldest(self) -> None:
        ref = self._head_seq()
        oldest = min(self._pending, key=lambda s: _ahead(s, ref))
        self.skipped += _ahead(oldest, ref)
        self._next = oldest


def _is_silent(packet: RtpPacket) -> bool:
    """Opus codes digital silence in a few bytes; speech and even faint noise take a hundred or more."""
    return len(packet.payload) <= SILENT_OPUS_BYTES


def use_low_latency_audio_buffer(receiver: Any, *, max_wait: int = 2) -> LowLatencyAudioJitterBuffer | None:
    """Swap the audio receiver's buffer before media flows; None if this aiortc has no such attribute."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "track", None) is None or receiver.track.kind != "audio" or not hasattr(receiver, attr):
        return None
    buffer = LowLatencyAudioJitterBuffer(max_wait=max_wait)
    setattr(receiver, attr, buffer)
    return buffer
