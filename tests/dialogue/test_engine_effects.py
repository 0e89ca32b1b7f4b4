"""Effects the engine describes for the runtime: handover, HTTP requests and their results,
call-permission requests, and LLM turns with every tool (valid and invalid)."""

from __future__ import annotations

import datetime as dt
import logging
import textwrap

import pytest

from agent.dialogue.engine import FlowEngine, Handover, HttpRequest, RequestCallPermission, ToolCall
from agent.dialogue.flow import Flow, parse_flow

MONDAY = dt.date(2024, 12, 2)


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="test.yaml")


# -- handover and call permission -----------------------------------------------------------------


def test_handover_action_ends_the_bots_part_without_hanging_up() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Which product?
            ask:
              slot: product
              type: choice
              choices: [phone, laptop]
            next: transfer
          transfer:
            say: Please hold.
            interruptible: false
            handover:
              queue: repairs
              skills: [technical, "{{product}}"]
              reason: "Broken {{product}}."
    """)
    engine = FlowEngine(flow)
    engine.start()
    reply = engine.handle("my laptop")
    assert reply.actions == [Handover(queue="repairs", skills=["technical", "laptop"], reason="Broken laptop.")]
    assert reply.handover == reply.actions[0]
    assert reply.lines == ["Please hold."] and reply.interruptible is False
    assert not reply.end_call and engine.ended and engine.waiting_for is None
    late = engine.handle("hello?")
    assert late.lines == [] and not late.end_call


def test_request_call_permission_then_goodbye() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Which day should we call?
            ask: {slot: day, type: date}
            next: b
          b:
            say: "I am sending you a permission request for {{day}}. Goodbye!"
            request_call_permission:
              reason: "To call you back on {{day}}."
            end: true
    """)
    engine = FlowEngine(flow, today=MONDAY)
    engine.start()
    reply = engine.handle("tomorrow")
    assert reply.actions == [RequestCallPermission(reason="To call you back on Tuesday the third of December.")]
    assert reply.end_call


# -- HTTP requests --------------------------------------------------------------------------------

LOOKUP = flow_from("""
    start: ask_order
    global_intents:
      - name: bye
        examples: [goodbye]
        goto: bye
    nodes:
      ask_order:
        say: Your order number?
        ask: {slot: order, type: number}
        next: lookup
      lookup:
        say: One moment.
        http:
          method: POST
          url: "https://shop.example.com/orders/{{order}}?who={{caller.name}}"
          headers: {X-Caller: "{{caller.number}}"}
          json:
            order: "{{order}}"
            note: "order {{order}}"
            tags: [phone, "{{caller.name}}"]
          timeout: 3
          store:
            status: status
            eta: delivery.date
            first_item: items.0.name
          on_success: found
          on_error: failed
      found:
        say: "Your order is {{status}} and arrives on {{eta}}. It contains {{first_item}}."
        end: true
      failed:
        say: Sorry, I cannot look that up now.
        end: true
      bye:
        say: Bye.
        end: true
""")


def lookup_engine() -> tuple[FlowEngine, HttpRequest]:
    engine = FlowEngine(LOOKUP, caller={"name": "Ana Lopez", "number": "15551234567"}, today=MONDAY)
    engine.start()
    reply = engine.handle("forty two")
    assert reply.lines == ["One moment."]
    (request,) = reply.actions
    assert isinstance(request, HttpRequest)
    return engine, request


def test_http_request_is_described_with_placeholders_filled() -> None:
    engine, request = lookup_engine()
    assert request.method == "POST"
    assert request.url == "https://shop.example.com/orders/42?who=Ana%20Lopez"
    assert request.headers == {"X-Caller": "15551234567"}
    assert request.json_body == {"order": 42, "note": "order 42", "tags": ["phone", "Ana Lopez"]}
    assert request.timeout_s == 3
    assert request.store == {"status": "status", "eta": "delivery.date", "first_item": "items.0.name"}
    assert engine.waiting_for == "action" and engine.pending_action == request


def test_http_success_stores_typed_slots_and_follows_on_success() -> None:
    engine, request = lookup_engine()
    data = {"status": "shipped", "delivery": {"date": "2024-12-05"}, "items": [{"name": "a phone case"}]}
    reply = engine.action_result(request.id, True, data)
    assert reply.slots["eta"] == dt.date(2024, 12, 5)
    assert reply.lines == [
        "Your order is shipped and arrives on Thursday the fifth of December. It contains a phone case."
    ]
    assert reply.end_call


@pytest.mark.parametrize(
    ("ok", "data"),
    [(False, None), (True, {"status": "shipped"}), (True, {"status": "x", "delivery": {"date": None}, "items": []})],
)
def test_http_error_timeout_or_missing_fields_follow_on_error(ok: bool, data: dict[str, object] | None) -> None:
    engine, request = lookup_engine()
    reply = engine.action_result(request.id, ok, data)
    assert reply.node == "failed"
    assert "status" not in reply.slots  # nothing half-stored


