"""The flow keys for understanding callers: digits and their length, read-backs, intent
checks, the FAQ and business hours, each checked by ``flows check`` at its line:column."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from agent.dialogue.flow import Flow, FlowError, flow_errors, parse_flow
from agent.dialogue.model import DigitLength
from agent.dialogue.schema import flow_schema


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="flow.yaml")


def errors(text: str) -> list[str]:
    _, found = flow_errors(textwrap.dedent(text).lstrip("\n"), source="flow.yaml")
    return [str(error) for error in found]


def assert_error(text: str, position: str, *fragments: str) -> None:
    with pytest.raises(FlowError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"flow.yaml:{position}: "), message
    for fragment in fragments:
        assert fragment in message, message


ASK = """
start: a
nodes:
  a:
    say: Your order number?
    ask:
      slot: order
      type: {type}
      {extra}
    next: done
  done:
    say: Thanks.
    end: true
"""


def asking(type_: str, extra: str) -> str:
    return ASK.replace("{type}", type_).replace("{extra}", extra)


def test_digits_with_an_exact_length_read_back_by_default() -> None:
    flow = parse(asking("digits", "length: 5"))
    ask = flow.nodes["a"].ask
    assert ask is not None and ask.length == DigitLength(min=5, max=5) and ask.length.exact == 5
    assert ask.reads_back


def test_a_length_range_and_a_custom_read_back_line() -> None:
    flow = parse(asking("digits", 'length: {min: 6, max: 10}\n      confirm: "So that is {{order}}?"'))
    ask = flow.nodes["a"].ask
    assert ask is not None and ask.length == DigitLength(min=6, max=10) and ask.length.exact is None
    assert ask.confirm == "So that is {{order}}?"


def test_read_backs_can_be_switched_on_and_off() -> None:
    digits = parse(asking("digits", "confirm: false")).nodes["a"].ask
    date = parse(asking("date", "confirm: true")).nodes["a"].ask
    assert digits is not None and not digits.reads_back
    assert date is not None and date.reads_back


def test_length_only_fits_digits_and_numbers() -> None:
    assert_error(asking("date", "length: 5"), "8:7", "`length` only applies to `type: digits` or `number`")


def test_length_must_be_sensible() -> None:
    assert_error(asking("digits", "length: 0"), "8:15", "at least 1 digit")
    assert_error(asking("digits", "length: {min: 8, max: 6}"), "8:29", "smaller than its `min`")
    assert_error(asking("digits", "length: {min: 8}"), "8:15", "needs both `min` and `max`")
    assert_error(asking("number", "length: 20"), "8:15", "use `type: digits`")


def test_min_and_max_point_digits_at_length() -> None:
    assert_error(asking("digits", "min: 1"), "8:7", "`min` only applies to `type: number`", "with `length`")


def test_a_read_back_line_uses_known_slots() -> None:
    assert_error(asking("digits", 'confirm: "That is {{odrer}}?"'), "8:25", "slot 'odrer' is used here but never set")


def test_intent_confirm_lines() -> None:
    flow = parse("""
        start: a
        nodes:
          a:
            say: Anything else?
            intents:
              - {name: done, examples: [no], goto: bye, confirm: "End the call?"}
              - {name: quiet, examples: [stop], goto: bye, confirm: false}
              - {name: plain, examples: [finish], goto: bye, confirm: true}
          bye:
            say: Bye.
            end: true
    """)
    assert [i.confirm for i in flow.nodes["a"].intents] == ["End the call?", "", None]
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Anything else?
            intents:
              - {name: done, examples: [no], goto: bye, confirm: 5}
          bye:
            say: Bye.
            end: true
        """,
        "6:58",
        "`confirm` of intent 'done'",
    )


FAQ = """
start: a
faq:
  - name: hours
    examples: ["when are you open"]
    keywords: [opening hours]
    answer: "We are open from nine to five, {{caller.name}}."
  - examples: ["where are you"]
    answer:
      - "At the station."
      - one_of: ["Come and see us.", "We hope to see you."]
nodes:
  a:
    say: Hi?
    intents: [{name: bye, examples: [bye], goto: b}]
  b:
    say: Bye.
    end: true
"""


def test_faq_entries() -> None:
    flow = parse(FAQ)
    assert [entry.name for entry in flow.faq] == ["hours", "faq_2"]
    assert flow.faq[1].answer[0] == "At the station."


@pytest.mark.parametrize(
    ("change", "position", "fragment"),
    [
        (('answer: "We are open from nine to five, {{caller.name}}."', ""), "3:5", "needs an `answer`"),
        (('    examples: ["when are you open"]\n    keywords: [opening hours]\n', ""), "3:5", "needs `examples`"),
        (('- examples: ["where are you"]', '- name: hours\n    examples: ["where are you"]'), "7:11", "duplicate"),
        (("{{caller.name}}", "{{missing}}"), "6:45", "slot 'missing' is used here but never set"),
        (("faq:\n", "faq:\n  - 5\n"), "3:5", "must be a block"),
    ],
)
def test_faq_mistakes(change: tuple[str, str], position: str, fragment: str) -> None:
    old, new = change
    assert old in FAQ
    assert_error(FAQ.replace(old, new, 1), position, fragment)


HOURS = """
start: a
business_hours: {hours}
nodes:
  a:
    say: Bye.
    end: true
"""


def test_business_hours() -> None:
    flow = parse(HOURS.replace("{hours}", '{open: "08:30", close: "18:00"}'))
    assert (flow.business_hours.open, flow.business_hours.close) == (dt.time(8, 30), dt.time(18, 0))
    # Unquoted, YAML 1.1 reads 08:30 as a number of minutes; it is still taken as the time.
    flow = parse(HOURS.replace("{hours}", "{open: 08:30, close: 17:00}"))
    assert flow.business_hours.open == dt.time(8, 30)
    assert parse(HOURS.replace("{hours}", "{close: '20:00'}")).business_hours.open == dt.time(9, 0)


def test_business_hours_mistakes() -> None:
    assert_error(HOURS.replace("{hours}", "{open: '18:00', close: '09:00'}"), "2:40", "must be later than `open`")
    assert_error(HOURS.replace("{hours}", "{open: nine}"), "2:24", 'a clock time like "09:00"')
    assert_error(HOURS.replace("{hours}", "{opens: '09:00'}"), "2:18", "unknown key 'opens'", "did you mean 'open'")


def test_the_schema_knows_the_new_keys() -> None:
    schema = flow_schema()
    assert "faq" in schema["properties"] and "business_hours" in schema["properties"]
    assert schema["definitions"]["node"]["anyOf"][0]["properties"]["ask"]["anyOf"][0] == {"$ref": "#/definitions/Ask"}
    ask = schema["definitions"]["Ask"]["properties"]
    assert {"length", "confirm"} <= set(ask)
    assert "digits" in ask["type"]["enum"]
    assert "confirm" in schema["definitions"]["intent"]["properties"]


def test_every_problem_is_reported_at_once() -> None:
    found = errors(asking("date", 'length: 5\n      confirm: "{{nope}}"'))
    assert len(found) == 2


def test_a_yes_or_no_is_not_read_back() -> None:
    assert_error(asking("yes_no", "confirm: true"), "8:7", "a yes or no is not read back")
