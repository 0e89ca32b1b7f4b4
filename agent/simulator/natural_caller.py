"""A natural caller on a simulated call: plays a caller script through the real WebRTC path and times it.

The script's lines are rendered ahead of the call (`agent.simulator.caller_voice`), then spoken into the
call by a `SimulatedUser` whose microphone adds the script's room noise, each line at its moment: once
the bot has finished (after a thinking time), over the bot (barge-in), after a fixed wait, or not at all
for a while (silence). What happened is kept with the caller's own clock: when each line's first and
last voiced frames went out, when the bot's speech started and stopped at the caller's ears, and when
the call ended and who ended it. Those are the facts turn-taking is judged on (talked over, hung up on,
answered once), so they are measured where the caller is, never taken from the bot's own account.

    script = load_script("bench/callers/demo/order_pauses.yaml")
    result = await run_natural_call(models, script)
    print(format_natural_result(result))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Settings
from agent.runtime import Models
from agent.shipped import shipped_dir
from agent.simulator.caller import SimulatedUser
from agent.simulator.caller_script import AfterBot, BargeIn, CallerScript, Keys, Say, Silence, Wait
from agent.simulator.caller_voice import (
    CallerVoice,
    PiperCallerVoice,
    RenderedLine,
    render_line,
    render_script,
    stretch_rng,
)
from agent.simulator.meta import Decision, MetaSimulator, ScriptedPhone, SimCall
from agent.simulator.room_noise import RoomNoise
from agent.simulator.session import (
    USER_WA_ID,
    HttpRunner,
    Simulation,
    SimulationResult,
    dial,
    format_result,
    hang_up_with,
)
from agent.speech.stt import Transcriber

log = logging.getLogger(__name__)

# Bot audio separated by less than this is one stretch of speech (piper leaves ~0.4 s between sentences).
BOT_GAP_S = 0.6
BIC_BUSINESS_NUMBER = "447700900111"  # a UK number: business-initiated calls are allowed from there


class QuietTranscriber:
    """For callers that need no transcript of the bot: the figures come from audio timing, and a caller
    decoding on the bot's Whisper threads would slow the bot down."""

    async def transcribe(self, audio16k: np.ndarray) -> str:
        return ""


@dataclass
class BotSpeech:
    """Stretches of bot speech as the caller heard them, from the caller's audio callback."""

    spans: list[list[float]] = field(default_factory=list)  # [start, end], monotonic

    def feed(self, now: float, voiced: bool) -> None:
        if not voiced:
            return
        if self.spans and now - self.spans[-1][1] <= BOT_GAP_S:
            self.spans[-1][1] = now
        else:
            self.spans.append([now, now])

    def first_start_after(self, t: float) -> float | None:
        """Start of the first stretch still going at or begun after `t` (its own start if already going)."""
        for start, end in self.spans:
            if end >= t:
                return start
        return None

    def next_start_after(self, t: float) -> float | None:
        """Start of the first stretch that begins after `t`: new bot speech, not speech already going."""
        return next((start for start, _ in self.spans if start > t), None)

    @property
    def last_voiced(self) -> float | None:
        return self.spans[-1][1] if self.spans else None


@dataclass
class LineRecord:
    """One caller line as it went out. Times are monotonic seconds on the caller's clock."""

    index: int
    text: str
    when: str
    pauses: list[float]
    kind: str = "line"  # "line" (the script's next), "reply" (to an unplanned question), "repeat"
    started: float | None = None  # first voiced frame sent
    ended: float | None = None  # last voiced frame sent (or when the call dropped under it)
    first_bot_audio: float | None = None  # first new bot speech heard after `ended`

    @property
    def voice_to_voice(self) -> float | None:
        if self.first_bot_audio is None or self.ended is None:
            return None
        return self.first_bot_audio - self.ended

    def spoken_at(self, t: float) -> bool:
        return self.started is not None and self.ended is not None and self.started <= t <= self.ended


