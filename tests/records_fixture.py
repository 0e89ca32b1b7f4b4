"""A real SqliteStore holding a few known calls, behind the real app with a stand-in runtime.

Shared by tests/test_call_records.py and tests/test_openapi_schemathesis.py, so the calls API's SQL runs
against a real database in both, and the schemathesis run sees records that exercise every field.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import cast

from starlette.applications import Starlette

from agent.app import create_app
from agent.config import DEFAULT_FLOW, Settings
from agent.recordings.service import Recordings
from agent.runtime import Runtime
from agent.store.base import CallRecord, RecordingRecord
from agent.store.sqlite import SqliteStore
from tests.test_http_hardening import API_TOKEN, APP_SECRET, ApiRuntime

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
BIZ = "15550001111"
SDP = "v=0\r\no=- 1 2 IN IP4 203.0.113.7\r\na=ice-pwd:secret-ice-password\r\n"


def seed(store: SqliteStore) -> None:
    """Three calls on two days: inbound handed over (from a call button), outbound answered with turns, inbound
    missed (from a deep link)."""
    store.save_call(
        CallRecord(
            id="wacid.IN1",
            direction="USER_INITIATED",
            from_number="34600111222",
            to_number=BIZ,
            state="ended",
            outcome="handed_over",
            end_reason="caller_hung_up",
            created_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
            answered_at=datetime(2026, 3, 1, 9, 0, 2, tzinfo=UTC),
            ended_at=datetime(2026, 3, 1, 9, 4, tzinfo=UTC),
            duration_s=238.0,
            cost=Decimal("0.0123"),
            flow="demo",
            slots={"order": "A-17"},
            transcript=[
                {"who": "bot", "text": "Hola", "at_s": 2.1},
                {"who": "caller", "text": "Quiero hablar con alguien", "at_s": 5.75},
            ],
            handled_by="ana",
            handover_queue="support",
            queue_wait_s=12.5,
            talk_s=180.0,
            handover_outcome="agent_hung_up",
            payload="spring-promo",
            payload_source="button",
        )
    )
    store.record_event(
        "wacid.IN1",
        "connect",
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        {"id": "wacid.IN1", "session": {"sdp_type": "offer", "sdp": SDP}},
        received_at=datetime(2026, 3, 1, 9, 0, 0, 300000, tzinfo=UTC),
    )
    store.record_event(
        "wacid.IN1",
        "turn",
        datetime(2026, 3, 1, 9, 4, 1, tzinfo=UTC),
        {
            "transcript": "Quiero hablar con alguien",
            "reply": "Le paso",
            "transcript_ready_ms": 210.0,
            "reply_text_ready_ms": 480.5,
            "first_audio_synthesized_ms": 700.0,
            "first_audio_sent_ms": 720.0,
            "interrupted": False,
            "speculative_stt": True,
            "continued": False,
        },
        dedupe_key="wacid.IN1:turn:1",
    )
    store.save_call(
        CallRecord(
            id="wacid.OUT1",
            direction="BUSINESS_INITIATED",
            from_number=BIZ,
            to_number="447700900123",
            state="ended",
            outcome="completed",
            created_at=datetime(2026, 3, 2, 15, 30, tzinfo=UTC),
            duration_s=61.0,
            cost=Decimal("0.05"),
            flow="booking",
        )
    )
    store.save_call(
        CallRecord(
            id="wacid.IN2",
            direction="USER_INITIATED",
            from_number="447700900123",
            to_number=BIZ,
            state="ended",
            outcome="after_hours",
            created_at=datetime(2026, 3, 2, 23, 59, tzinfo=UTC),
            payload="poster-7",
            payload_source="link",
        )
    )


OGG_BYTES = b"OggS" + bytes(60)  # the API serves the file as it is; its content is not looked at


def seed_recording(store: SqliteStore, folder: Path) -> Path:
    """A finished recording for wacid.IN1."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wacid.IN1.ogg"
    path.write_bytes(OGG_BYTES)
    store.save_recording(
        RecordingRecord(
            call_id="wacid.IN1",
            path=str(path),
            started_at=datetime(2026, 3, 1, 9, 0, 2, tzinfo=UTC),
            ended_at=datetime(2026, 3, 1, 9, 4, tzinfo=UTC),
            duration_s=238.0,
            bytes=len(OGG_BYTES),
        )
    )
    return path


def make_records_app(tmp: Path, store: SqliteStore | None = None) -> tuple[Starlette, SqliteStore]:
    """The app over a seeded store (`store`, else a SQLite one in `tmp`); the caller closes the store."""
    prompts = tmp / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_FLOW, prompts / "demo.yaml")
    settings = Settings(
        app_secret=APP_SECRET, verify_token="verify", api_token=API_TOKEN, flow=str(prompts / "demo.yaml")
    )
    store = store or SqliteStore.in_data_dir(tmp)
    seed(store)
    seed_recording(store, tmp / "recordings")
    runtime = ApiRuntime(settings=settings, store=store)  # type: ignore[arg-type]
    runtime.recordings = Recordings(directory=tmp / "recordings", store=store)  # type: ignore[attr-defined]
    return create_app(cast(Runtime, runtime)), store
