"""``wacall flows check|chat|test|schema``: tools for prompt authors, no phone needed.

``check`` validates flows (and their test files) and prints ``file:line:column: message``
for every problem, so editors and CI logs link straight to the mistake. ``chat`` is a text
conversation with a flow in the terminal, showing the node, slots and intent scores each
turn; it reads standard input line by line, so it also works with piped input. ``test``
runs the scripted conversations in ``x.test.yaml``. ``schema`` prints the JSON Schema for
editor autocompletion.

Registered on the main parser by :func:`add_flows_parser`; every command returns an exit
code (0 ok, 1 problems found, 2 bad usage), following ``agent.cli``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from agent.dialogue.effects import Handover, HttpRequest, Reply, RequestCallPermission, SendCallButton, ToolCall
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow, FlowError, flow_errors, load_flow, read_flow_text
from agent.dialogue.flowtest import (
    check_suite,
    flow_tests_path,
    format_report,
    is_test_file,
    load_suite,
    run_test_file,
)
from agent.dialogue.model import KEYPAD_KEYS
from agent.dialogue.nlu import rank_intents
from agent.dialogue.schema import flow_schema, flow_test_schema

__all__ = ["add_flows_parser", "chat", "check_paths", "flow_problems", "main", "run_flow_tests"]

CHAT_HELP = """\
Type what the caller says. Commands:
  /ok {json}          answer the pending business-system request with this data
  /fail               make the pending request fail (timeout or error)
  /bot words          the LLM says these words (at an LLM node)
  /tool name {json}   the LLM calls a tool, e.g. /tool goto {"node": "billing"}
  /keys 123#          the caller presses these keys, as one entry ("/keys 1" at a menu; /key works too)
  /repeat             the caller asks to hear the last thing again
  /slots              show every slot
  /quit               end the chat"""


# -- check ----------------------------------------------------------------------------------


def _check_one(path: Path) -> list[str]:
    """Problems in one flow or test file, as ``file:line:col: message`` lines."""
    if is_test_file(path):
        try:
            suite = load_suite(path)
            flow = load_flow(suite.flow_path)
        except FlowError as exc:
            return [str(exc)]
        return [str(error) for error in check_suite(suite, flow)]
    try:
        text = read_flow_text(path)
    except FlowError as exc:
        return [str(exc)]
    _flow, errors = flow_errors(text, source=str(path))
    return [str(error) for error in errors]


def flow_problems(path: str | Path) -> list[str]:
    """Every problem in one flow (or test) file as ``file:line:col: message`` lines; empty when it is fine.

    ``serve`` and ``simulate`` refuse a broken flow with these same lines, so every command reports a
    mistake the same way, and all of them at once.
    """
    return _check_one(Path(path))


def check_paths(paths: Iterable[str | Path], out: TextIO) -> int:
    failed = 0
    count = 0
    for raw in paths:
        count += 1
        path = Path(raw)
        problems = _check_one(path)
        if problems:
            failed += 1
            for problem in problems:
                print(problem, file=out)
        else:
            print(f"{path}: ok", file=out)
    if failed:
        print(f"{failed} of {count} file(s) have problems", file=out)
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    return check_paths(args.files, sys.stdout)


# -- test ------------------------------------------------------------------------------------


def run_flow_tests(paths: Iterable[str | Path], out: TextIO, *, verbose: bool = False) -> int:
    """Run the test conversations of each flow (``x.yaml`` -> ``x.test.yaml``) or test file."""
    ok = True
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        tests = path if is_test_file(path) else flow_tests_path(path)
        if tests.resolve() in seen:
            continue  # `prompts/*.yaml` names both x.yaml and x.test.yaml: run them once
        seen.add(tests.resolve())
        if not tests.is_file():
            print(f"{path}: no test file (expected {tests})", file=out)
            ok = False
            continue
        report = run_test_file(tests)
        print(format_report(report, verbose=verbose), file=out)
        ok = ok and report.ok
    return 0 if ok else 1


def cmd_test(args: argparse.Namespace) -> int:
    return run_flow_tests(args.files, sys.stdout, verbose=args.verbose)


# -- schema ----------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    schema = flow_test_schema() if args.tests else flow_schema()
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


# -- chat ------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _slots(slots: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_value(value)}" for name, value in slots.items()) or "none"


def _show_reply(reply: Reply, out: TextIO) -> None:
    for line in reply.lines:
        print(f"bot: {line}", file=out)
    print(f"  [node {reply.node} | slots: {_slots(reply.slots)}]", file=out)
    for action in reply.actions:
        if isinstance(action, HttpRequest):
            body = f" {json.dumps(action.json_body)}" if action.json_body is not None else ""
            print(f"  [http {action.method} {action.url}{body} -> answer with /ok {{json}} or /fail]", file=out)
        elif isinstance(action, Handover):
            skills = f" skills: {', '.join(action.skills)}" if action.skills else ""
            print(f"  [handover to queue '{action.queue}'{skills} reason: {action.reason or '-'}]", file=out)
        elif isinstance(action, RequestCallPermission):
            print(f"  [call permission requested: {action.reason}]", file=out)
        elif isinstance(action, SendCallButton):
            print(f"  [call button sent, payload: {action.payload or '-'}]", file=out)
    if reply.llm is not None:
        names = ", ".join(tool["function"]["name"] for tool in reply.llm.tools)
        print(
            f"  [LLM turn at '{reply.llm.node}' (tools: {names}) -> type /bot words and/or /tool name {{json}}]",
            file=out,
        )
    if reply.end_call:
        print("  [the bot hangs up]", file=out)


def _show_scores(engine: FlowEngine, text: str, reply: Reply, asked: str | None, out: TextIO) -> None:
    scores = reply.scores
    if not scores:
        node = engine.flow.nodes[reply.node]
        scores = {i.name: s for i, s in rank_intents(text, [*node.intents, *engine.flow.global_intents])}
    ranked = sorted(scores.items(), key=lambda item: -item[1])[:4]
    shown = ", ".join(f"{name} {score:.2f}" for name, score in ranked) or "no intents here"
    if reply.intent:
        matched = f"matched {reply.intent}"
    elif asked is not None and engine.misses == 0 and asked in reply.slots:
        matched = f"understood {asked} = {_value(reply.slots[asked])}"
    else:
        matched = "not understood"
    print(f"  [{matched} | scores: {shown}]", file=out)


def _json_arg(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def chat(engine: FlowEngine, lines: Iterable[str], out: TextIO, *, echo: bool = False) -> int:
    """Run a text conversation; returns when the call ends, on ``/quit`` or at end of input."""
    _show_reply(engine.start(), out)
    if engine.ended:
        return 0
    for raw in lines:
        text = raw.rstrip("\n")
        if echo:
            print(f"you: {text}", file=out)
        command, _, rest = text.strip().partition(" ")
        reply: Reply | None = None
        if command in ("/quit", "/exit"):
            return 0
        if command == "/help":
            print(CHAT_HELP, file=out)
            continue
        if command == "/slots":
            print(f"  [slots: {_slots(engine.slots)}]", file=out)
            continue
        if command == "/repeat":
            reply = engine.repeat()
        elif command in ("/keys", "/key"):
            keys = "".join(rest.split())
            bad = sorted(set(keys) - set(KEYPAD_KEYS))
            if not keys or bad:
                print("  [usage: /keys 123# (keys of the dialpad: 0-9, * and #)]", file=out)
                continue
            entry = engine.keypad
            reply = engine.handle_keys(keys)
            if reply.intent:
                matched = f"matched {reply.intent}"
            elif engine.misses:
                matched = "not understood"
            else:
                matched = "taken"
            how = ""
            if entry is not None and entry.typing:
                end = f', "{entry.terminator}" ends' if entry.terminator else ""
                how = f" | this question takes up to {entry.max_digits} digits{end}"
            print(f"  [keys {keys}: {matched}{how}]", file=out)
        elif command in ("/ok", "/fail"):
            pending = engine.pending_action
            if pending is None:
                print("  [no business-system request is waiting]", file=out)
                continue
            data = _json_arg(rest) if command == "/ok" else None
            if command == "/ok" and data is None:
                print('  [give the answer as a JSON object, like /ok {"balance": 120}]', file=out)
                continue
            reply = engine.action_result(pending.id, command == "/ok", data)
        elif command in ("/bot", "/tool"):
            if engine.waiting_for != "llm":
                print("  [the flow is not at an LLM node]", file=out)
                continue
            if command == "/bot":
                reply = engine.llm_result(rest.strip(), [])
            else:
                name, _, args_text = rest.strip().partition(" ")
                args = _json_arg(args_text)
                if not name or args is None:
                    print('  [usage: /tool name {"arg": "value"}]', file=out)
                    continue
                reply = engine.llm_result("", [ToolCall(name=name, arguments=args)])
        elif command.startswith("/"):
            print(f"  [unknown command {command}; /help lists them]", file=out)
            continue
        else:
            if engine.waiting_for == "action":
                print("  [the flow is waiting for a business system: /ok {json} or /fail]", file=out)
            ask = engine.flow.nodes[engine.node].ask if engine.waiting_for == "answer" else None
            reply = engine.handle(text)
            if text.strip():
                _show_scores(engine, text, reply, ask.slot if ask else None, out)
        _show_reply(reply, out)
        if engine.ended:
            print("  [call ended]", file=out)
            return 0
    return 0


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"{what} must look like key=value, not {item!r}")
        out[key.strip()] = value.strip()
    return out


def cmd_chat(args: argparse.Namespace) -> int:
    try:
        flow: Flow = load_flow(args.file)
    except FlowError as exc:
        print(exc, file=sys.stdout)
        return 1
    try:
        caller = _pairs(args.caller, "--caller")
        slots = _pairs(args.slot, "--slot")
        today = dt.date.fromisoformat(args.today) if args.today else None
    except ValueError as exc:
        print(f"wacall flows chat: {exc}", file=sys.stderr)
        return 2
    if args.name:
        caller["name"] = args.name
    call = {"payload": args.payload, "payload_source": args.via} if args.payload else None
    engine = FlowEngine(
        flow, caller=caller, call=call, slots=slots or None, today=today, llm_available=not args.offline
    )
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.file} (/help for commands, /quit to stop)", file=sys.stdout)

    def read() -> Iterable[str]:
        while True:
            try:
                line = input("you> ") if interactive else sys.stdin.readline()
            except EOFError:
                return
            if not interactive and not line:
                return
            yield line

    return chat(engine, read(), sys.stdout, echo=not interactive)


# -- wiring ----------------------------------------------------------------------------------


def add_flows_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``flows`` and its sub-commands on ``wacall``'s sub-parsers."""
    flows = subparsers.add_parser("flows", help="check, try and test call flows (YAML) without a phone")
    sub = flows.add_subparsers(dest="flows_command", required=True)

    check = sub.add_parser("check", help="validate flows and their test files; prints file:line:col problems")
    check.add_argument("files", nargs="+", metavar="FILE", help="flow files (x.yaml) and test files (x.test.yaml)")
    check.set_defaults(func=cmd_check)

    chat_cmd = sub.add_parser("chat", help="talk to a flow in the terminal (text, no audio)")
    chat_cmd.add_argument("file", metavar="FILE", help="the flow file")
    chat_cmd.add_argument("--name", help="the caller's WhatsApp name ({{caller.name}})")
    chat_cmd.add_argument("--caller", action="append", metavar="KEY=VALUE", help="another caller detail (repeatable)")
    chat_cmd.add_argument("--slot", action="append", metavar="KEY=VALUE", help="a starting slot value (repeatable)")
    chat_cmd.add_argument("--today", metavar="YYYY-MM-DD", help="pretend it is this date")
    chat_cmd.add_argument(
        "--payload", help="the call button's or deep link's payload ({{call.payload}}; picks the entry point)"
    )
    chat_cmd.add_argument("--via", choices=["button", "link"], default="button", help="where --payload came from")
    chat_cmd.add_argument("--offline", action="store_true", help="behave as if no LLM were configured")
    chat_cmd.set_defaults(func=cmd_chat)

    test = sub.add_parser("test", help="run a flow's scripted test conversations (x.test.yaml)")
    test.add_argument("files", nargs="+", metavar="FILE", help="flow files or their test files")
    test.add_argument("-v", "--verbose", action="store_true", help="print every transcript, not only failures")
    test.set_defaults(func=cmd_test)

    schema = sub.add_parser("schema", help="print the JSON Schema of flow files, for editors")
    schema.add_argument("--tests", action="store_true", help="the schema of test files instead")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    schema.set_defaults(func=cmd_schema)
    return flows


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.flows_cli flows ...``: the same commands without the server's imports."""
    parser = argparse.ArgumentParser(prog="wacall")
    add_flows_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