@dataclass
class CallerRun:
    """What the caller lived through on one call."""

    script: CallerScript
    lines: list[LineRecord] = field(default_factory=list)
    bot_speech: BotSpeech = field(default_factory=BotSpeech)
    dialled: float | None = None
    connected: float | None = None
    call_ended_at: float | None = None  # when Meta learnt the call was over
    ended_by: str | None = None  # "bot" | "caller"
    unanswered_lines: int = 0  # lines after which the bot said nothing within the reply timeout
    skipped: list[int] = field(default_factory=list)  # script steps left out: the bot did not need them
    keys: list[tuple[str, float]] = field(default_factory=list)  # keys pressed, and when the first went down
    call_id: str = ""

    @property
    def greeting_heard_at(self) -> float | None:
        spans = self.bot_speech.spans
        return spans[0][0] if spans else None

    @property
    def cut_off(self) -> LineRecord | None:
        """The line the bot hung up during, if it did."""
        if self.ended_by != "bot" or self.call_ended_at is None:
            return None
        return next((line for line in self.lines if line.spoken_at(self.call_ended_at)), None)


Hearing = Callable[[], Sequence[tuple[float, str]]]
# A bot line that asks the caller to say their last line again.
_ASKED_AGAIN = re.compile(r"say (that|it) again|say it another way|did ?n[o']t catch|could you repeat", re.IGNORECASE)


class LinePicker:
    """Which line a caller says next, given what the bot just said (see agent.simulator.caller_script)."""

    def __init__(self, script: CallerScript, hearing: Hearing | None) -> None:
        self.script = script
        self.hearing = hearing
        self.reply_uses = [0] * len(script.replies)
        self.repeated: set[int] = set()
        self.last_line: int | None = None

    def heard_since(self, t: float) -> list[str] | None:
        if self.hearing is None:
            return None
        return [text for when, text in self.hearing() if when >= t - 0.05]

    def pick(self, index: int, heard_from: float, *, reactive: bool) -> tuple[str, int, Say] | None:
        """("line", step index, line) | ("reply", reply index, line) | ("repeat", step index, line), or None
        when the script is over and nothing the bot said calls for an answer.

        In order: the bot asked the previous line again ("say that again") -> that line, once; a line further
        on answers what the bot asked -> that line; the next line answers anything -> it; a reply fits ->
        the reply; the bot asked what the previous line answered -> that line, once; else the next line.
        """
        steps = self.script.lines
        lines = self.heard_since(heard_from) if reactive else None
        current = steps[index] if index < len(steps) else None
        if lines:
            heard = " ".join(lines)
            if lines[-1] and _ASKED_AGAIN.search(lines[-1]) and (again := self._repeat()) is not None:
                return again
            for j in range(index, len(steps)):
                step = steps[j]
                if isinstance(step, Say) and step.answers and re.search(step.answers, heard, re.IGNORECASE):
                    return self._line(j)
            if isinstance(current, Say) and not current.answers:
                return self._line(index)
            for r, reply in enumerate(self.script.replies):
                if self.reply_uses[r] < reply.max_uses and re.search(reply.when_bot_says, heard, re.IGNORECASE):
                    self.reply_uses[r] += 1
                    return ("reply", r, reply.say)
            previous = None if self.last_line is None else steps[self.last_line]
            if isinstance(previous, Say) and previous.answers and re.search(previous.answers, heard, re.IGNORECASE):
                if (again := self._repeat()) is not None:
                    return again
        if current is None:
            return None
        return self._line(index)

    def _repeat(self) -> tuple[str, int, Say] | None:
        last = self.last_line
        if last is None or last in self.repeated:
            return None
        self.repeated.add(last)
        step = self.script.lines[last]
        assert isinstance(step, Say)
        return ("repeat", last, step)

    def _line(self, j: int) -> tuple[str, int, Say]:
        step = self.script.lines[j]
        assert isinstance(step, Say)
        self.last_line = j
        return ("line", j, step)


