"""Latency bench: what a WhatsApp caller waits for, measured at the caller's ears over loopback WebRTC.

Runs whole simulated calls (signed webhooks, Graph API, aiortc on 127.0.0.1, VAD, faster-whisper, the
flow, piper) one after another, with a scripted caller, and prints p50/p95 of:

- voice-to-voice: the caller's last voiced frame sent -> the caller's first bot audio received;
- barge-in stop: the caller starts talking over a long answer -> the bot's audio stops at the caller;
- answer time: the connect webhook is sent -> the first greeting audio reaches the caller;
- the bot's own per-stage timestamps (`TurnMetrics`), to show which stage the time goes to.

Figures are printed, not asserted: they depend on the machine and on what else it is running.

    python bench/latency.py --calls 3 --turns 4
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

from benchkit import (
    BARGE_IN_LINE,
    BENCH_FLOW,
    LONG_QUESTION,
    QUESTIONS,
    REPO,
    CallerLine,
    CpuWindow,
    NullTranscriber,
    RecordingUser,
    V2VSplit,
    add_common_arguments,
    bot_turn_log,
    configure_logging,
    cores,
    fmt_ms,
    p50_p95,
    presynthesize,
    split_v2v,
    wait_finished,
    wait_for_reply,
    warm_whisper,
)

from agent.config import Settings
from agent.media.tracks import OUT_RATE
from agent.runtime import Models
from agent.simulator.caller import TurnTiming
from agent.simulator.session import Simulation

STAGES = ("transcript_ready_ms", "reply_text_ready_ms", "first_audio_synthesized_ms", "first_audio_sent_ms")
BARGE_GAP_S = 0.2  # bot audio counts as stopped once the caller hears this much silence
TARGETS = {
    "v2v": "p50 ≤ 450 ms, p95 ≤ 800 ms",
    "barge": "≤ 200 ms",
    "answer": "p50 ≤ 300 ms (personalised greeting)",
}


@dataclass
class CallResult:
    """What one call measured; None means the event never happened (reported, never counted as 0)."""

    answer_s: float | None = None
    v2v_s: list[float] = field(default_factory=list)
    missed_turns: int = 0
    barge_s: float | None = None
    barge_note: str = ""
    bot_turns: list[dict[str, Any]] = field(default_factory=list)
    splits: list[V2VSplit] = field(default_factory=list)
    bot_heard: list[str] = field(default_factory=list)


def barge_in_stop(
    frames: Sequence[tuple[float, bool]], onset: float, gap_s: float = BARGE_GAP_S
) -> tuple[float, float] | None:
    """(time of the last voiced bot frame before the first silence of `gap_s` after `onset`, how long
    that silence lasted). The length is printed so a reader can tell the bot's barge-in pause (it lasts
    until the bot answers the interruption, seconds) from a pause between two sentences (a few hundred ms).

    Returns None if the bot was already silent at onset (nothing to stop) or never stopped.
    """
    last_voiced: float | None = None
    stop: float | None = None
    for t, voiced in frames:
        if stop is not None:
            if voiced:
                return stop, t - stop
            continue
        if voiced:
            last_voiced = t
        elif t > onset and last_voiced is not None and t - last_voiced >= gap_s:
            if last_voiced <= onset:
                return None
            stop = last_voiced
    if stop is None:
        return None
    return stop, frames[-1][0] - stop


async def until_mid_word(user: RecordingUser, voiced_s: float = 0.1, timeout: float = 3.0) -> None:
    """Wait until the bot has been audible for `voiced_s` without a break, so the interruption starts
    mid-word rather than in a gap between two clauses (which would make the stop look instant)."""
    deadline = time.monotonic() + timeout
    need = max(1, round(voiced_s / 0.02))
    while time.monotonic() < deadline:
        recent = user.frames[-need:]
        if len(recent) == need and all(voiced for _, voiced in recent):
            return
        await asyncio.sleep(0.005)


async def one_call(
    sim: Simulation,
    lines: dict[str, CallerLine],
    *,
    turns: int,
    barge_delay_s: float,
    quiet_s: float,
    timeout_s: float,
) -> CallResult:
    """Greeting, `turns` scripted questions, then one barge-in over the long answer; the caller hangs up."""
    result = CallResult()
    user = RecordingUser(transcriber=NullTranscriber())
    try:
        sim_call, dialled = await sim.place_call(user)
        bot_log = bot_turn_log(sim.runtime, sim_call.id)
        await wait_for_reply(user, dialled, quiet_s=quiet_s, timeout=timeout_s)
        if user.first_bot_audio_at is not None:
            result.answer_s = user.first_bot_audio_at - dialled

        scripted: list[TurnTiming] = []
        for i in range(turns):
            await asyncio.sleep(0.3)  # a caller draws breath before answering
            line = lines[QUESTIONS[i % len(QUESTIONS)]]
            timing = await user.play(line.pcm, label=line.text)
            scripted.append(timing)
            await wait_for_reply(user, timing.last_voiced_sent, quiet_s=quiet_s, timeout=timeout_s)
            if timing.voice_to_voice is None:
                result.missed_turns += 1
            else:
                result.v2v_s.append(timing.voice_to_voice)

        # Barge-in: ask for the long answer, then talk over it `barge_delay_s` after it starts.
        await asyncio.sleep(0.3)
        long_line, barge_line = lines[LONG_QUESTION], lines[BARGE_IN_LINE]
        asked = await user.play(long_line.pcm, label=long_line.text)
        deadline = time.monotonic() + timeout_s
        while asked.first_bot_audio is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if asked.first_bot_audio is None:
            result.barge_note = "the long answer never started"
        else:
            await asyncio.sleep(max(0.0, asked.first_bot_audio + barge_delay_s - time.monotonic()))
            await until_mid_word(user)
            # Start voiced: piper's leading silence would let the bot reach a gap between two of its
            # words before the interruption is even audible, and then there is nothing to stop.
            voiced_from = int(barge_line.first_voiced_s * OUT_RATE)
            said = await user.play(barge_line.pcm[voiced_from:], label=barge_line.text)
            # Speech onset: when the line's first voiced frame really left the caller's track.
            onset = said.first_voiced_sent
            assert onset is not None
            await wait_for_reply(user, said.last_voiced_sent, quiet_s=quiet_s, timeout=timeout_s)
            found = barge_in_stop(user.frames, onset)
            if found is None:
                result.barge_note = "bot was silent at onset or never stopped"
            else:
                result.barge_s = found[0] - onset
                result.barge_note = f"then silent {found[1]:.1f} s"

        result.splits = split_v2v(scripted, bot_log)
        await sim.meta.user_hangup(sim_call.id)
        summary = await wait_finished(sim.runtime, sim_call.id)
        if summary is not None:
            result.bot_turns = summary["turns"]
            result.bot_heard = [e["text"] for e in summary["transcript"] if e["who"] == "caller"]
    finally:
        await user.close()
    return result


def stage_values(turns: Sequence[dict[str, Any]], stage: str) -> list[float]:
    """One stage's times in seconds, leaving out turns where it never happened (e.g. no reply)."""
    return [t[stage] / 1000 for t in turns if t.get(stage) is not None]


