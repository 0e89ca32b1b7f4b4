"""A scripted OpenAI-compatible chat server, for tests and for developing flows with no model at hand.

It speaks the wire format real servers speak (SSE ``chat.completion.chunk`` events, tool-call
arguments split across chunks, ``data: [DONE]``), so the production client is exercised unchanged.
What it says is scripted by :class:`Rule`\\ s matched against the last user message, and it can also
misbehave on purpose — answer slowly, hang, stall mid-stream, fail with an HTTP status — because those
are the cases a voice call must survive without dead air.

Run it for development with ``python -m agent.simulator.llm_server`` and point ``WACALL_LLM_BASE_URL``
at the printed URL. It only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["RecordedRequest", "Rule", "ScriptedCall", "ScriptedLlm", "running_llm_server", "tokenize"]

#: Longer than any timeout a client may use; hangs also end when the client goes away or on close().
HANG_S = 300.0
_POLL_S = 0.02
_TOKEN_RE = re.compile(r"\s*[\w'’]+|\s*[^\w\s]|\s+$")
_ARGUMENT_PIECE = 6  # characters of tool arguments per chunk: small, so every call is split


def tokenize(text: str) -> list[str]:
    """Split like an LLM tokenizer roughly does (words with their leading space, punctuation alone),
    so sentence cutting is exercised on realistic boundaries such as "3" "." "50"."""
    return _TOKEN_RE.findall(text)


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call to stream; string arguments are sent verbatim (to script malformed JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Rule:
    """When the last user message matches, answer like this.

    ``match`` is a case-insensitive substring (``""`` matches anything) or a compiled regex. Text is
    streamed before tool calls, one token per ``token_delay_s``; ``{user}`` in it is replaced by the
    user's message. ``status`` answers with an OpenAI-style error instead; ``hang`` never sends
    headers; ``latency_s`` waits after the headers, before the first token; ``stall_after`` stops
    for good after that many tokens. ``times`` limits how often the rule may fire.
    """

    match: str | re.Pattern[str] = ""
    text: str = ""
    tool_calls: Sequence[ScriptedCall] = ()
    status: int | None = None
    hang: bool = False
    latency_s: float = 0.0
    token_delay_s: float | None = None
    stall_after: int | None = None
    times: int | None = None
    used: int = field(default=0, init=False)

    def matches(self, message: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if isinstance(self.match, re.Pattern):
            return self.match.search(message) is not None
        return self.match.lower() in message.lower()


@dataclass
class RecordedRequest:
    """One request as received, plus what was sent back and when (``time.monotonic()``), so tests can
    prove the client acted on early chunks before later ones existed."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    rule: Rule | None = None
    sent: list[tuple[float, str]] = field(default_factory=list)  # (when, content or tool-argument piece)
    finished: bool = False

    @property
    def last_user_message(self) -> str:
        return last_user_message(self.body.get("messages", []))


