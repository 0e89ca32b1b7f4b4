"""Issue 15, analytics over HTTP: `GET /v1/analytics` (bearer token, like the calls API) and the console's
analytics page and JSON (the console's session), against a real SqliteStore of known calls
(tests/analytics_fixture.py). No sockets, no browser: httpx's ASGI transport."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agent.app import create_app
from agent.handover.console import Console
from agent.handover.service import HandoverService
from agent.runtime import Runtime
from agent.store.sqlite import SqliteStore
from tests.analytics_fixture import seed_analytics
from tests.handover.test_service import Clock, FakeBridge, settings
from tests.test_http_hardening import AUTH, BASE, TOKENS, ApiRuntime, make_settings

RANGE = {"since": "2026-03-01", "until": "2026-03-03"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analytics-http")
    store = SqliteStore.in_data_dir(path)
    seed_analytics(store)
    store.close()
    return path


@pytest.fixture
def store(data_dir: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.in_data_dir(data_dir)
    yield store
    store.close()


# -- GET /v1/analytics -------------------------------------------------------------------------------------


@pytest.fixture
async def api(store: SqliteStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    runtime: Any = ApiRuntime(settings=make_settings(tmp_path), store=store)  # type: ignore[arg-type]
    app = create_app(cast(Runtime, runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def test_the_api_serves_the_reports_figures(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/analytics", params=RANGE, headers=AUTH)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["since"], data["until"]) == ("2026-03-01", "2026-03-03")
    total = data["total"]
    assert (total["calls"], total["pickup_rate_inbound"], total["containment_rate"]) == (7, 0.75, 0.4)
    assert (total["handover_rate"], total["queue_abandon_rate"], total["avg_handle_s"]) == (0.4, 0.5, 120.0)
    assert (total["v2v_p50_ms"], total["v2v_p95_ms"], total["cost"]) == (600.0, 900.0, "0.0700")
    assert [d["calls"] for d in data["days"]] == [4, 3, 0]
    assert [c["country"] for c in data["cost_by_country"]] == ["GB", "ES", "BR"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "2026-03-05", "until": "2026-03-01"}, "since must not be after until"),
        ({"since": "yesterday"}, "since must be a date"),
        ({"days": "-3"}, "days must be a whole number"),
        ({"days": "0"}, "days must be from 1"),
        ({"since": "2026-03-01", "until": "2026-03-02", "days": "2"}, "at most two"),
        ({"until": "9999-12-31"}, "past the dates"),
        ({"since": "2020-01-01", "until": "2026-01-01"}, "at most 366 days"),
    ],
)
async def test_a_bad_range_is_a_400_naming_it(api: httpx.AsyncClient, params: dict[str, str], message: str) -> None:
    response = await api.get("/v1/analytics", params=params, headers=AUTH)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_the_api_needs_the_bearer_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/analytics")).status_code == 401
    assert (await api.get("/v1/analytics", headers={"Authorization": "Bearer wrong"})).status_code == 401


# -- the console's page ------------------------------------------------------------------------------------


@dataclass
class _Today:
    day: date = field(default_factory=lambda: date(2026, 3, 3))

    def __call__(self) -> date:
        return self.day


@pytest.fixture
async def console(store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    FakeBridge.made.clear()
    service = HandoverService(settings(), clock=Clock(), tick_s=None, bridge_factory=FakeBridge)
    app_console = Console(service, service.settings, env=TOKENS, store=store)
    assert app_console._analytics is not None
    app_console._analytics._today = _Today()  # "the last 7 days" then ends on the fixture's last day
    app = Starlette(routes=[Mount("/console", routes=app_console.routes)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client
    await service.aclose()


async def _sign_in(client: httpx.AsyncClient) -> None:
    response = await client.post("/console/api/signin", json={"agent": "ana", "token": "ana-secret"})
    assert response.status_code == 200, response.text


async def test_signed_out_the_page_sends_you_to_sign_in_and_the_json_is_401(console: httpx.AsyncClient) -> None:
    page = await console.get("/console/analytics")
    assert page.status_code == 303 and page.headers["location"] == "./"
    assert (await console.get("/console/api/analytics")).status_code == 401


async def test_the_page_shows_the_figures_and_the_charts(console: httpx.AsyncClient) -> None:
    await _sign_in(console)
    default = await console.get("/console/analytics")  # the 7 days up to "today" (2026-03-03)
    assert '<p id="period">2026-02-25 to 2026-03-03 (UTC)</p>' in default.text
    page = await console.get("/console/analytics", params={"days": "3"})
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script" not in page.text and "style=" not in page.text  # nothing the console's CSP would block
    html = page.text
    assert '<p id="period">2026-03-01 to 2026-03-03 (UTC)</p>' in html
    for key, value in {
        "calls": "7",
        "pickup-inbound": "75.0 %",
        "pickup-outbound": "66.7 %",
        "containment": "40.0 %",
        "handover": "40.0 %",
        "abandon": "50.0 %",
        "aht": "120 s",
        "v2v-p50": "600 ms",
        "v2v-p95": "900 ms",
        "cost": "0.0700",
    }.items():
        assert f'id="fig-{key}"><span class="name">' in html
        assert f'<span class="value">{value}</span>' in html.split(f'id="fig-{key}"', 1)[1].split("</div>", 1)[0]
    svgs = html.split("<svg ")[1:]
    assert len(svgs) == 4
    for svg in svgs:
        ET.fromstring("<svg " + svg.split("</svg>", 1)[0] + "</svg>")
    assert "Calls per day" in html and "Cost by country (USD)" in html


async def test_the_page_takes_a_range_and_refuses_a_bad_one(console: httpx.AsyncClient) -> None:
    await _sign_in(console)
    page = await console.get("/console/analytics", params={"since": "2026-03-02", "until": "2026-03-02"})
    assert page.status_code == 200
    assert '<p id="period">2026-03-02 to 2026-03-02 (UTC)</p>' in page.text
    assert 'id="fig-calls"><span class="name">Calls</span><span class="value">3</span>' in page.text
    bad = await console.get("/console/analytics", params={"since": "2026-03-05", "until": "2026-03-01"})
    assert bad.status_code == 400
    assert 'id="range-error"' in bad.text and "since must not be after until" in bad.text
    assert 'value="2026-03-05"' in bad.text  # the form keeps what was typed


async def test_the_consoles_json_is_the_reports(console: httpx.AsyncClient) -> None:
    await _sign_in(console)
    response = await console.get("/console/api/analytics", params=RANGE)
    assert response.status_code == 200
    assert response.json()["total"]["queue_abandon_rate"] == 0.5
    assert (await console.get("/console/api/analytics", params={"days": "x"})).status_code == 400
