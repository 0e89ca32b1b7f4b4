"""`wacall simulate` as a user runs it: the deployment's config, progress while the call plays, canned
business-system answers, and the call recorded where `wacall calls` finds it.

Each test is one real simulated call through the whole stack (models loaded by the command itself, wacall's
server and Meta's on 127.0.0.1, real WebRTC), so there are only two: one the config turns away at once,
and one conversation with a flow that asks a business system before its first question.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main as cli_main

pytestmark = pytest.mark.e2e

PAYMENT_FLOW = Path(__file__).resolve().parents[2] / "prompts" / "payment_followup.yaml"


@pytest.fixture(autouse=True)
def _only_this_tests_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WACALL_CONFIG", "WACALL_FLOW", "WACALL_DATA_DIR", "WACALL_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _calls(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert cli_main(["calls", "--data-dir", str(data_dir)]) == 0
    return capsys.readouterr().out.splitlines()


def test_simulate_uses_the_config_file_and_records_the_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Business hours from `--config` (closed today) turn the simulated call away, as they would a real one."""
    today = datetime.now(UTC).date()
    data_dir = tmp_path / "data"
    config = tmp_path / "wacall.yaml"
    config.write_text(
        f"""\
data_dir: {data_dir}
business_hours:
  timezone: UTC
  weekly: {{monday: ["09:00-17:00"], friday: ["09:00-17:00"]}}
  holidays: ["{today}", "{today + timedelta(days=1)}"]   # two days: a test started at 23:59 still sees one
""",
        encoding="utf-8",
    )

    assert cli_main(["simulate", "--config", str(config)]) == 0  # --config after the subcommand

    out, err = capsys.readouterr()
    assert "wacall did not answer the call (after_hours)" in out and "holiday" in out, out
    progress = err.splitlines()
    for expected in ("loading models…", "models loaded", "ringing", "wacall did not answer: after_hours"):
        assert any(line.startswith(expected) for line in progress), (expected, progress)
    assert f"calls recorded in {data_dir}" in err

    [row] = [line for line in _calls(data_dir, capsys) if "15550002222" in line]
    assert "in (sim)" in row and "after_hours" in row, row


def test_a_flow_with_an_http_step_simulates_offline_with_the_canned_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payment flow looks the caller's account up before its first question; the answer comes from the
    flow's test file, so the caller is asked for the account holder by name. The config, from WACALL_CONFIG,
    has handover queues: the simulation offers their console."""
    data_dir = tmp_path / "data"
    config = tmp_path / "wacall.yaml"
    config.write_text(
        f"""\
data_dir: {data_dir}
handover:
  queues: [{{name: collections}}, {{name: billing_disputes}}]
  agents: [{{id: ana, skills: [payments, billing, disputes]}}]
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("WACALL_CONFIG", str(config))

    code = cli_main(["simulate", "--flow", str(PAYMENT_FLOW), "--say", "No, this is his wife."])

    out, err = capsys.readouterr()
    assert code == 0, err
    progress = err.splitlines()
    lookup = [line for line in progress if line.startswith("http GET https://billing.example.com/")]
    assert lookup and "canned answer (ok, from " in lookup[0] and "payment_followup.test.yaml:" in lookup[0], progress
    assert any(line.startswith("agent console for this call: http://127.0.0.1:") for line in progress), progress
    said = [line for line in progress if line.startswith("caller: ")]
    heard = [line for line in progress if line.startswith("bot: ")]
    assert said == ["caller: No, this is his wife."], progress
    assert len(heard) == 2 and "john smith" in heard[0].lower(), heard  # the name is the canned answer's
    assert any(line.startswith("call ended: bot_ended") for line in progress), progress
    # The bot heard the caller and took the wrong-person branch, which needs the looked-up name too.
    assert "We will try to reach John Smith another time" in out, out

    [row] = [line for line in _calls(data_dir, capsys) if "15550002222" in line]
    assert "in (sim)" in row and "answered" in row, row
