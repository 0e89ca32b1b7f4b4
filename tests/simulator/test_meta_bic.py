"""Business-initiated calls in the Meta simulator: Meta's rules before ringing, then the call's life.

No sockets: the fake Graph API runs through `httpx.ASGITransport` and webhooks go to an in-process
receiver that checks signatures with `hmac` itself. The user's phone is a stub that answers with a
hand-built SDP, so no media flows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from meta_support import (
    AUTH,
    BIZ_NUMBER,
    CALLS_PATH,
    DAY,
    META_ANSWER,
    VALID_OFFER,
    WA_ID,
    FakeClock,
    Receiver,
    SimFactory,
    assert_graph_error,
    connect_body,
    dial,
    eventually,
    fast,
    graph_client,
    offer_sdp,
    stub_answer,
    wait_ended,
)

from agent.simulator.meta import (
    BIC_BLOCKED_COUNTRIES,
    Decision,
    DeliveryOptions,
    MetaRules,
    MetaSimulator,
    ScriptedPhone,
    SimCall,
    UserAnswer,
)

OTHER_USER = "15550003333"


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_sim(receiver: Receiver, clock: FakeClock) -> AsyncIterator[SimFactory]:
    factory = SimFactory(receiver, clock)
    yield factory
    await factory.aclose()


@pytest.fixture
def phone() -> ScriptedPhone:
    return ScriptedPhone(make_answer=stub_answer)


def allow(sim: MetaSimulator, *users: str, permanent: bool = False) -> None:
    """Set up Meta's permission state directly: these tests are about calls, not about granting."""
    for user in users or (WA_ID,):
        sim.permissions.grant(user, int(sim._clock()), permanent=permanent)


@pytest.fixture
async def sim(make_sim: SimFactory, phone: ScriptedPhone) -> MetaSimulator:
    sim = make_sim(phone=phone)
    allow(sim, WA_ID, OTHER_USER)
    return sim


@pytest.fixture
async def graph(sim: MetaSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with graph_client(sim) as client:
        yield client


async def place(graph: httpx.AsyncClient, sim: MetaSimulator, **kw: Any) -> SimCall:
    resp = await dial(graph, **kw)
    assert resp.status_code == 200, resp.text
    return sim.calls[resp.json()["calls"][0]["id"]]


class BlockingPhone:
    """A user who never decides; records whether Meta stopped the ringing."""

    def __init__(self) -> None:
        self.ringing = asyncio.Event()
        self.cancelled = False

    async def ring(self, call: SimCall) -> UserAnswer:
        self.ringing.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


# ---- happy path -----------------------------------------------------------------------------


async def test_bic_happy_path_event_order(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock, phone: ScriptedPhone
) -> None:
    resp = await dial(graph, biz_opaque_callback_data="outreach-991")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    call_id = body["calls"][0]["id"]
    assert body == {"messaging_product": "whatsapp", "calls": [{"id": call_id}]}
    assert call_id.startswith("wacid.")
    call = sim.calls[call_id]
    assert call.direction == "BUSINESS_INITIATED" and call.offer_sdp == VALID_OFFER
    assert (sim.requests[-1].action, sim.requests[-1].status) == ("connect", 200)

    await receiver.wait_for("status:ACCEPTED", call_id)
    assert receiver.kinds(call_id) == ["status:RINGING", "connect", "status:ACCEPTED"]
    assert all(r.signature_ok for r in receiver.received)
    assert phone.rang == [call]

    ringing, connect, accepted = receiver.of(call_id)
    assert ringing.change["field"] == "calls"
    assert ringing.value == {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BIZ_NUMBER, "phone_number_id": "106540000000002"},
        "statuses": [
            {
                "id": call_id,
                "timestamp": str(int(clock.now)),
                "type": "call",
                "status": "RINGING",
                "recipient_id": WA_ID,
                "biz_opaque_callback_data": "outreach-991",
            }
        ],
    }
    assert connect.item == {
        "id": call_id,
        "from": BIZ_NUMBER,
        "to": WA_ID,
        "event": "connect",
        "timestamp": str(int(clock.now)),
        "direction": "BUSINESS_INITIATED",
        "biz_opaque_callback_data": "outreach-991",
        "session": {"sdp_type": "answer", "sdp": META_ANSWER},
    }
    assert connect.value["contacts"] == [{"profile": {"name": "Ana Example"}, "wa_id": WA_ID}]
    assert accepted.item["status"] == "ACCEPTED" and accepted.item["type"] == "call"
    assert call.state == "ACTIVE" and call.accepted.is_set() and call.answer_ready.is_set()
    assert call.answer_sdp == META_ANSWER and call.start_time == int(clock.now)
    assert call.statuses == ["RINGING", "ACCEPTED"] and call.decision is Decision.ACCEPT

    clock.now += 95
    resp = await graph.post(CALLS_PATH, json={"messaging_product": "whatsapp", "call_id": call_id,
                                              "action": "terminate"}, headers=AUTH)
    assert resp.json() == {"messaging_product": "whatsapp", "success": True}
    terminate = await receiver.wait_for("terminate", call_id)
    assert terminate.item == {
        "id": call_id,
        "from": BIZ_NUMBER,
        "to": WA_ID,
        "event": "terminate",
        "direction": "BUSINESS_INITIATED",
        "timestamp": str(int(clock.now)),
        "status": "COMPLETED",
        "start_time": str(int(clock.now) - 95),
        "end_time": str(int(clock.now)),
        "duration": 95,
        "biz_opaque_callback_data": "outreach-991",
    }
    await sim.drain_webhooks()
    assert receiver.kinds(call_id) == ["status:RINGING", "connect", "status:ACCEPTED", "terminate"]
    assert call.actions == ["connect", "terminate"] and call.end_status == "COMPLETED"


