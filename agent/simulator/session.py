"""`wacall simulate`: a whole WhatsApp call on this machine — wacall's server, Meta's side, and a caller.

Both HTTP servers listen on 127.0.0.1 and talk to each other over real HTTP; media flows over real
WebRTC on loopback. The server is configured exactly as in production except for its URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from agent.app import create_app
from agent.config import Settings, load_settings
from agent.runtime import Models, Runtime
from agent.simulator.caller import Conversation, SimulatedUser
from agent.simulator.meta import MetaSimulator, SimCall

log = logging.getLogger(__name__)

DEFAULT_LINES = ["I want to check the status of my order.", "No, that's all. Goodbye."]
USER_WA_ID = "15550002222"
SIM_PHONE_NUMBER_ID = "106540000000002"


def bound_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, so URLs are known before servers start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    """Run a Starlette app with uvicorn inside the current event loop until the block exits."""
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Line:
    """One thing the caller says: text to synthesise, or an audio file."""

    text: str | None = None
    audio: Path | None = None

    @property
    def label(self) -> str:
        return self.text if self.text is not None else str(self.audio)


@dataclass
class SimulationResult:
    conversation: Conversation
    call_summary: dict[str, Any] | None
    sim_call: SimCall
    answer_time_s: float | None
    ended_by: str
    replies: list[str] = field(default_factory=list)  # what the caller heard: greeting, then after each line


@dataclass
class Simulation:
    """wacall + Meta + one caller, all live; use as `async with Simulation.start(...) as sim`."""

    settings: Settings
    runtime: Runtime
    meta: MetaSimulator

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        models: Models,
        *,
        flow: str | None = None,
        business_number: str = "15550001111",
        **settings_overrides: Any,
    ) -> AsyncIterator[Simulation]:
        token, secret, verify = (secrets.token_urlsafe(24) for _ in range(3))
        scratch = None
        if "data_dir" not in settings_overrides:
            # A simulated call must not mix into a real deployment's call records.
            scratch = tempfile.TemporaryDirectory(prefix="wacall-sim-")
            settings_overrides["data_dir"] = scratch.name
        meta_sock, app_sock = bound_socket(), bound_socket()
        meta_port, app_port = meta_sock.getsockname()[1], app_sock.getsockname()[1]
        settings = simulated_settings(
            graph_base_url=f"http://127.0.0.1:{meta_port}",
            whatsapp_token=token,
            app_secret=secret,
            verify_token=verify,
            flow=flow,
            business_number=business_number,
            **settings_overrides,
        )
        runtime = Runtime(settings, models)
        await runtime.warm_up()
        meta = MetaSimulator(
            webhook_url=f"http://127.0.0.1:{app_port}/webhook",
            app_secret=secret,
            access_token=token,
            phone_number_id=settings.phone_number_id,
            display_phone_number=business_number,
        )
        try:
            async with serve(meta.app, meta_sock), serve(create_app(runtime), app_sock):
                try:
                    yield cls(settings=settings, runtime=runtime, meta=meta)
                finally:
                    await runtime.hang_up_all()
                    await meta.drain_webhooks()  # Meta's terminate webhooks still reach a live server
                    await runtime.aclose()
        finally:
            await meta.aclose()
            if scratch is not None:
                scratch.cleanup()

    async def place_call(self, user: SimulatedUser, *, timeout: float = 20.0) -> tuple[SimCall, float]:
        """Dial the business; returns once the bot has accepted and media flows both ways."""
        return await dial(self.meta, user, timeout=timeout)


def simulated_settings(
    *,
    graph_base_url: str,
    whatsapp_token: str,
    app_secret: str,
    verify_token: str,
    flow: str | None = None,
    business_number: str = "15550001111",
    **overrides: Any,
) -> Settings:
    """wacall's settings for a simulated Meta: production settings, only the Graph URL and media host differ."""
    return load_settings(
        env={},
        phone_number_id=SIM_PHONE_NUMBER_ID,
        whatsapp_token=whatsapp_token,
        app_secret=app_secret,
        verify_token=verify_token,
        graph_base_url=graph_base_url,
        media_hosts=["127.0.0.1"],
        flow=flow,
        business_number=business_number,
        **overrides,
    )


