"""The SQL of scale-out: worker leases, call owners, who handles a stored event (see agent/cluster.py).

Every function here runs inside one write job (`store.submit`) or reads on the read connection, so on
PostgreSQL the store's database-wide write lock makes each check-then-write atomic across workers: two
workers can never both take the last call slot, nor both claim a dead worker's call. Portable SQL (these
run on SQLite too, in the store tests); only `notify` is PostgreSQL's own.

Times are the workers' clocks (ISO UTC text, like every time in the store): the hosts must keep their
clocks in sync (NTP), as TLS and the stale-webhook check (`stale_event_s`) need anyway; a skew eats into the
lease.
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
    "holds_lease",
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


def drop_worker(tx: StoreTx, worker: str, now: datetime) -> None:
    """A worker stopping cleanly gives its lease up (its calls have ended by then): expired rather than deleted,
    so the next beat of another worker takes over any ending it still owes Meta, then removes the row."""
    tx.conn.execute("UPDATE workers SET lease_until = ? WHERE id = ?", (_ts(now), worker))


def count_leased_live(tx: StoreTx, now: datetime, *, simulated: bool) -> int:
    """Calls holding a slot across the deployment: live, and owned by a worker whose lease holds."""
    row = tx.conn.execute(
        "SELECT COUNT(*) AS n FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL "
        f"AND c.simulated = :sim AND {_ALIVE.format(col='c.owner')}",
        {"ended": ENDED_STATE, "sim": int(simulated), "now": _ts(now)},
    ).fetchone()
    return int(row["n"])


def user_in_call(tx: StoreTx, user: str, now: datetime, *, but: str) -> bool:
    """A live call with this user (either way round) on a worker whose lease holds, other than `but`."""
    row = tx.conn.execute(
        "SELECT 1 FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL AND c.id != :but "
        f"AND (c.to_number = :user OR c.from_number = :user) AND {_ALIVE.format(col='c.owner')} LIMIT 1",
        {"ended": ENDED_STATE, "now": _ts(now), "user": user, "but": but},
    ).fetchone()
    return row is not None


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
    is owed for each (`ENDING_OWED`), and make `me` their owner; an ending still owed by a dead worker is
    taken over too, and its unhandled events come to `me`. The dead workers' rows go, so no other worker
    claims them again, and a beat finding no expired lease costs one indexed read.

    `mine_too` (start-up): calls owned by this worker id (its last process) or by nobody (a wacall from
    before scale-out) are orphans as well."""
    dead = [
        str(r["id"])
        for r in tx.conn.execute("SELECT id FROM workers WHERE lease_until <= ? AND id != ?", (_ts(now), me))
    ]
    owners = dead + ([me] if mine_too else [])
    if not owners:
        return []
    names = {f"o{n}": owner for n, owner in enumerate(owners)}
    among = f"c.owner IN ({', '.join(':' + k for k in names)})"
    whose = f"({among} OR c.owner IS NULL)" if mine_too else among
    params = {"sim": int(simulated), "ended": ENDED_STATE} | names
    live = [
        _call_from_row(r)
        for r in tx.conn.execute(
            "SELECT * FROM calls c WHERE c.state != :ended AND c.ended_at IS NULL AND c.simulated = :sim "
            f"AND {whose} ORDER BY c.created_at",
            params,
        )
    ]
    owed = [
        _call_from_row(r)
        for r in tx.conn.execute(
            f"SELECT * FROM calls c WHERE c.state = :ended AND c.simulated = :sim AND {whose} "
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
        tx.record_event(record.id, ENDING_OWED, now, {"error": why}, dedupe_key=f"{record.id}:{ENDING_OWED}")
    for record in owed:
        tx.conn.execute("UPDATE calls SET owner = ? WHERE id = ?", (me, record.id))
    if dead:
        marks = ", ".join("?" for _ in dead)
        tx.conn.execute(f"UPDATE call_events SET handler = ? WHERE handled = 0 AND handler IN ({marks})", (me, *dead))
        tx.conn.execute(f"DELETE FROM workers WHERE id IN ({marks})", tuple(dead))
    return live + owed


def holds_lease(tx: StoreTx, me: str) -> bool:
    """Whether this worker's row is still there: gone means another worker took its calls over (this one
    stalled past its lease), and its calls are no longer its own."""
    return tx.conn.execute("SELECT 1 FROM workers WHERE id = ?", (me,)).fetchone() is not None


def unhandled_for(store: SqliteStore, worker: str, limit: int = 1000) -> list[CallEventRecord]:
    """Events this worker must act on and has not (forwarded ones its listener missed, a crash's leftovers).

    A blocking read on the read connection (never the write lock): call it off the event loop."""
    query = "SELECT * FROM call_events WHERE handled = 0 AND handler = ? ORDER BY seq LIMIT ?"
    return [_event_from_row(r) for r in store._rows(query, (worker, limit), settle=False)]


def events_by_key(store: SqliteStore, keys: Iterable[str]) -> list[CallEventRecord]:
    """The stored events a notification names (blocking read, off the loop)."""
    rows = [store._rows("SELECT * FROM call_events WHERE dedupe_key = ?", (k,), settle=False) for k in keys]
    return [_event_from_row(r[0]) for r in rows if r]
