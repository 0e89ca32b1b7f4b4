"""Pick up edits to a flow file without restarting the server, and never a broken edit.

Prompt authors tweak wording on a running line; a restart would drop live calls. New calls
ask :meth:`FlowReloader.current` for the flow: at most every ``interval_s`` it re-reads the
file, and if the content changed and the new version passes every check, it becomes the
flow for calls that start from then on (calls in progress keep the engine and flow they
started with). A version with errors is logged once, with its ``file:line:column``, and the
last good flow stays in service, so a half-saved file can never take the line down.

The clock is injected so tests can step time without sleeping.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from agent.dialogue.flow import Flow, FlowError, parse_flow

__all__ = ["DEFAULT_INTERVAL_S", "FlowReloader"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0


class FlowReloader:
    """The current good version of one flow file."""

    def __init__(
        self,
        path: str | Path,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the flow now; a broken file at start-up raises :class:`FlowError`, since there
        is no good version to fall back on."""
        self.path = Path(path)
        self.interval_s = interval_s
        self._clock = clock
        data = self._read()
        self._flow = parse_flow(data.decode("utf-8-sig"), source=str(self.path))
        self._good_hash = self._seen_hash = hashlib.sha256(data).hexdigest()
        self._checked_at = clock()
        #: The error that keeps the latest edit out of service, if any (for a status page).
        self.last_error: FlowError | None = None
        self.reloads = 0

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise FlowError(f"cannot read flow file: {exc}", source=str(self.path)) from exc

    def current(self) -> Flow:
        """The flow new calls should use; re-checks the file at most every ``interval_s``."""
        now = self._clock()
        if now - self._checked_at >= self.interval_s:
            self._checked_at = now
            self.check()
        return self._flow

    def check(self) -> bool:
        """Re-read the file now; ``True`` if a new version was taken into service."""
        try:
            data = self._read()
        except FlowError as exc:
            if self.last_error is None or str(self.last_error) != str(exc):
                log.error("%s; keeping the flow already loaded", exc)
            self.last_error = exc
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._seen_hash:
            return False  # unchanged since the last look (good or already reported)
        self._seen_hash = digest
        if digest == self._good_hash:
            self.last_error = None  # an edit was reverted to the version in service
            return False
        try:
            flow = parse_flow(data.decode("utf-8-sig"), source=str(self.path))
        except UnicodeDecodeError as exc:
            self.last_error = FlowError(f"cannot read flow file: {exc}", source=str(self.path))
            log.error("%s; keeping the flow already loaded", self.last_error)
            return False
        except FlowError as exc:
            self.last_error = exc
            log.error("flow file changed but has an error, keeping the previous version: %s", exc)
            return False
        self._flow = flow
        self._good_hash = digest
        self.last_error = None
        self.reloads += 1
        log.info("reloaded flow '%s' from %s for new calls", flow.name, self.path)
        return True
