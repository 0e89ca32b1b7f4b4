"""Caller scripts: what a simulated person says on a call, and how they say it, from a YAML file.

Real callers do not speak like a flow's test conversation: they hesitate ("um"), pause in the middle of
a thought, correct themselves ("Tuesday, no, Wednesday"), talk at their own pace, call from noisy rooms,
talk over the bot or say nothing at all. A caller script writes that down so the same caller can be
replayed, deterministically (one `seed`), through the whole stack by `agent.simulator.natural_caller`.

    name: order status, with a pause in the middle
    flow: demo                     # a shipped flow (prompts/demo.yaml) or a path; optional
    style: disfluent               # clean | disfluent: how reports group callers
    seed: 3
    voice: {length_scale: 1.1, variation: 0.05}   # piper's length scale (>1 is slower), ± per stretch
    noise: {level_dbfs: -42, color: pink}         # room noise under speech and in every gap
    caller: {name: Sam}            # the WhatsApp profile name the business sees
    direction: user_initiated      # or business_initiated: the business calls this person
    lines:
      - say: "Hi, [um] I'm calling about [pause 1.0] an order I placed last week."
      - say: "Tuesday, no, Wednesday."
        think: 0.4                 # seconds after the bot stopped talking (default: drawn from the seed)
      - say: "Sorry, hang on."
        when: {barge_in: 1.5}      # talk over the bot 1.5 s after its next reply starts
      - silence: 8                 # say nothing for 8 s
      - segments:                  # the same thing as inline markup, spelled out
          - "I'd like to book"
          - pause: 1.0
          - filler: um
          - {say: "for Tuesday", rate: 1.3}
      - say: "Ten in the morning."
        answers: "what time"       # the question this line answers (a regex over the bot's last words)
      - keys: "2#"                 # press keys on the call's keypad (RFC 4733 DTMF), e.g. in an IVR menu
        tone_ms: 100               # how long each key is held (default 100), gap_ms between keys (100)
    replies:                       # answers to questions the script did not plan for
      - {when_bot_says: "is that right|shall i book", say: "Yes, that's right."}
    expect: {slots: {date: tomorrow}, node: booked}   # what "task completed" means (see caller_outcome)

Inline markup in `say`: `[pause 0.8]` (seconds; `[pause]` is 0.6 s), `[um]`, `[uh]`, `[er]`, `[erm]`,
`[hmm]` (a drawn-out filler, spoken apart from the words around it) and `...`/`…` (a 0.6 s pause, or
nothing when it only surrounds an explicit `[pause]`). A filler written as a plain word ("um") is
simply spoken inline. `when` is `after_bot` (the default: once the bot has finished), `{barge_in: S}`
or `{wait: S}` (S seconds after the previous step, whatever the bot does).

A caller answers what it is asked. Before each `after_bot` line it looks at what the bot said since its
last line: a later line whose `answers` matches is said next (the bot already knew the lines between,
say from one long first sentence); else a matching `replies` entry is said; else, when the bot asked
again what the previous line answered, that line is said once more; else the next line, as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.media.dtmf import check_keys

DEFAULT_PAUSE_S = 0.6
MIN_PAUSE_S = 0.05
MAX_PAUSE_S = 10.0
MIN_NOISE_DBFS = -70.0
MAX_NOISE_DBFS = -20.0
FILLERS = frozenset({"um", "uh", "er", "erm", "hmm", "mm"})
NOISE_COLORS = ("pink", "white", "brown")
STYLES = ("clean", "disfluent")
DIRECTIONS = ("user_initiated", "business_initiated")
FILLER_STRETCH = 1.7  # a hesitation is drawn out compared with the words around it

_MARKUP = re.compile(r"\[\s*([a-z]+)(?:\s+([0-9]*\.?[0-9]+))?\s*\]|\.\.\.|…", re.IGNORECASE)


class ScriptError(ValueError):
    """A caller script that cannot be played, with where the problem is."""


@dataclass(frozen=True)
class Speech:
    """Words spoken in one breath; `rate` multiplies the voice's length scale (>1 is slower)."""

    text: str
    rate: float = 1.0
    filler: bool = False


@dataclass(frozen=True)
class Pause:
    """Silence inside a line (the room's noise, if any, goes on under it)."""

    seconds: float
    explicit: bool = True  # False: from an ellipsis, dropped when it only surrounds an explicit pause


Segment = Speech | Pause


@dataclass(frozen=True)
class AfterBot:
    """Speak once the bot has finished its reply, after `think_s` (None: drawn from the script's seed)."""

    think_s: float | None = None


@dataclass(frozen=True)
class BargeIn:
    """Talk over the bot `after_s` seconds after its next stretch of speech starts."""

    after_s: float


