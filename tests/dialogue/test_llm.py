"""The LLM step: sentence cutting, history, and the client against a real local server over loopback.

The server is `agent.simulator.llm_server.ScriptedLlm` under uvicorn on 127.0.0.1, so the production
`openai` client, SSE parsing and timeouts run exactly as they would against a remote model.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import pytest

from agent.config import ConfigError
from agent.dialogue.llm import (
    ConversationHistory,
    LlmClient,
    LlmEvent,
    LlmSettings,
    SentenceCutter,
    ToolCall,
    builtin_tools,
    llm_settings_from_env,
    tools_for_node,
)
from agent.dialogue.model import LlmConfig, LlmTool, ToolParam
from agent.simulator.llm_server import Rule, ScriptedCall, ScriptedLlm, running_llm_server
from agent.simulator.session import bound_socket

SECRET_KEY = "sk-test-Zq8v3NfX0aLwT7pK"
TOKEN_DELAY = 0.08
SHIPPED = "Your order has shipped. It will arrive on Friday."


def rules() -> list[Rule]:
    return [
        Rule("two sentences", text=SHIPPED, token_delay_s=TOKEN_DELAY),
        Rule("price", text="That is 3.50 dollars, e.g. for Dr. Smith. Anything else?"),
        Rule("bye", tool_calls=[ScriptedCall("end_call")]),
        Rule(
            "human",
            text="Let me transfer you.",
            tool_calls=[ScriptedCall("handover", {"queue": "billing", "reason": "wants a refund"})],
        ),
        Rule(
            "my order number",
            tool_calls=[
                ScriptedCall("set_slot", {"name": "order_id", "value": "A-1234"}),
                ScriptedCall("goto", {"node": "check_status"}),
            ],
        ),
        Rule("broken tool", tool_calls=[ScriptedCall("handover", '{"queue": "bill')]),
        Rule("hang", hang=True),
        Rule("slow start", text="Too late.", latency_s=30),
        Rule("stall", text="I will start and then stop talking for good.", stall_after=3),
        Rule("boom", status=500),
        Rule("money back", text="refund"),
        Rule("weather", text="none"),
        Rule("", text="Echo: {user}"),
    ]


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedLlm, str]]:
    llm = ScriptedLlm(rules(), api_key=SECRET_KEY)
    async with running_llm_server(llm) as base_url:
        yield llm, base_url


@pytest.fixture
async def client(server: tuple[ScriptedLlm, str]) -> AsyncIterator[LlmClient]:
    llm_client = LlmClient(LlmSettings(base_url=server[1], model="test-model", api_key=SECRET_KEY))
    yield llm_client
    await llm_client.aclose()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful phone agent."}, {"role": "user", "content": text}]


async def collect(client: LlmClient, text: str, **kwargs: object) -> list[LlmEvent]:
    return [event async for event in client.stream_reply(user(text), **kwargs)]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SentenceCutter


def cut(text: str, step: int | None = None) -> list[str]:
    cutter = SentenceCutter()
    pieces: list[str] = []
    chunks = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    for chunk in chunks:
        pieces += cutter.feed(chunk)
    if rest := cutter.flush():
        pieces.append(rest)
    return pieces


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Great! Anything else? Bye.", ["Great!", "Anything else?", "Bye."]),
        ("It costs 3.50 dollars. Okay.", ["It costs 3.50 dollars.", "Okay."]),
        ("Call Dr. Smith, e.g. on Monday. Fine.", ["Call Dr. Smith, e.g. on Monday.", "Fine."]),
        ("Mrs. Jones and Mr. Lee i.e. both. Yes.", ["Mrs. Jones and Mr. Lee i.e. both.", "Yes."]),
        ("We open at 9 a.m. Come by.", ["We open at 9 a.m. Come by."]),
        ("No. Thanks!", ["No.", "Thanks!"]),
        ('He said "hi." Then left.', ['He said "hi."', "Then left."]),
        ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
        ("1. First thing\n2. Second thing", ["1. First thing", "2. Second thing"]),
        ("The total is 1,250.75 euros. Paid.", ["The total is 1,250.75 euros.", "Paid."]),
        ("   Spaces   around.    ", ["Spaces   around."]),
        ("", []),
        ("  \n\n  ", []),
        ("no punctuation at the end", ["no punctuation at the end"]),
        (
            "Your order, which you placed on Monday at the downtown store, has shipped and arrives Friday.",
            ["Your order, which you placed on Monday at the downtown store,", "has shipped and arrives Friday."],
        ),
        (
            "Well, short clauses stay together; they are cheap.",
            ["Well, short clauses stay together; they are cheap."],
        ),
        (
            "Your appointment is confirmed for next Tuesday at the clinic: please bring your card.",
            ["Your appointment is confirmed for next Tuesday at the clinic:", "please bring your card."],
        ),
        ("Meet at 10:30 today. Ok.", ["Meet at 10:30 today.", "Ok."]),
    ],
)
def test_sentence_cutter(text: str, expected: list[str]) -> None:
    assert cut(text) == expected
    assert cut(text, step=1) == expected  # token boundaries never change the result
    assert cut(text, step=3) == expected


def test_cutter_releases_a_sentence_as_soon_as_the_next_token_starts() -> None:
    cutter = SentenceCutter()
    assert cutter.feed("It costs 3") == []
    assert cutter.feed(".") == []  # could still be 3.50
    assert cutter.feed("50 dollars.") == []  # end of stream or an abbreviation: wait
    assert cutter.feed(" Anything") == ["It costs 3.50 dollars."]
    assert cutter.feed(" else?") == []
    assert cutter.flush() == "Anything else?"
    assert cutter.flush() == ""


def test_cutter_bounds_a_run_on_sentence() -> None:
    text = " ".join(["word"] * 80)
    pieces = cut(text, step=5)
    assert " ".join(pieces) == text
    assert all(len(p) <= 205 for p in pieces) and len(pieces) >= 2


# --------------------------------------------------------------------------- ConversationHistory


def test_history_keeps_system_and_last_turns() -> None:
    history = ConversationHistory("You are the order bot.", max_turns=2)
    history.add_assistant("Hi, how can I help?")  # greeting before the caller speaks
    for i in range(4):
        history.add_user(f"question {i}")
        history.add_assistant(f"answer {i}")
    messages = history.to_messages()
    assert messages == [
        {"role": "system", "content": "You are the order bot."},
        {"role": "user", "content": "question 2"},
        {"role": "assistant", "content": "answer 2"},
        {"role": "user", "content": "question 3"},
        {"role": "assistant", "content": "answer 3"},
    ]
    assert history.turns == 2
    history.system_prompt = "You are now the billing bot."
    assert history.to_messages()[0] == {"role": "system", "content": "You are now the billing bot."}


def test_history_tool_calls_stay_valid_after_trimming() -> None:
    history = ConversationHistory("sys", max_turns=1)
    history.add_user("my order number is A-1234")
    call = ToolCall("set_slot", {"name": "order_id", "value": "A-1234"}, id="call_1")
    history.add_assistant("Thanks.", [call])
    history.add_tool_result("call_1", "saved")
    history.add_user("and the status?")
    history.add_assistant("", [ToolCall("goto", {"node": "status"}, id="call_2")])
    messages = history.to_messages()
    # The older turn went as a whole; the unanswered goto gets an "ok" result so servers accept it.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["function"] == {"name": "goto", "arguments": '{"node": "status"}'}
    assert messages[2]["content"] is None
    assert messages[3] == {"role": "tool", "tool_call_id": "call_2", "content": "ok"}
    messages[2]["tool_calls"].clear()  # callers get copies
    assert history.to_messages()[2]["tool_calls"]


def test_history_ignores_empty_messages() -> None:
    history = ConversationHistory()
    history.add_user("  ")
    history.add_assistant("")
    assert history.to_messages() == [] and len(history) == 0


# --------------------------------------------------------------------------- tools schema


def test_tools_for_node_has_builtins_and_declared_tools() -> None:
    config = LlmConfig(
        prompt="Help with orders.",
        transitions=["check_status", "goodbye"],
        slots=["order_id"],
        tools=[
            LlmTool(
                name="book", goto="booked", parameters={"day": ToolParam(type="date"), "n": ToolParam(type="number")}
            )
        ],
    )
    tools = tools_for_node(config)
    names = [t["function"]["name"] for t in tools]
    assert names == ["end_call", "handover", "set_slot", "goto", "book"]
    goto = tools[3]["function"]["parameters"]
    assert goto["properties"]["node"]["enum"] == ["check_status", "goodbye"]
    assert tools[4]["function"]["parameters"]["properties"]["n"] == {"type": "number"}
    assert [t["function"]["name"] for t in builtin_tools()] == ["end_call", "handover"]


# --------------------------------------------------------------------------- LlmClient over loopback


async def test_two_sentences_stream_in_order_and_the_first_comes_early(
    server: tuple[ScriptedLlm, str], client: LlmClient
) -> None:
    llm, _ = server
    arrivals: list[tuple[float, LlmEvent]] = []
    async for event in client.stream_reply(user("say two sentences"), tools=builtin_tools()):
        arrivals.append((time.monotonic(), event))
    events = [e for _, e in arrivals]
    assert [(e.kind, e.text) for e in events] == [
        ("sentence", "Your order has shipped."),
        ("sentence", "It will arrive on Friday."),
        ("done", SHIPPED),
    ]
    request = llm.requests[-1]
    assert request.body["stream"] is True and request.body["model"] == "test-model"
    assert request.body["tools"] == builtin_tools()
    assert request.body["max_tokens"] == 300 and request.body["temperature"] == 0.3
    first_at = arrivals[0][0]
    # When the first sentence reached us, the server had not yet written the second one's end...
    second_done_at = next(t for t, token in reversed(request.sent) if token == ".")
    assert first_at < second_done_at
    # ...in fact it had not even sent most of it (tokens are TOKEN_DELAY apart).
    tokens_before = [token for t, token in request.sent if t <= first_at]
    assert "".join(tokens_before).startswith("Your order has shipped.")
    assert len(tokens_before) <= 7, tokens_before  # "Your order has shipped." + " It" + one token of slack


async def test_numbers_and_abbreviations_survive_streaming(client: LlmClient) -> None:
    events = await collect(client, "what is the price")
    assert [e.text for e in events if e.kind == "sentence"] == [
        "That is 3.50 dollars, e.g. for Dr. Smith.",
        "Anything else?",
    ]


async def test_end_call_tool(client: LlmClient) -> None:
    events = await collect(client, "ok bye", tools=builtin_tools())
    assert [e.kind for e in events] == ["tool_call", "done"]
    call = events[0].tool_call
    assert call is not None and call.name == "end_call" and call.arguments == {} and call.id.startswith("call_")


async def test_handover_tool_after_speech(client: LlmClient) -> None:
    events = await collect(client, "get me a human", tools=builtin_tools())
    assert [e.kind for e in events] == ["sentence", "tool_call", "done"]
    assert events[0].text == "Let me transfer you."
    assert events[1].tool_call == ToolCall(
        "handover",
        {"queue": "billing", "reason": "wants a refund"},
        id=events[1].tool_call.id,  # type: ignore[union-attr]
    )


async def test_two_tool_calls_assembled_from_split_deltas(server: tuple[ScriptedLlm, str], client: LlmClient) -> None:
    tools = builtin_tools(slots=["order_id"], transitions=["check_status"])
    events = await collect(client, "my order number is A 1234", tools=tools)
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    assert [(c.name, c.arguments) for c in calls if c] == [
        ("set_slot", {"name": "order_id", "value": "A-1234"}),
        ("goto", {"node": "check_status"}),
    ]
    assert len({c.id for c in calls if c}) == 2
    argument_pieces = [token for _, token in server[0].requests[-1].sent if token.startswith(('{"', '"'))]
    assert len(argument_pieces) >= 2  # the arguments really were split across chunks
    assert events[-1].kind == "done"


async def test_malformed_tool_arguments_are_an_error(client: LlmClient) -> None:
    events = await collect(client, "broken tool please", tools=builtin_tools())
    assert [e.kind for e in events] == ["error"]
    assert "malformed JSON" in (events[0].error or "")


async def test_first_token_timeout_when_server_hangs(client: LlmClient) -> None:
    started = time.monotonic()
    events = await collect(client, "hang forever")
    elapsed = time.monotonic() - started
    assert [e.kind for e in events] == ["error"]
    assert "no first token" in (events[0].error or "")
    assert 1.4 <= elapsed <= client.settings.first_token_timeout_s + 0.5  # fallback fits the 2 s budget


async def test_first_token_timeout_after_headers(server: tuple[ScriptedLlm, str]) -> None:
    quick = LlmClient(LlmSettings(base_url=server[1], model="m", api_key=SECRET_KEY, first_token_timeout_s=0.4))
    try:
        started = time.monotonic()
        events = await collect(quick, "slow start")
        assert [e.kind for e in events] == ["error"] and "no first token" in (events[0].error or "")
        assert time.monotonic() - started <= 0.4 + 0.5
    finally:
        await quick.aclose()


async def test_stalled_stream_is_an_error_after_what_was_said(server: tuple[ScriptedLlm, str]) -> None:
    quick = LlmClient(LlmSettings(base_url=server[1], model="m", api_key=SECRET_KEY, first_token_timeout_s=0.4))
    try:
        events = await collect(quick, "stall")
        assert [e.kind for e in events] == ["error"]  # "I will start" was no sentence yet: nothing spoken
        assert "stalled" in (events[0].error or "")
    finally:
        await quick.aclose()


async def test_total_timeout(server: tuple[ScriptedLlm, str]) -> None:
    llm, base_url = server
    llm.rules.insert(0, Rule("long answer", text="One. Two. Three. Four. Five. Six.", token_delay_s=0.1))
    short = LlmClient(LlmSettings(base_url=base_url, model="m", api_key=SECRET_KEY, total_timeout_s=0.5))
    try:
        events = await collect(short, "a long answer")
        assert events[-1].kind == "error" and "not finished within 0.5 s" in (events[-1].error or "")
        assert events[0].kind == "sentence"  # what arrived in time was still delivered
    finally:
        await short.aclose()


async def test_http_500_is_an_error_event(client: LlmClient) -> None:
    events = await collect(client, "boom")
    assert [e.kind for e in events] == ["error"]
    assert "HTTP 500" in (events[0].error or "")


async def test_connection_refused_is_an_error_event() -> None:
    sock = bound_socket()  # bound but never listening: connections are refused
    port = sock.getsockname()[1]
    sock.close()
    refused = LlmClient(LlmSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m"))
    try:
        started = time.monotonic()
        events = await collect(refused, "hello")
        assert [e.kind for e in events] == ["error"]
        assert "connection" in (events[0].error or "").lower()
        assert time.monotonic() - started < 1.0
    finally:
        await refused.aclose()


async def test_closing_the_stream_early_cancels_the_request(server: tuple[ScriptedLlm, str], client: LlmClient) -> None:
    """Barge-in: the consumer stops after the first sentence; the rest must not keep running."""
    stream = client.stream_reply(user("two sentences please"))
    first = await anext(stream)  # type: ignore[arg-type]
    assert first.kind == "sentence"
    await stream.aclose()  # type: ignore[attr-defined]
    request = server[0].requests[-1]
    sent_at_close = len(request.sent)
    await asyncio.sleep(TOKEN_DELAY * 12)  # long enough for the server to have finished the reply
    assert not request.finished
    assert len(request.sent) <= sent_at_close + 1  # the server noticed the disconnect and stopped
    assert [t.get_name() for t in asyncio.all_tasks()].count("llm-stream") == 0
    events = await collect(client, "say two sentences")  # the client is still usable
    assert events[-1].kind == "done"


async def test_history_round_trip(server: tuple[ScriptedLlm, str], client: LlmClient) -> None:
    history = ConversationHistory("You are the order bot.")
    history.add_assistant("Hi, how can I help?")
    history.add_user("hello there")
    events = [e async for e in client.stream_reply(history.to_messages())]
    assert events[-1] == LlmEvent("done", text="Echo: hello there")
    history.add_assistant(events[-1].text)
    assert server[0].requests[-1].body["messages"] == history.to_messages()[:-1]


async def test_classify(client: LlmClient) -> None:
    intents = ["refund", "order_status"]
    assert await client.classify("I want my money back", intents) == "refund"
    assert await client.classify("what's the weather", intents) is None
    assert await client.classify("boom", intents) is None  # HTTP 500 → None, no exception
    assert await client.classify("", intents) is None


async def test_wrong_key_is_an_error_and_no_key_is_logged(
    server: tuple[ScriptedLlm, str], client: LlmClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await collect(client, "say two sentences")
    await collect(client, "boom")
    await collect(client, "hang")  # error path with a timeout
    await client.classify("boom", ["refund"])
    wrong = LlmClient(LlmSettings(base_url=server[1], model="m", api_key="sk-wrong-key-0000"))
    try:
        events = await collect(wrong, "hello")
        assert [e.kind for e in events] == ["error"] and "HTTP 401" in (events[0].error or "")
    finally:
        await wrong.aclose()
    assert server[0].requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"  # the key was used...
    assert caplog.records, "expected the failures above to be logged"
    for secret in (SECRET_KEY, "sk-wrong-key-0000"):  # ...and never logged
        assert secret not in caplog.text
        assert all(secret not in str(r.__dict__) for r in caplog.records)
    assert SECRET_KEY not in repr(client.settings)


# --------------------------------------------------------------------------- settings


def test_no_llm_configured() -> None:
    assert llm_settings_from_env({}) is None
    assert llm_settings_from_env({"WACALL_LLM_MODEL": "x", "WACALL_LLM_BASE_URL": "  "}) is None


def test_settings_from_env() -> None:
    settings = llm_settings_from_env(
        {
            "WACALL_LLM_BASE_URL": "http://127.0.0.1:11434/v1/",
            "WACALL_LLM_MODEL": "llama3.2:3b",
            "WACALL_LLM_API_KEY": "sk-secret",
            "WACALL_LLM_TIMEOUT_S": "1.2",
        }
    )
    assert settings == LlmSettings(
        base_url="http://127.0.0.1:11434/v1", model="llama3.2:3b", api_key="sk-secret", first_token_timeout_s=1.2
    )
    assert "sk-secret" not in repr(settings)
    defaults = llm_settings_from_env({"WACALL_LLM_BASE_URL": "http://127.0.0.1:1/v1", "WACALL_LLM_MODEL": "m"})
    assert defaults is not None and defaults.api_key == "none" and defaults.first_token_timeout_s == 1.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WACALL_LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "WACALL_LLM_MODEL is required"),
        ({"WACALL_LLM_BASE_URL": "127.0.0.1:1", "WACALL_LLM_MODEL": "m"}, "http(s) URL"),
        ({"WACALL_LLM_BASE_URL": "http://h/v1", "WACALL_LLM_MODEL": "m", "WACALL_LLM_TIMEOUT_S": "soon"}, "seconds"),
        ({"WACALL_LLM_BASE_URL": "http://h/v1", "WACALL_LLM_MODEL": "m", "WACALL_LLM_TIMEOUT_S": "0"}, "seconds"),
    ],
)
def test_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        llm_settings_from_env(env)
