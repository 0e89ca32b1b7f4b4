"""Helpers shared by bench/latency.py and bench/capacity.py.

Both benches drive the real stack through `agent.simulator` (signed webhooks, Graph API, aiortc over
127.0.0.1, VAD, faster-whisper, the flow, piper). What they add here is only measurement: timing records
of what the simulated caller sent and heard, process CPU and memory, and percentiles. Nothing in this
module changes how a call behaves.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The benches are run as `python bench/x.py`, so put the repository root on the path in case wacall
# is not installed in editable mode (a fresh clone with only the dependencies installed).
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Models are loaded from installed package directories; never let a lookup fall through to the hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from agent.media.tracks import OUT_RATE  # noqa: E402
from agent.runtime import Models, Runtime  # noqa: E402
from agent.simulator.caller import VOICED_DBFS, SimulatedUser, TurnTiming  # noqa: E402
from agent.speech.audio import resample  # noqa: E402
from agent.speech.tts import Synthesizer  # noqa: E402

BENCH_FLOW = Path(__file__).resolve().parent / "flows" / "latency.yaml"
# The same threshold `SimulatedUser.play` uses for "voiced" in what it sends (int16 amplitude).
SENT_VOICED_AMPLITUDE = 500

# Caller questions; each matches one fixed-reply intent in bench/flows/latency.yaml.
QUESTIONS = [
    "Where is my order?",
    "What are your opening hours?",
    "How much is the delivery fee?",
    "Can I pay by card?",
]
LONG_QUESTION = "Please explain your returns policy."
# Said over the long answer. One breath with no commas: a pause of 200 ms or more inside it would let
# the bot resume (it treats short bursts as backchannels) and blur the stop time being measured.
BARGE_IN_LINE = "Hold on I have a different question about your opening hours"


class NullTranscriber:
    """A caller that does not need to know what the bot said: its figures come from audio timing.

    Giving the simulated caller the shared Whisper model would put the caller's own transcriptions on
    the same thread pool as the bot's and inflate the bot's figures.
    """

    async def transcribe(self, audio16k: np.ndarray) -> str:
        return ""


class RecordingUser(SimulatedUser):
    """A `SimulatedUser` that also logs (receive time, voiced) for every chunk of bot audio it hears.

    Barge-in stop time needs to know when bot audio *stopped* at the caller, which the caller's own
    fields (first/last bot audio) cannot tell. Subclassing keeps the simulator itself unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        if not callable(getattr(SimulatedUser, "_on_audio", None)):
            # Fail loudly rather than report "no barge-in" because nothing was ever logged.
            raise RuntimeError("SimulatedUser._on_audio no longer exists: update RecordingUser in bench/benchkit.py")
        super().__init__(**kwargs)
        self.frames: list[tuple[float, bool]] = []

    def _on_audio(self, pcm: np.ndarray, now: float) -> None:
        self.frames.append((now, dbfs(pcm) > VOICED_DBFS))
        super()._on_audio(pcm, now)


def dbfs(pcm: np.ndarray) -> float:
    """Level of a chunk, computed as the simulated caller does, so "voiced" means the same thing."""
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * math.log10(max(rms, 1e-9) / 32768.0)


@dataclass
class CallerLine:
    """A caller line synthesised once, at 48 kHz, with where its voice starts and ends."""

    text: str
    pcm: np.ndarray
    first_voiced_s: float
    last_voiced_s: float


async def presynthesize(synth: Synthesizer, texts: Iterable[str]) -> dict[str, CallerLine]:
    """Synthesise each caller line once before measuring, so callers cost no TTS during the bench."""
    out: dict[str, CallerLine] = {}
    for text in texts:
        pcm = await synth.synthesize(text)
        if synth.sample_rate != OUT_RATE:
            pcm = resample(pcm, synth.sample_rate, OUT_RATE)
        voiced = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SENT_VOICED_AMPLITUDE)
        first = int(voiced[0]) if voiced.size else 0
        last = int(voiced[-1]) if voiced.size else pcm.size
        out[text] = CallerLine(text, pcm, first / OUT_RATE, last / OUT_RATE)
    return out


async def warm_whisper(models: Models, clips48k: Sequence[np.ndarray]) -> None:
    """Decode a few clips at once before measuring, so each of Whisper's workers has run once.

    The benches report steady-state turns; the first decode on each worker is slower, and a real
    deployment pays it once per process, not per call.
    """
    await asyncio.gather(*(models.transcriber.transcribe(resample(pcm, OUT_RATE, 16000)) for pcm in clips48k))


async def wait_for_reply(user: SimulatedUser, since: float, *, quiet_s: float, timeout: float) -> bool:
    """Wait until the bot has spoken after `since` and then been quiet for `quiet_s` at the caller.

    Used instead of `SimulatedUser.listen`, which waits for transcripts the `NullTranscriber` never gives.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        last = user.last_bot_audio_at
        if last is not None and last > since and time.monotonic() - last >= quiet_s:
            return True
        if user.hung_up:
            return False
    return False


async def wait_finished(runtime: Runtime, call_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The bot's summary of a call (with per-turn metrics), once it has written it."""
    deadline = time.monotonic() + timeout
    while call_id not in runtime.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return runtime.finished.get(call_id)


