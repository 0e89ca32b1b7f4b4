"""One aiortc peer connection per call, set up the way Meta's media servers expect.

- No STUN unless configured: aiortc's default reaches a public STUN server, and Meta needs none.
- ICE controlling towards Meta's ICE-lite peer (aiortc does this when the offer says ice-lite).
- Host addresses for ICE can be limited per connection (`media_hosts`): needed behind NAT, and for local
  runs on 127.0.0.1, which aioice skips by default. This is done on each connection's own ICE agent,
  never by patching aioice for the whole process.
- Audio is received without aiortc's fixed 80 ms prefetch (`agent.media.jitter`): the bot analyses the
  caller's audio rather than playing it, so every packet goes to the decoder as soon as it is in order.
- Audio is encoded and decoded on the event loop (`agent.media.inline_codecs`): per-frame thread hops
  cost more than the codec work and, with many calls, queue up on the GIL.
- Keypad presses (RFC 4733 telephone-event/8000 on the audio stream) are negotiated, taken out of the
  stream before the Opus decoder and reported as `KeyPress`es to `keys.listeners` (`agent.media.dtmf`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from agent.media.aiortc_dtmf import register_telephone_event, take_event_packets
from agent.media.dtmf import KeyReceiver, TelephoneEvent
from agent.media.inline_codecs import decode_audio_inline, encode_audio_inline
from agent.media.jitter import LowLatencyAudioJitterBuffer, use_low_latency_audio_buffer
from agent.media.opus_out import OpusFrameEncoder
from agent.media.sdp import (
    OfferSummary,
    SdpError,
    normalise_line_endings,
    shape_answer,
    usable_candidates,
    validate_offer,
)
from agent.media.tracks import OutboundAudioTrack

log = logging.getLogger(__name__)


class MediaError(RuntimeError):
    """The media session could not be set up or died."""


def _ice_agents(pc: RTCPeerConnection) -> list[object]:
    agents = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        agent = dtls.transport.iceGatherer._connection
        if agent not in agents:
            agents.append(agent)
    return agents


def limit_host_addresses(pc: RTCPeerConnection, hosts: Sequence[str]) -> None:
    """Gather host candidates only on `hosts`, for this connection alone.

    aioice binds every interface except loopback; we replace gathering on this connection's agent with the
    same steps over the given addresses (server-reflexive/relay gathering still applies when configured).
    """
    addresses = list(hosts)
    for agent in _ice_agents(pc):

        async def gather(agent: object = agent) -> None:
            conn = agent
            if conn._local_candidates_start:  # type: ignore[attr-defined]
                return
            conn._local_candidates_start = True  # type: ignore[attr-defined]
            for component in sorted(conn._components):  # type: ignore[attr-defined]
                conn._local_candidates += await conn.get_component_candidates(  # type: ignore[attr-defined]
                    component=component, addresses=addresses
                )
            conn._local_candidates_end = True  # type: ignore[attr-defined]

        agent.gather_candidates = gather  # type: ignore[attr-defined]


class MediaPeer:
    """A peer connection with the bot's outbound track and the caller's inbound track."""

    def __init__(
        self,
        *,
        hosts: Sequence[str] | None = None,
        ice_servers: Sequence[str] = (),
        label: str = "call",
        low_latency_receive: bool = True,
    ) -> None:
        self.label = label
        self._hosts = list(hosts) if hosts else None
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
        encode_audio_inline()
        register_telephone_event()
        self.pc = RTCPeerConnection(config)
        self.outbound = OutboundAudioTrack(encoder=OpusFrameEncoder())
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self._remote_track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.offer_summary: OfferSummary | None = None
        self._closed = False
        # The caller's keypad: the negotiated telephone-event payload type, known once the remote SDP is in.
        self.keys = KeyReceiver()
        self.key_payload_type: int | None = None
        self._audio_buffer: LowLatencyAudioJitterBuffer | None = None

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind != "audio" or self._remote_track.done():
                return
            for transceiver in self.pc.getTransceivers():
                receiver = transceiver.receiver
                if receiver.track is not track:
                    continue
                if low_latency_receive:
                    self._audio_buffer = use_low_latency_audio_buffer(receiver)
                    if self._audio_buffer is None:
                        log.warning("%s: this aiortc has no swappable jitter buffer; receiving with its own", label)
                if not decode_audio_inline(receiver):
                    log.warning("%s: this aiortc's decoder queue differs; decoding on its thread", label)
                if not take_event_packets(receiver, lambda: self.key_payload_type, self._on_key_event):
                    log.warning("%s: this aiortc's receiver differs; keypad presses are not received", label)
            self._remote_track.set_result(track)

        @self.pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = self.pc.connectionState
            log.debug("%s: connection state %s", self.label, state)
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed"):
                self.failed.set()

    def _on_key_event(self, event: TelephoneEvent, packet: RtpPacket) -> None:
        if self._audio_buffer is not None:
            self._audio_buffer.skip(packet.sequence_number)  # the audio has no gap there to wait for
        self.keys.on_event(event, packet.timestamp)

    def _prepare_gathering(self) -> None:
        if self._hosts:
            limit_host_addresses(self.pc, self._hosts)

    def _remote_families(self) -> set[int]:
        """IP versions we gather on: remote candidates of another version could never pair with ours."""
        if not self._hosts:
            return {4, 6}
        return {ipaddress.ip_address(host).version for host in self._hosts}

    async def answer(self, offer_sdp: str) -> str:
        """Apply Meta's offer and return our answer SDP, ready for pre_accept/accept."""
        offer_sdp = usable_candidates(offer_sdp, families=self._remote_families())
        self.offer_summary = validate_offer(offer_sdp)
        self.key_payload_type = self.offer_summary.telephone_event_payload_type
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=normalise_line_endings(offer_sdp), type="offer")
            )
        except Exception as exc:  # aiortc raises ValueError, AssertionError, OperationError…
            raise SdpError(f"the offer was refused by the WebRTC stack: {exc!r}") from exc
        self.pc.addTrack(self.outbound)
        self._prepare_gathering()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return shape_answer(self.pc.localDescription.sdp)

    async def offer(self) -> str:
        """Our offer, for calls we place (business-initiated) and for the simulated WhatsApp user."""
        if not self.pc.getTransceivers():
            self.pc.addTransceiver(self.outbound, direction="sendrecv")
        self._prepare_gathering()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return normalise_line_endings(self.pc.localDescription.sdp)

    async def apply_answer(self, answer_sdp: str) -> None:
        answer_sdp = usable_candidates(answer_sdp, families=self._remote_families())
        summary = validate_offer(answer_sdp, expected_type="answer")
        self.key_payload_type = summary.telephone_event_payload_type
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=normalise_line_endings(answer_sdp), type="answer")
            )
        except Exception as exc:
            raise SdpError(f"the answer was refused by the WebRTC stack: {exc!r}") from exc

    async def remote_track(self, timeout: float) -> MediaStreamTrack:
        return await asyncio.wait_for(asyncio.shield(self._remote_track), timeout)

    async def wait_connected(self, timeout: float) -> None:
        waiters = [asyncio.create_task(self.connected.wait()), asyncio.create_task(self.failed.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        if not self.connected.is_set():
            raise MediaError(f"{self.label}: media did not connect (state {self.pc.connectionState})")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.keys.close()
        self.outbound.stop()
        if not self._remote_track.done():
            self._remote_track.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
