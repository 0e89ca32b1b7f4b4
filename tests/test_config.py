"""Tests for `agent.config`: defaults, environment names, the config file, and refusals.

Every call passes `env=` explicitly, so the developer's or CI's real environment cannot leak in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import DEFAULT_FLOW, ConfigError, Settings, load_settings

SECRETS_ENV = {
    "WHATSAPP_TOKEN": "tok-123",
    "WHATSAPP_PHONE_NUMBER_ID": "106540000000002",
    "WHATSAPP_APP_SECRET": "app-secret-456",
    "WHATSAPP_VERIFY_TOKEN": "verify-789",
}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wacall.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- defaults and environment -------------------------------------------------------------------


def test_defaults_without_any_configuration() -> None:
    settings = load_settings(env={})
    assert settings.graph_base_url == "https://graph.facebook.com"
    assert settings.graph_version == "v23.0"
    assert settings.media_hosts is None  # all interfaces
    assert settings.ice_servers == []  # no STUN unless asked for
    assert settings.flow == str(DEFAULT_FLOW)
    assert Path(settings.flow).is_file()
    assert settings.host == "127.0.0.1"  # not exposed unless asked
    assert settings.port == 8080
    assert settings.phone_number_id == settings.whatsapp_token.get_secret_value() == ""
    assert settings.app_secret.get_secret_value() == settings.verify_token.get_secret_value() == ""
    assert settings.vad.aggressiveness == 3
    assert settings.speech.stt_compute_type == "int8"
    assert settings.answer_timeout_s <= 25  # Meta's window is 30-60 s; budget for the low end (spec §7.4)


def test_environment_variable_names() -> None:
    settings = load_settings(
        env={
            **SECRETS_ENV,
            "WACALL_GRAPH_BASE_URL": "http://127.0.0.1:9999/",
            "WACALL_GRAPH_VERSION": "v24.0",
            "WACALL_MEDIA_HOSTS": "203.0.113.7, 2001:db8::7 ,",
            "WACALL_ICE_SERVERS": "stun:127.0.0.1:3478",
            "WACALL_HOST": "0.0.0.0",
            "WACALL_PORT": "9090",
            "WACALL_MAX_CALLS": "3",
            "WACALL_FLOW": "/srv/flows/support.yaml",
            "WACALL_STT_MODEL_DIR": "/models/whisper",
            "WACALL_TTS_MODEL": "/models/voice.onnx",
            "WACALL_TTS_CONFIG": "/models/voice.onnx.json",
        }
    )
    assert settings.whatsapp_token.get_secret_value() == "tok-123"
    assert settings.phone_number_id == "106540000000002"
    assert settings.app_secret.get_secret_value() == "app-secret-456"
    assert settings.verify_token.get_secret_value() == "verify-789"
    assert settings.graph_base_url == "http://127.0.0.1:9999"  # trailing slash dropped
    assert settings.graph_version == "v24.0"
    assert settings.media_hosts == ["203.0.113.7", "2001:db8::7"]
    assert settings.ice_servers == ["stun:127.0.0.1:3478"]
    assert settings.host == "0.0.0.0"
    assert settings.port == 9090
    assert settings.max_concurrent_calls == 3
    assert settings.flow == "/srv/flows/support.yaml"
    assert settings.speech.stt_model_dir == "/models/whisper"
    assert settings.speech.tts_model == "/models/voice.onnx"
    assert settings.speech.tts_config == "/models/voice.onnx.json"


def test_empty_environment_values_are_ignored() -> None:
    """`export WACALL_PORT=` in a shell script must not turn into an invalid port."""
    settings = load_settings(env={"WACALL_PORT": "", "WACALL_MEDIA_HOSTS": "", "WHATSAPP_TOKEN": ""})
    assert settings.port == 8080
    assert settings.media_hosts is None
    assert settings.whatsapp_token.get_secret_value() == ""


def test_secrets_do_not_appear_in_repr() -> None:
    """Settings get logged when debugging; the token and secrets must not be in that line."""
    settings = load_settings(env=SECRETS_ENV)
    text = repr(settings) + str(settings)
    for secret in ("tok-123", "app-secret-456", "verify-789"):
        assert secret not in text
    assert "106540000000002" in text


# ---- config file --------------------------------------------------------------------------------


def test_config_file_values_and_env_wins(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
phone_number_id: "111"
port: 7000
graph_version: v22.0
media_hosts: [198.51.100.4]
vad:
  end_silence_ms: 700
speech:
  stt_compute_type: float32
  stt_model_dir: /from/file
""",
    )
    settings = load_settings(path, env={"WACALL_PORT": "7001", "WACALL_STT_MODEL_DIR": "/from/env"})
    assert settings.phone_number_id == "111"
    assert settings.graph_version == "v22.0"
    assert settings.media_hosts == ["198.51.100.4"]
    assert settings.vad.end_silence_ms == 700
    assert settings.port == 7001  # env beats the file
    assert settings.speech.stt_model_dir == "/from/env"  # env beats the file inside a section too...
    assert settings.speech.stt_compute_type == "float32"  # ...without dropping the file's other keys


def test_config_file_from_wacall_config_env(tmp_path: Path) -> None:
    path = write_config(tmp_path, "port: 7100\n")
    assert load_settings(env={"WACALL_CONFIG": str(path)}).port == 7100


