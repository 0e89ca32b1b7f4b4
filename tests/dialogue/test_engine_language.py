"""FlowEngine over the new language: typed questions, re-prompts, no_match, conditions, variants,
set, repeat and a pluggable classifier."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence

import pytest

from agent.dialogue.engine import STRONG_MATCH, FlowEngine
from agent.dialogue.flow import Flow, parse_flow
from agent.dialogue.model import Intent

MONDAY = dt.date(2024, 12, 2)


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="test.yaml")


def started(flow: Flow, **kwargs: object) -> FlowEngine:
    engine = FlowEngine(flow, today=MONDAY, **kwargs)  # type: ignore[arg-type]
    engine.start()
    return engine


BOOKING = flow_from("""
    start: ask_day
    global_intents:
      - name: agent
        examples: ["I want to talk to a person", "can I speak to someone"]
        keywords: [person, human]
        goto: agent
      - name: repeat
        examples: ["can you repeat that", "say that again"]
        repeat: true
    nodes:
      ask_day:
        say:
          - one_of: ["Which day?", "Which other day?"]
        ask: {slot: day, type: date}
        reprompt: ["Sorry, which day?", "Please say a day, like tomorrow."]
        max_retries: 2
        no_match: agent
        branches:
          - if: day < today
            goto: past
        next: ask_size
      past:
        say: That day has passed.
        next: ask_day
      ask_size:
        say: "How many people on {{day}}?"
        ask: {slot: size, type: number, min: 1, max: 20}
        branches:
          - if: size > 8
            goto: big_group
        next: confirm
      big_group:
        say: "For {{size}} people please call our events team."
        set: {group: large}
        next: confirm
      confirm:
        say: "So {{size}} people on {{day}}. Correct?"
        ask: {slot: ok, type: yes_no}
        intents:
          - name: other_day
            examples: ["a different day please"]
            keywords: [different day]
            goto: ask_day
        branches:
          - if: ok
            goto: done
        next: ask_day
      done:
        say: "Booked, {{group}} group."
        end: true
      agent:
        say: Connecting you.
        handover: {queue: reception, reason: "Caller wants a person at {{day}}"}
""")


def test_typed_answers_fill_slots_and_conditions_route() -> None:
    engine = FlowEngine(BOOKING, today=MONDAY)
    assert engine.start().lines == ["Which day?"]
    reply = engine.handle("tomorrow please")
    assert reply.slots == {"day": dt.date(2024, 12, 3)}
    assert reply.lines == ["How many people on Tuesday the third of December?"]
    assert reply.intent is None and reply.node == "ask_size"
    reply = engine.handle("twelve of us")
    assert reply.lines == [
        "For 12 people please call our events team.",
        "So 12 people on Tuesday the third of December. Correct?",
    ]
    assert reply.slots["group"] == "large"
    reply = engine.handle("yeah")
    assert (reply.lines, reply.end_call) == (["Booked, large group."], True)


def test_condition_sends_the_caller_back_and_variants_rotate() -> None:
    engine = started(BOOKING)
    reply = engine.handle("yesterday")
    assert reply.lines == ["That day has passed.", "Which other day?"]
    assert reply.node == "ask_day"
    assert engine.handle("friday").slots["day"] == dt.date(2024, 12, 6)


def test_reprompts_then_the_questions_own_no_match() -> None:
    engine = started(BOOKING)
    assert engine.handle("the blue one").lines == ["Sorry, which day?"]
    assert engine.handle("bananas").lines == ["Please say a day, like tomorrow."]
    assert engine.misses == 2
    reply = engine.handle("purple monkey dishwasher")
    assert reply.node == "agent"
    assert reply.handover is not None and reply.handover.queue == "reception"
    assert reply.handover.reason == "Caller wants a person at"  # unset slot left out, sentence tidied
    assert engine.ended and not reply.end_call


def test_number_out_of_range_is_not_understood() -> None:
    engine = started(BOOKING)
    engine.handle("tomorrow")
    reply = engine.handle("fifty")
    assert reply.node == "ask_size" and reply.lines == ["Sorry, could you say that again?"]
    assert "size" not in reply.slots


def test_local_intent_beats_a_parsed_answer() -> None:
    engine = started(BOOKING)
    engine.handle("tomorrow")
    engine.handle("two")
    reply = engine.handle("no, a different day please")
    assert (reply.intent, reply.node) == ("other_day", "ask_day")


def test_no_at_the_confirmation_follows_next() -> None:
    engine = started(BOOKING)
    engine.handle("tomorrow")
    engine.handle("two")
    reply = engine.handle("nope")
    assert reply.slots["ok"] is False and reply.node == "ask_day"


def test_a_strong_global_intent_beats_a_parsed_yes_no() -> None:
    engine = started(BOOKING)
    engine.handle("tomorrow")
    engine.handle("two")
    reply = engine.handle("no, I want to talk to a person")
    assert reply.intent == "agent" and reply.score >= STRONG_MATCH
    assert reply.handover is not None


def test_repeat_intent_and_method_say_the_last_thing_again() -> None:
    engine = started(BOOKING)
    engine.handle("tomorrow")
    reply = engine.handle("sorry, can you say that again")
    assert reply.intent == "repeat"
    assert reply.lines == ["How many people on Tuesday the third of December?"]
    assert reply.node == "ask_size" and engine.misses == 0
    assert engine.repeat().lines == ["How many people on Tuesday the third of December?"]
    assert engine.history[-1] == ("bot", "How many people on Tuesday the third of December?")


def test_repeat_after_a_fallback_repeats_the_question_not_sorry() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Order or billing?
            intents:
              - {name: order, examples: [my order], goto: bye}
          bye:
            say: Bye.
            end: true
    """)
    engine = started(flow)
    assert engine.handle("zebra").lines == ["Sorry, could you say that again?"]
    assert engine.repeat().lines == ["Order or billing?"]


