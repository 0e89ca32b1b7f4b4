"""Turn-taking figures of one call, from the caller's own record of it (`agent.simulator.natural_caller`).

Everything here is judged where the caller is: when each line's first and last voiced frames went out,
and when stretches of bot speech started and stopped at the caller's ears (one clock for both, since the
bench runs caller and bot in one process). A caller line is one thought, pauses included, from its first
voiced frame to its last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.simulator.natural_caller import CallerRun, LineRecord

# Bot end-of-speech stamps a little after the caller's last frame left (network, VAD), never long after.
SPLIT_TAIL_S = 0.8


@dataclass
class LineFigures:
    false_starts: int = 0  # bot speech began while the caller was mid-line and stopped before the caller did
    talk_overs: int = 0  # bot speech began while the caller was mid-line and was still going when they finished
    v2v_s: float | None = None  # clean answer: last voiced frame sent -> first bot audio heard
    bot_turns: int = 0  # turns the bot made of this line (caller transcript entries it closed inside the line)


def bot_starts_during(line: LineRecord, spans: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """Stretches of bot speech that began after the line's first voiced frame and before its last."""
    if line.started is None or line.ended is None:
        return []
    return [(start, end) for start, end in spans if line.started < start < line.ended]


def line_figures(line: LineRecord, spans: Sequence[Sequence[float]], caller_turn_ends: Sequence[float]) -> LineFigures:
    figures = LineFigures()
    during = bot_starts_during(line, spans)
    for _, end in during:
        if line.ended is not None and end < line.ended:
            figures.false_starts += 1
        else:
            figures.talk_overs += 1
    if line.ended is not None and line.started is not None:
        going_at_end = any(start <= line.ended <= end for start, end in spans)
        if not during and not going_at_end and line.first_bot_audio is not None:
            figures.v2v_s = line.first_bot_audio - line.ended
        figures.bot_turns = sum(1 for t in caller_turn_ends if line.started <= t <= line.ended + SPLIT_TAIL_S)
    return figures


def run_figures(run: CallerRun, caller_turn_ends: Sequence[float]) -> list[LineFigures]:
    spans = run.bot_speech.spans
    return [line_figures(line, spans, caller_turn_ends) for line in run.lines]
