"""Issue 19, call context in the records API: the payload on each call, `?payload=` and per-campaign counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.records_fixture import AUTH, make_records_app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app, store = make_records_app(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        yield c
    store.close()


async def test_calls_carry_their_payload_and_filter_on_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/calls", params={"payload": "spring-promo"}, headers=AUTH)
    assert response.status_code == 200
    [call] = response.json()["calls"]
    assert (call["id"], call["payload"], call["payload_source"]) == ("wacid.IN1", "spring-promo", "button")
    detail = (await client.get("/v1/calls/wacid.IN2", headers=AUTH)).json()
    assert (detail["payload"], detail["payload_source"]) == ("poster-7", "link")
    out = (await client.get("/v1/calls/wacid.OUT1", headers=AUTH)).json()
    assert (out["payload"], out["payload_source"]) == (None, None)


@pytest.mark.parametrize("payload", ["", "x" * 513])
async def test_bad_payload_filter_is_400(client: httpx.AsyncClient, payload: str) -> None:
    response = await client.get("/v1/calls", params={"payload": payload}, headers=AUTH)
    assert response.status_code == 400
    assert "payload" in response.json()["error"]


async def test_campaign_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/calls/campaigns", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "campaigns": [
            {"payload": "poster-7", "source": "link", "calls": 1, "answered": 0, "handed_over": 0},
            {"payload": "spring-promo", "source": "button", "calls": 1, "answered": 1, "handed_over": 1},
        ]
    }
    day_two = await client.get("/v1/calls/campaigns", params={"since": "2026-03-02"}, headers=AUTH)
    assert [c["payload"] for c in day_two.json()["campaigns"]] == ["poster-7"]
    bad = await client.get("/v1/calls/campaigns", params={"until": "soon"}, headers=AUTH)
    assert bad.status_code == 400 and "until" in bad.json()["error"]
    assert (await client.get("/v1/calls/campaigns")).status_code == 401