@dataclass(frozen=True)
class Wait:
    """Speak `seconds` after the previous step ended, whatever the bot is doing."""

    seconds: float


When = AfterBot | BargeIn | Wait


@dataclass(frozen=True)
class Say:
    segments: tuple[Segment, ...]
    when: When = AfterBot()
    answers: str | None = None  # a regex over what the bot just said: the question this line answers

    @property
    def text(self) -> str:
        """The words, as a transcript of this line would show them (no markup)."""
        return " ".join(s.text for s in self.segments if isinstance(s, Speech)).strip()

    @property
    def pauses(self) -> list[float]:
        return [s.seconds for s in self.segments if isinstance(s, Pause)]


@dataclass(frozen=True)
class Silence:
    """The caller says nothing for `seconds` (and listens)."""

    seconds: float


@dataclass(frozen=True)
class Keys:
    """The caller presses keys on the call's keypad, each held `tone_ms`, `gap_ms` apart (an IVR menu)."""

    keys: str
    when: When = AfterBot()
    tone_ms: int = 100
    gap_ms: int = 100


Step = Say | Silence | Keys


@dataclass(frozen=True)
class ScriptReply:
    """Said whenever the bot's last words match `when_bot_says` (a regex), at most `max_uses` times: how a
    caller answers a question the script did not plan for ("So that is Tuesday at ten. Is that right?")."""

    when_bot_says: str
    say: Say
    max_uses: int = 2


@dataclass(frozen=True)
class VoiceStyle:
    length_scale: float = 1.0  # piper's: 1.0 is the voice's normal pace, 1.2 is 20 % slower
    variation: float = 0.0  # each stretch of speech gets length_scale × (1 ± variation), from the seed


@dataclass(frozen=True)
class NoiseSpec:
    level_dbfs: float  # RMS level of the noise alone, as the microphone sends it
    color: str = "pink"


@dataclass
class CallerScript:
    name: str
    lines: list[Step]
    flow: str | None = None
    style: str = "clean"
    seed: int = 0
    voice: VoiceStyle = field(default_factory=VoiceStyle)
    noise: NoiseSpec | None = None
    caller_name: str | None = None
    direction: str = "user_initiated"
    expect: dict[str, Any] = field(default_factory=dict)
    replies: list[ScriptReply] = field(default_factory=list)
    description: str = ""
    source: str = "<string>"

    @property
    def says(self) -> list[Say]:
        return [s for s in self.lines if isinstance(s, Say)]


# ---- parsing ----------------------------------------------------------------------------------------


def parse_markup(text: str) -> list[Segment]:
    """Split a line with inline markup into speech and pauses (see the module docstring)."""
    out: list[Segment] = []
    pos = 0
    for match in _MARKUP.finditer(text):
        _add_words(out, text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("...", "…"):
            out.append(Pause(DEFAULT_PAUSE_S, explicit=False))
            continue
        word, number = match.group(1).lower(), match.group(2)
        if word == "pause":
            out.append(Pause(_pause_seconds(float(number) if number else DEFAULT_PAUSE_S, token)))
        elif word in FILLERS:
            if number:
                raise ScriptError(f"{token!r}: a filler takes no number")
            out.append(Speech(word, rate=FILLER_STRETCH, filler=True))
        else:
            raise ScriptError(f"unknown markup {token!r}: use [pause S] or a filler like [um]")
    _add_words(out, text[pos:])
    return _merge_pauses(out)


def _add_words(out: list[Segment], words: str) -> None:
    words = " ".join(words.split()).lstrip(",;: ")
    if words and any(ch.isalnum() for ch in words):
        out.append(Speech(words))


def _merge_pauses(segments: list[Segment]) -> list[Segment]:
    """Consecutive pauses become one: explicit ones add up, ellipses around them add nothing."""
    merged: list[Segment] = []
    run: list[Pause] = []

    def flush() -> None:
        if not run:
            return
        explicit = [p.seconds for p in run if p.explicit]
        merged.append(Pause(sum(explicit)) if explicit else Pause(max(p.seconds for p in run), explicit=False))
        run.clear()

    for segment in segments:
        if isinstance(segment, Pause):
            run.append(segment)
        else:
            flush()
            merged.append(segment)
    flush()
    # A pause before the first words or after the last ones is not "inside" the line: it would only
    # shift when the caller starts or make the line look longer than it sounds.
    while merged and isinstance(merged[0], Pause):
        merged.pop(0)
    while merged and isinstance(merged[-1], Pause):
        merged.pop()
    return merged


def _pause_seconds(value: float, where: str) -> float:
    if not MIN_PAUSE_S <= value <= MAX_PAUSE_S:
        raise ScriptError(f"{where}: a pause must be {MIN_PAUSE_S}-{MAX_PAUSE_S} s, not {value}")
    return value


def _number(value: Any, where: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptError(f"{where}: expected a number, got {value!r}")
    if not low <= float(value) <= high:
        raise ScriptError(f"{where}: {value} is outside {low}-{high}")
    return float(value)


def _parse_segment(item: Any, where: str) -> list[Segment]:
    if isinstance(item, str):
        return parse_markup(item)
    if isinstance(item, Mapping):
        if set(item) == {"pause"}:
            return [Pause(_pause_seconds(_number(item["pause"], where, low=0, high=MAX_PAUSE_S), where))]
        if set(item) == {"filler"}:
            word = str(item["filler"]).strip().lower()
            if not word:
                raise ScriptError(f"{where}: empty filler")
            return [Speech(word, rate=FILLER_STRETCH, filler=True)]
        if "say" in item and set(item) <= {"say", "rate"}:
            rate = _number(item.get("rate", 1.0), f"{where}.rate", low=0.5, high=2.5)
            return [
                Speech(s.text, rate=s.rate * rate, filler=s.filler) if isinstance(s, Speech) else s
                for s in parse_markup(str(item["say"]))
            ]
    raise ScriptError(f"{where}: a segment is text, {{pause: S}}, {{filler: um}} or {{say: TEXT, rate: R}}")


def _parse_when(value: Any, think: Any, where: str) -> When:
    think_s = None if think is None else _number(think, f"{where}.think", low=0, high=30)
    if value is None or value == "after_bot":
        return AfterBot(think_s)
    if think is not None:
        raise ScriptError(f"{where}: `think` only goes with `when: after_bot`")
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, seconds),) = value.items()
        if key == "barge_in":
            return BargeIn(_number(seconds, f"{where}.when.barge_in", low=0, high=60))
        if key == "wait":
            return Wait(_number(seconds, f"{where}.when.wait", low=0, high=60))
    raise ScriptError(f"{where}: `when` is after_bot, {{barge_in: S}} or {{wait: S}}, not {value!r}")


