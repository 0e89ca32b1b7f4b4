"""Scale-out handover (issue 17): a caller on one `wacall serve` worker is taken by an agent signed in to the
console of another, over the deployment's shared handover desk (agent/handover/shared.py).

Two real workers share one PostgreSQL database behind the round-robin proxy of tests/cluster_harness.py and
run the shipped support_triage flow. The caller is the simulated WhatsApp user, placed on worker 0; the
agent is a plain aiortc peer (the stand-in for the browser, as in tests/handover/test_bridge.py) driven
through worker 1's console API: sign-in, the live event stream, available, accept with the SDP offer, hang
up. Worker 1 forwards the accept to worker 0, which holds the caller and builds the bridge: media flows
agent <-> worker 0 directly, and the caller must hear the agent's words (Whisper) and the agent the caller.
The last test kills worker 1 mid-call: the agent's presence goes with its lease, and the caller is queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from agent.handover.service import AGENT_LOST_MESSAGE
from agent.media.peer import MediaPeer
from agent.media.tracks import InboundAudio
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.meta import MetaSimulator, SimCall
from agent.simulator.session import bound_socket, serve
from tests.cluster_harness import CONFIG, Deployment, RoundRobinProxy
from tests.wer import wer, wer_within

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
AGENT_TOKEN = "correct-horse-battery-staple"
AGENT_LINE = "Hello, this is Ana from the support team. I can see your order and will send a new one today."
HANDOVER = """\
handover:
  queues:
    - {name: general, announce_every_s: 60, max_wait_s: 120, offer_timeout_s: 30}
  agents:
    - {id: ana, name: Ana Lima}
"""
MAX_WER = 0.35


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) if pcm.size else 0.0


class AgentConsole:
    """One agent on one worker's console, as the page does it: a session, the event stream, the actions."""

    def __init__(self, base: str) -> None:
        self.client = httpx.AsyncClient(base_url=f"{base}/console", timeout=30.0)
        self.csrf = ""
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def sign_in(self, agent: str, token: str) -> None:
        answer = await self.client.post("/api/signin", json={"agent": agent, "token": token})
        answer.raise_for_status()
        self.csrf = answer.json()["csrf"]
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """The event stream, reconnected when the server ends it (every `stream_max_s`), as a browser does."""
        while True:
            with contextlib.suppress(httpx.HTTPError):
                async with self.client.stream("GET", "/api/events", timeout=None) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            self.events.append(json.loads(line[6:]))
            await asyncio.sleep(0.2)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.client.post(path, json=body or {}, headers={"x-csrf-token": self.csrf})

    def seen(self, kind: str, **match: Any) -> dict[str, Any] | None:
        for event in self.events:
            if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        return None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    models: Models, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Deployment, MetaSimulator, RoundRobinProxy]]:
    from agent.listen_socket import listening_socket

    directory: Path = tmp_path_factory.mktemp("cluster-handover")
    running = Deployment.make(
        postgres_server.new_database(),
        directory,
        count=2,
        max_calls=2,
        lease_s=4.0,
        flow=(REPO / "prompts" / "support_triage.yaml").read_text(encoding="utf-8"),
        config=CONFIG + HANDOVER,
        extra_env={"WACALL_AGENT_TOKEN_ANA": AGENT_TOKEN},
    )
    meta_sock = listening_socket("127.0.0.1", running.meta_port)
    proxy_sock = bound_socket()
    running.start()
    proxy = RoundRobinProxy(running.workers)
    meta = running.meta(proxy_sock.getsockname()[1])
    try:
        await running.wait_healthy()
        async with serve(meta.app, meta_sock), serve(proxy.app, proxy_sock):
            yield running, meta, proxy
    finally:
        running.stop()
        await proxy.aclose()
        await meta.aclose()


async def until(what: Any, timeout: float, message: str, deployment: Deployment) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"{message}\n" + "\n".join(f"--- {w.name}\n{w.tail(4000)}" for w in deployment.workers))


def row(url: str, call_id: str) -> dict[str, Any]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        found = conn.execute("SELECT * FROM calls WHERE id = %s", (call_id,)).fetchone()
    assert found is not None
    return found


