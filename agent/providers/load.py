"""Build each provider from the settings and the model manifest; what `Models.load` and tools call.

Every role's engine is checked before anything loads, so a typo in one role is reported at start-up even
when that role (the LLM, say) would only be used later.
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import agent.providers.builtin  # noqa: F401  (registers the shipped engines)
from agent.providers.registry import END_OF_TURN, LLM, REGISTRIES, STT, TTS, EngineRequest
from agent.speech.models import load_manifest, select_variant

if TYPE_CHECKING:
    from agent.config import Settings

Manifest = dict[str, dict[str, Any]]


def manifest_for(settings: Settings) -> Manifest:
    """The manifest the settings name (`speech.manifest`), else the shipped one; every engine checked."""
    manifest = load_manifest(Path(settings.speech.manifest) if settings.speech.manifest else None)
    for role, registry in REGISTRIES.items():
        registry.check(manifest.get(role, {}).get("engine"))
    return manifest


def stt_entry(settings: Settings, manifest: Manifest) -> dict[str, Any]:
    return select_variant(manifest["stt"], settings.speech.stt_model, role="stt", setting="speech.stt_model")


def tts_entry(settings: Settings, manifest: Manifest) -> dict[str, Any]:
    return select_variant(manifest["tts"], settings.speech.tts_voice, role="tts", setting="speech.tts_voice")


def make_transcriber(settings: Settings, executor: Executor, manifest: Manifest | None = None, **options: Any) -> Any:
    manifest = manifest or manifest_for(settings)
    return STT.create(EngineRequest(stt_entry(settings, manifest), settings, executor, options))


def make_synthesizer(settings: Settings, executor: Executor, manifest: Manifest | None = None, **options: Any) -> Any:
    manifest = manifest or manifest_for(settings)
    return TTS.create(EngineRequest(tts_entry(settings, manifest), settings, executor, options))


def make_llm(settings: Settings, manifest: Manifest | None = None, **options: Any) -> Any:
    """An LLM client when one is configured (`llm_base_url`); flows without LLM nodes never need it."""
    if not settings.llm_base_url:
        return None
    manifest = manifest or manifest_for(settings)
    return LLM.create(EngineRequest(manifest["llm"], settings, None, options))


def make_end_of_turn(settings: Settings, executor: Executor | None, manifest: Manifest | None = None) -> Any:
    """The second opinion before an early end of turn, unless `vad.silero_second_opinion` is off."""
    if not settings.vad.silero_second_opinion or executor is None:
        return None
    manifest = manifest or manifest_for(settings)
    return END_OF_TURN.create(EngineRequest(manifest["end_of_turn"], settings, executor))
