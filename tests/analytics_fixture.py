"""Known calls over three days, for the analytics tests and the README's screenshot (docs/).

Every figure the report should show is worked out by hand in the comments, so a test can compare exact
numbers. 2026-03-01 to 2026-03-03, UTC; the 3rd has no calls (the charts must still show it).

    call  day  dir  answered  how it ended                        country  cost    v2v ms
    A     1    in   yes       bot_ended, no handover (contained)  ES       0       400, 600 (+1 turn unanswered)
    B     1    in   yes       handed over, agent_hung_up          GB       0       500
    C     1    in   no        after_hours                         ES       0
    D     1    out  yes       bot_ended (contained)               GB       0.0400  300, 700, 900
    E     2    in   yes       handed over, abandoned in queue     BR       0       800
    F     2    out  no        unanswered                          ES       0
    G     2    out  yes       caller hung up before the end       ES       0.0300
    plus one call on 2026-02-28, one on 2026-03-04 (outside) and one simulated on the 1st: never counted.

    inbound pickup 3/4 = 0.75; outbound pickup 2/3; answered 5 (A B D E G)
    containment 2/5 = 0.4 (A D); handover 2/5 = 0.4 (B E); queue abandon 1/2 = 0.5 (E)
    average handle time (120 + 300 + 60 + 90 + 30) / 5 = 120 s; average queue wait (30 + 45) / 2 = 37.5 s
    cost: GB 0.0400, ES 0.0300, BR 0; day 1 0.0400, day 2 0.0300, day 3 0
    v2v day 1: 300 400 500 600 700 900 -> p50 (rank 3) 500, p95 (rank 6) 900; day 2: 800, 800
    v2v all: 300 400 500 600 700 800 900 -> p50 (rank 4) 600, p95 (rank 7) 900
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from agent.store.base import CallRecord
from agent.store.sqlite import SqliteStore

__all__ = ["BIZ", "FIRST", "LAST", "seed_analytics"]

BIZ = "15550001111"
FIRST = date(2026, 3, 1)
LAST = date(2026, 3, 3)


def _at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def _call(
    store: SqliteStore,
    call_id: str,
    created: datetime,
    *,
    inbound: bool,
    user: str,
    answered: bool,
    duration_s: float | None = None,
    turns: tuple[float | None, ...] = (),
    **fields: Any,
) -> None:
    record = CallRecord(
        id=call_id,
        direction="USER_INITIATED" if inbound else "BUSINESS_INITIATED",
        from_number=user if inbound else BIZ,
        to_number=BIZ if inbound else user,
        state="ended",
        created_at=created,
        answered_at=created.replace(second=2) if answered else None,
        duration_s=duration_s,
        **fields,
    )
    if answered:
        record.outcome = record.outcome or "answered"
    store.save_call(record)
    for n, v2v in enumerate(turns, 1):
        payload = {"transcript": "hi", "reply": "hello", "first_audio_sent_ms": v2v, "interrupted": False}
        store.record_event(call_id, "turn", created, payload, dedupe_key=f"{call_id}:turn:{n}")


def seed_analytics(store: SqliteStore) -> None:
    es, gb, br = "34600111222", "447700900123", "5511987654321"
    _call(
        store,
        "A",
        _at(1, 9),
        inbound=True,
        user=es,
        answered=True,
        duration_s=120,
        end_reason="bot_ended",
        cost=Decimal(0),
        turns=(400, 600, None),
    )
    _call(
        store,
        "B",
        _at(1, 10),
        inbound=True,
        user=gb,
        answered=True,
        duration_s=300,
        end_reason="agent_hung_up",
        cost=Decimal(0),
        turns=(500,),
        handled_by="ana",
        handover_queue="support",
        queue_wait_s=30,
        talk_s=200,
        handover_outcome="agent_hung_up",
    )
    _call(
        store,
        "C",
        _at(1, 22),
        inbound=True,
        user="34600111333",
        answered=False,
        outcome="after_hours",
        end_reason="after_hours",
    )
    _call(
        store,
        "D",
        _at(1, 23, 59, 59),
        inbound=False,
        user="447700900456",
        answered=True,
        duration_s=60,
        end_reason="bot_ended",
        cost=Decimal("0.0400"),
        turns=(300, 700, 900),
    )
    _call(
        store,
        "E",
        _at(2, 8),
        inbound=True,
        user=br,
        answered=True,
        duration_s=90,
        end_reason="remote_terminated",
        cost=Decimal(0),
        turns=(800,),
        handover_queue="support",
        queue_wait_s=45,
        talk_s=0,
        handover_outcome="abandoned",
    )
    _call(
        store,
        "F",
        _at(2, 12),
        inbound=False,
        user="34600111444",
        answered=False,
        outcome="unanswered",
        duration_s=0,
        cost=Decimal(0),
    )
    _call(
        store,
        "G",
        _at(2, 13),
        inbound=False,
        user="34600111555",
        answered=True,
        duration_s=30,
        end_reason="remote_completed",
        cost=Decimal("0.0300"),
    )
    # Never counted: outside the range on either side, and a simulated call inside it.
    _call(
        store,
        "before",
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
        inbound=False,
        user=es,
        answered=True,
        duration_s=600,
        end_reason="bot_ended",
        cost=Decimal("9.0000"),
        turns=(5000,),
    )
    _call(
        store,
        "after",
        datetime(2026, 3, 4, tzinfo=UTC),
        inbound=True,
        user=gb,
        answered=True,
        duration_s=600,
        end_reason="bot_ended",
        cost=Decimal("9.0000"),
        turns=(5000,),
    )
    _call(
        store,
        "sim",
        _at(1, 11),
        inbound=True,
        user=es,
        answered=True,
        duration_s=600,
        end_reason="bot_ended",
        cost=Decimal("9.0000"),
        turns=(5000,),
        simulated=True,
    )
