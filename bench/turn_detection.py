"""End-of-turn bench: at a pause inside a caller's utterance, is the caller done or only pausing?

Compares two detectors on the same synthetic caller audio, cut at natural mid-sentence pause points
(truth: "incomplete") and at the true end (truth: "complete"), plus short complete answers ("Yes."):

- text: wacall's rules in `agent/turn_signals.py` on the faster-whisper transcript of the audio so far
  (wacall's own transcriber, loaded by `Models.load`). `sounds_unfinished` → wait longer (incomplete);
  `looks_complete(text, min_words=2)` → end at once; anything else ends after the normal end silence;
- model: Pipecat's Smart Turn v3.2 (BSD-2-Clause), an ONNX classifier on Whisper-style log-mel features
  of the last 8 s of audio, run with onnxruntime on one thread as Pipecat runs it;
- two ways to combine them (the model only where the text is ambiguous; wait if either says so).

For each it prints accuracy, the false "complete" rate on incomplete cuts (the bot talks over the caller),
the false "incomplete" rate on complete cuts (the bot waits longer than it needs to), the CPU time per
decision and when the bot would take the turn with wacall's timers. Everything is offline and runs on the CPU.

The model is not a wacall dependency. Point `--model` at the .onnx file, at the pipecat-ai wheel or at a
folder holding either; without `--model` an installed `pipecat` and /tmp/pipecat are searched. To get it:

    pip download pipecat-ai==1.14.0 --no-deps -d /tmp/pipecat     # the wheel only, nothing installed
    python bench/turn_detection.py                                 # about 2-3 min on 2 cores
    python bench/turn_detection.py --model /tmp/pipecat/pipecat_ai-1.14.0-py3-none-any.whl -v

Figures are printed, not asserted. The speech is piper's, which is the main limit on what they mean
(see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import platform
import random
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

import numpy as np
from benchkit import CpuWindow, cores, percentile

from agent.config import Settings, TurnSettings, VadSettings
from agent.runtime import Models
from agent.simulator.caller_script import Say, VoiceStyle, parse_markup
from agent.simulator.caller_voice import EDGE_MARGIN_S, RATE, PiperCallerVoice, render_line, trim
from agent.simulator.room_noise import noise_buffer
from agent.speech.audio import resample
from agent.speech.stt import WhisperTranscriber
from agent.turn_signals import looks_complete, sounds_unfinished

MODEL_NAME = "smart-turn-v3.2-cpu.onnx"
MODEL_MEMBER = f"pipecat/audio/turn/smart_turn/data/{MODEL_NAME}"
SEARCH_DIRS = (Path("/tmp/pipecat"),)
GET_MODEL = (
    "Smart Turn v3.2 not found. Fetch the pipecat-ai wheel (no install, no dependencies):\n"
    "    pip download pipecat-ai==1.14.0 --no-deps -d /tmp/pipecat\n"
    "then run again, or pass --model PATH (the .onnx, the .whl or a folder with either); --text-only skips it."
)
STT_RATE = 16000
LEAD_S = 0.3  # audio before the first word, as a VAD's pre-roll would keep (Pipecat keeps 0.5 s)
CUT = "|"  # marks a pause point inside an utterance in CORPUS

# (kind, text). Each "|" is a natural pause point mid-thought: the audio up to there is an "incomplete"
# cut, the whole line a "complete" one. Inline [um]/[uh]/[er] is a drawn-out filler, as in caller scripts.
# None of these come from the shipped flows' examples or tests.
CORPUS: list[tuple[str, str]] = [
    ("booking", "I'd like to book a table for | four people on Friday evening."),
    ("booking", "Can I book an appointment for the | twenty third of March?"),
    ("booking", "I want to | change my booking to next week."),
    ("booking", "We'd like a table for two and | a high chair for the baby, please."),
    ("booking", "Could I book a haircut with | Sarah on Saturday morning?"),
    ("booking", "I need to reschedule my appointment because | I'm going to be away that week."),
    ("booking", "Is there any chance I could get a slot on | Thursday afternoon?"),
    ("booking", "I'm calling to book a | delivery for tomorrow."),
    ("booking", "My name is | Daniel Roberts, and I have a booking at seven."),
    ("booking", "Book it for | half past six, please."),
    ("digits", "My order number is four eight | one five five two."),
    ("digits", "The reference is seven seven | three nine | zero one."),
    ("digits", "It's order | six two eight four."),
    ("digits", "My phone number is oh seven seven | nine zero | one two three four."),
    ("digits", "I ordered it on the | fourteenth and it still hasn't arrived."),
    ("digits", "The tracking number ends in | three one nine."),
    ("digits", "I was charged twice for | order nine four two."),
    ("digits", "Where is my order? I placed it | on Monday."),
    ("yes_no", "Yes, and | could you also send me a receipt?"),
    ("yes_no", "No, but | I'd like to know when it will arrive."),
    ("yes_no", "Yeah, that's fine, but | can you make it a bit later?"),
    ("yes_no", "Yes please, and | can I add a dessert to that?"),
    ("yes_no", "No, I actually wanted the | large one, not the small one."),
    ("yes_no", "Yes, it's for | my daughter."),
    ("question", "What time do you | close on Sundays?"),
    ("question", "How much does it cost to | deliver to Leeds?"),
    ("question", "Can I pay with | a credit card?"),
    ("question", "Do you have any | tables free tonight at eight?"),
    ("question", "Is it possible to | speak to someone about a refund?"),
    ("question", "Where do I | send the returns?"),
    ("question", "Could you tell me if | my parcel has been dispatched?"),
    ("correction", "I'd like Tuesday, no, | Wednesday at ten."),
    ("correction", "It's for three, sorry, | four people."),
    ("correction", "The number is four two, no wait, | four three one."),
    ("correction", "Can I get the, [um] the | blue one instead?"),
    ("correction", "Friday at six, actually make that | seven."),
    ("correction", "My surname is Smith, no, | Smyth, with a Y."),
    ("filler", "I'm calling about, [um] | my delivery."),
    ("filler", "I was wondering if [uh] | you could help me with a return."),
    ("filler", "So, [um] | I got a text saying my parcel was delayed."),
    ("filler", "I'd like to, [er] | cancel my subscription."),
    ("filler", "It's about the [um] | the invoice you sent last week."),
    ("filler", "Hi, yeah, I was just | calling to check my booking."),
    ("filler", "Hello, I wanted to ask about | the opening hours over Christmas."),
    # Pauses after a finished clause, where the caller goes on: "incomplete" (the issue's "Yes please, that'd
    # be great" split into two turns), but the words so far are a whole answer. Scored apart from the rest.
    ("clause", "Yes please, | that'd be great."),
    ("clause", "Hi, yeah, | I'm calling about my order."),
    ("clause", "I'd like to book a table. | For four people, at eight."),
    ("clause", "That's fine. | Actually, could we make it half past?"),
    ("clause", "My order hasn't arrived. | It was meant to come on Monday."),
    ("clause", "No, that's right. | And can you text me the confirmation?"),
    ("clause", "I'm calling about a refund, | for the shoes I sent back."),
    ("clause", "Okay, great. | One more thing, do you deliver on Sundays?"),
    ("short", "Yes."),
    ("short", "No."),
    ("short", "No thanks."),
    ("short", "Tuesday."),
    ("short", "Yes please."),
    ("short", "That's right."),
    ("short", "Two."),
    ("short", "Seven thirty."),
    ("short", "Correct."),
    ("short", "Nope, that's all."),
    ("short", "Sure."),
    ("short", "Tomorrow morning."),
    ("short", "By card."),
    ("short", "Four eight one five five two."),
    ("short", "Thank you, bye."),
]

RENDERINGS = {
    "separate": "each stretch its own piper call, pauses as digital silence (how the simulator's natural caller"
    " speaks): the words before a pause end with a sentence's falling pitch",
    "comma": "the whole line in one piper call with a comma at each pause point, cut in the comma's gap:"
    " the words before it keep the rising pitch of an unfinished clause",
}


@dataclass
class Cut:
    """Audio from the start of an utterance to one decision point, and what the caller really meant."""

    uid: int
    kind: str
    rendering: str
    complete: bool
    words: str  # what was said up to the cut
    pcm16k: np.ndarray  # float32, lead-in + speech + `tail` of pause
    transcript: str = ""
    stt_cpu_s: float = 0.0
    stt_wall_s: float = 0.0
    text_state: str = ""  # "end" (looks complete), "hold" (sounds unfinished), "default" (neither)
    rule_cpu_s: float = 0.0
    p_complete: float | None = None
    model_cpu_s: float = 0.0
    model_thread_cpu_s: float = 0.0  # the calling thread's share (onnxruntime runs on it with 1 thread)
    model_wall_s: float = 0.0


# ---- the model -----------------------------------------------------------------------------------


def find_model(given: str | None) -> tuple[str, bytes] | None:
    """(where, onnx bytes) of Smart Turn v3.2: a file, a wheel (read in place) or a folder of either."""
    candidates: list[Path] = []
    if given:
        candidates.append(Path(given).expanduser())
    else:
        spec = importlib.util.find_spec("pipecat")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / "audio/turn/smart_turn/data" / MODEL_NAME for p in spec.submodule_search_locations]
        candidates += list(SEARCH_DIRS)
    for path in candidates:
        found = _model_in(path)
        if found is not None:
            return found
    if given:
        raise SystemExit(f"no {MODEL_NAME} in {given}\n{GET_MODEL}")
    return None


def _model_in(path: Path) -> tuple[str, bytes] | None:
    if path.is_file() and path.suffix == ".onnx":
        return str(path), path.read_bytes()
    if path.is_file() and path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            if MODEL_MEMBER in wheel.namelist():
                return f"{path}!{MODEL_MEMBER}", wheel.read(MODEL_MEMBER)
        return None
    if path.is_dir():
        for inner in sorted(path.rglob(MODEL_NAME)) + sorted(path.rglob("pipecat_ai-*.whl"), reverse=True):
            found = _model_in(inner)
            if found is not None:
                return found
    return None


class SmartTurn:
    """Smart Turn v3.x as Pipecat runs it: the last `window` seconds of 16 kHz audio (zero-padded in
    front when shorter), normalised to zero mean and unit variance, as Whisper log-mel features; the
    single output is the probability that the turn is complete.

    The input size is read from the model itself, and the features come from faster-whisper's own
    extractor (already installed for STT). Given the same normalised window it gives the same numbers as
    Pipecat's vendored copy of transformers' WhisperFeatureExtractor (checked on this corpus: within 2e-6;
    the int8 model's output then matched Pipecat's path on all but one of 24 cuts, 0.63 against 0.51).
    """

    def __init__(self, onnx: bytes, *, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            raise SystemExit(f"unexpected Smart Turn inputs: {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        _batch, n_mels, frames = inputs[0].shape
        if not isinstance(n_mels, int) or not isinstance(frames, int):
            raise SystemExit(f"Smart Turn input {inputs[0].shape} has no fixed mel/frame size")
        self.spec = f"{self.input_name} {list(inputs[0].shape)} → {self._session.get_outputs()[0].name}"
        self.n_mels, self.frames = n_mels, frames
        self.window = frames * 160  # Whisper's 10 ms hop at 16 kHz
        self._features = FeatureExtractor(n_mels, sampling_rate=STT_RATE, chunk_length=self.window // STT_RATE)

    def features(self, audio16k: np.ndarray) -> np.ndarray:
        x = np.asarray(audio16k, dtype=np.float32)[-self.window :]
        x = np.pad(x, (self.window - x.size, 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)
        if mel.shape != (self.n_mels, self.frames):
            raise SystemExit(f"features {mel.shape} do not fit the model's ({self.n_mels}, {self.frames})")
        return mel.astype(np.float32)[None]

    def predict(self, audio16k: np.ndarray) -> float:
        out = self._session.run(None, {self.input_name: self.features(audio16k)})[0]
        p = float(np.asarray(out).reshape(-1)[0])
        if not 0.0 <= p <= 1.0:
            raise SystemExit(f"Smart Turn returned {p}, not a probability: is this the v3 model?")
        return p


# ---- test audio ----------------------------------------------------------------------------------


def pieces(text: str) -> list[str]:
    return [p.strip() for p in text.split(CUT)]


def plain(text: str) -> str:
    """The words as spoken, without pause marks or filler markup."""
    return " ".join(re.sub(r"\[(\w+)\]", r"\1", text.replace(CUT, " ")).split())


def with_comma(prefix: str) -> str:
    """The words before a pause point, ending in a comma unless they already end in punctuation."""
    p = re.sub(r"\[(\w+)\]", r"\1", prefix).rstrip()
    return p if p.endswith((",", ".", "?", "!")) else p + ","


@dataclass
class Rendered:
    pcm: np.ndarray  # int16 48 kHz, speech only (no lead, no tail)
    cuts: list[int] = field(default_factory=list)  # sample index where each pause starts


async def separate(voice: PiperCallerVoice, text: str, scale: float, rng: random.Random) -> Rendered:
    """The line as the natural caller speaks it: a pause of 0.6-1.5 s at each pause point."""
    markup = f" [pause {rng.uniform(0.6, 1.5):.2f}] ".join(pieces(text))
    line = await render_line(Say(tuple(parse_markup(markup))), voice, VoiceStyle(length_scale=scale), rng)
    cuts = [round(span.start_s * RATE) for span in line.spans if span.kind == "pause"]
    return Rendered(line.pcm, cuts)


async def comma(voice: PiperCallerVoice, text: str, scale: float) -> Rendered:
    """The whole line in one breath with a comma at each pause point; each cut is the comma's gap that
    starts nearest to where the words before it end when spoken alone."""
    parts = pieces(text)
    full = " ".join([*(with_comma(p) for p in parts[:-1]), re.sub(r"\[(\w+)\]", r"\1", parts[-1])])
    pcm = trim(await voice.speak(full, scale))
    gaps = _gaps(pcm)
    cuts: list[int] = []
    for i in range(1, len(parts)):
        prefix = " ".join(with_comma(p) for p in parts[:i])
        alone = trim(await voice.speak(prefix, scale)).size
        near = [g for g in gaps if g > (cuts[-1] if cuts else 0)]
        best = min(near, key=lambda g: abs(g - alone), default=None)
        if best is None or abs(best - alone) > 0.3 * RATE:
            raise RuntimeError(f"no comma pause near {alone / RATE:.2f} s in {full!r}")
        cuts.append(best)
    margin = round(EDGE_MARGIN_S * RATE)  # keep the word's soft ending, as `trim` does for a stretch
    return Rendered(pcm, [c + margin for c in cuts])


def _gaps(pcm: np.ndarray, min_s: float = 0.12) -> list[int]:
    """Starts of quiet stretches of at least `min_s` inside the speech (a comma's pause)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 200)
    if loud.size < 2:
        return []
    d = np.diff(loud)
    return [int(loud[i]) + 1 for i in np.flatnonzero(d >= min_s * RATE)]


def to_16k(pcm48: np.ndarray, tail_s: float, noise: np.ndarray | None) -> np.ndarray:
    """Lead-in + speech + `tail_s` of pause, with the room's noise under all of it, as float32 at 16 kHz."""
    body = np.concatenate(
        [np.zeros(round(LEAD_S * RATE)), pcm48.astype(np.float64), np.zeros(round(tail_s * RATE))]
    )
    if noise is not None:
        body = body + np.resize(noise, body.size)
    pcm = np.clip(np.rint(body), -32768, 32767).astype(np.int16)
    return resample(pcm, RATE, STT_RATE).astype(np.float32) / 32768.0


async def build_cuts(args: argparse.Namespace, renderings: Sequence[str]) -> list[Cut]:
    voice = PiperCallerVoice()
    noise = None if args.noise_dbfs is None else noise_buffer(args.noise_dbfs, seed=args.seed)
    out: list[Cut] = []
    for uid, (kind, text) in enumerate(CORPUS[: args.limit]):
        rng = random.Random(f"turn-bench:{args.seed}:{uid}")
        scale = rng.uniform(0.9, 1.25)  # speaking rate: piper's length scale, > 1 is slower
        for rendering in renderings:
            if kind == "short" and rendering != renderings[0]:
                continue  # no pause point, so both renderings are the same audio: count it once
            line = await (separate(voice, text, scale, rng) if rendering == "separate" else comma(voice, text, scale))
            parts = pieces(text)
            for i, at in enumerate(line.cuts):
                words = plain(" ".join(parts[: i + 1]))
                out.append(Cut(uid, kind, rendering, False, words, to_16k(line.pcm[:at], args.tail, noise)))
            out.append(Cut(uid, kind, rendering, True, plain(text), to_16k(line.pcm, args.tail, noise)))
    return out


# ---- measuring -----------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, process CPU s, wall s): process CPU counts the model libraries' own worker threads too."""
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - c0, time.perf_counter() - w0


def text_state(text: str, min_words: int) -> str:
    if sounds_unfinished(text):
        return "hold"
    return "end" if looks_complete(text, min_words) else "default"


def measure(cuts: Sequence[Cut], stt: WhisperTranscriber, model: SmartTurn | None, args: argparse.Namespace) -> None:
    """Every transcript first, then every model decision: CTranslate2's threads keep spinning for a moment
    after a transcript, and would be charged to a model call made right after it."""
    for n, cut in enumerate(cuts, 1):
        transcript, cut.stt_cpu_s, cut.stt_wall_s = timed(lambda c=cut: stt.transcribe_sync(c.pcm16k))
        cut.transcript = str(transcript)
        reps = 200
        c0 = time.process_time()
        for _ in range(reps):  # the rule alone takes microseconds: time it over many runs
            state = text_state(cut.transcript, args.min_words)
        cut.rule_cpu_s = (time.process_time() - c0) / reps
        cut.text_state = state
        if not args.quiet and not args.verbose and n % 50 == 0:
            print(f"  {n}/{len(cuts)} transcripts", flush=True)
    if model is not None:
        time.sleep(0.5)
        for cut in cuts:
            t0 = time.thread_time()
            p, cut.model_cpu_s, cut.model_wall_s = timed(lambda c=cut: model.predict(c.pcm16k))
            cut.model_thread_cpu_s = time.thread_time() - t0
            cut.p_complete = float(p)  # type: ignore[arg-type]
    if args.verbose:
        for cut in cuts:
            truth = "complete  " if cut.complete else "incomplete"
            p = "-" if cut.p_complete is None else f"{cut.p_complete:.2f}"
            print(f"  {cut.rendering:8} {truth} text={cut.text_state:7} p={p:4} {cut.words!r} → {cut.transcript!r}")


# ---- deciding and scoring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    complete: bool
    taken_s: float  # caller's last word -> the bot has decided and holds the transcript it will answer
    extra_cpu_s: float  # CPU on top of the transcript wacall makes at every pause anyway (speculative STT)
    model_ran: bool = False


@dataclass(frozen=True)
class Timers:
    """wacall's end-of-turn timers (agent/config.py defaults) and where in the pause decisions are made."""

    text_at_s: float  # wacall starts the transcript this far into a pause (VadSettings.pause_ms)
    tail_s: float  # how far into the pause the model decides (Pipecat: its VAD's 0.2 s stop)
    end_silence_s: float  # the normal end of turn, when nothing else decides
    hold_s: float  # the longer end of turn when the words sound unfinished
    threshold: float  # Smart Turn's p(complete) above this is "complete"


def text_only(cut: Cut, t: Timers) -> Decision:
    """wacall today: end at once on a complete sentence, wait `hold` on unfinished words, else end after the
    normal end silence. That silence (0.5 s) is shorter than every pause in the corpus, so "neither" ends the
    turn too: it counts as "complete"."""
    ready = t.text_at_s + cut.stt_wall_s
    if cut.text_state == "hold":
        return Decision(False, max(t.hold_s, ready), cut.rule_cpu_s)
    if cut.text_state == "end":
        return Decision(True, ready, cut.rule_cpu_s)
    return Decision(True, max(t.end_silence_s, ready), cut.rule_cpu_s)


def model_only(cut: Cut, t: Timers) -> Decision:
    """Smart Turn alone, run beside the transcript (two cores); "incomplete" waits the same hold as the text."""
    assert cut.p_complete is not None
    ready = max(t.text_at_s + cut.stt_wall_s, t.tail_s + cut.model_wall_s)
    done = cut.p_complete > t.threshold
    return Decision(done, ready if done else max(t.hold_s, ready), cut.model_cpu_s, True)


def model_when_ambiguous(cut: Cut, t: Timers) -> Decision:
    """The text decides when it is sure (unfinished words, or a complete sentence); the model, run after the
    transcript, decides the rest instead of the fixed end silence."""
    if cut.text_state != "default":
        return text_only(cut, t)
    assert cut.p_complete is not None
    ready = max(t.text_at_s + cut.stt_wall_s, t.tail_s) + cut.model_wall_s
    done = cut.p_complete > t.threshold
    return Decision(done, ready if done else max(t.hold_s, ready), cut.rule_cpu_s + cut.model_cpu_s, True)


def either_waits(cut: Cut, t: Timers) -> Decision:
    """Wait when the words sound unfinished or the model says "incomplete"; otherwise as the text would."""
    assert cut.p_complete is not None
    ready = max(t.text_at_s + cut.stt_wall_s, t.tail_s + cut.model_wall_s)
    if cut.text_state == "hold" or cut.p_complete <= t.threshold:
        return Decision(False, max(t.hold_s, ready), cut.rule_cpu_s + cut.model_cpu_s, True)
    return Decision(True, max(text_only(cut, t).taken_s, ready), cut.rule_cpu_s + cut.model_cpu_s, True)


DETECTORS: dict[str, Callable[[Cut, Timers], Decision]] = {
    "text (turn_signals)": text_only,
    "Smart Turn v3.2": model_only,
    "text, model if ambiguous": model_when_ambiguous,
    "wait if either says so": either_waits,
}
Detectors = dict[str, Callable[[Cut, Timers], Decision]]
SCORED_APART = "clause"
THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} % ({part}/{whole})" if whole else "-"


def ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def p50_95(values_s: Sequence[float], digits: int = 0) -> str:
    return f"{ms(percentile(values_s, 50), digits)}/{ms(percentile(values_s, 95), digits)}"


def score_table(cuts: Sequence[Cut], detectors: Detectors, t: Timers) -> list[str]:
    rows = [
        f"  {'detector':26} {'accuracy':>16} {'false complete':>17} {'false incomplete':>17}"
        f" {'extra CPU ms':>13} {'turn taken ms':>14} {'model runs':>10}",
        f"  {'':26} {'':>16} {'(talks over)':>17} {'(waits longer)':>17} {'p50/p95':>13}"
        f" {'p50/p95':>14} {'':>10}",
    ]
    for name, decide in detectors.items():
        decisions = [(c, decide(c, t)) for c in cuts]
        right = sum(c.complete == d.complete for c, d in decisions)
        inc = [d for c, d in decisions if not c.complete]
        com = [d for c, d in decisions if c.complete]
        runs = sum(d.model_ran for _, d in decisions)
        rows.append(
            f"  {name:26} {pct(right, len(decisions)):>16} {pct(sum(d.complete for d in inc), len(inc)):>17}"
            f" {pct(sum(not d.complete for d in com), len(com)):>17}"
            f" {p50_95([d.extra_cpu_s for _, d in decisions], 2 if not runs else 0):>13}"
            f" {p50_95([d.taken_s for d in com]):>14} {f'{100 * runs / len(decisions):.0f} %':>10}"
        )
    return rows


