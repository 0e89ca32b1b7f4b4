"""`wacall simulate`: a whole WhatsApp call on this machine — wacall's server, Meta's side, and a caller.

Both HTTP servers listen on 127.0.0.1 and talk to each other over real HTTP; media flows over real
WebRTC on loopback. The server is configured exactly as in production (`wacall simulate` passes the
deployment's settings: config file and environment) except for its URLs, its phone number id and the
secrets it shares with Meta, which the simulation makes up. Its calls are recorded, marked simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from agent.app import create_app
from agent.config import Settings, load_settings
from agent.dialogue.effects import HttpRequest
from agent.listen_socket import listening_socket
from agent.runtime import Models, Runtime
from agent.simulator.caller import Conversation, SimulatedUser
from agent.simulator.meta import MetaSimulator, MetaTimings, SimCall, graph_round_trip_s
from agent.whatsapp.payloads import BUTTON, PayloadSource

log = logging.getLogger(__name__)

DEFAULT_LINES = ["I want to check the status of my order.", "No, that's all. Goodbye."]
USER_WA_ID = "15550002222"
SIM_PHONE_NUMBER_ID = "106540000000002"
DEFAULT_BUSINESS_NUMBER = "15550001111"

Progress = Callable[[str], None]
HttpRunner = Callable[[HttpRequest], Awaitable[tuple[bool, Any]]]


class CallNotAnswered(RuntimeError):
    """wacall ended the call without answering it (closed hours, full capacity, a bad offer)."""

    def __init__(self, sim_call: SimCall) -> None:
        super().__init__(f"call {sim_call.id} ended without being answered ({sim_call.end_status})")
        self.sim_call = sim_call


def _quiet(_line: str) -> None:
    pass


def bound_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, so URLs are known before servers start."""
    return listening_socket("127.0.0.1", 0)


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
    """One thing the caller does: say text (synthesised), play an audio file, or press keys (DTMF)."""

    text: str | None = None
    audio: Path | None = None
    keys: str | None = None  # pressed on the call's keypad, 100 ms each, 100 ms apart

    @property
    def label(self) -> str:
        if self.keys is not None:
            return f"[keys {self.keys}]"
        return self.text if self.text is not None else str(self.audio)


@dataclass
class SimulationResult:
    conversation: Conversation
    call_summary: dict[str, Any] | None
    sim_call: SimCall
    answer_time_s: float | None
    ended_by: str
    replies: list[str] = field(default_factory=list)  # what the caller heard: greeting, then after each line
    not_answered: str | None = None  # the recorded outcome when wacall turned the call away (after_hours…)
    not_answered_why: str = ""


@dataclass
class Simulation:
    """wacall + Meta + one caller, all live; use as `async with Simulation.start(...) as sim`."""

    settings: Settings
    runtime: Runtime
    meta: MetaSimulator
    app_url: str = ""  # wacall's own server (webhook, /healthz, /console when handover is configured)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        models: Models,
        *,
        flow: str | None = None,
        business_number: str | None = None,
        settings: Settings | None = None,
        http: HttpRunner | None = None,
        graph_round_trip: float | None = None,
        **settings_overrides: Any,
    ) -> AsyncIterator[Simulation]:
        """`settings` are the deployment's (config file and environment, as `serve` reads them); without
        them the simulation uses the defaults and a scratch data dir. `http` answers flows' `http` steps.
        `graph_round_trip` (s) delays each Graph API answer like the trip to Meta; default
        $WACALL_SIM_GRAPH_RTT_MS, else 100 ms."""
        token, secret, verify = (secrets.token_urlsafe(24) for _ in range(3))
        scratch = None
        if settings is None and "data_dir" not in settings_overrides:
            # A test's simulated call must not mix into the call records of wherever it runs.
            scratch = tempfile.TemporaryDirectory(prefix="wacall-sim-")
            settings_overrides["data_dir"] = scratch.name
        meta_sock, app_sock = bound_socket(), bound_socket()
        meta_port, app_port = meta_sock.getsockname()[1], app_sock.getsockname()[1]
        sim_settings = simulated_settings(
            graph_base_url=f"http://127.0.0.1:{meta_port}",
            whatsapp_token=token,
            app_secret=secret,
            verify_token=verify,
            flow=flow,
            business_number=business_number,
            base=settings,
            **settings_overrides,
        )
        runtime = Runtime(sim_settings, models, simulated=True, http=http)
        await runtime.warm_up()
        meta = MetaSimulator(
            webhook_url=f"http://127.0.0.1:{app_port}/webhook",
            app_secret=secret,
            access_token=token,
            phone_number_id=sim_settings.phone_number_id,
            display_phone_number=sim_settings.business_number,
            timings=MetaTimings(graph_round_trip=graph_round_trip_s(graph_round_trip)),
        )
        try:
            async with serve(meta.app, meta_sock), serve(create_app(runtime), app_sock):
                try:
                    yield cls(settings=sim_settings, runtime=runtime, meta=meta, app_url=f"http://127.0.0.1:{app_port}")
                finally:
                    await runtime.hang_up_all()
                    await meta.drain_webhooks()  # Meta's terminate webhooks still reach a live server
                    await runtime.aclose()
        finally:
            await meta.aclose()
            if scratch is not None:
                scratch.cleanup()

    async def place_call(
        self,
        user: SimulatedUser,
        *,
        timeout: float = 20.0,
        progress: Progress = _quiet,
        cta_payload: str | None = None,
        deeplink_payload: str | None = None,
    ) -> tuple[SimCall, float]:
        """Dial the business; returns once the bot has accepted and media flows both ways.

        `cta_payload`: the user taps a call button carrying it; `deeplink_payload`: they open a deep link with it.
        """
        return await dial(
            self.meta,
            user,
            timeout=timeout,
            progress=progress,
            cta_payload=cta_payload,
            deeplink_payload=deeplink_payload,
        )


