"""The LLM step of a call: stream a reply from any OpenAI-compatible server as speakable sentences.

A caller on the phone hears silence while we wait, so everything here is shaped by latency and by
never leaving dead air:

* Tokens are cut into sentences (or long clauses) as they stream, so TTS can start on the first
  sentence while the model is still writing the rest.
* The HTTP stream is read by a background task, so a consumer that is busy speaking does not slow the
  model down or eat into its timeouts.
* Every failure (no first token in time, a stalled stream, an HTTP error, a refused connection, tool
  arguments that are not JSON) becomes one ``"error"`` event instead of an exception, so the caller of
  :meth:`LlmClient.stream_reply` only has to speak its fallback.

The LLM is optional: :func:`llm_settings_from_env` returns ``None`` when no server is configured and
flows take their ``offline`` route. The API key is a secret: it comes from the environment only, is
hidden from ``repr`` and is scrubbed from every message this module logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from agent.config import ConfigError
from agent.dialogue.model import LlmConfig

# openai 1.x/2.x are built on httpx, 3.x on httpx2: take the HTTP library's types from openai itself,
# never from a direct import, so the client works whichever one the lock (or a drift run) installs.
_HTTP_ERROR: type[BaseException] = getattr(
    importlib.import_module(openai.Timeout.__module__.split(".")[0]), "HTTPError", OSError
)

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "ConversationHistory",
    "LlmClient",
    "LlmEvent",
    "LlmEventKind",
    "LlmSettings",
    "SentenceCutter",
    "ToolCall",
    "builtin_tools",
    "llm_settings_from_env",
    "tools_for_node",
]

log = logging.getLogger(__name__)

BUILTIN_TOOL_NAMES: tuple[str, ...] = ("end_call", "handover", "set_slot", "goto")

LlmEventKind = Literal["sentence", "tool_call", "done", "error"]


@dataclass(frozen=True)
class LlmSettings:
    """Where the model lives and how long a caller may wait for it.

    ``first_token_timeout_s`` is the dead-air budget: it bounds the wait for the first token *and* any
    later gap between chunks, because a stalled stream is just as silent as a slow start. The default
    leaves room to speak a fallback within 2 s of the caller finishing.
    """

    base_url: str
    model: str
    api_key: str = field(default="none", repr=False)
    first_token_timeout_s: float = 1.5
    total_timeout_s: float = 15.0
    temperature: float = 0.3
    max_tokens: int = 300

    def __post_init__(self) -> None:
        if self.first_token_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("LLM timeouts must be positive")


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call; ``arguments`` is already parsed so the engine never sees raw JSON."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class LlmEvent:
    """One step of a streamed reply.

    ``"sentence"`` carries speakable ``text``; ``"tool_call"`` a :class:`ToolCall`; ``"done"`` ends a
    good reply and carries the whole reply text (for the history); ``"error"`` ends a failed one.
    """

    kind: LlmEventKind
    text: str = ""
    tool_call: ToolCall | None = None
    error: str | None = None


# --------------------------------------------------------------------------- sentences

#: Words that end in a dot without ending the sentence. "no" is deliberately absent: "No. Thanks."
#: is a far more common thing to say on the phone than "No. 5".
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "approx", "dept", "cf", "fig", "mt"}
)
_DOTTED_RE = re.compile(r"(?:[a-z]\.)+[a-z]")  # u.s, a.m, p.m: a dot inside says "abbreviation"
_BOUNDARY_RE = re.compile(r"(?P<end>(?:[.!?]+|…)[\"'”’)\]]*)(?=\s)|(?P<nl>\n)")
_CLAUSE_RE = re.compile(r"[,;:](?=\s)")
_LAST_WORD_RE = re.compile(r"(\S+)$")

#: Past this many pending characters a clause mark is good enough, so long sentences start early.
CLAUSE_AFTER_CHARS = 60
#: ...but a clause shorter than this ("Well,") sounds choppy on its own and saves little time.
MIN_CLAUSE_CHARS = 20
#: A run-on without any punctuation is cut at a space rather than keeping the caller waiting.
MAX_PIECE_CHARS = 200


class SentenceCutter:
    """Turns a token stream into pieces TTS can speak, as early as the text allows.

    A sentence end is only trusted once the character after it is seen (a space or newline), which
    keeps "3.50" and "Dr. Smith" whole at the cost of one token of latency; :meth:`flush` releases the
    last piece when the stream ends.
    """

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        """Add streamed text; returns the pieces it completed (stripped, never empty)."""
        self._buf += text
        pieces: list[str] = []
        while (end := self._boundary()) is not None:
            piece, self._buf = self._buf[:end].strip(), self._buf[end:]
            if piece:
                pieces.append(piece)
        return pieces

    def flush(self) -> str:
        """The unfinished remainder (possibly empty); the cutter is empty afterwards."""
        rest, self._buf = self._buf.strip(), ""
        return rest

    def _boundary(self) -> int | None:
        buf = self._buf
        for m in _BOUNDARY_RE.finditer(buf):
            if m.group("nl") is not None:
                return m.end()
            if self._real_sentence_end(buf, m):
                return m.end()
        pending = len(buf.strip())
        if pending > CLAUSE_AFTER_CHARS:
            lead = len(buf) - len(buf.lstrip())
            clauses = [m.end() for m in _CLAUSE_RE.finditer(buf) if m.end() - lead >= MIN_CLAUSE_CHARS]
            if clauses:
                return clauses[-1]
        if pending > MAX_PIECE_CHARS:
            space = buf.rstrip().rfind(" ", 0, len(buf) - 1)
            if space > 0:
                return space + 1
        return None

    @staticmethod
    def _real_sentence_end(buf: str, m: re.Match[str]) -> bool:
        piece = buf[: m.end()]
        if not any(ch.isalpha() for ch in piece):
            return False  # "1." of a numbered list, or a bare number: not worth a TTS call of its own
        if m.group("end").rstrip("\"'”’)]") != ".":
            return True  # ! ? ... are never abbreviations
        word = _LAST_WORD_RE.search(buf[: m.start()])
        if word is None:
            return True
        token = word.group(1).lstrip("\"'“‘([").lower()
        return not (token in _ABBREVIATIONS or _DOTTED_RE.fullmatch(token) or (len(token) == 1 and token.isalpha()))


# --------------------------------------------------------------------------- history


class ConversationHistory:
    """What one call has said so far, in the shape chat-completion APIs expect.

    Turns (a user message and everything answering it) are trimmed as a unit so a tool result never
    loses the assistant message that asked for it; the system prompt is kept separately because moving
    to another flow node swaps it.
    """

    def __init__(self, system_prompt: str = "", *, max_turns: int = 8) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self._turns: list[list[dict[str, Any]]] = []

    def add_user(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self._turns.append([{"role": "user", "content": text}])
        del self._turns[: -self.max_turns]

    def add_assistant(self, text: str, tool_calls: Sequence[ToolCall] = ()) -> None:
        """Record what the bot said: pass only the text actually spoken if the caller barged in."""
        text = text.strip()
        if not text and not tool_calls:
            return
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in tool_calls
            ]
        self._current_turn().append(message)

    def add_tool_result(self, tool_call_id: str, content: str) -> None:
        self._current_turn().append({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def to_messages(self) -> list[dict[str, Any]]:
        """A fresh list (safe to hand to a client); unanswered tool calls get an "ok" result.

        The engine acts on most tool calls itself (goto, set_slot) without reporting back, but
        OpenAI-compatible servers reject a history where a tool call has no result.
        """
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        pending: list[str] = []
        for message in (m for turn in self._turns for m in turn):
            if message["role"] == "tool":
                if message["tool_call_id"] in pending:
                    pending.remove(message["tool_call_id"])
            else:
                messages.extend(_ok_results(pending))
                pending = [call["id"] for call in message.get("tool_calls", ())]
            messages.append(copy.deepcopy(message))
        messages.extend(_ok_results(pending))
        return messages

    @property
    def turns(self) -> int:
        return len(self._turns)

    def __len__(self) -> int:
        return sum(len(turn) for turn in self._turns)

    def _current_turn(self) -> list[dict[str, Any]]:
        if not self._turns:  # the bot spoke first (the greeting)
            self._turns.append([])
        return self._turns[-1]


def _ok_results(ids: list[str]) -> list[dict[str, Any]]:
    results = [{"role": "tool", "tool_call_id": call_id, "content": "ok"} for call_id in ids]
    ids.clear()
    return results


# --------------------------------------------------------------------------- tools


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def builtin_tools(*, transitions: Sequence[str] = (), slots: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Schemas for the tools every LLM node has; ``goto``/``set_slot`` only when they have targets,
    and with enums, so the model cannot invent a node or slot the flow does not have."""
    tools = [
        _function("end_call", "End the call once the caller has nothing else and you have said goodbye.", {}, []),
        _function(
            "handover",
            "Transfer the caller to a human agent when they ask for one or you cannot help.",
            {
                "queue": {"type": "string", "description": "Team to transfer to, if known."},
                "reason": {"type": "string", "description": "One sentence for the human agent."},
            },
            ["reason"],
        ),
    ]
    if slots:
        tools.append(
            _function(
                "set_slot",
                "Remember a fact the caller gave you.",
                {"name": {"type": "string", "enum": list(slots)}, "value": {"type": "string"}},
                ["name", "value"],
            )
        )
    if transitions:
        tools.append(
            _function(
                "goto",
                "Move the conversation to another step.",
                {"node": {"type": "string", "enum": list(transitions)}},
                ["node"],
            )
        )
    return tools