async def caller_asks_for_a_person(
    deployment: tuple[Deployment, MetaSimulator, RoundRobinProxy],
    user: SimulatedUser,
    console: AgentConsole,
    wa_id: str,
) -> SimCall:
    """A caller on worker 0 asks for a person until the agent's console on worker 1 is offered the call."""
    running, meta, proxy = deployment
    proxy.pin(0, b'"event":"connect"')  # the caller's connect goes to worker 0, which then holds the call
    sim_call: SimCall = await meta.place_user_call(wa_id=wa_id, offer_sdp=await user.make_offer())
    await asyncio.wait_for(sim_call.answer_ready.wait(), 30)
    assert sim_call.answer_sdp is not None
    await user.apply_answer(sim_call.answer_sdp)
    await asyncio.wait_for(sim_call.accepted.wait(), 30)
    greeting = await user.listen(timeout=30)
    assert "sunrise" in greeting.lower(), greeting
    await user.say("I want to talk to a person.")
    deadline = time.monotonic() + 40
    while console.seen("offer", call_id=sim_call.id) is None and time.monotonic() < deadline:
        heard = await user.listen(timeout=5)
        if "would you like" in heard.lower():  # a loose match is confirmed first
            await user.say("Yes please.")
    await until(lambda: console.seen("offer", call_id=sim_call.id), 5, "the offer on worker 1's console", running)
    assert row(running.database_url, sim_call.id)["owner"] == running.workers[0].name
    return sim_call


async def take(
    console: AgentConsole, agent: MediaPeer, sim_call: SimCall, sink: Any, running: Deployment
) -> InboundAudio:
    """The agent accepts on worker 1, which forwards the SDP offer to worker 0; worker 0 bridges."""
    accepted = await console.post(f"/api/calls/{sim_call.id}/accept", {"sdp": await agent.offer()})
    assert accepted.status_code == 200, accepted.text
    await agent.apply_answer(accepted.json()["sdp"])
    agent.outbound.open()
    await agent.wait_connected(10)
    inbound = InboundAudio(await agent.remote_track(5), sink)
    await until(lambda: console.seen("connected", call_id=sim_call.id), 10, "connected on the console", running)
    return inbound


@dataclass
class AgentDesk:
    """Ana's console on worker 1, her browser's media peer, and the caller's phone."""

    console: AgentConsole
    user: SimulatedUser
    agent: MediaPeer
    inbound: InboundAudio | None = None  # the caller's audio at the agent, once she takes the call


@contextlib.asynccontextmanager
async def agent_available_on_worker_1(running: Deployment, models: Models) -> AsyncIterator[AgentDesk]:
    """Ana signed in and available on worker 1's console; everything is closed afterwards."""
    desk = AgentDesk(
        AgentConsole(running.workers[1].url),
        SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer),
        MediaPeer(hosts=["127.0.0.1"], label="agent-browser"),
    )
    try:
        await desk.console.sign_in("ana", AGENT_TOKEN)
        await until(lambda: desk.console.seen("state"), 10, "the console's first state", running)
        assert (await desk.console.post("/api/status", {"status": "available"})).status_code == 200
        yield desk
    finally:
        if desk.inbound is not None:
            await desk.inbound.close()
        await desk.agent.close()
        await desk.user.close()
        await desk.console.close()


async def handover_recorded(running: Deployment, call_id: str, timeout: float) -> dict[str, Any]:
    """The call's record once it has ended with a handover outcome (written by whichever worker held it)."""

    def recorded() -> dict[str, Any] | None:
        found = row(running.database_url, call_id)
        return found if found["handover_outcome"] and found["state"] == "ended" else None

    return await until(recorded, timeout, "the handover in the call record", running)


