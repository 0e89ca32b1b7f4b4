"""Keypad presses (DTMF) as RFC 4733 telephone-events, without any aiortc in it.

WhatsApp sends no webhook for the caller's keypad: the digits travel in the call's RTP stream, as
telephone-event packets (payload type 126, 8 kHz) between the Opus packets of the same SSRC (spec §7.5).
One key press is many packets, all stamped with the RTP timestamp of the moment the key went down: the
first carries the marker bit, updates follow with a growing duration, and the end packet (E bit) is sent
three times because a lost end would otherwise stretch the press until the next one. Packets get lost,
repeated and reordered, so what the bot needs is not the packets but one `KeyPress` per press; the
assembler here does that, and the tone generator does the reverse for the simulated phone.

The aiortc side (negotiating the codec, catching the packets before the Opus decoder, sending them on
the audio sender) is in `agent.media.aiortc_dtmf`, which is the only module that touches aiortc's
private parts for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

KEYS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-15, in this order
CLOCK_RATE = 8000  # WhatsApp supports telephone-event/8000 only; durations count in these units
PAYLOAD_TYPE = 126  # what Meta offers (spec §7.2) and what we offer on calls we place
MAX_DURATION = 0xFFFF  # 16-bit duration field: about 8.2 s; a longer press is sent in segments
END_RETRANSMISSIONS = 3  # RFC 4733 §2.5.1.4: the final packet SHOULD be sent three times
DEFAULT_VOLUME = 10  # -10 dBm0, what browsers send
LOST_END_TIMEOUT_S = 1.0
_REMEMBERED = 32  # finished events whose late packets are still recognised as theirs


@dataclass(frozen=True)
class KeyPress:
    """One key the caller pressed on the call's keypad."""

    digit: str  # one of "0123456789*#ABCD"
    duration_ms: int
    at: float  # monotonic time the key went down (its first packet arrived)


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 payload: event(8) | E(1) R(1) volume(6) | duration(16)."""

    event: int
    end: bool
    volume: int  # 0..63, the power level as -dBm0
    duration: int  # in clock units (1/8000 s) since the event's RTP timestamp

    @property
    def key(self) -> str | None:
        """The keypad key, or None for the other events RFC 4733 defines (flash, tones...)."""
        return KEYS[self.event] if self.event < len(KEYS) else None

    @property
    def duration_ms(self) -> int:
        return self.duration * 1000 // CLOCK_RATE


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload; ValueError when it is too short to be one.

    Only the first event is read: more than one per packet happens only with RFC 2198 redundancy, which
    WhatsApp does not negotiate.
    """
    if len(payload) < 4:
        raise ValueError(f"a telephone-event payload is 4 bytes, got {len(payload)}")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def build_event(event: int, *, end: bool, duration: int, volume: int = DEFAULT_VOLUME) -> bytes:
    """The payload of one telephone-event packet (the R bit is reserved and sent as 0)."""
    if not 0 <= event <= 255 or not 0 <= volume <= 63 or not 0 <= duration <= MAX_DURATION:
        raise ValueError(f"bad telephone-event fields: event={event} volume={volume} duration={duration}")
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def key_event(key: str) -> int:
    index = KEYS.find(key.upper()) if len(key) == 1 else -1
    if index < 0:
        raise ValueError(f"{key!r} is not a keypad key (one of {KEYS})")
    return index


def check_keys(keys: str) -> str:
    """The keys as sent (upper case); ValueError naming the first one a keypad does not have."""
    for key in keys:
        key_event(key)
    return keys.upper()


# ---- receiving ----------------------------------------------------------------------------------------


@dataclass
class _Pending:
    timestamp: int
    key: str
    at: float
    last_packet_at: float
    duration: int = 0  # the longest seen in this segment
    earlier: int = 0  # summed durations of earlier segments of the same long press