async def dial(meta: MetaSimulator, user: SimulatedUser, *, timeout: float = 20.0) -> tuple[SimCall, float]:
    """The user calls the business through `meta`; returns once the bot has accepted and media flows.

    Also returns when the user dialled (monotonic), the start of the answer time.
    """
    offer = await user.make_offer()
    dialled = time.monotonic()
    sim_call = await meta.place_user_call(wa_id=USER_WA_ID, offer_sdp=offer)
    await asyncio.wait_for(sim_call.answer_ready.wait(), timeout)
    assert sim_call.answer_sdp is not None
    await user.apply_answer(sim_call.answer_sdp)
    await asyncio.wait_for(sim_call.accepted.wait(), timeout)

    async def notice_hangup() -> None:
        await sim_call.ended.wait()
        # The phone keeps playing what is already in its jitter buffer for a moment.
        await asyncio.sleep(0.3)
        user.call_ended()

    watcher = asyncio.create_task(notice_hangup())
    user.on_close(watcher.cancel)
    return sim_call, dialled


async def run_call(
    models: Models,
    lines: Sequence[Line],
    *,
    flow: str | None = None,
    listen_timeout: float = 30.0,
) -> SimulationResult:
    """Place one call, speak each line after the bot's turn, and record what both sides heard."""
    async with Simulation.start(models, flow=flow) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, dialled = await sim.place_call(user)
            replies = [await user.listen(timeout=listen_timeout)]
            answer_time = None if user.first_bot_audio_at is None else user.first_bot_audio_at - dialled
            for line in lines:
                if sim_call.ended.is_set():
                    break
                if line.audio is not None:
                    await user.play_file(line.audio)
                else:
                    await user.say(line.label)
                replies.append(await user.listen(timeout=listen_timeout))
            ended_by = "bot"
            try:
                await asyncio.wait_for(sim_call.ended.wait(), 5)
            except TimeoutError:
                ended_by = "caller"
                await sim.meta.user_hangup(sim_call.id)
            await _wait_finished(sim.runtime, sim_call.id)
            summary = sim.runtime.finished.get(sim_call.id)
            return SimulationResult(
                conversation=user.conversation,
                call_summary=summary,
                sim_call=sim_call,
                answer_time_s=answer_time,
                ended_by=ended_by,
                replies=replies,
            )
        finally:
            await user.close()


async def _wait_finished(runtime: Runtime, call_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while call_id not in runtime.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def format_result(result: SimulationResult) -> str:
    """The conversation as both sides heard it, with each turn's voice-to-voice latency."""
    out: list[str] = []
    turns = iter(result.conversation.turns)
    for who, text, _t in result.conversation.entries:
        if who == "caller":
            turn = next(turns, None)
            v2v = ""
            if turn is not None and turn.voice_to_voice is not None:
                v2v = f"   [voice-to-voice {turn.voice_to_voice * 1000:.0f} ms]"
            out.append(f"caller: {text}{v2v}")
        else:
            out.append(f"bot (as heard by the caller): {text}")
    if result.answer_time_s is not None:
        out.append(f"answer time (dial → first greeting audio): {result.answer_time_s * 1000:.0f} ms")
    if result.call_summary:
        bot_side = [f"  {e['who']}: {e['text']}" for e in result.call_summary["transcript"]]
        out.append("as the bot heard it:")
        out.extend(bot_side)
        for n, turn in enumerate(result.call_summary["turns"], 1):
            stages = ", ".join(
                f"{name.removesuffix('_ms').replace('_', ' ')} +{value:.0f} ms"
                for name, value in turn.items()
                if name.endswith("_ms") and value is not None
            )
            out.append(f"turn {n} at the bot (from end of caller speech): {stages}")
        out.append(f"call ended: {result.call_summary['end_reason']} (ended by {result.ended_by})")
    return "\n".join(out)