def _parse_step(item: Any, where: str) -> Step:
    if isinstance(item, str):
        item = {"say": item}
    if not isinstance(item, Mapping):
        raise ScriptError(f"{where}: a line is text or a mapping with `say`, `segments`, `silence` or `keys`")
    keys = set(item)
    if "silence" in keys:
        if keys != {"silence"}:
            raise ScriptError(f"{where}: `silence` stands alone")
        return Silence(_number(item["silence"], f"{where}.silence", low=0, high=120))
    if "keys" in keys:
        return _parse_keys(item, where)
    unknown = keys - {"say", "segments", "when", "think", "answers"}
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {sorted(unknown)}")
    if ("say" in keys) == ("segments" in keys):
        raise ScriptError(f"{where}: give either `say` or `segments`")
    if "say" in keys:
        segments = parse_markup(str(item["say"]))
    else:
        raw = item["segments"]
        if not isinstance(raw, list) or not raw:
            raise ScriptError(f"{where}.segments: a non-empty list")
        parsed = [s for n, seg in enumerate(raw) for s in _parse_segment(seg, f"{where}.segments[{n}]")]
        segments = _merge_pauses(parsed)
    if not any(isinstance(s, Speech) for s in segments):
        raise ScriptError(f"{where}: nothing to say")
    answers = None if item.get("answers") is None else _regex(item["answers"], f"{where}.answers")
    return Say(tuple(segments), _parse_when(item.get("when"), item.get("think"), where), answers)


def _parse_keys(item: Mapping[str, Any], where: str) -> Keys:
    unknown = set(item) - {"keys", "when", "think", "tone_ms", "gap_ms"}
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {sorted(unknown)} next to `keys`")
    raw = item["keys"]
    if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw):
        raise ScriptError(f"{where}.keys: the keys to press, e.g. \"12#\"")
    try:
        pressed = check_keys(str(raw))
    except ValueError as exc:
        raise ScriptError(f"{where}.keys: {exc}") from None
    tone = int(_number(item.get("tone_ms", 100), f"{where}.tone_ms", low=40, high=8000))
    gap = int(_number(item.get("gap_ms", 100), f"{where}.gap_ms", low=0, high=10000))
    return Keys(pressed, _parse_when(item.get("when"), item.get("think"), where), tone, gap)


def _regex(value: Any, where: str) -> str:
    text = str(value).strip()
    try:
        re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ScriptError(f"{where}: not a valid regular expression: {exc}") from None
    if not text:
        raise ScriptError(f"{where}: empty")
    return text


