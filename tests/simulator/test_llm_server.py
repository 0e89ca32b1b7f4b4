"""The scripted LLM server must speak OpenAI's wire format faithfully, or client tests prove nothing.

Driven with plain httpx over loopback (not the openai client) so the raw SSE framing and chunk shapes
are checked independently of the code under test in tests/dialogue/test_llm.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.simulator.llm_server import Rule, ScriptedCall, ScriptedLlm, running_llm_server, tokenize

TOOLS = [ScriptedCall("set_slot", {"name": "order_id", "value": "A-1234"}), ScriptedCall("goto", {"node": "status"})]


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedLlm, httpx.AsyncClient]]:
    llm = ScriptedLlm(
        [
            Rule("hello", text="Hi there. How can I help?", token_delay_s=0.05),
            Rule("order", text="Noted.", tool_calls=TOOLS),
            Rule("fail", status=503),
            Rule("once", text="first time", times=1),
            Rule(re.compile(r"^repeat: "), text="You said {user}"),
            Rule("hang", hang=True),
        ],
        api_key="sk-sim",
    )
    async with running_llm_server(llm) as base_url:
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer sk-sim"}) as http:
            yield llm, http


def body(text: str, *, stream: bool) -> dict[str, Any]:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}


async def sse(http: httpx.AsyncClient, text: str) -> list[Any]:
    async with http.stream("POST", "/chat/completions", json=body(text, stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    return [json.loads(block[6:]) if block != "data: [DONE]" else "[DONE]" for block in events]


def test_tokenize_splits_like_an_llm() -> None:
    assert tokenize("It costs 3.50. Ok!") == ["It", " costs", " 3", ".", "50", ".", " Ok", "!"]
    assert "".join(tokenize("Don't  panic,\nplease. ")) == "Don't  panic,\nplease. "


async def test_streamed_text_chunks(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    llm, http = server
    events = await sse(http, "hello")
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hi there. How can I help?"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    sent = llm.requests[-1].sent
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.04  # the per-token delay is real, so clients can be timed against it
    assert llm.requests[-1].finished


async def test_streamed_tool_calls_are_split_by_index(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    _, http = server
    chunks = (await sse(http, "my order"))[:-1]
    calls: dict[int, dict[str, Any]] = {}
    pieces = 0
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(delta["index"], {"arguments": ""})
            if "id" in delta:  # only the first delta of a call names it
                assert "id" not in call and delta["type"] == "function"
                call.update(id=delta["id"], name=delta["function"]["name"])
            call["arguments"] += delta["function"]["arguments"]
            pieces += 1
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        (t.name, t.arguments) for t in TOOLS
    ]
    assert pieces > 2 * len(TOOLS) + 2  # arguments really arrive in several pieces
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_non_streamed_reply(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    _, http = server
    response = await http.post("/chat/completions", json=body("my order", stream=False))
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Noted."
    assert [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == [
        t.arguments for t in TOOLS
    ]


async def test_models(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    _, http = server
    response = await http.get("/models")
    assert response.json()["data"][0]["id"] == "wacall-scripted"


async def test_errors_use_openai_envelope(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    llm, http = server
    failed = await http.post("/chat/completions", json=body("fail", stream=True))
    assert failed.status_code == 503 and failed.json()["error"]["type"] == "server_error"
    unmatched = await http.post("/chat/completions", json=body("something else", stream=False))
    assert unmatched.status_code == 400 and "no scripted rule" in unmatched.json()["error"]["message"]
    not_json = await http.post("/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    wrong_key = await http.post(
        "/chat/completions", json=body("hello", stream=False), headers={"Authorization": "Bearer nope"}
    )
    assert wrong_key.status_code == 401 and wrong_key.json()["error"]["code"] == "invalid_api_key"
    assert len(llm.requests) == 3  # the unparsable body is not recorded


async def test_rule_matching(server: tuple[ScriptedLlm, httpx.AsyncClient]) -> None:
    _, http = server
    first = await http.post("/chat/completions", json=body("just once", stream=False))
    assert first.json()["choices"][0]["message"]["content"] == "first time"
    again = await http.post("/chat/completions", json=body("just once", stream=False))
    assert again.status_code == 400  # the rule is used up
    echoed = await http.post("/chat/completions", json=body("repeat: blue", stream=False))
    assert echoed.json()["choices"][0]["message"]["content"] == "You said repeat: blue"


async def test_hang_does_not_block_shutdown() -> None:
    llm = ScriptedLlm([Rule("", hang=True)])
    async with running_llm_server(llm) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        http = httpx.AsyncClient(base_url=base_url)
        pending = asyncio.create_task(http.post("/chat/completions", json=body("x", stream=True)))
        await asyncio.sleep(0.2)
        assert not pending.done()
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    response = await pending  # released on shutdown rather than left hanging
    assert response.status_code == 504
    await http.aclose()
