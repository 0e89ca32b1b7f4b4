"""The appointment flow over a simulated call: speech in, speech out, the booking in the call's slots.

The clinic's booking system is a local stub on 127.0.0.1 (the flow's URL is pointed at it), so the http
action runs for real too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation, bound_socket, serve
from tests.wer import normalise

pytestmark = pytest.mark.e2e


@pytest.fixture
async def clinic() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    bookings: list[dict[str, Any]] = []

    async def book(request: Request) -> JSONResponse:
        bookings.append(await request.json())
        return JSONResponse({"id": 981})

    async def lookup(request: Request) -> JSONResponse:
        return JSONResponse({"id": 981})

    app = Starlette(routes=[Route("/api/appointments", book, methods=["POST"]),
                            Route("/api/appointments", lookup, methods=["GET"])])
    sock = bound_socket()
    async with serve(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", bookings


async def test_appointment_booked_over_a_call(
    models: Models, clinic: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    base, bookings = clinic
    text = Path("prompts/appointment_booking.yaml").read_text(encoding="utf-8")
    flow_file = tmp_path / "appointment_booking.yaml"
    flow_file.write_text(text.replace("https://clinic.example.com", base), encoding="utf-8")
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    if tomorrow.weekday() >= 5:
        pytest.skip("the clinic flow books weekdays only; tomorrow is a weekend day")

    async with Simulation.start(models, flow=str(flow_file)) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            heard = [await user.listen(timeout=25)]
            lines = ("I'd like to book a check up.", "Tomorrow, please.", "Three thirty in the afternoon.", "Yes.")
            for line in lines:
                await user.say(line)
                heard.append(await user.listen(timeout=25, quiet_s=1.5))
            try:
                await asyncio.wait_for(sim_call.ended.wait(), 20)
            except TimeoutError:
                live = sim.runtime.calls.get(sim_call.id)
                bot_heard = live.transcript_pairs() if live is not None else "(call gone)"
                pytest.fail(f"the bot did not end the call; caller heard {heard}; the bot's transcript {bot_heard}")
            deadline = time.monotonic() + 10
            while sim_call.id not in sim.runtime.finished and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            turns = [e.payload for e in sim.runtime.store.list_events(sim_call.id) if e.event == "turn"]
        finally:
            await user.close()
        summary = sim.runtime.finished[sim_call.id]
        # Every turn's stage timings are kept with the call record.
        assert len(turns) >= 4 and all(t and t["transcript_ready_ms"] is not None for t in turns), turns
        assert str(summary["slots"].get("date")) == tomorrow.isoformat(), (summary["slots"], heard)
        assert str(summary["slots"].get("time"))[:5] == "15:30", (summary["slots"], heard)
        assert summary["slots"].get("booking_id") == 981
        assert bookings and bookings[0]["date"] == tomorrow.isoformat() and bookings[0]["time"] == "15:30"
        # The caller heard the confirmation with the day they booked.
        assert tomorrow.strftime("%A").lower() in normalise(heard[-1]), heard
