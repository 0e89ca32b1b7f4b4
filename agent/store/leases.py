"""The SQL of scale-out: worker leases, call owners, who handles a stored event (see agent/cluster.py).

Every function here runs inside one write job (`store.submit`) or reads on the read connection, so on
PostgreSQL the store's database-wide write lock makes each check-then-write atomic across workers: two
workers can never both take the last call slot, nor both claim a dead worker's call. Portable SQL (these
run on SQLite too, in the store tests); only `notify` is PostgreSQL's own.

Times are the workers' clocks (ISO UTC text, like every time in the store): the hosts must keep their
clocks in sync (NTP), which every host running TLS and Meta's signatures needs anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from agent.store.base import ENDED_BY_RESTART, ENDED_STATE, ENDING_OWED, ENDING_SETTLED, CallEventRecord, CallRecord
from agent.store.sqlite import SqliteStore, StoreTx, _call_from_row, _event_from_row, _ts

__all__ = [
    "alive_owner",
    "claim_orphans",
    "count_leased_live",
    "drop_reservation",
    "drop_worker",
    "events_by_key",
    "heartbeat",
    "live_elsewhere",
    "notify",
    "route_event",
    "terminate_stored",
    "unhandled_for",
]

#: "the worker named in `owner` holds a lease now" (`:now` bound by the caller).
_ALIVE = "EXISTS (SELECT 1 FROM workers w WHERE w.id = {col} AND w.lease_until > :now)"


def heartbeat(tx: StoreTx, worker: str, url: str | None, now: datetime, lease_s: float) -> None:
    """Renew the worker's lease (every call it owns is renewed with it: one row per worker, not per call)."""
    tx.conn.execute(
        "INSERT INTO workers (id, url, started_at, heartbeat_at, lease_until) VALUES (:id, :url, :now, :now, :until) "
        "ON CONFLICT (id) DO UPDATE SET url = excluded.url, heartbeat_at = excluded.heartbeat_at, "
        "lease_until = excluded.lease_until",
        {"id": worker, "url": url, "now": _ts(now), "until": _ts(now + timedelta(seconds=lease_s))},
    )


def drop_worker(tx: StoreTx, worker: str) -> None:
    """A worker stopping cleanly gives its lease up (its calls have ended by then)."""
    tx.conn.execute("DELETE FROM workers WHERE id = ?", (worker,))


def count_leased_live(tx: StoreTx, now: datetime, *, simulated: bool) -> int:
    """Calls holding a slot across the deployment: live, and owned by a worker whose lease holds."""
    row = tx.conn.execute(
        "SELECT COUNT(*) AS n FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL "
        f"AND c.simulated = :sim AND {_ALIVE.format(col='c.owner')}",
        {"ended": ENDED_STATE, "sim": int(simulated), "now": _ts(now)},
    ).fetchone()
    return int(row["n"])


def live_elsewhere(store: SqliteStore, me: str, now: datetime, *, simulated: bool) -> int:
    """Like `count_leased_live`, on the read connection (no lock), without `me`'s calls: a pre-check."""
    rows = store._rows(
        "SELECT COUNT(*) AS n FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL AND c.simulated = :sim "
        f"AND c.owner != :me AND {_ALIVE.format(col='c.owner')}",
        {"ended": ENDED_STATE, "sim": int(simulated), "now": _ts(now), "me": me},
        settle=False,
    )
    return int(rows[0]["n"])


def alive_owner(tx: StoreTx, call_id: str, ref: str | None, now: datetime) -> str | None:
    """The live worker owning the call (by Meta's id, or by our reference for a call we placed), if any."""
    which = "(c.id = :id OR c.biz_opaque_callback_data = :ref)" if ref else "c.id = :id"
    row = tx.conn.execute(
        f"SELECT c.owner FROM calls c WHERE {which} AND c.owner IS NOT NULL AND c.ended_at IS NULL "
        f"AND {_ALIVE.format(col='c.owner')} LIMIT 1",
        {"id": call_id, "now": _ts(now)} | ({"ref": ref} if ref else {}),
    ).fetchone()
    return None if row is None else str(row["owner"])


def route_event(tx: StoreTx, key: str, me: str, owner: str | None, now: datetime) -> str | None:
    """Decide once which worker acts on a stored, unhandled event, and write it down: returns that worker, or
    None when another live worker already has it (a redelivery while it is being handled there).

    The owner of the call if it lives, else `me`; an event whose handler died goes to `me` (its lease is
    gone, so it will never act on it)."""
    row = tx.conn.execute("SELECT handler FROM call_events WHERE dedupe_key = ?", (key,)).fetchone()
    current = None if row is None else row["handler"]
    if current is not None and current != me:
        alive = tx.conn.execute(
            "SELECT 1 FROM workers WHERE id = ? AND lease_until > ?", (current, _ts(now))
        ).fetchone()
        if alive is not None:
            return None
    target = owner or me
    tx.conn.execute("UPDATE call_events SET handler = ? WHERE dedupe_key = ?", (target, key))
    return target


