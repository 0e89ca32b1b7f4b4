"""Without handover queues there is no agent console: `/console` says so and names the config key, and the
server logs why once at start-up, instead of a bare 404 nobody can explain."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from agent.app import create_app
from agent.config import Settings
from agent.runtime import Runtime


@dataclass
class _Flow:
    name: str = "demo"


@dataclass
class _RuntimeWithoutHandover:
    """What `create_app` reads from a runtime whose config has no `handover:` queues."""

    settings: Settings = field(default_factory=Settings)
    calls: dict[str, Any] = field(default_factory=dict)
    flow: _Flow = field(default_factory=_Flow)
    handover: None = None


@pytest.mark.parametrize("path", ["/console", "/console/", "/console/index.html"])
async def test_console_page_says_how_to_turn_it_on(path: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.app"):
        app = create_app(cast(Runtime, _RuntimeWithoutHandover()))
    off = [r.getMessage() for r in caplog.records if "console" in r.getMessage()]
    assert len(off) == 1 and "handover" in off[0] and "queues" in off[0], off

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "agent console is off" in response.text
    assert "<code>handover:</code>" in response.text and "<code>queues:</code>" in response.text
    assert "WACALL_CONFIG" in response.text


async def test_console_api_answers_json_with_the_reason() -> None:
    app = create_app(cast(Runtime, _RuntimeWithoutHandover()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as client:
        response = await client.get("/console/api/session")
    assert response.status_code == 404
    assert "no handover queues" in response.json()["error"]
