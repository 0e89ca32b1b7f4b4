"""Tests for `MediaPeer` over real WebRTC on 127.0.0.1: ICE, DTLS, SRTP and Opus all run for real.

The far end is a phone built the way Meta's relay looks to the business (spec §7.2): ICE-lite and
controlled, offering Opus on 111 and telephone-event on 126, sha-256 fingerprint only, `setup:actpass`.
That is what `SimulatedUser.make_offer` does; it is repeated here with a bare `MediaPeer` so these tests
need no speech models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from agent.media import peer as peer_module
from agent.media.peer import MediaError, MediaPeer, limit_host_addresses
from agent.media.sdp import SdpError
from agent.media.tracks import IN_RATE, OUT_RATE, InboundAudio
from agent.simulator.phone_sdp import local_mid_answer, meta_shaped_offer

LOOPBACK = ["127.0.0.1"]
TONE_HZ = 1000.0


async def phone_offer(phone: MediaPeer) -> str:
    """The phone's offer, in Meta's shape and with Meta's ICE role (controlled, as an ICE-lite agent)."""
    transceiver = phone.pc.addTransceiver(phone.outbound, direction="sendrecv")
    ice = transceiver.sender.transport.transport
    ice._role_set = True
    ice._connection.ice_controlling = False
    return meta_shaped_offer(await phone.offer())


def ice_connection(peer: MediaPeer) -> aioice.Connection:
    return peer.pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection


@dataclass
class Heard:
    """What the phone received: 16 kHz chunks with their arrival time."""

    chunks: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def sink(self, pcm: np.ndarray, now: float) -> None:
        self.chunks.append((pcm.copy(), now))

    def audio(self) -> np.ndarray:
        return np.concatenate([c for c, _ in self.chunks]) if self.chunks else np.zeros(0, np.int16)

    def first_loud_at(self, threshold: float = 1000.0) -> float | None:
        for pcm, t in self.chunks:
            if np.sqrt(np.mean(np.square(pcm.astype(np.float64)))) > threshold:
                return t
        return None


@dataclass
class Call:
    bot: MediaPeer
    phone: MediaPeer
    offer: str
    answer: str


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    """A connected loopback call: phone offers like Meta, the bot answers, both reach `connected`."""
    phone = MediaPeer(hosts=LOOPBACK, label="phone")
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    try:
        offer = await phone_offer(phone)
        answer = await bot.answer(offer)
        mid = phone.pc.getTransceivers()[0].mid or "0"
        await phone.apply_answer(local_mid_answer(answer, mid))
        await asyncio.gather(bot.wait_connected(10), phone.wait_connected(10))
        yield Call(bot=bot, phone=phone, offer=offer, answer=answer)
    finally:
        await bot.close()
        await phone.close()


def sdp_lines(sdp: str, prefix: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line.startswith(prefix)]


# ---- the answer ----------------------------------------------------------------------------------


async def test_answer_is_shaped_the_way_meta_accepts_it(call: Call) -> None:
    answer = call.answer
    assert answer.endswith("\r\n")
    assert "\n" not in answer.replace("\r\n", "")
    assert sdp_lines(answer, "a=setup:") == ["a=setup:active"]  # we are the DTLS client (spec §7.3)
    fingerprints = sdp_lines(answer, "a=fingerprint:")
    assert len(fingerprints) == 1 and fingerprints[0].startswith("a=fingerprint:sha-256 ")
    (m_line,) = sdp_lines(answer, "m=")
    assert m_line.startswith("m=audio ") and m_line.split()[3] == "111"
    assert "a=rtpmap:111 opus/48000/2" in sdp_lines(answer, "a=rtpmap:")
    assert sdp_lines(answer, "a=mid:") == ["a=mid:audio"]  # the offer's mid, echoed back
    assert "a=ice-lite" not in answer  # we run full ICE against Meta's ICE-lite
    candidates = sdp_lines(answer, "a=candidate:")
    assert candidates
    assert all(line.split()[4] == "127.0.0.1" for line in candidates), candidates
    assert call.bot.offer_summary is not None and call.bot.offer_summary.ice_lite