def terminate_stored(tx: StoreTx, call_id: str) -> bool:
    """Meta's terminate for the call is stored (by any worker): it must not be answered."""
    row = tx.conn.execute(
        "SELECT 1 FROM call_events WHERE call_id = ? AND event = 'terminate' LIMIT 1", (call_id,)
    ).fetchone()
    return row is not None


def drop_reservation(tx: StoreTx, ref: str) -> None:
    """The row that held a placed call's slot under our reference, replaced by the call's own record."""
    tx.conn.execute("DELETE FROM calls WHERE id = ? AND biz_opaque_callback_data = ?", (ref, ref))


def notify(tx: StoreTx, channel: str, payload: str) -> None:
    """PostgreSQL's NOTIFY, sent when (and only if) the job's transaction commits."""
    tx.conn.execute("SELECT pg_notify(?, ?)", (channel, payload))


def claim_orphans(
    tx: StoreTx, me: str, now: datetime, *, reason: str, simulated: bool, mine_too: bool
) -> list[CallRecord]:
    """Take over the calls of dead workers, once: mark the live ones ended (`reason`), note the terminate Meta
    is owed for each (`ENDING_OWED`), and make `me` their owner, so no other worker claims them again; an
    ending still owed by a dead worker is taken over too. Their unhandled events come to `me`.

    `mine_too` (start-up): calls owned by this worker id are orphans as well, left by its last process."""
    params = {"now": _ts(now), "me": me, "sim": int(simulated), "ended": ENDED_STATE}
    # Never this worker's own calls while it runs (even if its lease lapsed in a database outage: they are live).
    alive = _ALIVE.format(col="c.owner")
    if mine_too:
        dead = f"(c.owner IS NULL OR c.owner = :me OR NOT {alive})"
    else:
        dead = f"(c.owner IS NULL OR (c.owner != :me AND NOT {alive}))"
    live = [
        _call_from_row(r)
        for r in tx.conn.execute(
            "SELECT * FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL AND c.simulated = :sim "
            f"AND {dead} ORDER BY c.created_at",
            params,
        )
    ]
    owed = [
        _call_from_row(r)
        for r in tx.conn.execute(
            f"SELECT * FROM calls c WHERE c.simulated = :sim AND c.state = :ended AND {dead} "
            "AND c.id IN (SELECT call_id FROM call_events WHERE event = :owed) "
            "AND c.id NOT IN (SELECT call_id FROM call_events WHERE event = :settled) ORDER BY c.created_at",
            params | {"owed": ENDING_OWED, "settled": ENDING_SETTLED},
        )
    ]
    for record in live:
        # Left by this worker id's last process (or a wacall before scale-out): a restart, as on SQLite.
        why = ENDED_BY_RESTART if record.owner in (None, me) else reason
        tx.conn.execute(
            "UPDATE calls SET state = :ended, end_reason = :reason, outcome = COALESCE(outcome, 'interrupted'), "
            "ended_at = :now, owner = :me WHERE id = :id",
            {"ended": ENDED_STATE, "reason": why, "now": _ts(now), "me": me, "id": record.id},
        )
        tx.record_event(record.id, ENDING_OWED, now, {"error": reason}, dedupe_key=f"{record.id}:{ENDING_OWED}")
    for record in owed:
        tx.conn.execute("UPDATE calls SET owner = ? WHERE id = ?", (me, record.id))
    tx.conn.execute(
        "UPDATE call_events SET handler = :me WHERE handled = 0 AND handler IS NOT NULL AND handler != :me "
        "AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = call_events.handler AND w.lease_until > :now)",
        params,
    )
    return live + owed


def unhandled_for(store: SqliteStore, worker: str, limit: int = 1000) -> list[CallEventRecord]:
    """Events this worker must act on and has not (forwarded ones its listener missed, a crash's leftovers).

    A blocking read on the read connection (never the write lock): call it off the event loop."""
    query = "SELECT * FROM call_events WHERE handled = 0 AND handler = ? ORDER BY seq LIMIT ?"
    return [_event_from_row(r) for r in store._rows(query, (worker, limit), settle=False)]


def events_by_key(store: SqliteStore, keys: Iterable[str]) -> list[CallEventRecord]:
    """The stored events a notification names (blocking read, off the loop)."""
    rows = [store._rows("SELECT * FROM call_events WHERE dedupe_key = ?", (k,), settle=False) for k in keys]
    return [_event_from_row(r[0]) for r in rows if r]
