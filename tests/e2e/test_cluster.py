"""Three real `wacall serve` workers answering one number, sharing one PostgreSQL database (issue 17).

Meta's simulator sends its webhooks to a round-robin proxy in front of the workers (tests/cluster_harness.py),
as an operator's load balancer would: any worker may get any webhook. Callers are simulated over real
WebRTC. The workers start once for the module (leases of 4 s, so a dead worker is noticed in seconds);
the tests run in order and the last one kills a worker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.meta import MetaSimulator, SimCall
from agent.simulator.session import bound_socket, serve
from tests.cluster_harness import Deployment, RoundRobinProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

LEASE_S = 4.0
_numbers = itertools.count(15550007000)


class Cluster:
    def __init__(self, deployment: Deployment, proxy: RoundRobinProxy, meta: MetaSimulator, models: Models) -> None:
        self.deployment = deployment
        self.proxy = proxy
        self.meta = meta
        self.models = models
        self.users: list[SimulatedUser] = []

    def row(self, call_id: str) -> dict[str, Any] | None:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.deployment.database_url, row_factory=dict_row) as conn:
            return conn.execute("SELECT * FROM calls WHERE id = %s", (call_id,)).fetchone()

    def events(self, call_id: str, event: str) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.deployment.database_url, row_factory=dict_row) as conn:
            query = "SELECT * FROM call_events WHERE call_id = %s AND event = %s"
            return conn.execute(query, (call_id, event)).fetchall()

    async def call(self, worker: int) -> SimCall:
        """A caller dials and the connect webhook goes to `worker`; returns once media flows (or it ended)."""
        user = SimulatedUser(transcriber=self.models.transcriber, synthesizer=self.models.synthesizer)
        self.users.append(user)
        self.proxy.pin(worker, b'"event":"connect"')
        sim_call = await self.meta.place_user_call(wa_id=str(next(_numbers)), offer_sdp=await user.make_offer())
        ready = asyncio.ensure_future(sim_call.answer_ready.wait())
        ended = asyncio.ensure_future(sim_call.ended.wait())
        await asyncio.wait({ready, ended}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        ended.cancel()
        if sim_call.answer_sdp is not None and not sim_call.ended.is_set():
            await user.apply_answer(sim_call.answer_sdp)
            await asyncio.wait_for(sim_call.accepted.wait(), 30)
        return sim_call

    async def until(self, what: Any, timeout: float, message: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await asyncio.to_thread(what)
            if value:
                return value
            await asyncio.sleep(0.1)
        pytest.fail(f"{message}\n" + "\n".join(f"--- {w.name}\n{w.tail()}" for w in self.deployment.workers))

    async def hang_up(self, sim_call: SimCall, via: int) -> None:
        self.proxy.pin(via, sim_call.id.encode())
        await self.meta.user_hangup(sim_call.id)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    models: Models, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    url = postgres_server.new_database(migrated=False)  # the first workers migrate it, racing each other
    directory: Path = tmp_path_factory.mktemp("cluster")
    deployment = Deployment.make(url, directory, count=3, max_calls=2, lease_s=LEASE_S)
    meta_sock = socket_at(deployment.meta_port)
    proxy_sock = bound_socket()
    deployment.start()
    proxy = RoundRobinProxy(deployment.workers)
    meta = deployment.meta(proxy_sock.getsockname()[1])
    running = Cluster(deployment, proxy, meta, models)
    try:
        await deployment.wait_healthy()
        async with serve(meta.app, meta_sock), serve(proxy.app, proxy_sock):
            yield running
            for user in running.users:
                await user.close()
    finally:
        deployment.stop()
        await proxy.aclose()
        await meta.aclose()


def socket_at(port: int) -> Any:
    from agent.listen_socket import listening_socket

    return listening_socket("127.0.0.1", port)


async def test_every_worker_answers_and_a_terminate_at_another_worker_ends_the_call_once(cluster: Cluster) -> None:
    calls = [await cluster.call(0), await cluster.call(1)]
    for n, sim_call in enumerate(calls):
        row = await cluster.until(lambda c=sim_call: cluster.row(c.id), 10, "the call was not recorded")
        assert row["owner"] == f"w{n}" and sim_call.actions[:2] == ["pre_accept", "accept"], (row, sim_call.actions)
    # The caller hangs up; Meta's terminate reaches w2, which does not own the call: w0 must end it.
    await cluster.hang_up(calls[0], via=2)
    delivery = len(cluster.proxy.sent) - 1
    ended = await cluster.until(
        lambda: (r := cluster.row(calls[0].id)) is not None and r["state"] == "ended" and r, 10, "w0 never ended it"
    )
    assert ended["end_reason"] == "remote_completed" and ended["owner"] == "w0", ended
    # Meta delivers it again, to w1 this time: stored once, acted on once, by the owner.
    assert await cluster.proxy.replay(delivery, 1) == 200
    [terminate] = await cluster.until(
        lambda: [e for e in cluster.events(calls[0].id, "terminate") if e["handled"]], 10, "never marked handled"
    )
    assert terminate["handler"] == "w0", terminate
    assert len(cluster.events(calls[0].id, "terminate")) == 1
    assert "terminate" not in calls[0].actions, "the caller hung up: nobody owed Meta a terminate"
    # The freed slot goes to a call on the third worker.
    third = await cluster.call(2)
    row = await cluster.until(lambda: cluster.row(third.id), 10, "the third call was not recorded")
    assert row["owner"] == "w2"
    for sim_call, via in ((calls[1], 0), (third, 1)):
        await cluster.hang_up(sim_call, via=via)
    for sim_call in (calls[1], third):
        await cluster.until(lambda c=sim_call: (cluster.row(c.id) or {}).get("state") == "ended", 10, "not ended")


async def test_the_call_cap_holds_across_workers(cluster: Cluster) -> None:
    """Cap 2 for the deployment: two calls on w0 and w1, a third at w2 is rejected (w2 itself has none)."""
    first, second = await cluster.call(0), await cluster.call(1)
    third = await cluster.call(2)
    await asyncio.wait_for(third.ended.wait(), 10)
    assert third.actions == ["reject"], third.actions
    for sim_call, via in ((first, 2), (second, 2)):
        await cluster.hang_up(sim_call, via=via)
    for sim_call in (first, second):
        await cluster.until(lambda c=sim_call: (cluster.row(c.id) or {}).get("state") == "ended", 10, "not ended")


async def test_workers_survive_their_database_connections_being_cut(cluster: Cluster) -> None:
    import psycopg

    with psycopg.connect(cluster.deployment.database_url, autocommit=True) as conn:
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid != pg_backend_pid() AND application_name LIKE 'wacall%'"
        ).fetchall()
    assert len(cut) >= 6, cut  # each worker's writer, reader and listener
    sim_call = await cluster.call(1)
    assert sim_call.actions[:2] == ["pre_accept", "accept"], sim_call.actions
    await cluster.hang_up(sim_call, via=2)  # forwarded to w1 through its re-established listener
    ended = await cluster.until(
        lambda: (r := cluster.row(sim_call.id)) is not None and r["state"] == "ended" and r, 10, "w1 never ended it"
    )
    assert ended["end_reason"] == "remote_completed", ended


async def test_a_call_placed_by_one_worker_gets_metas_webhooks_whichever_worker_receives_them(
    cluster: Cluster,
) -> None:
    """The permission reply lands on any worker (the users' states are shared); the call is placed through w0's
    API; Meta's statuses and its SDP answer go round-robin, and those at w1/w2 are handed to w0, before and
    after w0 knows Meta's id for the call (they carry our reference)."""
    from agent.simulator.meta import Decision, ScriptedPhone

    number = "34600111222"
    phone = SimulatedUser(transcriber=cluster.models.transcriber)
    cluster.users.append(phone)
    cluster.meta.add_user(number, phone=ScriptedPhone(Decision.ACCEPT, phone.answer_business_call, think_s=0.3))
    await cluster.meta.user_sets_profile_permission(number, grant=True, permanent=True)

    def granted() -> bool:
        import psycopg

        with psycopg.connect(cluster.deployment.database_url) as conn:
            row = conn.execute("SELECT permission_status FROM user_states WHERE user_id = %s", (number,)).fetchone()
        return row is not None and row[0] == "permanent"

    await cluster.until(granted, 10, "the permission reply was not recorded")
    w0 = cluster.deployment.workers[0]
    token = w0.env["WACALL_API_TOKEN"]
    async with httpx.AsyncClient() as client:
        placed = await client.post(
            f"{w0.url}/v1/calls", json={"to": number}, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    assert placed.status_code == 202, placed.text
    call_id = placed.json()["id"]
    sim_call = cluster.meta.calls[call_id]
    answered = await cluster.until(
        lambda: (r := cluster.row(call_id)) is not None and r["answered_at"] is not None and r, 15, "never answered"
    )
    assert answered["owner"] == "w0" and sim_call.statuses[:2] == ["RINGING", "ACCEPTED"], sim_call.statuses
    receivers = {index for index, _, _ in cluster.proxy.sent[-4:]}
    assert len(receivers) > 1, "every webhook of the call reached one worker: nothing was forwarded"
    await cluster.hang_up(sim_call, via=2)
    await cluster.until(lambda: (cluster.row(call_id) or {}).get("state") == "ended", 10, "not ended")


async def test_a_killed_worker_is_cleaned_up_by_another_and_meta_gets_its_terminate(cluster: Cluster) -> None:
    survivor, orphan = await cluster.call(0), await cluster.call(2)
    await cluster.until(lambda: cluster.row(orphan.id), 10, "not recorded")
    killed_at = time.monotonic()
    cluster.deployment.workers[2].kill()  # SIGKILL: w2's call is still up at Meta, and billed
    await asyncio.wait_for(orphan.ended.wait(), LEASE_S + 10)
    failover_s = time.monotonic() - killed_at
    assert orphan.actions[-1] == "terminate", orphan.actions
    row = cluster.row(orphan.id)
    assert row is not None and row["end_reason"] == "ended_by_worker_loss" and row["owner"] in ("w0", "w1"), row
    assert failover_s < LEASE_S + 6, failover_s
    # w0's call goes on, and its slot and the freed one take new calls.
    assert not survivor.ended.is_set() and (cluster.row(survivor.id) or {}).get("state") == "active"
    another = await cluster.call(1)
    assert another.actions[:2] == ["pre_accept", "accept"], another.actions
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"{cluster.deployment.workers[0].url}/healthz")).json()
    assert health["worker"] == "w0" and health["live_calls"] == 1, health
    for sim_call in (survivor, another):
        await cluster.hang_up(sim_call, via=0)
