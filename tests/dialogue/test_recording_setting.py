"""A flow's `recording:` setting: parsed with positions for mistakes, and the notice said first on a recorded call."""

from __future__ import annotations

import pytest
import yaml

from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import FlowError, parse_flow
from agent.dialogue.schema import flow_schema
from tests.dialogue.test_shipped_flows import schema_errors

FLOW = """
start: hello
recording: {enabled: true, announce: "This call is recorded."}
nodes:
  hello:
    say: "Hello. How can I help?"
    intents:
      - {name: order, keywords: [order], goto: bye}
  bye: {say: "Goodbye.", end: true}
"""


def test_the_notice_comes_first_and_cannot_be_talked_over_on_a_recorded_call() -> None:
    flow = parse_flow(FLOW)
    assert (flow.recording.enabled, flow.recording.announce) == (True, "This call is recorded.")
    reply = FlowEngine(flow).start()  # as `wacall flows test` runs it: the flow's own `enabled`
    assert reply.lines == ["This call is recorded.", "Hello. How can I help?"]
    assert reply.interruptible is False
    engine = FlowEngine(flow, recorded=False)  # the server does not record this call: nothing to announce
    assert engine.start().lines == ["Hello. How can I help?"]


def test_say_that_again_repeats_the_greeting_not_the_notice() -> None:
    engine = FlowEngine(parse_flow(FLOW), recorded=True)
    engine.start()
    assert engine.repeat().lines == ["Hello. How can I help?"]


def test_a_flow_without_the_setting_leaves_it_to_the_server() -> None:
    flow = parse_flow(FLOW.replace('recording: {enabled: true, announce: "This call is recorded."}\n', ""))
    assert flow.recording.enabled is None and flow.recording.announce == ""
    assert FlowEngine(flow, recorded=True).start().lines == ["Hello. How can I help?"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("{enabled: yes please}", "`enabled` of `recording` must be true or false"),
        ('{announce: "Hi {{caller.name}}, this call is recorded."}', "cannot use {{placeholders}}"),
        ("{annonce: recorded}", "annonce"),
    ],
)
def test_mistakes_are_reported_where_they_are(setting: str, message: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(FLOW.replace('{enabled: true, announce: "This call is recorded."}', setting))
    assert message in str(caught.value)
    assert caught.value.line == 3


def test_the_json_schema_knows_the_setting() -> None:
    assert schema_errors(yaml.safe_load(FLOW), flow_schema()) == []
    bad = yaml.safe_load(FLOW.replace("enabled: true", "enabled: true, loud: true"))
    assert schema_errors(bad, flow_schema())
