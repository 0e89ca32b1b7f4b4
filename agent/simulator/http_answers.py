"""Canned business-system answers for `wacall simulate`, so a flow's `http` steps work with no network.

A simulated call should walk the same path through a flow as a real one; a flow that asks a billing
system for the caller's account would otherwise end at once on its error branch. The answers come from:

1. ``--http-answers FILE``: a YAML mapping from an `http` step's node name, or a part of the request URL,
   to a result shaped like a flow test's ``action_result``::

       lookup_account: {ok: true, data: {name: Ana Example, balance: 120}}
       /api/payment-links: {ok: false}

2. the flow's own test file (``x.test.yaml`` next to ``x.yaml``): for each `http` step, the first
   ``action_result`` its conversations give that step which the flow accepts as a success (ok, and every
   field the step stores is there), else the first one given.

A request neither answers goes to the real system (it may be one running on this machine). The answers
reach the call through the runtime's `http` seam (`Runtime(http=...)`), the same one that runs real
requests: nothing on the production path knows about the simulator.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.actions import run_http
from agent.dialogue.effects import HttpRequest
from agent.dialogue.flow import Flow, FlowError
from agent.dialogue.flowtest import engine_for, flow_tests_path, load_suite
from agent.dialogue.tools import dig

__all__ = ["CannedAnswer", "HttpAnswers", "HttpAnswersError", "answers_from_file", "answers_from_flow_tests"]

log = logging.getLogger(__name__)

HttpRunner = Callable[[HttpRequest], Awaitable[tuple[bool, Any]]]


class HttpAnswersError(ValueError):
    """The answers file cannot be used; the message starts with ``file:line:col:``."""


@dataclass(frozen=True)
class CannedAnswer:
    ok: bool
    data: Any
    source: str  # "prompts/x.test.yaml:23": where to look when the answer is not the one wanted


def _plain(value: Any) -> Any:
    """YAML values as a JSON API would send them: dates as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def http_nodes(flow: Flow) -> dict[str, Any]:
    """{node name: its `http` step} for every node of the flow that asks a business system."""
    return {name: node.http for name, node in flow.nodes.items() if getattr(node, "http", None) is not None}


