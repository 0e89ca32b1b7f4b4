"""The `handover:` config section. Named test_handover_config.py: tests/test_config.py already owns the basename."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from agent.handover.config import HandoverConfigError, HandoverSettings, load_handover, token_env_name
from agent.handover.queues import AgentConfig, Offer, QueueConfig, WaitingCall

EXAMPLE = """
skills: [billing, spanish]
queues:
  - name: support
    priority: 1
    fallback_node: offer_callback
  - name: billing-es
    skills: [billing, spanish]
    priority: 5
    max_wait_s: 120
    announce_every_s: 20
    offer_timeout_s: 15
    position_message: "Usted es el número {position}."
agents:
  - id: ana
    name: Ana
    skills: [billing, spanish]
  - id: bo-2
    queues: [support]
"""


def config(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE)
    data.update(changes)
    return data


def test_example_loads_into_routing_configs() -> None:
    settings = load_handover(config())
    assert settings.enabled
    queues = {q.name: q.to_queue() for q in settings.queues}
    assert queues["support"] == QueueConfig(name="support", priority=1, fallback_node="offer_callback")
    assert queues["billing-es"].offer_timeout_s == 15 and queues["billing-es"].skills == ("billing", "spanish")
    agents = [a.to_agent() for a in settings.agents]
    assert agents == [
        AgentConfig(id="ana", name="Ana", skills=frozenset({"billing", "spanish"}), queues="all"),
        AgentConfig(id="bo-2", name="bo-2", skills=frozenset(), queues=frozenset({"support"})),
    ]


def test_desk_is_built_from_the_config() -> None:
    desk = load_handover(config()).desk()
    desk.agent_available("ana", now=0)
    events = desk.enqueue(WaitingCall(call_id="c1", queue="billing-es"), now=1)
    assert [e for e in events if isinstance(e, Offer)] == [Offer("ana", "c1", 16)]


def test_empty_section_means_no_handover() -> None:
    assert not load_handover(None).enabled
    assert load_handover({}) == HandoverSettings()


def test_tokens_come_from_the_environment_only() -> None:
    settings = load_handover(config())
    assert [a.token_variable for a in settings.agents] == ["WACALL_AGENT_TOKEN_ANA", "WACALL_AGENT_TOKEN_BO_2"]
    env = {"WACALL_AGENT_TOKEN_ANA": "s3cret", "WACALL_AGENT_TOKEN_BO_2": ""}
    assert settings.agents[0].token(env) == "s3cret"
    assert settings.missing_tokens(env) == ["WACALL_AGENT_TOKEN_BO_2"]
    assert token_env_name("x-y_z") == "WACALL_AGENT_TOKEN_X_Y_Z"


def test_token_variable_can_be_named() -> None:
    data = config()
    data["agents"][0]["token_env"] = "ANA_CONSOLE_TOKEN"
    settings = load_handover(data)
    assert settings.agents[0].token({"ANA_CONSOLE_TOKEN": "t"}) == "t"


def test_a_secret_in_the_file_is_refused_with_the_variable_to_use() -> None:
    data = config()
    data["agents"][1]["token"] = "hunter2"
    with pytest.raises(HandoverConfigError, match=r"handover\.agents\.1: .*WACALL_AGENT_TOKEN_BO_2") as exc:
        load_handover(data)
    assert "hunter2" not in str(exc.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["queues"].append({"name": "support"}), re.escape("duplicate queue name(s): support")),
        (lambda d: d["agents"].append({"id": "ana"}), re.escape("duplicate agent id(s): ana")),
        (
            lambda d: d["agents"].append({"id": "bo_2"}),
            re.escape("duplicate agent token variable(s): WACALL_AGENT_TOKEN_BO_2"),
        ),
        (lambda d: d["agents"][1].update(queues=["sales"]), re.escape("agent 'bo-2' serves unknown queue(s) sales")),
        (
            lambda d: d["agents"][0].update(skills=["biling"]),
            re.escape("agent 'ana' uses skill(s) not in `skills`: biling"),
        ),
        (
            lambda d: d["queues"][0].update(skills=["french"]),
            re.escape("queue 'support' uses skill(s) not in `skills`: french"),
        ),
        (lambda d: d["queues"][0].update(offer_timeout_s=0), r"queues\.0\.offer_timeout_s: .*greater than 0"),
        (lambda d: d["queues"][0].update(max_wait_s=-1), r"queues\.0\.max_wait_s"),
        (lambda d: d["queues"][0].update(announce_every_s=1), r"queues\.0\.announce_every_s"),
        (
            lambda d: d["queues"][0].update(position_message="Number {n}"),
            re.escape("only use the {position} placeholder"),
        ),
        (lambda d: d["queues"][0].update(name="Sales Team"), r"queues\.0\.name"),
        (lambda d: d["queues"][0].update(colour="red"), r"queues\.0\.colour: Extra inputs"),
        (lambda d: d["agents"].clear(), "no agent serves queue 'support' at all"),
    ],
)
def test_mistakes_are_refused_with_clear_errors(mutate: Any, message: str) -> None:
    data = config()
    mutate(data)
    with pytest.raises(HandoverConfigError, match=message):
        load_handover(data)


def test_without_a_vocabulary_a_skill_no_agent_has_is_refused() -> None:
    data = config()
    del data["skills"]
    data["queues"][1]["skills"] = ["billing", "spanish", "french"]
    with pytest.raises(HandoverConfigError, match="no agent serves queue 'billing-es' with skill"):
        load_handover(data)


def test_flow_references_are_checked_against_the_queues() -> None:
    settings = load_handover(config())
    assert settings.queue_problems({"support": [], "billing-es": ["spanish"]}) == []
    # bo-2 serves support but lacks billing; ana has it, so only the unknown queue is a problem.
    assert settings.queue_problems({"sales": [], "support": ["billing"]}) == [
        "flow hands over to unknown queue 'sales'"
    ]
    assert settings.queue_problems({"billing-es": ["french"]}) == [
        "no agent serving queue 'billing-es' has all of billing, french, spanish"
    ]
