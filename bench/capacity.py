"""Capacity bench: how many simultaneous calls one wacall process serves before callers wait too long.

Ramps concurrent simulated calls (1, 2, 4, 8, 12, 16, 24, 32 ... up to --max) through one process holding one
shared `Models` (one Whisper, one piper voice, one inference thread pool), as `wacall serve` does. Each
call greets, then the caller asks a few questions with a second or so of thinking time between them. At
each step it prints voice-to-voice p50/p95 at the callers, process CPU and RSS, and it stops early once
p95 passes 3 s: past that point more calls only measure a queue.

Meta's simulator and the simulated callers (their WebRTC peers, Opus encode/decode, pacing) run in a second
process (bench/capacity_callers.py), as phones and Meta's relays are not part of a real deployment either:
CPU, RSS and event-loop figures are the bot process's own; the callers' CPU is printed beside them. Both
processes share this machine's two cores, so the callers still take CPU the bot could have used.

    python bench/capacity.py            # up to 16 calls
    python bench/capacity.py --max 32  # further, past the point where this machine copes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import logging
import multiprocessing
import os
import platform
import random
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

from benchkit import (
    BENCH_FLOW,
    QUESTIONS,
    REPO,
    CallerLine,
    CpuWindow,
    V2VSplit,
    add_common_arguments,
    configure_logging,
    cores,
    percentile,
    presynthesize,
    rss_mb,
    split_v2v,
    wait_finished,
    warm_whisper,
)
from capacity_callers import CallerSide, CallStats, StepOrder, call_budget_s, receive, run_callers

from agent.app import create_app
from agent.config import Settings
from agent.media.inline_codecs import encode_audio_inline
from agent.runtime import Models, Runtime
from agent.simulator.session import SIM_PHONE_NUMBER_ID, bound_socket, serve, simulated_settings

PASS_P95_S = 1.5  # a step "holds" when voice-to-voice p95 stays under this
STOP_P95_S = 3.0  # beyond this, stop ramping
TARGET_CALLS = 10
TARGET_MB_PER_CALL = 40.0
BUSINESS_NUMBER = "15550001111"


@dataclass
class StepResult:
    calls: int
    stats: list[CallStats]
    splits: list[V2VSplit]  # each measured turn's v2v cut at the bot's own timestamps
    stt_s: list[float]  # bot: end of caller speech -> transcript ready, every turn of the step
    wall_s: float
    cpu_pct: float  # the bot process alone
    callers_pct: float  # the callers' process (Meta's simulator and every simulated phone)
    host_pct: float
    loop_pct: float  # the bot's event-loop thread, % of one core: it carries every call's media and VAD
    lag_p95_s: float | None  # how late the bot's event loop woke a 250 ms sleep
    rss_mb: float  # median VmRSS of the bot process while all the step's calls were live
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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (the callers'), from /proc; NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass
class Bench:
    """The bot process's side: wacall's runtime serving webhooks, and the pipe to the callers' process."""

    runtime: Runtime
    conn: Connection
    callers: BaseProcess
    args: argparse.Namespace

    failed: bool = False  # the callers' process died or stopped answering

    async def order(self, order: StepOrder) -> list[CallStats]:
        try:
            self.conn.send(order)
            reply = await asyncio.to_thread(receive, self.conn, call_budget_s(order, self.args.timeout) + 30)
        except (EOFError, OSError, TimeoutError):
            self.failed = True
            raise
        if not isinstance(reply, list):
            raise RuntimeError(f"the callers' process answered {reply!r}")
        return reply

    def live_turn_logs(self, into: dict[str, list[Any]]) -> None:
        """Keep each live call's own `TurnMetrics` list: the call drops it when it ends."""
        for call_id, call in list(self.runtime.calls.items()):
            conversation = getattr(call, "conversation", None)
            if conversation is not None:
                into.setdefault(call_id, conversation.turns)

    async def run_step(self, n: int, seed: float) -> StepResult:
        """`n` calls at once (starts spread over --spread s); CPU and RSS of the bot over the whole step."""
        gc.collect()
        runtime = self.runtime
        peak = rss_mb()
        live_rss: list[float] = []
        lags: list[float] = []
        bot_turns: dict[str, list[Any]] = {}
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                now = rss_mb()
                peak = max(peak, now)
                if len(runtime.calls) >= n:
                    # Memory held with every call up; the median leaves out Whisper's short-lived buffers,
                    # which come and go with each decode rather than with each call.
                    live_rss.append(now)
                self.live_turn_logs(bot_turns)
                before = time.monotonic()
                await asyncio.sleep(0.25)
                lags.append(time.monotonic() - before - 0.25)

        sampler = asyncio.create_task(sample())
        pid = self.callers.pid or 0
        callers_cpu0, loop_cpu0 = process_cpu_seconds(pid), time.thread_time()
        cpu, t0 = CpuWindow().start(), time.monotonic()
        try:
            stats = await self.order(StepOrder(n, self.args.turns, self.args.spread, seed))
        finally:
            wall = time.monotonic() - t0
            cpu.stop()
            loop_pct = 100 * (time.thread_time() - loop_cpu0) / wall  # this coroutine runs on the loop's thread
            callers_pct = 100 * (process_cpu_seconds(pid) - callers_cpu0) / (wall * cores())
            sampling = False
            await sampler
        # Let every call finish closing before the next step, so steps do not overlap.
        deadline = time.monotonic() + 10
        while runtime.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        splits = [v for s in stats for v in split_v2v(s.turns, bot_turns.get(s.call_id, []))]
        summaries = await asyncio.gather(*(wait_finished(runtime, s.call_id, timeout=2) for s in stats if s.call_id))
        stt = [
            t["transcript_ready_ms"] / 1000
            for summary in summaries
            if summary is not None
            for t in summary["turns"]
            if t["transcript_ready_ms"]
        ]
        rss = percentile(live_rss, 50) or peak
        return StepResult(
            n, stats, splits, stt, wall, cpu.own_pct, callers_pct, cpu.host_pct, loop_pct,
            percentile(lags, 95), rss, peak,
        )  # fmt: skip