class NaturalCaller:
    """Speaks one caller script on one call. Render first (`prepare`), then `user()`, connect, `converse`."""

    def __init__(
        self,
        script: CallerScript,
        *,
        quiet_s: float = 0.7,
        reply_timeout_s: float = 10.0,
        end_wait_s: float = 5.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.script = script
        self._progress = progress  # hears one short line per step, as it happens
        self.quiet_s = quiet_s  # bot silence after which the caller takes its turn
        self.reply_timeout_s = reply_timeout_s  # a real caller would speak again after this much dead air
        self.end_wait_s = end_wait_s  # after the last line, how long to wait for the bot to end the call
        self.rendered: list[RenderedLine | None] | None = None
        self.rendered_replies: list[RenderedLine] | None = None
        self.run = CallerRun(script)

    async def prepare(self, voice: CallerVoice) -> None:
        self.rendered = await render_script(self.script, voice)
        self.rendered_replies = [
            await render_line(reply.say, voice, self.script.voice, stretch_rng(self.script.seed, 20_000 + n))
            for n, reply in enumerate(self.script.replies)
        ]

    def user(self, transcriber: Transcriber | None = None, *, hosts: Sequence[str] = ("127.0.0.1",)) -> SimulatedUser:
        noise = self.script.noise
        room = None if noise is None else RoomNoise(noise.level_dbfs, noise.color, seed=self.script.seed)
        user = SimulatedUser(transcriber=transcriber or QuietTranscriber(), hosts=hosts, background_noise=room)
        user.audio_listeners.append(self.run.bot_speech.feed)
        return user

    async def connect(
        self, sim: Simulation, user: SimulatedUser, *, wa_id: str = USER_WA_ID, timeout: float = 20.0
    ) -> SimCall:
        """Place the call the script describes: the caller dials the business, or the business calls them."""
        if self.script.caller_name is not None:
            sim.meta.add_user(wa_id, name=self.script.caller_name)
        self.run.dialled = time.monotonic()
        if self.script.direction == "business_initiated":
            sim_call = await place_business_call(sim, user, wa_id=wa_id, name=self.script.caller_name, timeout=timeout)
        else:
            if wa_id != USER_WA_ID:
                raise ValueError("the simulated Meta places user calls from USER_WA_ID only")
            sim_call, self.run.dialled = await dial(sim.meta, user, timeout=timeout)
        self.run.connected = time.monotonic()
        self.run.call_id = sim_call.id
        return sim_call

    async def converse(
        self,
        user: SimulatedUser,
        meta: MetaSimulator,
        sim_call: SimCall,
        *,
        hearing: Hearing | None = None,
    ) -> CallerRun:
        """Hear the greeting, speak every step at its moment, then wait for the bot to end the call (or
        hang up). Returns the caller's record of the call.

        `hearing` returns what the bot has said so far as (monotonic time, line); with it the caller answers
        what it is asked (`answers`, `replies`; see agent.simulator.caller_script), without it the lines go
        out in order.
        """
        if self.rendered is None or self.rendered_replies is None:
            raise RuntimeError("call prepare() before converse(): lines are rendered ahead of the call")
        run = self.run
        steps = self.script.lines
        watcher = asyncio.create_task(self._watch_end(user, sim_call))
        try:
            previous_end = run.connected or time.monotonic()
            heard_from = run.dialled or previous_end
            first = steps[0]
            if not isinstance(first, Say) or isinstance(first.when, AfterBot):
                # Hear the greeting out; a first line that barges in or keeps time talks over it instead.
                await self._await_bot(user, since=run.dialled or time.monotonic())
                previous_end = time.monotonic()
            index = 0
            choices = LinePicker(self.script, hearing)
            while not sim_call.ended.is_set():
                step = steps[index] if index < len(steps) else None
                if isinstance(step, Silence):
                    self._tell(f"caller: (says nothing for {step.seconds:g} s)")
                    await self._sleep_unless_ended(sim_call, step.seconds)
                    previous_end = time.monotonic()
                    index += 1
                    continue
                if isinstance(step, Keys):
                    await self._until_turn(step, index, user, sim_call, previous_end)
                    if sim_call.ended.is_set():
                        break
                    self._tell(f"caller: (presses {step.keys})")
                    pressed_at = time.monotonic()
                    await user.press_keys(step.keys, tone_ms=step.tone_ms, gap_ms=step.gap_ms)
                    run.keys.append((step.keys, pressed_at))
                    heard_from = previous_end = time.monotonic()
                    index += 1
                    upcoming = steps[index] if index < len(steps) else None
                    if upcoming is None or (isinstance(upcoming, Say | Keys) and isinstance(upcoming.when, AfterBot)):
                        answered = await self._await_bot(user, since=pressed_at)
                        run.unanswered_lines += not answered and not sim_call.ended.is_set()
                        previous_end = time.monotonic()
                    continue
                timing_step = step if step is not None else Say((), AfterBot())
                await self._until_turn(timing_step, index, user, sim_call, previous_end)
                if sim_call.ended.is_set():
                    break
                chosen = choices.pick(index, heard_from, reactive=step is None or isinstance(step.when, AfterBot))
                if chosen is None:
                    break  # the script is done and the bot asked nothing it has an answer for
                kind, number, say = chosen
                if kind == "line":
                    run.skipped.extend(range(index, number))
                    index = number + 1
                rendered = self.rendered[number] if kind != "reply" else self.rendered_replies[number]
                assert rendered is not None
                self._tell(f"caller: {say.text}" + ("" if kind == "line" else f"   ({kind})"))
                record = LineRecord(len(run.lines), say.text, _when_label(say), say.pauses, kind=kind)
                run.lines.append(record)
                timing = await user.play(rendered.pcm, label=say.text)
                record.started, record.ended = timing.first_voiced_sent, timing.last_voiced_sent
                heard_from = record.started or time.monotonic()
                previous_end = time.monotonic()
                upcoming = steps[index] if index < len(steps) else None
                if upcoming is None or (isinstance(upcoming, Say | Keys) and isinstance(upcoming.when, AfterBot)):
                    answered = await self._await_bot(user, since=record.ended or previous_end)
                    run.unanswered_lines += not answered and not sim_call.ended.is_set()
                    previous_end = time.monotonic()
            await self._finish(meta, sim_call)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for record in run.lines:
            if record.ended is not None:
                record.first_bot_audio = run.bot_speech.next_start_after(record.ended)
        return run

    async def _until_turn(
        self, step: Say | Keys, index: int, user: SimulatedUser, sim_call: SimCall, previous_end: float
    ) -> None:
        when = step.when
        if isinstance(when, AfterBot):
            await self._until_bot_quiet(sim_call)
            think = when.think_s
            if think is None:
                think = stretch_rng(self.script.seed, 10_000 + index).uniform(0.1, 0.4)
            await self._sleep_unless_ended(sim_call, think)
        elif isinstance(when, Wait):
            await self._sleep_unless_ended(sim_call, max(0.0, previous_end + when.seconds - time.monotonic()))
        elif isinstance(when, BargeIn):
            deadline = time.monotonic() + self.reply_timeout_s
            start = self.run.bot_speech.first_start_after(previous_end)
            while start is None and time.monotonic() < deadline and not sim_call.ended.is_set():
                await asyncio.sleep(0.02)
                start = self.run.bot_speech.first_start_after(previous_end)
            if start is not None:
                await self._sleep_unless_ended(sim_call, max(0.0, start + when.after_s - time.monotonic()))

    async def _until_bot_quiet(self, sim_call: SimCall) -> None:
        """A caller does not start while the bot is still talking (after a silence, say, it may be re-prompting)."""
        deadline = time.monotonic() + self.reply_timeout_s
        while time.monotonic() < deadline and not sim_call.ended.is_set():
            last = self.run.bot_speech.last_voiced
            if last is None or time.monotonic() - last >= self.quiet_s:
                return
            await asyncio.sleep(0.02)

    async def _await_bot(self, user: SimulatedUser, *, since: float) -> bool:
        """Until the bot has spoken after `since` and then been quiet for `quiet_s` (True), the reply
        timeout passed with no word from the bot (False), or the call ended."""
        deadline = time.monotonic() + self.reply_timeout_s
        while time.monotonic() < deadline:
            last = self.run.bot_speech.last_voiced
            if last is not None and last > since:
                deadline = max(deadline, last + self.quiet_s + 0.1)  # a long reply is not a timeout
                if time.monotonic() - last >= self.quiet_s:
                    return True
            if user.hung_up or self.run.call_ended_at is not None:
                return last is not None and last > since
            await asyncio.sleep(0.02)
        return False

    async def _finish(self, meta: MetaSimulator, sim_call: SimCall) -> None:
        """After the last line: the caller listens while the bot talks (a closing line can be long) and hangs
        up once the bot has said nothing for `end_wait_s` without ending the call."""
        waiting_since = time.monotonic()
        while not sim_call.ended.is_set():
            last = self.run.bot_speech.last_voiced
            quiet_since = waiting_since if last is None else max(waiting_since, last)
            if time.monotonic() - quiet_since >= self.end_wait_s:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sim_call.ended.wait(), 0.1)
        if sim_call.ended.is_set():
            self.run.ended_by = self.run.ended_by or "bot"
            return
        self.run.ended_by = "caller"
        self.run.call_ended_at = time.monotonic()
        self._tell("the caller hangs up")
        await meta.user_hangup(sim_call.id)

    def _tell(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    async def _watch_end(self, user: SimulatedUser, sim_call: SimCall) -> None:
        await sim_call.ended.wait()
        if self.run.ended_by is None:
            self.run.ended_by = "bot"
            self.run.call_ended_at = time.monotonic()
        # A line still going out stops when the phone notices the call is gone; a caller does not talk
        # on into a dead line for seconds.
        await asyncio.sleep(0.3)
        user.peer.outbound.stop()

    @staticmethod
    async def _sleep_unless_ended(sim_call: SimCall, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim_call.ended.wait(), seconds)


def bots_own_record(sim: Simulation, call_id: str) -> Hearing:
    """What the bot has said on a live call, from its own transcript: how a caller "hears" the words.

    The caller's ears (audio timing) are measured on the wire; for the words, the bot's record stands in
    for a caller's understanding, which would otherwise need a second speech recogniser on the same CPU.
    """
    live = sim.runtime.calls.get(call_id)
    transcript = getattr(getattr(live, "conversation", None), "transcript", None)
    entries: list[Any] = transcript if isinstance(transcript, list) else []
    return lambda: [(entry.t, entry.text) for entry in list(entries) if entry.who == "bot"]


def _when_label(step: Say) -> str:
    when = step.when
    if isinstance(when, BargeIn):
        return f"barge_in {when.after_s:g}s"
    if isinstance(when, Wait):
        return f"wait {when.seconds:g}s"
    return "after_bot"


async def place_business_call(
    sim: Simulation, user: SimulatedUser, *, wa_id: str, name: str | None = None, timeout: float = 20.0
) -> SimCall:
    """The business calls `wa_id` (who has granted permission) and the simulated phone picks up."""
    phone = ScriptedPhone(Decision.ACCEPT, user.answer_business_call, think_s=0.3)
    sim.meta.add_user(wa_id, name=name, phone=phone)
    await sim.meta.user_sets_profile_permission(wa_id, grant=True, permanent=True)
    deadline = time.monotonic() + timeout
    while str(sim.runtime.ledger.user_state(wa_id).permission) != "permanent":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the business never learnt that {wa_id} allowed calls")
        await asyncio.sleep(0.02)
    call = await sim.runtime.place_call(wa_id)
    sim_call = sim.meta.calls[call.id]
    await asyncio.wait_for(sim_call.accepted.wait(), timeout)
    hang_up_with(user, sim_call)
    return sim_call


def resolve_flow(flow: str) -> str:
    """A flow file path, or the name of a shipped flow ("demo" -> prompts/demo.yaml)."""
    path = Path(flow)
    if path.is_file():
        return str(path)
    shipped = shipped_dir("prompts") / f"{flow}.yaml"
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"no flow file {flow!r} and no shipped flow of that name")


