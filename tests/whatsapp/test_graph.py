"""Graph API calls client: exact request shapes (spec §3.2) and error handling (§3.3), via MockTransport."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agent.whatsapp.graph import GraphClient, GraphError, GraphTransportError

BASE_URL = "http://127.0.0.1:8999/graph/"
VERSION = "v23.0"
PHONE_NUMBER_ID = "106540000000002"
TOKEN = "EAAG-secret-token-do-not-log"
CALL_ID = "wacid.EXAMPLE1"
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=setup:active\r\n"
CALLS_URL = "http://127.0.0.1:8999/graph/v23.0/106540000000002/calls"
SUCCESS = {"messaging_product": "whatsapp", "success": True}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and replies with a canned response."""

    def __init__(self, response: httpx.Response | None = None) -> None:
        self.response = response or httpx.Response(200, json=SUCCESS)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    @property
    def only(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.only.content)


def make_client(handler: Handler) -> GraphClient:
    return GraphClient(
        base_url=BASE_URL,
        version=VERSION,
        phone_number_id=PHONE_NUMBER_ID,
        token=TOKEN,
        transport=httpx.MockTransport(handler),
    )


async def call_with(response: httpx.Response, action: str = "pre_accept") -> None:
    client = make_client(Recorder(response))
    try:
        if action == "connect":
            await client.connect("15550002222", SDP)
        else:
            await client.pre_accept(CALL_ID, SDP)
    finally:
        await client.aclose()


def assert_common(request: httpx.Request) -> None:
    assert request.method == "POST"
    assert str(request.url) == CALLS_URL
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"


# --------------------------------------------------------------------------------------------------
# Request shapes
# --------------------------------------------------------------------------------------------------


async def test_pre_accept_request() -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        assert await client.pre_accept(CALL_ID, SDP) is None
    assert_common(rec.only)
    assert rec.body == {
        "messaging_product": "whatsapp",
        "call_id": CALL_ID,
        "action": "pre_accept",
        "session": {"sdp_type": "answer", "sdp": SDP},
    }


async def test_accept_request_without_callback_data() -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        await client.accept(CALL_ID, SDP)
    assert_common(rec.only)
    assert rec.body == {
        "messaging_product": "whatsapp",
        "call_id": CALL_ID,
        "action": "accept",
        "session": {"sdp_type": "answer", "sdp": SDP},
    }


async def test_accept_request_with_callback_data() -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        await client.accept(CALL_ID, SDP, biz_opaque_callback_data="session-7f3a")
    assert rec.body == {
        "messaging_product": "whatsapp",
        "call_id": CALL_ID,
        "action": "accept",
        "session": {"sdp_type": "answer", "sdp": SDP},
        "biz_opaque_callback_data": "session-7f3a",
    }


async def test_sdp_sent_as_plain_string_with_crlf() -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        await client.pre_accept(CALL_ID, SDP)
    assert b"\\r\\n" in rec.only.content
    assert isinstance(rec.body["session"]["sdp"], str)
    assert rec.body["session"]["sdp"] == SDP


@pytest.mark.parametrize("action", ["reject", "terminate"])
async def test_reject_and_terminate_requests(action: str) -> None:
    rec = Recorder(httpx.Response(200, json={"success": True}))
    async with make_client(rec) as client:
        await getattr(client, action)(CALL_ID)
    assert_common(rec.only)
    assert rec.body == {"messaging_product": "whatsapp", "call_id": CALL_ID, "action": action}


async def test_connect_request_returns_call_id() -> None:
    rec = Recorder(
        httpx.Response(200, json={"messaging_product": "whatsapp", "calls": [{"id": "wacid.NEW1"}]})
    )
    async with make_client(rec) as client:
        call_id = await client.connect("15550002222", SDP, biz_opaque_callback_data="outreach-991")
    assert call_id == "wacid.NEW1"
    assert_common(rec.only)
    assert rec.body == {
        "messaging_product": "whatsapp",
        "to": "15550002222",
        "action": "connect",
        "session": {"sdp_type": "offer", "sdp": SDP},
        "biz_opaque_callback_data": "outreach-991",
    }


async def test_connect_without_callback_data_omits_field() -> None:
    rec = Recorder(httpx.Response(200, json={"calls": [{"id": "wacid.NEW2"}]}))
    async with make_client(rec) as client:
        assert await client.connect("15550002222", SDP) == "wacid.NEW2"
    assert "biz_opaque_callback_data" not in rec.body


@pytest.mark.parametrize(
    "payload",
    [
        {"messaging_product": "whatsapp"},
        {"calls": []},
        {"calls": [{}]},
        {"calls": [{"id": ""}]},
        {"calls": "x"},
    ],
)
async def test_connect_without_call_id_is_an_error(payload: dict[str, Any]) -> None:
    with pytest.raises(GraphError, match="no call id") as info:
        await call_with(httpx.Response(200, json=payload), action="connect")
    assert info.value.status == 200


async def test_url_built_without_double_slashes() -> None:
    rec = Recorder()
    client = GraphClient(
        base_url="http://127.0.0.1:8999",
        version="v23.0",
        phone_number_id=PHONE_NUMBER_ID,
        token=TOKEN,
        transport=httpx.MockTransport(rec),
    )
    async with client:
        await client.terminate(CALL_ID)
    assert str(rec.only.url) == "http://127.0.0.1:8999/v23.0/106540000000002/calls"


