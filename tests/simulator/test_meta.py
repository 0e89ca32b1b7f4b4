"""Tests for the Meta simulator: it must be as strict as Meta, or it hides server bugs.

No sockets: the fake Graph API is driven through `httpx.ASGITransport`, and webhooks go to a tiny
in-process receiver that checks signatures independently of the simulator's own signing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.simulator.meta import DeliveryOptions, MetaSimulator, SimCall

APP_SECRET = "sim-app-secret"
TOKEN = "sim-access-token"
PNID = "106540000000002"
WA_ID = "15550002222"
CALLS_PATH = f"/v23.0/{PNID}/calls"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINGERPRINT = ":".join(f"{i * 7 % 256:02X}" for i in range(32))

OFFER_SDP = (
    "\r\n".join(
        [
            "v=0",
            "o=- 1760681506762 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE audio",
            "a=msid-semantic: WMS sim-stream-1",
            "a=ice-lite",
            "m=audio 3484 UDP/TLS/RTP/SAVPF 111 126",
            "c=IN IP4 203.0.113.10",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=candidate:1 1 udp 2122260223 203.0.113.10 3484 typ host generation 0 network-cost 50",
            "a=candidate:2 1 udp 2122262783 2001:db8::10 3484 typ host generation 0 network-cost 50",
            "a=ice-ufrag:SimUfrag0000AAAA",
            "a=ice-pwd:SimIcePwd0000000000000==",
            f"a=fingerprint:sha-256 {FINGERPRINT}",
            "a=setup:actpass",
            "a=mid:audio",
            "a=sendrecv",
            "a=msid:sim-stream-1 WhatsAppTrack1",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=fmtp:111 minptime=20;useinbandfec=1",
            "a=rtpmap:126 telephone-event/8000",
            "a=maxptime:20",
            "a=ptime:20",
            "a=ssrc:1047224411 cname:WhatsAppAudioStream1",
        ]
    )
    + "\r\n"
)

ANSWER_LINES = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE audio",
    "a=msid-semantic:WMS *",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2130706431 198.51.100.7 50000 typ host",
    "a=ice-ufrag:bizU",
    "a=ice-pwd:bizIcePassword0123456789",
    f"a=fingerprint:sha-256 {FINGERPRINT}",
    "a=setup:active",
    "a=mid:audio",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=20;useinbandfec=1",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:12345 cname:biz",
]


def answer_sdp(
    *, drop: tuple[str, ...] = (), replace: dict[str, str] | None = None, add: tuple[str, ...] = ()
) -> str:
    """A valid answer by hand, optionally broken: drop lines by prefix, replace whole lines, append."""
    lines = [ln for ln in ANSWER_LINES if not ln.startswith(drop)] if drop else list(ANSWER_LINES)
    lines = [(replace or {}).get(ln, ln) for ln in lines]
    return "\r\n".join([*lines, *add]) + "\r\n"


VALID_ANSWER = answer_sdp()


class FakeClock:
    """Injected wall clock, so terminate times are exact."""

    def __init__(self, now: float = 1_760_681_506.0) -> None:
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
    def call(self) -> dict[str, Any]:
        return self.payload["entry"][0]["changes"][0]["value"]["calls"][0]

    @property
    def event(self) -> str:
        return self.call["event"]


class Receiver:
    """Stand-in business server: verifies the HMAC over the raw bytes like a real one must."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.delay = 0.0
        self.app = Starlette(routes=[Route("/webhook", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-hub-signature-256")
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = header is not None and hmac.compare_digest(header, expected)
        self.received.append(Received(body, header, ok))
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response(status_code=200 if ok else 403)

    def events(self, call_id: str | None = None) -> list[str]:
        return [r.event for r in self.received if call_id is None or r.call["id"] == call_id]

    async def wait_for(self, event: str, call_id: str, within: float = 2.0) -> Received:
        async with asyncio.timeout(within):
            while True:
                for r in self.received:
                    if r.event == event and r.call["id"] == call_id:
                        return r
                await asyncio.sleep(0.005)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_sim(receiver: Receiver, clock: FakeClock) -> AsyncIterator[Callable[..., MetaSimulator]]:
    sims: list[MetaSimulator] = []

    def make(**kwargs: Any) -> MetaSimulator:
        options: dict[str, Any] = {
            "webhook_url": "http://business.test/webhook",
            "app_secret": APP_SECRET,
            "access_token": TOKEN,
            "clock": clock,
            "webhook_transport": httpx.ASGITransport(app=receiver.app),
        }
        options.update(kwargs)
        sim = MetaSimulator(**options)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.aclose()


@pytest.fixture
async def sim(make_sim: Callable[..., MetaSimulator]) -> MetaSimulator:
    return make_sim()


@pytest.fixture
async def graph(sim: MetaSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="https://graph.test"
    ) as client:
        yield client


def body_for(action: str, call_id: str, sdp: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messaging_product": "whatsapp", "call_id": call_id, "action": action}
    if sdp is not None:
        body["session"] = {"sdp_type": "answer", "sdp": sdp}
    body.update(extra)
    return body


async def post(client: httpx.AsyncClient, body: Any, *, path: str = CALLS_PATH, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", AUTH)
    if isinstance(body, (bytes, str)):
        return await client.post(path, content=body, headers=headers)
    return await client.post(path, json=body, headers=headers)


def assert_graph_error(resp: httpx.Response, status: int, code: int, details: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert error["fbtrace_id"]
    assert error["message"]
    if details is not None:
        assert details in error["error_data"]["details"]
        assert error["error_data"]["messaging_product"] == "whatsapp"


async def place(sim: MetaSimulator, **kw: Any) -> SimCall:
    return await sim.place_user_call(wa_id=WA_ID, offer_sdp=OFFER_SDP, **kw)


# ---- webhook delivery -----------------------------------------------------------------------


async def test_connect_webhook_is_signed_over_exact_bytes(
    sim: MetaSimulator, receiver: Receiver, clock: FakeClock
) -> None:
    call = await place(sim, name="Ána Ëxample", cta_payload="campaign-42")

    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.signature_ok
    assert got.signature is not None and got.signature.startswith("sha256=")
    # Non-ASCII escaped as \uXXXX with compact separators: the bytes Meta signs.
    assert b"\\u00c1na \\u00cbxample" in got.body
    assert got.body == json.dumps(got.payload, ensure_ascii=True, separators=(",", ":")).encode()

    payload = got.payload
    assert payload["object"] == "whatsapp_business_account"
    entry = payload["entry"][0]
    assert entry["id"] == "102290000000001"
    change = entry["changes"][0]
    assert change["field"] == "calls"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {"display_phone_number": "15550001111", "phone_number_id": PNID}
    assert value["contacts"] == [{"profile": {"name": "Ána Ëxample"}, "wa_id": WA_ID}]
    assert value["calls"] == [
        {
            "id": call.id,
            "from": WA_ID,
            "to": "15550001111",
            "event": "connect",
            "timestamp": str(int(clock.now)),
            "direction": "USER_INITIATED",
            "session": {"sdp_type": "offer", "sdp": OFFER_SDP},
            "cta_payload": "campaign-42",
        }
    ]
    assert call.id.startswith("wacid.") and len(call.id) > 40
    assert call.state == "OFFERED" and sim.calls[call.id] is call
    assert [d.status_code for d in sim.deliveries] == [200]


async def test_connect_without_cta_payload_omits_it(sim: MetaSimulator, receiver: Receiver) -> None:
    await place(sim)
    assert "cta_payload" not in receiver.received[0].call


async def test_deep_link_payload_rides_on_connect_and_terminate(sim: MetaSimulator, receiver: Receiver) -> None:
    call = await place(sim, deeplink_payload="summer-sale")
    connect = receiver.received[0].call
    assert connect["deeplink_payload"] == "summer-sale" and "cta_payload" not in connect
    await sim.user_hangup(call.id)
    terminate = await receiver.wait_for("terminate", call.id)
    assert terminate.call["deeplink_payload"] == "summer-sale" and "cta_payload" not in terminate.call
    with pytest.raises(ValueError, match="not both"):
        await place(sim, cta_payload="a", deeplink_payload="b")


async def test_bad_signature_mode_is_rejected_by_a_correct_receiver(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(delivery=DeliveryOptions(bad_signature=True))
    await place(sim)
    got = receiver.received[0]
    assert got.signature is not None and len(got.signature) == len("sha256=") + 64
    assert not got.signature_ok
    assert sim.deliveries[0].status_code == 403


async def test_omit_signature_mode_sends_no_header(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(delivery=DeliveryOptions(omit_signature=True))
    await place(sim)
    assert receiver.received[0].signature is None
    assert sim.deliveries[0].signature is None
    assert sim.deliveries[0].status_code == 403


async def test_duplicate_mode_delivers_identical_bytes_twice(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(delivery=DeliveryOptions(duplicate=True))
    await place(sim)
    assert len(receiver.received) == 2
    first, second = receiver.received
    assert first.body == second.body and first.signature == second.signature
    assert first.signature_ok and second.signature_ok
    assert [d.status_code for d in sim.deliveries] == [200, 200]


async def test_title_case_status_mode(make_sim: Callable[..., MetaSimulator], receiver: Receiver) -> None:
    sim = make_sim(delivery=DeliveryOptions(title_case_status=True))
    call = await place(sim)
    await sim.user_hangup(call.id)
    assert receiver.received[-1].call["status"] == "Completed"
    assert call.end_status == "COMPLETED"


async def test_delivery_options_can_change_between_webhooks(sim: MetaSimulator, receiver: Receiver) -> None:
    call = await place(sim)
    sim.delivery.omit_signature = True
    await sim.user_hangup(call.id)
    assert receiver.received[0].signature is not None
    assert receiver.received[1].signature is None


async def test_send_webhook_accepts_hand_built_payload(sim: MetaSimulator, receiver: Receiver) -> None:
    """Terminate-before-connect and other orderings are built from the public builders."""
    call = SimCall(id="wacid.HANDMADE", wa_id=WA_ID, direction="USER_INITIATED", offer_sdp=OFFER_SDP)
    payload = sim.terminate_payload(call, status="FAILED", errors=[{"code": 138021, "message": "x"}])
    resp = await sim.send_webhook(payload)
    assert resp.status_code == 200
    assert receiver.received[0].payload == payload


# ---- Graph API: auth, path, envelope ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_auth_missing_or_wrong_is_401_code_190(
    sim: MetaSimulator, graph: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER), headers=headers)
    assert_graph_error(resp, 401, 190)
    assert "error_data" not in resp.json()["error"]
    assert call.state == "OFFERED"
    assert sim.requests[-1].status == 401 and sim.requests[-1].error_code == 190


async def test_fbtrace_id_is_fresh_per_error(graph: httpx.AsyncClient) -> None:
    first = await post(graph, body_for("accept", "wacid.nope", VALID_ANSWER), headers={})
    second = await post(graph, body_for("accept", "wacid.nope", VALID_ANSWER), headers={})
    assert first.json()["error"]["fbtrace_id"] != second.json()["error"]["fbtrace_id"]


@pytest.mark.parametrize("version", ["v16.0", "v9.0", "23.0", "v23", "V23.0", "vX.0"])
async def test_bad_version_is_400_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, version: str
) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER), path=f"/{version}/{PNID}/calls")
    assert_graph_error(resp, 400, 100, "version")
    assert call.state == "OFFERED"


async def test_minimum_version_v17_is_accepted(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER), path=f"/v17.0/{PNID}/calls")
    assert resp.status_code == 200


async def test_wrong_phone_number_id_is_400_code_100(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER), path="/v23.0/999/calls")
    assert_graph_error(resp, 400, 100, "Invalid phone number id")
    assert call.state == "OFFERED"


@pytest.mark.parametrize(
    "body",
    [
        {"call_id": "x", "action": "accept"},
        {"messaging_product": "WhatsApp", "call_id": "x", "action": "accept"},
        {"messaging_product": "sms", "call_id": "x", "action": "accept"},
        b"not json",
        b"[1, 2]",
    ],
)
async def test_bad_envelope_is_code_100(graph: httpx.AsyncClient, body: Any) -> None:
    resp = await post(graph, body)
    assert_graph_error(resp, 400, 100)


@pytest.mark.parametrize("action", ["ACCEPT", "Pre_Accept", "hangup", "", 7, None])
async def test_unknown_or_wrong_case_action_is_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, action: Any
) -> None:
    call = await place(sim)
    body = body_for("accept", call.id, VALID_ANSWER)
    body["action"] = action
    assert_graph_error(await post(graph, body), 400, 100, "action")
    assert call.state == "OFFERED"


async def test_missing_action_without_to_is_code_100(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    body = body_for("accept", call.id, VALID_ANSWER)
    del body["action"]
    assert_graph_error(await post(graph, body), 400, 100, "action is required")


async def test_missing_action_with_to_is_treated_as_connect(
    graph: httpx.AsyncClient, sim: MetaSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"messaging_product": "whatsapp", "to": WA_ID, "session": {"sdp_type": "offer", "sdp": OFFER_SDP}}
    with caplog.at_level(logging.WARNING, logger="agent.simulator.graph_api"):
        resp = await post(graph, body)
    # Meta's own (ICE-lite) offer is not a valid business offer: the refusal proves the request
    # went down the connect path. Business-initiated calls are tested in test_meta_bic.py.
    assert_graph_error(resp, 400, 100, "ice-lite in offer")
    assert any("treating it as connect" in r.getMessage() for r in caplog.records)
    assert sim.requests[-1].action == "connect"


async def test_other_endpoints_answer_with_a_graph_error(graph: httpx.AsyncClient) -> None:
    resp = await graph.post(f"/v23.0/{PNID}/settings", json={"messaging_product": "whatsapp"}, headers=AUTH)
    assert_graph_error(resp, 400, 100, "Unsupported")
    resp = await graph.get(CALLS_PATH, headers=AUTH)
    assert_graph_error(resp, 400, 100, "Unsupported GET")
    resp = await graph.get(f"/v23.0/{PNID}/messages", headers=AUTH)
    assert_graph_error(resp, 400, 100, "Unsupported GET")


# ---- Graph API: call ids, SDP --------------------------------------------------------------------


@pytest.mark.parametrize("action", ["pre_accept", "accept", "reject", "terminate"])
async def test_unknown_call_id_is_code_100(graph: httpx.AsyncClient, action: str) -> None:
    resp = await post(graph, body_for(action, "wacid.UNKNOWN", VALID_ANSWER))
    assert_graph_error(resp, 400, 100, "Invalid call_id")


async def test_missing_call_id_is_code_100(graph: httpx.AsyncClient) -> None:
    resp = await post(graph, {"messaging_product": "whatsapp", "action": "reject"})
    assert_graph_error(resp, 400, 100, "call_id is required")


@pytest.mark.parametrize("action", ["pre_accept", "accept"])
async def test_offer_sdp_type_on_answer_actions_is_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, action: str
) -> None:
    call = await place(sim)
    body = body_for(action, call.id, VALID_ANSWER)
    body["session"]["sdp_type"] = "offer"
    assert_graph_error(await post(graph, body), 400, 100, "sdp_type")
    body["session"]["sdp_type"] = "ANSWER"
    assert_graph_error(await post(graph, body), 400, 100, "sdp_type")
    del body["session"]
    assert_graph_error(await post(graph, body), 400, 100, "session")
    assert call.state == "OFFERED" and not call.answer_ready.is_set()


async def test_missing_fingerprint_is_rejected_like_meta(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, answer_sdp(drop=("a=fingerprint",))))
    assert_graph_error(resp, 400, 100)
    assert resp.json()["error"]["error_data"]["details"] == "No fingerprint found in SDP"
    assert call.state == "OFFERED"