_PARAM_SCHEMA: dict[str, dict[str, str]] = {
    "yes_no": {"type": "boolean"},
    "number": {"type": "number"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string", "description": "HH:MM"},
    "text": {"type": "string"},
}


def tools_for_node(config: LlmConfig) -> list[dict[str, Any]]:
    """Built-in tools plus the node's declared ones, so the engine needs one call per LLM node."""
    tools = builtin_tools(transitions=config.transitions, slots=config.slots)
    for tool in config.tools:
        properties = {
            name: {**_PARAM_SCHEMA[param.type], **({"description": param.description} if param.description else {})}
            for name, param in tool.parameters.items()
        }
        tools.append(_function(tool.name, tool.description, properties, list(tool.parameters)))
    return tools


# --------------------------------------------------------------------------- client


class _LlmFailure(Exception):
    """Internal: ends a reply with an error event."""


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class LlmClient:
    """One per process (the HTTP connection pool is shared); each call keeps its own history."""

    def __init__(self, settings: LlmSettings, *, http_client: Any | None = None) -> None:
        self.settings = settings
        self._owns_http = http_client is None
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key,
            max_retries=0,  # a retry would double the caller's silence; the flow's fallback is the retry
            # A backstop only: the asyncio deadlines in _produce are what callers can rely on.
            timeout=openai.Timeout(settings.total_timeout_s, connect=settings.first_token_timeout_s),
            http_client=http_client,
        )

    async def stream_reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[LlmEvent]:
        """Sentences as they become speakable, then tool calls, then ``done`` — or one ``error``.

        Never raises for LLM trouble. Closing the iterator early (barge-in) cancels the request.
        """
        queue: asyncio.Queue[LlmEvent] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(messages, tools, queue), name="llm-stream")
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind in ("done", "error"):
                    return
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def classify(self, text: str, intents: list[str]) -> str | None:
        """Which of ``intents`` the caller meant, or ``None`` (also on any error or timeout).

        Bounded by the first-token timeout: a caller is waiting, and the offline matcher is a fine
        answer when the model is slow.
        """
        if not intents or not text.strip():
            return None
        prompt = (
            "Classify the caller's words into exactly one of these intents: "
            + ", ".join(intents)
            + ". Reply with the intent name only, or none if no intent fits."
        )
        try:
            async with asyncio.timeout(self.settings.first_token_timeout_s):
                response = await self._client.chat.completions.create(
                    model=self.settings.model,
                    messages=[{"role": "system", "content": prompt}, {"role": "user", "content": text}],
                    temperature=0,
                    max_tokens=20,
                )
            answer = (response.choices[0].message.content or "") if response.choices else ""
        except (TimeoutError, openai.OpenAIError, _HTTP_ERROR, ValueError) as exc:
            log.warning("LLM classification failed: %s", self._redact(_describe(exc)))
            return None
        return _pick_intent(answer, intents)

    async def aclose(self) -> None:
        """Close the connection pool, unless the caller lent us theirs."""
        if self._owns_http:
            await self._client.close()

    # -- internals

    async def _produce(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, queue: asyncio.Queue[LlmEvent]
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        s = self.settings
        first_deadline = started + min(s.first_token_timeout_s, s.total_timeout_s)
        total_deadline = started + s.total_timeout_s
        cutter = SentenceCutter()
        spoken: list[str] = []
        calls: dict[int, _PartialCall] = {}
        stream: Any = None

        def say(pieces: list[str]) -> None:
            for piece in pieces:
                spoken.append(piece)
                queue.put_nowait(LlmEvent("sentence", text=piece))

        try:
            kwargs: dict[str, Any] = {
                "model": s.model,
                "messages": messages,
                "stream": True,
                "temperature": s.temperature,
                "max_tokens": s.max_tokens,
            }
            if tools:
                kwargs["tools"] = tools
            try:
                async with asyncio.timeout_at(first_deadline):
                    stream = await self._client.chat.completions.create(**kwargs)
            except TimeoutError:
                raise _LlmFailure(f"timeout: no first token within {s.first_token_timeout_s:g} s") from None
            chunks = stream.__aiter__()
            got_token = False
            while True:
                gap_deadline = first_deadline if not got_token else loop.time() + s.first_token_timeout_s
                deadline = min(gap_deadline, total_deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if deadline == total_deadline:
                        raise _LlmFailure(f"timeout: reply not finished within {s.total_timeout_s:g} s") from None
                    if not got_token:
                        raise _LlmFailure(f"timeout: no first token within {s.first_token_timeout_s:g} s") from None
                    raise _LlmFailure(f"timeout: stream stalled for {s.first_token_timeout_s:g} s") from None
                for choice in chunk.choices or ():
                    if choice.index:
                        continue  # n > 1 is never requested; ignore stray alternatives
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        got_token = True
                        say(cutter.feed(delta.content))
                    for tc in delta.tool_calls or ():
                        got_token = True
                        _merge_tool_delta(calls, tc)
            say([rest] if (rest := cutter.flush()) else [])
            finished = [_finish_call(index, calls[index]) for index in sorted(calls)]
            for call in finished:
                queue.put_nowait(LlmEvent("tool_call", tool_call=call))
            queue.put_nowait(LlmEvent("done", text=" ".join(spoken)))
        except asyncio.CancelledError:
            raise
        except _LlmFailure as exc:
            self._fail(queue, str(exc))
        except (openai.OpenAIError, _HTTP_ERROR, OSError, ValueError) as exc:
            self._fail(queue, _describe(exc))
        except Exception as exc:  # a bug or an exotic server must still not leave the caller in silence
            log.exception("unexpected failure while streaming from the LLM")
            self._fail(queue, f"unexpected: {type(exc).__name__}")
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()

    def _fail(self, queue: asyncio.Queue[LlmEvent], reason: str) -> None:
        reason = self._redact(reason)
        log.warning("LLM reply failed (model %s at %s): %s", self.settings.model, self.settings.base_url, reason)
        queue.put_nowait(LlmEvent("error", error=reason))

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if len(key) >= 4 else text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout: request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection failed: {cause or exc}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


def _merge_tool_delta(calls: dict[int, _PartialCall], tc: Any) -> None:
    """Tool calls arrive in pieces keyed by index; some servers omit the index, so fall back to the id."""
    index = tc.index
    if index is None:
        known = [i for i, c in calls.items() if tc.id and c.id == tc.id]
        index = known[0] if known else (len(calls) if tc.id or not calls else max(calls))
    call = calls.setdefault(index, _PartialCall())
    if tc.id:
        call.id = tc.id
    function = tc.function
    if function is None:
        return
    if function.name and function.name != call.name:
        call.name += function.name
    if function.arguments:
        call.arguments.append(function.arguments)


def _finish_call(index: int, call: _PartialCall) -> ToolCall:
    raw = "".join(call.arguments).strip()
    if not call.name:
        raise _LlmFailure(f"tool call #{index} has no name")
    try:
        arguments = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise _LlmFailure(f"tool call {call.name!r} has malformed JSON arguments: {exc}") from None
    if not isinstance(arguments, dict):
        raise _LlmFailure(f"tool call {call.name!r} arguments are not a JSON object")
    return ToolCall(name=call.name, arguments=arguments, id=call.id or f"call_{index}")


def _pick_intent(answer: str, intents: list[str]) -> str | None:
    cleaned = answer.strip().strip("\"'`.!").strip().lower()
    by_name = {intent.lower(): intent for intent in intents}
    if cleaned in by_name:
        return by_name[cleaned]
    words = set(re.findall(r"[\w-]+", cleaned))
    found = [intent for key, intent in by_name.items() if key in words]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- settings


def llm_settings_from_env(env: Mapping[str, str]) -> LlmSettings | None:
    """LLM settings from ``WACALL_LLM_*``; ``None`` when no base URL is set, since flows work without one.

    ``WACALL_LLM_TIMEOUT_S`` sets the first-token (dead-air) timeout: raise it knowingly for a slow
    local model, since callers hear silence for that long before the fallback.
    """
    base_url = env.get("WACALL_LLM_BASE_URL", "").strip()
    if not base_url:
        return None
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"WACALL_LLM_BASE_URL must be an http(s) URL, got {base_url!r}")
    model = env.get("WACALL_LLM_MODEL", "").strip()
    if not model:
        raise ConfigError("WACALL_LLM_MODEL is required when WACALL_LLM_BASE_URL is set")
    api_key = env.get("WACALL_LLM_API_KEY", "").strip() or "none"
    timeouts: dict[str, float] = {}
    raw_timeout = env.get("WACALL_LLM_TIMEOUT_S", "").strip()
    if raw_timeout:
        try:
            first = float(raw_timeout)
        except ValueError:
            first = -1.0
        if not 0 < first <= 120:
            raise ConfigError(f"WACALL_LLM_TIMEOUT_S must be a number of seconds in (0, 120], got {raw_timeout!r}")
        timeouts = {"first_token_timeout_s": first, "total_timeout_s": max(LlmSettings.total_timeout_s, first * 4)}
    return LlmSettings(base_url=base_url.rstrip("/"), model=model, api_key=api_key, **timeouts)