def test_today_can_be_a_callable() -> None:
    days = iter([dt.date(2024, 12, 2), dt.date(2025, 6, 1)])
    engine = FlowEngine(BOOKING, today=lambda: next(days))
    engine.start()
    assert engine.handle("tomorrow").slots["day"] == dt.date(2024, 12, 3)


def test_initial_slots_and_flow_defaults() -> None:
    flow = flow_from("""
        start: a
        slots:
          tier: basic
          balance:
        nodes:
          a:
            say: "Tier {{tier}}, balance {{balance}}."
            end: true
    """)
    assert FlowEngine(flow).start().lines == ["Tier basic, balance."]
    reply = FlowEngine(flow, slots={"balance": 42}).start()
    assert reply.lines == ["Tier basic, balance 42."]
    assert reply.slots == {"tier": "basic", "balance": 42}


def test_intent_set_and_node_set() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Why are you calling?
            intents:
              - name: dispute
                examples: [I do not owe that]
                set: {reason: dispute, urgent: true}
                goto: b
          b:
            say: "Reason {{reason}}, urgent {{urgent}}."
            set: {seen: "{{reason}} noted"}
            end: true
    """)
    reply = started(flow).handle("I don't owe that")
    assert reply.lines == ["Reason dispute, urgent yes."]
    assert reply.slots == {"reason": "dispute", "urgent": True, "seen": "dispute noted"}


def test_classifier_helps_only_where_offline_matching_is_unsure_and_failures_fall_back() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Order or billing?
            intents:
              - {name: order, examples: [my order], goto: order}
              - {name: billing, examples: [my bill], goto: billing}
          order:
            say: Order.
            end: true
          billing:
            say: Billing.
            end: true
    """)
    seen: list[str] = []

    def classifier(text: str, intents: Sequence[Intent]) -> tuple[Intent | None, float]:
        seen.append(text)
        return next(i for i in intents if i.name == "billing"), 0.9

    engine = started(flow, classifier=classifier)
    # Offline matching is sure: the classifier is not even asked.
    assert engine.handle("my order").intent == "order"
    assert seen == []
    engine = started(flow, classifier=classifier)
    reply = engine.handle("the thing with the money they took")
    assert (reply.intent, reply.score) == ("billing", 0.9)
    assert seen == ["the thing with the money they took"]

    def broken(text: str, intents: Sequence[Intent]) -> tuple[Intent | None, float]:
        raise TimeoutError("model too slow")

    engine = started(flow)
    engine.classify_with(broken)
    assert engine.handle("my order please").intent == "order"
    engine = started(flow)
    engine.classify_with(classifier)
    engine.classify_with(None)
    assert engine.handle("the thing with the money they took").intent is None


def test_scores_of_every_candidate_are_reported() -> None:
    engine = started(BOOKING)
    reply = engine.handle("bananas")
    assert set(reply.scores) == {"agent", "repeat"}
    assert all(0 <= score <= 1 for score in reply.scores.values())


def test_a_conditional_loop_cannot_hang_the_engine() -> None:
    from agent.dialogue.model import Branch, Node

    flow = Flow(
        name="loop",
        start="a",
        slots={"x": True},
        nodes={
            "a": Node(id="a", say=["A."], branches=[Branch(condition="x", goto="b")], next="c"),
            "b": Node(id="b", branches=[Branch(condition="x", goto="a")], next="c"),
            "c": Node(id="c", say=["Bye."], end=True),
        },
    )
    reply = FlowEngine(flow).start()
    assert len(reply.lines) <= 50


@pytest.mark.parametrize("noise", ["", "  ", "..."])
def test_noise_during_a_question_is_not_a_miss(noise: str) -> None:
    engine = started(BOOKING)
    assert engine.handle(noise).lines == []
    assert engine.misses == 0
