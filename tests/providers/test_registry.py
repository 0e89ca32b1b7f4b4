"""Providers are chosen by the manifest's `engine:`; an unknown one stops start-up with the known names."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_settings
from agent.providers import load
from agent.providers.registry import STT, TTS, EngineRegistry, EngineRequest, UnknownEngineError


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class EchoTranscriber:
    def __init__(self, entry: Any) -> None:
        self.entry = entry

    async def transcribe(self, audio16k: Any) -> str:
        return "echo"


@pytest.fixture
def echo_engine() -> Iterator[None]:
    @STT.register("echo")
    def echo(request: EngineRequest) -> EchoTranscriber:
        return EchoTranscriber(request.entry)

    yield
    STT._factories.pop("echo")


def test_registering_an_engine_is_one_function_and_the_manifest_picks_it(
    tmp_path: Path, executor: ThreadPoolExecutor, echo_engine: None
) -> None:
    path = manifest(tmp_path, "stt:\n  engine: echo\n  language: de\n")
    settings = load_settings(env={"WACALL_SPEECH__MANIFEST": str(path)})
    transcriber = load.make_transcriber(settings, executor)
    assert isinstance(transcriber, EchoTranscriber)
    assert transcriber.entry["language"] == "de"  # the manifest's language reaches the engine


@pytest.mark.parametrize("role", ["stt", "tts", "llm", "end_of_turn"])
def test_an_unknown_engine_in_any_role_is_a_startup_error_listing_the_known_ones(tmp_path: Path, role: str) -> None:
    path = manifest(tmp_path, f"{role}:\n  engine: whisper-cpp\n")
    settings = load_settings(env={"WACALL_SPEECH__MANIFEST": str(path)})
    with pytest.raises(UnknownEngineError) as info:
        load.manifest_for(settings)
    message = str(info.value)
    assert f"unknown {role} engine 'whisper-cpp'" in message
    known = {"stt": "faster-whisper", "tts": "piper", "llm": "openai", "end_of_turn": "silero"}[role]
    assert known in message


def test_models_load_refuses_an_unknown_engine_before_loading_anything(tmp_path: Path) -> None:
    from agent.runtime import Models

    path = manifest(tmp_path, "tts:\n  engine: espeak\n")
    with pytest.raises(UnknownEngineError, match="known: piper"):
        Models.load(load_settings(env={"WACALL_SPEECH__MANIFEST": str(path)}))


def test_the_shipped_engines_are_registered() -> None:
    assert "faster-whisper" in STT.names() and "piper" in TTS.names()
    registry: EngineRegistry[int] = EngineRegistry("demo")
    registry.register("one")(lambda request: 1)
    assert registry.create(EngineRequest({"engine": "one"}, load_settings(env={}))) == 1
    with pytest.raises(UnknownEngineError, match="known: one"):
        registry.check(None)


def test_no_llm_without_a_base_url_and_the_openai_engine_with_one() -> None:
    from agent.dialogue.llm import LlmClient

    assert load.make_llm(load_settings(env={})) is None
    client = load.make_llm(
        load_settings(env={"WACALL_LLM_BASE_URL": "http://127.0.0.1:9/v1", "WACALL_LLM_API_KEY": "k"})
    )
    assert isinstance(client, LlmClient)


def test_the_end_of_turn_check_follows_its_setting(executor: ThreadPoolExecutor) -> None:
    from agent.speech.endpoint_check import SileroEndpointCheck

    assert load.make_end_of_turn(load_settings(env={}, vad={"silero_second_opinion": False}), executor) is None
    assert isinstance(load.make_end_of_turn(load_settings(env={}), executor), SileroEndpointCheck)
