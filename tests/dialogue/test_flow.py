"""Flow loading and validation: every author mistake must point at file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.dialogue.flow import (
    DEFAULT_FALLBACK,
    DEFAULT_MAX_RETRIES,
    Flow,
    FlowError,
    Intent,
    Node,
    check_flow,
    load_flow,
    parse_flow,
)

DEMO = Path(__file__).resolve().parents[2] / "prompts" / "demo.yaml"


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="flow.yaml")


def error_of(text: str) -> FlowError:
    with pytest.raises(FlowError) as info:
        parse(text)
    return info.value


def assert_error(text: str, position: str, *fragments: str) -> None:
    error = error_of(text)
    message = str(error)
    assert message.startswith(f"flow.yaml:{position}: "), message
    for fragment in fragments:
        assert fragment in message, message


# -- the shipped demo --------------------------------------------------------------------


def test_demo_flow_loads() -> None:
    flow = load_flow(DEMO)
    assert flow.name == "demo"
    assert flow.start == "welcome"
    assert flow.source == str(DEMO)
    assert flow.nodes["welcome"].say, "start node must greet"
    assert flow.nodes["goodbye"].end
    assert flow.no_match == "no_match"
    assert {i.name for i in flow.global_intents} >= {"goodbye", "agent"}
    assert check_flow(flow) == []


def test_demo_lines_are_plainly_speakable() -> None:
    flow = load_flow(DEMO)
    lines = [line for node in flow.nodes.values() for line in node.say] + flow.fallback
    for line in lines:
        bad = set(line) & set("&%$#@*/\\<>[]_=+~^|")
        assert not bad, f"TTS-unfriendly characters {bad} in {line!r}"
        assert len(line) < 140, line


# -- happy-path parsing ------------------------------------------------------------------


def test_minimal_flow_defaults() -> None:
    flow = parse("""
        start: hello
        nodes:
          hello:
            say: Hi there.
            end: true
    """)
    assert flow.name == "flow"  # derived from the source "flow.yaml"
    assert flow.fallback == [DEFAULT_FALLBACK]
    assert flow.max_retries == DEFAULT_MAX_RETRIES
    assert flow.global_intents == []
    assert flow.nodes["hello"] == Node(id="hello", say=["Hi there."], end=True)
    assert flow.no_match is None


def test_say_and_fallback_accept_lists_and_strings() -> None:
    flow = parse("""
        name: lists
        start: a
        fallback: Pardon?
        max_retries: 0
        nodes:
          a:
            say:
              - First line.
              - "Second line, {{ caller.name }}."
            interruptible: false
            next: b
          b:
            say: Bye.
            end: true
    """)
    assert flow.fallback == ["Pardon?"]
    assert flow.max_retries == 0
    assert flow.nodes["a"].say == ["First line.", "Second line, {{ caller.name }}."]
    assert flow.nodes["a"].interruptible is False
    assert flow.nodes["a"].next == "b"


def test_yes_no_and_numbers_stay_literal_in_names_and_examples() -> None:
    flow = parse("""
        start: ask
        nodes:
          ask:
            say: Shall we?
            intents:
              - name: yes
                examples: [yes, ok, 1]
                keywords: sure
                goto: no
          no:
            say: Fine.
            end: true
    """)
    intent = flow.nodes["ask"].intents[0]
    assert intent == Intent(name="yes", examples=["yes", "ok", "1"], keywords=["sure"], goto="no")
    assert "no" in flow.nodes


def test_intent_with_only_keywords_is_fine() -> None:
    flow = parse("""
        start: a
        nodes:
          a:
            say: Hi.
            intents:
              - name: bill
                keywords: [bill]
                goto: a
              - name: bye
                keywords: [bye]
                goto: bye
          bye:
            say: Bye.
            end: true
    """)
    assert flow.nodes["a"].intents[0].examples == []


# -- validation errors with positions ----------------------------------------------------


def test_unknown_start_points_at_value() -> None:
    assert_error(
        """
        name: t
        start: welcom
        nodes:
          welcome:
            say: hi
            end: true
    """,
        "2:8",
        "start node 'welcom'",
        "did you mean 'welcome'",
    )


def test_unknown_goto_points_at_goto_value() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              - name: x
                examples: [hello]
                goto: nowhere
          b:
            say: bye
            end: true
    """,
        "8:15",
        "goto of intent 'x'",
        "'nowhere' is not a node",
        "choose one of: a, b",
    )


