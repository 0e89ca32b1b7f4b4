"""The YAML test-conversation runner: passing, failing at the right line, and bad test files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.dialogue.flow import FlowError
from agent.dialogue.flowtest import flow_file_for, flow_tests_path, format_report, load_suite, run_test_file

FLOW = """\
start: ask_time
nodes:
  ask_time:
    say: What time?
    ask: {slot: time, type: time}
    next: save
  save:
    say: One moment.
    http:
      method: POST
      url: https://x.example.com/save
      json: {time: "{{time}}"}
      on_success: done
      on_error: done
  done:
    say: "Saved {{time}}."
    end: true
"""


def write(tmp_path: Path, tests: str, flow: str = FLOW) -> Path:
    (tmp_path / "f.yaml").write_text(flow, encoding="utf-8")
    path = tmp_path / "f.test.yaml"
    path.write_text(textwrap.dedent(tests).lstrip("\n"), encoding="utf-8")
    return path


def test_paths_follow_the_convention(tmp_path: Path) -> None:
    assert flow_tests_path("prompts/booking.yaml") == Path("prompts/booking.test.yaml")
    assert flow_file_for("prompts/booking.test.yaml") == Path("prompts/booking.yaml")
    assert flow_file_for("prompts/x.test.yaml", "other.yaml") == Path("prompts/other.yaml")


def test_a_passing_conversation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        conversations:
          - name: saves a time
            steps:
              - expect: {say: "What time?", node: ask_time, silent: false}
              - caller: half past three
                expect:
                  slots: {time: 15:30}
                  actions: [{http: {method: POST, json: {time: "15:30"}}}]
              - action_result: {ok: true}
                expect: {say_matches: "^Saved three thirty", end: true}
        """,
    )
    report = run_test_file(path)
    assert report.ok, format_report(report)
    assert "PASS" in format_report(report)


def test_a_failing_expectation_points_at_its_line_and_stops_the_conversation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        conversations:
          - name: wrong expectations
            steps:
              - caller: half past three
                expect:
                  node: save
                  slots: {time: "16:30"}
              - action_result: {ok: true}
                expect: {end: false}
        """,
    )
    report = run_test_file(path)
    assert not report.ok
    (result,) = report.results
    (failure,) = result.failures
    assert (failure.line, failure.column) == (7, 18)
    assert str(failure).startswith(
        f"{path}:7:18: conversation 'wrong expectations', step 1 (caller: \"half past three\")"
    )
    assert "expected slot 'time' = '16:30', got 15:30" in str(failure)
    assert "the bot said: 'One moment.'" in str(failure)
    text = format_report(report)
    assert "FAIL" in text and "caller: half past three" in text and "0 of 1 conversations passed" in text


def test_waiting_for_a_business_system_is_explained(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        conversations:
          - steps:
              - caller: three pm
              - caller: hello?
        """,
    )
    (failure,) = run_test_file(path).results[0].failures
    assert (failure.line, failure.column) == (4, 9)
    assert "waiting for the result of POST https://x.example.com/save" in failure.message
    assert "add an `action_result` step" in failure.message


def test_an_llm_step_outside_an_llm_node_fails(tmp_path: Path) -> None:
    path = write(tmp_path, "conversations:\n  - steps:\n      - llm: {text: hi}\n")
    (failure,) = run_test_file(path).results[0].failures
    assert "not waiting for an LLM" in failure.message


@pytest.mark.parametrize(
    ("tests", "position", "fragment"),
    [
        ("conversations:\n  - steps:\n      - caller: hi\n        expext: {node: a}\n", "4:9", "unknown key 'expext'"),
        ("conversations:\n  - steps:\n      - expect: {nod: a}\n", "3:18", "unknown key 'nod'"),
        ("conversations:\n  - steps:\n      - expect: {}\n      - expect: {}\n", "4:9", "needs `caller`"),
        ("conversations:\n  - steps:\n      - caller: a\n        llm: {}\n", "4:9", "has both `caller` and `llm`"),
        ("today: soon\nconversations:\n  - steps:\n      - caller: a\n", "1:8", "must be a date"),
        ("conversations: []\n", "1:16", "at least one"),
        ("flows: x\nconversations: []\n", "1:1", "unknown key 'flows'"),
        ("conversations:\n  - steps:\n      - caller: a\n        caller: b\n", "4:9", "duplicate key 'caller'"),
        ("conversations:\n  - steps: [\n", "3:1", "expected"),
    ],
)
def test_test_file_mistakes_have_positions(tmp_path: Path, tests: str, position: str, fragment: str) -> None:
    path = write(tmp_path, tests)
    with pytest.raises(FlowError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:{position}: "), str(info.value)
    assert fragment in str(info.value)


def test_expectations_naming_unknown_nodes_slots_or_intents_are_reported_before_running(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        conversations:
          - steps:
              - caller: three pm
                expect:
                  node: saev
                  intent: order
                  slots: {tiem: "15:00"}
        """,
    )
    report = run_test_file(path)
    assert not report.ok and report.results == []
    assert [(e.line, e.column) for e in report.errors] == [(5, 17), (6, 19), (7, 19)]
    assert "no node 'saev'" in report.errors[0].reason
    assert "no intent 'order'" in report.errors[1].reason
    assert "never sets a slot 'tiem'" in report.errors[2].reason


def test_a_broken_flow_is_reported_with_its_own_position(tmp_path: Path) -> None:
    path = write(
        tmp_path, "conversations:\n  - steps:\n      - caller: a\n", flow="start: a\nnodes:\n  a:\n    say: hi\n"
    )
    report = run_test_file(path)
    assert not report.ok
    assert str(report.errors[0]).startswith(f"{tmp_path / 'f.yaml'}:3:3: ")


def test_missing_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "x.test.yaml"
    path.write_text("conversations:\n  - steps:\n      - caller: a\n", encoding="utf-8")
    report = run_test_file(path)
    assert "cannot read flow file" in str(report.errors[0])
