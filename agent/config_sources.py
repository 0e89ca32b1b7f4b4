"""Where settings come from: the YAML config file, the environment and explicit overrides, in that order.

Each source yields plain data plus the origin of every value it set, so an invalid value is reported with
what to fix ("port (from WACALL_PORT): …"). The environment is read with pydantic-settings (prefix
`WACALL_`, `__` between a section and its key), over a mapping passed in rather than `os.environ`, so tests
and the simulator never pick up the developer's environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

ENV_PREFIX = "WACALL_"
NESTED = "__"

#: Environment names older than the `WACALL_<FIELD>` / `WACALL_<SECTION>__<KEY>` scheme, or given by Meta's
#: own docs; every one keeps working. Name → dotted setting.
LEGACY_ENV: Mapping[str, str] = {
    "WHATSAPP_TOKEN": "whatsapp_token",
    "WHATSAPP_APP_SECRET": "app_secret",
    "WHATSAPP_VERIFY_TOKEN": "verify_token",
    "WHATSAPP_PHONE_NUMBER_ID": "phone_number_id",
    "WACALL_MAX_CALLS": "max_concurrent_calls",
    "WACALL_STT_MODEL_DIR": "speech.stt_model_dir",
    "WACALL_TTS_MODEL": "speech.tts_model",
    "WACALL_TTS_CONFIG": "speech.tts_config",
    "WACALL_RECORDINGS_ENABLED": "recordings.enabled",
    "WACALL_RECORDINGS_DIR": "recordings.dir",
    "WACALL_RECORDINGS_RETENTION_DAYS": "recordings.retention_days",
}

FILE_ENV = "WACALL_CONFIG"  # the config file's path, when none is passed

Origins = dict[tuple[str, ...], str]


class SourceError(ValueError):
    """A source cannot be read at all (missing file, bad YAML, a secret in a file)."""


def env_name(path: str) -> str:
    """The canonical environment name of a dotted setting: `speech.stt_device` → `WACALL_SPEECH__STT_DEVICE`."""
    return ENV_PREFIX + path.replace(".", NESTED).upper()


def read_config_file(path: str | Path, secrets: Mapping[str, str]) -> tuple[dict[str, Any], Origins]:
    """The file's settings, refusing secrets: a config file is easy to commit by accident."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SourceError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SourceError(f"config file {path} must be a mapping of settings")
    leaked = sorted(set(loaded) & set(secrets))
    if leaked:
        raise SourceError(
            f"config file {path} sets secrets ({', '.join(leaked)}); "
            "put them in the environment instead: " + ", ".join(secrets[k] for k in leaked)
        )
    return loaded, {(str(key),): f"config file {path}" for key in loaded}


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, with comma-separated lists.

    `WACALL_MEDIA_HOSTS=203.0.113.7,2001:db8::7` has always been a plain list; JSON (`["…"]`) works too.
    """

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(settings_cls, env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith(("[", "{")) and _is_str_list(field):
            return [part.strip() for part in value.split(",") if part.strip()]
        return super().decode_complex_value(field_name, field, value)


def _is_str_list(field: FieldInfo) -> bool:
    annotation = field.annotation
    candidates = get_args(annotation) if get_origin(annotation) is not list else (annotation,)
    return any(get_origin(c) is list and get_args(c) == (str,) for c in (annotation, *candidates))


def read_environment(settings_cls: type[BaseSettings], env: Mapping[str, str]) -> tuple[dict[str, Any], Origins]:
    """Settings from `WACALL_*` (and the legacy names); the canonical name wins over a legacy one."""
    canonical: dict[str, str] = {}
    named: dict[str, str] = {}  # canonical name → the name actually set, for messages
    for name, path in LEGACY_ENV.items():
        if env.get(name):
            canonical[env_name(path)] = env[name]
            named[env_name(path)] = name
    for name, value in env.items():
        if name.upper().startswith(ENV_PREFIX) and name not in LEGACY_ENV and value:
            canonical[name.upper()] = value
            named[name.upper()] = name
    data = _MappingEnvSource(settings_cls, canonical)()
    origins: Origins = {}
    for key, value in data.items():
        whole = named.get(env_name(key), env_name(key))
        if not isinstance(value, dict) or env_name(key) in named:  # a plain value, or a section as JSON
            origins[(key,)] = whole
            continue
        # Only the keys set here: the rest of the section may still come from the file.
        for sub in value:
            origins[(key, str(sub))] = named.get(env_name(f"{key}.{sub}"), whole)
    return data, origins


def merge(lower: dict[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """`upper` over `lower`, section by section, so env can change one key of a section the file sets.

    A section the file set to something other than a mapping is kept, so validation reports the file's
    mistake instead of this merge crashing on it.
    """
    merged = dict(lower)
    for key, value in upper.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge(dict(below), value)
        elif isinstance(value, Mapping) and below is not None and key in merged:
            continue
        else:
            merged[key] = value
    return merged


def origin_of(loc: tuple[Any, ...], origins: Origins) -> str | None:
    """The most specific known origin of an error's location."""
    parts = tuple(str(p) for p in loc)
    for size in range(len(parts), 0, -1):
        if parts[:size] in origins:
            return origins[parts[:size]]
    return None