def test_speech_while_waiting_is_ignored_but_a_global_intent_cancels(caplog: pytest.LogCaptureFixture) -> None:
    engine, request = lookup_engine()
    quiet = engine.handle("is it there yet")
    assert quiet.lines == [] and quiet.node == "lookup" and engine.waiting_for == "action"
    reply = engine.handle("goodbye")
    assert (reply.intent, reply.end_call) == ("bye", True)
    with caplog.at_level(logging.WARNING):
        stale = engine.action_result(request.id, True, {"status": "x"})
    assert stale.lines == [] and "not pending" in caplog.text


def test_unknown_action_id_is_ignored() -> None:
    engine, _request = lookup_engine()
    reply = engine.action_result("nope#9", True, {})
    assert reply.lines == [] and engine.waiting_for == "action"


# -- LLM nodes --------------------------------------------------------------------------------------

LLM_FLOW = flow_from("""
    start: welcome
    persona: You are the assistant of Sunrise.
    global_intents:
      - name: agent
        examples: ["I want to talk to a person"]
        keywords: [human]
        goto: agent
    nodes:
      welcome:
        say: "Hello {{caller.name}}, how can I help?"
        llm:
          prompt: "Help {{caller.name}} with orders. Known order: {{order_id}}."
          transitions: [order_status, bye, sales_transfer]
          slots: [order_id, visit_day]
          tools:
            - name: book_visit
              description: Book a store visit.
              parameters:
                day: date
                people: {type: number, description: How many people.}
              goto: visit_booked
      order_status:
        say: "Order {{order_id}} is on its way."
        next: bye
      visit_booked:
        say: "See you on {{day}}, all {{people}} of you."
        end: true
      agent:
        say: Connecting you.
        handover: {queue: support, skills: [english]}
      sales_transfer:
        say: Sales.
        handover: {queue: sales}
      bye:
        say: Goodbye!
        end: true
""")


def llm_engine(**kwargs: object) -> FlowEngine:
    engine = FlowEngine(LLM_FLOW, caller={"name": "Ana"}, today=MONDAY, **kwargs)  # type: ignore[arg-type]
    assert engine.start().lines == ["Hello Ana, how can I help?"]
    assert engine.waiting_for == "llm"
    return engine


def test_caller_speech_at_an_llm_node_asks_for_an_llm_turn() -> None:
    engine = llm_engine()
    reply = engine.handle("where is my order")
    assert reply.lines == [] and reply.llm is not None
    request = reply.llm
    assert request.node == "welcome"
    # The caller's name and slots are data beside the instructions, never inside them (a profile name is
    # whatever the caller typed).
    assert request.system_prompt == (
        'You are the assistant of Sunrise.\n\nHelp call data "caller.name" with orders. '
        'Known order: call data "slots.order_id".'
    )
    assert request.call_data == {"caller.name": "Ana", "slots.order_id": None}
    assert request.messages == [
        {"role": "assistant", "content": "Hello Ana, how can I help?"},
        {"role": "user", "content": "where is my order"},
    ]
    assert request.allowed_transitions == ["order_status", "bye", "sales_transfer"]
    tools = {tool["function"]["name"]: tool["function"] for tool in request.tools}
    assert list(tools) == ["end_call", "handover", "set_slot", "goto", "book_visit"]
    assert tools["goto"]["parameters"]["properties"]["node"]["enum"] == ["order_status", "bye", "sales_transfer"]
    assert tools["set_slot"]["parameters"]["properties"]["name"]["enum"] == ["order_id", "visit_day"]
    assert tools["handover"]["parameters"]["properties"]["queue"]["enum"] == ["sales", "support"]
    assert tools["book_visit"]["parameters"]["properties"] == {
        "day": {"type": "string", "description": "A date as YYYY-MM-DD."},
        "people": {"type": "number", "description": "How many people."},
    }
    assert all(tool["type"] == "function" for tool in request.tools)


def test_llm_text_only_stays_at_the_node() -> None:
    engine = llm_engine()
    engine.handle("hi")
    reply = engine.llm_result("Sure, what is your order number?", [])
    assert reply.lines == [] and reply.node == "welcome" and engine.waiting_for == "llm"
    assert engine.history[-1] == ("bot", "Sure, what is your order number?")
    assert engine.repeat().lines == ["Sure, what is your order number?"]


def test_set_slot_then_goto() -> None:
    engine = llm_engine()
    engine.handle("my order is 12345, where is it")
    reply = engine.llm_result(
        "Let me check.",
        [ToolCall("set_slot", {"name": "order_id", "value": "12345"}), ToolCall("goto", {"node": "order_status"})],
    )
    assert reply.lines == ["Order 12345 is on its way.", "Goodbye!"]
    assert reply.end_call and reply.slots["order_id"] == "12345"