def bot_turn_log(runtime: Runtime, call_id: str) -> list[Any]:
    """The live call's own `TurnMetrics` list (absolute monotonic timestamps), kept for after the call.

    The call summary only has stage times relative to each turn, which cannot be lined up with the
    caller's clock; the live objects can, because bot and caller share one process and one clock.
    Empty if the call is not live (it failed or already ended).
    """
    conversation = getattr(runtime.calls.get(call_id), "conversation", None)
    turns = getattr(conversation, "turns", None)
    return turns if isinstance(turns, list) else []


@dataclass
class V2VSplit:
    """One turn's voice-to-voice cut into the part before, inside and after the bot's pipeline."""

    inbound_s: float  # caller's last voiced frame sent -> bot's end-of-speech estimate (media in + VAD)
    bot_s: float  # -> bot's first reply frame played out (STT, flow, TTS, queueing)
    outbound_s: float  # -> caller hears the first voiced bot audio (media out, jitter buffer)
    # The bot's part by stage (None where the turn did not record it):
    transcript_s: float | None = None  # end-of-speech estimate -> transcript (end-of-turn wait + STT)
    reply_s: float | None = None  # -> reply text (the flow, lookups, an LLM)
    synth_s: float | None = None  # -> first reply audio synthesised
    send_s: float | None = None  # -> first reply frame played out (output pacing, a start that waits)


def split_v2v(caller_turns: Sequence[TurnTiming], bot_turns: Sequence[Any]) -> list[V2VSplit]:
    """Pair each caller turn with the bot turn that answered it and split its voice-to-voice.

    The answering bot turn is the latest one whose first reply frame went out before the caller heard
    the reply, provided its end-of-speech estimate is not from before this utterance (then it answered
    an earlier one). The three parts add up to the turn's voice-to-voice exactly.
    """
    out: list[V2VSplit] = []
    for said in caller_turns:
        heard = said.first_bot_audio
        if heard is None:
            continue
        best = None
        for bot in bot_turns:
            end, sent = getattr(bot, "caller_speech_end", None), getattr(bot, "first_audio_sent", None)
            if end is None or sent is None or sent > heard or end < said.last_voiced_sent - 1.5:
                continue
            if best is None or sent > best.first_audio_sent:
                best = bot
        if best is not None:
            marks = [
                best.caller_speech_end,
                getattr(best, "transcript_ready", None),
                getattr(best, "reply_text_ready", None),
                getattr(best, "first_audio_synthesized", None),
                best.first_audio_sent,
            ]
            stages = [b - a if a is not None and b is not None else None for a, b in itertools.pairwise(marks)]
            out.append(
                V2VSplit(
                    inbound_s=best.caller_speech_end - said.last_voiced_sent,
                    bot_s=best.first_audio_sent - best.caller_speech_end,
                    outbound_s=heard - best.first_audio_sent,
                    transcript_s=stages[0],
                    reply_s=stages[1],
                    synth_s=stages[2],
                    send_s=stages[3],
                )
            )
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile; None for no data (printed as "-", never as 0)."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def fmt_ms(value_s: float | None) -> str:
    """Seconds as whole ms; a missing value prints as "-" so it cannot be mistaken for a fast one."""
    return "-" if value_s is None or math.isnan(value_s) else f"{value_s * 1000:.0f} ms"


def p50_p95(values_s: Sequence[float]) -> str:
    """Format as `p50 X ms  p95 Y ms  (n=N)`, the summary every latency figure is printed as."""
    return f"p50 {fmt_ms(percentile(values_s, 50)):>8}  p95 {fmt_ms(percentile(values_s, 95)):>8}  (n={len(values_s)})"


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB (10^6 bytes, the unit the targets use)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6  # the kernel's "kB" is KiB
    return float("nan")


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (model inference runs in a thread pool)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cores() -> int:
    """Cores this process may run on (CPU % is relative to these, not to the host's count)."""
    return len(os.sched_getaffinity(0))


def host_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Printed next to this process's own CPU so a reader can see how much of the machine other work (for
    example tests run by other people) took while the bench ran: the figures are only as quiet as that.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


@dataclass
class CpuWindow:
    """CPU use between `start()` and `stop()`: this process's and the machine's, as % of all cores."""

    own0: float = 0.0
    busy0: float = 0.0
    total0: float = 0.0
    own_pct: float = float("nan")
    host_pct: float = float("nan")
    t0: float = 0.0

    def start(self) -> CpuWindow:
        self.own0 = cpu_seconds()
        self.busy0, self.total0 = host_cpu_seconds()
        self.t0 = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        busy, total = host_cpu_seconds()
        wall = max(time.monotonic() - self.t0, 1e-9)
        self.own_pct = 100 * (cpu_seconds() - self.own0) / (wall * cores())
        self.host_pct = 100 * (busy - self.busy0) / max(total - self.total0, 1e-9)
        return self


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both benches take, with the same meaning."""
    parser.add_argument("--quiet", type=float, default=1.0, help="bot silence (s) that ends a reply for the caller")
    parser.add_argument("--timeout", type=float, default=20.0, help="give up waiting for a reply after this many s")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the runtime at INFO")


def configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
