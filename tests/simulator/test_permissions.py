"""Call permissions in the Meta simulator: requests, replies, GET call_permissions, window and limits.

Days and weeks pass on an injected clock; nothing sleeps longer than a few milliseconds. Webhooks
go to an in-process receiver that checks signatures with `hmac` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from meta_support import (
    AUTH,
    CALLS_PATH,
    DAY,
    MESSAGES_PATH,
    PERMISSIONS_PATH,
    WA_ID,
    FakeClock,
    Receiver,
    SimFactory,
    assert_graph_error,
    dial,
    eventually,
    graph_client,
    offer_sdp,
    permission_request_body,
    stub_answer,
)

from agent.simulator.meta import (
    Decision,
    DeliveryOptions,
    MetaSimulator,
    PermissionChoice,
    PermissionRequest,
    ScriptedPhone,
    auto_permission,
)

WEEK = 7 * DAY
# Our side's answer to a user's call: the business offer's shape with the answerer's DTLS role and
# DTMF at 8 kHz only (spec §7.3, §7.5).
BUSINESS_ANSWER = offer_sdp(
    drop=("a=rtpmap:110", "a=ice-options"),
    replace={
        "a=setup:actpass": "a=setup:active",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 110 126": "m=audio 9 UDP/TLS/RTP/SAVPF 111 126",
    },
)
UIC_ACCEPT = {"messaging_product": "whatsapp", "action": "accept", "session": {"sdp_type": "answer",
                                                                            "sdp": BUSINESS_ANSWER}}


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
async def sim(make_sim: SimFactory) -> MetaSimulator:
    return make_sim(phone=ScriptedPhone(make_answer=stub_answer))


@pytest.fixture
async def graph(sim: MetaSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with graph_client(sim) as client:
        yield client


async def request_permission(graph: httpx.AsyncClient, **kw: Any) -> httpx.Response:
    return await graph.post(MESSAGES_PATH, json=permission_request_body(**kw), headers=AUTH)


async def requested(graph: httpx.AsyncClient) -> str:
    resp = await request_permission(graph)
    assert resp.status_code == 200, resp.text
    return resp.json()["messages"][0]["id"]


async def get_permissions(graph: httpx.AsyncClient, user: str = WA_ID) -> httpx.Response:
    return await graph.get(PERMISSIONS_PATH, params={"user_wa_id": user}, headers=AUTH)


def template_body(name: str = "callback_request_v1", code: str = "en", **extra: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "name": name,
        "language": {"code": code},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
    }
    template.update(extra)
    return {"messaging_product": "whatsapp", "to": WA_ID, "type": "template", "template": template}


# ---- the user's messages and the customer-service window ----------------------------------------


async def test_user_message_webhook_opens_the_window(
    sim: MetaSimulator, receiver: Receiver, clock: FakeClock
) -> None:
    assert not sim.permissions.window_open(WA_ID, int(clock.now))
    message_id = await sim.user_sends_message(WA_ID, "Olá, can you call me?")
    got = receiver.received[-1]
    assert got.signature_ok and got.change["field"] == "messages"
    assert got.value["contacts"] == [{"profile": {"name": "Ana Example"}, "wa_id": WA_ID}]
    assert got.value["messages"] == [
        {
            "from": WA_ID,
            "id": message_id,
            "timestamp": str(int(clock.now)),
            "type": "text",
            "text": {"body": "Olá, can you call me?"},
        }
    ]
    assert message_id.startswith("wamid.")
    assert b"Ol\\u00e1" in got.body
    assert sim.permissions.window_open(WA_ID, int(clock.now) + DAY - 1)
    assert not sim.permissions.window_open(WA_ID, int(clock.now) + DAY)


async def test_free_form_request_inside_the_window(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    resp = await request_permission(graph, to="+" + WA_ID)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    message_id = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+" + WA_ID, "wa_id": WA_ID}],
        "messages": [{"id": message_id}],
    }
    await sim.drain_webhooks()
    assert receiver.kinds() == ["text", "message_status:sent", "message_status:delivered"]
    status = receiver.received[1]
    assert status.change["field"] == "messages"
    assert status.item == {"id": message_id, "status": "sent", "timestamp": status.item["timestamp"],
                           "recipient_id": WA_ID}
    assert "type" not in status.item  # only call statuses carry type "call" (spec §2.6)
    (request,) = sim.permission_requests
    assert (request.id, request.kind, request.status, request.body_text) == (
        message_id, "interactive", "sent", "Can we call you about order ON-12853?",
    )


async def test_request_body_text_is_optional(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    assert (await request_permission(graph, text=None)).status_code == 200


async def test_message_statuses_can_be_switched_off(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    sim.rules.message_status_webhooks = False
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)
    await sim.drain_webhooks()
    assert receiver.kinds() == ["text"]


async def test_window_closed_request_fails_with_131047_and_does_not_count(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    resp = await request_permission(graph)
    assert resp.status_code == 200  # the Cloud API accepts the send, then fails it by webhook
    message_id = resp.json()["messages"][0]["id"]
    await sim.drain_webhooks()
    assert receiver.kinds() == ["message_status:failed"]
    failed = receiver.received[0].item
    assert failed["id"] == message_id and failed["errors"][0]["code"] == 131047
    assert sim.permission_requests[0].status == "failed"
    with pytest.raises(LookupError):
        await sim.user_replies_to_permission(WA_ID, accept=True)

    view = (await get_permissions(graph)).json()
    assert view["actions"][0]["limits"][0]["current_usage"] == 0
    await sim.user_sends_message(WA_ID, "hi")
    assert (await request_permission(graph)).status_code == 200


async def test_window_lapses_after_24_hours(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    clock.now += DAY
    await requested(graph)
    await sim.drain_webhooks()
    assert receiver.kinds()[-1] == "message_status:failed"


async def test_a_user_call_opens_the_window_even_unanswered(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    call = await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    await sim.user_hangup(call.id)
    await requested(graph)
    await sim.drain_webhooks()
    assert receiver.kinds()[-1] == "message_status:delivered"  # spec §8.1


async def test_window_rule_can_be_switched_off(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    sim.rules.require_window = False
    await requested(graph)
    await sim.drain_webhooks()
    assert "message_status:failed" not in receiver.kinds()


# ---- request shape ----------------------------------------------------------------------------------


def _interactive(**changes: Any) -> dict[str, Any]:
    body = permission_request_body()
    body["interactive"].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (_interactive(header={"type": "text", "text": "Hi"}), "header is not supported"),
        (_interactive(footer={"text": "Bye"}), "footer is not supported"),
        (_interactive(action={"name": "voice_call"}), "action.name"),
        (_interactive(action=None), "action.name"),
        (_interactive(type="button"), "Unsupported interactive type"),
        (_interactive(body={"text": ""}), "body.text"),
        (_interactive(body={"text": 12}), "body.text"),
        (_interactive(body={"text": "x" * 1025}), "body.text"),
        ({**permission_request_body(), "recipient_type": "group"}, "recipient_type"),
        ({**permission_request_body(), "type": "text", "text": {"body": "hi"}}, "Unsupported message type"),
        ({**permission_request_body(), "interactive": None}, "interactive is required"),
        ({k: v for k, v in permission_request_body().items() if k != "to"}, "to is required"),
        ({**{k: v for k, v in permission_request_body().items() if k != "to"}, "recipient": "US.1"}, "BSUID"),
        ({**permission_request_body(), "to": "abc"}, "Invalid parameter to"),
        ({k: v for k, v in permission_request_body().items() if k != "messaging_product"}, "messaging_product"),
    ],
)
async def test_malformed_requests_are_code_100(
    sim: MetaSimulator, graph: httpx.AsyncClient, body: dict[str, Any], details: str
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    resp = await graph.post(MESSAGES_PATH, json=body, headers=AUTH)
    assert_graph_error(resp, 400, 100, details)
    assert sim.permission_requests == []


async def test_messages_endpoint_needs_the_token(graph: httpx.AsyncClient) -> None:
    resp = await graph.post(MESSAGES_PATH, json=permission_request_body(), headers={"Authorization": "Bearer x"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 190


async def test_template_variant(sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver) -> None:
    resp = await graph.post(MESSAGES_PATH, json=template_body(), headers=AUTH)
    assert_graph_error(resp, 404, 132001, "does not exist")

    sim.add_permission_template("callback_request_v1", language="en", category="UTILITY")
    assert_graph_error(await graph.post(MESSAGES_PATH, json=template_body(code="pt_BR"), headers=AUTH), 404, 132001)
    bad = template_body(components=[{"type": "button", "sub_type": "quick_reply", "index": "0"}])
    assert_graph_error(await graph.post(MESSAGES_PATH, json=bad, headers=AUTH), 400, 100, "body parameters only")

    # Templates are allowed outside the customer-service window (spec §4.1).
    resp = await graph.post(MESSAGES_PATH, json=template_body(), headers=AUTH)
    assert resp.status_code == 200, resp.text
    await sim.drain_webhooks()
    assert receiver.kinds() == ["message_status:sent", "message_status:delivered"]
    assert sim.permission_requests[-1].kind == "template"
    assert sim.permission_requests[-1].template_name == "callback_request_v1"


def test_only_marketing_or_utility_templates_can_request_permission(sim: MetaSimulator) -> None:
    with pytest.raises(ValueError, match="MARKETING or UTILITY"):
        sim.add_permission_template("otp", category="AUTHENTICATION")


# ---- request limits ---------------------------------------------------------------------------------


async def test_request_limits_are_1_per_24h_and_2_per_7_days(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    sim.add_permission_template("callback_request_v1")
    template = template_body()
    start = int(clock.now)
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)  # free-form and template count together (spec §4.6)

    clock.now = start + DAY - 1
    resp = await graph.post(MESSAGES_PATH, json=template, headers=AUTH)
    assert_graph_error(resp, 400, 138009, f"24 hours for this user; the next request is allowed at {start + DAY}")

    clock.now = start + DAY
    assert (await graph.post(MESSAGES_PATH, json=template, headers=AUTH)).status_code == 200
    clock.now = start + 3 * DAY
    resp = await graph.post(MESSAGES_PATH, json=template, headers=AUTH)
    assert_graph_error(resp, 400, 138009, f"7 days for this user; the next request is allowed at {start + WEEK}")

    clock.now = start + WEEK
    assert (await graph.post(MESSAGES_PATH, json=template, headers=AUTH)).status_code == 200
    assert [r.status for r in sim.requests if r.path == MESSAGES_PATH] == [200, 400, 200, 400, 200]


async def test_request_limits_can_be_tuned_or_switched_off(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    sim.rules.require_window = False
    sim.rules.limits.requests_per_24h = None
    sim.rules.limits.requests_per_7d = 3
    for _ in range(3):
        await requested(graph)
    assert_graph_error(await request_permission(graph), 400, 138009)
    sim.rules.limits.requests_per_7d = None
    await requested(graph)


async def test_a_connected_bic_resets_the_request_counters(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)
    await sim.user_replies_to_permission(WA_ID, accept=True)
    assert_graph_error(await request_permission(graph), 400, 138009)

    resp = await dial(graph)
    call = sim.calls[resp.json()["calls"][0]["id"]]
    await asyncio.wait_for(call.accepted.wait(), 2)
    await requested(graph)  # spec §4.6: reset by any connected call


async def test_a_connected_uic_resets_the_request_counters(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)
    call = await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    assert_graph_error(await request_permission(graph), 400, 138009)  # an unanswered call does not reset
    resp = await graph.post(CALLS_PATH, json={**UIC_ACCEPT, "call_id": call.id}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    await sim.user_hangup(call.id)
    await requested(graph)


async def test_permanent_permission_makes_requests_138017(
    sim: MetaSimulator, graph: httpx.AsyncClient
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)
    await sim.user_replies_to_permission(WA_ID, accept=True, permanent=True)
    resp = await request_permission(graph)
    assert_graph_error(resp, 400, 138017, "permanent")
    sim.rules.limits.requests_per_24h = None
    assert_graph_error(await request_permission(graph), 400, 138017)  # not 138009: checked first


async def test_bic_restriction_also_blocks_requests_138014(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    sim.rules.bic_restricted = True
    await sim.user_sends_message(WA_ID, "hi")
    assert_graph_error(await request_permission(graph), 400, 138014)


# ---- the user's reply -------------------------------------------------------------------------------


async def test_temporary_accept_reply(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    request_id = await requested(graph)
    await sim.drain_webhooks()
    clock.now += 60
    reply_id = await sim.user_replies_to_permission(WA_ID, accept=True)
    got = receiver.received[-1]
    assert got.signature_ok and got.change["field"] == "messages" and got.kind == "call_permission_reply"
    assert got.value["messages"] == [
        {
            "from": WA_ID,
            "id": reply_id,
            "timestamp": str(int(clock.now)),
            "type": "interactive",
            "context": {"from": WA_ID, "id": request_id},
            "interactive": {
                "type": "call_permission_reply",
                "call_permission_reply": {
                    "response": "accept",
                    "is_permanent": False,
                    "expiration_timestamp": str(int(clock.now) + WEEK),
                    "response_source": "user_action",
                },
            },
        }
    ]
    assert (await dial(graph)).status_code == 200
    # Older request answered: nothing left to reply to.
    with pytest.raises(LookupError):
        await sim.user_replies_to_permission(WA_ID, accept=False)


async def test_permanent_accept_and_reject_replies(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    sim.rules.require_window = False
    await requested(graph)
    await sim.user_replies_to_permission(WA_ID, accept=True, permanent=True)
    assert receiver.received[-1].item["interactive"]["call_permission_reply"] == {
        "response": "accept",
        "is_permanent": True,
        "response_source": "user_action",
    }
    await sim.user_sets_profile_permission(WA_ID, grant=False)
    reject = receiver.received[-1].item
    assert reject["interactive"]["call_permission_reply"] == {"response": "reject", "response_source": "user_action"}
    assert "context" not in reject  # profile toggle (spec §4.4)

    clock.now += 2 * WEEK
    await requested(graph)
    await sim.user_replies_to_permission(WA_ID, accept=False)
    assert receiver.received[-1].item["interactive"]["call_permission_reply"]["response"] == "reject"
    assert_graph_error(await dial(graph), 401, 138006)


async def test_reply_to_a_named_request(sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock) -> None:
    sim.rules.require_window = False
    first = await requested(graph)
    clock.now += DAY
    await requested(graph)
    with pytest.raises(LookupError):
        await sim.user_replies_to_permission(WA_ID, accept=True, request_id="wamid.UNKNOWN")
    await sim.user_replies_to_permission(WA_ID, accept=True, request_id=first)
    assert sim.permissions.status(WA_ID, int(clock.now)) == "temporary"


async def test_an_unanswered_request_goes_stale_after_7_days(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    sim.rules.require_window = False
    request_id = await requested(graph)
    clock.now += WEEK
    with pytest.raises(LookupError, match="stale"):
        await sim.user_replies_to_permission(WA_ID, accept=True, request_id=request_id)
    with pytest.raises(LookupError):
        await sim.user_replies_to_permission(WA_ID, accept=True)
    assert not sim.permissions.has_permission(WA_ID, int(clock.now))


async def test_profile_grant_without_request(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    with pytest.raises(LookupError):
        await sim.user_replies_to_permission(WA_ID, accept=True)
    await sim.user_sets_profile_permission(WA_ID, grant=True)
    message = receiver.received[-1].item
    assert "context" not in message
    assert message["interactive"]["call_permission_reply"]["is_permanent"] is True
    assert (await dial(graph)).status_code == 200


async def test_automatic_policy_answers_requests(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    seen: list[PermissionRequest] = []

    async def policy(request: PermissionRequest) -> PermissionChoice | None:
        seen.append(request)
        return PermissionChoice(accept=True) if request.wa_id == WA_ID else None

    sim = make_sim(permission_policy=policy, phone=ScriptedPhone(make_answer=stub_answer))
    sim.rules.require_window = False
    async with graph_client(sim) as graph:
        request_id = await requested(graph)
        await requested_for(graph, "15550003333")
        await sim.drain_webhooks()
        replies = [r for r in receiver.received if r.kind == "call_permission_reply"]
        assert len(replies) == 1 and replies[0].item["context"]["id"] == request_id
        assert [r.wa_id for r in seen] == [WA_ID, "15550003333"]
        assert (await dial(graph)).status_code == 200
        assert_graph_error(await dial(graph, to="15550003333"), 401, 138006)


async def requested_for(graph: httpx.AsyncClient, user: str) -> str:
    resp = await request_permission(graph, to=user)
    assert resp.status_code == 200, resp.text
    return resp.json()["messages"][0]["id"]


async def test_auto_permission_helper(make_sim: SimFactory, receiver: Receiver, clock: FakeClock) -> None:
    sim = make_sim(permission_policy=auto_permission(accept=True, permanent=True))
    sim.rules.require_window = False
    async with graph_client(sim) as graph:
        await requested(graph)
    await sim.drain_webhooks()
    assert sim.permissions.status(WA_ID, int(clock.now)) == "permanent"


async def test_callback_permission_grants_after_a_user_call(
    sim: MetaSimulator, receiver: Receiver, clock: FakeClock
) -> None:
    call = await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    await sim.user_hangup(call.id)
    assert receiver.kinds() == ["connect", "terminate"]  # off by default

    sim.rules.callback_permission = True
    call = await sim.place_user_call(wa_id=WA_ID, offer_sdp="v=0\r\n")
    await sim.user_hangup(call.id)
    assert receiver.kinds()[-1] == "call_permission_reply"
    message = receiver.received[-1].item
    assert message["context"]["id"] == call.id  # the wacid (spec §4.4)
    assert message["interactive"]["call_permission_reply"] == {
        "response": "accept",
        "is_permanent": False,
        "expiration_timestamp": str(int(clock.now) + WEEK),
        "response_source": "automatic",
    }
    assert sim.permissions.status(WA_ID, int(clock.now)) == "temporary"


# ---- expiry and the unanswered-call rule ------------------------------------------------------------


async def test_temporary_permission_expires_silently_after_7_days(
    sim: MetaSimulator, graph: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    await sim.user_sets_profile_permission(WA_ID, grant=True, permanent=False)
    sent = len(receiver.received)
    clock.now += WEEK
    assert (await get_permissions(graph)).json()["permission"] == {"status": "no_permission"}
    assert_graph_error(await dial(graph), 401, 138006)
    assert len(receiver.received) == sent  # no webhook on expiry (spec §4.4)


async def test_four_unanswered_calls_revoke_permission(
    make_sim: SimFactory, receiver: Receiver, clock: FakeClock
) -> None:
    phone = ScriptedPhone(Decision.REJECT, make_answer=stub_answer)
    sim = make_sim(phone=phone)
    await sim.user_sets_profile_permission(WA_ID, grant=True)
    async with graph_client(sim) as graph:
        for n in range(1, 5):
            if n == 3:
                phone.decision = Decision.NO_ANSWER
                sim.timings.ring_timeout = 0.05
            resp = await dial(graph)
            assert resp.status_code == 200, (n, resp.text)
            await sim.drain_webhooks()
            assert len(sim.system_messages) == (0 if n < 2 else 1)  # notice after the 2nd only
            clock.now += 60
        assert sim.system_messages[0].wa_id == WA_ID and sim.system_messages[0].consecutive_unanswered == 2

        revoke = receiver.received[-1]
        assert revoke.kind == "call_permission_reply"
        assert "context" not in revoke.item
        assert revoke.item["interactive"]["call_permission_reply"] == {
            "response": "reject",
            "response_source": "automatic",
        }
        assert receiver.received[-2].kind == "terminate"  # the revoke follows the 4th call's terminate
        assert (await get_permissions(graph)).json()["permission"]["status"] == "no_permission"
        assert_graph_error(await dial(graph), 401, 138006)


async def test_a_picked_up_call_breaks_the_unanswered_streak(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    phone = ScriptedPhone(Decision.REJECT, make_answer=stub_answer)
    sim = make_sim(phone=phone)
    await sim.user_sets_profile_permission(WA_ID, grant=True)
    async with graph_client(sim) as graph:
        for decision in [Decision.REJECT] * 3 + [Decision.ACCEPT] + [Decision.REJECT] * 3:
            phone.decision = decision
            resp = await dial(graph)
            call = sim.calls[resp.json()["calls"][0]["id"]]
            await sim.drain_webhooks()
            if decision is Decision.ACCEPT:
                await sim.user_hangup(call.id)
    assert "call_permission_reply" not in receiver.kinds()[1:]
    assert len(sim.system_messages) == 2
    assert sim.permissions.has_permission(WA_ID, int(sim._clock()))


# ---- GET call_permissions ---------------------------------------------------------------------------


async def test_get_without_permission(sim: MetaSimulator, graph: httpx.AsyncClient) -> None:
    resp = await get_permissions(graph)
    assert resp.status_code == 200
    assert resp.json() == {
        "messaging_product": "whatsapp",
        "permission": {"status": "no_permission"},
        "actions": [
            {
                "action_name": "send_call_permission_request",
                "can_perform_action": True,
                "limits": [
                    {"time_period": "PT24H", "max_allowed": 1, "current_usage": 0},
                    {"time_period": "P7D", "max_allowed": 2, "current_usage": 0},
                ],
            },
            {
                "action_name": "start_call",
                "can_perform_action": False,
                "limits": [{"time_period": "PT24H", "max_allowed": 100, "current_usage": 0}],
            },
        ],
    }
    assert (sim.requests[-1].method, sim.requests[-1].status) == ("GET", 200)


async def test_get_after_request_and_temporary_grant(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    await sim.user_sends_message(WA_ID, "hi")
    await requested(graph)
    await sim.user_replies_to_permission(WA_ID, accept=True)
    view = (await get_permissions(graph)).json()
    assert view["permission"] == {"status": "temporary", "expiration_time": int(clock.now) + WEEK}
    send, start = view["actions"]
    assert send["can_perform_action"] is False
    assert send["limits"][0] == {
        "time_period": "PT24H", "max_allowed": 1, "current_usage": 1, "limit_expiration_time": int(clock.now) + DAY,
    }
    assert send["limits"][1] == {"time_period": "P7D", "max_allowed": 2, "current_usage": 1}
    assert start["can_perform_action"] is True


async def test_get_with_permanent_permission_and_call_cap(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    sim.rules.limits.connected_calls_per_24h = 1
    await sim.user_sets_profile_permission(WA_ID, grant=True, permanent=True)
    resp = await dial(graph)
    call = sim.calls[resp.json()["calls"][0]["id"]]
    await asyncio.wait_for(call.accepted.wait(), 2)
    pickup = int(clock.now)
    await sim.user_hangup(call.id)
    view = (await get_permissions(graph)).json()
    assert view["permission"] == {"status": "permanent"}
    send, start = view["actions"]
    assert send["can_perform_action"] is False  # 138017 would follow
    assert start == {
        "action_name": "start_call",
        "can_perform_action": False,
        "limits": [
            {"time_period": "PT24H", "max_allowed": 1, "current_usage": 1, "limit_expiration_time": pickup + DAY}
        ],
    }


@pytest.mark.parametrize(
    ("params", "details"),
    [
        ({}, "user_wa_id is required"),
        ({"recipient": "US.13491208655302741918"}, "BSUID"),
        ({"user_wa_id": "not digits"}, "Invalid parameter user_wa_id"),
    ],
)
async def test_get_bad_query_is_code_100(graph: httpx.AsyncClient, params: dict[str, str], details: str) -> None:
    resp = await graph.get(PERMISSIONS_PATH, params=params, headers=AUTH)
    assert_graph_error(resp, 400, 100, details)


async def test_get_needs_token_and_version(graph: httpx.AsyncClient) -> None:
    resp = await graph.get(PERMISSIONS_PATH, params={"user_wa_id": WA_ID})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 190
    resp = await graph.get(PERMISSIONS_PATH.replace("v23.0", "v16.0"), params={"user_wa_id": WA_ID}, headers=AUTH)
    assert_graph_error(resp, 400, 100, "version")


async def test_get_rate_limit_is_613_http_429(
    sim: MetaSimulator, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(5):  # spec §4.5: 5 requests per second (Jun 2026)
        assert (await get_permissions(graph)).status_code == 200
    assert_graph_error(await get_permissions(graph), 429, 613)
    clock.now += 1
    assert (await get_permissions(graph)).status_code == 200
    sim.rules.permission_get_per_second = None
    for _ in range(10):
        assert (await get_permissions(graph)).status_code == 200


# ---- delivery faults on messages webhooks ------------------------------------------------------------


async def test_duplicate_and_stale_apply_to_messages_webhooks(
    make_sim: SimFactory, receiver: Receiver, clock: FakeClock
) -> None:
    sim = make_sim(delivery=DeliveryOptions(duplicate=True, stale_by_s=7200))
    await sim.user_sends_message(WA_ID, "hi")
    await sim.user_sets_profile_permission(WA_ID, grant=True, permanent=False)
    assert receiver.kinds() == ["text", "text", "call_permission_reply", "call_permission_reply"]
    assert receiver.received[0].body == receiver.received[1].body
    reply = receiver.received[2].item
    assert reply["timestamp"] == str(int(clock.now) - 7200)
    # A late delivery does not move the grant's expiry.
    assert reply["interactive"]["call_permission_reply"]["expiration_timestamp"] == str(int(clock.now) + WEEK)


async def test_message_status_webhooks_are_duplicated_too(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    sim = make_sim(delivery=DeliveryOptions(duplicate=True))
    sim.rules.require_window = False
    async with graph_client(sim) as graph:
        await requested(graph)
    await sim.drain_webhooks()
    assert receiver.kinds() == ["message_status:sent"] * 2 + ["message_status:delivered"] * 2


async def test_aclose_cancels_a_pending_policy_reply(receiver: Receiver, clock: FakeClock) -> None:
    before = asyncio.all_tasks()
    factory = SimFactory(receiver, clock)
    never = asyncio.Event()

    async def slow_policy(request: PermissionRequest) -> PermissionChoice | None:
        await never.wait()
        return None

    sim = factory(permission_policy=slow_policy)
    sim.rules.require_window = False
    async with graph_client(sim) as graph:
        await requested(graph)
    await eventually(lambda: len(receiver.received) == 2)
    assert asyncio.all_tasks() - before - {asyncio.current_task()}
    await factory.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()

