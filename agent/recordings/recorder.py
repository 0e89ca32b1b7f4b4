"""One call's recording: taps on both sides of the call, the shared timeline, and the file writer.

The caller's side is taken from the decoded 48 kHz frames (before the 16 kHz downsampling for speech
recognition), the other side from each 20 ms frame the outbound track sends: the bot's voice, and a human
agent's once the call is handed over, since the bridge plays the agent through that same track. So the
right channel is what the caller actually heard, silences and barge-in cuts included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from agent.recordings.timeline import RATE, StereoTimeline
from agent.recordings.writer import OggOpusWriter

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 10.0  # the writer has at most ~10 s of queued audio to encode when the call ends


@dataclass(frozen=True)
class RecordingInfo:
    """What the call record keeps about a finished recording."""

    path: Path
    duration_s: float
    bytes: int
    complete: bool  # False: the writer failed or did not finish in time (the file may still be playable)


class CallRecorder:
    """Records one call; `caller_frame` and `sent_frame` are the taps, `stop` + `finish` end it."""

    def __init__(
        self,
        path: Path,
        *,
        bitrate: int = 32000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._clock = clock
        self._timeline = StereoTimeline(clock())
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._writer = OggOpusWriter(path, bitrate=bitrate, name=f"rec-{path.stem[:12]}")
        self._stopped = False

    def caller_frame(self, frame: av.AudioFrame, t: float) -> None:
        """A decoded frame from the caller (any layout and rate aiortc hands out)."""
        if self._stopped:
            return
        for out in self._resampler.resample(frame):
            self._timeline.push(self._timeline.left, out.to_ndarray().reshape(-1), t)
        self._write_ready(t)

    def sent_frame(self, samples: np.ndarray | None, t: float) -> None:
        """A 20 ms frame the outbound track sent (None: silence)."""
        if self._stopped:
            return
        pcm = np.zeros(960, dtype=np.int16) if samples is None else samples
        self._timeline.push(self._timeline.right, pcm, t)
        self._write_ready(t)

    def _write_ready(self, t: float) -> None:
        # Either side's arrival moves the writing on, so neither side's audio piles up in memory should the
        # other stop coming (a stalled sender, a phone that sends nothing).
        block = self._timeline.ready(t)
        if block is not None:
            self._writer.put(block)

    def stop(self) -> None:
        """No more audio (synchronous, so it runs even when the call's ending is cut short)."""
        if self._stopped:
            return
        self._stopped = True
        block = self._timeline.drain()
        if block is not None:
            self._writer.put(block)
        self._writer.close()

    async def finish(self) -> RecordingInfo:
        """Stop, then wait (off the loop) for the file to be complete."""
        self.stop()
        done = await asyncio.to_thread(self._writer.join, FINISH_TIMEOUT_S)
        if not done:
            log.error("recording %s: not finished after %.0f s", self.path.name, FINISH_TIMEOUT_S)
        size = await asyncio.to_thread(_size, self.path)
        return RecordingInfo(
            path=self.path,
            duration_s=round(self._writer.seconds, 2),
            bytes=size,
            complete=done and self._writer.error is None,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
