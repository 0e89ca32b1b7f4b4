"""Capacity bench: how many simultaneous calls one wacall process serves before callers wait too long.

Ramps concurrent simulated calls (1, 2, 4, 8, 12, 16, 24, 32 ... up to --max) through one process holding one
shared `Models` (one Whisper, one piper voice, one inference thread pool), as `wacall serve` does. Each
call greets, then the caller asks a few questions with a second or so of thinking time between them. At
each step it prints voice-to-voice p50/p95 at the callers, process CPU and RSS, and it stops early once
p95 passes 3 s: past that point more calls only measure a queue.

The simulated callers (their WebRTC peers, Opus encode/decode, pacing) run in the same process and add
their own CPU and memory to every figure, so the bot alone would do somewhat better than printed.

    python bench/capacity.py            # up to 16 calls
    python bench/capacity.py --max 32  # further, past the point where this machine copes
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import platform
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

from benchkit import (
    BENCH_FLOW,
    QUESTIONS,
    REPO,
    CallerLine,
    CpuWindow,
    NullTranscriber,
    V2VSplit,
    add_common_arguments,
    bot_turn_log,
    configure_logging,
    cores,
    percentile,
    presynthesize,
    rss_mb,
    split_v2v,
    wait_finished,
    wait_for_reply,
    warm_whisper,
)

from agent.config import Settings
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation

PASS_P95_S = 1.5  # a step "holds" when voice-to-voice p95 stays under this
STOP_P95_S = 3.0  # beyond this, stop ramping
TARGET_CALLS = 10
TARGET_MB_PER_CALL = 40.0


@dataclass
class CallStats:
    """One call's measurements; `error` is set when the call could not be placed or failed."""

    answer_s: float | None = None
    v2v_s: list[float] = field(default_factory=list)
    unanswered: int = 0
    stt_s: list[float] = field(default_factory=list)  # bot: end of caller speech -> transcript ready
    splits: list[V2VSplit] = field(default_factory=list)
    error: str = ""


@dataclass
class StepResult:
    calls: int
    stats: list[CallStats]
    wall_s: float
    cpu_pct: float
    host_pct: float
    loop_pct: float  # the event-loop thread's CPU, % of one core: it carries every call's media and VAD
    lag_p95_s: float | None  # how late the event loop woke a 250 ms sleep
    rss_mb: float  # median VmRSS while all the step's calls were live
    rss_peak_mb: float

    @property
    def v2v(self) -> list[float]:
        return [v for s in self.stats for v in s.v2v_s]

    @property
    def p95(self) -> float | None:
        return percentile(self.v2v, 95)

    @property
    def problems(self) -> int:
        """Failed calls plus turns the bot never answered: a step with any of these does not hold."""
        return sum(s.unanswered + bool(s.error) for s in self.stats)

    def holds(self) -> bool:
        return self.p95 is not None and self.p95 <= PASS_P95_S and self.problems == 0


def ramp(maximum: int) -> list[int]:
    """1, 2, 4, 8, then every 4 calls up to 16 and every 8 after, always ending on `maximum`."""
    steps = [n for n in (1, 2, 4, 8) if n < maximum]
    n = 12
    while n < maximum:
        steps.append(n)
        n += 4 if n < 16 else 8
    return [*steps, maximum]


async def one_call(
    sim: Simulation,
    lines: dict[str, CallerLine],
    *,
    index: int,
    turns: int,
    start_delay_s: float,
    rng: random.Random,
    quiet_s: float,
    timeout_s: float,
) -> CallStats:
    """A caller who dials, hears the greeting, asks `turns` questions with thinking time, and hangs up."""
    stats = CallStats()
    await asyncio.sleep(start_delay_s)
    # A no-op transcriber: the figures come from audio timing, and the caller must not queue its own
    # Whisper jobs behind (or in front of) the bot's.
    user = SimulatedUser(transcriber=NullTranscriber())
    try:
        sim_call, dialled = await sim.place_call(user, timeout=timeout_s)
        bot_log = bot_turn_log(sim.runtime, sim_call.id)
        await wait_for_reply(user, dialled, quiet_s=quiet_s, timeout=timeout_s)
        if user.first_bot_audio_at is not None:
            stats.answer_s = user.first_bot_audio_at - dialled
        for turn in range(turns):
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # thinking time, so calls drift out of step
            line = lines[QUESTIONS[(index + turn) % len(QUESTIONS)]]
            timing = await user.play(line.pcm, label=line.text)
            await wait_for_reply(user, timing.last_voiced_sent, quiet_s=quiet_s, timeout=timeout_s)
            if timing.voice_to_voice is None:
                stats.unanswered += 1
            else:
                stats.v2v_s.append(timing.voice_to_voice)
        stats.splits = split_v2v(user.conversation.turns, bot_log)
        await sim.meta.user_hangup(sim_call.id)
        summary = await wait_finished(sim.runtime, sim_call.id)
        if summary is not None:
            stats.stt_s = [t["transcript_ready_ms"] / 1000 for t in summary["turns"] if t["transcript_ready_ms"]]
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


