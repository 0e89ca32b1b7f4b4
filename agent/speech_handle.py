"""One reply the bot is giving, as one object: its playback task, whether it may be interrupted, its fate.

Turn-taking used to keep this in flags spread over the conversation (overlapped, interruptible, barged in,
finished replies keyed by ``id()``, which CPython reuses at once). A handle per reply, in the spirit of
LiveKit Agents' SpeechHandle, keeps each reply's state with the reply: a later reply can never be mistaken
for an earlier one, and "has this reply's hang-up already happened?" is a field, not a lookup.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from agent.dialogue.effects import Reply

InterruptReason = Literal["barge_in", "continuation", "replaced", "suspended", "closed"]


class SpeechHandle:
    """What the bot is saying now, and what happens once it has been heard."""

    def __init__(self, reply: Reply, *, answers: Any = None, engine_before: Any = None) -> None:
        self.reply = reply
        #: The reply being carried out now: `reply`, or a follow-up (after a business-system result or an LLM
        #: turn). A hang-up or handover owed after an interruption is the current one's.
        self.current = reply
        self.allow_interruptions = reply.interruptible
        #: The caller's utterance this reply answers (None for the greeting, a resume or a silence prompt).
        self.answers = answers
        #: The dialogue state before the caller's turn, so a turn found to be half a thought can be taken back.
        self.engine_before = engine_before
        self.task: asyncio.Task[None] | None = None
        self.interrupted_by: InterruptReason | None = None
        #: Some of its audio reached the output: dropping it now is a false start the caller may have heard.
        self.audio_started = False
        #: An effect that cannot be taken back has begun (a request sent, a handover, a hang-up).
        self.committed = False
        #: Its handover or hang-up has been carried out (or deliberately skipped): never twice.
        self.effects_done = False
        #: Why the call ends if this reply ends it ("caller_silent" for the goodbye to a silent caller).
        self.end_reason: str | None = None
        #: The recorded fallback line has been queued for this reply (a TTS failure): at most once per reply.
        self.fallback_played = False
        #: Play the recorded fallback before anything else (the reply that ends a call whose speech failed).
        self.fallback_first = False
        self.played_out: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line_ms: list[tuple[str, int]] = []  # each line's audio sent to the output, in order

    def enqueued(self, line: str, ms: int) -> None:
        if self._line_ms and self._line_ms[-1][0] == line:
            self._line_ms[-1] = (line, self._line_ms[-1][1] + ms)
        else:
            self._line_ms.append((line, ms))

    def line_at_cut(self, dropped_ms: int) -> str | None:
        """The line that was playing when the output was flushed with `dropped_ms` still queued: the
        first line the caller did not hear to its end (None if everything queued had been heard)."""
        played = sum(ms for _, ms in self._line_ms) - dropped_ms
        for line, ms in self._line_ms:
            if played < ms:
                return line
            played -= ms
        return None

    @property
    def interrupted(self) -> bool:
        return self.interrupted_by is not None

    @property
    def ends_call(self) -> bool:
        return self.current.end_call

    def done(self) -> bool:
        return self.task is None or self.task.done()

    def interrupt(self, why: InterruptReason) -> bool:
        """Stop this reply now; returns False when it had already finished. The first reason sticks."""
        if self.done():
            return False
        if self.interrupted_by is None:
            self.interrupted_by = why
        assert self.task is not None
        self.task.cancel()
        return True

    def mark_finished(self) -> None:
        if not self.played_out.done():
            self.played_out.set_result(None)

    def __repr__(self) -> str:
        state = self.interrupted_by or ("done" if self.done() else "speaking")
        return f"<SpeechHandle node={self.reply.node} {state}>"
