"""Two runtimes on one PostgreSQL database, in one process (agent/cluster.py's glue in the runtime): a webhook
for a call owned by the other worker is stored by the receiver and acted on by the owner, exactly once, even
when Meta delivers it again to either; and the owner's missed notifications are caught up.

Speech models are stand-ins and call handling is recorded instead of run: tests/e2e/test_cluster.py has the
real processes, media and all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.runtime import Runtime
from agent.store.base import CallRecord
from agent.whatsapp.webhooks import CallWebhook
from tests.test_ledger_delivery import call_event, client_for, delivery, make_runtime, signed


@pytest.fixture
def acted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """(worker, call id, event) for every call event a runtime acts on."""
    seen: list[tuple[str, str, str]] = []

    async def record(self: Runtime, event: CallWebhook) -> None:
        assert self.cluster is not None
        seen.append((self.cluster.worker_id, event.call.id, event.call.event))

    monkeypatch.setattr(Runtime, "_on_terminate", record)
    return seen


@pytest_asyncio.fixture
async def workers(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    monkeypatch.setenv("WACALL_WORKER_LEASE_S", "3")
    runtimes = []
    for name in ("a", "b"):
        monkeypatch.setenv("WACALL_WORKER_ID", name)
        runtime = make_runtime(tmp_path / name, postgres_url)
        await runtime.warm_up()  # starts the heartbeat and the listener
        runtimes.append(runtime)
    try:
        yield runtimes[0], runtimes[1]
    finally:
        for runtime in runtimes:
            await runtime.aclose()


async def owned_by(runtime: Runtime, call_id: str) -> None:
    assert runtime.cluster is not None
    record = CallRecord(id=call_id, direction="USER_INITIATED", state="active", owner=runtime.cluster.worker_id)
    await runtime.ledger.record_call_start(record)


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_terminate_at_the_other_worker_is_acted_on_by_the_owner_once(
    workers: tuple[Runtime, Runtime], acted: list[tuple[str, str, str]]
) -> None:
    a, b = workers
    await owned_by(a, "wacid.X")
    body, headers = signed(delivery([call_event("wacid.X", "terminate")]))
    async with client_for(b) as to_b, client_for(a) as to_a:
        assert (await to_b.post("/webhook", content=body, headers=headers)).status_code == 200
        await until(lambda: acted)
        for client in (to_b, to_a, to_b):  # Meta's redeliveries, to either worker
            assert (await client.post("/webhook", content=body, headers=headers)).status_code == 200
        await asyncio.sleep(0.5)
    assert acted == [("a", "wacid.X", "terminate")]
    [event] = [e for e in a.store.list_events("wacid.X") if e.event == "terminate"]  # stored once
    assert event.handled


async def test_an_event_whose_notification_was_lost_is_caught_up_by_the_owner(
    workers: tuple[Runtime, Runtime], acted: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.store import leases

    a, b = workers
    await owned_by(a, "wacid.Y")
    monkeypatch.setattr(leases, "notify", lambda tx, channel, payload: None)  # the NOTIFY never arrives
    body, headers = signed(delivery([call_event("wacid.Y", "terminate")]))
    async with client_for(b) as to_b:
        assert (await to_b.post("/webhook", content=body, headers=headers)).status_code == 200
    assert acted == []
    await until(lambda: acted, timeout=3.0)  # the next heartbeat (every 1 s here) re-reads a's events
    assert acted == [("a", "wacid.Y", "terminate")]


async def test_with_sqlite_there_is_no_cluster_and_nothing_changes(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    try:
        assert runtime.cluster is None and runtime.ledger.router is None
        assert "worker" not in runtime.health()
    finally:
        await runtime.aclose()


def test_a_workers_identity_comes_from_the_environment() -> None:
    import os
    import socket

    from agent.cluster import Identity

    default = Identity.from_env({})
    assert default.worker_id == f"{socket.gethostname()}-{os.getpid()}" and default.lease_s == 15
    named = Identity.from_env({"WACALL_WORKER_ID": "w1", "WACALL_WORKER_LEASE_S": "6", "WACALL_WORKER_URL": "http://x"})
    assert (named.worker_id, named.lease_s, named.beat_s, named.url) == ("w1", 6.0, 2.0, "http://x")
    assert named.channel.isidentifier() and len(named.channel) < 63 and named.channel != Identity("w2").channel
    with pytest.raises(ValueError, match="WACALL_WORKER_LEASE_S"):
        Identity.from_env({"WACALL_WORKER_LEASE_S": "0.1"})
