"""Settings of the issue-14 watchdogs and deadlines: one default each, wherever the value is carried."""

from __future__ import annotations

import pytest

from agent.call import CallServices
from agent.config import ConfigError, MediaSettings, Settings, SpeechSettings, load_settings
from agent.conversation import ConversationConfig


def test_defaults_agree_with_the_settings() -> None:
    """CallServices and ConversationConfig carry the settings into a call; their own defaults (used when the
    runtime does not pass a value) must be the settings' defaults."""
    media, speech = MediaSettings(), SpeechSettings()
    fields = CallServices.__dataclass_fields__
    assert fields["no_rtp_timeout_s"].default == media.no_rtp_timeout_s == 20.0
    assert fields["max_call_s"].default == media.max_call_s == 3600.0
    assert fields["max_call_goodbye"].default == media.max_call_goodbye
    config = ConversationConfig()
    assert config.stt_timeout_s == speech.stt_timeout_s == 1.8
    assert config.tts_first_audio_timeout_s == speech.tts_first_audio_timeout_s == 1.5
    assert config.max_speech_failures == speech.max_speech_failures == 3


def test_watchdogs_are_configurable_and_can_be_turned_off() -> None:
    settings = load_settings(env={}, media={"no_rtp_timeout_s": 5, "max_call_s": None})
    assert settings.media.no_rtp_timeout_s == 5 and settings.media.max_call_s is None
    assert Settings().media.no_rtp_timeout_s == 20.0


@pytest.mark.parametrize(
    "bad",
    [{"media": {"no_rtp_timeout_s": 0}}, {"media": {"max_call_s": 1}}, {"speech": {"stt_timeout_s": 0}}],
)
def test_nonsense_values_are_refused_at_startup(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env={}, **bad)
