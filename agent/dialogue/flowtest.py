"""Scripted test conversations for a flow, written in YAML next to it (``x.test.yaml``).

Prompt authors change wording and intents often; a file of "caller says -> bot should
answer / be at node / have these slots / hand over" conversations turns each change into a
seconds-long regression check in CI (``wacall flows test``), with failures pointing at the
exact line of the expectation that broke. The runner drives the real engine, answering
business-system and LLM requests from the script, so no network or model is involved.

File format (see prompts/README.md)::

    flow: booking.yaml          # optional; default: this file without ".test"
    today: 2024-12-02           # optional; the date "tomorrow" is relative to
    caller_info: {name: Maria}  # optional; {{caller.*}} details
    conversations:
      - name: books tomorrow
        steps:
          - expect: {node: ask_date}          # a first step without `caller` checks the greeting
          - caller: tomorrow please
            expect: {node: ask_time, slots: {date: 2024-12-03}}
          - action_result: {ok: true, data: {id: 7}}
            expect: {say_contains: booked, end: true}
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.dialogue import slots as slot_parsing
from agent.dialogue.checks import slots_set
from agent.dialogue.effects import Handover, HttpRequest, Reply, RequestCallPermission, SendCallButton, ToolCall
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import Flow, FlowError, flow_errors, read_flow_text
from agent.dialogue.model import KEYPAD_KEYS
from agent.dialogue.schema import CONVERSATION_KEYS, EXPECT_KEYS, STEP_KEYS, TESTS_KEYS
from agent.dialogue.yamlsource import MarkedDict, MarkedList, load_marked

__all__ = [
    "ConversationResult",
    "FlowTestFailure",
    "FlowTestReport",
    "FlowTestSuite",
    "check_suite",
    "flow_file_for",
    "flow_tests_path",
    "format_report",
    "is_test_file",
    "load_suite",
    "run_suite",
    "run_test_file",
]

TEST_SUFFIXES = (".test.yaml", ".test.yml")
_ACTION_KINDS = {
    "http": HttpRequest,
    "handover": Handover,
    "request_call_permission": RequestCallPermission,
    "send_call_button": SendCallButton,
}


def is_test_file(path: str | Path) -> bool:
    return str(path).endswith(TEST_SUFFIXES)


def flow_tests_path(flow_path: str | Path) -> Path:
    """``prompts/x.yaml`` -> ``prompts/x.test.yaml`` (the convention ``flows test`` relies on)."""
    path = Path(flow_path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".test.yaml")


def flow_file_for(test_path: str | Path, declared: str | None = None) -> Path:
    path = Path(test_path)
    if declared:
        return path.parent / declared
    for suffix in TEST_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".yaml")
    return path


# -- the suite --------------------------------------------------------------------------------


@dataclass
class _Step:
    number: int
    kind: str  # "start", "caller", "keys", "action_result", "llm"
    mark: Any
    caller: str = ""
    keys: str = ""
    ok: bool = True
    data: Any = None
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    expect: MarkedDict = field(default_factory=MarkedDict)

    def describe(self) -> str:
        if self.kind == "caller":
            return f'step {self.number} (caller: "{self.caller}")'
        if self.kind == "keys":
            return f'step {self.number} (keys: "{self.keys}")'
        if self.kind == "start":
            return f"step {self.number} (the greeting)"
        return f"step {self.number} ({self.kind.replace('_', ' ')})"


@dataclass
class _Conversation:
    name: str
    mark: Any
    steps: list[_Step]
    caller_info: dict[str, str]
    slots: dict[str, Any]
    today: dt.date | None
    llm_available: bool


@dataclass
class FlowTestSuite:
    source: str
    flow_path: Path
    conversations: list[_Conversation]


@dataclass(frozen=True)
class FlowTestFailure:
    source: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"


@dataclass
class ConversationResult:
    name: str
    failures: list[FlowTestFailure] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class FlowTestReport:
    source: str
    results: list[ConversationResult] = field(default_factory=list)
    #: Problems that stop the whole file (unreadable test file, broken flow).
    errors: list[FlowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(result.passed for result in self.results)


class _SuiteReader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, mark: Any | None, message: str) -> FlowError:
        if mark is None:
            return FlowError(message, source=self.source, line=1, column=1)
        return FlowError(message, source=self.source, line=mark.line + 1, column=mark.column + 1)

    def mapping(self, value: Any, mark: Any | None, what: str, allowed: tuple[str, ...]) -> MarkedDict:
        if not isinstance(value, MarkedDict):
            raise self.error(mark, f"{what} must be a block of `key: value` lines")
        for key in value:
            if key not in allowed:
                raise self.error(value.key_marks[key], f"unknown key '{key}' in {what} (allowed: {', '.join(allowed)})")
        return value

    def date(self, value: Any, mark: Any | None, what: str) -> dt.date | None:
        if value is None:
            return None
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise self.error(mark, f"{what} must be a date like 2024-12-02") from None

    def details(self, value: Any, mark: Any | None, what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(mark, f"{what} must be a block of `key: value` lines")
        return {str(key): item for key, item in value.items()}

    def suite(self, root: Any, path: Path) -> FlowTestSuite:
        if root is None:
            raise self.error(None, "the test file is empty")
        top = self.mapping(root, None, "the test file", TESTS_KEYS)
        if "conversations" not in top:
            raise self.error(top.mark, "the test file needs `conversations`: a list of test conversations")
        conversations = top["conversations"]
        if not isinstance(conversations, MarkedList) or not conversations:
            raise self.error(top.value_marks["conversations"], "`conversations` must be a list with at least one item")
        today = self.date(top.get("today"), top.value_marks.get("today"), "`today`")
        caller_info = self.details(top.get("caller_info"), top.value_marks.get("caller_info"), "`caller_info`")
        declared = top.get("flow")
        flow_path = flow_file_for(path, str(declared) if declared else None)
        out = [
            self.conversation(item, conversations.item_marks[i], i + 1, today, caller_info)
            for i, item in enumerate(conversations)
        ]
        return FlowTestSuite(source=self.source, flow_path=flow_path, conversations=out)

    def conversation(
        self, value: Any, mark: Any, number: int, today: dt.date | None, caller_info: dict[str, Any]
    ) -> _Conversation:
        conv = self.mapping(value, mark, f"conversation {number}", CONVERSATION_KEYS)
        name = str(conv.get("name") or f"conversation {number}")
        steps_value = conv.get("steps")
        if not isinstance(steps_value, MarkedList) or not steps_value:
            raise self.error(conv.value_marks.get("steps", mark), f"conversation '{name}' needs `steps`: a list")
        steps = [self.step(item, steps_value.item_marks[i], i + 1, name) for i, item in enumerate(steps_value)]
        llm_available = conv.get("llm_available", True)
        if not isinstance(llm_available, bool):
            raise self.error(conv.value_marks["llm_available"], "`llm_available` must be true or false")
        return _Conversation(
            name=name,
            mark=mark,
            steps=steps,
            caller_info={
                **caller_info,
                **self.details(conv.get("caller_info"), conv.value_marks.get("caller_info"), "`caller_info`"),
            },
            slots=self.details(conv.get("slots"), conv.value_marks.get("slots"), "`slots`"),
            today=self.date(conv.get("today"), conv.value_marks.get("today"), "`today`") or today,
            llm_available=llm_available,
        )

    def step(self, value: Any, mark: Any, number: int, conversation: str) -> _Step:
        what = f"step {number} of '{conversation}'"
        step = self.mapping(value, mark, what, STEP_KEYS)
        events = [key for key in ("caller", "keys", "action_result", "llm") if key in step]
        if len(events) > 1:
            raise self.error(
                step.key_marks[events[1]], f"{what} has both `{events[0]}` and `{events[1]}`; split it into two steps"
            )
        if not events and number > 1:
            raise self.error(
                mark,
                f"{what} needs `caller` (what the caller says), `keys` (what they press), `action_result` or `llm`",
            )
        expect = MarkedDict()
        if "expect" in step:
            expect = self.mapping(step["expect"], step.value_marks["expect"], f"`expect` of {what}", EXPECT_KEYS)
        if not events:
            return _Step(number, "start", mark, expect=expect)
        kind = events[0]
        if kind == "caller":
            text = step.raw.get("caller", "" if step["caller"] is None else str(step["caller"]))
            return _Step(number, "caller", mark, caller=text, expect=expect)
        if kind == "keys":
            raw = step.raw.get("keys", "" if step["keys"] is None else str(step["keys"]))
            keys = "".join(str(raw).split())
            if not keys or set(keys) - set(KEYPAD_KEYS):
                raise self.error(
                    step.value_marks["keys"], f'`keys` of {what} must be keys of the dialpad (0-9, * and #), like "1"'
                )
            return _Step(number, "keys", mark, keys=keys, expect=expect)
        body = step[kind]
        body_mark = step.value_marks[kind]
        if kind == "action_result":
            result = self.mapping(body, body_mark, f"`action_result` of {what}", ("ok", "data"))
            ok = result.get("ok", True)
            if not isinstance(ok, bool):
                raise self.error(result.value_marks["ok"], "`ok` must be true or false")
            return _Step(number, kind, mark, ok=ok, data=_plain(result.get("data")), expect=expect)
        llm = self.mapping(body, body_mark, f"`llm` of {what}", ("text", "tool_calls"))
        calls: list[ToolCall] = []
        raw_calls = llm.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise self.error(llm.value_marks["tool_calls"], "`tool_calls` must be a list")
        for i, call in enumerate(raw_calls):
            call_mark = raw_calls.item_marks[i] if isinstance(raw_calls, MarkedList) else body_mark
            spec = self.mapping(call, call_mark, f"tool call {i + 1}", ("name", "arguments"))
            if "name" not in spec:
                raise self.error(call_mark, f"tool call {i + 1} needs a `name`")
            calls.append(ToolCall(name=str(spec["name"]), arguments=_plain(spec.get("arguments")) or {}))
        return _Step(number, kind, mark, text=str(llm.get("text") or ""), tool_calls=calls, expect=expect)


def _plain(value: Any) -> Any:
    """Strip position bookkeeping (and dates to ISO text) so data looks like decoded JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def load_suite(path: str | Path) -> FlowTestSuite:
    """Read and check the structure of a test file; errors carry ``file:line:column``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read test file: {exc}", source=source) from exc
    root = load_marked(text, source)
    return _SuiteReader(source).suite(root, Path(path))


# -- static checks against the flow -----------------------------------------------------------


def check_suite(suite: FlowTestSuite, flow: Flow) -> list[FlowError]:
    """Expectations that can never hold (unknown node, slot or intent), found without running."""
    reader = _SuiteReader(suite.source)
    known_slots = slots_set(flow)
    intents = {i.name for i in flow.global_intents} | {i.name for n in flow.nodes.values() for i in n.intents}
    intents |= {entry.name for entry in flow.faq}  # an answered FAQ question reports its name as the intent
    errors: list[FlowError] = []
    for conversation in suite.conversations:
        for step in conversation.steps:
            expect = step.expect
            node = expect.raw.get("node", expect.get("node"))
            if "node" in expect and str(node) not in flow.nodes:
                errors.append(reader.error(expect.value_marks["node"], f"there is no node '{node}' in {flow.source}"))
            intent = expect.raw.get("intent", expect.get("intent"))
            if expect.get("intent") is not None and str(intent) not in intents:
                errors.append(
                    reader.error(
                        expect.value_marks["intent"], f"there is no intent '{intent}' in the flow (nor an faq entry)"
                    )
                )
            slots = expect.get("slots")
            if isinstance(slots, MarkedDict):
                for name in slots:
                    if str(name) not in known_slots:
                        errors.append(reader.error(slots.key_marks[name], f"the flow never sets a slot '{name}'"))
            elif slots is not None:
                errors.append(reader.error(expect.value_marks["slots"], "`slots` must be a block of `slot: value`"))
    return errors


# -- running ------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _show(value: Any) -> str:
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


def _same(actual: Any, expected: Any) -> bool:
    """Compare a slot value with what a test author wrote, forgiving YAML's typing
    (``15:30`` unquoted is the number 930 to YAML 1.1; ``yes`` is true)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        if isinstance(expected, str):
            expected = slot_parsing.parse_yes_no(expected)
        return isinstance(actual, bool) and actual == expected
    if isinstance(actual, dt.time):
        if isinstance(expected, int):
            return actual.hour * 60 + actual.minute == expected
        try:
            return actual.replace(second=0) == dt.time.fromisoformat(str(expected))
        except ValueError:
            return False
    if isinstance(actual, dt.date):
        if isinstance(expected, dt.date):
            return actual == expected
        try:
            return actual == dt.date.fromisoformat(str(expected))
        except ValueError:
            return False
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return float(actual) == float(expected)
    return _norm(str(actual)) == _norm(str(expected))