def by_kind(cuts: Sequence[Cut], detectors: Detectors, t: Timers) -> list[str]:
    kinds = list(dict.fromkeys(c.kind for c in cuts))
    rows = [
        "wrong decisions by kind of utterance, both renderings: false complete/incomplete cuts,"
        " false incomplete/complete cuts",
        f"  {'detector':26} " + " ".join(f"{k:>11}" for k in kinds),
    ]
    for name, decide in detectors.items():
        cells = []
        for kind in kinds:
            mine = [c for c in cuts if c.kind == kind]
            n_inc, n_com = sum(not c.complete for c in mine), sum(c.complete for c in mine)
            fc = sum(decide(c, t).complete for c in mine if not c.complete)
            fi = sum(not decide(c, t).complete for c in mine if c.complete)
            cells.append(f"{fc}/{n_inc} {fi}/{n_com}" if n_inc else f"{fi}/{n_com}")
        rows.append(f"  {name:26} " + " ".join(f"{cell:>11}" for cell in cells))
    return rows


def report(cuts: Sequence[Cut], t: Timers, has_model: bool) -> list[str]:
    detectors = DETECTORS if has_model else {"text (turn_signals)": text_only}
    scored = [c for c in cuts if c.kind != SCORED_APART]
    out: list[str] = []
    renderings = list(dict.fromkeys(c.rendering for c in cuts))
    groups = [(r, [c for c in scored if c.rendering == r or c.kind == "short"]) for r in renderings]
    if len(groups) > 1:
        groups.append(("all", scored))
    for rendering, group in groups:
        n_inc = sum(not c.complete for c in group)
        label = RENDERINGS.get(rendering, "both renderings together (short answers once)")
        out += ["", f"{rendering}: {label}"]
        out.append(f"  {n_inc} cuts at a mid-sentence pause, {len(group) - n_inc} at the true end (short answers too)")
        out += score_table(group, detectors, t)
    apart = [c for c in cuts if c.kind == SCORED_APART and not c.complete]
    if apart:
        out += ["", f"after a finished clause, the caller going on ({len(apart)} cuts, not in the figures above):"]
        for name, decide in detectors.items():
            out.append(f"  {name:26} false complete {pct(sum(decide(c, t).complete for c in apart), len(apart))}")
    out += ["", *by_kind(cuts, detectors, t)]
    states = {s: sum(c.text_state == s for c in scored if c.complete) for s in ("end", "default", "hold")}
    out += [
        "",
        f"text rule at the true end: ends at once {states['end']}, after the {t.end_silence_s * 1000:.0f} ms end"
        f" silence {states['default']}, holds {t.hold_s * 1000:.0f} ms {states['hold']}",
        f"CPU per decision, p50/p95 ms: Whisper transcript {p50_95([c.stt_cpu_s for c in cuts])}"
        f" (wall {p50_95([c.stt_wall_s for c in cuts])}; wacall makes it at every pause anyway and answers with it"
        f" when the turn ends), text rule {p50_95([c.rule_cpu_s for c in cuts], 3)}",
    ]
    if has_model:
        out.append(
            f"  Smart Turn (features + onnxruntime) {p50_95([c.model_cpu_s for c in cuts])}"
            f" (wall {p50_95([c.model_wall_s for c in cuts])}; the calling thread's own"
            f" {p50_95([c.model_thread_cpu_s for c in cuts])}: the rest is numpy's OpenBLAS thread, woken by the"
            " mel projection, spinning while onnxruntime runs)"
        )
        inc = [c.p_complete or 0.0 for c in scored if not c.complete]
        com = [c.p_complete or 0.0 for c in scored if c.complete]
        out.append(
            f"Smart Turn p(complete): median {np.median(inc):.2f} at mid-sentence pauses, {np.median(com):.2f} at the"
            " true end; false complete/false incomplete by threshold: "
            + ", ".join(f"{th:.1f}: {sum(p > th for p in inc)}/{sum(p <= th for p in com)}" for th in THRESHOLDS)
        )
    return out


