"""Conversation bench: do natural callers get their task done, without being talked over or hung up on?

Plays every caller script under bench/callers/<flow>/ (natural phrasings, written as callers speak, not the
flows' own examples or tests; clean ones and disfluent ones with fillers, pauses inside sentences,
self-corrections, room noise and other speaking rates) through the whole stack: signed webhooks, the
Graph API with a real round trip, aiortc over 127.0.0.1, VAD, faster-whisper, the flow and piper, with
the flows' business systems answered by agent/simulator/business_systems.py. Each script says what
completes its task (slots, end node, handover, business request). Prints, split into clean and disfluent callers:

- task completion: the share of calls whose `expect` holds (agent.simulator.caller_outcome);
- false starts per 100 caller lines: bot speech that began while the caller was mid-line (pauses
  included) and stopped before the caller did; talk-overs: the same, but the bot kept talking;
- cut-offs: calls the bot hung up while the caller was speaking;
- lines split into several turns: one line the bot took as two or more turns;
- re-prompts per call: the flow's fallback and reprompt lines the bot said;
- voice-to-voice p50/p95 over lines answered cleanly (no bot speech during the line).

Figures are printed, not asserted. Calls run a few at a time (`--concurrency`), each on its own
simulated deployment, in this process; the caller's lines are synthesised before any call starts.

    python bench/conversation.py                      # every flow, every script
    python bench/conversation.py --flows demo --limit 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

from benchkit import (
    REPO,
    CpuWindow,
    V2VSplit,
    add_common_arguments,
    configure_logging,
    cores,
    fmt_ms,
    p50_p95,
    split_v2v,
    warm_whisper,
)
from conversation_metrics import LineFigures, run_figures

from agent.config import Settings
from agent.runtime import Models
from agent.simulator.business_systems import BusinessSystems
from agent.simulator.caller import TurnTiming
from agent.simulator.caller_outcome import count_reprompts
from agent.simulator.caller_script import CallerScript, load_script
from agent.simulator.caller_voice import PiperCallerVoice
from agent.simulator.judged_call import judged_call
from agent.simulator.meta import graph_round_trip_s
from agent.simulator.natural_caller import CallerRun, NaturalCaller, resolve_flow
from agent.simulator.session import Simulation

CALLERS = Path(__file__).resolve().parent / "callers"
SPEECH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wacall" / "caller-speech"
FLOWS = ("demo", "appointment_booking", "after_hours", "payment_followup", "support_triage")
TARGETS = {
    "completion": "≥ 95 % (joint with issue 13)",
    "false_starts": "≤ 5 (disfluent)",
    "cut_offs": "0",
    "split": "0",
    "v2v": "p50 ≤ 450 ms (clean)",
}


@dataclass
class CallReport:
    flow: str
    script: CallerScript
    completed: bool = False
    problems: list[str] = field(default_factory=list)
    error: str = ""
    lines: list[LineFigures] = field(default_factory=list)
    cut_off: bool = False
    reprompts: int = 0
    unanswered: int = 0
    off_script: str = ""  # replies to unplanned questions, repeated lines, lines the bot did not need
    end_reason: str | None = None
    final_node: str | None = None
    ended_by: str | None = None
    bot_heard: list[str] = field(default_factory=list)
    bot_said: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    splits: list[V2VSplit] = field(default_factory=list)  # clean answers cut at the bot's own timestamps
    wall_s: float = 0.0

    @property
    def style(self) -> str:
        return self.script.style


def pick_scripts(folder: Path, flows: Sequence[str], limit: int | None) -> list[tuple[str, Path]]:
    chosen: list[tuple[str, Path]] = []
    for flow in flows:
        paths = sorted((folder / flow).glob("*.yaml"))
        if not paths:
            raise SystemExit(f"no caller scripts in {folder / flow}")
        chosen += [(flow, p) for p in paths[:limit]]
    return chosen


async def one_call(
    models: Models, flow: str, script: CallerScript, caller: NaturalCaller, args: argparse.Namespace
) -> CallReport:
    """One script on its own simulated deployment (its own business systems, so requests are its own)."""
    report = CallReport(flow=flow, script=script)
    started = time.monotonic()
    try:
        judged = await judged_call(models, script, caller, flow=script.flow or flow)
        run = judged.run
        report.end_reason = judged.outcome.end_reason
        report.final_node = judged.outcome.final_node
        report.ended_by = run.ended_by
        report.problems = judged.problems
        report.completed = judged.completed
        caller_ends = [e.t for e in judged.transcript if e.who == "caller"]
        report.bot_heard = [e.text for e in judged.transcript if e.who == "caller"]
        report.bot_said = judged.outcome.bot_lines
        report.reprompts = count_reprompts(report.bot_said, judged.flow)
        report.lines = run_figures(run, caller_ends)
        answered = [
            TurnTiming(said=line.text, last_voiced_sent=line.ended, first_bot_audio=line.first_bot_audio)
            for line, figures in zip(run.lines, report.lines, strict=True)
            if figures.v2v_s is not None and line.ended is not None
        ]
        report.splits = split_v2v(answered, judged.turns)
        report.cut_off = run.cut_off is not None
        report.unanswered = run.unanswered_lines
        report.timeline = timeline(run)
        kinds = [line.kind for line in run.lines]
        report.off_script = ", ".join(
            f"{count} {label}"
            for count, label in (
                (kinds.count("reply"), "replies"),
                (kinds.count("repeat"), "repeats"),
                (len(run.skipped), "skipped"),
            )
            if count
        )
    except Exception as exc:  # one failed call is a result, not a reason to stop the bench
        report.error = f"{type(exc).__name__}: {exc}"
    report.wall_s = time.monotonic() - started
    return report


def timeline(run: CallerRun) -> list[str]:
    """Who was audible when at the caller, in seconds from the moment the call connected."""
    t0 = run.connected or 0.0
    events = [(start, f"bot    {start - t0:6.2f}-{end - t0:6.2f}") for start, end in run.bot_speech.spans]
    for line in run.lines:
        if line.started is not None and line.ended is not None:
            kind = "" if line.kind == "line" else f" ({line.kind})"
            text = f"caller {line.started - t0:6.2f}-{line.ended - t0:6.2f} {line.text!r}{kind}"
            events.append((line.started, text))
    if run.call_ended_at is not None:
        events.append((run.call_ended_at, f"ended  {run.call_ended_at - t0:6.2f} by the {run.ended_by}"))
    return [text for _, text in sorted(events)]


def _pct(part: int, whole: int) -> str:
    return "-" if not whole else f"{part}/{whole} ({100 * part / whole:.0f} %)"


def _per100(count: int, lines: int) -> str:
    return "-" if not lines else f"{100 * count / lines:.1f} ({count} in {lines})"


def summary_rows(reports: Sequence[CallReport]) -> list[tuple[str, str]]:
    lines = [f for r in reports for f in r.lines]
    n = len(reports)
    return [
        ("task completion", _pct(sum(r.completed for r in reports), n)),
        ("false starts per 100 lines", _per100(sum(f.false_starts for f in lines), len(lines))),
        ("talk-overs per 100 lines (bot kept talking)", _per100(sum(f.talk_overs for f in lines), len(lines))),
        ("cut-offs (bot hung up mid-line)", f"{sum(r.cut_off for r in reports)} in {n} calls"),
        ("lines split into several turns", _per100(sum(f.bot_turns > 1 for f in lines), len(lines))),
        ("re-prompts per call", "-" if not n else f"{sum(r.reprompts for r in reports) / n:.2f}"),
        ("voice-to-voice (clean answers)", p50_p95([f.v2v_s for f in lines if f.v2v_s is not None])),
    ]


def report_text(reports: Sequence[CallReport], *, transcripts: bool) -> str:
    out: list[str] = []
    for r in reports:
        mark = "ok  " if r.completed else "FAIL"
        v2v = ", ".join(fmt_ms(f.v2v_s).removesuffix(" ms") for f in r.lines if f.v2v_s is not None) or "-"
        fs = sum(f.false_starts for f in r.lines)
        to = sum(f.talk_overs for f in r.lines)
        split = sum(f.bot_turns > 1 for f in r.lines)
        out.append(
            f"{mark} {r.flow:<20} {Path(r.script.source).stem:<28} {r.style:<9} lines {len(r.lines)}"
            f"{f' ({r.off_script})' if r.off_script else ''}"
            f" | false starts {fs} talk-overs {to} split {split} re-prompts {r.reprompts}"
            f"{' CUT-OFF' if r.cut_off else ''} | v2v {v2v} ms | {r.end_reason} at {r.final_node} ({r.wall_s:.0f} s)"
        )
        if r.error:
            out.append(f"       error: {r.error}")
        for problem in r.problems:
            out.append(f"       {problem}")
        if transcripts or not r.completed:
            out.append(f"       bot heard: {' / '.join(r.bot_heard) or '-'}")
        if transcripts:
            out.append(f"       bot said: {' / '.join(r.bot_said) or '-'}")
            out.extend(f"         {event}" for event in r.timeline)
    groups = {
        "clean": [r for r in reports if r.style == "clean"],
        "disfluent": [r for r in reports if r.style == "disfluent"],
        "all": list(reports),
    }
    table = {name: dict(summary_rows(rs)) for name, rs in groups.items()}
    target_for = {
        "task completion": TARGETS["completion"],
        "false starts per 100 lines": TARGETS["false_starts"],
        "cut-offs (bot hung up mid-line)": TARGETS["cut_offs"],
        "lines split into several turns": TARGETS["split"],
        "voice-to-voice (clean answers)": TARGETS["v2v"],
    }
    out += ["", f"{'figure (at the caller)':<46}" + "".join(f"{name:<40}" for name in groups) + "target"]
    for figure in table["all"]:
        row = "".join(f"{table[name][figure]:<40}" for name in groups)
        out.append(f"{figure:<46}{row}{target_for.get(figure, '')}")
    splits = [sp for r in reports for sp in r.splits]
    out += [
        "",
        f"where voice-to-voice goes on clean answers (caller and bot share one clock; n={len(splits)}):",
        f"  {'media in + end of turn (last voiced frame sent -> bot end-of-speech estimate)':<80}"
        f"{p50_p95([sp.inbound_s for sp in splits])}",
        f"  {'bot (end-of-speech estimate -> first reply frame played out)':<80}{p50_p95([sp.bot_s for sp in splits])}",
        f"  {'media out (first reply frame played out -> caller hears voice)':<80}"
        f"{p50_p95([sp.outbound_s for sp in splits])}",
        "  the bot's part by stage:",
    ]
    for label, name in (
        ("end-of-speech estimate -> transcript (end-of-turn wait + STT)", "transcript_s"),
        ("-> reply text (flow, lookups)", "reply_s"),
        ("-> first reply audio synthesised", "synth_s"),
        ("-> first reply frame played out", "send_s"),
    ):
        values = [v for sp in splits if (v := getattr(sp, name)) is not None]
        out.append(f"    {label:<78}{p50_p95(values)}")
    out += ["", "task completion by flow:"]
    for flow in dict.fromkeys(r.flow for r in reports):
        rs = [r for r in reports if r.flow == flow]
        out.append(f"  {flow:<22}{_pct(sum(r.completed for r in rs), len(rs))}")
    errors = sum(bool(r.error) for r in reports)
    if errors:
        out.append(f"calls that failed to run: {errors} (counted as not completed)")
    unanswered = sum(r.unanswered for r in reports)
    if unanswered:
        out.append(f"lines the bot never answered (caller went on after the reply timeout): {unanswered}")
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(
        f"wacall conversation bench - {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
        f"{cores()} cores, Python {platform.python_version()}"
    )
    flows = [f.strip() for f in args.flows.split(",") if f.strip()] if args.flows else list(FLOWS)
    chosen = pick_scripts(Path(args.callers), flows, args.limit)
    scripts = [(flow, load_script(path)) for flow, path in chosen]
    if args.style:
        scripts = [(flow, script) for flow, script in scripts if script.style == args.style]
    print(
        f"{len(scripts)} caller scripts from {Path(args.callers).resolve().relative_to(REPO, walk_up=True)}, "
        f"{args.concurrency} calls at a time; Graph API round trip {graph_round_trip_s() * 1000:.0f} ms; "
        "all traffic on 127.0.0.1"
    )
    models = Models.load(Settings())
    try:
        voice = PiperCallerVoice(cache_dir=None if args.speech_cache == "none" else Path(args.speech_cache))
        callers = [
            NaturalCaller(script, quiet_s=args.quiet, reply_timeout_s=args.timeout, end_wait_s=args.end_wait)
            for _, script in scripts
        ]

        async def render_callers() -> None:
            for caller in callers:
                await caller.prepare(voice)

        async def warm_flows() -> None:
            for flow in dict.fromkeys(flow for flow, _ in scripts):
                # A deployment synthesises its flow's fixed lines once at start-up; do it before measuring,
                # as `wacall serve` would have long before its first call.
                async with Simulation.start(models, flow=resolve_flow(flow), http=BusinessSystems()):
                    pass

        await asyncio.gather(render_callers(), warm_flows())
        clips = [line.pcm for caller in callers[:2] for line in caller.rendered or [] if line is not None][:2]
        await warm_whisper(models, clips)
        ready = time.monotonic() - started
        print(f"models loaded, flows warmed, {len(callers)} callers' lines synthesised in {ready:.1f} s\n")
        gate = asyncio.Semaphore(args.concurrency)

        async def gated(index: int) -> CallReport:
            flow, script = scripts[index]
            async with gate:
                report = await one_call(models, flow, script, callers[index], args)
            if not args.summary_only:
                print(
                    f"  {index + 1}/{len(scripts)} {flow}/{Path(script.source).stem}: "
                    f"{'completed' if report.completed else 'not completed'} ({report.wall_s:.0f} s)",
                    flush=True,
                )
            return report

        cpu = CpuWindow().start()
        reports = list(await asyncio.gather(*(gated(i) for i in range(len(scripts)))))
        cpu.stop()
        print()
        print(report_text(reports, transcripts=args.transcripts))
        wall = time.monotonic() - started
        print(
            f"\n{len(reports)} calls, {args.concurrency} at a time; bench wall time {wall:.0f} s. CPU during the calls:"
            f" this process {cpu.own_pct:.0f} % of {cores()} cores; whole machine {cpu.host_pct:.0f} % busy."
        )
    finally:
        models.close()


class _NoHandoverDesk(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "no handover queues" not in message and "handover is not configured" not in message


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", help=f"comma-separated flows (default: all of {', '.join(FLOWS)})")
    parser.add_argument("--limit", type=int, help="at most this many scripts per flow")
    parser.add_argument("--style", choices=("clean", "disfluent"), help="only the clean or the disfluent callers")
    parser.add_argument("--concurrency", type=int, default=8, help="calls at a time (default 8)")
    parser.add_argument("--callers", default=str(CALLERS), help="folder of caller scripts, one sub-folder per flow")
    parser.add_argument(
        "--end-wait", type=float, default=5.0, help="after the last line, s to wait for the bot to hang up"
    )
    parser.add_argument(
        "--speech-cache",
        default=str(SPEECH_CACHE),
        help="folder keeping the callers' synthesised lines between runs ('none': synthesise every time)",
    )
    parser.add_argument("--transcripts", action="store_true", help="print what the bot heard and said on every call")
    parser.add_argument("--summary-only", action="store_true", help="no progress line per finished call")
    add_common_arguments(parser)
    parser.set_defaults(quiet=0.7, timeout=10.0)
    args = parser.parse_args(argv)
    configure_logging(args)
    if not args.verbose:
        # Expected here, and once per call: the bench deploys the flows without a handover desk, so a handover
        # ends the call (the node it ended at is what the scripts check).
        for name in ("agent.runtime", "agent.reply_runner", "agent.conversation"):
            logging.getLogger(name).addFilter(_NoHandoverDesk())
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
