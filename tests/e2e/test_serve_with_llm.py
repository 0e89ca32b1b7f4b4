"""`wacall serve` as an operator starts it, with an LLM configured, answers a call with an LLM turn.

Regression test for the fresh-install failure of 2026-12-07: openai 3.x (built on httpx2) refused the
httpx timeout wacall passed it, so a server with `WACALL_LLM_BASE_URL` set exited at start-up. Here the
real command runs in its own process, configured only through the environment, against Meta's simulator
and a local OpenAI-compatible server; the caller is the simulated WhatsApp user over real WebRTC.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.llm_server import Rule, ScriptedLlm, running_llm_server
from agent.simulator.meta import MetaSimulator
from agent.simulator.session import SIM_PHONE_NUMBER_ID, bound_socket, dial, serve
from tests.e2e.test_llm_turns import FLOW  # the shop assistant: a greeting, then an LLM node
from tests.wer import wer

pytestmark = pytest.mark.e2e

ANSWER = "We open at nine in the morning and close at six in the evening."


@pytest.fixture
async def llm() -> AsyncIterator[tuple[ScriptedLlm, str]]:
    scripted = ScriptedLlm([Rule(match=re.compile(r".", re.S), text=ANSWER)])
    async with running_llm_server(scripted) as url:
        yield scripted, url


@pytest.fixture
def secrets_env() -> dict[str, str]:
    return {
        "WHATSAPP_TOKEN": secrets.token_urlsafe(24),
        "WHATSAPP_APP_SECRET": secrets.token_urlsafe(24),
        "WHATSAPP_VERIFY_TOKEN": secrets.token_urlsafe(24),
        "WHATSAPP_PHONE_NUMBER_ID": SIM_PHONE_NUMBER_ID,
    }


def _free_port() -> int:
    sock = bound_socket()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def serve_process(tmp_path: Path, secrets_env: dict[str, str], llm: tuple[ScriptedLlm, str]) -> Iterator[dict]:
    """`wacall serve` in its own process; yields its URLs once /healthz answers."""
    flow = tmp_path / "llm_serve.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    meta_sock = bound_socket()
    port = _free_port()
    env = {
        **os.environ,
        **secrets_env,
        "WACALL_GRAPH_BASE_URL": f"http://127.0.0.1:{meta_sock.getsockname()[1]}",
        "WACALL_MEDIA_HOSTS": "127.0.0.1",
        "WACALL_DATA_DIR": str(tmp_path / "data"),
        "WACALL_BUSINESS_NUMBER": "15550001111",
        "WACALL_LLM_BASE_URL": llm[1],
        "WACALL_LLM_MODEL": "test-model",
        "WACALL_LLM_TIMEOUT_S": "3",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("WACALL_CONFIG", None)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "agent.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--flow", str(flow)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield {"proc": proc, "port": port, "meta_sock": meta_sock, "log": log, "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        meta_sock.close()


async def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"wacall serve exited with {proc.returncode} at start-up:\n{log.read_text()[-3000:]}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"wacall serve did not answer /healthz within {timeout:g} s:\n{log.read_text()[-3000:]}")


async def test_serve_with_an_llm_configured_starts_and_answers_an_llm_turn(
    models: Models, serve_process: dict, llm: tuple[ScriptedLlm, str], secrets_env: dict[str, str]
) -> None:
    proc, port = serve_process["proc"], serve_process["port"]
    await _wait_healthy(proc, port, serve_process["log"])
    meta = MetaSimulator(
        webhook_url=f"http://127.0.0.1:{port}/webhook",
        app_secret=secrets_env["WHATSAPP_APP_SECRET"],
        access_token=secrets_env["WHATSAPP_TOKEN"],
        phone_number_id=SIM_PHONE_NUMBER_ID,
        display_phone_number="15550001111",
    )
    user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
    try:
        async with serve(meta.app, serve_process["meta_sock"]):
            sim_call, _ = await dial(meta, user, timeout=30)
            greeting = await user.listen(timeout=20)
            await user.say("What are your opening hours?")
            heard = await user.listen(timeout=20, quiet_s=1.5)
            await meta.user_hangup(sim_call.id)
            await meta.drain_webhooks()
    finally:
        await user.close()
        await meta.aclose()
    assert "assistant" in greeting.lower(), greeting
    assert wer(ANSWER, heard) <= 0.3, (ANSWER, heard, serve_process["log"].read_text()[-2000:])
    scripted = llm[0]
    assert scripted.requests, "the server never asked the LLM"
    assert "opening" in scripted.requests[-1].last_user_message.lower() or "hours" in (
        scripted.requests[-1].last_user_message.lower()
    )
