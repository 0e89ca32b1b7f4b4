"""Collects a caller's keypad presses into one entry, by the rules of the question being asked.

Callers type an order number or a PIN one key at a time, and nothing in the signal says the number is
complete: the entry ends at the question's terminator key ("#"), at its most digits, or after a pause between
keys. The dialogue engine has no clock (it stays replayable), so the pause is timed here; the engine only says
what the current question takes (`FlowEngine.keypad`) and takes the finished entry (`FlowEngine.handle_keys`).
At a menu one key is one choice, so an entry there is complete at its first key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.dialogue.state import KeyEntry

__all__ = ["KeyCollector", "KeyEntryDone"]

log = logging.getLogger(__name__)

#: Called with the keys of a finished entry (a trailing terminator kept, so the engine sees how it ended)
#: and the rules it was collected by.
KeyEntryDone = Callable[[str, KeyEntry], None]


class KeyCollector:
    """One call's keypad entry in progress, and the timer that ends it after a pause.

    The rules are fixed at the entry's first key: the question cannot change under a caller mid-number, since
    nothing is answered until the entry is done. The owner must `close()` it (the timer is a task)."""

    def __init__(self, on_done: KeyEntryDone) -> None:
        self._on_done = on_done
        self._keys = ""
        self._entry: KeyEntry | None = None
        self._timer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> str:
        """Keys pressed so far in an unfinished entry."""
        return self._keys

    @property
    def entry(self) -> KeyEntry | None:
        """The rules of the entry in progress (None when no entry is in progress)."""
        return self._entry

    def press(self, digit: str, entry: KeyEntry) -> None:
        """One key. `entry` is what the current question takes; it applies from the first key of an entry."""
        if self._closed:
            return
        if self._entry is None:
            self._entry = entry
        rules = self._entry
        if not self._keys and digit in rules.instant:
            self._keys = digit
            self._finish()
            return
        self._keys += digit
        if digit == rules.terminator or len(self._keys) >= rules.max_digits:
            self._finish()
            return
        self._restart_timer(rules.timeout_s)

    def reset(self) -> None:
        """Drop an unfinished entry (a human took the call: the keys were for the bot's question)."""
        self._cancel_timer()
        self._keys = ""
        self._entry = None

    def close(self) -> asyncio.Task[None] | None:
        """Stop for good; returns the cancelled pause timer, for the owner to await."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._keys = ""
        self._entry = None
        return timer

    def _restart_timer(self, after_s: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().create_task(self._after_pause(after_s), name="keypad-pause")

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _after_pause(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._timer = None
        if self._keys and not self._closed:
            log.debug("no key for %.1f s: the entry is complete", after_s)
            self._finish()

    def _finish(self) -> None:
        self._cancel_timer()
        keys, entry = self._keys, self._entry
        self._keys, self._entry = "", None
        if keys and entry is not None:
            self._on_done(keys, entry)
