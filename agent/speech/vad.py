"""Utterance endpointing for the caller's audio: decides when the user starts and stops talking.

webrtcvad alone is not enough: in modes 0-2 it marks even -70 dBFS broadband noise as speech
(stack-notes §4), which would merge a whole call into one utterance. A frame therefore counts as voiced
only if webrtcvad says so AND its level is above an energy gate. Everything here is cheap per frame
(microseconds), so it runs on the event loop, frame by frame, as audio arrives.

Event contract: every "start" is eventually followed by exactly one "end" (unless :meth:`reset` is
called in between), so a caller that paused playback or muted the agent on "start" always gets a chance
to resume. An utterance with fewer than ``min_speech_ms`` voiced audio (a cough, a click) still gets
its "end", but with ``audio=None``; callers should treat that as "nothing was said".
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import webrtcvad

from agent.speech.audio import rms_dbfs
from agent.turn_config import VadConfig

__all__ = ["Endpointer", "VadConfig", "VadEvent"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass
class VadEvent:
    """A speech boundary.

    ``t`` is the stream time (seconds since the first sample fed) of the start of the frame whose
    classification triggered the event. For "end" that is ``end_silence_ms`` after the last voiced
    frame (or the forced cut at ``max_utterance_s``). ``audio`` (on "end" only) is the utterance as int16
    16 kHz, from ``pre_roll_ms`` before the first voiced frame to at most ``post_roll_ms`` after the last
    one; it is None when the utterance was too short to be speech. ``speech_ms`` counts voiced frames.

    "pause" comes ``pause_ms`` into a silence inside an utterance, with the audio so far: if the silence
    becomes the end of the turn, the "end" carries the same audio (same ``speech_ms``), so a transcript
    started at the pause can be used as is. Speech that resumes simply makes the pause moot.
    """

    kind: Literal["start", "pause", "end"]
    t: float
    audio: np.ndarray | None = field(default=None, repr=False)
    speech_ms: int = 0
    forced: bool = False  # "end" came from max_utterance_s, not silence: the user may still be talking


class Endpointer:
    """Streaming start/end-of-utterance detector over 16 kHz int16 mono audio."""

    def __init__(self, config: VadConfig | None = None) -> None:
        cfg = config if config is not None else VadConfig()
        if cfg.frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad supports 10, 20 or 30 ms frames, not {cfg.frame_ms}")
        if not 0 <= cfg.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, not {cfg.aggressiveness}")
        if not 1 <= cfg.onset_frames <= cfg.onset_window:
            raise ValueError("need 1 <= onset_frames <= onset_window")
        self.config = cfg
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._frame_len = SAMPLE_RATE * cfg.frame_ms // 1000
        self._pre_roll_frames = math.ceil(cfg.pre_roll_ms / cfg.frame_ms)
        self._end_frames = max(1, math.ceil(cfg.end_silence_ms / cfg.frame_ms))
        self._min_speech_frames = math.ceil(cfg.min_speech_ms / cfg.frame_ms)
        post_roll_ms = cfg.post_roll_ms
        if post_roll_ms is None:
            post_roll_ms = min(cfg.pre_roll_ms, cfg.pause_ms) if cfg.pause_ms else cfg.pre_roll_ms
        self._post_roll_frames = math.ceil(post_roll_ms / cfg.frame_ms)
        # At least the post-roll, so the audio handed out at a pause equals what "end" would hand out.
        self._pause_frames = (
            max(self._post_roll_frames, math.ceil(cfg.pause_ms / cfg.frame_ms), 1) if cfg.pause_ms else 0
        )
        self._max_frames = max(1, int(cfg.max_utterance_s * 1000 / cfg.frame_ms))
        # The clock counts samples, not frames, so reset() can drop a partial frame without drifting.
        self._samples_seen = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._history: deque[tuple[np.ndarray, bool]] = deque(maxlen=self._pre_roll_frames + cfg.onset_window)
        self._utterance: list[np.ndarray] = []
        self._in_speech = False
        self._voiced_frames = 0
        self._silence_run = 0
        self._voiced_run = 0
        self._frames_since_start = 0
        self._end_frames_now = self._end_frames  # this utterance's end silence (see hold_end)
        self._last_end_frames = self._end_frames
        self._gap_before_run = 0  # silent frames before the current voiced run
        # The silence the caller last went on talking after, inside one utterance, and how many times so far.
        self.resumed_after_ms = 0
        self.resumes = 0

    @property
    def in_speech(self) -> bool:
        """True between a "start" and its "end"."""
        return self._in_speech

    @property
    def voiced_now(self) -> bool:
        """True while inside an utterance and the latest frame was voiced (for barge-in decisions)."""
        return self._in_speech and self._silence_run == 0

    @property
    def onset_pending(self) -> bool:
        """Outside an utterance, a voiced frame among the last few: speech may be starting (the "start"
        event needs `onset_frames` of them, so it comes up to `onset_window` frames later)."""
        if self._in_speech:
            return False
        window = list(self._history)[-self.config.onset_window :]
        return any(voiced for _, voiced in window)

    @property
    def pause_ms(self) -> int:
        """How far into a silence "pause" comes (0 when pauses are off)."""
        return self._pause_frames * self.config.frame_ms

    @property
    def silence_ms(self) -> int:
        """How long the current utterance has been silent since its last voiced frame (0 outside speech)."""
        return self._silence_run * self.config.frame_ms if self._in_speech else 0

    @property
    def voiced_ms(self) -> int:
        """Voiced audio in the current utterance so far (0 outside speech)."""
        return self._voiced_frames * self.config.frame_ms if self._in_speech else 0

    def current_audio(self) -> np.ndarray | None:
        """The utterance so far (for partial transcripts while the caller is still talking)."""
        return np.concatenate(self._utterance) if self._in_speech and self._utterance else None

    def kept_audio_after(self, samples: int) -> np.ndarray | None:
        """What an "end" now would hand out, past its first `samples` (None when nothing new).

        Lets a streaming recogniser hear the caller as they talk: growing only, and never the end-of-turn
        silence, so the audio it was fed equals the utterance's audio when the turn ends.
        """
        if not self._in_speech:
            return None
        kept = len(self._utterance) - max(0, self._silence_run - self._post_roll_frames)
        first = samples // self._frame_len
        return np.concatenate(self._utterance[first:kept]) if first < kept else None

    @property
    def last_end_silence_ms(self) -> int:
        """The silence that ended the last utterance: ``end_silence_ms``, or longer after :meth:`hold_end`."""
        return self._last_end_frames * self.config.frame_ms

    @property
    def holding(self) -> bool:
        """The current utterance waits for a longer silence than usual (see :meth:`hold_end`)."""
        return self._in_speech and self._end_frames_now > self._end_frames

    def hold_end(self, silence_ms: int) -> None:
        """Let the current pause end the utterance only after `silence_ms` of silence (not shorter than the
        usual).

        For words that sound unfinished ("…and", "um", digits being read out): the caller is most likely
        pausing to think, and answering now would talk over the rest of their sentence. Lasts until the
        caller speaks again (a pause later in the sentence is judged on its own words) or the utterance ends.
        """
        if self._in_speech:
            self._end_frames_now = max(self._end_frames, math.ceil(silence_ms / self.config.frame_ms))

    def set_end_silence(self, silence_ms: int) -> None:
        """The usual end-of-turn silence from now on (a caller who pauses mid-thought gets a longer one)."""
        self._end_frames = max(1, math.ceil(silence_ms / self.config.frame_ms))
        self._end_frames_now = max(self._end_frames_now, self._end_frames)

    def end_now(self) -> VadEvent | None:
        """End the current utterance early (the caller's words already make a complete turn).

        Returns the same "end" event the silence would have produced later, or None outside speech.
        """
        if not self._in_speech:
            return None
        return self._end(self.time, forced=False)

    @property
    def time(self) -> float:
        """Stream time of the next sample to be fed (seconds)."""
        return (self._samples_seen + self._pending.size) / SAMPLE_RATE

    def reset(self) -> None:
        """Forget any partial utterance without emitting "end"; the stream clock keeps running.

        Meant for moments where earlier audio must not leak into the next utterance (e.g. the agent's
        own echo at the start of its turn); timestamps stay on the call's timeline.
        """
        self._samples_seen += self._pending.size
        self._pending = np.zeros(0, dtype=np.int16)
        self._history.clear()
        self._end_utterance_state()

    def feed(self, pcm16k: np.ndarray) -> list[VadEvent]:
        """Consume any amount of audio; returns events in stream order (usually empty)."""
        arr = np.asarray(pcm16k)
        if arr.dtype != np.int16:
            raise TypeError(f"Endpointer expects int16 PCM at 16 kHz, got {arr.dtype}")
        arr = arr.reshape(-1)
        buf = np.concatenate([self._pending, arr]) if self._pending.size else arr
        events: list[VadEvent] = []
        n_full = buf.size // self._frame_len
        for i in range(n_full):
            frame = buf[i * self._frame_len : (i + 1) * self._frame_len]
            t = self._samples_seen / SAMPLE_RATE
            self._samples_seen += self._frame_len
            event = self._process_frame(np.array(frame, copy=True), t)
            if event is not None:
                events.append(event)
        self._pending = np.array(buf[n_full * self._frame_len :], copy=True)
        return events

    # -- internals -----------------------------------------------------------------------------------

    def _is_voiced(self, frame: np.ndarray) -> bool:
        if rms_dbfs(frame) < self.config.energy_gate_dbfs:
            return False  # cheaper than the VAD, and the reason modes 0-2 become usable in noise
        return self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)

    def _process_frame(self, frame: np.ndarray, t: float) -> VadEvent | None:
        voiced = self._is_voiced(frame)
        if not self._in_speech:
            self._history.append((frame, voiced))
            window = list(self._history)[-self.config.onset_window :]
            if sum(v for _, v in window) < self.config.onset_frames:
                return None
            return self._start(t)
        return self._continue(frame, voiced, t)

    def _start(self, t: float) -> VadEvent:
        frames = list(self._history)
        window_start = max(0, len(frames) - self.config.onset_window)
        first_voiced = next(i for i in range(window_start, len(frames)) if frames[i][1])
        begin = max(0, first_voiced - self._pre_roll_frames)
        self._utterance = [f for f, _ in frames[begin:]]
        self._voiced_frames = sum(v for _, v in frames[first_voiced:])
        self._silence_run = 0 if frames[-1][1] else 1
        self._voiced_run = 0
        self._frames_since_start = len(frames) - first_voiced
        self._history.clear()
        self._in_speech = True
        logger.debug("speech start at %.2fs", t)
        return VadEvent("start", t)

    def _continue(self, frame: np.ndarray, voiced: bool, t: float) -> VadEvent | None:
        self._utterance.append(frame)
        self._frames_since_start += 1
        if voiced:
            if self._voiced_run == 0:
                self._gap_before_run = self._silence_run
            self._voiced_frames += 1
            self._voiced_run += 1
            self._silence_run = 0
            if self._voiced_run == self.config.onset_frames:
                self._end_frames_now = self._end_frames  # speaking again: a held pause is over
                if self._gap_before_run:
                    self.resumed_after_ms = self._gap_before_run * self.config.frame_ms
                    self.resumes += 1
        else:
            self._voiced_run = 0
            self._silence_run += 1
        if self._silence_run >= self._end_frames_now:
            return self._end(t, forced=False)
        if (
            self._pause_frames
            and self._silence_run == self._pause_frames
            and self._pause_frames < self._end_frames
            and self._voiced_frames >= self._min_speech_frames
        ):
            return VadEvent("pause", t, audio=self._kept_audio(), speech_ms=self._voiced_frames * self.config.frame_ms)
        if self._frames_since_start >= self._max_frames:
            return self._end(t, forced=True)
        return None

    def _end(self, t: float, *, forced: bool) -> VadEvent:
        speech_ms = self._voiced_frames * self.config.frame_ms
        self._last_end_frames = self._end_frames_now
        audio: np.ndarray | None = None
        if self._voiced_frames >= self._min_speech_frames:
            # Keep a little trailing audio (soft word endings fall under the gate) but not the whole
            # end-of-turn silence, which only costs STT time.
            audio = self._kept_audio()
        else:
            logger.debug("dropping %d ms blip ending at %.2fs", speech_ms, t)
        self._end_utterance_state()
        logger.debug("speech end at %.2fs (%d ms voiced, forced=%s)", t, speech_ms, forced)
        return VadEvent("end", t, audio=audio, speech_ms=speech_ms, forced=forced)

    def _kept_audio(self) -> np.ndarray | None:
        drop = max(0, self._silence_run - self._post_roll_frames)
        kept = self._utterance[: len(self._utterance) - drop]
        return np.concatenate(kept) if kept else None

    def _end_utterance_state(self) -> None:
        self._end_frames_now = self._end_frames
        self._utterance = []
        self._in_speech = False
        self._voiced_frames = 0
        self._silence_run = 0
        self._voiced_run = 0
        self._frames_since_start = 0
