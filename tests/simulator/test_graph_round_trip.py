"""The simulated Graph API answers after a network round trip when asked to, as Meta's real one does."""

from __future__ import annotations

import time

import httpx
import pytest

from agent.simulator.meta import (
    DEFAULT_GRAPH_RTT_S,
    GRAPH_RTT_ENV,
    MetaSimulator,
    MetaTimings,
    graph_round_trip_s,
)

TOKEN = "sim-access-token"
PNID = "106540000000002"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_round_trip_comes_from_the_argument_then_the_environment_then_the_default() -> None:
    assert graph_round_trip_s(0.25, env={GRAPH_RTT_ENV: "50"}) == 0.25
    assert graph_round_trip_s(env={GRAPH_RTT_ENV: "50"}) == 0.05
    assert graph_round_trip_s(env={GRAPH_RTT_ENV: "0"}) == 0.0
    assert graph_round_trip_s(env={}) == DEFAULT_GRAPH_RTT_S == 0.1
    with pytest.raises(ValueError, match=GRAPH_RTT_ENV):
        graph_round_trip_s(env={GRAPH_RTT_ENV: "fast"})


def test_unit_tests_keep_instant_answers_by_default() -> None:
    assert MetaTimings().graph_round_trip == 0.0


async def _timed_get(client: httpx.AsyncClient, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.get(path, headers=AUTH)
    return time.perf_counter() - started, response.status_code


async def test_every_request_waits_the_round_trip_which_can_change_between_requests() -> None:
    timings = MetaTimings(graph_round_trip=0.2)
    meta = MetaSimulator(webhook_url="http://127.0.0.1:9/webhook", app_secret="s", access_token=TOKEN, timings=timings)
    transport = httpx.ASGITransport(app=meta.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://graph.test") as client:
            query = f"/v23.0/{PNID}/call_permissions?user_wa_id=15550002222"
            slow, status = await _timed_get(client, query)
            assert status == 200 and 0.2 <= slow < 0.5, slow
            unsupported, status = await _timed_get(client, "/v23.0/nothing/here")  # errors travel too
            assert status == 400 and unsupported >= 0.2, unsupported
            timings.graph_round_trip = 0.0
            fast, _ = await _timed_get(client, query)
            assert fast < 0.1, fast
    finally:
        await meta.aclose()