async def run_step(
    sim: Simulation, lines: dict[str, CallerLine], n: int, args: argparse.Namespace, rng: random.Random
) -> StepResult:
    """`n` calls at once (starts spread over --spread s); CPU and peak RSS over the whole step."""
    gc.collect()
    peak = rss_mb()
    live_rss: list[float] = []
    lags: list[float] = []
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            now = rss_mb()
            peak = max(peak, now)
            if len(sim.runtime.calls) >= n:
                # Memory held with every call up; the median leaves out Whisper's short-lived buffers,
                # which come and go with each decode rather than with each call.
                live_rss.append(now)
            before = time.monotonic()
            await asyncio.sleep(0.25)
            lags.append(time.monotonic() - before - 0.25)

    sampler = asyncio.create_task(sample())
    cpu, t0, loop_cpu0 = CpuWindow().start(), time.monotonic(), time.thread_time()
    stats = await asyncio.gather(
        *(
            bounded_call(
                one_call(
                    sim,
                    lines,
                    index=i,
                    turns=args.turns,
                    start_delay_s=args.spread * i / n,
                    rng=random.Random(rng.random()),
                    quiet_s=args.quiet,
                    timeout_s=args.timeout,
                ),
                # Dial, greeting, every turn and the hang-up each get the per-wait timeout, plus slack.
                budget_s=args.spread + (args.turns + 3) * (args.timeout + 2),
            )
            for i in range(n)
        )
    )
    wall = time.monotonic() - t0
    cpu.stop()
    loop_pct = 100 * (time.thread_time() - loop_cpu0) / wall  # this coroutine runs on the loop's thread
    sampling = False
    await sampler
    # Let every call finish closing before the next step, so steps do not overlap.
    deadline = time.monotonic() + 10
    while sim.runtime.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    rss = percentile(live_rss, 50) or peak
    return StepResult(n, list(stats), wall, cpu.own_pct, cpu.host_pct, loop_pct, percentile(lags, 95), rss, peak)


def row(step: StepResult, base: StepResult | None) -> str:
    per_call = "-"
    if base is not None and step.calls > base.calls:
        per_call = f"{(step.rss_mb - base.rss_mb) / (step.calls - base.calls):.1f}"
    answers = [s.answer_s for s in step.stats if s.answer_s is not None]
    stt = [v for s in step.stats for v in s.stt_s]
    splits = [v for s in step.stats for v in s.splits]
    cells = [
        f"{step.calls:>5}",
        f"{ms(percentile(step.v2v, 50)):>7}",
        f"{ms(step.p95):>7}",
        f"{ms(percentile(answers, 95)):>7}",
        f"{ms(percentile([v.inbound_s for v in splits], 95)):>6}",
        f"{ms(percentile([v.bot_s for v in splits], 95)):>7}",
        f"{ms(percentile([v.outbound_s for v in splits], 95)):>7}",
        f"{ms(percentile(stt, 95)):>7}",
        f"{len(step.v2v):>3}",
        f"{step.problems:>5}",
        f"{step.cpu_pct:>5.0f}",
        f"{step.host_pct:>6.0f}",
        f"{step.loop_pct:>6.0f}",
        f"{ms(step.lag_p95_s):>7}",
        f"{step.rss_mb:>6.0f}",
        f"{step.rss_peak_mb:>6.0f}",
        f"{per_call:>8}",
        f"{step.wall_s:>6.0f}",
    ]
    return "  ".join(cells)


def ms(value_s: float | None) -> str:
    """Seconds as a bare ms number for the table (the unit is in the header); missing prints "-"."""
    return "-" if value_s is None else f"{value_s * 1000:.0f}"


_COLUMNS = [
    ("calls", ""), ("v2v p50", "ms"), ("v2v p95", "ms"), ("ans p95", "ms"), ("in p95", "ms"), ("bot p95", "ms"),
    ("out p95", "ms"), ("STT p95", "ms"), ("n", ""),
    ("fails", ""), ("CPU", "%"), ("host", "%"), ("loop", "%"), ("lag p95", "ms"), ("RSS", "MB"), ("peak", "MB"),
    ("per call", "MB"), ("wall", "s"),
]  # fmt: skip
_WIDTHS = [5, 7, 7, 7, 6, 7, 7, 7, 3, 5, 5, 6, 6, 7, 6, 6, 8, 6]
HEADER = "\n".join(
    [
        "  ".join(f"{name:>{w}}" for (name, _), w in zip(_COLUMNS, _WIDTHS, strict=True)),
        "  ".join(f"{unit:>{w}}" for (_, unit), w in zip(_COLUMNS, _WIDTHS, strict=True)),
        "  ".join("-" * w for w in _WIDTHS),
    ]
)