class KeyPressAssembler:
    """Packets in, one `KeyPress` per press out: pure, so every packet-loss case is unit-testable.

    An event is its RTP timestamp. Packets of a timestamp already reported (the end's retransmissions, a
    start packet arriving late) are dropped. A press whose end packets were all lost is reported when a
    packet of another event arrives, or by `expire` once nothing was heard of it for `timeout_s`; its
    duration is then the longest one seen. A press longer than the 16-bit duration field allows continues
    in a new segment (a new timestamp, same key, right after a full one) and is reported once, summed.
    """

    def __init__(self, *, timeout_s: float = LOST_END_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._pending: _Pending | None = None
        self._done: deque[int] = deque(maxlen=_REMEMBERED)
        self.duplicates = 0
        self.ignored = 0

    @property
    def pending_since(self) -> float | None:
        """When the unfinished press last had a packet (None: nothing is pending)."""
        return None if self._pending is None else self._pending.last_packet_at

    def feed(self, event: TelephoneEvent, timestamp: int, now: float) -> list[KeyPress]:
        key = event.key
        if key is None:
            self.ignored += 1
            return []
        if timestamp in self._done:
            self.duplicates += 1
            return []
        out: list[KeyPress] = []
        pending = self._pending
        if pending is not None and pending.timestamp != timestamp:
            if pending.key == key and pending.duration >= MAX_DURATION - 160:
                # The next segment of a long press (RFC 4733 §2.5.2.1): same key, new timestamp.
                self._done.append(pending.timestamp)
                pending.earlier += pending.duration
                pending.timestamp, pending.duration = timestamp, 0
            else:
                out.append(self._finish())  # its end packets were lost
                pending = None
        if pending is None:
            pending = self._pending = _Pending(timestamp=timestamp, key=key, at=now, last_packet_at=now)
        pending.last_packet_at = now
        pending.duration = max(pending.duration, event.duration)
        if event.end:
            pending.duration = event.duration  # the end packet's duration is the final one
            out.append(self._finish())
        return out

    def expire(self, now: float) -> list[KeyPress]:
        """Report a press nothing was heard of for `timeout_s` (all its end packets lost)."""
        if self._pending is None or now - self._pending.last_packet_at < self.timeout_s:
            return []
        return [self._finish()]

    def _finish(self) -> KeyPress:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._done.append(pending.timestamp)
        total = pending.earlier + pending.duration
        return KeyPress(digit=pending.key, duration_ms=total * 1000 // CLOCK_RATE, at=pending.at)


KeyListener = Callable[[KeyPress], None]


class KeyReceiver:
    """A call's key presses as they happen: the assembler plus the timer for presses that never end.

    The timer is a loop callback, not a task, and `close` cancels it; listeners run on the event loop, in
    the RTP receive path, so they must be quick (the Call only records and hands over).
    """

    def __init__(self, *, timeout_s: float = LOST_END_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.assembler = KeyPressAssembler(timeout_s=timeout_s)
        self.listeners: list[KeyListener] = []
        self.packets = 0
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def on_event(self, event: TelephoneEvent, timestamp: int) -> None:
        if self._closed:
            return
        self.packets += 1
        self._emit(self.assembler.feed(event, timestamp, self._clock()))
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.assembler.pending_since is not None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.assembler.timeout_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._emit(self.assembler.expire(self._clock()))
        self._arm()

    def _emit(self, presses: list[KeyPress]) -> None:
        for press in presses:
            log.debug("key press %s (%d ms)", press.digit, press.duration_ms)
            for listener in list(self.listeners):
                try:
                    listener(press)
                except Exception:  # a listener must not break the RTP receive path
                    log.exception("a key press listener failed")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# ---- sending (the simulated phone) --------------------------------------------------------------------


@dataclass(frozen=True)
class TonePacket:
    """One telephone-event packet to send in place of an audio frame."""

    payload: bytes
    marker: bool
    start_pts: int  # the audio stream's timestamp (48 kHz pts) when the key went down: every packet's


@dataclass
class _Tone:
    event: int
    packets: int  # update packets, the last of them the first end packet
    final: int  # the final duration, 8 kHz units
    gap_frames: int
    done: asyncio.Future[None] | None
    sent: int = 0
    start_pts: int | None = None


class KeyTones:
    """Key presses queued by the simulated phone, played out one 20 ms frame at a time.

    Like Chrome's RTCDTMFSender (and libwebrtc, which WhatsApp's clients are built on), a tone replaces the
    audio: while a key is down, each frame slot carries an event packet instead of Opus, and the caller's
    queued speech waits. Packets go out once per frame slot (the stream's packet time), all stamped with
    the timestamp of the key going down, the first with the marker, the duration growing by 160 (20 ms at
    8 kHz) until the end packet, which is sent three times; then `gap_ms` of ordinary audio.
    """

    frame_ms = 20

    def __init__(self) -> None:
        self._queue: deque[_Tone] = deque()
        self._gap = 0
        self.payload_type = PAYLOAD_TYPE
        self.sent_packets = 0

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._gap > 0

    def press(self, keys: str, *, tone_ms: int = 100, gap_ms: int = 100) -> asyncio.Future[None]:
        """Queue `keys`; the future is done once the last key's end packets are out."""
        keys = check_keys(keys)
        if not 40 <= tone_ms <= 8000 or not 0 <= gap_ms <= 10000:
            raise ValueError("tone_ms must be 40-8000 and gap_ms 0-10000")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not keys:
            done.set_result(None)
            return done
        packets = max(1, math.ceil(tone_ms / self.frame_ms))
        gap_frames = math.ceil(gap_ms / self.frame_ms)
        for n, key in enumerate(keys):
            last = n == len(keys) - 1
            final = tone_ms * CLOCK_RATE // 1000
            self._queue.append(_Tone(key_event(key), packets, final, 0 if last else gap_frames, done if last else None))
        return done

    def tick(self, pts: int) -> TonePacket | None:
        """The packet for the frame slot at `pts`, or None when this slot carries audio."""
        if self._gap > 0:
            self._gap -= 1
            return None
        if not self._queue:
            return None
        tone = self._queue[0]
        if tone.start_pts is None:
            tone.start_pts = pts
        tone.sent += 1
        step = self.frame_ms * CLOCK_RATE // 1000
        end = tone.sent >= tone.packets
        duration = tone.final if end else min(tone.sent * step, tone.final)
        packet = TonePacket(build_event(tone.event, end=end, duration=duration), tone.sent == 1, tone.start_pts)
        if tone.sent >= tone.packets + END_RETRANSMISSIONS - 1:
            self._queue.popleft()
            self._gap = tone.gap_frames
            if tone.done is not None and not tone.done.done():
                tone.done.set_result(None)
        self.sent_packets += 1
        return packet

    def cancel(self) -> None:
        """The call ended: nobody will send the rest."""
        for tone in self._queue:
            if tone.done is not None and not tone.done.done():
                tone.done.cancel()
        self._queue.clear()
        self._gap = 0
