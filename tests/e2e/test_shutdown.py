"""Ending wacall without losing calls: SIGTERM drains, a restart after SIGKILL settles what Meta is owed.

`docker stop`, systemd and every deploy send SIGTERM. Before the drain, uvicorn re-raised it after the HTTP
server stopped: the process died with 143 before `Runtime.aclose` ran, a live call got no terminate (Meta
kept billing it) and its record stayed open. Here the real `wacall serve` runs in its own process against
Meta's simulator with a simulated caller over real WebRTC, and is signalled like an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.meta import MetaSimulator, SimCall
from agent.simulator.session import SIM_PHONE_NUMBER_ID, Simulation, bound_socket, dial, serve
from agent.store.sqlite import SqliteStore
from tests.wer import wer

pytestmark = pytest.mark.e2e

GOODBYE = "We are closing for maintenance now. Please call back later. Goodbye."


class OtlpCollector:
    """An OTLP/HTTP trace receiver (protobuf), standing in for the operator's collector on loopback."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.spans: list[Any] = []

        async def traces(request: Request) -> Response:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            export = ExportTraceServiceRequest.FromString(await request.body())
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            return Response(b"", media_type="application/x-protobuf")

        self.app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


def _free_port() -> int:
    sock = bound_socket()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class Server:
    """`wacall serve` in its own process, configured through the environment as an operator would."""

    def __init__(self, tmp_path: Path, meta_port: int) -> None:
        self.tmp_path = tmp_path
        self.port = _free_port()
        self.metrics_port = _free_port()
        self.secrets = {
            "WHATSAPP_TOKEN": secrets.token_urlsafe(24),
            "WHATSAPP_APP_SECRET": secrets.token_urlsafe(24),
            "WHATSAPP_VERIFY_TOKEN": secrets.token_urlsafe(24),
            "WHATSAPP_PHONE_NUMBER_ID": SIM_PHONE_NUMBER_ID,
        }
        config = tmp_path / "wacall.yaml"
        config.write_text(f"shutdown:\n  goodbye: {GOODBYE!r}\n  deadline_s: 10\n  checkpoint_s: 1\n", encoding="utf-8")
        self.env = {
            **os.environ,
            **self.secrets,
            "WACALL_CONFIG": str(config),
            "WACALL_GRAPH_BASE_URL": f"http://127.0.0.1:{meta_port}",
            "WACALL_MEDIA_HOSTS": "127.0.0.1",
            "WACALL_DATA_DIR": str(tmp_path / "data"),
            "WACALL_BUSINESS_NUMBER": "15550001111",
            # The operator's observability: /metrics on an internal listener of its own, traces to a collector.
            "WACALL_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "HF_HUB_OFFLINE": "1",
        }
        self.env.pop("WACALL_LLM_BASE_URL", None)
        self.log = tmp_path / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "agent.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"wacall serve exited with {self.proc.returncode} at start-up:\n{self.tail()}")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        pytest.fail(f"wacall serve did not answer /healthz within {timeout:g} s:\n{self.tail()}")

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            pytest.fail(f"wacall serve still running {timeout:g} s after the signal:\n{self.tail()}")
        return int(self.proc.returncode)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def meta(self) -> MetaSimulator:
        return MetaSimulator(
            webhook_url=f"http://127.0.0.1:{self.port}/webhook",
            app_secret=self.secrets["WHATSAPP_APP_SECRET"],
            access_token=self.secrets["WHATSAPP_TOKEN"],
            phone_number_id=SIM_PHONE_NUMBER_ID,
            display_phone_number="15550001111",
        )

    def record(self, call_id: str) -> Any:
        store = SqliteStore.in_data_dir(self.env["WACALL_DATA_DIR"])
        try:
            return store.get_call(call_id)
        finally:
            store.close()


@pytest.fixture
def meta_sock() -> Iterator[Any]:
    sock = bound_socket()
    yield sock
    sock.close()


@pytest.fixture
def server(tmp_path: Path, meta_sock: Any) -> Iterator[Server]:
    running = Server(tmp_path, meta_sock.getsockname()[1])
    try:
        yield running
    finally:
        running.stop()


async def _on_a_call(meta: MetaSimulator, user: SimulatedUser) -> SimCall:
    sim_call, _ = await dial(meta, user, timeout=30)
    greeting = await user.listen(timeout=20)
    assert greeting, "the bot never greeted the caller"
    return sim_call


@contextlib.asynccontextmanager
async def _caller_on_the_server(
    models: Models, server: Server, meta_sock: Any
) -> AsyncIterator[tuple[SimulatedUser, SimCall]]:
    """The server started, Meta's simulator serving, and a caller who has heard the greeting."""
    server.start()
    await server.wait_healthy()
    meta = server.meta()
    user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
    try:
        async with serve(meta.app, meta_sock):
            yield user, await _on_a_call(meta, user)
    finally:
        await user.close()
        await meta.aclose()