def _action_matches(action: Any, spec: Any) -> str | None:
    """``None`` if ``action`` fits ``spec`` (a kind name, or ``{kind: {field: value}}``)."""
    if isinstance(spec, str):
        kind, fields = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        kind, fields = next(iter(spec.items()))
        fields = fields or {}
    else:
        return f"each expected action is a kind ({', '.join(_ACTION_KINDS)}) or {{kind: {{field: value}}}}"
    if kind not in _ACTION_KINDS:
        return f"unknown action kind '{kind}' (use one of: {', '.join(_ACTION_KINDS)})"
    if not isinstance(action, _ACTION_KINDS[kind]):
        return f"expected a {kind} action, got {action.kind}"
    for key, want in dict(fields).items():
        have = getattr(action, "json_body" if key == "json" else key, None)
        if key in ("url", "reason") and isinstance(want, str):
            if _norm(want) not in _norm(str(have)):
                return f"{kind} {key} {have!r} does not contain {want!r}"
        elif _plain(want) != have and not (isinstance(have, str) and _norm(str(want)) == _norm(have)):
            return f"{kind} {key} is {have!r}, expected {_plain(want)!r}"
    return None


def _check(expect: MarkedDict, reply: Reply, engine: FlowEngine) -> list[tuple[Any, str]]:
    """Every unmet expectation, as (key, message)."""
    said = " ".join(reply.lines)
    problems: list[tuple[Any, str]] = []

    def fail(key: str, message: str) -> None:
        problems.append((key, message))

    for key, want in expect.items():
        raw = expect.raw.get(key)
        if key == "say":
            if isinstance(want, list):
                if [_norm(x) for x in reply.lines] != [_norm(str(x)) for x in want]:
                    fail(key, f"expected the lines {list(want)!r}")
            elif _norm(said) != _norm(str(raw if raw is not None else want)):
                fail(key, f"expected the bot to say {str(want)!r}")
        elif key == "say_contains":
            for part in want if isinstance(want, list) else [raw if raw is not None else want]:
                if _norm(str(part)) not in _norm(said):
                    fail(key, f"expected the bot's words to contain {str(part)!r}")
        elif key == "say_matches":
            try:
                if re.search(str(want), said, re.IGNORECASE) is None:
                    fail(key, f"expected the bot's words to match /{want}/")
            except re.error as exc:
                fail(key, f"`say_matches` is not a valid pattern: {exc}")
        elif key == "silent":
            if bool(want) != (not reply.lines):
                fail(key, "expected the bot to say nothing" if want else "expected the bot to say something")
        elif key == "node":
            if str(raw if raw is not None else want) != reply.node:
                fail(
                    key,
                    f"expected to be at node '{raw if raw is not None else want}', but the call is at '{reply.node}'",
                )
        elif key == "intent":
            expected_intent = None if want is None else str(raw if raw is not None else want)
            if expected_intent != reply.intent:
                fail(key, f"expected intent {expected_intent!r}, got {reply.intent!r} (scores: {reply.scores})")
        elif key == "slots":
            # Secret answers are masked in `reply.slots`; a test checks the real values.
            values = engine.slot_values
            for name, value in dict(want or {}).items():
                have = values.get(str(name))
                if value is None:
                    if str(name) in values:
                        fail(key, f"expected slot '{name}' to be unset, it is {_show(have)}")
                elif str(name) not in values:
                    fail(key, f"expected slot '{name}' = {_show(value)}, but it is not set")
                elif not _same(have, value):
                    fail(key, f"expected slot '{name}' = {_show(value)}, got {_show(have)}")
        elif key == "handover":
            handover = reply.handover
            if isinstance(want, dict):
                if handover is None:
                    fail(key, "expected a handover")
                else:
                    problem = _action_matches(handover, {"handover": want})
                    if problem:
                        fail(key, problem)
            elif bool(want) != (handover is not None):
                fail(key, "expected a handover" if want else f"expected no handover, got one to '{handover.queue}'")
        elif key == "end":
            if bool(want) != reply.end_call:
                fail(key, "expected the bot to hang up" if want else "expected the call to go on, but the bot hung up")
        elif key == "actions":
            specs = list(want or [])
            kinds = [a.kind for a in reply.actions]
            if len(specs) != len(reply.actions):
                fail(key, f"expected {len(specs)} action(s), got {kinds or 'none'}")
            else:
                for action, spec in zip(reply.actions, specs, strict=True):
                    problem = _action_matches(action, _plain(spec))
                    if problem:
                        fail(key, problem)
        elif key == "llm":
            if bool(want) != (reply.llm is not None):
                fail(key, "expected the LLM to take this turn" if want else "expected no LLM turn")
        elif key == "interruptible" and bool(want) != reply.interruptible:
            fail(key, f"expected interruptible: {bool(want)}")
    return problems


