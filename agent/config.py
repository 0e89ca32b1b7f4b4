"""Typed settings, read from a YAML config file and environment variables (pydantic-settings).

Environment wins over the file so a deployment can override one value without editing files, and secrets
(every `SecretStr` field: token, app secret, verify token, LLM key, database URL) are read from the
environment only: a config file is easy to commit by accident. Every field `foo` is `WACALL_FOO` in the
environment, and a section's key `speech.stt_device` is `WACALL_SPEECH__STT_DEVICE`; older names
(`WHATSAPP_TOKEN`, `WACALL_STT_MODEL_DIR`, …) are in `agent.config_sources.LEGACY_ENV`. Adding a setting is
adding its field.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from agent import config_sources
from agent.calling_config import CallButtonSettings, CallSettingsConfig
from agent.handover.config import HandoverSettings
from agent.shipped import shipped_dir
from agent.turn_config import ConversationConfig, VadConfig

# The checkout's prompts/demo.yaml, or the copy inside an installed wheel (the container image).
DEFAULT_FLOW = shipped_dir("prompts") / "demo.yaml"


# The one set of turn-handling defaults (agent/turn_config.py); the sections below only bound them.
_VAD = VadConfig()
_TURN = ConversationConfig()


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting and where it came from."""


class VadSettings(BaseModel):
    """When the caller has started and stopped talking (agent/speech/vad.py)."""

    model_config = ConfigDict(extra="forbid")
    aggressiveness: int = Field(_VAD.aggressiveness, ge=0, le=3)
    onset_frames: int = Field(_VAD.onset_frames, ge=1, le=20)
    end_silence_ms: int = Field(_VAD.end_silence_ms, ge=100, le=3000)
    min_speech_ms: int = Field(_VAD.min_speech_ms, ge=20, le=5000)
    pause_ms: int | None = Field(_VAD.pause_ms, ge=60, le=3000)  # start STT this far into a silence (None: off)
    speculative_stt: bool = _TURN.speculative_stt
    early_end_on_complete_sentence: bool = _TURN.early_end_on_complete_sentence
    early_end_min_words: int = Field(_TURN.early_end_min_words, ge=1, le=10)  # shorter answers wait it out
    # An early answer's first sound waits for this much silence (a comma's pause is shorter; 0: at once).
    early_end_min_silence_ms: int = Field(_TURN.early_end_min_silence_ms, ge=0, le=1000)
    silero_second_opinion: bool = True  # confirm an early end of turn with Silero (bundled, offline)
    # Partial transcripts while talking, every this much speech (None: off).
    partial_stt_every_ms: int | None = Field(_TURN.partial_stt_every_ms, ge=300, le=10000)


class TurnSettings(BaseModel):
    """How the bot shares the floor with real callers (see agent/conversation.py)."""

    model_config = ConfigDict(extra="forbid")
    # Speech this soon after the bot took the turn continues the caller's thought (0: off).
    continuation_window_s: float = Field(_TURN.continuation_window_s, ge=0, le=10)
    # ... unless the bot's answer had already been heard this long (then the caller is reacting to it).
    continuation_heard_s: float = Field(_TURN.continuation_heard_s, ge=0, le=10)
    # End-of-turn silence when the words so far sound unfinished ("…and", "um", digits being read out).
    unfinished_hold_ms: int = Field(_TURN.unfinished_hold_ms, ge=100, le=5000)
    # End-of-turn silence after a bare yes or no ("Yes.", "No,"), which callers often go on from
    # ("No, [pause] he's not home"): a little longer than the usual (0: the usual).
    yes_no_end_silence_ms: int = Field(_TURN.yes_no_end_silence_ms, ge=0, le=5000)
    # End-of-turn silence when the flow can make nothing of the words so far (more often half a sentence,
    # misheard, than a whole one): a "sorry?" waits this long (0: at the usual silence).
    unclear_hold_ms: int = Field(_TURN.unclear_hold_ms, ge=0, le=5000)
    # End-of-turn silence, for the rest of the call, once a caller has shown they pause mid-thought (went on
    # after the bot took the turn, or said "um"): a slower answer rather than talking over them (0: off).
    hesitant_end_silence_ms: int = Field(_TURN.hesitant_end_silence_ms, ge=0, le=5000)
    # ... longer for a caller seen pausing longer mid-thought: their longest pause and a margin, up to this.
    hesitant_max_end_silence_ms: int = Field(_TURN.hesitant_max_end_silence_ms, ge=0, le=5000)
    # After the caller talked over an ending line, the call ends once they have been quiet this long.
    closing_quiet_s: float = Field(_TURN.closing_quiet_s, ge=0.5, le=30)
    # Silence after a question before a prompt, then as long again before a goodbye (None: never).
    silence_reprompt_s: float | None = Field(_TURN.silence_reprompt_s, ge=2, le=120)
    silence_reprompt: str = _TURN.silence_reprompt
    silence_goodbye: str = _TURN.silence_goodbye


class SpeechSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest: str | None = None  # the model manifest (default: models/manifest.yaml, shipped in the wheel)
    stt_model: str | None = None  # a name under the manifest's stt.variants (another Whisper size) or a folder
    stt_model_dir: str | None = None
    stt_device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when CTranslate2 finds a CUDA device
    stt_compute_type: str = "int8"
    tts_voice: str | None = None  # a name under the manifest's tts.variants, or a voice .onnx
    tts_speaker: int | str | None = None  # a multi-speaker voice's speaker id or name
    tts_model: str | None = None
    tts_config: str | None = None
    inference_threads: int = Field(2, ge=1, le=64)
    barge_in_min_ms: int = Field(_TURN.barge_in_min_ms, ge=0, le=5000)
    # A transcript not ready this long after the turn was taken (a full or hung pool) is given up: the caller
    # hears "sorry, say that again" from memory instead of dead air.
    # 1.8 s: with the turn's end that is the "fallback within 2 s" promise; Whisper's p95 at 4 calls is ~0.6 s.
    stt_timeout_s: float = Field(_TURN.stt_timeout_s, gt=0, le=60)
    # A line whose first audio is not synthesised this soon is replaced by the recorded fallback line.
    tts_first_audio_timeout_s: float = Field(_TURN.tts_first_audio_timeout_s, gt=0, le=60)
    # This many speech failures (STT or TTS) in a row end the call, with the recorded fallback line.
    max_speech_failures: int = Field(_TURN.max_speech_failures, ge=1, le=20)


class MediaSettings(BaseModel):
    """Watchdogs on a call's media, beyond ICE consent (which a peer can keep alive while sending nothing)."""

    model_config = ConfigDict(extra="forbid")
    # No RTP from the caller this long ends the call (Meta's own limit is 20 s); silence still sends RTP.
    no_rtp_timeout_s: float | None = Field(20.0, ge=1, le=600)
    # The longest a call may last; the bot says `max_call_goodbye` and hangs up (None: no limit).
    max_call_s: float | None = Field(3600.0, ge=10, le=86400)
    max_call_goodbye: str = "We have reached the time limit for this call. Please call us again. Goodbye."


class ShutdownSettings(BaseModel):
    """How `wacall serve` ends on SIGTERM/SIGINT (every deploy: docker stop, systemd, Kubernetes)."""

    # Everything (goodbyes, Meta's terminates, records, the HTTP server) is done within this many seconds;
    # the container's stop timeout must be longer (docker's default is 10 s: use --stop-timeout 15).
    deadline_s: float = Field(10.0, ge=1, le=300)
    # Said to every caller still talking to the bot; empty: hang up without a word.
    goodbye: str = "I'm sorry, we have to end this call now. Please call us again in a minute. Goodbye."
    # A live call's transcript and slots are written this often, so a killed process (SIGKILL, power loss)
    # loses at most this much of what was said.
    checkpoint_s: float = Field(5.0, ge=0.5, le=300)