async def test_user_hangs_up_an_accepted_bic(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    call = await place(graph, sim)
    await asyncio.wait_for(call.accepted.wait(), 2)
    clock.now += 30
    await sim.user_hangup(call.id)
    got = receiver.received[-1]
    assert got.kind == "terminate" and got.item["status"] == "COMPLETED" and got.item["duration"] == 30
    resp = await graph.post(
        CALLS_PATH, json={"messaging_product": "whatsapp", "call_id": call.id, "action": "terminate"}, headers=AUTH
    )
    assert_graph_error(resp, 400, 100, "already ended")


async def test_drain_webhooks_waits_for_the_scheduled_bic_steps(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "connect", "status:ACCEPTED"]


# ---- reject, no answer, cancel ----------------------------------------------------------------


async def test_user_rejects(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(Decision.REJECT, make_answer=stub_answer))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "connect", "status:REJECTED", "terminate"]
    terminate = receiver.of(call.id)[-1].item
    assert terminate["status"] == "COMPLETED"
    assert not {"start_time", "end_time", "duration"} & terminate.keys()
    assert call.end_status == "COMPLETED" and call.start_time is None and not call.accepted.is_set()
    assert call.decision is Decision.REJECT
    assert sim.permissions.record(WA_ID).consecutive_unanswered == 1


async def test_reject_without_media_leg_sends_no_connect(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(Decision.REJECT))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "status:REJECTED", "terminate"]


async def test_user_hangup_while_ringing_is_a_decline(make_sim: SimFactory, receiver: Receiver) -> None:
    phone = BlockingPhone()
    sim = make_sim(phone=phone)
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await asyncio.wait_for(phone.ringing.wait(), 2)
    await sim.user_hangup(call.id)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "status:REJECTED", "terminate"]
    assert phone.cancelled


async def test_no_answer_rings_out_with_failed_terminate(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(Decision.NO_ANSWER, make_answer=stub_answer), timings=fast(ring_timeout=0.2))
    allow(sim)
    loop = asyncio.get_running_loop()
    async with graph_client(sim) as graph:
        started = loop.time()
        call = await place(graph, sim)
    await receiver.wait_for("terminate", call.id)
    assert loop.time() - started >= 0.2
    assert receiver.kinds(call.id) == ["status:RINGING", "connect", "terminate"]
    got = receiver.of(call.id)[-1]
    assert got.item["status"] == "FAILED"
    assert not {"start_time", "end_time", "duration"} & got.item.keys()
    assert got.item["errors"] == got.value["errors"]
    assert got.item["errors"][0]["code"] and got.item["errors"][0]["message"]
    assert call.end_status == "FAILED" and call.decision is Decision.NO_ANSWER
    assert sim.permissions.record(WA_ID).consecutive_unanswered == 1


async def test_phone_that_never_decides_rings_out(make_sim: SimFactory, receiver: Receiver) -> None:
    phone = BlockingPhone()
    sim = make_sim(phone=phone, timings=fast(ring_timeout=0.1))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await wait_ended(call)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "terminate"]
    assert call.end_status == "FAILED" and phone.cancelled