async def test_setup_actpass_in_answer_is_rejected(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    sdp = answer_sdp(replace={"a=setup:active": "a=setup:actpass"})
    resp = await post(graph, body_for("pre_accept", call.id, sdp))
    assert_graph_error(resp, 400, 100, "a=setup:actpass")
    assert call.state == "OFFERED" and not call.answer_ready.is_set()


@pytest.mark.parametrize(
    ("sdp", "details"),
    [
        ("o=- 1 2 IN IP4 127.0.0.1\r\n" + VALID_ANSWER, "v=0"),
        (VALID_ANSWER.replace("\r\n", "\\r\\n"), "exactly one m=audio"),
        (answer_sdp(add=("m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:audio2")), "exactly one m=audio"),
        (answer_sdp(add=("m=video 9 UDP/TLS/RTP/SAVPF 96",)), "exactly one m=audio"),
        (answer_sdp(drop=("m=",)), "exactly one m=audio"),
        (answer_sdp(replace={ANSWER_LINES[6]: "m=audio 0 UDP/TLS/RTP/SAVPF 111 126"}), "port 0"),
        (answer_sdp(replace={ANSWER_LINES[6]: "m=audio 9 RTP/SAVP 111 126"}), "UDP/TLS/RTP/SAVPF"),
        (answer_sdp(drop=("a=setup",)), "a=setup is missing"),
        (answer_sdp(replace={"a=setup:active": "a=setup:passive"}), "a=setup:passive"),
        (answer_sdp(drop=("a=ice-ufrag",)), "ice-ufrag"),
        (answer_sdp(drop=("a=ice-pwd",)), "ice-pwd"),
        (answer_sdp(replace={"a=ice-pwd:bizIcePassword0123456789": "a=ice-pwd:short"}), "ice-pwd"),
        (answer_sdp(add=("a=ice-lite",)), "ice-lite"),
        (answer_sdp(drop=("a=rtpmap:111", "a=fmtp:111")), "opus/48000"),
        (answer_sdp(replace={"a=rtpmap:111 opus/48000/2": "a=rtpmap:111 opus/16000/2"}), "opus/48000"),
        (answer_sdp(add=("a=rtpmap:112 opus/48000/2",), drop=("a=rtpmap:111",)), "opus/48000"),
        (
            answer_sdp(replace={"a=rtpmap:126 telephone-event/8000": "a=rtpmap:126 telephone-event/48000"}),
            "telephone-event/8000",
        ),
        (answer_sdp(add=("a=fingerprint:sha-512 " + ":".join(["AA"] * 64),)), "only sha-256"),
        (
            answer_sdp(replace={f"a=fingerprint:sha-256 {FINGERPRINT}": "a=fingerprint:sha-256 AB:CD"}),
            "malformed",
        ),
        (answer_sdp(replace={"a=mid:audio": "a=mid:0"}), "does not match"),
        (answer_sdp(add=("garbage line",)), "malformed line"),
    ],
)
async def test_invalid_answer_sdp_is_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, sdp: str, details: str
) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, sdp))
    assert_graph_error(resp, 400, 100, details)
    assert call.state == "OFFERED" and not call.accepted.is_set()