async def test_bot_is_ice_controlling_towards_an_ice_lite_offer(call: Call) -> None:
    """RFC 8445 §6.1.1 and Meta's FAQ: a full agent facing ICE-lite must control (spec §7.3)."""
    assert ice_connection(call.bot).ice_controlling is True
    assert ice_connection(call.phone).ice_controlling is False


async def test_no_stun_server_by_default(call: Call) -> None:
    """aiortc's default config reaches Google's STUN server; Meta needs none, and tests stay offline."""
    assert ice_connection(call.bot).stun_server is None
    assert ice_connection(call.bot).turn_server is None


class RecordingPeerConnection(RTCPeerConnection):
    """Records the configuration MediaPeer builds, since aiortc keeps it in a name-mangled attribute."""

    configurations: ClassVar[list[RTCConfiguration | None]] = []

    def __init__(self, configuration: RTCConfiguration | None = None) -> None:
        self.configurations.append(configuration)
        super().__init__(configuration)


@pytest.mark.parametrize(
    ("ice_servers", "expected"), [((), []), (["stun:127.0.0.1:3478"], ["stun:127.0.0.1:3478"])]
)
async def test_rtc_configuration_has_only_the_configured_ice_servers(
    monkeypatch: pytest.MonkeyPatch, ice_servers: list[str], expected: list[str]
) -> None:
    """An RTCConfiguration without an explicit `iceServers=[]` means aiortc's public STUN default."""
    RecordingPeerConnection.configurations = []
    monkeypatch.setattr(peer_module, "RTCPeerConnection", RecordingPeerConnection)
    peer = MediaPeer(ice_servers=ice_servers)
    try:
        (config,) = RecordingPeerConnection.configurations
        assert config is not None and config.iceServers is not None
        assert [server.urls for server in config.iceServers] == expected
    finally:
        await peer.close()


# ---- media ---------------------------------------------------------------------------------------