class RecordingSettings(BaseModel):
    """Call recordings (stereo Ogg/Opus: caller left, bot or agent right). Off unless turned on here or by a
    flow's `recording.enabled`: recording people needs a legal basis and, in many places, telling them."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False  # record every call whose flow does not say otherwise
    dir: str | None = None  # default: <data_dir>/recordings
    # Recordings older than this are deleted with their reference (None: kept until deleted through the API).
    retention_days: float | None = Field(30.0, gt=0, le=36500)
    sweep_every_s: float = Field(3600.0, ge=1, le=86400)  # how often expired recordings are looked for
    bitrate: int = Field(32000, ge=12000, le=256000)  # Opus, both channels together (32 kbit/s: ~14 MB an hour)

    def directory(self, data_dir: str | Path) -> Path:
        return Path(self.dir) if self.dir else Path(data_dir) / "recordings"


class Settings(BaseSettings):
    """Everything `wacall serve` needs; one instance per process."""

    model_config = SettingsConfigDict(extra="forbid")

    phone_number_id: str = ""
    whatsapp_token: SecretStr = SecretStr("")
    app_secret: SecretStr = SecretStr("")
    verify_token: SecretStr = SecretStr("")
    graph_base_url: str = "https://graph.facebook.com"
    graph_version: str = "v23.0"
    media_hosts: list[str] | None = None
    ice_servers: list[str] = Field(default_factory=list)
    flow: str = str(DEFAULT_FLOW)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_concurrent_calls: int = Field(8, ge=1, le=1000)
    answer_timeout_s: float = Field(20.0, gt=0, le=25.0)
    data_dir: str = "data"
    # postgresql://user:password@host/db: calls, events and user state in PostgreSQL instead of
    # <data_dir>/wacall.sqlite3, so several wacall processes can share them (WACALL_DATABASE_URL).
    database_url: SecretStr = SecretStr("")
    business_hours: dict[str, Any] | None = None  # {timezone, weekly: {monday: ["09:00-17:00"]}, holidays: [...]}
    rate_card: str | None = None  # CSV path; default: the rate card shipped with wacall
    sandbox_limits: bool = False  # Meta's looser limits for sandbox/test numbers
    stale_event_s: float = Field(120.0, gt=0)  # a connect older than this is not answered (spec §1.2)
    business_number: str = ""  # display number (digits); decides which countries allow outbound calls
    api_token: SecretStr = SecretStr("")  # bearer token for POST /v1/calls (WACALL_API_TOKEN)
    metrics_token: SecretStr = SecretStr("")  # bearer token for GET /metrics (WACALL_METRICS_TOKEN); none: off
    # "HOST:PORT" of a listener of its own for /metrics (an internal interface); the public app then has none.
    metrics_listen: str | None = None
    otlp_endpoint: str | None = None  # OTLP/HTTP collector for per-call traces (needs the `otel` extra); none: off
    otel_service_name: str = "wacall"
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr = SecretStr("")
    llm_timeout_s: float = Field(1.0, gt=0, le=30)  # first-token deadline: the caller's silence budget
    vad: VadSettings = Field(default_factory=VadSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    turns: TurnSettings = Field(default_factory=TurnSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    # Human handover: queues and agents (see agent/handover/config.py); no queues means no console.
    handover: HandoverSettings = Field(default_factory=HandoverSettings)
    # The number's call settings at Meta (`wacall settings push`) and how call buttons are sent.
    call_settings: CallSettingsConfig = Field(default_factory=CallSettingsConfig)
    call_button: CallButtonSettings = Field(default_factory=CallButtonSettings)
    recordings: RecordingSettings = Field(default_factory=RecordingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings(...)` is just its arguments: the file and environment are layered by `load_settings`,
        which knows where each value came from; tests building Settings() never see the real environment."""
        return (init_settings,)

    @field_validator("business_hours")
    @classmethod
    def _hours_shape(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from agent.whatsapp.business_hours import BusinessHours

            BusinessHours.from_config(v)  # raises ValueError with the problem
        return v

    @field_validator("graph_version")
    @classmethod
    def _version_shape(cls, v: str) -> str:
        if not v.startswith("v") or not v[1:].replace(".", "").isdigit():
            raise ValueError("must look like v23.0")
        return v

    @field_validator("media_hosts")
    @classmethod
    def _ip_addresses(cls, v: list[str] | None) -> list[str] | None:
        # aioice silently skips an address it cannot bind, so a typo here would mean answers with no ICE
        # candidates and calls that never connect; refuse it at startup instead.
        bad = [host for host in v or [] if not _is_ip_address(host)]
        if bad:
            raise ValueError(f"must be IP addresses, got {', '.join(map(repr, bad))}")
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v:
            split_host_port(v)  # raises ValueError with the problem
        return v or None

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318")
        return v or None

    @field_validator("graph_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    def conversation(self) -> ConversationConfig:
        """The turn-taking tuning a call runs with: every field of `ConversationConfig` (and its `VadConfig`)
        that a settings section carries, copied by name, so a new setting needs no copying code."""
        vad = replace(_VAD, **_shared(self.vad, _VAD))
        values = {**_shared(self.speech, _TURN), **_shared(self.vad, _TURN), **_shared(self.turns, _TURN)}
        return replace(_TURN, vad=vad, **values)

    def require_production(self) -> None:
        """`serve` refuses to start half-configured rather than fail on the first call."""
        missing = [env for field, env in REQUIRED.items() if not _plain(getattr(self, field))]
        if missing:
            raise ConfigError("missing required environment variables: " + ", ".join(missing))


def _shared(section: BaseModel, target: Any) -> dict[str, Any]:
    """The section's values for the fields the dataclass `target` has."""
    names = {f.name for f in fields(target)}
    return {name: getattr(section, name) for name in type(section).model_fields if name in names}


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _env_for(field: str) -> str:
    """The name to tell an operator: the documented legacy one where there is one."""
    legacy = [name for name, path in config_sources.LEGACY_ENV.items() if path == field]
    return legacy[0] if legacy else config_sources.env_name(field)


#: Secret field → the environment variable to set it with (the only place a secret may come from).
SECRET_ENV: dict[str, str] = {
    name: _env_for(name) for name, info in Settings.model_fields.items() if info.annotation is SecretStr
}
REQUIRED_SECRETS = {k: SECRET_ENV[k] for k in ("whatsapp_token", "app_secret", "verify_token")}
REQUIRED = {**REQUIRED_SECRETS, "phone_number_id": _env_for("phone_number_id")}


def split_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6) with an IP literal: a name could resolve to a public interface."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must look like 127.0.0.1:9464, got {value!r}")
    if not _is_ip_address(host):
        raise ValueError(f"the host must be an IP address, got {host!r}")
    return host, int(port)


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Merge file < environment < explicit overrides (CLI flags), then validate once."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    # Where each setting came from, so an invalid value can be traced to what to fix.
    origins: config_sources.Origins = {}
    path = config_file or env.get(config_sources.FILE_ENV)
    try:
        if path:
            loaded, origins = config_sources.read_config_file(path, SECRET_ENV)
            data = dict(loaded)
        from_env, env_origins = config_sources.read_environment(Settings, env)
    except config_sources.SourceError as exc:
        raise ConfigError(str(exc)) from exc
    except SettingsError as exc:  # a JSON value that does not parse
        raise ConfigError(f"invalid settings in the environment: {exc}") from exc
    data = config_sources.merge(data, from_env)
    origins.update(env_origins)
    overridden = {k: v for k, v in overrides.items() if v is not None}
    data.update(overridden)
    # An override replaces its whole setting, so what the file or env said inside it no longer applies.
    origins = {path: where for path, where in origins.items() if path[0] not in overridden}
    origins.update({(k,): "an explicit override (CLI flag)" for k in overridden})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(err, origins) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc


def _describe_error(err: Any, origins: config_sources.Origins) -> str:
    where = ".".join(str(p) for p in err["loc"])
    source = config_sources.origin_of(tuple(err["loc"]), origins)
    return f"{where} (from {source}): {err['msg']}" if source else f"{where}: {err['msg']}"
