"""Engines by name: the manifest's `engine:` picks the factory that builds a provider.

Adding an engine is one decorated function, in any module imported before start-up:

    @STT.register("my-engine")
    def my_engine(request: EngineRequest) -> Transcriber: ...

A name no factory has is refused when wacall starts, listing the names it knows, rather than at the first
call that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.providers.interfaces import EndpointCheck, LlmStream, Synthesizer, Transcriber


class UnknownEngineError(ValueError):
    """The manifest names an engine no factory is registered for."""


@dataclass(frozen=True)
class EngineRequest:
    """What a factory gets: its manifest entry (after the settings' choice of model or voice), the settings
    and the shared inference pool."""

    entry: Mapping[str, Any]
    settings: Settings
    executor: Executor | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # per-caller extras (tests, tools)


class EngineRegistry[T]:
    """Factories for one role (stt, tts, llm, end_of_turn), keyed by engine name."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._factories: dict[str, Callable[[EngineRequest], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[EngineRequest], T]], Callable[[EngineRequest], T]]:
        def add(factory: Callable[[EngineRequest], T]) -> Callable[[EngineRequest], T]:
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        return sorted(self._factories)

    def check(self, engine: object) -> str:
        """The engine's name, or UnknownEngineError naming the known ones (called for every role at start-up)."""
        if not isinstance(engine, str) or engine not in self._factories:
            raise UnknownEngineError(
                f"unknown {self.role} engine {engine!r} in the model manifest; known: {', '.join(self.names())}"
            )
        return engine

    def create(self, request: EngineRequest) -> T:
        return self._factories[self.check(request.entry.get("engine"))](request)


STT: EngineRegistry[Transcriber] = EngineRegistry("stt")
TTS: EngineRegistry[Synthesizer] = EngineRegistry("tts")
LLM: EngineRegistry[LlmStream] = EngineRegistry("llm")
END_OF_TURN: EngineRegistry[EndpointCheck] = EngineRegistry("end_of_turn")

REGISTRIES: dict[str, EngineRegistry[Any]] = {r.role: r for r in (STT, TTS, LLM, END_OF_TURN)}