async def test_an_agent_on_another_worker_takes_the_caller_and_they_hear_each_other(
    deployment: tuple[Deployment, MetaSimulator, RoundRobinProxy], models: Models
) -> None:
    running = deployment[0]
    from_caller: list[np.ndarray] = []
    started = time.monotonic()
    async with agent_available_on_worker_1(running, models) as desk:
        console, user, agent = desk.console, desk.user, desk.agent
        # -- a caller on worker 0 asks for a person; the agent accepts on worker 1 ---------------------------------
        sim_call = await caller_asks_for_a_person(deployment, user, console, "15550009001")
        desk.inbound = await take(console, agent, sim_call, lambda pcm, t: from_caller.append(pcm), running)

        # -- the caller hears the agent ------------------------------------------------------------------------
        heard_from = len(user.heard)
        agent.outbound.enqueue(await models.synthesizer.synthesize(AGENT_LINE))

        said = ""

        def heard_agent() -> bool:
            """The hold line may run into the agent's words in one utterance: score every stretch of the words
            heard as long as the agent's line (give or take two words)."""
            nonlocal said
            words = " ".join(h.text for h in user.heard[heard_from:]).split()
            size = len(AGENT_LINE.split())
            stretches = [
                " ".join(words[i : i + n]) for n in range(size - 2, size + 3) for i in range(max(1, len(words) - n + 1))
            ]
            score, said = min(((wer(AGENT_LINE, t), t) for t in stretches), default=(1.0, ""))
            return score <= MAX_WER

        try:
            await until(heard_agent, 30, "the caller to hear the agent", running)
        finally:
            print(f"\ncaller heard the agent: {said!r}")

        # -- the agent hears the caller, and worker 1's console shows their words live ------------------------
        from_caller.clear()
        await user.say("Thank you, that is great news.")
        await until(lambda: any(rms(p) > 500 for p in from_caller), 15, "the agent to hear the caller", running)
        await until(lambda: console.seen("transcript", call_id=sim_call.id, who="caller"), 20, "live lines", running)

        # -- the agent hangs up on worker 1: worker 0 ends the call, once ------------------------------------------
        assert (await console.post(f"/api/calls/{sim_call.id}/hangup")).status_code == 200
        await asyncio.wait_for(sim_call.ended.wait(), 15)
        await until(lambda: console.seen("call_ended", call_id=sim_call.id), 10, "call ended on the console", running)
        assert console.seen("call_ended", call_id=sim_call.id)["reason"] == "agent_hung_up"  # type: ignore[index]

        record = await handover_recorded(running, sim_call.id, 10)
        assert record["state"] == "ended" and record["end_reason"] == "agent_hung_up"
        assert record["handled_by"] == "ana" and record["handover_queue"] == "general"
        assert record["handover_outcome"] == "agent_hung_up" and record["talk_s"] > 1
        await asyncio.sleep(1.0)  # anything a second worker might still do to the call
        assert sim_call.actions.count("terminate") == 1, sim_call.actions
        assert [e for e in console.events if e.get("type") == "call_ended"] == [
            {"type": "call_ended", "call_id": sim_call.id, "reason": "agent_hung_up"}
        ]
        print(f"\ncross-worker handover test took {time.monotonic() - started:.1f} s")


async def test_when_the_agents_worker_dies_the_caller_goes_back_to_the_queue(
    deployment: tuple[Deployment, MetaSimulator, RoundRobinProxy], models: Models
) -> None:
    """Last in the module: it kills worker 1. Its lease runs out, ana's presence with it, and the caller she was
    talking to on worker 0 is put back at the front of the queue rather than talking to nobody."""
    running, meta, _ = deployment
    async with agent_available_on_worker_1(running, models) as desk:
        console, user, agent = desk.console, desk.user, desk.agent
        sim_call = await caller_asks_for_a_person(deployment, user, console, "15550009002")
        desk.inbound = await take(console, agent, sim_call, lambda pcm, t: None, running)
        heard_from = len(user.heard)
        running.workers[1].kill()
        killed_at = time.monotonic()

        said = ""

        def told() -> bool:  # AGENT_LOST_MESSAGE: "... the line to my colleague dropped ... front of the queue"
            nonlocal said
            said = " ".join(h.text for h in user.heard[heard_from:])
            # Among the hold lines around it, and "queue" is often heard as "cube".
            return wer_within(AGENT_LOST_MESSAGE, said) <= 0.3 or "front of the queue" in said.lower()

        try:
            await until(told, 30, "the caller to hear that the agent dropped", running)
        finally:
            print(f"\ncaller heard after the agent's worker died: {said!r}")
        print(f"\ncaller put back in the queue {time.monotonic() - killed_at:.1f} s after the agent's worker died")
        assert not sim_call.ended.is_set()
        await meta.user_hangup(sim_call.id)

        record = await handover_recorded(running, sim_call.id, 15)
        assert record["handled_by"] == "ana" and record["handover_outcome"] == "abandoned", record