def _run_conversation(suite: FlowTestSuite, flow: Flow, conversation: _Conversation) -> ConversationResult:
    result = ConversationResult(conversation.name)

    def failure(mark: Any, message: str) -> FlowTestFailure:
        return FlowTestFailure(
            suite.source, mark.line + 1, mark.column + 1, f"conversation '{conversation.name}', {message}"
        )

    engine = engine_for(flow, conversation)
    reply = engine.start()
    result.transcript.extend(f"bot: {line}" for line in reply.lines)
    for step in conversation.steps:
        where = step.describe()
        if step.kind in ("caller", "keys"):
            if engine.waiting_for == "action" and step.kind == "caller":
                pending = engine.pending_action
                result.failures.append(
                    failure(
                        step.mark,
                        f"{where}: the flow is waiting for the result of "
                        f"{pending.method if pending else ''} {pending.url if pending else ''}; add an "
                        "`action_result` step before this one",
                    )
                )
                break
            if step.kind == "keys":
                reply = engine.handle_keys(step.keys)
                result.transcript.append(f"caller: [keys] {step.keys}")
            else:
                reply = engine.handle(step.caller)
                result.transcript.append(f"caller: {step.caller}")
        elif step.kind == "action_result":
            pending = engine.pending_action
            if pending is None:
                result.failures.append(
                    failure(step.mark, f"{where}: no business-system request is waiting for a result")
                )
                break
            reply = engine.action_result(pending.id, step.ok, step.data)
            result.transcript.append(f"[{pending.method} {pending.url} -> {'ok' if step.ok else 'error'}]")
        elif step.kind == "llm":
            if engine.waiting_for != "llm":
                result.failures.append(
                    failure(step.mark, f"{where}: the flow is not waiting for an LLM at '{engine.node}'")
                )
                break
            reply = engine.llm_result(step.text, step.tool_calls)
            if step.text:
                result.transcript.append(f"bot (LLM): {step.text}")
        if step.kind != "start":
            result.transcript.extend(f"bot: {line}" for line in reply.lines)
        problems = _check(step.expect, reply, engine)
        for key, message in problems:
            said = " ".join(reply.lines) or "(nothing)"
            result.failures.append(
                failure(step.expect.value_marks.get(key, step.mark), f"{where}: {message}; the bot said: {said!r}")
            )
        if problems:
            break
    return result