async def test_tone_from_the_bot_reaches_the_phone(call: Call) -> None:
    heard = Heard()
    track = await call.phone.remote_track(timeout=5)
    inbound = InboundAudio(track, heard.sink)
    try:
        # Media starts only when the call is accepted, as in production; the phone's mic is always on.
        call.bot.outbound.open()
        call.phone.outbound.open()
        sent_at: list[float] = []
        call.bot.outbound.on_play_start = sent_at.append
        t = np.arange(int(OUT_RATE * 0.6)) / OUT_RATE
        tone = (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        await asyncio.sleep(0.2)  # let a few silent frames through first, like a real call
        call.bot.outbound.enqueue(tone)
        await asyncio.wait_for(call.bot.outbound.wait_idle(), 5)
        deadline = time.monotonic() + 3
        while heard.first_loud_at() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the tail of the tone, still in the jitter buffer
    finally:
        await inbound.close()

    received_at = heard.first_loud_at()
    assert sent_at and received_at is not None, "the tone never arrived"
    latency = received_at - sent_at[0]
    assert 0 <= latency < 0.5, f"one-way latency {latency:.3f} s"

    # The phone gets 16 kHz mono int16, and the loud part is our 1 kHz tone, not noise.
    audio = heard.audio()
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    # 20 ms per decoded frame at 16 kHz is 320 samples (the resampler holds back a few at the start).
    assert audio.size == pytest.approx(inbound.frames * IN_RATE // 50, rel=0.05)
    loud = np.concatenate(
        [pcm for pcm, _ in heard.chunks if np.sqrt(np.mean(np.square(pcm.astype(np.float64)))) > 1000]
    )
    assert loud.size >= IN_RATE * 0.4  # most of the 0.6 s tone arrived
    spectrum = np.abs(np.fft.rfft(loud.astype(np.float64) * np.hanning(loud.size)))
    peak_hz = np.fft.rfftfreq(loud.size, 1 / IN_RATE)[int(np.argmax(spectrum))]
    assert abs(peak_hz - TONE_HZ) < 20, peak_hz


# ---- refusals ------------------------------------------------------------------------------------


async def test_garbage_offer_is_refused_before_aiortc_sees_it() -> None:
    peer = MediaPeer(hosts=LOOPBACK)

    async def must_not_be_called(*_: object) -> None:
        raise AssertionError("aiortc was given an offer that failed validation")

    peer.pc.setRemoteDescription = must_not_be_called  # type: ignore[method-assign]
    try:
        with pytest.raises(SdpError, match="v=0"):
            await peer.answer("garbage")
        assert peer.pc.remoteDescription is None
        assert peer.pc.getTransceivers() == []
        assert peer.pc.signalingState == "stable"
    finally:
        await peer.close()


async def test_offer_that_aiortc_refuses_becomes_sdp_error(call: Call) -> None:
    """aiortc raises a mix of exception types (stack notes §5); callers must see only SdpError."""
    peer = MediaPeer(hosts=LOOPBACK)
    try:
        # Well-formed enough for our checks, but aioice cannot parse the candidate's priority.
        candidate = sdp_lines(call.offer, "a=candidate:")[0]
        fields = candidate.split()
        fields[3] = "high"
        offer = call.offer.replace(candidate, " ".join(fields))
        with pytest.raises(SdpError, match="refused by the WebRTC stack"):
            await peer.answer(offer)
    finally:
        await peer.close()


# ---- host addresses ------------------------------------------------------------------------------


async def test_limit_host_addresses_is_per_connection() -> None:
    """Patching aioice for the whole process would change every other peer connection too."""
    original = aioice.ice.get_host_addresses
    limited = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    default = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        limited.addTransceiver("audio", direction="sendrecv")
        default.addTransceiver("audio", direction="sendrecv")
        limit_host_addresses(limited, LOOPBACK)
        await limited.setLocalDescription(await limited.createOffer())
        await default.setLocalDescription(await default.createOffer())

        assert aioice.ice.get_host_addresses is original
        limited_hosts = {line.split()[4] for line in sdp_lines(limited.localDescription.sdp, "a=candidate:")}
        default_hosts = {line.split()[4] for line in sdp_lines(default.localDescription.sdp, "a=candidate:")}
        assert limited_hosts == {"127.0.0.1"}
        # The other connection gathered as aioice always does: every interface except loopback.
        assert "127.0.0.1" not in default_hosts
        assert default_hosts == set(original(use_ipv4=True, use_ipv6=True))
    finally:
        await limited.close()
        await default.close()


# ---- close ---------------------------------------------------------------------------------------


async def test_close_is_idempotent_and_leaves_no_tasks() -> None:
    before = set(asyncio.all_tasks())
    phone = MediaPeer(hosts=LOOPBACK, label="phone")
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    offer = await phone_offer(phone)
    answer = await bot.answer(offer)
    await phone.apply_answer(local_mid_answer(answer, phone.pc.getTransceivers()[0].mid or "0"))
    await asyncio.gather(bot.wait_connected(10), phone.wait_connected(10))
    bot.outbound.open()
    phone.outbound.open()
    await asyncio.sleep(0.1)

    await bot.close()
    await bot.close()
    await phone.close()
    await phone.close()
    assert bot.pc.connectionState == "closed"
    assert bot.outbound.readyState == "ended"

    # aiortc's own tasks end on close; give them one turn of the loop to finish unwinding.
    for _ in range(20):
        leftover = set(asyncio.all_tasks()) - before - {asyncio.current_task()}
        if not leftover:
            break
        await asyncio.sleep(0.05)
    assert leftover == set()


async def test_close_before_any_negotiation() -> None:
    """A call rejected for a bad offer closes a peer that never negotiated; nothing may hang on it."""
    peer = MediaPeer()
    await peer.close()
    await peer.close()
    assert peer.pc.connectionState == "closed"
    with pytest.raises(asyncio.CancelledError):
        await peer.remote_track(timeout=1)


async def test_wait_connected_times_out_with_media_error() -> None:
    peer = MediaPeer(hosts=LOOPBACK)
    try:
        with pytest.raises(MediaError, match="did not connect"):
            await peer.wait_connected(0.05)
    finally:
        await peer.close()
