"""The runtime's side of recordings: which calls are recorded, where their files go, their references in the
store, deletion, and retention.

Every store access and file operation runs in a worker thread (`asyncio.to_thread`) or on the store's writer
thread: a slow disk must never stall calls' audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.recordings.recorder import CallRecorder, RecordingInfo
from agent.store.base import RecordingRecord, Store

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Recordings:
    """Shared by all calls; one per runtime. `enabled` is the server's default, a flow may override it."""

    def __init__(
        self,
        *,
        directory: Path,
        store: Store,
        enabled: bool = False,
        retention_days: float | None = None,
        sweep_every_s: float = 3600.0,
        bitrate: int = 32000,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.directory = directory
        self.store = store
        self.enabled = enabled
        self.retention_days = retention_days
        self.sweep_every_s = sweep_every_s
        self.bitrate = bitrate
        self._now = now
        # Calls being recorded right now (their files still grow), with the reference written at the start.
        self._live: dict[str, RecordingRecord] = {}

    def wanted(self, flow: Any) -> bool:
        """A flow's own `recording.enabled` wins; otherwise the server's `recordings.enabled`."""
        setting = getattr(getattr(flow, "recording", None), "enabled", None)
        return self.enabled if setting is None else bool(setting)

    # one call ------------------------------------------------------------------------------------
    def open(self, call_id: str, clock: Callable[[], float] = time.monotonic) -> CallRecorder:
        """Start recording a call: the writer thread creates the file; the reference is written at once, so a
        process killed mid-call still leaves the partial file findable (and deleted by retention)."""
        started = self._now()
        path = self.directory / f"{started:%Y%m%dT%H%M%S}-{_UNSAFE.sub('_', call_id)[:100]}.ogg"
        recorder = CallRecorder(path, bitrate=self.bitrate, clock=clock)
        record = RecordingRecord(call_id=call_id, path=str(path), started_at=started)
        self._live[call_id] = record
        self._save(record)
        log.info("call %s: recording to %s", call_id, path.name)
        return recorder

    async def finish(self, call_id: str, recorder: CallRecorder) -> RecordingInfo:
        """The call ended: complete the file, then its reference (length and size)."""
        # Popped first: should this wait be cut short (a shutdown's deadline), the writer thread still completes
        # the file on its own, and the recording must not stay "live" (undeletable) for the process's life.
        started = self._live.pop(call_id)
        info = await recorder.finish()
        self._save(
            RecordingRecord(
                call_id=call_id,
                path=started.path,
                started_at=started.started_at,
                ended_at=self._now(),
                duration_s=info.duration_s,
                bytes=info.bytes,
            )
        )
        log.info("call %s: recording finished, %.1f s, %d bytes", call_id, info.duration_s, info.bytes)
        return info

    def _save(self, record: RecordingRecord) -> None:
        """Queued on the store's writer thread; a store that refuses (closing, failing) costs the reference only,
        never the call."""
        try:
            self.store.submit(lambda tx: tx.save_recording(record)).add_done_callback(_log_failure)
        except Exception as exc:
            log.error("call %s: recording reference not saved: %s", record.call_id, exc)

    def is_live(self, call_id: str) -> bool:
        return call_id in self._live

    # the API -------------------------------------------------------------------------------------
    async def find(self, call_id: str) -> RecordingRecord | None:
        return await asyncio.to_thread(self.store.get_recording, call_id)

    async def delete(self, call_id: str) -> bool:
        """Delete the file and its reference; False when there was none. Refused (ValueError) while recording."""
        if self.is_live(call_id):
            raise ValueError("the call is still being recorded")
        return await asyncio.to_thread(self._delete, call_id)

    def _delete(self, call_id: str) -> bool:
        record = self.store.delete_recording(call_id)
        if record is None:
            return False
        _unlink(Path(record.path))
        return True

    # retention -----------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Delete recordings (files and references) older than the retention period; returns how many."""
        if self.retention_days is None:
            return 0
        cutoff = self._now() - timedelta(days=self.retention_days)
        return await asyncio.to_thread(self._sweep, cutoff)

    def _sweep(self, cutoff: datetime) -> int:
        deleted = 0
        while True:
            batch = [r for r in self.store.recordings_started_before(cutoff, limit=500) if not self.is_live(r.call_id)]
            for record in batch:
                _unlink(Path(record.path))
                self.store.delete_recording(record.call_id)
                deleted += 1
            if len(batch) < 500:
                break
        # Files without a reference (its write lost with a killed process, a reference deleted by hand): a file
        # last written before the cutoff began before it too, so its reference, if any, has just been swept.
        growing = {Path(r.path) for r in list(self._live.values())}
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.glob("*.ogg"):
                if path in growing:
                    continue
                with contextlib.suppress(OSError):
                    if datetime.fromtimestamp(path.stat().st_mtime, UTC) < cutoff:
                        path.unlink()
                        deleted += 1
        if deleted:
            log.info("retention: deleted %d recording(s) older than %g days", deleted, self.retention_days or 0)
        return deleted

    async def keep_sweeping(self) -> None:
        """At start-up and then every `sweep_every_s`: a task the runtime owns and cancels on shutdown."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention: the sweep failed; trying again later")
            await asyncio.sleep(self.sweep_every_s)


def _log_failure(future: Future[Any]) -> None:
    """Runs on the store's writer thread: logging only."""
    if not future.cancelled() and future.exception() is not None:
        log.error("recording reference not saved: %s", future.exception())


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("recording %s could not be deleted: %s", path.name, exc)