async def test_without_any_phone_the_call_rings_out(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(timings=fast(ring_timeout=0.1))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await wait_ended(call)
    assert call.end_status == "FAILED"


async def test_pickup_later_than_the_ring_window_is_no_answer(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer, think_s=1.0), timings=fast(ring_timeout=0.1))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await wait_ended(call)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "terminate"]
    assert call.end_status == "FAILED" and not call.accepted.is_set()


async def test_per_user_phone_overrides_the_default(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer))
    sim.add_user(OTHER_USER, name="Bea Example", phone=ScriptedPhone(Decision.REJECT))
    allow(sim, WA_ID, OTHER_USER)
    async with graph_client(sim) as graph:
        first = await place(graph, sim)
        second = await place(graph, sim, to=OTHER_USER)
    await sim.drain_webhooks()
    assert first.state == "ACTIVE" and second.end_status == "COMPLETED"
    assert receiver.of(second.id)[-1].value["contacts"][0]["profile"]["name"] == "Bea Example"


async def test_business_cancels_a_ringing_call(make_sim: SimFactory, receiver: Receiver) -> None:
    phone = BlockingPhone()
    sim = make_sim(phone=phone)
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
        await asyncio.wait_for(phone.ringing.wait(), 2)
        resp = await graph.post(
            CALLS_PATH, json={"messaging_product": "whatsapp", "call_id": call.id, "action": "terminate"}, headers=AUTH
        )
        assert resp.status_code == 200
    await sim.drain_webhooks()
    assert phone.cancelled
    assert receiver.kinds(call.id) == ["status:RINGING", "terminate"]
    terminate = receiver.of(call.id)[-1].item
    assert terminate["status"] == "COMPLETED" and "start_time" not in terminate
    # UNCERTAIN choice, see MetaSimulator._finish: the user saw a missed call.
    assert sim.permissions.record(WA_ID).consecutive_unanswered == 1


async def test_phone_whose_media_leg_fails_ends_the_call_as_setup_failure(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    async def broken(offer: str) -> str:
        raise RuntimeError("no codec in common")

    sim = make_sim(phone=ScriptedPhone(make_answer=broken))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "terminate"]
    assert receiver.of(call.id)[-1].item["errors"][0]["code"] == 138019
    assert sim.permissions.record(WA_ID).consecutive_unanswered == 0


def test_accept_needs_an_answer_maker() -> None:
    with pytest.raises(ValueError, match="make_answer"):
        UserAnswer(Decision.ACCEPT)


@pytest.mark.parametrize("action", ["pre_accept", "accept", "reject"])
async def test_uic_only_actions_on_a_bic_are_400(
    sim: MetaSimulator, graph: httpx.AsyncClient, action: str
) -> None:
    call = await place(graph, sim)
    body = {
        "messaging_product": "whatsapp",
        "call_id": call.id,
        "action": action,
        "session": {"sdp_type": "answer", "sdp": META_ANSWER},
    }
    assert_graph_error(await graph.post(CALLS_PATH, json=body, headers=AUTH), 400, 100, "business-initiated")
    assert call.actions == ["connect", action]


# ---- parameters and offer SDP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sdp", "details"),
    [
        (offer_sdp(replace={"a=setup:actpass": "a=setup:active"}), "a=setup:active in an offer"),
        (offer_sdp(drop=("a=setup",)), "a=setup is missing"),
        (offer_sdp(drop=("a=fingerprint",)), "No fingerprint found in SDP"),
        (offer_sdp(add=("a=fingerprint:sha-384 " + ":".join(["AB"] * 48),)), "only sha-256"),
        (offer_sdp(add=("m=video 9 UDP/TLS/RTP/SAVPF 96",)), "exactly one m=audio"),
        (offer_sdp(replace={"m=audio 9 UDP/TLS/RTP/SAVPF 111 110 126": "m=audio 9 RTP/SAVP 111 110 126"}),
         "UDP/TLS/RTP/SAVPF"),
        (offer_sdp(replace={"a=rtpmap:111 opus/48000/2": "a=rtpmap:111 PCMU/8000"}), "opus/48000"),
        (offer_sdp(drop=("a=ice-ufrag",)), "ice-ufrag"),
        (offer_sdp(drop=("a=ice-pwd",)), "ice-pwd"),
        (offer_sdp(add=("a=ice-lite",)), "ice-lite in offer"),
        (offer_sdp(replace={"m=audio 9 UDP/TLS/RTP/SAVPF 111 110 126": "m=audio 0 UDP/TLS/RTP/SAVPF 111"}),
         "port 0"),
        ("o=- 1 2 IN IP4 127.0.0.1\r\n" + VALID_OFFER, "v=0"),
    ],
)
async def test_invalid_offer_is_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, sdp: str, details: str
) -> None:
    assert_graph_error(await dial(graph, sdp=sdp), 400, 100, details)
    assert sim.calls == {}


