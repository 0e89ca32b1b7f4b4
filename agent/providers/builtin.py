"""The engines wacall ships: faster-whisper, piper, an OpenAI-compatible LLM and Silero's end-of-turn check.

Heavy libraries are imported inside each factory, so registering costs nothing and a deployment that swaps
an engine never loads the one it replaced.
"""

from __future__ import annotations

from typing import Any

from agent.providers.device import resolve_compute_type, resolve_device
from agent.providers.registry import END_OF_TURN, LLM, STT, TTS, EngineRequest
from agent.providers.speaker import resolve_speaker
from agent.speech.models import resolve_stt_model, resolve_tts_voice


@STT.register("faster-whisper")
def faster_whisper(request: EngineRequest) -> Any:
    from agent.speech.stt import WhisperTranscriber

    speech = request.settings.speech
    device = resolve_device(speech.stt_device)
    # A compute type set in the settings beats the manifest's (or its variant's); the settings' default does not.
    chosen = speech.stt_compute_type
    if "stt_compute_type" not in speech.model_fields_set and request.entry.get("compute_type"):
        chosen = str(request.entry["compute_type"])
    compute_type = resolve_compute_type(device, chosen)
    model_dir = resolve_stt_model(speech.stt_model_dir, entry=request.entry)
    assert request.executor is not None, "faster-whisper runs in the inference pool"
    return WhisperTranscriber(
        model_dir,
        executor=request.executor,
        device=device,
        compute_type=compute_type,
        language=str(request.entry.get("language") or "en"),
        beam_size=int(request.entry.get("beam_size") or 1),
        **request.options,
    )


@TTS.register("piper")
def piper(request: EngineRequest) -> Any:
    from agent.speech.tts import PiperSynthesizer

    speech = request.settings.speech
    model, config = resolve_tts_voice(speech.tts_model, speech.tts_config, entry=request.entry)
    _check_voice_language(config, request.entry.get("language"))
    speaker = speech.tts_speaker if speech.tts_speaker is not None else request.entry.get("speaker")
    assert request.executor is not None, "piper runs in the inference pool"
    options: dict[str, Any] = {"cache_size": 256, **request.options}
    return PiperSynthesizer(
        model,
        config,
        executor=request.executor,
        output_rate=int(request.entry.get("output_rate") or 48000),
        speaker_id=resolve_speaker(config, speaker),
        **options,
    )


def _check_voice_language(config_path: Any, language: Any) -> None:
    """A manifest `tts.language` must match the voice's: an English voice reads German text as English."""
    if not language:
        return
    import json
    from pathlib import Path

    voice = json.loads(Path(config_path).read_text(encoding="utf-8")).get("language") or {}
    code = str(voice.get("code") or voice.get("family") or "")
    if code and not code.lower().replace("-", "_").startswith(str(language).lower()):
        raise ValueError(f"voice {Path(config_path).name} speaks {code}, but the manifest's tts.language is {language}")


@LLM.register("openai")
def openai_compatible(request: EngineRequest) -> Any:
    """Any OpenAI-compatible chat-completions server (`llm_base_url`), through the openai client."""
    from agent.dialogue.llm import LlmClient, LlmSettings

    settings = request.settings
    return LlmClient(
        LlmSettings(
            base_url=settings.llm_base_url or "",
            model=settings.llm_model,
            api_key=settings.llm_api_key.get_secret_value() or "none",
            first_token_timeout_s=settings.llm_timeout_s,
        ),
        **request.options,
    )


@END_OF_TURN.register("silero")
def silero(request: EngineRequest) -> Any:
    from agent.speech.endpoint_check import SileroEndpointCheck

    assert request.executor is not None, "the Silero check runs in the inference pool"
    return SileroEndpointCheck(request.executor, **request.options)
