"""How the bot takes turns with a caller: the endpointer's tuning and the conversation's timing, with the one
set of defaults every layer uses.

The settings (`vad:`, `turns:`, `speech:` in the config file) only add bounds and environment names to
these fields; they take their defaults from here and `Settings.conversation()` copies them across by name,
so a default changed here is the default everywhere (tests/test_turn_config.py keeps it that way). No heavy
imports: the settings load this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SILENCE_REPROMPT = "Are you still there?"
SILENCE_GOODBYE = "I can't hear anything, so I will end the call now. Please call us again any time. Goodbye."


@dataclass
class VadConfig:
    """Tuning for :class:`Endpointer`; defaults are those measured to behave on noisy phone audio."""

    aggressiveness: int = 3
    frame_ms: int = 20
    onset_frames: int = 3
    onset_window: int = 5
    end_silence_ms: int = 500
    pre_roll_ms: int = 200
    min_speech_ms: int = 200
    max_utterance_s: float = 20.0
    energy_gate_dbfs: float = -55.0
    # Emit a "pause" event this far into a silence, so STT can start before the turn has surely ended.
    pause_ms: int | None = 100
    # Trailing audio kept after the last voiced frame (soft word endings fall under the gate).
    # None: the pre-roll, or the pause if shorter, so a pause can hand out the same audio as the end.
    post_roll_ms: int | None = None


@dataclass
class ConversationConfig:
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in_min_ms: int = 600  # talking over the bot this long is an interruption, not a backchannel
    speculative_stt: bool = True
    # An LLM that has not produced a first sentence this long after the caller stopped talking is replaced
    # by a spoken fallback: never dead air.
    llm_first_sentence_budget_s: float = 1.5
    # End the turn at the first pause when its transcript is a finished sentence ("…my order." / "…?"),
    # instead of waiting out the whole end-of-turn silence.
    early_end_on_complete_sentence: bool = True
    early_end_min_words: int = 2  # a one-word "No." at a pause is often "No, that's all…": wait it out
    # ... and the answer to a turn ended early starts only once the caller has been silent this long: the
    # decision often comes inside a comma's pause ("Okay, brilliant. [0.3 s] Nope, that's it"), and a caller
    # who goes on within it hears nothing of an answer that would be dropped (0: at once).
    early_end_min_silence_ms: int = 350
    # Partial transcripts while the caller is still talking, every this much speech (None: off; costs CPU).
    partial_stt_every_ms: int | None = None
    # The caller talking again this soon after the bot took the turn is still on the same thought (0: off).
    continuation_window_s: float = 2.0
    # ... unless the answer has already been heard this long: then it is a reaction to the answer.
    continuation_heard_s: float = 1.0
    # End-of-turn silence when the words so far sound unfinished ("…and", "um", digits read out).
    unfinished_hold_ms: int = 1300
    # End-of-turn silence after a bare yes or no ("Yes.", "No,"), which callers often go on from (0: usual).
    yes_no_end_silence_ms: int = 800
    # End-of-turn silence when the flow can make nothing of the words so far (they are more often half a
    # sentence, misheard, than a whole one): a "sorry?" waits this long (0: answered at the usual silence).
    unclear_hold_ms: int = 1000
    # End-of-turn silence for the rest of the call once the caller has shown they pause mid-thought (0: off).
    hesitant_end_silence_ms: int = 1200
    # ... shown by going on after a pause at least this long: a shorter one is a comma's breath that an
    # early end of turn happened to catch, not a caller who thinks mid-sentence.
    hesitant_min_pause_ms: int = 500
    # ... and a caller seen pausing longer than that mid-thought waits their longest pause and a margin, up
    # to this: one hesitant silence does not fit a caller who stops for a second and a half to think.
    hesitant_max_end_silence_ms: int = 2000
    # After the caller talked over an ending line, the call ends once they have been quiet this long.
    closing_quiet_s: float = 3.0
    # A caller silent this long after a question hears a prompt; after as long again, a goodbye (None: off).
    silence_reprompt_s: float | None = 8.0
    silence_reprompt: str = SILENCE_REPROMPT
    silence_goodbye: str = SILENCE_GOODBYE
    max_thought_s: float = 25.0  # fragments are joined up to this much audio (Whisper's window is 30 s)
    # Deadlines on the shared inference pool (settings `speech.*`, same defaults): a transcript not ready this
    # long after the turn was taken, or a line with no audio this long after synthesis started, is given up
    # for a fallback spoken from memory; this many failures of one kind in a row end the call.
    stt_timeout_s: float = 1.8
    tts_first_audio_timeout_s: float = 1.5
    max_speech_failures: int = 3
