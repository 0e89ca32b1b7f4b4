"""The keypad in flows: intents with a `key`, number questions answered by typed digits, secret answers,
what `flows check` says about keys, and keys in flow tests and `flows chat`."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow, flow_errors, parse_flow
from agent.dialogue.flowtest import format_report, load_suite, run_test_file
from agent.dialogue.model import MASK
from agent.dialogue.schema import flow_schema, flow_test_schema
from agent.flows_cli import chat

FLOW = """
name: keys
start: menu
fallback: ["Sorry, that is not an option."]
max_retries: 1
global_intents:
  - name: agent
    key: "0"
    examples: ["talk to a person"]
    goto: agent
  - name: again
    key: "*"
    repeat: true
nodes:
  menu:
    say: "Press 1 for orders, 2 for your PIN, 3 for your balance."
    intents:
      - name: orders
        key: "1"
        examples: ["where is my order", "my order"]
        goto: order
      - name: pin
        key: 2
        examples: ["my pin"]
        goto: pin
      - name: balance
        key: "3"
        goto: balance
  order:
    say: "Your order number?"
    ask: {slot: order, type: digits, length: 5}
    next: thanks
  pin:
    say: "Your PIN, then hash."
    ask:
      slot: pin
      type: digits
      length: {min: 4, max: 6}
      secret: true
      keypad: {terminator: "#", timeout: 3}
    next: check_pin
  check_pin:
    say: "Checking."
    http:
      method: POST
      url: "https://bank.example.com/pin"
      json: {pin: "{{pin}}"}
      on_success: thanks
      on_error: agent
  balance:
    say: "How much do you want to pay?"
    ask: {slot: amount, type: number, min: 1, max: 500, keypad: {max_digits: 3, terminator: false}}
    next: thanks
  thanks:
    say: "Thank you."
    end: true
  agent:
    say: "Connecting you."
    end: true
  no_match:
    say: "Let me get someone."
    end: true
"""


def flow(text: str = FLOW) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="keys.yaml")


def engine() -> FlowEngine:
    e = FlowEngine(flow())
    e.start()
    return e


# -- the engine ------------------------------------------------------------------------------------


def test_a_key_picks_its_intent_like_saying_it() -> None:
    by_key, by_voice = engine(), engine()
    keyed = by_key.handle_keys("1")
    said = by_voice.handle("where is my order")
    assert keyed.intent == said.intent == "orders"
    assert keyed.lines == said.lines == ["Your order number?"]
    assert keyed.score == 1.0 and by_key.node == "order"
    assert by_key.history[-2] == ("caller", "[keys] 1")


def test_a_key_only_intent_and_global_keys() -> None:
    e = engine()
    assert e.handle_keys("3").intent == "balance"
    e = engine()
    reply = e.handle_keys("*")
    assert reply.intent == "again" and reply.lines == ["Press 1 for orders, 2 for your PIN, 3 for your balance."]
    assert e.handle_keys("0").intent == "agent"
    assert e.ended


def test_a_key_that_picks_nothing_is_a_miss() -> None:
    e = engine()
    reply = e.handle_keys("7")
    assert reply.lines == ["Sorry, that is not an option."] and reply.intent is None
    assert e.misses == 1 and e.node == "menu"
    reply = e.handle_keys("#")  # the second miss: past max_retries
    assert reply.lines == ["Let me get someone."] and reply.end_call


def test_digits_typed_at_a_number_question_are_its_answer() -> None:
    e = engine()
    assert e.keypad is not None and not e.keypad.typing and e.keypad.max_digits == 1
    e.handle_keys("1")
    entry = e.keypad
    assert entry is not None and entry.typing
    assert (entry.max_digits, entry.terminator, entry.timeout_s) == (5, "#", 5.0)  # the defaults, fit to length
    assert entry.instant == {"*"}  # the global * still works as the first key; 0 is a digit here
    reply = e.handle_keys("04821")
    assert reply.lines == ["Just to check: 0 4 8, 2 1. Is that right?"]  # read back, as when said
    assert e.handle("yes").lines == ["Thank you."]
    assert e.slots["order"] == "04821"


def test_a_wrong_number_of_digits_is_a_miss_that_says_so() -> None:
    e = engine()
    e.handle_keys("1")
    reply = e.handle_keys("482#")
    assert reply.lines == ["Sorry, that was three digits, but it should have 5. Could you enter it again?"]
    assert e.misses == 1 and e.node == "order"
    assert e.handle_keys("48*21").lines == ["Let me get someone."]  # * inside a number: not understood


def test_digits_said_then_typed_are_one_number() -> None:
    e = engine()
    e.handle_keys("1")
    assert "last two digits" in " ".join(e.handle("four eight two").lines)
    reply = e.handle_keys("91")
    assert reply.lines == ["Just to check: 4 8 2, 9 1. Is that right?"]


def test_a_number_typed_without_a_terminator_and_its_range() -> None:
    e = engine()
    e.handle_keys("3")
    entry = e.keypad
    assert entry is not None and (entry.max_digits, entry.terminator) == (3, None)
    assert e.handle_keys("900").lines == ["Sorry, that is not an option."]  # above max
    assert e.handle_keys("120").lines == ["Thank you."]
    assert e.slots["amount"] == 120


def test_a_secret_answer_is_masked_everywhere_but_used_by_the_flow() -> None:
    e = engine()
    e.handle_keys("2")
    assert e.secret and e.keypad is not None and e.keypad.secret
    reply = e.handle_keys("1234#")
    assert reply.lines == ["Checking."]  # never read back
    assert reply.slots["pin"] == MASK and e.slots["pin"] == MASK
    assert e.slot_values["pin"] == "1234"
    request = reply.actions[0]
    assert request.json_body == {"pin": "1234"}  # type: ignore[union-attr]
    assert ("caller", f"[keys] {MASK}") in e.history
    assert not any("1234" in text for _, text in e.history)


def test_a_secret_said_aloud_is_masked_in_the_history() -> None:
    e = engine()
    e.handle_keys("2")
    e.handle("one two three four")
    assert e.slot_values["pin"] == "1234"
    assert ("caller", MASK) in e.history


def test_keys_during_a_lookup_only_reach_global_intents() -> None:
    e = engine()
    e.handle_keys("2")
    e.handle_keys("1234#")
    assert e.waiting_for == "action"
    entry = e.keypad
    assert entry is not None and not entry.waiting and entry.instant == {"0", "*"}  # the conversation ignores 1
    assert e.handle_keys("1").lines == []
    reply = e.handle_keys("0")
    assert reply.intent == "agent" and e.pending_action is None


def test_keys_after_the_end_do_nothing() -> None:
    e = engine()
    e.handle_keys("0")
    assert e.handle_keys("1").lines == [] and e.keypad is None


def test_the_engine_state_round_trips_through_a_snapshot() -> None:
    e = engine()
    before = e.snapshot()
    e.handle_keys("2")
    e.restore(before)
    assert e.node == "menu" and e.handle_keys("1").intent == "orders"


# -- flows check -------------------------------------------------------------------------------------

BASE = """
start: menu
global_intents:
  - name: agent
    key: "0"
    examples: [a person]
    goto: done
