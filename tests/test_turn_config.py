"""One set of turn-handling defaults: the settings sections, `ConversationConfig` and `VadConfig` agree, and
the runtime gets what the settings say (agent/turn_config.py)."""

from __future__ import annotations

from dataclasses import fields

from agent.config import Settings, SpeechSettings, TurnSettings, VadSettings, load_settings
from agent.turn_config import ConversationConfig, VadConfig

# Settings that are not turn-taking tuning, so they have no dataclass field to land in.
NOT_TURN_TAKING = {"silero_second_opinion"}
SPEECH_TIMING = {"barge_in_min_ms", "stt_timeout_s", "tts_first_audio_timeout_s", "max_speech_failures"}


def test_the_runtime_keeps_the_values_it_used_before_the_defaults_were_joined() -> None:
    """Runtime passed VadSettings' 500 ms / 100 ms; the endpointer's own 400 ms / off were never used live."""
    config = Settings().conversation()
    assert (config.vad.end_silence_ms, config.vad.pause_ms) == (500, 100)
    assert (config.vad.aggressiveness, config.vad.onset_frames, config.vad.min_speech_ms) == (3, 3, 200)
    assert config.barge_in_min_ms == 600 and config.partial_stt_every_ms is None


def test_default_settings_give_the_default_conversation() -> None:
    assert Settings().conversation() == ConversationConfig()


def test_every_turn_setting_has_a_field_with_the_same_default() -> None:
    vad_fields = {f.name for f in fields(VadConfig)}
    conv_fields = {f.name for f in fields(ConversationConfig)}
    vad, conv = VadConfig(), ConversationConfig()
    for section in (VadSettings, TurnSettings):
        for name, info in section.model_fields.items():
            if name in NOT_TURN_TAKING:
                continue
            assert name in vad_fields | conv_fields, f"{section.__name__}.{name} reaches no call"
            expected = getattr(vad, name) if name in vad_fields else getattr(conv, name)
            assert info.default == expected, f"{section.__name__}.{name}"
    for name in SPEECH_TIMING:
        assert SpeechSettings.model_fields[name].default == getattr(conv, name), name


def test_configured_values_reach_the_conversation() -> None:
    settings = load_settings(
        env={"WACALL_VAD__END_SILENCE_MS": "700", "WACALL_VAD__PAUSE_MS": "200"},
        turns={"unclear_hold_ms": 900},
        speech={"stt_timeout_s": 2.5},
    )
    config = settings.conversation()
    assert (config.vad.end_silence_ms, config.vad.pause_ms) == (700, 200)
    assert config.unclear_hold_ms == 900 and config.stt_timeout_s == 2.5
    assert config.vad.frame_ms == VadConfig().frame_ms  # not a setting: the endpointer's own default
