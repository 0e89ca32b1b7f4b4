"""Shared fakes for the business-initiated-call and permission tests of the Meta simulator.

Kept apart from the simulator so the tests judge it from the outside: the receiver checks HMACs with
`hmac` directly, and the SDPs are written by hand from the spec rather than produced by any code
under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.simulator.meta import MetaRules, MetaSimulator, MetaTimings, SimCall

APP_SECRET = "sim-app-secret"
TOKEN = "sim-access-token"
PNID = "106540000000002"
WA_ID = "15550002222"
# A UK drama-range number: the spec's example business number is American, and US numbers cannot
# place business-initiated calls (138013), so the BIC tests use one that can.
BIZ_NUMBER = "447700900111"
CALLS_PATH = f"/v23.0/{PNID}/calls"
MESSAGES_PATH = f"/v23.0/{PNID}/messages"
PERMISSIONS_PATH = f"/v23.0/{PNID}/call_permissions"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINGERPRINT = ":".join(f"{i * 11 % 256:02X}" for i in range(32))
START = 1_760_681_506.0
DAY = 24 * 3600

# A browser-style business offer, as spec §7.3 describes Meta's sample BIC offer: actpass, trickle,
# opus plus telephone-event at both clock rates.
OFFER_LINES = [
    "v=0",
    "o=- 7614219274584779017 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS biz",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2130706431 198.51.100.7 50000 typ host",
    "a=ice-ufrag:bizO",
    "a=ice-pwd:bizOfferPassword012345678",
    "a=ice-options:trickle",
    f"a=fingerprint:sha-256 {FINGERPRINT}",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:424242 cname:biz",
]


def offer_sdp(
    *, drop: tuple[str, ...] = (), replace: dict[str, str] | None = None, add: tuple[str, ...] = ()
) -> str:
    """A valid business offer by hand, optionally broken: drop lines by prefix, replace lines, append."""
    lines = [ln for ln in OFFER_LINES if not ln.startswith(drop)] if drop else list(OFFER_LINES)
    lines = [(replace or {}).get(ln, ln) for ln in lines]
    return "\r\n".join([*lines, *add]) + "\r\n"


VALID_OFFER = offer_sdp()

# Meta's answer as spec §7.3 describes it: ICE-lite, IPv4 + IPv6 host candidates on one port,
# setup:active, the business's mid echoed.
META_ANSWER = (
    "\r\n".join(
        [
            "v=0",
            "o=- 1749196895000 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=ice-lite",
            "m=audio 3482 UDP/TLS/RTP/SAVPF 111 126",
            "c=IN IP4 203.0.113.20",
            "a=candidate:1 1 udp 2122260223 203.0.113.20 3482 typ host generation 0",
            "a=candidate:2 1 udp 2122262783 2001:db8::20 3482 typ host generation 0",
            "a=ice-ufrag:MetaAnsU",
            "a=ice-pwd:MetaAnswerPassword0000000",
            f"a=fingerprint:sha-256 {FINGERPRINT}",
            "a=setup:active",
            "a=mid:0",
            "a=sendrecv",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:126 telephone-event/8000",
            "a=ssrc:1047224411 cname:WhatsAppAudioStream1",
        ]
    )
    + "\r\n"
)


async def stub_answer(offer: str) -> str:
    """Signalling-only media leg: no real media, just a valid answer for the connect webhook."""
    assert offer.startswith("v=0")
    return META_ANSWER


FAST = MetaTimings(
    ringing_after=0.01, connect_after=0.01, pickup_after=0.01, terminate_after=0.01, ring_timeout=5.0,
    permission_reply_after=0.01,
)


def fast(**overrides: Any) -> MetaTimings:
    return dataclasses.replace(FAST, **overrides)


class FakeClock:
    """Injected wall clock: rules measured in days run without sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Received:
    body: bytes
    signature: str | None
    signature_ok: bool

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def change(self) -> dict[str, Any]:
        return self.payload["entry"][0]["changes"][0]

    @property
    def value(self) -> dict[str, Any]:
        return self.change["value"]

    @property
    def item(self) -> dict[str, Any]:
        """The one call, status or message the webhook is about."""
        for key in ("calls", "statuses", "messages"):
            if key in self.value:
                return self.value[key][0]
        raise AssertionError(f"webhook without calls/statuses/messages: {self.value}")

    @property
    def kind(self) -> str:
        """connect / terminate / status:RINGING / message_status:sent / text / call_permission_reply."""
        value = self.value
        if "calls" in value:
            return value["calls"][0]["event"]
        if "statuses" in value:
            status = value["statuses"][0]
            prefix = "status" if status.get("type") == "call" else "message_status"
            return f"{prefix}:{status['status']}"
        message = value["messages"][0]
        return message["interactive"]["type"] if message["type"] == "interactive" else message["type"]