def last_user_message(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class ScriptedLlm:
    """The server: build with rules, mount :attr:`app`, read :attr:`requests` afterwards."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        model: str = "wacall-scripted",
        token_delay_s: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.rules = list(rules)
        self.model = model
        self.token_delay_s = token_delay_s
        self.api_key = api_key  # when set, other bearer tokens get a 401, as a real server would
        self.requests: list[RecordedRequest] = []
        self._released = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    def release(self) -> None:
        """End every hang now, so the HTTP server can shut down without waiting for them."""
        self._released.set()

    # -- routes

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "wacall"}]}
        )

    async def _completions(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required", "invalid_request_error")
        record = RecordedRequest(
            path=request.url.path,
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=time.monotonic(),
        )
        self.requests.append(record)
        if self.api_key is not None and record.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        message = record.last_user_message
        rule = next((r for r in self.rules if r.matches(message)), None)
        if rule is None:
            return _error(400, f"no scripted rule matches {message!r}", "invalid_request_error")
        rule.used += 1
        record.rule = rule
        if rule.hang:
            await self._pause(request, HANG_S)
            return _error(504, "hung on purpose", "server_error")
        if rule.status is not None:
            return _error(rule.status, f"scripted failure {rule.status}", "server_error")
        text = rule.text.replace("{user}", message)
        if body.get("stream"):
            return StreamingResponse(
                self._chunks(request, record, rule, text),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return self._whole(request, record, rule, text)

    # -- responses

    def _whole(self, request: Request, record: RecordedRequest, rule: Rule, text: str) -> Response:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if rule.tool_calls:
            message["tool_calls"] = [
                {"id": _call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                for c in rule.tool_calls
            ]
        record.sent.append((time.monotonic(), text))
        record.finished = True
        return JSONResponse(
            {
                "id": _completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if rule.tool_calls else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(tokenize(text)), "total_tokens": 0},
            }
        )

    async def _chunks(self, request: Request, record: RecordedRequest, rule: Rule, text: str) -> AsyncIterator[str]:
        completion_id, created = _completion_id(), int(time.time())
        model = record.body.get("model", self.model)
        delay = rule.token_delay_s if rule.token_delay_s is not None else self.token_delay_s

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if rule.latency_s and not await self._pause(request, rule.latency_s):
            return
        sent_tokens = 0
        for index, token in enumerate(tokenize(text)):
            if rule.stall_after is not None and sent_tokens >= rule.stall_after:
                await self._pause(request, HANG_S)
                return
            if index and delay and not await self._pause(request, delay):
                return
            record.sent.append((time.monotonic(), token))
            sent_tokens += 1
            yield chunk({"content": token})
        for index, call in enumerate(rule.tool_calls):
            if delay and not await self._pause(request, delay):
                return
            head = {
                "index": index,
                "id": _call_id(),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            record.sent.append((time.monotonic(), call.name))
            yield chunk({"tool_calls": [head]})
            arguments = call.arguments_json()
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                record.sent.append((time.monotonic(), piece))
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if rule.tool_calls else "stop")
        record.finished = True
        yield "data: [DONE]\n\n"

    async def _pause(self, request: Request, seconds: float) -> bool:
        """Sleep, but wake when the client disconnects or on release(); False if woken early.

        A handler that sleeps through a disconnect would keep uvicorn's graceful shutdown waiting.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._released.is_set() or await request.is_disconnected():
                return False
            await asyncio.sleep(min(_POLL_S, left))
        return True


def _error(status: int, message: str, kind: str, *, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _call_id() -> str:
    return "call_" + secrets.token_hex(8)


@contextlib.asynccontextmanager
async def running_llm_server(llm: ScriptedLlm) -> AsyncIterator[str]:
    """Serve ``llm`` on a free 127.0.0.1 port inside this event loop; yields the ``/v1`` base URL."""
    # Imported here: the session module pulls in the whole runtime, which this server does not need.
    from agent.simulator.session import bound_socket, serve

    sock = bound_socket()
    port = sock.getsockname()[1]
    async with serve(llm.app, sock):
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            llm.release()


def demo_rules() -> list[Rule]:
    """A script good enough to click through a flow's LLM nodes by voice, with no model installed."""
    return [
        Rule(
            re.compile(r"\b(bye|goodbye|that'?s all)\b", re.I),
            text="Thanks for calling. Goodbye!",
            tool_calls=[ScriptedCall("end_call")],
        ),
        Rule(
            re.compile(r"\b(human|agent|person|operator)\b", re.I),
            text="Let me get a colleague for you.",
            tool_calls=[ScriptedCall("handover", {"reason": "caller asked for a human"})],
        ),
        Rule("", text="This is the local test model. You said: {user}. What else can I do?", token_delay_s=0.03),
    ]


async def _main(port: int) -> None:
    from agent.simulator.session import serve

    llm = ScriptedLlm(demo_rules())
    from agent.listen_socket import listening_socket

    sock = listening_socket("127.0.0.1", port)
    print(f"WACALL_LLM_BASE_URL=http://127.0.0.1:{sock.getsockname()[1]}/v1 WACALL_LLM_MODEL={llm.model}", flush=True)
    async with serve(llm.app, sock):
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible chat server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
