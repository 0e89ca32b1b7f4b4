"""Canned business-system answers for `wacall simulate`: from a flow's own tests, or from an answers file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.actions import run_http
from agent.dialogue.effects import HttpRequest
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import load_flow
from agent.dialogue.tools import dig
from agent.simulator.http_answers import (
    CannedAnswer,
    HttpAnswers,
    HttpAnswersError,
    answers_from_file,
    answers_from_flow_tests,
    http_nodes,
)

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
SHIPPED = sorted(p for p in PROMPTS.glob("*.yaml") if not p.name.endswith(".test.yaml"))


@pytest.mark.parametrize("flow_path", SHIPPED, ids=lambda p: p.stem)
def test_every_http_step_of_a_shipped_flow_has_a_successful_canned_answer(flow_path: Path) -> None:
    """So every shipped flow can be simulated offline and walks its happy path."""
    flow = load_flow(flow_path)
    answers = answers_from_flow_tests(flow_path, flow)
    steps = http_nodes(flow)
    assert set(answers) == set(steps)
    for node, answer in answers.items():
        assert answer.ok, (node, answer)
        assert all(dig(answer.data, path)[0] for path in steps[node].store.values()), (node, answer)
        assert answer.source.startswith(str(flow_path.with_name(flow_path.stem + ".test.yaml")) + ":")


def test_the_success_is_preferred_over_an_earlier_error_for_the_same_step(tmp_path: Path) -> None:
    flow_path = tmp_path / "lookup.yaml"
    flow_path.write_text(
        """\
name: lookup
start: look
nodes:
  look:
    say: "One moment."
    http: {method: GET, url: "https://crm.example.com/c", store: {who: name}, on_success: hi, on_error: sorry}
  hi: {say: "Hello {{who}}.", end: true}
  sorry: {say: "Sorry.", end: true}
""",
        encoding="utf-8",
    )
    (tmp_path / "lookup.test.yaml").write_text(
        """\
conversations:
  - name: fails
    steps:
      - action_result: {ok: false}
        expect: {end: true}
  - name: lacks the field
    steps:
      - action_result: {ok: true, data: {other: 1}}
        expect: {end: true}
  - name: works
    steps:
      - action_result: {ok: true, data: {name: Ana}}
        expect: {say: "Hello Ana.", end: true}
""",
        encoding="utf-8",
    )
    answers = answers_from_flow_tests(flow_path, load_flow(flow_path))
    assert answers["look"] == CannedAnswer(ok=True, data={"name": "Ana"}, source=f"{tmp_path}/lookup.test.yaml:12")


def test_a_flow_without_tests_has_no_canned_answers(tmp_path: Path) -> None:
    flow_path = tmp_path / "copy.yaml"
    flow_path.write_text((PROMPTS / "payment_followup.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert answers_from_flow_tests(flow_path, load_flow(flow_path)) == {}


def test_answers_file_by_step_name_and_by_url(tmp_path: Path) -> None:
    flow = load_flow(PROMPTS / "payment_followup.yaml")
    answers = tmp_path / "answers.yaml"
    answers.write_text(
        """\
lookup_account: {ok: true, data: {name: Ana Example, balance: 80, due_date: 2026-03-01, birth_year: 1990}}
/api/payment-links: {ok: false}
""",
        encoding="utf-8",
    )
    by_node, by_url = answers_from_file(answers, flow)
    assert by_node["lookup_account"].data["due_date"] == "2026-03-01"  # as a JSON API would send it
    assert by_node["lookup_account"].source == f"{answers}:1"
    assert by_url == {"/api/payment-links": CannedAnswer(ok=False, data=None, source=f"{answers}:2")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lookup_acount: {ok: true}\n", ":1:1: 'lookup_acount' is not an http step of flow payment_followup"),
        ("lookup_account: {status: 200}\n", ":1:1: give a result as {ok: true, data: {...}}"),
        ("lookup_account: {ok: maybe}\n", ":1:1: `ok` must be true or false"),
        ("- lookup_account\n", ":1:1: the answers file must map http step names or URLs to results"),
        ("lookup_account: {ok: true\n", ":2:1: "),
    ],
)
def test_answers_file_mistakes_name_the_place(tmp_path: Path, text: str, message: str) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(text, encoding="utf-8")
    with pytest.raises(HttpAnswersError) as raised:
        answers_from_file(answers, load_flow(PROMPTS / "payment_followup.yaml"))
    assert str(raised.value).startswith(str(answers) + message), str(raised.value)


def _request(node: str, url: str) -> HttpRequest:
    return HttpRequest(id=f"{node}#1", method="POST", url=url)


async def test_step_name_wins_then_the_longest_url_part_then_the_real_system() -> None:
    asked: list[str] = []

    def business_system(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"real": True})

    transport = httpx.MockTransport(business_system)
    told: list[str] = []
    answers = HttpAnswers(
        by_node={"lookup": CannedAnswer(True, {"by": "node"}, "a.yaml:1")},
        by_url={
            "/api/": CannedAnswer(True, {"by": "short"}, "a.yaml:2"),
            "/api/orders/": CannedAnswer(False, None, "a.yaml:3"),
        },
        fallback=lambda request: run_http(request, transport=transport),
        on_request=told.append,
    )
    assert await answers(_request("lookup", "https://x.example.com/api/orders/1")) == (True, {"by": "node"})
    assert await answers(_request("other", "https://x.example.com/api/orders/1")) == (False, None)
    assert await answers(_request("other", "https://x.example.com/api/people")) == (True, {"by": "short"})
    assert asked == []
    assert await answers(_request("other", "https://x.example.com/elsewhere")) == (True, {"real": True})
    assert asked == ["https://x.example.com/elsewhere"]
    assert told[0] == "http POST https://x.example.com/api/orders/1: canned answer (ok, from a.yaml:1)"
    assert told[1].endswith("canned answer (error, from a.yaml:3)")
    assert "no canned answer, asking the real system" in told[3] and told[4].endswith(": ok")


async def test_the_payment_flow_gets_past_its_account_lookup_with_no_network() -> None:
    """The engine's request, answered from the flow's test file, leads to the happy path's next question."""
    flow_path = PROMPTS / "payment_followup.yaml"
    flow = load_flow(flow_path)
    answers = HttpAnswers(by_node=answers_from_flow_tests(flow_path, flow))
    engine = FlowEngine(flow, caller={"name": "", "number": "15550002222"})
    engine.start()
    pending = engine.pending_action
    assert pending is not None and pending.url.endswith("/by-phone/15550002222")
    ok, data = await answers(pending)
    reply = engine.action_result(pending.id, ok, data if isinstance(data, dict) else None)
    assert reply.lines == ["Am I speaking with John Smith?"]