def simulated_settings(
    *,
    graph_base_url: str,
    whatsapp_token: str,
    app_secret: str,
    verify_token: str,
    flow: str | None = None,
    business_number: str | None = None,
    base: Settings | None = None,
    **overrides: Any,
) -> Settings:
    """wacall's settings for a simulated Meta: `base` (the deployment's settings, default: the defaults) with
    only what must differ replaced: the Graph API URL, the media host and ICE servers (loopback), the phone
    number id, and the secrets, which the simulation makes up for itself."""
    simulated = {
        "phone_number_id": SIM_PHONE_NUMBER_ID,
        "whatsapp_token": whatsapp_token,
        "app_secret": app_secret,
        "verify_token": verify_token,
        "graph_base_url": graph_base_url,
        "media_hosts": ["127.0.0.1"],
        "ice_servers": [],  # both peers are on loopback; a STUN/TURN server would only slow the answer
    }
    if base is None:
        return load_settings(
            env={},
            flow=flow,
            business_number=business_number or DEFAULT_BUSINESS_NUMBER,
            **simulated,
            **overrides,
        )
    data = base.model_dump()
    data.update({key: value for key, value in {"flow": flow, **overrides}.items() if value is not None})
    data.update(simulated)
    data["business_number"] = business_number or base.business_number or DEFAULT_BUSINESS_NUMBER
    return Settings.model_validate(data)


