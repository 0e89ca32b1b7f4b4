"""Issue 19, the flow step `send_call_button`: parsed, described by the engine, carried out by the reply runner,
and sent by the runtime to Meta (the simulator) as a call button while the caller's window is open."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from agent.calling_config import CallButtonSettings
from agent.config import Settings
from agent.dialogue.effects import Reply, SendCallButton
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow, FlowError, parse_flow
from agent.dialogue.flowtest import format_report, run_test_file
from agent.dialogue.schema import flow_schema
from agent.reply_runner import ReplyRunner
from agent.runtime import Runtime
from agent.simulator.meta import MetaSimulator
from agent.speech_handle import SpeechHandle
from agent.whatsapp.graph import GraphClient
from agent.whatsapp.rules import DEFAULT_LIMITS, UserCallingState

MONDAY = dt.date(2024, 12, 2)
USER = "15550002222"


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="test.yaml")


ORDER_FLOW = """
    start: a
    nodes:
      a:
        say: Your order number?
        ask: {slot: order, type: number}
        next: bye
      bye:
        say: "I am sending you a button to call us about order {{order}}. Goodbye!"
        send_call_button:
          payload: "order-{{order}}"
          text: "Tap to call us about order {{order}}"
        end: true
"""


def test_the_step_at_the_end_of_a_flow_sends_the_button_with_the_payload_filled_in() -> None:
    engine = FlowEngine(flow_from(ORDER_FLOW), today=MONDAY)
    engine.start()
    reply = engine.handle("seventeen")
    assert reply.actions == [SendCallButton(payload="order-17", text="Tap to call us about order 17")]
    assert reply.end_call


def test_a_bare_value_is_the_payload() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Bye.
            send_call_button: callback-request
            end: true
    """)
    assert FlowEngine(flow, today=MONDAY).start().actions == [SendCallButton(payload="callback-request")]


def test_unknown_keys_are_refused_with_their_position() -> None:
    with pytest.raises(FlowError) as caught:
        flow_from("""
            start: a
            nodes:
              a:
                send_call_button: {payload: x, colour: green}
                end: true
        """)
    assert "colour" in str(caught.value) and caught.value.line == 4


def test_the_schema_knows_the_step() -> None:
    step = flow_schema()["definitions"]["node"]["anyOf"][0]["properties"]["send_call_button"]
    assert "call button" in step["description"]


class Host:
    """The conversation as the reply runner sees it."""

    def __init__(self) -> None:
        self.buttons: list[SendCallButton] = []
        self.policy: Any = None
        self.transcript: list[Any] = []
        self.current_metrics = None

    def call_button(self, button: SendCallButton) -> None:
        self.buttons.append(button)

    def set_interruptible(self, allowed: bool) -> None:
        pass

    async def end_call(self, handle: SpeechHandle, reason: str) -> None:
        pass


async def test_the_reply_runner_hands_the_button_to_the_call() -> None:
    async def idle() -> None:
        return None

    host = Host()
    runner = ReplyRunner(
        cast(Any, host),
        synthesizer=cast(Any, None),
        output=cast(Any, SimpleNamespace(wait_idle=idle)),
        clock=lambda: 0.0,
        llm=None,
        http=cast(Any, None),
        llm_first_sentence_budget_s=1.0,
    )
    button = SendCallButton(payload="order-17")
    await runner.perform(SpeechHandle(Reply(lines=[], node="bye", actions=[button])))
    assert host.buttons == [button]


async def test_the_runtime_sends_the_flows_button_to_meta_while_the_caller_is_on_the_line() -> None:
    """The real `Runtime._call_button_by_flow` and `Runtime.send_call_button` (stand-in ledger), to the simulator."""
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    sim = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret="secret",
        access_token="t",
        clock=now.timestamp,
        webhook_transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    sim.permissions.note_user_activity(USER, int(now.timestamp()))  # the user is calling: the window is open
    graph = GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=sim.phone_number_id,
        token="t",
        transport=httpx.ASGITransport(app=sim.app),
    )
    tasks: list[asyncio.Task[Any]] = []
    ledger = SimpleNamespace(
        user_state=lambda user: UserCallingState(sim.phone_number_id, user, window_refreshed_at=now),
        now=lambda: now,
        limits=DEFAULT_LIMITS,
    )
    runtime = SimpleNamespace(
        ledger=ledger,
        graph=graph,
        settings=Settings(),
        _spawn=lambda coro, name: tasks.append(asyncio.ensure_future(coro)),
    )
    runtime.send_call_button = functools.partial(Runtime.send_call_button, cast(Runtime, runtime))
    call = SimpleNamespace(id="wacid.X", user_number=USER)
    Runtime._call_button_by_flow(cast(Runtime, runtime), cast(Any, call), SendCallButton(payload="order-17"))
    await asyncio.gather(*tasks)
    (button,) = sim.call_buttons
    assert (button.wa_id, button.kind, button.status, button.payload) == (USER, "interactive", "sent", "order-17")
    assert button.body_text == CallButtonSettings().body
    await graph.aclose()
    await sim.aclose()


def test_flow_tests_can_expect_the_button(tmp_path: Path) -> None:
    (tmp_path / "order.yaml").write_text(textwrap.dedent(ORDER_FLOW).lstrip("\n"), encoding="utf-8")
    (tmp_path / "order.test.yaml").write_text(
        textwrap.dedent("""
            conversations:
              - name: right payload
                steps:
                  - caller: seventeen
                    expect: {actions: [{send_call_button: {payload: order-17}}], end: true}
              - name: wrong payload
                steps:
                  - caller: seventeen
                    expect: {actions: [{send_call_button: {payload: order-18}}]}
        """),
        encoding="utf-8",
    )
    report = run_test_file(tmp_path / "order.test.yaml")
    assert [r.passed for r in report.results] == [True, False]
    assert "send_call_button payload is 'order-17', expected 'order-18'" in format_report(report)
