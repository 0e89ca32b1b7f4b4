"""A natural caller's call, judged: did the caller get their task done, and what did both sides live through.

The caller script says what completes its task (slots, end node, handover, a request to the business);
this plays the script through the whole stack on its own simulated deployment, with the business systems
answered by `BusinessSystems` through the runtime's own `http` seam, and checks the script's `expect`
against what the call left behind. Used by bench/conversation.py and by the end-to-end tests, so both
judge a call the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.dialogue.flow import load_flow
from agent.runtime import Models
from agent.simulator.business_systems import BusinessSystems
from agent.simulator.caller_outcome import CallOutcome, check_expectations, handover_queue
from agent.simulator.caller_script import CallerScript
from agent.simulator.natural_caller import (
    BIC_BUSINESS_NUMBER,
    CallerRun,
    NaturalCaller,
    bots_own_record,
    resolve_flow,
)
from agent.simulator.session import Simulation
from agent.turn_record import TranscriptEntry, TurnMetrics


@dataclass
class JudgedCall:
    run: CallerRun
    outcome: CallOutcome
    problems: list[str]  # unmet expectations, in words: empty when the task was completed
    systems: BusinessSystems
    summary: dict[str, Any] | None
    transcript: list[TranscriptEntry] = field(default_factory=list)  # as the bot kept it
    turns: list[TurnMetrics] = field(default_factory=list)
    flow: Any = None

    @property
    def completed(self) -> bool:
        return not self.problems


async def judged_call(
    models: Models, script: CallerScript, caller: NaturalCaller, *, flow: str | None = None, **overrides: Any
) -> JudgedCall:
    """Play `script` (prepared in `caller`) against `flow` (default: the script's own) and judge it."""
    systems = BusinessSystems()
    if script.direction == "business_initiated":
        overrides.setdefault("business_number", BIC_BUSINESS_NUMBER)
    chosen = flow or script.flow
    if chosen is None:
        raise ValueError(f"caller script {script.name!r} names no flow")
    flow_path = resolve_flow(chosen)
    async with Simulation.start(models, flow=flow_path, http=systems, **overrides) as sim:
        user = caller.user()
        engine: Any = None
        transcript: list[TranscriptEntry] = []
        turns: list[TurnMetrics] = []
        try:
            sim_call = await caller.connect(sim, user)
            conversation = getattr(sim.runtime.calls.get(sim_call.id), "conversation", None)
            engine = getattr(conversation, "policy", None)
            transcript = getattr(conversation, "transcript", [])
            turns = getattr(conversation, "turns", [])
            run = await caller.converse(user, sim.meta, sim_call, hearing=bots_own_record(sim, sim_call.id))
            summary = await _finished(sim, sim_call.id)
        finally:
            await user.close()
        flow_model = load_flow(flow_path)
        final_node = getattr(engine, "node", None)
        outcome = CallOutcome(
            slots=dict(summary.get("slots", {})) if summary else dict(getattr(engine, "slots", {}) or {}),
            bot_lines=[e.text for e in transcript if e.who == "bot"],
            final_node=final_node,
            handover_queue=handover_queue(flow_model, final_node),
            end_reason=summary.get("end_reason") if summary else None,
            requests=systems.requests,
            permission_requests=len(sim.meta.permission_requests),
        )
    return JudgedCall(
        run=run,
        outcome=outcome,
        problems=check_expectations(script.expect, outcome, today=systems.today),
        systems=systems,
        summary=summary,
        transcript=list(transcript),
        turns=list(turns),
        flow=flow_model,
    )


async def _finished(sim: Simulation, call_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while call_id not in sim.runtime.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sim.runtime.finished.get(call_id)