async def test_offer_may_list_telephone_event_48000_like_metas_sample(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    assert "a=rtpmap:110 telephone-event/48000" in VALID_OFFER
    assert (await dial(graph)).status_code == 200


@pytest.mark.parametrize(
    ("change", "details"),
    [
        ({"session": {"sdp_type": "answer", "sdp": VALID_OFFER}}, "needs 'offer'"),
        ({"session": {"sdp_type": "OFFER", "sdp": VALID_OFFER}}, "needs 'offer'"),
        ({"session": None}, "session is required"),
        ({"session": {"sdp_type": "offer", "sdp": ""}}, "session.sdp is required"),
        ({"to": None}, "to is required"),
        ({"to": "not-a-number"}, "Invalid parameter to"),
        ({"to": 15550002222}, "Invalid parameter to"),
        ({"to": None, "recipient": "US.13491208655302741918"}, "BSUID"),
        ({"biz_opaque_callback_data": "x" * 513}, "biz_opaque_callback_data"),
    ],
)
async def test_bad_connect_parameters_are_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, change: dict[str, Any], details: str
) -> None:
    body = connect_body()
    for key, value in change.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    assert_graph_error(await graph.post(CALLS_PATH, json=body, headers=AUTH), 400, 100, details)


async def test_plus_prefixed_number_and_512_char_opaque_data_are_accepted(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    call = await place(graph, sim, to="+" + WA_ID, biz_opaque_callback_data="y" * 512)
    assert call.wa_id == WA_ID
    await sim.drain_webhooks()
    assert receiver.of(call.id)[0].item["recipient_id"] == WA_ID


async def test_parameter_errors_come_before_rule_errors(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    sim.rules.calling_enabled = False
    assert_graph_error(await dial(graph, sdp=offer_sdp(drop=("a=fingerprint",))), 400, 100)


# ---- Meta's rules -----------------------------------------------------------------------------------


async def test_calling_disabled_is_138000_http_401(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    sim.rules.calling_enabled = False
    assert_graph_error(await dial(graph), 401, 138000)
    assert sim.requests[-1].error_code == 138000 and sim.calls == {}
    sim.rules.calling_enabled = True
    assert (await dial(graph)).status_code == 200


async def test_no_permission_is_138006_http_401(make_sim: SimFactory) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer))
    async with graph_client(sim) as graph:
        assert_graph_error(await dial(graph), 401, 138006, "No approved call permission")
        sim.rules.require_permission = False
        assert (await dial(graph)).status_code == 200


async def test_expired_temporary_permission_is_138006(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    clock.now += 7 * DAY - 1
    call = await place(graph, sim)
    await sim.user_hangup(call.id)
    clock.now += 1  # exactly 168 h after the grant (spec §4.6)
    assert_graph_error(await dial(graph), 401, 138006)


async def test_permanent_permission_does_not_expire(
    make_sim: SimFactory, clock: FakeClock
) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer))
    allow(sim, permanent=True)
    clock.now += 365 * DAY
    async with graph_client(sim) as graph:
        assert (await dial(graph)).status_code == 200