async def _unless_ended(sim_call: SimCall, event: asyncio.Event, timeout: float) -> None:
    """Wait for `event`, unless the call ends first (raises CallNotAnswered) or `timeout` passes."""
    waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(sim_call.ended.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    if event.is_set():
        return
    if sim_call.ended.is_set():
        raise CallNotAnswered(sim_call)
    raise TimeoutError(f"call {sim_call.id}: not answered within {timeout:.0f} s")


async def dial(
    meta: MetaSimulator,
    user: SimulatedUser,
    *,
    timeout: float = 20.0,
    progress: Progress = _quiet,
    cta_payload: str | None = None,
    deeplink_payload: str | None = None,
) -> tuple[SimCall, float]:
    """The user calls the business through `meta`; returns once the bot has accepted and media flows.

    Also returns when the user dialled (monotonic), the start of the answer time.
    Raises `CallNotAnswered` at once when wacall ends the call instead of answering it.
    """
    offer = await user.make_offer()
    dialled = time.monotonic()
    progress("ringing: Meta sends wacall the connect webhook")
    sim_call = await meta.place_user_call(
        wa_id=USER_WA_ID, offer_sdp=offer, cta_payload=cta_payload, deeplink_payload=deeplink_payload
    )
    await _unless_ended(sim_call, sim_call.answer_ready, timeout)
    assert sim_call.answer_sdp is not None
    await user.apply_answer(sim_call.answer_sdp)
    await _unless_ended(sim_call, sim_call.accepted, timeout)
    progress(f"answered after {time.monotonic() - dialled:.1f} s")
    hang_up_with(user, sim_call)
    return sim_call, dialled


def hang_up_with(user: SimulatedUser, sim_call: SimCall) -> None:
    """The phone stops listening when Meta ends the call (a watcher owned by `user`, cancelled on close)."""

    async def notice_hangup() -> None:
        await sim_call.ended.wait()
        # The phone keeps playing what already reached it: under load its decoding lags the network.
        await user.media_quiet(quiet_s=0.3, limit_s=2.0)
        user.call_ended()

    watcher = asyncio.create_task(notice_hangup())
    user.on_close(watcher.cancel)


async def run_call(
    models: Models,
    lines: Sequence[Line],
    *,
    flow: str | None = None,
    listen_timeout: float = 30.0,
    settings: Settings | None = None,
    http: HttpRunner | None = None,
    progress: Progress = _quiet,
    payload: str | None = None,
    via: PayloadSource = BUTTON,
) -> SimulationResult:
    """Place one call, speak each line after the bot's turn, and record what both sides heard.

    With `payload`, the caller comes from a call button (`via="button"`) or a deep link (`via="link"`)
    carrying it, as a campaign's callers do.

    `progress` hears one short line per step as it happens (answered, each line said and heard, the end),
    since a call takes tens of seconds and the result is only printed at its end.
    """
    started = time.monotonic()
    progress("starting wacall and the simulated Meta on 127.0.0.1…")
    async with Simulation.start(models, flow=flow, settings=settings, http=http) as sim:
        progress(
            f"ready after {time.monotonic() - started:.1f} s: flow {sim.runtime.flow.name}, calls recorded in "
            f"{sim.settings.data_dir}"
        )
        if sim.runtime.handover is not None:
            progress(f"agent console for this call: {sim.app_url}/console")
        progress(f"calling the business as +{USER_WA_ID}")
        if payload is not None:
            how = "taps a call button" if via == BUTTON else "opens a deep link"
            progress(f"the caller {how} carrying the payload {payload!r}")
        origin = {"cta_payload" if via == BUTTON else "deeplink_payload": payload}
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            try:
                sim_call, dialled = await sim.place_call(user, progress=progress, **origin)
            except CallNotAnswered as exc:
                return await _not_answered(sim, exc.sim_call, progress)
            replies = [await user.listen(timeout=listen_timeout)]
            progress(f"bot: {replies[0] or '(nothing heard)'}")
            answer_time = None if user.first_bot_audio_at is None else user.first_bot_audio_at - dialled
            for line in lines:
                if sim_call.ended.is_set():
                    break
                progress(f"caller: {line.label}")
                if line.keys is not None:
                    await user.press_keys(line.keys)
                elif line.audio is not None:
                    await user.play_file(line.audio)
                else:
                    await user.say(line.label)
                replies.append(await user.listen(timeout=listen_timeout))
                progress(f"bot: {replies[-1] or '(nothing heard)'}")
            ended_by = "bot"
            try:
                await asyncio.wait_for(sim_call.ended.wait(), 5)
            except TimeoutError:
                ended_by = "caller"
                progress("the caller hangs up")
                await sim.meta.user_hangup(sim_call.id)
            await _wait_finished(sim.runtime, sim_call.id)
            summary = sim.runtime.finished.get(sim_call.id)
            reason = summary["end_reason"] if summary else "unknown"
            progress(f"call ended: {reason} (ended by {ended_by})")
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


async def _not_answered(sim: Simulation, sim_call: SimCall, progress: Progress) -> SimulationResult:
    """wacall turned the call away: say why, from the record it wrote (closed hours, full capacity…)."""
    deadline = time.monotonic() + 5
    record = sim.runtime.store.get_call(sim_call.id)
    while (record is None or record.ended_at is None) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        record = sim.runtime.store.get_call(sim_call.id)
    events = [e for e in sim.runtime.store.list_contact_events(user=USER_WA_ID, limit=20) if e.call_id == sim_call.id]
    why = str(events[0].detail.get("reason") or "") if events else ""
    outcome = (record.outcome if record else None) or "rejected"
    progress(f"wacall did not answer: {outcome}" + (f" ({why})" if why else ""))
    return SimulationResult(
        conversation=Conversation(),
        call_summary=None,
        sim_call=sim_call,
        answer_time_s=None,
        ended_by="bot",
        not_answered=outcome,
        not_answered_why=why,
    )


async def _wait_finished(runtime: Runtime, call_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while call_id not in runtime.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def format_result(result: SimulationResult) -> str:
    """The conversation as both sides heard it, with each turn's voice-to-voice latency."""
    if result.not_answered is not None:
        why = f": {result.not_answered_why}" if result.not_answered_why else ""
        return f"wacall did not answer the call ({result.not_answered}){why}"
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