async def test_answer_with_lf_line_endings_is_tolerated(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER.replace("\r\n", "\n")))
    assert resp.status_code == 200


async def test_oversized_opaque_data_is_code_100(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER, biz_opaque_callback_data="x" * 513))
    assert_graph_error(resp, 400, 100, "biz_opaque_callback_data")
    assert call.state == "OFFERED"


# ---- Graph API: state machine -------------------------------------------------------------------


async def test_pre_accept_then_identical_accept(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    call = await place(sim)
    resp = await post(graph, body_for("pre_accept", call.id, VALID_ANSWER, to=WA_ID))
    assert resp.status_code == 200
    assert resp.json() == {"messaging_product": "whatsapp", "success": True}
    assert call.state == "PRE_ACCEPTED"
    assert call.answer_ready.is_set() and not call.accepted.is_set()
    assert call.answer_sdp == VALID_ANSWER

    clock.now += 3
    resp = await post(graph, body_for("accept", call.id, VALID_ANSWER, to=WA_ID))
    assert resp.status_code == 200
    assert call.state == "ACTIVE" and call.accepted.is_set()
    assert call.start_time == int(clock.now)
    assert call.actions == ["pre_accept", "accept"]
    record = sim.requests[-1]
    assert (record.action, record.status, record.error_code, record.call_id) == ("accept", 200, None, call.id)
    assert record.body is not None and record.body["to"] == WA_ID


async def test_accept_sdp_differing_from_pre_accept_is_400(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    call = await place(sim)
    assert (await post(graph, body_for("pre_accept", call.id, VALID_ANSWER))).status_code == 200
    other = answer_sdp(replace={"a=ssrc:12345 cname:biz": "a=ssrc:54321 cname:biz"})
    resp = await post(graph, body_for("accept", call.id, other))
    assert_graph_error(resp, 400, 100, "SDP in accept differs from pre_accept")
    assert call.state == "PRE_ACCEPTED" and not call.accepted.is_set()
    assert call.answer_sdp == VALID_ANSWER


async def test_direct_accept_without_pre_accept(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    call = await place(sim)
    assert (await post(graph, body_for("accept", call.id, VALID_ANSWER))).status_code == 200
    assert call.state == "ACTIVE" and call.answer_ready.is_set() and call.accepted.is_set()


@pytest.mark.parametrize(
    ("setup", "action", "details"),
    [
        ([], "terminate", "has not been accepted"),
        (["pre_accept"], "terminate", "has not been accepted"),
        (["pre_accept"], "pre_accept", "PRE_ACCEPTED"),
        (["accept"], "accept", "already in progress"),
        (["accept"], "pre_accept", "already in progress"),
        (["accept"], "reject", "already in progress"),
        (["accept", "terminate"], "accept", "already ended"),
        (["accept", "terminate"], "terminate", "already ended"),
        (["reject"], "accept", "already ended"),
        (["reject"], "reject", "already ended"),
    ],
)
async def test_invalid_transitions_are_400(
    sim: MetaSimulator, graph: httpx.AsyncClient, setup: list[str], action: str, details: str
) -> None:
    call = await place(sim)
    for step in setup:
        assert (await post(graph, body_for(step, call.id, VALID_ANSWER))).status_code == 200
    state_before = call.state
    resp = await post(graph, body_for(action, call.id, VALID_ANSWER))
    assert_graph_error(resp, 400, 100, details)
    assert call.state == state_before
    assert call.actions == [*setup, action]


async def test_reject_sends_completed_terminate_without_times(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    call = await place(sim, cta_payload="cart-8812")
    clock.now += 4
    resp = await post(graph, body_for("reject", call.id))
    assert resp.status_code == 200
    assert call.state == "ENDED" and call.ended.is_set() and call.end_status == "COMPLETED"
    got = await receiver.wait_for("terminate", call.id)
    assert got.signature_ok
    assert got.call == {
        "id": call.id,
        "from": WA_ID,
        "to": "15550001111",
        "event": "terminate",
        "direction": "USER_INITIATED",
        "timestamp": str(int(clock.now)),
        "status": "COMPLETED",
        "cta_payload": "cart-8812",
    }
    assert "errors" not in got.payload["entry"][0]["changes"][0]["value"]


async def test_terminate_sends_completed_terminate_with_times(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    call = await place(sim)
    clock.now = 1_760_681_513
    body = body_for("accept", call.id, VALID_ANSWER, biz_opaque_callback_data="session-7f3a")
    assert (await post(graph, body)).status_code == 200
    clock.now = 1_760_681_633.9
    assert (await post(graph, body_for("terminate", call.id))).status_code == 200
    assert call.state == "ENDED" and call.end_status == "COMPLETED"
    assert (call.start_time, call.end_time) == (1_760_681_513, 1_760_681_633)

    got = await receiver.wait_for("terminate", call.id)
    value = got.payload["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana Example"}, "wa_id": WA_ID}]
    assert got.call["status"] == "COMPLETED"
    assert got.call["start_time"] == "1760681513"
    assert got.call["end_time"] == "1760681633"
    assert got.call["timestamp"] == "1760681633"
    assert got.call["duration"] == 120
    assert got.call["biz_opaque_callback_data"] == "session-7f3a"
    await sim.drain_webhooks()
    assert receiver.events(call.id) == ["connect", "terminate"]


async def test_answer_timeout_sends_failed_terminate(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver, clock: FakeClock
) -> None:
    sim = make_sim(answer_timeout=0.05)
    call = await place(sim)
    clock.now += 45
    got = await receiver.wait_for("terminate", call.id)
    assert call.state == "ENDED" and call.end_status == "FAILED" and call.ended.is_set()
    assert got.call["status"] == "FAILED"
    assert "start_time" not in got.call and "duration" not in got.call
    value = got.payload["entry"][0]["changes"][0]["value"]
    assert got.call["errors"] == value["errors"]
    assert got.call["errors"][0]["code"] and got.call["errors"][0]["message"]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://g") as client:
        resp = await post(client, body_for("accept", call.id, VALID_ANSWER))
    assert_graph_error(resp, 400, 100, "already ended")


async def test_answer_timeout_also_ends_a_pre_accepted_call(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(answer_timeout=0.05)
    call = await place(sim)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://g") as client:
        assert (await post(client, body_for("pre_accept", call.id, VALID_ANSWER))).status_code == 200
    got = await receiver.wait_for("terminate", call.id)
    assert got.call["status"] == "FAILED" and call.end_status == "FAILED"


async def test_accept_cancels_the_answer_timer(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(answer_timeout=0.05)
    call = await place(sim)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://g") as client:
        assert (await post(client, body_for("accept", call.id, VALID_ANSWER))).status_code == 200
    await asyncio.sleep(0.15)
    assert call.state == "ACTIVE"
    assert receiver.events(call.id) == ["connect"]


async def test_reject_cancels_the_answer_timer(
    make_sim: Callable[..., MetaSimulator], receiver: Receiver
) -> None:
    sim = make_sim(answer_timeout=0.05)
    call = await place(sim)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://g") as client:
        assert (await post(client, body_for("reject", call.id))).status_code == 200
    await asyncio.sleep(0.15)
    assert receiver.events(call.id) == ["connect", "terminate"]
    assert call.end_status == "COMPLETED"


# ---- user side -----------------------------------------------------------------------------------


async def test_user_hangup_of_active_call(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    call = await place(sim, cta_payload="campaign-42")
    clock.now = 1000
    assert (await post(graph, body_for("accept", call.id, VALID_ANSWER))).status_code == 200
    clock.now = 1061
    await sim.user_hangup(call.id)
    assert call.state == "ENDED" and call.end_status == "COMPLETED" and call.ended.is_set()
    got = receiver.received[-1]
    assert got.signature_ok
    payload = got.payload
    assert payload["object"] == "whatsapp_business_account"
    assert payload["entry"][0]["changes"][0]["field"] == "calls"
    assert got.call == {
        "id": call.id,
        "from": WA_ID,
        "to": "15550001111",
        "event": "terminate",
        "direction": "USER_INITIATED",
        "timestamp": "1061",
        "status": "COMPLETED",
        "start_time": "1000",
        "end_time": "1061",
        "duration": 61,
        "cta_payload": "campaign-42",
    }
    # The user already left: the server's late terminate is refused, as Meta does.
    resp = await post(graph, body_for("terminate", call.id))
    assert_graph_error(resp, 400, 100, "already ended")


async def test_user_hangup_before_answer_has_no_times(sim: MetaSimulator, receiver: Receiver) -> None:
    call = await place(sim)
    await sim.user_hangup(call.id)
    got = receiver.received[-1]
    assert got.call["status"] == "COMPLETED"
    assert not {"start_time", "end_time", "duration"} & got.call.keys()
    await sim.user_hangup(call.id)  # already ended: no second webhook
    assert receiver.events(call.id) == ["connect", "terminate"]


async def test_builders_return_fresh_dicts(sim: MetaSimulator) -> None:
    call = await place(sim)
    first = sim.connect_payload(call, "Ana Example", None)
    first["entry"][0]["changes"][0]["value"]["calls"][0]["id"] = "mutated"
    assert (
        sim.connect_payload(call, "Ana Example", None)["entry"][0]["changes"][0]["value"]["calls"][0]["id"]
        == call.id
    )


# ---- lifecycle -----------------------------------------------------------------------------------


async def test_aclose_leaves_no_pending_tasks(receiver: Receiver, clock: FakeClock) -> None:
    before = asyncio.all_tasks()
    sim = MetaSimulator(
        webhook_url="http://business.test/webhook",
        app_secret=APP_SECRET,
        access_token=TOKEN,
        clock=clock,
        webhook_transport=httpx.ASGITransport(app=receiver.app),
    )
    calls = [await place(sim) for _ in range(3)]  # three 45 s answer timers pending
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="https://g") as client:
        receiver.delay = 10.0  # the reject's terminate webhook will still be in flight
        assert (await post(client, body_for("reject", calls[0].id))).status_code == 200
    await asyncio.sleep(0.02)
    assert asyncio.all_tasks() - before - {asyncio.current_task()}

    await sim.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    with pytest.raises(RuntimeError):
        await place(sim)