async def test_revoked_permission_is_138006(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    await sim.user_sets_profile_permission(WA_ID, grant=False)
    assert_graph_error(await dial(graph), 401, 138006)


async def test_second_call_to_the_same_user_is_138003(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    first = await place(graph, sim)
    assert_graph_error(await dial(graph), 400, 138003, "already ongoing")
    assert (await dial(graph, to=OTHER_USER)).status_code == 200
    await asyncio.wait_for(first.accepted.wait(), 2)
    assert_graph_error(await dial(graph), 400, 138003)
    await sim.user_hangup(first.id)
    assert (await dial(graph)).status_code == 200


async def test_ongoing_user_initiated_call_also_blocks_a_bic(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    assert_graph_error(await dial(graph), 400, 138003)
    sim.rules.one_call_per_user = False
    assert (await dial(graph)).status_code == 200


async def test_concurrency_cap_is_138002_http_429(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    assert MetaRules().max_concurrent_calls == 1000  # spec §8.3
    sim.rules.max_concurrent_calls = 2
    await place(graph, sim)
    await sim.place_user_call(wa_id="15550009999", offer_sdp="v=0\r\n")  # UICs count too
    assert_graph_error(await dial(graph, to=OTHER_USER), 429, 138002)
    sim.rules.max_concurrent_calls = None
    assert (await dial(graph, to=OTHER_USER)).status_code == 200


async def test_connected_call_cap_is_138012_and_rolls_after_24h(
    make_sim: SimFactory, clock: FakeClock
) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), rules=MetaRules())
    assert sim.rules.limits.connected_calls_per_24h == 100  # spec §4.6, since Dec 19 2025
    sim.rules.limits.connected_calls_per_24h = 2
    allow(sim, permanent=True)
    first_pickup = int(clock.now)
    async with graph_client(sim) as graph:
        for _ in range(2):
            call = await place(graph, sim)
            await asyncio.wait_for(call.accepted.wait(), 2)
            await sim.user_hangup(call.id)
            clock.now += 600
        resp = await dial(graph)
        assert_graph_error(resp, 400, 138012, str(first_pickup + DAY))
        # Rolling window: the first pickup drops out exactly 24 h later.
        clock.now = first_pickup + DAY
        assert (await dial(graph)).status_code == 200


@pytest.mark.parametrize(
    ("number", "countries"),
    [
        ("15550001111", "CA/US"),  # the spec's example number is American
        ("16135550123", "CA/US"),
        ("905321234567", "TR"),
        ("201001234567", "EG"),
        ("84912345678", "VN"),
        ("2348012345678", "NG"),
    ],
)
async def test_blocked_business_country_is_138013(make_sim: SimFactory, number: str, countries: str) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), display_phone_number=number)
    allow(sim)
    async with graph_client(sim) as graph:
        assert_graph_error(await dial(graph), 400, 138013, countries)


@pytest.mark.parametrize("number", ["18765550123", "18095550123", "12425550123", "447700900111", "5511955550000"])
async def test_other_countries_may_place_bics(make_sim: SimFactory, number: str) -> None:
    """Caribbean numbers share +1 with the US but are their own countries."""
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), display_phone_number=number)
    allow(sim)
    async with graph_client(sim) as graph:
        assert (await dial(graph)).status_code == 200


async def test_blocked_country_list_is_configurable(make_sim: SimFactory) -> None:
    assert set(BIC_BLOCKED_COUNTRIES) == {"US", "CA", "TR", "EG", "VN", "NG"}
    us = make_sim(phone=ScriptedPhone(make_answer=stub_answer), display_phone_number="15550001111",
                  rules=MetaRules(bic_blocked_countries={}))
    allow(us)
    async with graph_client(us) as graph:
        assert (await dial(graph)).status_code == 200
    uk = make_sim(phone=ScriptedPhone(make_answer=stub_answer), rules=MetaRules(bic_blocked_countries={"GB": "44"}))
    allow(uk)
    async with graph_client(uk) as graph:
        assert_graph_error(await dial(graph), 400, 138013, "GB")
    jamaica = make_sim(phone=ScriptedPhone(make_answer=stub_answer), display_phone_number="18765550123",
                       rules=MetaRules(bic_blocked_countries={**BIC_BLOCKED_COUNTRIES, "JM": "1876"}))
    allow(jamaica)
    async with graph_client(jamaica) as graph:
        assert_graph_error(await dial(graph), 400, 138013, "JM")


async def test_quality_restriction_is_138014(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    sim.rules.bic_restricted = True
    assert_graph_error(await dial(graph), 400, 138014)


async def test_accepted_bic_opens_the_customer_service_window(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    assert not sim.permissions.window_open(WA_ID, int(clock.now))
    call = await place(graph, sim)
    await asyncio.wait_for(call.accepted.wait(), 2)
    assert sim.permissions.window_open(WA_ID, int(clock.now))  # spec §8.1
    assert not sim.permissions.window_open(WA_ID, int(clock.now) + DAY)


# ---- delivery faults --------------------------------------------------------------------------------


async def test_duplicate_mode_covers_statuses_and_connect(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), delivery=DeliveryOptions(duplicate=True))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == [
        "status:RINGING", "status:RINGING", "connect", "connect", "status:ACCEPTED", "status:ACCEPTED",
    ]
    got = receiver.of(call.id)
    assert all(a.body == b.body for a, b in zip(got[::2], got[1::2], strict=True))


async def test_out_of_order_bic_connect_arrives_after_terminate(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), delivery=DeliveryOptions(out_of_order=True))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await sim.drain_webhooks()
    assert receiver.kinds(call.id) == ["status:RINGING", "status:ACCEPTED"]
    assert len(sim.held_webhooks) == 1
    await sim.user_hangup(call.id)
    assert receiver.kinds(call.id) == ["status:RINGING", "status:ACCEPTED", "terminate", "connect"]
    assert sim.held_webhooks == []


