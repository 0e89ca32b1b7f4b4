"""Keypad over the real call path: the simulated phone sends RFC 4733 events in its Opus stream, the bot's
media decodes them, and the flow follows them (issue 16's "done when").

A caller navigates a two-level menu by keys and enters an order number ending with `#`; another answers the
same menu by voice; a key press stops a long prompt at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation
from tests.wer import wer

pytestmark = pytest.mark.e2e

FLOW = """
name: keypad_e2e
start: menu
fallback: ["Sorry, that is not an option."]
max_retries: 2
nodes:
  menu:
    say: >-
      Welcome to Sunrise Electronics. We are open from Monday to Saturday, and every order ships for free.
      Press 1 for orders, or 2 for billing. You can also say what you need.
    intents:
      - name: orders
        key: "1"
        examples: ["I have a question about an order", "it is about my order"]
        keywords: [order]
        goto: orders_menu
      - name: billing
        key: "2"
        examples: ["I have a question about my bill"]
        keywords: [bill, billing]
        goto: billing
  orders_menu:
    say: "Press 1 to track an order, or 2 to return one."
    intents:
      - name: track
        key: "1"
        examples: ["I want to track my order", "where is my parcel"]
        keywords: [track]
        goto: ask_order
      - name: return
        key: "2"
        examples: ["I want to return something"]
        keywords: [return]
        goto: returns
  ask_order:
    say: "Please type your order number, then press hash."
    ask: {slot: order, type: digits, length: {min: 4, max: 8}, confirm: false}
    next: order_found
  order_found:
    say: "Thank you. Your order is on its way. Goodbye."
    end: true
  returns:
    say: "Returns are free within thirty days. Goodbye."
    end: true
  billing:
    say: "Our billing team will call you back today. Goodbye."
    end: true
"""

ORDERS_MENU = "Press 1 to track an order, or 2 to return one."
ASK_ORDER = "Please type your order number, then press hash."
FOUND = "Thank you. Your order is on its way. Goodbye."
BILLING = "Our billing team will call you back today. Goodbye."


@pytest.fixture
def flow_file(tmp_path: Path) -> str:
    path = tmp_path / "keypad_e2e.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return str(path)


async def _record(sim: Simulation, call_id: str) -> dict[str, Any]:
    for _ in range(200):
        if call_id in sim.runtime.finished:
            return sim.runtime.finished[call_id]
        await asyncio.sleep(0.05)
    raise AssertionError("the call never ended")


async def test_a_caller_navigates_two_menus_by_keypad_and_types_an_order_number(
    models: Models, flow_file: str
) -> None:
    async with Simulation.start(models, flow=flow_file) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=25, quiet_s=1.0)
            await user.press_keys("1")
            orders_menu = await user.listen(timeout=15, quiet_s=1.0)
            await user.press_keys("1")
            ask_order = await user.listen(timeout=15, quiet_s=1.0)
            await user.press_keys("48213#")
            found = await user.listen(timeout=15, quiet_s=1.0)
            record = await _record(sim, sim_call.id)
        finally:
            await user.close()
    assert wer(ORDERS_MENU, orders_menu) <= 0.3, orders_menu
    assert wer(ASK_ORDER, ask_order) <= 0.3, ask_order
    assert wer(FOUND, found) <= 0.3, found
    assert record["slots"]["order"] == "48213", record["slots"]
    assert record["end_reason"] == "bot_ended"
    keys = [e["text"] for e in record["transcript"] if e["who"] == "caller"]
    assert keys == ["[keys] 1", "[keys] 1", "[keys] 48213#"], keys  # what was pressed, terminator too


async def test_the_same_menu_answered_by_voice(models: Models, flow_file: str) -> None:
    async with Simulation.start(models, flow=flow_file) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=25, quiet_s=1.0)
            await user.say("It is about my order.")
            orders_menu = await user.listen(timeout=15, quiet_s=1.0)
            await user.say("I want to return something.")
            returns = await user.listen(timeout=15, quiet_s=1.0)
            record = await _record(sim, sim_call.id)
        finally:
            await user.close()
    assert wer(ORDERS_MENU, orders_menu) <= 0.3, orders_menu
    assert wer("Returns are free within thirty days. Goodbye.", returns) <= 0.3, returns
    assert record["end_reason"] == "bot_ended"


async def test_a_key_press_stops_a_long_prompt_at_once(models: Models, flow_file: str) -> None:
    """The key is pressed 1.5 s into a ~9 s welcome: the rest of the welcome is never heard and the billing
    line follows at once (had the welcome played out, it alone would take another 7 s)."""
    async with Simulation.start(models, flow=flow_file) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            while user.last_bot_audio_at is None:
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)
            pressed = time.monotonic()
            await user.press_keys("2")
            heard = await user.listen(timeout=15, quiet_s=1.0)
            done = time.monotonic() - pressed
            record = await _record(sim, sim_call.id)
        finally:
            await user.close()
    assert "say what you need" not in heard.lower() and "press 1" not in heard.lower(), heard
    start = heard.lower().find("our billing")
    assert start >= 0 and wer(BILLING, heard[start:]) <= 0.3, heard
    assert done <= 6.0, f"{done:.1f} s from the key to the end of the billing line: the welcome was not stopped"
    assert [e["text"] for e in record["transcript"] if e["who"] == "caller"] == ["[keys] 2"]
