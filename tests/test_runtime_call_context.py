"""The runtime keeps a call's button/link payload on its record: for a call it turns away (a campaign's missed
callers still count) and, from the terminate webhook, for a live call whose connect came without it.

Real runtime, ledger, store and app; stand-in speech models and Graph API, and no media.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agent.store.base import CallRecord
from agent.whatsapp.payloads import CallContext
from tests.test_ledger_delivery import call_event, client_for, delivery, make_runtime, settled, signed


class Graph:
    def __init__(self) -> None:
        self.rejected: list[str] = []

    async def reject(self, call_id: str) -> None:
        self.rejected.append(call_id)

    async def aclose(self) -> None:
        pass


class LiveCall:
    """Just what `_on_terminate` touches of a live call."""

    def __init__(self, call_id: str) -> None:
        self.id = call_id
        self.ref = call_id
        self.context: CallContext | None = None
        self.terminated: list[str | None] = []

    async def on_remote_terminate(self, status: str | None) -> None:
        self.terminated.append(status)


async def post(runtime: Any, call: dict[str, Any]) -> None:
    body, headers = signed(delivery([call]))
    async with client_for(runtime) as client:
        assert (await client.post("/webhook", content=body, headers=headers)).status_code == 200
    await settled(runtime)


async def test_a_turned_away_call_keeps_its_payload(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    graph = Graph()
    runtime.graph = graph  # type: ignore[assignment]
    runtime.draining = True  # shutting down: the call is rejected, not answered
    try:
        await post(runtime, {**call_event("wacid.MISSED"), "deeplink_payload": "poster-7"})
        record = await asyncio.to_thread(runtime.store.get_call, "wacid.MISSED")
    finally:
        await runtime.aclose()
    assert graph.rejected == ["wacid.MISSED"]
    assert record is not None and (record.payload, record.payload_source) == ("poster-7", "link")


async def test_terminate_fills_in_a_payload_the_connect_lacked(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    live = LiveCall("wacid.LIVE")
    runtime.calls[live.id] = live  # type: ignore[assignment]
    runtime.store.save_call(CallRecord(id=live.id, direction="USER_INITIATED", state="active"))
    try:
        terminate = {**call_event(live.id, "terminate", ts=int(time.time())), "cta_payload": "cart-8812"}
        await post(runtime, terminate)
        record = await asyncio.to_thread(runtime.store.get_call, live.id)
    finally:
        runtime.calls.pop(live.id, None)
        await runtime.aclose()
    assert live.terminated == ["COMPLETED"]
    assert live.context == CallContext("cart-8812", "button")
    assert record is not None and (record.payload, record.payload_source) == ("cart-8812", "button")
