"""The shipped engines built from settings with the real models: a second voice (and Whisper's settings)
selected from config. Only what is installed is used: the joe voice, re-tuned as a "second voice" (a voice
is an .onnx plus its .onnx.json; this one speaks slower), and tiny.en."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.providers.load import make_synthesizer, make_transcriber
from agent.speech import models
from agent.speech.models import resolve_tts_voice

LINE = "Thanks for calling the support line."


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (models.STT_ENV, models.TTS_MODEL_ENV, models.TTS_CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture
def slow_voice(tmp_path: Path) -> Path:
    """The installed voice under another name, with its own config: half again as slow."""
    model, config = resolve_tts_voice()
    data = json.loads(config.read_text(encoding="utf-8"))
    data.setdefault("inference", {})["length_scale"] = 1.5
    second = tmp_path / "voices" / "en_US-joe_slow-medium.onnx"
    second.parent.mkdir()
    second.symlink_to(model)
    second.with_name(second.name + ".json").write_text(json.dumps(data), encoding="utf-8")
    return second


def seconds(synth: object, text: str) -> float:
    audio = synth.synthesize_sync(text)  # type: ignore[attr-defined]
    return audio.size / synth.sample_rate  # type: ignore[attr-defined]


def test_a_second_voice_selected_by_path_and_by_manifest_name(
    tmp_path: Path, slow_voice: Path, executor: ThreadPoolExecutor
) -> None:
    default = make_synthesizer(load_settings(env={}), executor, deterministic=True, cache_size=0)
    by_path = make_synthesizer(
        load_settings(env={"WACALL_SPEECH__TTS_VOICE": str(slow_voice)}), executor, deterministic=True, cache_size=0
    )
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("tts:\n  variants:\n    slow:\n      local_model: voices/en_US-joe_slow-medium.onnx\n")
    by_name = make_synthesizer(
        load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest), "WACALL_SPEECH__TTS_VOICE": "slow"}),
        executor,
        deterministic=True,
        cache_size=0,
    )
    normal = seconds(default, LINE)
    assert seconds(by_path, LINE) > 1.3 * normal  # the second voice is the one speaking
    assert seconds(by_name, LINE) == pytest.approx(seconds(by_path, LINE), abs=0.05)


def test_a_speaker_on_a_single_speaker_voice_is_refused_at_startup(executor: ThreadPoolExecutor) -> None:
    from agent.providers.speaker import SpeakerError

    with pytest.raises(SpeakerError, match="single speaker"):
        make_synthesizer(load_settings(env={"WACALL_SPEECH__TTS_SPEAKER": "1"}), executor)


def test_a_voice_in_another_language_than_the_manifest_says_is_refused(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("tts:\n  language: de\n")
    with pytest.raises(ValueError, match=r"speaks en_US.*tts\.language is de"):
        make_synthesizer(load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest)}), executor)


def test_whisper_takes_device_compute_type_and_language_from_settings_and_manifest(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    stt = make_transcriber(load_settings(env={"WACALL_SPEECH__STT_DEVICE": "cpu"}), executor)
    assert stt._model.model.device == "cpu" and stt._model.model.compute_type.startswith("int8")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("stt:\n  variants:\n    exact:\n      compute_type: float32\n")
    exact = make_transcriber(
        load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest), "WACALL_SPEECH__STT_MODEL": "exact"}), executor
    )
    assert exact._model.model.compute_type == "float32"
    manifest.write_text("stt:\n  language: de\n")
    with pytest.raises(ValueError, match=r"English-only.*'de'"):
        make_transcriber(load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest)}), executor)