# ---- main ----------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(
        f"wacall end-of-turn bench - {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
        f"{cores()} cores, Python {platform.python_version()}",
        flush=True,
    )
    found = None if args.text_only else find_model(args.model)
    if found is None and not args.text_only:
        raise SystemExit(GET_MODEL)
    model = None if found is None else SmartTurn(found[1], threads=args.model_threads)
    models = Models.load(Settings())
    try:
        stt = models.transcriber
        if not isinstance(stt, WhisperTranscriber):
            raise SystemExit(f"expected wacall's WhisperTranscriber, got {type(stt).__name__}")
        renderings = [r.strip() for r in args.renderings.split(",") if r.strip()]
        unknown = set(renderings) - set(RENDERINGS)
        if unknown:
            raise SystemExit(f"unknown rendering(s) {sorted(unknown)}: choose from {', '.join(RENDERINGS)}")
        cuts = await build_cuts(args, renderings)
        for cut in cuts[:2]:  # first runs of each model are slower; a real process pays that once
            stt.transcribe_sync(cut.pcm16k)
            if model is not None:
                model.predict(cut.pcm16k)
        if model is not None:
            where = found[0] if found else ""
            print(f"Smart Turn: {where}\n  input {model.spec}, {model.window / STT_RATE:.0f} s window")
        used = CORPUS[: args.limit]
        noise = "digital silence" if args.noise_dbfs is None else f"pink noise at {args.noise_dbfs:.0f} dBFS"
        print(
            f"{len(used)} utterances ({sum(k == 'short' for k, _ in used)} short answers), {len(cuts)} decisions;"
            f" audio up to {args.tail * 1000:.0f} ms into each pause; background: {noise}; audio ready in"
            f" {time.monotonic() - started:.0f} s"
        )
        cpu = CpuWindow().start()
        measure(cuts, stt, model, args)
        cpu.stop()
        vad, turn = VadSettings(), TurnSettings()
        text_at = (vad.pause_ms or vad.end_silence_ms) / 1000
        timers = Timers(text_at, args.tail, vad.end_silence_ms / 1000, turn.unfinished_hold_ms / 1000, args.threshold)
        print("\n".join(report(cuts, timers, model is not None)))
        print(
            f"\nfalse complete: the bot would talk over a caller who was only pausing; false incomplete: it waits"
            f" {timers.hold_s * 1000:.0f} ms after a finished turn. Turn taken: the caller's last word -> decided, with"
            f" the transcript in hand (the reply's flow and TTS come after), with wacall's timers: the transcript"
            f" starts {timers.text_at_s * 1000:.0f} ms into the pause"
            + (f", the model decides at {timers.tail_s * 1000:.0f} ms" if model is not None else "")
            + f". While measuring, this process used {cpu.own_pct:.0f} % of {cores()} cores and the machine was"
            f" {cpu.host_pct:.0f} % busy. Bench wall time {time.monotonic() - started:.0f} s."
        )
    finally:
        models.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Smart Turn .onnx, pipecat-ai .whl or a folder with either")
    parser.add_argument("--text-only", action="store_true", help="measure the text rule only (no model needed)")
    parser.add_argument("--renderings", default="separate,comma", help=f"of {', '.join(RENDERINGS)} (default both)")
    parser.add_argument("--tail", type=float, default=0.2, help="decide this many s into the pause (default 0.2)")
    parser.add_argument("--noise-dbfs", type=float, help="pink room noise under the speech, e.g. -45 (default none)")
    parser.add_argument("--threshold", type=float, default=0.5, help="Smart Turn p(complete) above this is complete")
    min_words = VadSettings().early_end_min_words
    parser.add_argument("--min-words", type=int, default=min_words, help="looks_complete's min_words (wacall's)")
    parser.add_argument("--model-threads", type=int, default=1, help="onnxruntime intra-op threads (Pipecat: 1)")
    parser.add_argument("--seed", type=int, default=1, help="speaking rates and pause lengths (default 1)")
    parser.add_argument("--limit", type=int, help="only the first N utterances of the corpus (a quick look)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every decision with its transcript")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