async def test_out_of_order_uic_terminate_before_connect(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(delivery=DeliveryOptions(out_of_order=True), answer_timeout=0.05)
    call = await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    assert receiver.received == []
    await receiver.wait_for("terminate", call.id)
    await eventually(lambda: len(receiver.kinds(call.id)) == 2)
    assert receiver.kinds(call.id) == ["terminate", "connect"]
    assert receiver.of(call.id)[0].item["status"] == "FAILED"


async def test_held_connect_can_be_released_on_its_own(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(delivery=DeliveryOptions(out_of_order=True))
    held = sim.connect_payload(
        SimCall(id="wacid.HELD", wa_id=WA_ID, direction="USER_INITIATED", offer_sdp="v=0\r\n"), "Ana", None
    )
    assert await sim.send_webhook(held) is None
    sim.delivery.out_of_order = False
    await sim.release_held_webhooks()
    assert receiver.kinds() == ["connect"]


async def test_stale_mode_backdates_event_times_only(
    make_sim: SimFactory, receiver: Receiver, clock: FakeClock
) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), delivery=DeliveryOptions(stale_by_s=3600))
    allow(sim)
    now = int(clock.now)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await asyncio.wait_for(call.accepted.wait(), 2)
    clock.now += 42
    await sim.user_hangup(call.id)
    await sim.drain_webhooks()
    ringing, connect, _, terminate = receiver.of(call.id)
    assert ringing.item["timestamp"] == connect.item["timestamp"] == str(now - 3600)
    assert terminate.item["start_time"] == str(now - 3600)
    assert terminate.item["end_time"] == terminate.item["timestamp"] == str(now + 42 - 3600)
    assert terminate.item["duration"] == 42
    assert (call.start_time, call.end_time) == (now, now + 42)
    assert all(r.signature_ok for r in receiver.received)  # signed after backdating


async def test_omit_bic_contacts_mode(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), delivery=DeliveryOptions(omit_bic_contacts=True))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await asyncio.wait_for(call.accepted.wait(), 2)
    await sim.user_hangup(call.id)
    uic = await sim.place_user_call(wa_id=OTHER_USER, offer_sdp="v=0\r\n")
    assert all("contacts" not in r.value for r in receiver.of(call.id))
    assert "contacts" in receiver.of(uic.id)[0].value  # UIC keeps contacts (spec §2.6 rule 3)


async def test_title_case_status_applies_to_bic_terminate(make_sim: SimFactory, receiver: Receiver) -> None:
    sim = make_sim(phone=ScriptedPhone(make_answer=stub_answer), delivery=DeliveryOptions(title_case_status=True))
    allow(sim)
    async with graph_client(sim) as graph:
        call = await place(graph, sim)
    await asyncio.wait_for(call.accepted.wait(), 2)
    await sim.user_hangup(call.id)
    assert receiver.received[-1].item["status"] == "Completed"
    assert receiver.of(call.id)[2].item["status"] == "ACCEPTED"  # call statuses stay uppercase (spec §2.6)


# ---- lifecycle --------------------------------------------------------------------------------------


async def test_aclose_leaves_no_tasks(receiver: Receiver, clock: FakeClock) -> None:
    before = asyncio.all_tasks()
    factory = SimFactory(receiver, clock)
    blocking = BlockingPhone()
    sim = factory(phone=ScriptedPhone(make_answer=stub_answer))
    sim.add_user(OTHER_USER, phone=blocking)
    allow(sim, WA_ID, OTHER_USER)
    sim.permission_policy = None
    async with graph_client(sim) as graph:
        active = await place(graph, sim)
        await place(graph, sim, to=OTHER_USER)  # rings forever (30 s window)
        await asyncio.wait_for(active.accepted.wait(), 2)
        await asyncio.wait_for(blocking.ringing.wait(), 2)
    await sim.place_user_call(wa_id="15550009999", offer_sdp="v=0\r\n")  # 45 s answer timer
    assert asyncio.all_tasks() - before - {asyncio.current_task()}

    await factory.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    assert blocking.cancelled
    with pytest.raises(RuntimeError):
        await sim.user_sends_message(WA_ID, "hello?")