async def test_sigterm_ends_a_live_call_with_a_goodbye_a_terminate_and_its_record(
    models: Models, server: Server, meta_sock: Any
) -> None:
    """Also the real process's observability wiring: the metrics listener and the trace flushed at exit."""
    collector = OtlpCollector()
    collector_sock = bound_socket()
    server.env["WACALL_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector_sock.getsockname()[1]}"
    async with serve(collector.app, collector_sock), _caller_on_the_server(models, server, meta_sock) as (
        user,
        sim_call,
    ):
        async with httpx.AsyncClient() as client:
            public = await client.get(f"http://127.0.0.1:{server.port}/metrics")
            internal = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
        assert public.status_code == 404 and internal.status_code == 200, (public.text, internal.text)
        assert "wacall_live_calls 1.0" in internal.text
        assert server.proc is not None
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        heard = await user.listen(timeout=12, quiet_s=1.0)
        code = await server.wait_exit(timeout=15)
        took = time.monotonic() - signalled
        await asyncio.wait_for(sim_call.ended.wait(), timeout=5)
    assert code == 0, server.tail()
    assert took <= 10.5, f"drain took {took:.1f} s, over the 10 s deadline:\n{server.tail()}"
    assert wer(GOODBYE, heard) <= 0.35, (heard, server.tail())
    assert sim_call.actions[-1] == "terminate", (sim_call.actions, server.tail())
    record = server.record(sim_call.id)
    assert record is not None and record.state == "ended" and record.end_reason == "shutdown", record
    assert record.outcome == "answered" and record.duration_s is not None and record.cost is not None
    bot_lines = [e["text"] for e in record.transcript if e["who"] == "bot"]
    assert bot_lines and wer(GOODBYE, bot_lines[-1]) <= 0.1, record.transcript
    collector_sock.close()
    # The call's trace reached the collector before the process exited.
    calls = [span for span in collector.spans if span.name == "call"]
    assert len(calls) == 1, [span.name for span in collector.spans]
    attributes = {a.key: a.value.string_value for a in calls[0].attributes}
    assert attributes["wacall.call.id"] == sim_call.id and attributes["wacall.call.end_reason"] == "shutdown"
    assert "answer" in {span.name for span in collector.spans}


async def test_a_restart_after_sigkill_sends_meta_the_terminate_it_owes(
    models: Models, server: Server, meta_sock: Any
) -> None:
    async with _caller_on_the_server(models, server, meta_sock) as (_, sim_call):
        await asyncio.sleep(1.5)  # a checkpoint of the transcript (every 1 s here)
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: nothing of wacall runs, Meta still has the call up
        server.proc.wait()
        await asyncio.sleep(0.3)
        assert "terminate" not in sim_call.actions and not sim_call.ended.is_set()
        server.start()
        await server.wait_healthy()
        await asyncio.wait_for(sim_call.ended.wait(), timeout=10)
    assert sim_call.actions[-1] == "terminate", (sim_call.actions, server.tail())
    record = server.record(sim_call.id)
    assert record is not None and record.state == "ended" and record.end_reason == "ended_by_restart", record
    assert [e["who"] for e in record.transcript][:1] == ["bot"], "the greeting was lost with the process"


async def test_a_draining_runtime_refuses_new_calls_and_frees_every_slot(models: Models) -> None:
    """In-process: the drain's own steps, and a call arriving while it runs is rejected, not half-answered."""
    async with Simulation.start(models, shutdown={"goodbye": GOODBYE}) as sim:
        first = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        second = SimulatedUser(transcriber=models.transcriber)
        try:
            sim_call = await _on_a_call(sim.meta, first)
            draining = asyncio.create_task(sim.runtime.drain(goodbye=GOODBYE, deadline_s=8))
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"{sim.app_url}/healthz")).json()
            late = await sim.meta.place_user_call(wa_id="15550003333", offer_sdp=await second.make_offer())
            heard = await first.listen(timeout=10, quiet_s=1.0)
            await asyncio.wait_for(draining, timeout=10)
            await asyncio.wait_for(late.ended.wait(), timeout=5)
            missed = sim.runtime.store.get_call(late.id)
        finally:
            await first.close()
            await second.close()
    assert health["status"] == "draining"
    assert wer(GOODBYE, heard) <= 0.35, heard
    assert sim_call.actions[-1] == "terminate"
    assert late.actions == ["reject"], late.actions
    assert not sim.runtime.calls and sim.runtime.live_count == 0
    assert missed is not None and missed.state == "ended"