def run_suite(suite: FlowTestSuite, flow: Flow) -> FlowTestReport:
    report = FlowTestReport(source=suite.source, errors=check_suite(suite, flow))
    if report.errors:
        return report
    report.results = [_run_conversation(suite, flow, conversation) for conversation in suite.conversations]
    return report


def run_test_file(path: str | Path) -> FlowTestReport:
    """Load a test file and its flow and run every conversation; never raises for bad input."""
    try:
        suite = load_suite(path)
        flow_text = read_flow_text(suite.flow_path)
    except FlowError as exc:
        return FlowTestReport(source=str(path), errors=[exc])
    flow, errors = flow_errors(flow_text, source=str(suite.flow_path))
    if flow is None:
        return FlowTestReport(source=str(path), errors=errors)
    return run_suite(suite, flow)


def format_report(report: FlowTestReport, *, verbose: bool = False) -> str:
    lines: list[str] = [str(error) for error in report.errors]
    for result in report.results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'}  {report.source}: {result.name}")
        lines.extend(f"  {failure}" for failure in result.failures)
        if verbose or not result.passed:
            lines.extend(f"      {line}" for line in result.transcript)
    if report.results:
        passed = sum(result.passed for result in report.results)
        lines.append(f"{report.source}: {passed} of {len(report.results)} conversations passed")
    return "\n".join(lines)


def engine_for(flow: Flow, conversation: Any) -> FlowEngine:
    """A fresh engine set up as a test conversation says: the caller, slots, today, whether an LLM exists."""
    return FlowEngine(
        flow,
        caller={k: "" if v is None else str(v) for k, v in conversation.caller_info.items()},
        slots=_plain(conversation.slots) if conversation.slots else None,
        today=conversation.today,
        llm_available=conversation.llm_available,
    )
