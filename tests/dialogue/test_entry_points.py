"""Call context in flows: `entry_points` pick the first node from a button's or link's payload, and
`{{call.payload}}` / `{{call.payload_source}}` say what started the call."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from agent.cli import main
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow, FlowError, flow_errors, parse_flow
from agent.dialogue.schema import flow_schema
from agent.dialogue.templates import parse_template, render

FLOW = """
start: hello
entry_points:
  summer-sale: summer
  "summer-*": any_summer
  "*-vip": vip
nodes:
  hello:
    say: Hello.
    end: true
  summer:
    say: "Summer sale, from a {{call.payload_source}}."
    end: true
  any_summer:
    say: "You came for {{call.payload}}."
    end: true
  vip:
    say: Welcome back.
    end: true
"""


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="flow.yaml")


@pytest.mark.parametrize(
    ("payload", "node"),
    [
        (None, "hello"),
        ("summer-sale", "summer"),  # exact wins over the glob that also matches
        ("summer-2027", "any_summer"),
        ("gold-vip", "vip"),
        ("Summer-sale", "hello"),  # payloads are opaque: matching is case-sensitive
        ("winter", "hello"),
    ],
)
def test_entry_node(payload: str | None, node: str) -> None:
    assert parse(FLOW).entry_node(payload) == node


def test_engine_starts_at_the_entry_point_and_fills_call_details() -> None:
    flow = parse(FLOW)
    reply = FlowEngine(flow, call={"payload": "summer-sale", "payload_source": "button"}).start()
    assert (reply.node, reply.lines) == ("summer", ["Summer sale, from a button."])
    reply = FlowEngine(flow, call={"payload": "summer-27", "payload_source": "link"}).start()
    assert reply.lines == ["You came for summer-27."]
    assert FlowEngine(flow).start().node == "hello"


def test_call_placeholders_parse_and_render_empty_without_context() -> None:
    found, problems = parse_template("Hi {{call.payload}} via {{ call.payload_source }}")
    assert [(p.scope, p.name) for p in found] == [("call", "payload"), ("call", "payload_source")]
    assert problems == []
    assert render("Thanks for calling about {{call.payload}}.", {"call": {}}) == "Thanks for calling about."


def test_unknown_entry_point_node_is_an_error_with_its_line() -> None:
    with pytest.raises(FlowError) as info:
        parse(FLOW.replace('"*-vip": vip', '"*-vip": vipp'))
    message = str(info.value)
    assert message.startswith("flow.yaml:5:12: "), message
    assert "entry point for payload '*-vip': 'vipp' is not a node" in message
    assert "did you mean 'vip'" in message


def test_unknown_call_detail_is_an_error_with_its_column() -> None:
    _, errors = flow_errors(textwrap.dedent(FLOW).replace("{{call.payload}}", "{{call.campaign}}"), "flow.yaml")
    assert [str(e) for e in errors] == [
        "flow.yaml:15:24: unknown placeholder {{call.campaign}}; the call's details are {{call.payload}} and "
        "{{call.payload_source}}"
    ]


def test_entry_point_node_needs_a_greeting_and_counts_as_reachable() -> None:
    flow = parse(
        """
        start: hello
        entry_points: {promo: promo}
        nodes:
          hello: {say: Hi., end: true}
          promo: {say: Promo!, end: true}
        """
    )
    assert flow.entry_points == {"promo": "promo"}  # only reachable through its entry point, yet no error
    with pytest.raises(FlowError, match="the entry point 'promo' needs a `say`"):
        parse(
            """
            start: hello
            entry_points: {promo: promo}
            nodes:
              hello: {say: Hi., end: true}
              promo: {next: hello}
            """
        )


def test_entry_points_must_be_a_mapping() -> None:
    with pytest.raises(FlowError, match="`entry_points` must be a block of `key: value` lines"):
        parse("start: hello\nentry_points: [summer]\nnodes:\n  hello: {say: Hi., end: true}\n")


def test_schema_describes_entry_points() -> None:
    entry = flow_schema()["properties"]["entry_points"]
    assert entry["type"] == "object"
    assert "summer-*" in entry["description"]


def test_flows_chat_tries_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "campaigns.yaml"
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["flows", "chat", str(path), "--payload", "summer-sale", "--via", "link"]) == 0
    out = capsys.readouterr().out
    assert "bot: Summer sale, from a link." in out and "[node summer" in out
