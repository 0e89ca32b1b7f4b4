"""Settings sources (pydantic-settings): the `WACALL_` scheme next to every older name, secrets as SecretStr
that only the environment may set, and errors that say where a bad value came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.config import SECRET_ENV, ConfigError, Settings, load_settings
from agent.config_sources import LEGACY_ENV, env_name


def test_every_field_has_a_wacall_name_and_sections_use_double_underscores() -> None:
    settings = load_settings(
        env={
            "WACALL_WHATSAPP_TOKEN": "tok",
            "WACALL_PHONE_NUMBER_ID": "123",
            "WACALL_SPEECH__STT_COMPUTE_TYPE": "float32",
            "WACALL_VAD__PAUSE_MS": "120",
            "WACALL_TURNS__UNCLEAR_HOLD_MS": "900",
        }
    )
    assert settings.whatsapp_token.get_secret_value() == "tok"
    assert settings.phone_number_id == "123"
    assert settings.speech.stt_compute_type == "float32"
    assert settings.vad.pause_ms == 120
    assert settings.turns.unclear_hold_ms == 900


@pytest.mark.parametrize(("name", "path"), sorted(LEGACY_ENV.items()))
def test_every_legacy_name_still_sets_its_setting(name: str, path: str) -> None:
    value = {"recordings.enabled": "true", "max_concurrent_calls": "5", "recordings.retention_days": "9.0"}.get(
        path, "/x/value"
    )
    settings = load_settings(env={name: value})
    section, _, key = path.rpartition(".")
    got = getattr(getattr(settings, section) if section else settings, key)
    got = got.get_secret_value() if isinstance(got, SecretStr) else got
    assert str(got).lower() == value


def test_the_wacall_name_wins_over_the_legacy_one() -> None:
    settings = load_settings(env={"WHATSAPP_TOKEN": "old", "WACALL_WHATSAPP_TOKEN": "new"})
    assert settings.whatsapp_token.get_secret_value() == "new"


def test_unrelated_wacall_variables_are_not_settings() -> None:
    """WACALL_CONFIG names the file; other WACALL_* variables (tools, CI) must not break start-up."""
    assert load_settings(env={"WACALL_SOMETHING_ELSE": "1"}) == load_settings(env={})


@pytest.mark.parametrize("field", sorted(SECRET_ENV))
def test_every_secret_is_a_secretstr_kept_out_of_repr_and_files(tmp_path: Path, field: str) -> None:
    assert isinstance(getattr(Settings(), field), SecretStr)
    value = "postgresql://u:hunter2@db/w" if field == "database_url" else "hunter2"
    settings = load_settings(env={SECRET_ENV[field]: value})
    assert getattr(settings, field).get_secret_value() == value
    assert "hunter2" not in repr(settings) + str(settings.model_dump())
    path = tmp_path / "wacall.yaml"
    path.write_text(f"{field}: hunter2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=SECRET_ENV[field]) as info:
        load_settings(path, env={})
    assert "hunter2" not in str(info.value)


def test_an_invalid_key_of_a_section_names_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "wacall.yaml"
    path.write_text("vad:\n  aggressiveness: 2\n  onset_frames: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"WACALL_VAD__AGGRESSIVENESS": "9"})
    message = str(info.value)
    assert "vad.aggressiveness (from WACALL_VAD__AGGRESSIVENESS)" in message
    assert f"vad.onset_frames (from config file {path})" in message


def test_a_section_given_as_json_in_the_environment() -> None:
    settings = load_settings(
        env={"WACALL_BUSINESS_HOURS": '{"timezone": "UTC", "weekly": {"monday": ["09:00-17:00"]}}'}
    )
    assert settings.business_hours is not None and settings.business_hours["timezone"] == "UTC"
    with pytest.raises(ConfigError, match="from WACALL_BUSINESS_HOURS"):
        load_settings(env={"WACALL_BUSINESS_HOURS": '{"timezone": "UTC"}'})


def test_env_name() -> None:
    assert env_name("speech.stt_device") == "WACALL_SPEECH__STT_DEVICE"


def test_settings_built_directly_never_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `load_settings` layers the sources (and knows their origins); `Settings(...)` is its arguments."""
    monkeypatch.setenv("WACALL_PORT", "9999")
    monkeypatch.setenv("WHATSAPP_TOKEN", "from-env")
    assert Settings().port == 8080 and Settings().whatsapp_token.get_secret_value() == ""
    assert load_settings().port == 9999  # the process environment, when none is passed