def test_unknown_global_goto_points_at_goto_value() -> None:
    assert_error(
        """
        start: a
        global_intents:
          - name: bye
            examples: [bye]
            goto: goodby
        nodes:
          a:
            say: hi
            next: goodbye
          goodbye:
            say: bye
            end: true
    """,
        "5:11",
        "global intent 'bye'",
        "did you mean 'goodbye'",
    )


def test_unknown_next_points_at_value() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            next: c
          b:
            say: bye
            end: true
    """,
        "5:11",
        "next: 'c' is not a node",
    )


def test_first_problem_in_reading_order_is_reported() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            next: missing
          b:
            say: dead end
    """,
        "5:11",
        "'missing'",
    )


def test_dead_end_node_points_at_node_id() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            next: b
          b:
            say: and then nothing
    """,
        "6:3",
        "node 'b' is a dead end",
    )


def test_empty_node_is_a_dead_end() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            next: b
          b:
    """,
        "6:3",
        "node 'b' is a dead end",
    )


def test_start_node_without_say_points_at_node_id() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            next: b
          b:
            say: bye
            end: true
    """,
        "3:3",
        "start node 'a' needs a `say`",
    )


def test_say_must_be_text() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: 5
            end: true
    """,
        "4:10",
        "`say` of node 'a' must be text",
        "a number (5)",
        "quotes",
    )


def test_say_list_item_must_be_text() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say:
              - fine
              - [nested]
            end: true
    """,
        "6:9",
        "item 2 of `say` of node 'a' must be text",
    )


def test_unknown_node_key_names_it_with_suggestion() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            sya: hi
            end: true
    """,
        "4:5",
        "unknown key 'sya'",
        "did you mean 'say'",
    )


def test_unknown_top_level_key_lists_allowed_keys() -> None:
    assert_error(
        """
        start: a
        colour: blue
        nodes:
          a:
            say: hi
            end: true
    """,
        "2:1",
        "unknown key 'colour' in the flow",
        "allowed: name, start",
    )


def test_unknown_intent_key() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              - name: x
                exampels: [hi]
                goto: a
    """,
        "7:9",
        "unknown key 'exampels'",
        "did you mean 'examples'",
    )


def test_duplicate_node_id_points_at_second() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            end: true
          a:
            say: again
            end: true
    """,
        "6:3",
        "duplicate key 'a'",
        "line 3",
    )


def test_duplicate_intent_name() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              - name: x
                examples: [one]
                goto: a
              - name: x
                examples: [two]
                goto: a
    """,
        "9:15",
        "duplicate intent 'x'",
        "line 6",
    )


def test_intent_without_examples_or_keywords() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              - name: x
                goto: a
    """,
        "6:9",
        "intent 'x' needs `examples`",
    )


def test_intent_without_goto() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              - name: x
                examples: [hi]
    """,
        "6:9",
        "intent 'x' needs a `goto`",
    )


def test_intents_must_be_a_list() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            intents:
              name: x
    """,
        "6:7",
        "`intents` of node 'a' must be a list",
    )