# --------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------


async def test_long_callback_data_rejected_before_sending() -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        await client.accept(CALL_ID, SDP, biz_opaque_callback_data="x" * 512)
        with pytest.raises(ValueError, match="513"):
            await client.accept(CALL_ID, SDP, biz_opaque_callback_data="x" * 513)
        with pytest.raises(ValueError, match="biz_opaque_callback_data"):
            await client.connect("15550002222", SDP, biz_opaque_callback_data="y" * 600)
    assert len(rec.requests) == 1


@pytest.mark.parametrize("method", ["pre_accept", "accept"])
async def test_empty_arguments_rejected(method: str) -> None:
    rec = Recorder()
    async with make_client(rec) as client:
        with pytest.raises(ValueError, match="call_id"):
            await getattr(client, method)("", SDP)
        with pytest.raises(ValueError, match="sdp"):
            await getattr(client, method)(CALL_ID, "")
        with pytest.raises(ValueError, match="to"):
            await client.connect("", SDP)
    assert rec.requests == []


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


async def test_error_envelope_becomes_graph_error() -> None:
    envelope = {
        "error": {
            "message": "(#138006) No approved call permission found",
            "type": "OAuthException",
            "code": 138006,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": "No approved call permission from the recipient",
            },
            "fbtrace_id": "AbCdEfGh123",
        }
    }
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(401, json=envelope), action="connect")
    err = info.value
    assert not isinstance(err, GraphTransportError)
    assert err.status == 401
    assert err.code == 138006
    assert err.message == "(#138006) No approved call permission found"
    assert err.details == "No approved call permission from the recipient"
    assert err.fbtrace_id == "AbCdEfGh123"
    assert err.error_type == "OAuthException"
    assert str(err) == (
        "Graph API 401 (#138006): No approved call permission found — "
        "No approved call permission from the recipient"
    )


async def test_sdp_validation_error_code_100() -> None:
    envelope = {
        "error": {
            "message": "Invalid parameter",
            "code": 100,
            "error_data": {"details": "No fingerprint found in SDP"},
        }
    }
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(400, json=envelope))
    assert info.value.code == 100
    assert info.value.fbtrace_id is None
    assert str(info.value) == "Graph API 400 (#100): Invalid parameter — No fingerprint found in SDP"


async def test_error_without_details_uses_error_user_msg() -> None:
    envelope = {"error": {"message": "Call limit", "code": 138012, "error_user_msg": "Try again later"}}
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(400, json=envelope))
    assert info.value.details == "Try again later"


async def test_error_envelope_with_minimal_fields() -> None:
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(500, json={"error": {"message": "An unknown error occurred"}}))
    assert info.value.code is None
    assert str(info.value) == "Graph API 500: An unknown error occurred"


async def test_non_json_error_body() -> None:
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(502, text="<html>Bad Gateway</html>"))
    err = info.value
    assert err.status == 502
    assert err.code is None
    assert err.message == "Bad Gateway"
    assert err.details == "<html>Bad Gateway</html>"


async def test_json_error_body_without_envelope() -> None:
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(404, json=["nope"]))
    assert info.value.status == 404
    assert info.value.code is None


async def test_redirect_is_not_followed() -> None:
    with pytest.raises(GraphError) as info:
        await call_with(httpx.Response(302, headers={"location": "http://127.0.0.1:1/"}))
    assert info.value.status == 302


@pytest.mark.parametrize(
    "payload",
    [{"success": False}, {"messaging_product": "whatsapp"}, {"success": "true"}, {"success": 1}],
)
async def test_success_not_true_is_an_error(payload: dict[str, Any]) -> None:
    with pytest.raises(GraphError, match="not confirmed") as info:
        await call_with(httpx.Response(200, json=payload))
    assert info.value.status == 200


async def test_non_json_success_body_is_an_error() -> None:
    with pytest.raises(GraphError, match="not JSON"):
        await call_with(httpx.Response(200, text="OK"))


async def test_non_object_success_body_is_an_error() -> None:
    with pytest.raises(GraphError, match="not a JSON object"):
        await call_with(httpx.Response(200, json=[SUCCESS]))


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError]
)
async def test_transport_error(exc_type: type[httpx.TransportError]) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated failure", request=request)

    async with make_client(boom) as client:
        with pytest.raises(GraphTransportError) as info:
            await client.terminate(CALL_ID)
    err = info.value
    assert isinstance(err, GraphError)
    assert err.status == 0
    assert err.code is None
    assert isinstance(err.__cause__, exc_type)
    assert "simulated failure" in str(err)
    assert str(err).startswith("Graph API transport error: terminate")


async def test_requests_logged_at_debug_without_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.whatsapp.graph")
    rec = Recorder()
    async with make_client(rec) as client:
        await client.accept(CALL_ID, SDP)
    graph_records = [r for r in caplog.records if r.name == "agent.whatsapp.graph"]
    assert graph_records
    assert all(r.levelno == logging.DEBUG for r in graph_records)
    text = "\n".join(r.getMessage() for r in graph_records)
    assert "accept" in text and CALL_ID in text
    assert TOKEN not in caplog.text


def test_graph_error_is_exception() -> None:
    err = GraphError(status=429, code=138005, message="Call rate limit exceeded")
    assert str(err) == "Graph API 429 (#138005): Call rate limit exceeded"
    assert err.details is None and err.fbtrace_id is None
