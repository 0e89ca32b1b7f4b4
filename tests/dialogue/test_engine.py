"""FlowEngine: conversations over the shipped demo and small purpose-built flows."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.dialogue.engine import FlowEngine, Reply, render
from agent.dialogue.flow import Flow, FlowError, Node, load_flow, parse_flow

DEMO = Path(__file__).resolve().parents[2] / "prompts" / "demo.yaml"


@pytest.fixture(scope="module")
def demo() -> Flow:
    return load_flow(DEMO)


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="test.yaml")


def started(flow: Flow, **caller: str) -> FlowEngine:
    engine = FlowEngine(flow, caller=caller or None)
    engine.start()
    return engine


# -- the default simulated call ------------------------------------------------------------


def test_demo_two_turn_call(demo: Flow) -> None:
    engine = FlowEngine(demo, caller={"name": "Maria", "wa_id": "15551234567"})

    greeting = engine.start()
    assert greeting.lines == [
        "Hello Maria, thanks for calling Sunrise Electronics support.",
        "Are you calling about an order, or about billing?",
    ]
    assert greeting.node == "menu"
    assert not greeting.end_call

    first = engine.handle("I want to check the status of my order.")
    assert first.intent == "order"
    assert first.score >= 0.9
    assert first.lines == [
        "Your order shipped yesterday and arrives tomorrow.",
        "Is there anything else I can help with?",
    ]
    assert first.node == "anything_else"
    assert not first.end_call and not engine.ended

    second = engine.handle("No, that's all. Goodbye.")
    assert second.intent in {"goodbye", "no"}
    assert second.lines == ["Thanks for calling Sunrise Electronics. Goodbye!"]
    assert second.node == "goodbye"
    assert second.end_call
    assert engine.ended

    assert engine.history == [
        ("bot", "Hello Maria, thanks for calling Sunrise Electronics support."),
        ("bot", "Are you calling about an order, or about billing?"),
        ("caller", "I want to check the status of my order."),
        ("bot", "Your order shipped yesterday and arrives tomorrow."),
        ("bot", "Is there anything else I can help with?"),
        ("caller", "No, that's all. Goodbye."),
        ("bot", "Thanks for calling Sunrise Electronics. Goodbye!"),
    ]


@pytest.mark.parametrize(
    ("utterance", "intent", "node"),
    [
        ("i want to check the status of my order", "order", "anything_else"),
        ("I WANT TO CHECK THE STATUS OF MY ORDER!!!", "order", "anything_else"),
        ("where's my package", "order", "anything_else"),
        ("wheres my package", "order", "anything_else"),
        ("I want to check the statis of my order", "order", "anything_else"),  # ASR slip
        ("um, my parcel hasn't arrived", "order", "anything_else"),
        ("uh what about my bill", "billing", "anything_else"),
        ("I have a question about my bill", "billing", "anything_else"),
        ("billing", "billing", "anything_else"),
        ("I think I was charged twice", "billing", "anything_else"),
        ("can I talk to a person", "agent", "agent"),
        ("representative please", "agent", "agent"),
    ],
)
def test_demo_menu_understands_variants(demo: Flow, utterance: str, intent: str, node: str) -> None:
    reply = started(demo).handle(utterance)
    assert (reply.intent, reply.node) == (intent, node), reply


def test_demo_billing_answer(demo: Flow) -> None:
    reply = started(demo).handle("I have a question about my bill")
    assert reply.lines[0].startswith("Your last bill")
    assert reply.lines[-1] == "Is there anything else I can help with?"


def test_demo_yes_returns_to_menu(demo: Flow) -> None:
    engine = started(demo)
    engine.handle("where is my order")
    reply = engine.handle("yes please")
    assert (reply.intent, reply.node) == ("yes", "menu")
    assert reply.lines == ["Are you calling about an order, or about billing?"]
    assert engine.handle("what about my bill").intent == "billing"


def test_demo_talk_to_a_person_ends_call(demo: Flow) -> None:
    engine = started(demo)
    reply = engine.handle("Can I talk to a person please?")
    assert reply.intent == "agent"
    assert reply.end_call and engine.ended
    assert "call you back" in reply.lines[0]


@pytest.mark.parametrize("node", ["menu", "anything_else"])
def test_global_goodbye_from_any_node(demo: Flow, node: str) -> None:
    engine = started(demo)
    if node == "anything_else":
        engine.handle("where is my order")
    assert engine.node == node
    reply = engine.handle("okay bye")
    assert (reply.intent, reply.node, reply.end_call) == ("goodbye", "goodbye", True)


# -- fallback and no_match -----------------------------------------------------------------


def test_demo_fallback_then_no_match(demo: Flow) -> None:
    engine = started(demo)
    assert demo.max_retries == 2

    first = engine.handle("the weather is lovely today")
    assert first.intent is None
    assert first.lines == [demo.fallback[0]]
    assert first.node == "menu" and not first.end_call

    second = engine.handle("purple monkey dishwasher")
    assert second.lines == [demo.fallback[1]]
    assert second.node == "menu"

    third = engine.handle("can you tell me a joke")
    assert third.node == "no_match"
    assert third.intent is None
    # no_match offers a call back rather than hanging up on the caller.
    assert not third.end_call and not engine.ended
    assert engine.handle("yes please").end_call and engine.node == "agent"
    assert "trouble understanding" in third.lines[0]


def test_match_resets_the_miss_counter(demo: Flow) -> None:
    engine = started(demo)
    engine.handle("blah blah")
    engine.handle("blah blah blah")
    engine.handle("where is my order")  # matched: new node, counter starts again
    assert engine.handle("the weather is lovely").node == "anything_else"
    assert engine.handle("can you tell me a joke").node == "anything_else"
    assert engine.handle("purple monkey dishwasher").node == "no_match"


def test_without_no_match_node_fallback_repeats() -> None:
    flow = flow_from("""
        start: a
        fallback: ["Pardon?", "Once more?"]
        max_retries: 1
        nodes:
          a:
            say: Order or billing?
            intents:
              - name: order
                examples: [my order]
                goto: done
          done:
            say: Done.
            end: true
    """)
    engine = started(flow)
    lines = [engine.handle("the weather is lovely").lines for _ in range(5)]
    assert lines == [["Pardon?"], ["Once more?"], ["Pardon?"], ["Once more?"], ["Pardon?"]]
    assert engine.node == "a" and not engine.ended


def test_no_match_node_that_asks_again_keeps_the_call_going() -> None:
    flow = flow_from("""
        start: a
        max_retries: 0
        nodes:
          a:
            say: Order or billing?
            intents:
              - name: order
                examples: [my order]
                goto: done
          no_match:
            say: Let us try once more. Say order, or say billing.
            next: a
          done:
            say: Done.
            end: true
    """)
    engine = started(flow)
    reply = engine.handle("the weather is lovely")
    assert reply.lines == ["Let us try once more. Say order, or say billing.", "Order or billing?"]
    assert reply.node == "a" and not reply.end_call
    assert engine.handle("my order please").node == "done"


# -- engine mechanics ------------------------------------------------------------------------


def test_end_node_at_start_ends_immediately() -> None:
    flow = flow_from("""
        start: closed
        nodes:
          closed:
            say: We are closed today. Goodbye.
            end: true
    """)
    engine = FlowEngine(flow)
    reply = engine.start()
    assert reply == Reply(lines=["We are closed today. Goodbye."], node="closed", end_call=True)
    assert engine.ended


def test_speech_after_the_call_ended_is_ignored(demo: Flow) -> None:
    engine = started(demo)
    engine.handle("goodbye")
    history = list(engine.history)
    late = engine.handle("wait, one more thing about my order")
    assert late == Reply(lines=[], node="goodbye", end_call=True)
    assert engine.history == history


@pytest.mark.parametrize("noise", ["", "   ", "...", "?!"])
def test_empty_transcripts_are_ignored(demo: Flow, noise: str) -> None:
    engine = started(demo)
    for _ in range(5):
        reply = engine.handle(noise)
        assert reply.lines == [] and reply.node == "menu" and not reply.end_call
    assert engine.handle("where is my order").node == "anything_else"
    assert ("caller", noise) not in engine.history


def test_interruptible_flag_is_reported() -> None:
    flow = flow_from("""
        start: legal
        nodes:
          legal:
            say: This call may be recorded.
            interruptible: false
            next: ask
          ask:
            say: How can I help?
            intents:
              - name: help
                examples: [help me]
                goto: ask
              - name: bye
                examples: [goodbye]
                goto: bye
          bye:
            say: Bye.
            end: true
    """)
    engine = FlowEngine(flow)
    assert engine.start().interruptible is False  # the chain contains a must-hear line
    assert engine.handle("help me please").interruptible is True
    assert engine.handle("zebra crossing").interruptible is True


def test_start_twice_and_handle_before_start_are_bugs(demo: Flow) -> None:
    engine = FlowEngine(demo)
    with pytest.raises(RuntimeError):
        engine.handle("hello")
    engine.start()
    with pytest.raises(RuntimeError):
        engine.start()


def test_engine_rejects_invalid_hand_built_flow() -> None:
    flow = Flow(name="bad", start="a", nodes={"a": Node(id="a", say=["hi"])})
    with pytest.raises(FlowError, match="dead end"):
        FlowEngine(flow)


def test_local_intent_wins_tie_with_global() -> None:
    flow = flow_from("""
        start: a
        global_intents:
          - name: global_help
            examples: [help]
            goto: global_target
        nodes:
          a:
            say: Hi.
            intents:
              - name: local_help
                examples: [help]
                goto: local_target
          local_target:
            say: Local.
            end: true
          global_target:
            say: Global.
            end: true
    """)
    reply = started(flow).handle("Help!")
    assert (reply.intent, reply.lines) == ("local_help", ["Local."])


# -- templating ---------------------------------------------------------------------------


def test_caller_name_is_filled_in(demo: Flow) -> None:
    reply = FlowEngine(demo, caller={"name": "Ana"}).start()
    assert reply.lines[0] == "Hello Ana, thanks for calling Sunrise Electronics support."


@pytest.mark.parametrize("caller", [None, {}, {"name": ""}, {"wa_id": "15551234567"}])
def test_missing_caller_name_reads_naturally(demo: Flow, caller: dict[str, str] | None) -> None:
    reply = FlowEngine(demo, caller=caller).start()
    assert reply.lines[0] == "Hello, thanks for calling Sunrise Electronics support."


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{caller.name}}, welcome.", "Hi, welcome."),
        ("Thanks, {{ caller.name }}.", "Thanks."),
        ("{{caller.name}}, your order shipped.", "your order shipped."),
        ("Goodbye {{caller.name}}!", "Goodbye!"),
        ("{{caller.name}}", ""),
        ("Your number is {{caller.wa_id}}.", "Your number is 15551234567."),
    ],
)
def test_render_missing_and_present_values(template: str, expected: str) -> None:
    assert render(template, {"caller": {"wa_id": "15551234567"}}) == expected


def test_line_that_renders_empty_is_not_spoken() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: ["{{caller.name}}", "Welcome."]
            end: true
    """)
    assert FlowEngine(flow).start().lines == ["Welcome."]
    assert FlowEngine(flow, caller={"name": "Bo"}).start().lines == ["Bo", "Welcome."]


def test_multiline_say_is_spoken_as_one_line() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: |
              Welcome to Acme.
              How can we help?
            end: true
    """)
    assert FlowEngine(flow).start().lines == ["Welcome to Acme. How can we help?"]
