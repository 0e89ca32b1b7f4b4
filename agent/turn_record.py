"""What one call's conversation leaves behind: the transcript and each turn's latency record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TurnMetrics:
    """Timestamps (monotonic seconds) of one exchange, so slow stages can be found per turn."""

    caller_speech_end: float | None = None
    transcript_ready: float | None = None
    reply_text_ready: float | None = None
    first_audio_synthesized: float | None = None
    first_audio_sent: float | None = None
    transcript: str = ""
    reply: str = ""
    interrupted: bool = False
    speculative: bool = False
    continued: bool = False  # the caller went on talking: this answer was dropped and the thought joined

    def as_dict(self) -> dict[str, float | str | bool | None]:
        base = self.caller_speech_end
        out: dict[str, float | str | bool | None] = {
            "transcript": self.transcript,
            "reply": self.reply,
            "interrupted": self.interrupted,
            "speculative_stt": self.speculative,
            "continued": self.continued,
        }
        for name in ("transcript_ready", "reply_text_ready", "first_audio_synthesized", "first_audio_sent"):
            value = getattr(self, name)
            out[f"{name}_ms"] = None if value is None or base is None else round((value - base) * 1000, 1)
        return out


@dataclass
class TranscriptEntry:
    who: str  # "caller" | "bot"
    text: str
    t: float
