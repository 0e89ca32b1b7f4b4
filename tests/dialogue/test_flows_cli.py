"""`wacall flows check|chat|test|schema` through agent.flows_cli, as the lead wires it."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from agent.flows_cli import add_flows_parser, main

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
BROKEN = "start: a\nnodes:\n  a:\n    say: Hello {{nme}}.\n    next: b\n  b:\n    say: and then\n"


def run(*argv: str) -> int:
    """The way `wacall` calls it: a `command` sub-parser set, then `args.func(args)`."""
    parser = argparse.ArgumentParser(prog="wacall")
    sub = parser.add_subparsers(dest="command")
    add_flows_parser(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_check_passes_the_shipped_flows_and_their_tests(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in PROMPTS.glob("*.yaml"))
    assert run("flows", "check", *files) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(files)


def test_check_prints_every_problem_with_its_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    good = tmp_path / "good.yaml"
    good.write_text("start: a\nnodes:\n  a:\n    say: Hi.\n    end: true\n", encoding="utf-8")
    assert run("flows", "check", str(good), str(bad), str(tmp_path / "missing.yaml")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: ok"
    assert lines[1].startswith(f"{bad}:4:16: slot 'nme' is used here but never set")
    assert lines[2].startswith(f"{bad}:6:3: node 'b' is a dead end")
    assert lines[3].startswith(f"{tmp_path / 'missing.yaml'}: cannot read flow file")
    assert lines[4] == "2 of 3 file(s) have problems"


def test_check_a_test_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f.yaml").write_text("start: a\nnodes:\n  a:\n    say: Hi.\n    end: true\n", encoding="utf-8")
    tests = tmp_path / "f.test.yaml"
    tests.write_text("conversations:\n  - steps:\n      - expect: {node: b}\n", encoding="utf-8")
    assert run("flows", "check", str(tests)) == 1
    assert capsys.readouterr().out.startswith(f"{tests}:3:24: there is no node 'b'")


def test_test_runs_the_shipped_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("flows", "test", str(PROMPTS / "demo.yaml")) == 0
    out = capsys.readouterr().out
    assert "demo.test.yaml: 7 of 7 conversations passed" in out


def test_test_fails_on_a_failing_conversation_or_a_missing_test_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.yaml").write_text("start: a\nnodes:\n  a:\n    say: Hi.\n    end: true\n", encoding="utf-8")
    (tmp_path / "f.test.yaml").write_text(
        "conversations:\n  - name: greets\n    steps:\n      - expect: {say: Hello.}\n", encoding="utf-8"
    )
    assert run("flows", "test", str(tmp_path / "f.yaml"), "-v") == 1
    out = capsys.readouterr().out
    where = f"{tmp_path / 'f.test.yaml'}:4:23: conversation 'greets', step 1 (the greeting)"
    assert f"{where}: expected the bot to say 'Hello.'" in out
    (tmp_path / "g.yaml").write_text("start: a\nnodes:\n  a:\n    say: Hi.\n    end: true\n", encoding="utf-8")
    assert run("flows", "test", str(tmp_path / "g.yaml")) == 1
    assert "no test file" in capsys.readouterr().out


def test_chat_with_piped_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = "\n".join(
        [
            "where is my parcel",
            "four two seven one nine",
            "yes",
            "hello?",
            '/ok {"status": "shipped", "delivery_date": "2024-12-05"}',
            "/slots",
            "/repeat",
            "no thanks",
            "this line is never read",
        ]
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script + "\n"))
    code = run("flows", "chat", str(PROMPTS / "support_triage.yaml"), "--name", "Maria", "--today", "2024-12-02")
    assert code == 0
    out = capsys.readouterr().out
    assert "bot: Hello Maria, thanks for calling Sunrise Electronics support." in out
    assert "you: where is my parcel" in out
    assert "[matched order | scores: order 0." in out
    assert "[understood order_number = 42719" in out
    assert "[http GET https://shop.example.com/api/orders/42719 -> answer with /ok {json} or /fail]" in out
    assert "[the flow is waiting for a business system" in out
    assert "bot: Your order is on its way and should arrive on Thursday the fifth of December." in out
    assert "[slots: order_number=42719, order_status=shipped, delivery_date=2024-12-05]" in out
    assert out.count("should arrive on Thursday") == 2  # /repeat
    assert "[the bot hangs up]" in out and "[call ended]" in out
    assert "never read" not in out


def test_chat_llm_commands_and_handover(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = "\n".join(
        [
            "I have another question",
            "/bot not at an llm node? no, we are",
            "do you sell fridges",
            '/tool handover {"queue": "general", "reason": "Fridges."}',
        ]
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script + "\n"))
    assert run("flows", "chat", str(PROMPTS / "support_triage.yaml")) == 0
    out = capsys.readouterr().out
    assert "[LLM turn at 'other_question' (tools: end_call, handover, goto)" in out
    assert "[handover to queue 'general' reason: Fridges.]" in out


def test_chat_offline_and_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("I have another question\n"))
    assert run("flows", "chat", str(PROMPTS / "support_triage.yaml"), "--offline") == 0
    assert "[handover to queue 'general'" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("/ok\n/tool\n/nonsense\n/help\n/quit\nbilling\n"))
    assert run("flows", "chat", str(PROMPTS / "demo.yaml"), "--caller", "name=Bo") == 0
    out = capsys.readouterr().out
    assert "Hello Bo" in out and "no business-system request is waiting" in out
    assert "not at an LLM node" in out and "unknown command /nonsense" in out and "/ok {json}" in out
    assert "billing" not in out.split("/quit")[-1]
    assert run("flows", "chat", str(PROMPTS / "demo.yaml"), "--caller", "oops") == 2


def test_chat_refuses_a_broken_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    assert run("flows", "chat", str(bad)) == 1
    assert f"{bad}:4:16:" in capsys.readouterr().out


def test_schema_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("flows", "schema") == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "wacall call flow" and "nodes" in schema["properties"]
    assert main(["flows", "schema", "--tests", "-o", str(tmp_path / "t.json")]) == 0
    assert "conversations" in json.loads((tmp_path / "t.json").read_text())["properties"]
