"""A connect webhook whose offer cannot carry a call is rejected, through the whole real stack.

aiortc would answer garbage SDP with an answer that has no media (stack notes §5), and the caller would
hear a call that connects to silence. Instead the bot must `reject` at once, the call must end with a
reason that says why, and the operator's log must say it too.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agent.media.peer import MediaPeer
from agent.runtime import Models
from agent.simulator.meta import ENDED
from agent.simulator.phone_sdp import meta_shaped_offer
from agent.simulator.session import USER_WA_ID, Simulation

pytestmark = pytest.mark.e2e


async def offer_without_fingerprint() -> str:
    """A real Meta-shaped offer from aiortc, minus its fingerprint: everything else about it is right."""
    phone = MediaPeer(hosts=["127.0.0.1"], label="phone")
    try:
        phone.pc.addTransceiver(phone.outbound, direction="sendrecv")
        offer = meta_shaped_offer(await phone.offer())
    finally:
        await phone.close()
    lines = [line for line in offer.split("\r\n") if line and not line.startswith("a=fingerprint:")]
    return "\r\n".join(lines) + "\r\n"


async def wait_finished(sim: Simulation, call_id: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while call_id not in sim.runtime.finished:
        assert time.monotonic() < deadline, "the bot never finished the call"
        await asyncio.sleep(0.02)
    return sim.runtime.finished[call_id]


@pytest.mark.parametrize(
    ("offer", "why"),
    [("v=0\r\nbogus\r\n", "not an SDP line"), (None, "No fingerprint found in SDP")],
    ids=["garbage", "no-fingerprint"],
)
async def test_bad_offer_is_rejected_with_a_reason(
    models: Models, caplog: pytest.LogCaptureFixture, offer: str | None, why: str
) -> None:
    caplog.set_level(logging.INFO)
    if offer is None:
        offer = await offer_without_fingerprint()
    async with Simulation.start(models) as sim:
        sim_call = await sim.meta.place_user_call(wa_id=USER_WA_ID, offer_sdp=offer)
        await asyncio.wait_for(sim_call.ended.wait(), 10)
        summary = await wait_finished(sim, sim_call.id)
        await sim.meta.drain_webhooks()

        # Meta saw exactly one action: reject. No pre_accept with a media-less answer, no accept.
        assert sim_call.actions == ["reject"]
        assert sim_call.state == ENDED
        assert sim_call.answer_sdp is None
        assert sim_call.start_time is None  # never answered, so the caller was never billed

        end_reason = summary["end_reason"]
        assert isinstance(end_reason, str) and end_reason.startswith("bad_offer"), end_reason
        assert why in end_reason
        assert sim_call.id not in sim.runtime.calls

        # The operator can tell from the log which call was refused and why.
        explained = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and sim_call.id in r.getMessage() and why in r.getMessage()
        ]
        assert explained, [r.getMessage() for r in caplog.records]

        # Meta's terminate webhook for the rejected call arrives afterwards and is accepted quietly.
        terminates = [d for d in sim.meta.deliveries if b'"event":"terminate"' in d.body]
        assert [d.status_code for d in terminates] == [200]
