"""Retention: recordings older than `retention_days` go, file and reference, at start-up and periodically.

Ages are faked through the references' timestamps and the files' mtimes, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from agent.recordings.service import Recordings
from agent.store.base import RecordingRecord
from agent.store.sqlite import SqliteStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def make(tmp_path: Path, store: SqliteStore, name: str, age_days: float) -> Path:
    path = tmp_path / "recordings" / f"{name}.ogg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"OggS")
    started = NOW - timedelta(days=age_days)
    os.utime(path, (started.timestamp(), started.timestamp()))
    store.save_recording(RecordingRecord(call_id=name, path=str(path), started_at=started, duration_s=1.0))
    return path


async def test_old_recordings_and_orphan_files_are_deleted_and_recent_ones_kept(tmp_path: Path) -> None:
    with SqliteStore.in_data_dir(tmp_path) as store:
        old = make(tmp_path, store, "wacid.OLD", 31)
        recent = make(tmp_path, store, "wacid.NEW", 2)
        orphan = tmp_path / "recordings" / "lost.ogg"  # its reference was lost with a killed process
        orphan.write_bytes(b"OggS")
        aged = (NOW - timedelta(days=40)).timestamp()
        os.utime(orphan, (aged, aged))
        recordings = Recordings(
            directory=tmp_path / "recordings", store=store, retention_days=30, sweep_every_s=3600, now=lambda: NOW
        )
        task = asyncio.create_task(recordings.keep_sweeping())  # the runtime's task: sweeps at once on start-up
        for _ in range(200):
            if not old.exists() and not orphan.exists():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert not old.exists() and not orphan.exists()
        assert store.get_recording("wacid.OLD") is None
        assert recent.exists() and store.get_recording("wacid.NEW") is not None


async def test_no_retention_keeps_everything_and_a_live_recording_is_never_swept(tmp_path: Path) -> None:
    with SqliteStore.in_data_dir(tmp_path) as store:
        old = make(tmp_path, store, "wacid.OLD", 400)
        keep_all = Recordings(directory=tmp_path / "recordings", store=store, retention_days=None, now=lambda: NOW)
        assert await keep_all.sweep() == 0 and old.exists()
        recordings = Recordings(directory=tmp_path / "recordings", store=store, retention_days=1, now=lambda: NOW)
        recordings._live["wacid.OLD"] = RecordingRecord("wacid.OLD", str(old), NOW)  # a very long call
        await recordings.sweep()
        assert store.get_recording("wacid.OLD") is not None and old.exists()


def test_a_flow_overrides_the_servers_setting_either_way(tmp_path: Path) -> None:
    def flow(enabled: bool | None) -> object:
        return SimpleNamespace(recording=SimpleNamespace(enabled=enabled))

    off = Recordings(directory=tmp_path, store=None, enabled=False)  # type: ignore[arg-type]
    on = Recordings(directory=tmp_path, store=None, enabled=True)  # type: ignore[arg-type]
    assert (off.wanted(flow(None)), off.wanted(flow(True))) == (False, True)
    assert (on.wanted(flow(None)), on.wanted(flow(False))) == (True, False)
