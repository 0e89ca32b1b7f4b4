"""Soak bench: many calls one after another through one process; nothing may pile up.

Every call holds a WebRTC peer, decoder and pipeline tasks, threads of the inference pool, sockets, and
rows in the store. A leak of any of them is invisible in a test of one call and fatal after a week of
traffic. This places `--calls` simulated calls in sequence through one `Runtime` (real WebRTC over loopback,
real Opus, real models: every caller hears the greeting start, and every `--talk-every`th caller also talks over
it and hears the answer), then compares asyncio tasks, threads, open file descriptors and RSS after the warm-up calls
with the end. Meta's simulator and the callers run in the same process and are closed after every call, so
what is left over is wacall's (or the simulator's, which is a product feature too).

    python bench/soak.py                 # 200 calls (~3 min on 2 cores)
    python bench/soak.py --calls 50      # quicker look

Targets (issue 14): tasks, threads and fds flat; RSS growth ≤ 5 % from call `--warmup` to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import threading
import time
from dataclasses import dataclass

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

from benchkit import configure_logging, rss_mb

from agent.config import load_settings
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation

QUESTION = "What are your opening hours?"


@dataclass
class Sample:
    calls: int
    tasks: int
    threads: int
    fds: int
    rss_mb: float


def sample(calls: int) -> Sample:
    gc.collect()
    return Sample(
        calls=calls,
        tasks=len(asyncio.all_tasks()),
        threads=threading.active_count(),
        fds=len(os.listdir("/proc/self/fd")),
        rss_mb=rss_mb(),
    )


async def one_call(sim: Simulation, models: Models, talk: bool) -> float:
    user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer if talk else None)
    started = time.monotonic()
    try:
        sim_call, _ = await sim.place_call(user)
        while user.last_bot_audio_at is None:  # the greeting reached the phone
            if time.monotonic() - started > 15:
                raise TimeoutError("the bot never spoke")
            await asyncio.sleep(0.02)
        if talk:  # over the greeting: a barge-in, then a turn
            await user.say(QUESTION)
            await user.listen(timeout=6, quiet_s=0.8)
        else:
            await asyncio.sleep(0.3)
        await sim.meta.user_hangup(sim_call.id)
        for _ in range(200):
            if not sim.runtime.calls:
                break
            await asyncio.sleep(0.02)
    finally:
        await user.close()
    return time.monotonic() - started


async def main(args: argparse.Namespace) -> int:
    models = Models.load(load_settings(env={}))
    samples: list[Sample] = []
    durations: list[float] = []
    try:
        async with Simulation.start(models, graph_round_trip=0.0) as sim:
            for n in range(1, args.calls + 1):
                durations.append(await one_call(sim, models, talk=n % args.talk_every == 0))
                if n == args.warmup or n == args.calls or n % 50 == 0:
                    samples.append(sample(n))
                    s = samples[-1]
                    print(
                        f"after {n:4d} calls: tasks {s.tasks:3d}  threads {s.threads:3d}  fds {s.fds:4d}  "
                        f"RSS {s.rss_mb:7.1f} MB",
                        flush=True,
                    )
            stored = len(sim.runtime.store.recent_calls(args.calls + 10))
            live = len(sim.runtime.calls)
    finally:
        models.close()
    first, last = samples[0], samples[-1]
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb * 100
    checks = {
        "tasks flat": last.tasks <= first.tasks,
        "threads flat": last.threads <= first.threads,
        "fds flat": last.fds <= first.fds + 2,  # allow the store's WAL files to come and go
        "RSS growth <= 5 %": growth <= 5.0,
        "every call recorded and ended": stored >= args.calls and live == 0,
    }
    print()
    print(f"{args.calls} calls in {sum(durations):.0f} s (p50 {sorted(durations)[len(durations) // 2]:.2f} s/call)")
    print(
        f"from call {first.calls} to {last.calls}: tasks {first.tasks}→{last.tasks}, threads {first.threads}→"
        f"{last.threads}, fds {first.fds}→{last.fds}, RSS {first.rss_mb:.1f}→{last.rss_mb:.1f} MB ({growth:+.1f} %)"
    )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="calls before the first sample")
    parser.add_argument("--talk-every", type=int, default=10, help="every Nth caller also asks a question")
    parser.add_argument("-v", "--verbose", action="store_true")
    arguments = parser.parse_args()
    configure_logging(arguments)
    raise SystemExit(asyncio.run(main(arguments)))