class Receiver:
    """Stand-in business server: verifies the HMAC over the raw bytes like a real one must."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.app = Starlette(routes=[Route("/webhook", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-hub-signature-256")
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = header is not None and hmac.compare_digest(header, expected)
        self.received.append(Received(body, header, ok))
        return Response(status_code=200 if ok else 403)

    def of(self, call_id: str) -> list[Received]:
        return [r for r in self.received if r.item.get("id") == call_id]

    def kinds(self, call_id: str | None = None) -> list[str]:
        return [r.kind for r in (self.received if call_id is None else self.of(call_id))]

    async def wait_for(self, kind: str, call_id: str | None = None, within: float = 2.0) -> Received:
        async with asyncio.timeout(within):
            while True:
                for r in self.received if call_id is None else self.of(call_id):
                    if r.kind == kind:
                        return r
                await asyncio.sleep(0.005)


class SimFactory:
    """Builds simulators wired to one receiver and clock, and closes them all at the end."""

    def __init__(self, receiver: Receiver, clock: FakeClock) -> None:
        self.receiver = receiver
        self.clock = clock
        self.sims: list[MetaSimulator] = []

    def __call__(self, **kwargs: Any) -> MetaSimulator:
        options: dict[str, Any] = {
            "webhook_url": "http://business.test/webhook",
            "app_secret": APP_SECRET,
            "access_token": TOKEN,
            "display_phone_number": BIZ_NUMBER,
            "clock": self.clock,
            "webhook_transport": httpx.ASGITransport(app=self.receiver.app),
            "timings": fast(),
            "rules": MetaRules(),
        }
        options.update(kwargs)
        sim = MetaSimulator(**options)
        self.sims.append(sim)
        return sim

    async def aclose(self) -> None:
        for sim in self.sims:
            await sim.aclose()


def graph_client(sim: MetaSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://graph.test")


def connect_body(to: str = WA_ID, sdp: str = VALID_OFFER, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "to": to,
        "action": "connect",
        "session": {"sdp_type": "offer", "sdp": sdp},
    }
    body.update(extra)
    return body


def permission_request_body(
    to: str = WA_ID, text: str | None = "Can we call you about order ON-12853?"
) -> dict[str, Any]:
    interactive: dict[str, Any] = {"type": "call_permission_request", "action": {"name": "call_permission_request"}}
    if text is not None:
        interactive["body"] = {"text": text}
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "interactive",
        "interactive": interactive,
    }


def assert_graph_error(resp: httpx.Response, status: int, code: int, details: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert error["type"] == "OAuthException"
    assert error["fbtrace_id"]
    assert error["message"].startswith(f"(#{code})")
    if details is not None:
        assert details in error["error_data"]["details"], error["error_data"]["details"]
        assert error["error_data"]["messaging_product"] == "whatsapp"


async def dial(client: httpx.AsyncClient, **kw: Any) -> httpx.Response:
    return await client.post(CALLS_PATH, json=connect_body(**kw), headers=AUTH)


async def wait_ended(call: SimCall, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        await call.ended.wait()


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.005)