def test_end_must_be_boolean() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            end: maybe
    """,
        "5:10",
        "`end` of node 'a' must be true or false",
        "'maybe'",
    )


def test_max_retries_must_be_non_negative_integer() -> None:
    assert_error(
        """
        start: a
        max_retries: -1
        nodes:
          a:
            say: hi
            end: true
    """,
        "2:14",
        "`max_retries` must be a whole number",
    )
    assert_error(
        """
        start: a
        max_retries: two
        nodes:
          a:
            say: hi
            end: true
    """,
        "2:14",
        "`max_retries` must be a whole number",
    )


def test_missing_required_keys() -> None:
    assert_error(
        """
        nodes:
          a:
            say: hi
            end: true
    """,
        "1:1",
        "the flow needs a `start`",
    )
    assert_error(
        """
        start: a
        nodes:
    """,
        "2:1",
        "the flow needs a `nodes`",
    )


def test_nodes_must_be_a_mapping() -> None:
    assert_error(
        """
        start: a
        nodes:
          - a
    """,
        "3:3",
        "`nodes` must be a block of `key: value` lines",
        "not a list",
    )


def test_end_node_with_next_or_intents_is_contradictory() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            end: true
            next: a
    """,
        "6:5",
        "ends the call",
        "`next` would never be used",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            end: true
            intents:
              - name: x
                examples: [hi]
                goto: a
    """,
        "6:5",
        "never gets to answer",
    )


def test_next_with_intents_is_contradictory() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: hi
            next: b
            intents:
              - name: x
                examples: [hi]
                goto: b
          b:
            say: bye
            end: true
    """,
        "6:5",
        "moves straight on to 'b'",
    )


def test_next_loop_is_rejected() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: one
            next: b
          b:
            say: two
            next: a
    """,
        "8:11",
        "forever",
        "a -> b -> a",
    )


def test_unknown_placeholder_points_inside_the_line() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hello {{caler.name}}, welcome.
            end: true
    """,
        "4:16",
        "unknown placeholder {{caler.name}}",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: "Hi {{ slot.x }}"
            end: true
    """,
        "4:14",
        "unknown placeholder",
    )


def test_single_brace_placeholder_is_caught() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hello {caller.name}.
            end: true
    """,
        "4:16",
        "stray '{'",
        "double braces",
    )


def test_yaml_syntax_error_has_position() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: "unterminated
            end: true
    """,
        "4:10",
        'line 4: the text starting with " at column 10 is never closed',
        'add the closing "',
    )


def test_tab_indentation_gets_a_hint() -> None:
    error = error_of("start: a\nnodes:\n\ta:\n")
    assert str(error).startswith("flow.yaml:3:1: ")
    assert "spaces, not tabs" in str(error)


def test_empty_and_non_mapping_documents() -> None:
    assert_error("", "1:1", "empty")
    assert_error("# only a comment\n", "1:1", "empty")
    assert_error("- a\n- b\n", "1:1", "the flow must be a block of `key: value` lines")


def test_error_exposes_position_attributes() -> None:
    error = error_of("""
        start: nope
        nodes:
          a:
            say: hi
            end: true
    """)
    assert (error.source, error.line, error.column) == ("flow.yaml", 1, 8)
    assert error.reason.startswith("start node 'nope'")
    assert isinstance(error, ValueError)


def test_load_flow_reports_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("start: a\nnodes:\n  a:\n    say: 5\n    end: true\n", encoding="utf-8")
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert str(info.value).startswith(f"{path}:4:10: ")


def test_load_flow_missing_file_is_a_flow_error(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="cannot read flow file"):
        load_flow(tmp_path / "missing.yaml")


def test_load_flow_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "support.yaml"
    path.write_text("start: a\nnodes:\n  a:\n    say: hi\n    end: true\n", encoding="utf-8")
    assert load_flow(path).name == "support"


# -- flows built in code -----------------------------------------------------------------


def test_check_flow_on_hand_built_flow() -> None:
    flow = Flow(
        name="code",
        start="a",
        nodes={"a": Node(id="a", say=["hi"], intents=[Intent(name="x", examples=["x"], goto="zz")])},
    )
    issues = check_flow(flow)
    assert [issue.path for issue in issues] == [("nodes", "a", "intents", 0, "goto")]


def test_models_reject_unknown_fields() -> None:
    with pytest.raises(ValueError):
        Node(id="a", sya=["typo"])  # type: ignore[call-arg]
