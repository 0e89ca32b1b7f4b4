"""Keypad steps for simulated callers: `keys:` in caller scripts and `wacall simulate --keys`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.cli import build_parser, caller_lines, main
from agent.runtime import Models
from agent.simulator.caller_script import AfterBot, Keys, ScriptError, Wait, parse_script
from agent.simulator.caller_voice import PiperCallerVoice
from agent.simulator.natural_caller import NaturalCaller
from agent.simulator.session import Line, Simulation


def test_a_keys_step_is_parsed() -> None:
    script = parse_script(
        """
        name: menu
        lines:
          - keys: "12#"
          - {keys: 3, tone_ms: 200, gap_ms: 50, when: {wait: 1.5}}
          - "hello"
        """
    )
    first, second, _ = script.lines
    assert first == Keys("12#", AfterBot(), 100, 100)
    assert second == Keys("3", Wait(1.5), 200, 50)
    assert [s.text for s in script.says] == ["hello"]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ('{keys: "1x"}', "'x' is not a keypad key"),
        ('{keys: ""}', "the keys to press"),
        ('{keys: "1", say: "hi"}', "unknown key"),
        ('{keys: "1", tone_ms: 10}', "tone_ms"),
    ],
)
def test_bad_keys_steps_are_refused(step: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(f"lines: [{step}]")


def test_simulate_keys_are_caller_steps_in_order() -> None:
    args = build_parser().parse_args(["simulate", "--keys", "1", "--say", "A", "--keys", "12#"])
    assert caller_lines(args) == [Line(keys="1"), Line(text="A"), Line(keys="12#")]
    assert Line(keys="12#").label == "[keys 12#]"


def test_simulate_refuses_keys_a_keypad_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--keys", "1x"]) == 2
    assert "not a keypad key" in capsys.readouterr().err


FLOW = """
name: tiny
start: hello
nodes:
  hello:
    say: "Hello."
    intents:
      - name: book
        examples: ["I would like to book an appointment"]
        keywords: [book]
        goto: bye
  bye:
    say: "Okay."
    end: true
"""


@pytest.mark.e2e
async def test_a_scripted_caller_presses_keys_then_talks(models: Models, tmp_path: Path) -> None:
    flow = tmp_path / "tiny.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    script = parse_script(
        """
        name: keys then words, in a noisy room
        noise: {level_dbfs: -45}
        lines:
          - keys: "4*"
          - say: "I would like to book an appointment please"
            when: {wait: 0.3}
        """
    )
    caller = NaturalCaller(script, reply_timeout_s=6.0, end_wait_s=6.0)
    await caller.prepare(PiperCallerVoice())
    async with Simulation.start(models, flow=str(flow)) as sim:
        user = caller.user()
        try:
            sim_call = await caller.connect(sim, user)
            call = sim.runtime.calls[sim_call.id]
            run = await caller.converse(user, sim.meta, sim_call)
            await asyncio.wait_for(call.ended.wait(), 10)
            await call.wait_closed()
        finally:
            await user.close()
    assert [k.digit for k in call.key_presses] == ["4", "*"]
    assert [keys for keys, _ in run.keys] == ["4*"]
    assert [line.text for line in run.lines] == ["I would like to book an appointment please"]
    # The words after the keys were understood: the flow went on to its end, and the bot hung up.
    assert run.ended_by == "bot" and call.end_reason == "bot_ended", (run.ended_by, call.summary()["transcript"])