@dataclass
class NaturalCallResult:
    simulation: SimulationResult
    run: CallerRun
    final_node: str | None = None


async def run_natural_call(
    models: Models,
    script: CallerScript,
    *,
    flow: str | None = None,
    voice: CallerVoice | None = None,
    transcribe: bool = True,
    reply_timeout_s: float = 10.0,
    settings: Settings | None = None,
    http: HttpRunner | None = None,
    progress: Callable[[str], None] | None = None,
    **settings_overrides: Any,
) -> NaturalCallResult:
    """One whole simulated call with a natural caller (what `wacall simulate --caller FILE` runs).

    `flow` overrides the script's own; with neither, the settings' default flow answers. `transcribe`
    lets the caller write down what it heard the bot say (with the shared Whisper, so it costs the bot
    CPU; benches turn it off). `settings`, `http` and extra keyword arguments go to `Simulation.start`;
    `progress` hears one line per step as the call goes. Raises `CallNotAnswered` when wacall turns the
    call away.
    """
    voice = voice or PiperCallerVoice()
    caller = NaturalCaller(script, reply_timeout_s=reply_timeout_s, progress=progress)
    await caller.prepare(voice)
    chosen = flow or script.flow
    if script.direction == "business_initiated":
        settings_overrides.setdefault("business_number", BIC_BUSINESS_NUMBER)
    async with Simulation.start(
        models,
        flow=None if chosen is None else resolve_flow(chosen),
        settings=settings,
        http=http,
        **settings_overrides,
    ) as sim:
        user = caller.user(models.transcriber if transcribe else None)
        engine: Any = None
        try:
            sim_call = await caller.connect(sim, user)
            live = sim.runtime.calls.get(sim_call.id)
            engine = getattr(getattr(live, "conversation", None), "policy", None)
            run = await caller.converse(user, sim.meta, sim_call, hearing=bots_own_record(sim, sim_call.id))
            await _wait_finished(sim, sim_call.id)
            # Let the caller finish writing down what it heard last.
            await user.listen(quiet_s=0.0, timeout=1.0, min_utterances=0)
        finally:
            await user.close()
        dialled = run.dialled or 0.0
        simulation = SimulationResult(
            conversation=user.conversation,
            call_summary=sim.runtime.finished.get(sim_call.id),
            sim_call=sim_call,
            answer_time_s=None if run.greeting_heard_at is None else run.greeting_heard_at - dialled,
            ended_by=run.ended_by or "caller",
            replies=[h.text for h in user.heard],
        )
        return NaturalCallResult(simulation, run, getattr(engine, "node", None))