def _parse_replies(raw: Any) -> list[ScriptReply]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScriptError("replies: a list of {when_bot_says: REGEX, say: TEXT}")
    out: list[ScriptReply] = []
    for n, item in enumerate(raw):
        where = f"replies[{n}]"
        if not isinstance(item, Mapping) or "when_bot_says" not in item:
            raise ScriptError(f"{where}: needs `when_bot_says` and `say` (or `segments`)")
        unknown = set(item) - {"when_bot_says", "say", "segments", "max_uses"}
        if unknown:
            raise ScriptError(f"{where}: unknown key(s) {sorted(unknown)}")
        step = _parse_step({k: v for k, v in item.items() if k in ("say", "segments")}, where)
        assert isinstance(step, Say)
        uses = int(_number(item.get("max_uses", 2), f"{where}.max_uses", low=1, high=10))
        out.append(ScriptReply(_regex(item["when_bot_says"], f"{where}.when_bot_says"), step, uses))
    return out


def script_from_dict(data: Any, *, source: str = "<string>") -> CallerScript:
    """Build a script from parsed YAML; raises ScriptError naming the file and the field at fault."""
    if not isinstance(data, Mapping):
        raise ScriptError(f"{source}: a caller script is a mapping")
    known = {
        "name",
        "description",
        "flow",
        "style",
        "seed",
        "voice",
        "noise",
        "caller",
        "direction",
        "lines",
        "replies",
        "expect",
    }
    unknown = set(data) - known
    if unknown:
        raise ScriptError(f"{source}: unknown key(s) {sorted(unknown)}")
    raw_lines = data.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise ScriptError(f"{source}: `lines` must be a non-empty list")
    try:
        lines = [_parse_step(item, f"lines[{n}]") for n, item in enumerate(raw_lines)]
        style = str(data.get("style", "clean"))
        if style not in STYLES:
            raise ScriptError(f"style: {style!r} is not one of {', '.join(STYLES)}")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ScriptError(f"seed: an integer, not {seed!r}")
        voice = _parse_voice(data.get("voice"))
        noise = _parse_noise(data.get("noise"))
        caller = data.get("caller") or {}
        if not isinstance(caller, Mapping) or set(caller) - {"name"}:
            raise ScriptError("caller: a mapping with `name`")
        expect = data.get("expect") or {}
        if not isinstance(expect, Mapping):
            raise ScriptError("expect: a mapping")
        replies = _parse_replies(data.get("replies"))
        direction = str(data.get("direction", "user_initiated"))
        if direction not in DIRECTIONS:
            raise ScriptError(f"direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    except ScriptError as exc:
        raise ScriptError(f"{source}: {exc}") from None
    return CallerScript(
        name=str(data.get("name") or Path(source).stem),
        lines=lines,
        flow=None if data.get("flow") is None else str(data["flow"]),
        style=style,
        seed=seed,
        voice=voice,
        noise=noise,
        caller_name=None if caller.get("name") is None else str(caller["name"]),
        direction=direction,
        expect=dict(expect),
        replies=replies,
        description=str(data.get("description") or ""),
        source=source,
    )


def _parse_voice(raw: Any) -> VoiceStyle:
    if raw is None:
        return VoiceStyle()
    if not isinstance(raw, Mapping) or set(raw) - {"length_scale", "variation"}:
        raise ScriptError("voice: a mapping with `length_scale` and/or `variation`")
    return VoiceStyle(
        length_scale=_number(raw.get("length_scale", 1.0), "voice.length_scale", low=0.5, high=2.0),
        variation=_number(raw.get("variation", 0.0), "voice.variation", low=0.0, high=0.3),
    )


def _parse_noise(raw: Any) -> NoiseSpec | None:
    if raw is None or raw is False:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = {"level_dbfs": raw}
    if not isinstance(raw, Mapping) or "level_dbfs" not in raw or set(raw) - {"level_dbfs", "color"}:
        raise ScriptError("noise: a level in dBFS, or a mapping with `level_dbfs` and optional `color`")
    color = str(raw.get("color", "pink"))
    if color not in NOISE_COLORS:
        raise ScriptError(f"noise.color: {color!r} is not one of {', '.join(NOISE_COLORS)}")
    level = _number(raw["level_dbfs"], "noise.level_dbfs", low=MIN_NOISE_DBFS, high=MAX_NOISE_DBFS)
    return NoiseSpec(level_dbfs=level, color=color)


def parse_script(text: str, *, source: str = "<string>") -> CallerScript:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{source}: not valid YAML: {exc}") from None
    return script_from_dict(data, source=source)


def load_script(path: str | Path) -> CallerScript:
    path = Path(path)
    return parse_script(path.read_text(encoding="utf-8"), source=str(path))


def load_scripts(folder: str | Path) -> list[CallerScript]:
    """Every `*.yaml` under `folder`, in path order (so runs and reports are stable)."""
    return [load_script(p) for p in sorted(Path(folder).rglob("*.yaml"))]
