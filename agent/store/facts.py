"""The few facts of each call that reports add up, read in one query.

Reports over weeks of calls must not load every transcript, slot and webhook payload to count them, nor ask
for each call's turn events one by one: `CALL_FACTS_QUERY` reads only the columns a report needs and gathers
each call's per-turn voice-to-voice latency (the `first_audio_sent_ms` of its "turn" events, see
`Ledger.record_turn`) with a correlated subquery on the `(call_id, seq)` index, in the same pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["CALL_FACTS_QUERY", "CALL_FACTS_QUERY_POSTGRES", "CallFacts", "facts_from_row"]

#: `?` 1 and 2: since (inclusive) and until (exclusive), as the store's fixed-width UTC text; `?` 3: 1 to
#: include simulated calls, 0 to leave them out.
CALL_FACTS_QUERY = """
SELECT c.id, c.direction, c.from_number, c.to_number, c.outcome, c.end_reason, c.created_at, c.answered_at,
       c.duration_s, c.cost, c.currency, c.handover_queue, c.queue_wait_s, c.handover_outcome,
       (SELECT json_group_array(json_extract(e.payload, '$.first_audio_sent_ms'))
          FROM call_events e
         WHERE e.call_id = c.id AND e.event = 'turn'
           AND json_valid(e.payload)
           AND json_type(e.payload, '$.first_audio_sent_ms') IN ('integer', 'real')) AS v2v_ms,
       EXISTS (SELECT 1 FROM call_events g
                WHERE g.call_id = c.id AND g.event = 'flow_result' AND json_valid(g.payload)
                  AND json_extract(g.payload, '$.gave_up') = 1) AS gave_up
  FROM calls c
 WHERE c.created_at >= ? AND c.created_at < ? AND (? = 1 OR c.simulated = 0)
 ORDER BY c.created_at, c.rowid
"""

#: The same query for PostgreSQL, whose JSON functions differ. Payloads are stored as text the store wrote
#: with `json.dumps`, so they parse; `->` on a payload that is not an object gives NULL, as SQLite's
#: `json_type` does, so odd payloads are left out alike.
CALL_FACTS_QUERY_POSTGRES = """
SELECT c.id, c.direction, c.from_number, c.to_number, c.outcome, c.end_reason, c.created_at, c.answered_at,
       c.duration_s, c.cost, c.currency, c.handover_queue, c.queue_wait_s, c.handover_outcome,
       (SELECT json_agg(e.payload::jsonb -> 'first_audio_sent_ms' ORDER BY e.seq)::text
          FROM call_events e
         WHERE e.call_id = c.id AND e.event = 'turn'
           AND jsonb_typeof(e.payload::jsonb -> 'first_audio_sent_ms') = 'number') AS v2v_ms,
       EXISTS (SELECT 1 FROM call_events g
                WHERE g.call_id = c.id AND g.event = 'flow_result'
                  AND (g.payload::jsonb ->> 'gave_up') = 'true') AS gave_up
  FROM calls c
 WHERE c.created_at >= ? AND c.created_at < ? AND (? = 1 OR c.simulated = 0)
 ORDER BY c.created_at, c.rowid
"""


@dataclass(frozen=True)
class CallFacts:
    """One call as a report sees it: who placed it, whether it was answered, how it ended, what it cost."""

    id: str
    direction: str
    user_number: str | None  # the caller of an inbound call, the callee of an outbound one
    outcome: str | None
    end_reason: str | None
    created_at: datetime
    answered_at: datetime | None
    duration_s: float | None
    cost: Decimal | None
    currency: str
    handover_queue: str | None
    queue_wait_s: float | None
    handover_outcome: str | None
    v2v_ms: tuple[float, ...]  # one per turn that got a spoken reply, in the order they were stored
    gave_up: bool = False  # the flow ran out of retries and went to its `no_match` node (a `flow_result` event)


def facts_from_row(row: Mapping[str, Any]) -> CallFacts:
    inbound = row["direction"] == "USER_INITIATED"
    return CallFacts(
        id=row["id"],
        direction=row["direction"],
        user_number=row["from_number"] if inbound else row["to_number"],
        outcome=row["outcome"],
        end_reason=row["end_reason"],
        created_at=datetime.fromisoformat(row["created_at"]),
        answered_at=None if row["answered_at"] is None else datetime.fromisoformat(row["answered_at"]),
        duration_s=row["duration_s"],
        cost=None if row["cost"] is None else Decimal(row["cost"]),
        currency=row["currency"],
        handover_queue=row["handover_queue"],
        queue_wait_s=row["queue_wait_s"],
        handover_outcome=row["handover_outcome"],
        v2v_ms=tuple(float(v) for v in json.loads(row["v2v_ms"] or "[]")),
        gave_up=bool(row["gave_up"]),
    )