LEGEND = """\
Columns:
  v2v      voice-to-voice at the callers: last voiced frame sent -> first bot audio heard (p50, p95)
  ans      answer time: connect webhook sent -> first greeting audio at the caller (p95)
  in       caller's last voiced frame sent -> bot's end-of-speech estimate: media in, decoding, VAD (p95)
  bot      bot's end-of-speech estimate -> first reply frame played out: STT, flow, TTS, queues (p95)
  out      first reply frame played out -> caller hears voice: Opus, loopback, jitter buffer (p95)
           (in + bot + out = that turn's v2v: caller and bot share this process's clock)
  STT      bot's estimate of end of caller speech -> transcript ready (p95): Whisper plus its queue
  n        caller turns measured; fails = failed calls + turns the bot never answered
  CPU      this process's CPU time / wall time, as % of {cores} cores (bot and simulated callers)
  host     the whole machine's CPU busy %: this bench plus anything else (e.g. other people's tests)
  loop     the event-loop thread's CPU as % of one core (media, VAD, HTTP); near 100 it is the bottleneck
  lag      how late the event loop woke a 250 ms sleep (p95)
  RSS      median VmRSS while all the step's calls were live; peak = highest VmRSS in the step
  per call (RSS - RSS at the 1-call step) / extra calls"""


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(
        f"wacall capacity bench - {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
        f"{cores()} cores, Python {platform.python_version()}"
    )
    print(
        f"flow {BENCH_FLOW.relative_to(REPO)}; {args.turns} caller turns per call; one process, one shared Models; "
        "all traffic on 127.0.0.1"
    )
    print("NOTE: the simulated callers run in this process too and add their own CPU and memory to every figure.")
    models = Models.load(Settings())
    try:
        lines = await presynthesize(models.synthesizer, QUESTIONS)
        await warm_whisper(models, [lines[q].pcm for q in QUESTIONS[:2]])
        rss_idle = rss_mb()
        print(f"models loaded and warmed in {time.monotonic() - started:.1f} s; RSS before any call {rss_idle:.0f} MB")
        rng = random.Random(args.seed)
        results: list[StepResult] = []
        stopped = ""
        async with Simulation.start(models, flow=str(BENCH_FLOW), max_concurrent_calls=max(args.max, 1)) as sim:
            # One unmeasured call first: the first call in a process allocates codec, peer-connection and
            # server state once, which would otherwise be charged to the 1-call step and make the RSS per
            # extra call (measured against that step) come out too small or even negative.
            warm = await one_call(
                sim, lines, index=0, turns=1, start_delay_s=0, rng=rng, quiet_s=args.quiet, timeout_s=args.timeout
            )
            if warm.error:
                print(f"warm-up call failed: {warm.error}")
            print(f"warm-up call done; RSS {rss_mb():.0f} MB\n")
            print(HEADER)
            for n in ramp(args.max):
                elapsed = time.monotonic() - started
                if results and elapsed + results[-1].wall_s * 1.5 > args.budget:
                    stopped = f"stopped before {n} calls: the next step would pass the {args.budget:.0f} s time budget"
                    break
                step = await run_step(sim, lines, n, args, rng)
                results.append(step)
                print(row(step, results[0]), flush=True)
                for s in step.stats:
                    if s.error:
                        print(f"       a call failed: {s.error}")
                if step.p95 is None or step.p95 > STOP_P95_S:
                    stopped = f"stopped after {n} calls: voice-to-voice p95 passed {STOP_P95_S:.0f} s"
                    break
        # Every step up to it must hold: a count that passes once after a smaller one failed is luck.
        best = 0
        for r in results:
            if not r.holds():
                break
            best = r.calls
        extra = [(r.rss_mb - results[0].rss_mb) / (r.calls - 1) for r in results if r.calls > 1]
        print()
        if stopped:
            print(stopped)
        more = " (the largest step run: --max goes further)" if results and best == results[-1].calls else ""
        print(f"largest count with p95 ≤ {PASS_P95_S} s: {best}{more}   (target ≥ {TARGET_CALLS} concurrent calls)")
        if extra:
            print(
                f"RSS per extra call (median RSS with all calls live): {extra[-1]:.1f} MB at {results[-1].calls} calls "
                f"(target ≤ {TARGET_MB_PER_CALL:.0f} MB per extra call)"
            )
        print()
        print(LEGEND.format(cores=cores()))
        print(f"Bench wall time {time.monotonic() - started:.0f} s.")
    finally:
        models.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=16, help="largest number of concurrent calls (default 16)")
    parser.add_argument("--turns", type=int, default=3, help="caller turns per call (default 3)")
    parser.add_argument(
        "--spread", type=float, default=6.0, help="start the calls of a step over this many s (about one turn cycle)"
    )
    add_common_arguments(parser)
    parser.add_argument("--budget", type=float, default=270.0, help="do not start a step that would end past this (s)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the callers' thinking times")
    args = parser.parse_args(argv)
    configure_logging(args)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