def report(
    results: Sequence[CallResult], *, calls: int, turns: int, wall_s: float, cpu: CpuWindow, per_turn: bool = False
) -> str:
    """The figures as text: per call, then p50/p95 with targets, then the bot's stage breakdown."""
    out: list[str] = []
    for n, r in enumerate(results, 1):
        v2v = ", ".join(f"{v * 1000:.0f}" for v in r.v2v_s) or "-"
        barge = f"{fmt_ms(r.barge_s) if r.barge_s is not None else '-'} ({r.barge_note})"
        missed = f" ({r.missed_turns} turns unanswered)" if r.missed_turns else ""
        out.append(f"call {n}: answer {fmt_ms(r.answer_s)} | voice-to-voice {v2v} ms{missed} | barge-in stop {barge}")
        out.append(f"        bot heard: {' / '.join(r.bot_heard)}")
        if per_turn:
            for t in r.bot_turns:
                stages = " / ".join("-" if t.get(s) is None else f"{t[s]:.0f}" for s in STAGES)
                flags = " speculative" * bool(t.get("speculative_stt")) + " interrupted" * bool(t.get("interrupted"))
                out.append(f"        bot turn {t['transcript']!r}: {stages} ms{flags}")
    v2v = [v for r in results for v in r.v2v_s]
    barge = [r.barge_s for r in results if r.barge_s is not None]
    answer = [r.answer_s for r in results if r.answer_s is not None]
    missed = sum(r.missed_turns for r in results)
    out += [
        "",
        f"{'figure (at the caller)':<44}{'measured':<40}target",
        f"{'voice-to-voice':<44}{p50_p95(v2v):<40}{TARGETS['v2v']}",
        f"{'barge-in stop (speech onset -> bot silent)':<44}{p50_p95(barge):<40}{TARGETS['barge']}",
        f"{'answer time (connect webhook -> greeting)':<44}{p50_p95(answer):<40}{TARGETS['answer']}",
    ]
    if missed:
        out.append(f"turns the bot never answered: {missed} of {calls * turns} (left out of voice-to-voice)")
    splits = [s for r in results for s in r.splits]
    out += [
        "",
        f"where voice-to-voice goes (caller and bot share one clock; n={len(splits)} scripted turns):",
        f"  {'media in + VAD (last voiced frame sent -> bot end-of-speech estimate)':<72}"
        f"{p50_p95([s.inbound_s for s in splits])}",
        f"  {'bot (end-of-speech estimate -> first reply frame played out)':<72}{p50_p95([s.bot_s for s in splits])}",
        f"  {'media out (first reply frame played out -> caller hears voice)':<72}"
        f"{p50_p95([s.outbound_s for s in splits])}",
    ]
    bot_turns = [t for r in results for t in r.bot_turns]
    out += ["", f"bot stages, from the bot's end-of-caller-speech estimate (all bot turns, n={len(bot_turns)}):"]
    for stage in STAGES:
        label = stage.removesuffix("_ms").replace("_", " ")
        out.append(f"  {label:<28}{p50_p95(stage_values(bot_turns, stage))}")
    speculative = sum(1 for t in bot_turns if t.get("speculative_stt"))
    share = f"{100 * speculative / len(bot_turns):.0f} %" if bot_turns else "-"
    out.append(f"speculative STT (recognition started at the first pause): {speculative} of {len(bot_turns)} ({share})")
    interrupted = sum(1 for t in bot_turns if t.get("interrupted"))
    out.append(f"bot turns flushed by barge-in: {interrupted} (expected {len(results)}, one per call)")
    out += [
        "",
        f"{calls} calls x {turns} turns + 1 barge-in each; bench wall time {wall_s:.0f} s.",
        f"CPU during the calls: this process {cpu.own_pct:.0f} % of {cores()} cores; whole machine {cpu.host_pct:.0f} %"
        " busy (the difference is other work on the machine, which makes these figures noisier).",
        "The end-of-speech estimate is the bot's VAD end minus its silence window, so 'from end of caller"
        " speech' stages can differ from the caller-side voice-to-voice by the network and VAD delays.",
    ]
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(
        f"wacall latency bench - {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
        f"{cores()} cores, Python {platform.python_version()}"
    )
    print(f"flow {BENCH_FLOW.relative_to(REPO)}; all traffic on 127.0.0.1; the caller runs in this process")
    models = Models.load(Settings())
    try:
        lines = await presynthesize(models.synthesizer, [*QUESTIONS, LONG_QUESTION, BARGE_IN_LINE])
        await warm_whisper(models, [lines[q].pcm for q in QUESTIONS[:2]])
        print(f"models loaded and warmed in {time.monotonic() - started:.1f} s\n")
        results: list[CallResult] = []
        cpu = CpuWindow().start()
        async with Simulation.start(models, flow=str(BENCH_FLOW)) as sim:
            for _ in range(args.calls):
                results.append(
                    await one_call(
                        sim,
                        lines,
                        turns=args.turns,
                        barge_delay_s=args.barge_delay,
                        quiet_s=args.quiet,
                        timeout_s=args.timeout,
                    )
                )
                await asyncio.sleep(0.5)
        cpu.stop()
        wall = time.monotonic() - started
        print(report(results, calls=args.calls, turns=args.turns, wall_s=wall, cpu=cpu, per_turn=args.per_turn))
    finally:
        models.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="calls, one after another (default 3)")
    parser.add_argument("--turns", type=int, default=4, help="scripted caller turns per call (default 4)")
    parser.add_argument("--barge-delay", type=float, default=1.5, help="talk over the long answer after this many s")
    add_common_arguments(parser)
    parser.add_argument(
        "--per-turn", action="store_true", help="also print each bot turn's stages (transcript/reply/synth/sent)"
    )
    args = parser.parse_args(argv)
    configure_logging(args)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