nodes:
  menu:
    say: Press 1.
    intents:
      - name: one
        examples: [one]
        key: {key}
        goto: done
      - name: two
        examples: [two]
        key: "2"
        goto: ask
  ask:
    say: Your number?
    ask:
      slot: number
      type: {type}
      {extra}
    next: done
  done:
    say: Bye.
    end: true
"""


def errors_of(key: str = '"1"', type_: str = "digits", extra: str = "length: 4") -> list[str]:
    text = BASE.replace("{key}", key).replace("{type}", type_).replace("{extra}", extra)
    _, found = flow_errors(textwrap.dedent(text).lstrip("\n"), source="f.yaml")
    return [str(error) for error in found]


def test_the_base_flow_is_fine() -> None:
    assert errors_of() == []


@pytest.mark.parametrize(
    ("key", "type_", "extra", "expected"),
    [
        ('"12"', "digits", "length: 4", "f.yaml:13:14: `key` of intent 'one' is one key (0-9, * or #), not '12'"),
        ('"A"', "digits", "length: 4", "f.yaml:13:14: 'A' is not a key of the phone's dialpad; use 0-9, * or #"),
        ('"2"', "digits", "length: 4", "f.yaml:17:14: key '2' is already the key of intent 'one' here"),
        ("0", "digits", "length: 4", "f.yaml:13:14: key '0' is already the key of global intent 'agent'"),
        ("", "digits", "length: 4", "f.yaml:13:13: `key` of intent 'one' is empty; write the key in quotes"),
        ('"1"', "digits", "keypad: {terminator: '5'}", "f.yaml:24:28: `terminator` '5' is a digit the answer"),
        ('"1"', "digits", "keypad: {terminator: 'x'}", "f.yaml:24:28: `terminator` must be * or #, not 'x'"),
        ('"1"', "digits", "keypad: {max_digits: 40}", "f.yaml:24:28: `max_digits` must be between 1 and 32"),
        (
            '"1"',
            "digits",
            "length: 6\n      keypad: {max_digits: 4}",
            "`max_digits` (4) is fewer than the 6 digits the answer needs",
        ),
        ('"1"', "number", "keypad: {max_digits: 20}", "a number of more than 15 digits is a code"),
        ('"1"', "digits", "keypad: {timeout: 60}", "f.yaml:24:25: `timeout` (seconds between keys) must be"),
        ('"1"', "yes_no", "keypad: true", "`keypad` only applies to `type: digits` or `number`"),
        ('"1"', "digits", "secret: true\n      confirm: true", "a `secret` answer is never read back aloud"),
        ('"1"', "digits", "keypad: false", "always takes the keypad; remove `keypad`"),
        ('"1"', "digits", "keypad: {digits: 4}", "unknown key 'digits'"),
    ],
)
def test_flows_check_reports_key_mistakes(key: str, type_: str, extra: str, expected: str) -> None:
    found = errors_of(key, type_, extra)
    assert any(expected in error for error in found), found


def test_a_bare_star_gets_a_hint() -> None:
    found = errors_of("*")
    assert found and 'put keypad keys in quotes, like key: "*"' in found[0], found


def test_a_digit_key_on_a_question_that_takes_digits_is_refused() -> None:
    text = """
    start: ask
    nodes:
      ask:
        say: Your number?
        ask: {slot: n, type: digits}
        intents:
          - name: help
            key: "9"
            goto: done
        next: done
      done:
        say: Bye.
        end: true
    """
    _, found = flow_errors(textwrap.dedent(text).lstrip("\n"), source="f.yaml")
    assert [str(e) for e in found] == [
        "f.yaml:8:14: this question takes its answer on the keypad, so key '9' would be read as part of the number; "
        "give intent 'help' * or # (or drop the keypad from the question)"
    ]


def test_the_terminator_cannot_be_an_intent_key() -> None:
    text = """
    start: ask
    global_intents:
      - name: again
        key: "#"
        repeat: true
    nodes:
      ask:
        say: Your number?
        ask: {slot: n, type: digits}
        next: done
      done:
        say: Bye.
        end: true
    """
    flow_text = textwrap.dedent(text).lstrip("\n").replace("type: digits}", "type: digits, keypad: {terminator: '#'}}")
    _, found = flow_errors(flow_text, source="f.yaml")
    assert any("`terminator` '#' is also the key of intent 'again'" in str(e) for e in found), found


def test_the_schema_knows_the_keypad() -> None:
    schema = flow_schema()
    assert schema["definitions"]["node"]["anyOf"][0]["properties"]["ask"]["anyOf"][0] == {"$ref": "#/definitions/Ask"}
    ask = schema["definitions"]["Ask"]["properties"]
    assert {"keypad", "secret"} <= set(ask)
    assert "key" in schema["definitions"]["intent"]["properties"]
    step = flow_test_schema()["properties"]["conversations"]["items"]["properties"]["steps"]["items"]
    assert "keys" in step["properties"]


# -- flow tests and flows chat ------------------------------------------------------------------------------


def test_flow_tests_press_keys(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(textwrap.dedent(FLOW).lstrip("\n"), encoding="utf-8")
    path = tmp_path / "keys.test.yaml"
    path.write_text(
        textwrap.dedent(
            """
            conversations:
              - name: pin by keys
                steps:
                  - keys: 2
                    expect: {intent: pin, node: pin}
                  - keys: "1234#"
                    expect: {say: "Checking.", slots: {pin: "1234"}}
              - name: a wrong key
                steps:
                  - keys: "7"
                    expect: {say: "Sorry, that is not an option.", node: menu}
                  - caller: where is my order
                    expect: {intent: orders}
            """
        ).lstrip("\n"),
        encoding="utf-8",
    )
    report = run_test_file(path)
    assert report.ok, format_report(report)
    assert "[keys] 1234#" in format_report(report, verbose=True)


def test_a_keys_step_must_be_keys(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(textwrap.dedent(FLOW).lstrip("\n"), encoding="utf-8")
    path = tmp_path / "keys.test.yaml"
    path.write_text("conversations:\n  - steps:\n      - keys: 1x\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"keys.test.yaml:3:15: `keys` of step 1 .* must be keys of the dialpad"):
        load_suite(path)


def test_flows_chat_takes_keys() -> None:
    out = io.StringIO()
    e = FlowEngine(flow())
    chat(e, ["/keys 2", "/keys 12#", "/key 1234#", "/keys x"], out, echo=True)
    text = out.getvalue()
    assert "[keys 2: matched pin]" in text
    assert '[keys 12#: not understood | this question takes up to 6 digits, "#" ends]' in text
    assert '[keys 1234#: taken | this question takes up to 6 digits, "#" ends]' in text
    assert f"pin={MASK}" in text and "1234]" not in text.split("/key 1234#")[1]
    assert "[usage: /keys 123#" in text