async def _wait_finished(sim: Simulation, call_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while call_id not in sim.runtime.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def format_natural_result(result: NaturalCallResult) -> str:
    """`format_result`'s conversation, then each caller line's timing as the caller lived it."""
    run = result.run
    out = [format_result(result.simulation), "", f"caller script: {run.script.name} ({run.script.style})"]
    for line in run.lines:
        pauses = f", pauses {', '.join(f'{p:g}s' for p in line.pauses)}" if line.pauses else ""
        v2v = line.voice_to_voice
        heard = "no reply" if v2v is None else f"bot answered {v2v * 1000:.0f} ms after the last word"
        talked_over = _bot_during(run, line)
        over = f"; bot audio started {talked_over} time(s) while the caller spoke" if talked_over else ""
        kind = "" if line.kind == "line" else f", {line.kind}"
        out.append(f"  line {line.index + 1} [{line.when}{pauses}{kind}] {line.text!r}: {heard}{over}")
    if run.skipped:
        out.append(f"  script lines not needed (the bot already knew): {', '.join(str(i + 1) for i in run.skipped)}")
    cut = run.cut_off
    if cut is not None:
        out.append(f"  the bot hung up while the caller was speaking line {cut.index + 1}")
    out.append(f"  call ended by the {run.ended_by}; final node {result.final_node}")
    return "\n".join(out)


def _bot_during(run: CallerRun, line: LineRecord) -> int:
    """How many stretches of bot speech began while this line was being spoken."""
    if line.started is None or line.ended is None:
        return 0
    return sum(1 for start, _ in run.bot_speech.spans if line.started < start < line.ended)