def row(step: StepResult, base: StepResult | None) -> str:
    per_call = "-"
    if base is not None and step.calls > base.calls:
        per_call = f"{(step.rss_mb - base.rss_mb) / (step.calls - base.calls):.1f}"
    answers = [s.answer_s for s in step.stats if s.answer_s is not None]
    stt, splits = step.stt_s, step.splits
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
        f"{step.callers_pct:>7.0f}",
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
    ("fails", ""), ("CPU", "%"), ("callers", "%"), ("host", "%"), ("loop", "%"), ("lag p95", "ms"), ("RSS", "MB"),
    ("peak", "MB"), ("per call", "MB"), ("wall", "s"),
]  # fmt: skip
_WIDTHS = [5, 7, 7, 7, 6, 7, 7, 7, 3, 5, 5, 7, 6, 6, 7, 6, 6, 8, 6]
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
           (in + bot + out = that turn's v2v: both processes read the same monotonic clock)
  STT      bot's estimate of end of caller speech -> transcript ready (p95): Whisper plus its queue
  n        caller turns measured; fails = failed calls + turns the bot never answered
  CPU      the bot process's CPU time / wall time, as % of {cores} cores (Whisper, piper, media, VAD, HTTP)
  callers  the callers' process (Meta's simulator and every simulated phone), as % of {cores} cores
  host     the whole machine's CPU busy %: both processes plus anything else (e.g. other people's tests)
  loop     the bot's event-loop thread's CPU as % of one core (media, VAD, HTTP); near 100 it is the bottleneck
  lag      how late the bot's event loop woke a 250 ms sleep (p95)
  RSS      the bot process's median VmRSS while all the step's calls were live; peak = its highest in the step
  per call (RSS - RSS at the 1-call step) / extra calls"""


@contextlib.asynccontextmanager
async def bot_and_callers(
    models: Models, lines: dict[str, CallerLine], args: argparse.Namespace
) -> AsyncIterator[Bench]:
    """wacall's server in this process, Meta's simulator and the callers in another, wired over loopback HTTP."""
    token, secret, verify = (secrets.token_urlsafe(24) for _ in range(3))
    encode_audio_inline()  # the loop's default executor, as the bot's media peers will set it, before any use
    app_sock = bound_socket()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of this one's models or loop
    conn, child_conn = spawn.Pipe()
    side = CallerSide(
        webhook_url=f"http://127.0.0.1:{app_sock.getsockname()[1]}/webhook",
        app_secret=secret,
        access_token=token,
        phone_number_id=SIM_PHONE_NUMBER_ID,
        business_number=BUSINESS_NUMBER,
        lines=lines,
        quiet_s=args.quiet,
        timeout_s=args.timeout,
        log_level=logging.getLogger().level,
    )
    callers = spawn.Process(target=run_callers, args=(child_conn, side), name="wacall-bench-callers", daemon=True)
    callers.start()
    child_conn.close()
    try:
        meta_port = await asyncio.to_thread(receive, conn, 60)
        with tempfile.TemporaryDirectory(prefix="wacall-bench-") as data_dir:
            settings = simulated_settings(
                graph_base_url=f"http://127.0.0.1:{meta_port}",
                whatsapp_token=token,
                app_secret=secret,
                verify_token=verify,
                flow=str(BENCH_FLOW),
                business_number=BUSINESS_NUMBER,
                data_dir=data_dir,
                max_concurrent_calls=max(args.max, 1),
            )
            runtime = Runtime(settings, models)
            await runtime.warm_up()
            try:
                async with serve(create_app(runtime), app_sock):
                    bench = Bench(runtime, conn, callers, args)
                    try:
                        yield bench
                    finally:
                        if bench.failed:
                            callers.kill()  # a hung Meta would make every hang-up below wait for its timeout
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(runtime.hang_up_all(), 30)
                        with contextlib.suppress(OSError):
                            conn.send(None)  # the callers deliver Meta's last webhooks, then exit
                        await asyncio.to_thread(callers.join, 20)
            finally:
                await runtime.aclose()
    finally:
        app_sock.close()
        conn.close()
        if callers.is_alive():
            callers.kill()
        await asyncio.to_thread(callers.join, 5)


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(
        f"wacall capacity bench - {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
        f"{cores()} cores, Python {platform.python_version()}"
    )
    print(
        f"flow {BENCH_FLOW.relative_to(REPO)}; {args.turns} caller turns per call; one wacall process, one shared "
        "Models; Meta's simulator and the callers in a second process; all traffic on 127.0.0.1"
    )
    models = Models.load(Settings())
    try:
        lines = await presynthesize(models.synthesizer, QUESTIONS)
        await warm_whisper(models, [lines[q].pcm for q in QUESTIONS[:2]])
        rss_idle = rss_mb()
        print(f"models loaded and warmed in {time.monotonic() - started:.1f} s; RSS before any call {rss_idle:.0f} MB")
        rng = random.Random(args.seed)
        results: list[StepResult] = []
        stopped = ""
        async with bot_and_callers(models, lines, args) as bench:
            # One unmeasured call first: the first call in a process allocates codec, peer-connection and
            # server state once, which would otherwise be charged to the 1-call step and make the RSS per
            # extra call (measured against that step) come out too small or even negative.
            warm = await bench.order(StepOrder(calls=1, turns=1, spread_s=0, seed=rng.random()))
            for failed in (s for s in warm if s.error):
                print(f"warm-up call failed: {failed.error}")
            print(f"warm-up call done; RSS {rss_mb():.0f} MB\n")
            print(HEADER)
            for n in ramp(args.max):
                elapsed = time.monotonic() - started
                if results and elapsed + results[-1].wall_s * 1.5 > args.budget:
                    stopped = f"stopped before {n} calls: the next step would pass the {args.budget:.0f} s time budget"
                    break
                try:
                    step = await bench.run_step(n, rng.random())
                except (EOFError, OSError, TimeoutError) as exc:
                    # The callers' process died or stopped answering: report what was measured so far.
                    stopped = f"stopped at {n} calls: the callers' process failed ({type(exc).__name__}: {exc})"
                    break
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
