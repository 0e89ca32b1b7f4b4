"""The callers' side of bench/capacity.py, run in a process of its own: Meta's simulator and the callers.

In production the callers are phones behind Meta's relays, not threads of wacall's process. Running them
(their WebRTC peers, Opus encode/decode, pacing) in the bot's process would charge their CPU and memory to
the bot and, worse, queue their per-frame media work on the bot's event loop and GIL. Here they get their
own process and event loop; the bot process only sees signed webhooks, Graph API calls and RTP, as it
would from Meta.

The bot process starts `run_callers` with a pipe, gets Meta's Graph API port back, and then sends one
`StepOrder` per ramp step; each answer is the list of `CallStats` of that step's calls. `None` ends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from benchkit import QUESTIONS, CallerLine, NullTranscriber, wait_for_reply

from agent.media.inline_codecs import encode_audio_inline
from agent.simulator.caller import SimulatedUser, TurnTiming
from agent.simulator.meta import MetaSimulator, MetaTimings, graph_round_trip_s
from agent.simulator.session import bound_socket, dial, serve


@dataclass
class CallerSide:
    """What the callers' process needs from the bot process: where to send webhooks, secrets, lines."""

    webhook_url: str
    app_secret: str
    access_token: str
    phone_number_id: str
    business_number: str
    lines: dict[str, CallerLine]
    quiet_s: float
    timeout_s: float
    log_level: int = logging.WARNING


@dataclass
class StepOrder:
    """Place `calls` calls at once, their starts spread over `spread_s`, each with `turns` questions."""

    calls: int
    turns: int
    spread_s: float
    seed: float


@dataclass
class CallStats:
    """One call as the caller lived it; `error` is set when the call could not be placed or failed.

    `turns` carries the caller's own timestamps (monotonic clock, shared by all processes on Linux), so
    the bot process can line them up with its own per-turn metrics for the same `call_id`.
    """

    call_id: str = ""
    answer_s: float | None = None
    v2v_s: list[float] = field(default_factory=list)
    unanswered: int = 0
    turns: list[TurnTiming] = field(default_factory=list)
    error: str = ""


async def one_call(
    meta: MetaSimulator, side: CallerSide, *, index: int, turns: int, start_delay_s: float, rng: random.Random
) -> CallStats:
    """A caller who dials, hears the greeting, asks `turns` questions with thinking time, and hangs up."""
    stats = CallStats()
    await asyncio.sleep(start_delay_s)
    # The figures come from audio timing; the callers' process has no Whisper to transcribe with.
    user = SimulatedUser(transcriber=NullTranscriber())
    try:
        sim_call, dialled = await dial(meta, user, timeout=side.timeout_s)
        stats.call_id = sim_call.id
        await wait_for_reply(user, dialled, quiet_s=side.quiet_s, timeout=side.timeout_s)
        if user.first_bot_audio_at is not None:
            stats.answer_s = user.first_bot_audio_at - dialled
        for turn in range(turns):
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # thinking time, so calls drift out of step
            line = side.lines[QUESTIONS[(index + turn) % len(QUESTIONS)]]
            timing = await user.play(line.pcm, label=line.text)
            await wait_for_reply(user, timing.last_voiced_sent, quiet_s=side.quiet_s, timeout=side.timeout_s)
            if timing.voice_to_voice is None:
                stats.unanswered += 1
            else:
                stats.v2v_s.append(timing.voice_to_voice)
        stats.turns = list(user.conversation.turns)
        await meta.user_hangup(sim_call.id)
    except Exception as exc:  # one failed call is a result of the step, not a reason to stop the bench
        stats.error = f"{type(exc).__name__}: {exc}"
    finally:
        await user.close()
    return stats


async def bounded_call(call: Awaitable[CallStats], budget_s: float) -> CallStats:
    """A call that has not finished within its budget is a failed call, not a bench that never ends."""
    try:
        return await asyncio.wait_for(call, budget_s)
    except TimeoutError:
        return CallStats(error=f"did not finish within {budget_s:.0f} s")


def call_budget_s(order: StepOrder, timeout_s: float) -> float:
    """Dial, greeting, every turn and the hang-up each get the per-wait timeout, plus slack."""
    return order.spread_s + (order.turns + 3) * (timeout_s + 2)


async def run_step(meta: MetaSimulator, side: CallerSide, order: StepOrder) -> list[CallStats]:
    rng = random.Random(order.seed)
    return list(
        await asyncio.gather(
            *(
                bounded_call(
                    one_call(
                        meta,
                        side,
                        index=i,
                        turns=order.turns,
                        start_delay_s=order.spread_s * i / order.calls,
                        rng=random.Random(rng.random()),
                    ),
                    call_budget_s(order, side.timeout_s),
                )
                for i in range(order.calls)
            )
        )
    )


async def serve_callers(conn: Connection, side: CallerSide) -> None:
    encode_audio_inline()  # the loop's default executor, as the phones' media peers will set it, before any use
    sock = bound_socket()
    port = sock.getsockname()[1]
    meta = MetaSimulator(
        webhook_url=side.webhook_url,
        app_secret=side.app_secret,
        access_token=side.access_token,
        phone_number_id=side.phone_number_id,
        display_phone_number=side.business_number,
        timings=MetaTimings(graph_round_trip=graph_round_trip_s()),  # Meta answers after a real round trip
    )
    try:
        async with serve(meta.app, sock):
            conn.send(port)
            while (order := await asyncio.to_thread(conn.recv)) is not None:
                conn.send(await run_step(meta, side, order))
            # The bot hangs up what is left before it says stop; let those webhooks reach it.
            await meta.drain_webhooks()
    finally:
        await meta.aclose()


def run_callers(conn: Connection, side: CallerSide) -> None:
    """Entry point of the callers' process."""
    logging.basicConfig(level=side.log_level, format="%(levelname)s callers %(name)s: %(message)s")
    try:
        asyncio.run(serve_callers(conn, side))
    finally:
        conn.close()


def receive(conn: Connection, timeout_s: float) -> object:
    """The callers' next message, or TimeoutError; EOFError when their process is gone."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll(0.5):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the callers' process sent nothing for {timeout_s:.0f} s")
    return conn.recv()