def test_end_call_tool() -> None:
    engine = llm_engine()
    engine.handle("that's all")
    reply = engine.llm_result("Goodbye!", [ToolCall("end_call", {})])
    assert reply.end_call and reply.lines == [] and engine.ended


def test_handover_tool_uses_the_flows_queue_and_skills() -> None:
    engine = llm_engine()
    engine.handle("I need help with something complicated")
    reply = engine.llm_result("", [ToolCall("handover", {"queue": "support", "reason": "Complicated."})])
    assert reply.actions == [Handover(queue="support", skills=["english"], reason="Complicated.")]
    assert engine.ended


@pytest.mark.parametrize("queue", [None, "", "the complaints team"])
def test_handover_tool_without_a_known_queue_still_hands_over(queue: str | None) -> None:
    engine = llm_engine()
    engine.handle("get me someone")
    reply = engine.llm_result("", [ToolCall("handover", {"queue": queue, "reason": "Asked."})])
    assert reply.handover is not None and reply.handover.queue == "support"


def test_declared_tool_stores_typed_arguments_and_moves() -> None:
    engine = llm_engine()
    engine.handle("can we visit the store tomorrow, two of us")
    reply = engine.llm_result("", [ToolCall("book_visit", {"day": "2024-12-03", "people": 2})])
    assert reply.lines == ["See you on Tuesday the third of December, all 2 of you."]
    assert reply.slots["day"] == dt.date(2024, 12, 3) and reply.slots["people"] == 2


def test_arguments_may_arrive_as_json_text() -> None:
    engine = llm_engine()
    engine.handle("bye")
    reply = engine.llm_result("", [ToolCall("goto", '{"node": "bye"}')])  # type: ignore[arg-type]
    assert reply.lines == ["Goodbye!"]


@pytest.mark.parametrize(
    "calls",
    [
        [ToolCall("goto", {"node": "agent"})],  # not an allowed transition
        [ToolCall("goto", {})],
        [ToolCall("set_slot", {"name": "secret", "value": "x"})],  # not one of the node's slots
        [ToolCall("book_visit", {"day": "whenever", "people": 2})],  # not a date
        [ToolCall("book_visit", {"people": 2})],  # missing argument
        [ToolCall("launch_rockets", {})],
        [ToolCall("goto", "{not json")],  # type: ignore[arg-type]
        [ToolCall("goto", ["bye"])],  # type: ignore[arg-type]
    ],
)
def test_invalid_tool_calls_are_ignored_with_a_warning(calls: list[ToolCall], caplog: pytest.LogCaptureFixture) -> None:
    engine = llm_engine()
    engine.handle("hi")
    with caplog.at_level(logging.WARNING):
        reply = engine.llm_result("Hmm.", calls)
    assert reply.node == "welcome" and reply.lines == [] and not engine.ended
    assert "secret" not in reply.slots and "day" not in reply.slots
    assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)


def test_only_the_first_transition_counts() -> None:
    engine = llm_engine()
    engine.handle("hi")
    reply = engine.llm_result("", [ToolCall("goto", {"node": "bye"}), ToolCall("end_call", {})])
    assert reply.lines == ["Goodbye!"] and reply.node == "bye"


def test_llm_result_when_not_at_an_llm_node_is_ignored() -> None:
    engine = FlowEngine(LOOKUP)
    engine.start()
    reply = engine.llm_result("hello", [ToolCall("end_call", {})])
    assert not reply.end_call and not engine.ended


def test_strong_global_intent_interrupts_an_llm_conversation() -> None:
    engine = llm_engine()
    reply = engine.handle("I want to talk to a person")
    assert reply.intent == "agent" and reply.handover is not None and reply.llm is None


def test_llm_opens_only_when_nothing_was_said_this_turn() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Hello, how can I help?
            next: b
          b:
            llm:
              prompt: Chat.
              transitions: [c]
          c:
            set: {topic: done}
            next: b
    """)
    engine = FlowEngine(flow)
    greeting = engine.start()
    assert greeting.lines == ["Hello, how can I help?"] and greeting.llm is None  # the caller speaks next
    assert engine.waiting_for == "llm"
    engine.handle("hi")
    reply = engine.llm_result("", [ToolCall("goto", {"node": "c"})])
    assert reply.lines == [] and reply.llm is not None and reply.llm.node == "b"  # back silently: LLM speaks
    assert [t["function"]["name"] for t in reply.llm.tools] == ["end_call", "handover", "goto"]


def test_without_an_llm_the_offline_path_is_taken() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: What is your question?
            llm:
              prompt: Answer questions.
              offline: agent
          agent:
            say: Let me get a colleague.
            handover: {queue: general}
    """)
    reply = FlowEngine(flow, llm_available=False).start()
    assert reply.lines == ["What is your question?", "Let me get a colleague."]
    assert reply.handover is not None and reply.llm is None
    assert FlowEngine(flow).start().handover is None
