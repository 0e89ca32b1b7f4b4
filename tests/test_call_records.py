"""Issue 15, call records API: filters and paging in SQL, the call detail, and /openapi.json kept to the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from starlette.routing import Mount, Route

from agent.app import create_app
from agent.runtime import Runtime
from tests.conftest import StoreOpener
from tests.records_fixture import AUTH, SDP, make_records_app
from tests.test_http_hardening import ApiRuntime, make_settings


@pytest.fixture
async def client(tmp_path: Path, open_store: StoreOpener) -> AsyncIterator[httpx.AsyncClient]:
    """The calls API over the seeded records, on SQLite and on PostgreSQL (the filters are SQL)."""
    app, _ = make_records_app(tmp_path, open_store())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        yield c


async def ids(client: httpx.AsyncClient, **params: str) -> list[str]:
    response = await client.get("/v1/calls", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["calls"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["wacid.IN2", "wacid.OUT1", "wacid.IN1"]),
        ({"direction": "BUSINESS_INITIATED"}, ["wacid.OUT1"]),
        ({"number": "+44 7700 900123"}, ["wacid.IN2", "wacid.OUT1"]),  # either side of the call
        ({"outcome": "handed_over"}, ["wacid.IN1"]),
        ({"flow": "booking"}, ["wacid.OUT1"]),
        ({"handled_by": "ana"}, ["wacid.IN1"]),
        ({"since": "2026-03-02"}, ["wacid.IN2", "wacid.OUT1"]),
        ({"until": "2026-03-01"}, ["wacid.IN1"]),  # a bare date: the whole of that day
        ({"since": "2026-03-02", "until": "2026-03-02"}, ["wacid.IN2", "wacid.OUT1"]),
        ({"since": "2026-03-02T16:00:00+01:00"}, ["wacid.IN2", "wacid.OUT1"]),  # 15:00 UTC
        ({"until": "2026-03-02T15:30:00"}, ["wacid.IN1"]),  # naive is UTC; until is exclusive
        ({"direction": "USER_INITIATED", "number": "447700900123"}, ["wacid.IN2"]),
        ({"outcome": "x' OR '1'='1"}, []),  # bound, never spliced into the SQL
    ],
)
async def test_filters(client: httpx.AsyncClient, params: dict[str, str], expected: list[str]) -> None:
    assert await ids(client, **params) == expected


async def test_offset_pages_through_with_next_offset(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        body = (await client.get("/v1/calls", params={"limit": "2", "offset": str(offset)}, headers=AUTH)).json()
        seen += [c["id"] for c in body["calls"]]
        offset = body["next_offset"]
    assert seen == ["wacid.IN2", "wacid.OUT1", "wacid.IN1"]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"direction": "inbound"}, "direction"),
        ({"number": "call-me"}, "number"),
        ({"number": "1" * 16}, "number"),
        ({"outcome": ""}, "outcome"),
        ({"flow": "x" * 201}, "flow"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"until": "9999-12-31"}, "until"),  # the day after does not exist
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),  # before year 1 in UTC
        ({"since": "2026-03-03", "until": "2026-03-01"}, "since must not be after until"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "1e3"}, "offset"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_filters_are_400_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], names: str
) -> None:
    response = await client.get("/v1/calls", params=params, headers=AUTH)
    assert response.status_code == 400
    assert names in response.json()["error"]


async def test_detail_has_record_events_transcript_slots_turns_and_cost(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/calls/wacid.IN1", headers=AUTH)
    assert response.status_code == 200
    call = response.json()
    assert (call["cost"], call["currency"], call["flow"], call["handled_by"]) == ("0.0123", "USD", "demo", "ana")
    assert call["slots"] == {"order": "A-17"}
    assert [(t["who"], t["text"], t["at_s"]) for t in call["transcript"]] == [
        ("bot", "Hola", 2.1),
        ("caller", "Quiero hablar con alguien", 5.75),
    ]
    assert call["answered_at"] == "2026-03-01T09:00:02+00:00"
    [turn] = call["turns"]
    assert (turn["n"], turn["transcript_ready_ms"], turn["first_audio_sent_ms"]) == (1, 210.0, 720.0)
    [event] = call["events"]  # the turn is in `turns`, not twice
    assert event["event"] == "connect"
    assert event["received_at"] == "2026-03-01T09:00:00.300000+00:00"
    assert event["payload"]["session"]["sdp"] == f"[sdp omitted, {len(SDP)} characters]"
    assert "secret-ice-password" not in response.text
    assert call["events_truncated"] is False


async def test_detail_of_an_unknown_call_is_a_generic_404(client: httpx.AsyncClient) -> None:
    for call_id in ("wacid.NOPE", "x" * 500, "' OR 1=1 --"):
        response = await client.get(f"/v1/calls/{call_id}", headers=AUTH)
        assert response.status_code == 404
        assert response.json() == {"error": "no such call"}


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/calls/wacid.IN1", "/v1/calls?direction=USER_INITIATED"])
async def test_records_need_the_bearer_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401


# ---- the OpenAPI document matches the routes ----------------------------------------------------------


def route_operations(app: Any) -> set[tuple[str, str]]:
    """(path, method) for every route except the console's, with HEAD (Starlette's GET twin) left out."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route) or route.path.startswith("/console"):
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((route.path, method.lower()))
    return found


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("with_metrics", [False, True], ids=["no-metrics", "metrics"])
async def test_openapi_lists_exactly_the_apps_routes(tmp_path: Path, with_metrics: bool) -> None:
    runtime: Any = ApiRuntime(settings=make_settings(tmp_path))
    runtime.handover = None
    if with_metrics:
        runtime.metrics = SimpleNamespace(webhook_acknowledged=lambda s: None)
    app = create_app(cast(Runtime, runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        response = await c.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document_operations(document) == route_operations(app)
    assert (("/metrics", "get") in document_operations(document)) is with_metrics
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["responses"], operation["operationId"]
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "WACALL_API_TOKEN",
    }


def test_a_finished_calls_transcript_has_seconds_from_the_calls_start() -> None:
    """What `_forget` and the checkpoint store: each line with `at_s`, on the call's own clock."""
    from agent.call import Call, CallServices
    from agent.dialogue.flow import load_flow
    from agent.turn_record import TranscriptEntry

    now = [100.0]
    services = CallServices(graph=Any, transcriber=Any, synthesizer=Any)  # type: ignore[arg-type]
    call = Call(call_id="wacid.T", services=services, flow=load_flow("prompts/demo.yaml"), clock=lambda: now[0])
    call.conversation = cast(
        Any,
        SimpleNamespace(
            transcript=[TranscriptEntry("bot", "Hola", 101.234), TranscriptEntry("caller", "Hi", 104.5)],
            turns=[],
            policy=None,
        ),
    )
    assert call.summary()["transcript"] == [
        {"who": "bot", "text": "Hola", "at_s": 1.23},
        {"who": "caller", "text": "Hi", "at_s": 4.5},
    ]


async def test_the_detail_says_whether_a_call_has_a_recording(client: httpx.AsyncClient) -> None:
    with_recording = (await client.get("/v1/calls/wacid.IN1", headers=AUTH)).json()["recording"]
    assert with_recording["download"] == "/v1/calls/wacid.IN1/recording"
    assert with_recording["duration_s"] == 238.0 and with_recording["in_progress"] is False
    assert "path" not in with_recording  # where files live on the server is not the API's business
    assert (await client.get("/v1/calls/wacid.OUT1", headers=AUTH)).json()["recording"] is None


async def test_a_recording_is_downloaded_then_deleted_with_the_token_only(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    from tests.records_fixture import OGG_BYTES

    url = "/v1/calls/wacid.IN1/recording"
    assert (await client.get(url)).status_code == 401
    assert (await client.delete(url)).status_code == 401
    response = await client.get(url, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/ogg"
    assert response.content == OGG_BYTES
    assert (await client.delete(url, headers=AUTH)).status_code == 204
    assert not any((tmp_path / "recordings").iterdir())  # the file went with the reference
    assert (await client.get(url, headers=AUTH)).status_code == 404
    assert (await client.delete(url, headers=AUTH)).status_code == 404
    assert (await client.get("/v1/calls/wacid.IN1", headers=AUTH)).json()["recording"] is None
