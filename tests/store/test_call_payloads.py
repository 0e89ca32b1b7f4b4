"""The call's context on its record: payload and source stored (v5 column), filtered on, and counted per
campaign."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.store.base import CallRecord, CampaignCount, default_db_path
from agent.store.sqlite import SqliteStore
from tests.conftest import StoreOpener

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def call(n: int, payload: str | None, source: str | None = "button", **fields: object) -> CallRecord:
    return CallRecord(
        id=f"wacid.C{n}",
        direction="USER_INITIATED",
        created_at=T0 + timedelta(minutes=n),
        payload=payload,
        payload_source=source if payload else None,
        **fields,  # type: ignore[arg-type]
    )


def test_payload_round_trips_and_filters(open_store: StoreOpener) -> None:
    with open_store() as store:
        store.save_call(call(1, "summer-sale"))
        store.save_call(call(2, "winter", "link"))
        store.save_call(call(3, None))
        got = store.get_call("wacid.C2")
        assert got is not None and (got.payload, got.payload_source) == ("winter", "link")
        assert [c.id for c in store.find_calls(payload="summer-sale")] == ["wacid.C1"]
        assert store.find_calls(payload="summer") == []  # exact, not a prefix
        assert len(store.find_calls()) == 3


def test_campaign_counts(open_store: StoreOpener) -> None:
    with open_store() as store:
        store.save_call(call(1, "summer", answered_at=T0))
        store.save_call(call(2, "summer", answered_at=T0, handover_queue="sales"))
        store.save_call(call(3, "summer", "link", outcome="unanswered"))
        store.save_call(call(4, "cart-8812", "link", answered_at=T0))
        store.save_call(call(5, None, answered_at=T0))
        store.save_call(call(6, "late", simulated=True))
        assert store.campaign_counts() == [
            CampaignCount("summer", "button", calls=3, answered=2, handed_over=1),
            CampaignCount("cart-8812", "link", calls=1, answered=1, handed_over=0),
            CampaignCount("late", "button", calls=1, answered=0, handed_over=0),
        ]
        assert [c.payload for c in store.campaign_counts(since=T0 + timedelta(minutes=4))] == ["cart-8812", "late"]
        assert [c.payload for c in store.campaign_counts(until=T0 + timedelta(minutes=2))] == ["summer"]
        assert [c.payload for c in store.campaign_counts(simulated=False)] == ["summer", "cart-8812"]


def test_version_4_file_gains_the_context_columns(tmp_path: Path) -> None:
    from agent.store import sqlite as sqlite_module

    path = default_db_path(tmp_path)
    with sqlite3.connect(path) as raw:
        for script in sqlite_module._MIGRATIONS[:4]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 4")
        raw.execute(
            "INSERT INTO calls (id, direction, state, created_at) VALUES ('wacid.OLD', 'USER_INITIATED', 'ended', "
            "'2026-01-01T00:00:00+00:00')"
        )
    with SqliteStore(path) as store:
        old = store.get_call("wacid.OLD")
        assert old is not None and old.payload is None and old.payload_source is None
        store.update_call("wacid.OLD", payload="promo", payload_source="link")
        assert [c.id for c in store.find_calls(payload="promo")] == ["wacid.OLD"]