async def test_a_failed_store_write_rejects_the_call_frees_its_slot_and_degrades_health(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the call was counted live before its record was written, so two failed writes used up a cap
    of two for good while /healthz said ok."""
    from agent.store.sqlite import StoreTx

    real_save = StoreTx.save_call
    failures = 0

    def failing_save(self: StoreTx, record: Any) -> None:
        nonlocal failures
        failures += 1
        raise OSError("disk I/O error")

    async with Simulation.start(models, max_concurrent_calls=2) as sim:
        monkeypatch.setattr(StoreTx, "save_call", failing_save)
        users = [SimulatedUser(transcriber=models.transcriber) for _ in range(3)]
        try:
            refused = []
            for n, user in enumerate(users[:2]):
                sim_call = await sim.meta.place_user_call(wa_id=f"1555000444{n}", offer_sdp=await user.make_offer())
                await asyncio.wait_for(sim_call.ended.wait(), timeout=5)
                refused.append(sim_call)
            async with httpx.AsyncClient() as client:
                degraded = await client.get(f"{sim.app_url}/healthz")
                monkeypatch.setattr(StoreTx, "save_call", real_save)
                sim_call, _ = await dial(sim.meta, users[2], timeout=20)
            await sim.meta.user_hangup(sim_call.id)
        finally:
            for user in users:
                await user.close()
    assert failures == 2
    assert [c.actions for c in refused] == [["reject"], ["reject"]]
    assert degraded.status_code == 503 and degraded.json()["status"] == "degraded", degraded.json()
    assert "disk I/O error" in degraded.json()["store"]
    assert sim_call.actions[:2] == ["pre_accept", "accept"], "the slots were not freed"


async def test_parallel_outbound_requests_cannot_exceed_the_cap(models: Models) -> None:
    """Capacity is reserved before `dial` awaits Meta: two requests at once with one slot left → one refused."""
    from agent.simulator.meta import Decision, ScriptedPhone
    from agent.whatsapp.rules import Refused

    business, users = "447700900111", ["34600111222", "34600111333"]
    async with Simulation.start(models, business_number=business, max_concurrent_calls=1) as sim:
        phones = [SimulatedUser(transcriber=models.transcriber) for _ in users]
        try:
            for number, phone in zip(users, phones, strict=True):
                sim.meta.add_user(number, phone=ScriptedPhone(Decision.ACCEPT, phone.answer_business_call, think_s=0.2))
                await sim.meta.user_sets_profile_permission(number, grant=True, permanent=True)
            for _ in range(100):
                if all(str(sim.runtime.ledger.user_state(u).permission) == "permanent" for u in users):
                    break
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*(sim.runtime.place_call(u) for u in users), return_exceptions=True)
            placed = [r for r in results if not isinstance(r, BaseException)]
            for call in placed:
                await call.hangup()
        finally:
            for phone in phones:
                await phone.close()
    refusals = [r for r in results if isinstance(r, Refused)]
    assert len(placed) == 1 and len(refusals) == 1, results
    assert refusals[0].refusal.rule == "capacity.full"
    assert len(sim.meta.calls) == 1, "Meta was asked for a second call over the cap"


async def test_a_call_being_placed_when_the_drain_starts_is_cancelled_at_meta(models: Models) -> None:
    """Before: the drain ended the call locally while Meta's `connect` was in flight; when it returned, the
    call came back to life as ringing, and the user's phone rang after the shutdown."""
    from agent.call import CallEnded
    from agent.simulator.meta import Decision, ScriptedPhone

    business, number = "447700900111", "34600111222"
    async with Simulation.start(models, business_number=business, graph_round_trip=0.4) as sim:
        phone = SimulatedUser(transcriber=models.transcriber)
        try:
            sim.meta.add_user(number, phone=ScriptedPhone(Decision.ACCEPT, phone.answer_business_call, think_s=3))
            await sim.meta.user_sets_profile_permission(number, grant=True, permanent=True)
            for _ in range(100):
                if str(sim.runtime.ledger.user_state(number).permission) == "permanent":
                    break
                await asyncio.sleep(0.05)
            placing = asyncio.create_task(sim.runtime.place_call(number))
            await asyncio.sleep(0.2)  # `connect` is on its way to Meta
            await sim.runtime.drain(goodbye=None, deadline_s=5)
            with pytest.raises(CallEnded):
                await placing
            for _ in range(100):
                if sim.meta.calls and all(c.ended.is_set() for c in sim.meta.calls.values()):
                    break
                await asyncio.sleep(0.05)
        finally:
            await phone.close()
    [sim_call] = sim.meta.calls.values()
    assert sim_call.actions[-1] == "terminate" and sim_call.ended.is_set(), sim_call.actions
    assert not sim.runtime.calls and sim.runtime.live_count == 0
