"""The recordings table: a reference per recorded call, completed at the end, found by age for retention."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agent.store.base import RecordingRecord, Store
from tests.conftest import StoreOpener

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_recording_is_saved_completed_found_by_age_and_deleted(open_store: StoreOpener) -> None:
    with open_store() as store:
        assert isinstance(store, Store)
        started = RecordingRecord(call_id="wacid.A", path="/r/a.ogg", started_at=T0)
        store.save_recording(started)
        assert store.get_recording("wacid.A") == started
        done = replace(started, ended_at=T0 + timedelta(minutes=2), duration_s=120.5, bytes=480_000)
        store.save_recording(done)
        store.save_recording(RecordingRecord(call_id="wacid.B", path="/r/b.ogg", started_at=T0 + timedelta(days=2)))
        assert store.get_recording("wacid.A") == done
        assert [r.call_id for r in store.recordings_started_before(T0 + timedelta(days=1))] == ["wacid.A"]
        assert store.delete_recording("wacid.A") == done
        assert store.get_recording("wacid.A") is None
        assert store.delete_recording("wacid.A") is None
        assert store.get_recording("wacid.B") is not None