class HttpAnswers:
    """Answers `http` requests from canned results by node, then by URL; passes the rest to `fallback`.

    `on_request` hears one line per request (what was asked and where the answer came from), for
    `wacall simulate`'s progress output.
    """

    def __init__(
        self,
        *,
        by_node: Mapping[str, CannedAnswer] | None = None,
        by_url: Mapping[str, CannedAnswer] | None = None,
        fallback: HttpRunner = run_http,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self.by_node = dict(by_node or {})
        self.by_url = dict(by_url or {})
        self._fallback = fallback
        self._on_request = on_request

    def answer_for(self, request: HttpRequest) -> CannedAnswer | None:
        # The engine names each request "<node>#<n>"; a node rule is the precise one, so it wins.
        node = request.id.rsplit("#", 1)[0]
        if node in self.by_node:
            return self.by_node[node]
        # The longest matching URL part is the most specific.
        for part in sorted(self.by_url, key=len, reverse=True):
            if part in request.url:
                return self.by_url[part]
        return None

    async def __call__(self, request: HttpRequest) -> tuple[bool, Any]:
        canned = self.answer_for(request)
        if canned is not None:
            result = "ok" if canned.ok else "error"
            self._tell(f"{request.method} {request.url}: canned answer ({result}, from {canned.source})")
            return canned.ok, canned.data
        self._tell(f"{request.method} {request.url}: no canned answer, asking the real system")
        ok, data = await self._fallback(request)
        self._tell(f"{request.method} {request.url}: {'ok' if ok else 'failed (the flow takes its error branch)'}")
        return ok, data

    def _tell(self, line: str) -> None:
        if self._on_request is not None:
            self._on_request(f"http {line}")


def _result(value: Any, where: str) -> tuple[bool, Any]:
    if not isinstance(value, Mapping) or set(value) - {"ok", "data"}:
        raise HttpAnswersError(f"{where}: give a result as {{ok: true, data: {{...}}}} (keys: ok, data)")
    ok = value.get("ok", True)
    if not isinstance(ok, bool):
        raise HttpAnswersError(f"{where}: `ok` must be true or false")
    return ok, _plain(value.get("data"))


def answers_from_file(path: str | Path, flow: Flow) -> tuple[dict[str, CannedAnswer], dict[str, CannedAnswer]]:
    """(by node, by URL part) from an ``--http-answers`` file; a key that is neither an `http` node of the
    flow nor part of a URL (it has no "/") is refused, since it could never match."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise HttpAnswersError(f"{source}:1:1: cannot read the answers file: {exc}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise HttpAnswersError(f"{source}:{at}: {exc.problem or 'invalid YAML'}") from exc
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise HttpAnswersError(f"{source}:1:1: the answers file must map http step names or URLs to results")
    marks = {str(key.value): key.start_mark for key, _value in root.value}
    nodes = http_nodes(flow)
    by_node: dict[str, CannedAnswer] = {}
    by_url: dict[str, CannedAnswer] = {}
    for key, value in data.items():
        mark = marks.get(str(key))
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else f"{source}:1:1"
        ok, result = _result(value, where)
        answer = CannedAnswer(ok=ok, data=result, source=where.rsplit(":", 1)[0])
        if str(key) in nodes:
            by_node[str(key)] = answer
        elif "/" in str(key):
            by_url[str(key)] = answer
        else:
            known = ", ".join(sorted(nodes)) or "none"
            raise HttpAnswersError(
                f"{where}: '{key}' is not an http step of flow {flow.name} (its http steps: {known}) nor part of a URL"
            )
    return by_node, by_url


def answers_from_flow_tests(flow_path: str | Path, flow: Flow) -> dict[str, CannedAnswer]:
    """{node: answer} from the ``action_result`` steps of the flow's test file; empty when it has none.

    The conversations are replayed through the real engine to learn which `http` step each result
    answered. A test file that cannot be read gives no answers (``wacall flows check`` reports why).
    """
    tests = flow_tests_path(flow_path)
    if not tests.is_file():
        return {}
    try:
        suite = load_suite(tests)
    except FlowError as exc:
        log.warning("%s; no canned http answers from it", exc)
        return {}
    found: dict[str, list[CannedAnswer]] = {}
    # Tests of error branches make the engine warn ("answer has no 'balance'"): expected here, not news.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        for conversation in suite.conversations:
            try:
                _replay(flow, conversation, suite.source, found)
            except Exception:  # a test that no longer fits the flow is `flows test`'s to report, not ours
                log.debug("replaying test conversation %r failed", conversation.name, exc_info=True)
    finally:
        logging.disable(previous)
    stores = {name: dict(spec.store) for name, spec in http_nodes(flow).items()}
    return {node: _best(answers, stores.get(node, {})) for node, answers in found.items()}


def _replay(flow: Flow, conversation: Any, source: str, found: dict[str, list[CannedAnswer]]) -> None:
    engine = engine_for(flow, conversation)
    engine.start()
    for step in conversation.steps:
        if engine.ended:
            return
        if step.kind == "caller":
            if engine.waiting_for == "action":
                return
            engine.handle(step.caller)
        elif step.kind == "action_result":
            pending = engine.pending_action
            if pending is None:
                return
            answer = CannedAnswer(ok=step.ok, data=step.data, source=f"{source}:{step.mark.line + 1}")
            found.setdefault(engine.node, []).append(answer)
            engine.action_result(pending.id, step.ok, step.data)
        elif step.kind == "llm":
            if engine.waiting_for != "llm":
                return
            engine.llm_result(step.text, step.tool_calls)


def _best(answers: list[CannedAnswer], store: Mapping[str, str]) -> CannedAnswer:
    """The first answer the flow takes as a success (the happy path a simulation should show)."""
    for answer in answers:
        if answer.ok and all(dig(answer.data, path)[0] for path in store.values()):
            return answer
    return next((a for a in answers if a.ok), answers[0])
