"""`wacall`'s command line, without models: argument parsing, broken flows, the calls listing, and the
settings a simulation runs with (the deployment's, with only the URLs and secrets replaced)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import build_parser, caller_lines, main
from agent.config import load_settings
from agent.simulator.session import DEFAULT_LINES, SIM_PHONE_NUMBER_ID, Line, simulated_settings
from agent.store.base import CallRecord
from agent.store.sqlite import SqliteStore

BROKEN_FLOW = """\
name: broken
start: hello
nodes:
  hello:
    say: "Hi."
    next: nowhere
  bye:
    say: "Bye."
    next: elsewhere
"""


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WACALL_CONFIG", "WACALL_FLOW", "WACALL_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


# -- parsing ----------------------------------------------------------------------------------


def test_caller_lines_keep_the_order_given() -> None:
    args = build_parser().parse_args(["simulate", "--say", "A", "--audio", "x.wav", "--say", "B", "--audio", "y.wav"])
    assert caller_lines(args) == [Line(text="A"), Line(audio=Path("x.wav")), Line(text="B"), Line(audio=Path("y.wav"))]


def test_no_caller_lines_means_the_default_conversation() -> None:
    args = build_parser().parse_args(["simulate"])
    assert caller_lines(args) == [Line(text=t) for t in DEFAULT_LINES]


@pytest.mark.parametrize("command", [["serve"], ["simulate"], ["calls"]])
def test_config_is_accepted_before_or_after_the_subcommand(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["--config", "a.yaml", *command]).config == "a.yaml"
    assert parser.parse_args([*command, "--config", "b.yaml"]).config == "b.yaml"
    assert parser.parse_args(command).config is None
    # Given in both places, the one nearer the subcommand's own options wins.
    assert parser.parse_args(["--config", "a.yaml", *command, "--config", "b.yaml"]).config == "b.yaml"


def test_simulate_takes_http_answers_options() -> None:
    args = build_parser().parse_args(["simulate", "--http-answers", "answers.yaml", "--live-http"])
    assert (args.http_answers, args.live_http) == ("answers.yaml", True)


# -- broken flows: the same lines as `flows check`, all of them, exit 2 ----------------------------


def _flows_check_lines(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["flows", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    problems = [line for line in lines if line.startswith(f"{path}:")]
    assert len(problems) == 2, lines
    return problems


@pytest.mark.parametrize("command", ["serve", "simulate"])
def test_a_broken_flow_is_refused_with_every_problem_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "broken.yaml"
    flow.write_text(BROKEN_FLOW, encoding="utf-8")
    expected = _flows_check_lines(flow, capsys)

    assert main([command, "--flow", str(flow)]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[: len(expected)] == expected
    assert f"{flow}:9:11: next: 'elsewhere'" in captured.err  # the second problem too, not only the first
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_broken_flow_named_in_the_config_is_refused_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "broken.yaml"
    flow.write_text(BROKEN_FLOW, encoding="utf-8")
    config = tmp_path / "wacall.yaml"
    config.write_text(f"flow: {flow}\n", encoding="utf-8")
    expected = _flows_check_lines(flow, capsys)
    assert main(["simulate", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[: len(expected)] == expected


def test_a_missing_flow_file_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["serve", "--flow", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{missing}") and "cannot read flow file" in err and "Traceback" not in err


def test_a_bad_answers_file_is_refused_with_its_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text("lookup_account: {ok: true}\nno_such_step: {ok: true}\n", encoding="utf-8")
    code = main(["simulate", "--flow", "prompts/payment_followup.yaml", "--http-answers", str(answers)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{answers}:2:1: 'no_such_step' is not an http step of flow payment_followup" in err


# -- wacall calls -----------------------------------------------------------------------------------


def test_calls_marks_simulated_calls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with SqliteStore.in_data_dir(tmp_path) as store:
        store.save_call(
            CallRecord(id="wacid.REAL", direction="USER_INITIATED", from_number="34600111222", created_at=at)
        )
        store.save_call(
            CallRecord(
                id="wacid.SIM",
                direction="USER_INITIATED",
                from_number="15550002222",
                outcome="after_hours",
                created_at=at.replace(minute=5),
                simulated=True,
            )
        )
    config = tmp_path / "wacall.yaml"
    config.write_text(f"data_dir: {tmp_path}\n", encoding="utf-8")
    assert main(["calls", "--config", str(config)]) == 0  # --config after the subcommand, data_dir from it
    rows = capsys.readouterr().out.splitlines()
    sim = next(row for row in rows if "15550002222" in row)
    real = next(row for row in rows if "34600111222" in row)
    assert "in (sim)" in sim and "after_hours" in sim
    assert "(sim)" not in real
    assert any("wacall simulate" in row for row in rows)  # the marker is explained


# -- the settings a simulation runs with ----------------------------------------------------------


def test_simulated_settings_keep_the_deployment_config_and_replace_only_urls_and_secrets(tmp_path: Path) -> None:
    config = tmp_path / "wacall.yaml"
    config.write_text(
        f"""\
data_dir: {tmp_path / "data"}
business_hours: {{timezone: Europe/Madrid, weekly: {{monday: ["09:00-17:00"]}}}}
graph_base_url: https://graph.example.com
media_hosts: [203.0.113.7]
ice_servers: ["stun:127.0.0.1:3478"]  # never contacted: the simulation drops it
max_concurrent_calls: 3
llm_base_url: http://127.0.0.1:9/v1
handover:
  queues: [{{name: support}}]
  agents: [{{id: ana}}]
vad: {{end_silence_ms: 700}}
""",
        encoding="utf-8",
    )
    env = {"WACALL_CONFIG": str(config), "WACALL_LLM_API_KEY": "llm-key", "WHATSAPP_TOKEN": "real-token"}
    base = load_settings(env=env)
    sim = simulated_settings(
        graph_base_url="http://127.0.0.1:4567",
        whatsapp_token="sim-token",
        app_secret="sim-secret",
        verify_token="sim-verify",
        base=base,
    )
    # What the deployment configured is what the simulation runs with.
    assert sim.data_dir == str(tmp_path / "data")
    assert sim.business_hours == base.business_hours and sim.business_hours is not None
    assert sim.max_concurrent_calls == 3 and sim.vad.end_silence_ms == 700
    assert sim.llm_base_url == "http://127.0.0.1:9/v1" and sim.llm_api_key.get_secret_value() == "llm-key"
    assert [q.name for q in sim.handover.queues] == ["support"]
    # Only what points at Meta, the network and the secrets Meta shares differ.
    assert sim.graph_base_url == "http://127.0.0.1:4567"
    assert sim.media_hosts == ["127.0.0.1"] and sim.ice_servers == []
    assert tuple(s.get_secret_value() for s in (sim.whatsapp_token, sim.app_secret, sim.verify_token)) == (
        "sim-token",
        "sim-secret",
        "sim-verify",
    )
    assert sim.phone_number_id == SIM_PHONE_NUMBER_ID
    assert sim.business_number == "15550001111"