def test_explicit_overrides_beat_env_and_file_and_none_means_unset(tmp_path: Path) -> None:
    path = write_config(tmp_path, "port: 7000\n")
    settings = load_settings(path, env={"WACALL_PORT": "7001"}, port=7002, flow=None)
    assert settings.port == 7002
    assert settings.flow == str(DEFAULT_FLOW)


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, ""), env={}) == load_settings(env={})


@pytest.mark.parametrize(
    ("key", "env_name"),
    [
        ("whatsapp_token", "WHATSAPP_TOKEN"),
        ("app_secret", "WHATSAPP_APP_SECRET"),
        ("verify_token", "WHATSAPP_VERIFY_TOKEN"),
    ],
)
def test_secrets_in_config_file_are_refused(tmp_path: Path, key: str, env_name: str) -> None:
    """A config file is easy to commit; the error says which variable to use instead."""
    path = write_config(tmp_path, f"port: 7000\n{key}: oops\n")
    with pytest.raises(ConfigError, match=env_name) as info:
        load_settings(path, env={})
    assert key in str(info.value)
    assert "oops" not in str(info.value)  # the leaked value itself is not repeated in logs


def test_several_secrets_in_file_are_all_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, "whatsapp_token: a\napp_secret: b\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "WHATSAPP_TOKEN" in str(info.value) and "WHATSAPP_APP_SECRET" in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_settings(missing, env={})
    assert str(missing) in str(info.value)


def test_config_file_with_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write_config(tmp_path, "port: [7000\n"), env={})


def test_config_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write_config(tmp_path, "- port\n- 7000\n"), env={})


# ---- invalid values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "field", "source"),
    [
        ({"WACALL_PORT": "eighty"}, "port", "WACALL_PORT"),
        ({"WACALL_PORT": "70000"}, "port", "WACALL_PORT"),
        ({"WACALL_GRAPH_VERSION": "23.0"}, "graph_version", "WACALL_GRAPH_VERSION"),
        ({"WACALL_GRAPH_BASE_URL": "graph.facebook.com"}, "graph_base_url", "WACALL_GRAPH_BASE_URL"),
        ({"WACALL_MAX_CALLS": "0"}, "max_concurrent_calls", "WACALL_MAX_CALLS"),
        # aioice silently skips an address it cannot bind: a typo would mean calls that never connect.
        ({"WACALL_MEDIA_HOSTS": "127.0.0.1,999.1.1.1"}, "media_hosts", "WACALL_MEDIA_HOSTS"),
    ],
)
def test_invalid_env_value_names_field_and_variable(env: dict[str, str], field: str, source: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert message.startswith("invalid settings")
    assert field in message
    assert source in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("answer_timeout_s: 40\n", "answer_timeout_s"),  # past Meta's 30 s low end (spec §7.4)
        ("vad:\n  aggressiveness: 5\n", "vad.aggressiveness"),
        ("speech:\n  inference_threads: 0\n", "speech.inference_threads"),
        ("prot: 8080\n", "prot"),  # a typo must not be silently ignored
        ("media_hosts: 127.0.0.1\n", "media_hosts"),  # a string, not a list
        # This used to crash with a bare ValueError from dict("fast") when env also set a speech field.
        ("speech: fast\n", "speech"),
    ],
)
def test_invalid_file_value_names_field_and_file(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"WACALL_STT_MODEL_DIR": "/models/whisper"})
    message = str(info.value)
    assert field in message
    assert str(path) in message


def test_invalid_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(env={}, port=-1)


def test_all_problems_reported_at_once() -> None:
    """Fixing one setting per restart is slow; every invalid setting is listed in one error."""
    with pytest.raises(ConfigError) as info:
        load_settings(env={"WACALL_PORT": "x", "WACALL_GRAPH_VERSION": "latest"})
    assert "port" in str(info.value) and "graph_version" in str(info.value)


# ---- require_production -------------------------------------------------------------------------


def test_require_production_lists_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"WHATSAPP_TOKEN": "tok"}).require_production()
    message = str(info.value)
    for name in ("WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"):
        assert name in message
    assert "WHATSAPP_TOKEN" not in message


def test_require_production_passes_when_configured() -> None:
    load_settings(env=SECRETS_ENV).require_production()


def test_settings_can_be_built_directly_with_defaults() -> None:
    """Tests and the model loader construct Settings() without any environment."""
    assert Settings().graph_version == "v23.0"


def test_recordings_are_off_by_default_and_set_by_file_then_environment(tmp_path: Path) -> None:
    defaults = load_settings(env={})
    assert defaults.recordings.enabled is False
    assert defaults.recordings.directory(defaults.data_dir) == Path("data") / "recordings"
    config = tmp_path / "wacall.yaml"
    config.write_text("recordings: {enabled: true, retention_days: 90, dir: /srv/rec}\n", encoding="utf-8")
    from_file = load_settings(config, env={})
    assert (from_file.recordings.enabled, from_file.recordings.retention_days) == (True, 90)
    assert from_file.recordings.directory("data") == Path("/srv/rec")
    env = {"WACALL_RECORDINGS_ENABLED": "false", "WACALL_RECORDINGS_RETENTION_DAYS": "7"}
    overridden = load_settings(config, env=env)
    assert (overridden.recordings.enabled, overridden.recordings.retention_days) == (False, 7)
    assert overridden.recordings.dir == "/srv/rec"
    with pytest.raises(ConfigError, match="WACALL_RECORDINGS_RETENTION_DAYS"):
        load_settings(env={"WACALL_RECORDINGS_RETENTION_DAYS": "-1"})
