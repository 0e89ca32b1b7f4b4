"""Issue 19 over the real call path: a caller who taps a call button, or opens a deep link, carrying a payload
starts the flow at the node its `entry_points` maps the payload to, and the call's record keeps the payload.

The simulated Meta puts the payload on the connect and terminate webhooks as `cta_payload` or
`deeplink_payload` (spec §6.4); wacall parses it, picks the entry node and stores it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation
from tests.wer import wer

pytestmark = pytest.mark.e2e

FLOW = """
name: campaigns_e2e
start: hello
entry_points:
  summer-sale: summer
  "poster-*": poster
nodes:
  hello:
    say: "Hello, this is Sunrise Electronics."
    end: true
  summer:
    say: "Welcome to our summer sale. Goodbye."
    end: true
  poster:
    say: "Thanks for scanning our poster. Goodbye."
    end: true
"""


@pytest.fixture
def flow_file(tmp_path: Path) -> str:
    path = tmp_path / "campaigns_e2e.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return str(path)


async def _finished(sim: Simulation, call_id: str) -> dict[str, Any]:
    for _ in range(200):
        if call_id in sim.runtime.finished:
            return sim.runtime.finished[call_id]
        await asyncio.sleep(0.05)
    raise AssertionError("the call never ended")


@pytest.mark.parametrize(
    ("origin", "payload", "source", "line"),
    [
        ("cta_payload", "summer-sale", "button", "Welcome to our summer sale. Goodbye."),
        ("deeplink_payload", "poster-metro-7", "link", "Thanks for scanning our poster. Goodbye."),
    ],
    ids=["call-button", "deep-link"],
)
async def test_the_payload_picks_the_first_node_and_stays_on_the_record(
    models: Models, flow_file: str, origin: str, payload: str, source: str, line: str
) -> None:
    async with Simulation.start(models, flow=flow_file) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user, **{origin: payload})
            heard = await user.listen(timeout=25, quiet_s=1.0)
            await _finished(sim, sim_call.id)
            record = await asyncio.to_thread(sim.runtime.store.get_call, sim_call.id)
        finally:
            await user.close()
    assert wer(line, heard) <= 0.3, heard
    assert record is not None
    assert (record.payload, record.payload_source) == (payload, source)
    assert record.answered_at is not None
