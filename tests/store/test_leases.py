"""Scale-out's SQL (agent/store/leases.py, agent/cluster.py) on both backends: leases, the shared call cap,
where a stored event goes, and the one-time take-over of a dead worker's calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.cluster import Cluster, Identity, TerminatedMeanwhile
from agent.store import leases
from agent.store.base import ENDING_OWED, CallRecord
from agent.store.sqlite import SqliteStore, StoreTx
from agent.whatsapp.rules import Refused

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def write(store: SqliteStore, fn: Any) -> Any:
    return store.submit(fn).result(timeout=10)


def worker(store: SqliteStore, name: str, clock: Clock, lease_s: float = 15.0) -> Cluster:
    return Cluster(store, Identity(name, lease_s=lease_s), clock=clock)


def two_live_workers(open_store: Any) -> tuple[SqliteStore, Clock, Cluster, Cluster]:
    """A fresh store with workers a and b both joined, on one test clock."""
    store = open_store()
    clock = Clock()
    a, b = worker(store, "a", clock), worker(store, "b", clock)
    a.join(simulated=False)
    b.join(simulated=False)
    return store, clock, a, b


def start_call(store: SqliteStore, cluster: Cluster, call_id: str, cap: int = 8) -> None:
    record = CallRecord(id=call_id, direction="USER_INITIATED", state="active", created_at=T0)
    guard = cluster.slot_guard(cap, simulated=False)

    def job(tx: StoreTx) -> None:
        guard(tx, record)
        tx.save_call(record)

    write(store, job)


def test_the_call_cap_counts_every_live_workers_calls(open_store: Any) -> None:
    store, clock, a, b = two_live_workers(open_store)
    start_call(store, a, "wacid.1", cap=2)
    start_call(store, b, "wacid.2", cap=2)
    with pytest.raises(Refused) as refused:
        start_call(store, a, "wacid.3", cap=2)
    assert refused.value.refusal.rule == "capacity.full"
    assert store.get_call("wacid.3") is None
    assert leases.live_elsewhere(store, "a", clock.now, simulated=False) == 1
    assert store.get_call("wacid.2").owner == "b"  # type: ignore[union-attr]


def test_one_call_per_user_holds_across_workers(open_store: Any) -> None:
    """Worker b may not dial a user who is on a call held by worker a (§8.3); once that call ends, it may."""
    store, _clock, a, b = two_live_workers(open_store)
    inbound = CallRecord(
        id="wacid.in", direction="USER_INITIATED", state="active", created_at=T0, from_number="15550002222"
    )
    guard_a = a.slot_guard(8, simulated=False)
    write(store, lambda tx: (guard_a(tx, inbound), tx.save_call(inbound)))

    def dial(ref: str) -> None:
        record = CallRecord(
            id=ref,
            direction="BUSINESS_INITIATED",
            state="dialing",
            created_at=T0,
            to_number="15550002222",
            biz_opaque_callback_data=ref,
        )
        guard = b.slot_guard(8, simulated=False)
        write(store, lambda tx: (guard(tx, record), tx.save_call(record)))

    with pytest.raises(Refused) as refused:
        dial("wacall-1")
    assert refused.value.refusal.rule == "bic.duplicate_call"
    assert store.get_call("wacall-1") is None
    store.update_call("wacid.in", state="ended", ended_at=T0 + timedelta(minutes=1))
    dial("wacall-2")
    assert store.get_call("wacall-2") is not None


def test_a_dead_workers_calls_are_taken_over_once_and_free_their_slots(open_store: Any) -> None:
    store = open_store()
    clock = Clock()
    a, b, c = (worker(store, n, clock, lease_s=3) for n in "abc")
    for w in (a, b, c):
        w.join(simulated=False)
    start_call(store, a, "wacid.a", cap=2)
    start_call(store, b, "wacid.b", cap=2)
    clock.now = T0 + timedelta(seconds=4)  # every lease ran out; a and c beat again, b is gone
    write(store, lambda tx: leases.heartbeat(tx, "a", None, clock.now, 3))
    write(store, lambda tx: leases.heartbeat(tx, "c", None, clock.now, 3))
    taken = write(
        store, lambda tx: leases.claim_orphans(tx, "c", clock.now, reason="lost", simulated=False, mine_too=False)
    )
    again = write(
        store, lambda tx: leases.claim_orphans(tx, "a", clock.now, reason="lost", simulated=False, mine_too=False)
    )
    assert [r.id for r in taken] == ["wacid.b"] and again == []
    record = store.get_call("wacid.b")
    assert record is not None and record.state == "ended" and record.end_reason == "lost" and record.owner == "c"
    assert store.get_call("wacid.a").state == "active"  # type: ignore[union-attr]
    assert ENDING_OWED in [e.event for e in store.list_events("wacid.b")]
    start_call(store, c, "wacid.c", cap=2)  # b's slot is free again


def test_an_event_goes_to_the_live_owner_of_its_call_once(open_store: Any) -> None:
    store, clock, a, _b = two_live_workers(open_store)
    start_call(store, a, "wacid.1")

    def store_terminate(me: str) -> str | None:
        def job(tx: StoreTx) -> str | None:
            tx.record_event("wacid.1", "terminate", clock.now, {}, dedupe_key="k1", handled=False)
            owner = leases.alive_owner(tx, "wacid.1", None, clock.now)
            return leases.route_event(tx, "k1", me, owner, clock.now)

        return write(store, job)

    assert store_terminate("b") == "a"  # received by b, acted on by a
    assert store_terminate("b") is None  # a redelivery while a has it
    assert [e.dedupe_key for e in leases.unhandled_for(store, "a")] == ["k1"]
    assert leases.unhandled_for(store, "b") == []


def test_a_terminate_stored_anywhere_stops_the_answer(open_store: Any) -> None:
    store = open_store()
    clock = Clock()
    a = worker(store, "a", clock)
    a.join(simulated=False)
    write(store, lambda tx: tx.record_event("wacid.9", "terminate", T0, {}, dedupe_key="t9", handled=False))
    with pytest.raises(TerminatedMeanwhile):
        start_call(store, a, "wacid.9")


def test_a_restarted_worker_id_takes_back_its_own_calls(open_store: Any) -> None:
    store = open_store()
    clock = Clock()
    worker(store, "a", clock).join(simulated=False)
    start_call(store, worker(store, "a", clock), "wacid.1")
    taken = worker(store, "a", clock).join(simulated=False)  # same id, lease still valid: its last process
    assert [r.id for r in taken] == ["wacid.1"]
    assert store.get_call("wacid.1").end_reason == "ended_by_restart"  # type: ignore[union-attr]


def test_notify_reaches_the_owners_channel_only_on_commit(postgres_url: str) -> None:
    import psycopg

    from agent.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        channel = Identity("a").channel
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {channel}")

            def fails(tx: StoreTx) -> None:
                leases.notify(tx, channel, "lost")
                raise RuntimeError("rolled back")

            with pytest.raises(RuntimeError):
                write(store, fails)
            write(store, lambda tx: leases.notify(tx, channel, "k1"))
            got = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
        assert got == ["k1"]
    finally:
        store.close()


async def test_two_workers_asking_permission_at_once_cannot_both_pass_the_limit(open_store: Any) -> None:
    """Meta allows one request per user per 24 h (§4.6): checked and counted in one write job, so of two
    requests at once (two workers' ledgers on one database) exactly one passes."""
    import asyncio

    from agent.ledger import CallLedger
    from agent.whatsapp.rules import UserCallingState, record_user_message

    first, second = open_store(), open_store()
    user = "447700900123"
    state = record_user_message(UserCallingState.new("pn", user), T0)  # the window is open
    first.put_user_state(state.to_record())
    ledgers = [
        CallLedger(store, phone_number_id="pn", clock=lambda: T0 + timedelta(minutes=1)) for store in (first, second)
    ]
    results = await asyncio.gather(*(ledger.reserve_permission_request(user) for ledger in ledgers))
    refusals = [refusal for refusal, _ in results]
    assert refusals.count(None) == 1, refusals
    assert [r.rule for r in refusals if r is not None] == ["permission.request_limit_24h"]
    assert len(first.get_user_state("pn", user).permission_requests) == 1  # type: ignore[union-attr]


def test_a_placed_call_holds_its_slot_under_our_reference_until_meta_names_it(open_store: Any) -> None:
    store = open_store()
    clock = Clock()
    a = worker(store, "a", clock)
    a.join(simulated=False)
    guard = a.slot_guard(1, simulated=False)
    ref = "wacall-ref1"

    def record(call_id: str) -> CallRecord:
        return CallRecord(id=call_id, direction="BUSINESS_INITIATED", state="dialing", biz_opaque_callback_data=ref)

    def save(rec: CallRecord) -> None:
        def job(tx: StoreTx) -> None:
            guard(tx, rec)
            tx.save_call(rec)

        write(store, job)

    save(record(ref))
    assert write(store, lambda tx: leases.alive_owner(tx, "wacid.unknown-yet", ref, clock.now)) == "a"
    save(record("wacid.meta"))  # the cap of 1 is not hit by its own reservation
    assert store.get_call(ref) is None and store.get_call("wacid.meta").owner == "a"  # type: ignore[union-attr]
    with pytest.raises(Refused):
        start_call(store, a, "wacid.other", cap=1)


async def test_a_worker_that_stalled_past_its_lease_learns_its_calls_were_taken(open_store: Any) -> None:
    store = open_store()
    clock = Clock()
    a, b = worker(store, "a", clock, lease_s=3), worker(store, "b", clock, lease_s=3)
    a.join(simulated=False)
    b.join(simulated=False)
    start_call(store, a, "wacid.1")
    clock.now = T0 + timedelta(seconds=5)  # a's loop froze; b beats and takes a's call over
    held, taken = await b.beat(simulated=False)
    assert held and [r.id for r in taken] == ["wacid.1"]
    held, taken = await a.beat(simulated=False)  # a wakes up
    assert not held and taken == []
    assert store.get_call("wacid.1").owner == "b"  # type: ignore[union-attr]


async def test_a_worker_leaving_cleanly_hands_its_owed_endings_on(open_store: Any) -> None:
    store, clock, a, b = two_live_workers(open_store)
    start_call(store, a, "wacid.1")
    write(store, lambda tx: tx.update_call("wacid.1", state="ended", ended_at=T0))
    write(store, lambda tx: tx.record_event("wacid.1", ENDING_OWED, T0, {}, dedupe_key="wacid.1:ending_owed"))
    await a.leave()
    clock.now = T0 + timedelta(seconds=15)  # b has beaten steadily for a lease: it judges others' leases
    _, taken = await b.beat(simulated=False)
    assert [r.id for r in taken] == ["wacid.1"]
    assert write(store, lambda tx: leases.holds_lease(tx, "a")) is False


async def test_after_a_database_outage_the_first_worker_back_takes_nobodys_calls(open_store: Any) -> None:
    """Every lease looks expired once the database is back: the others are alive and beat again soon."""
    store = open_store()
    clock = Clock()
    a, b = worker(store, "a", clock, lease_s=3), worker(store, "b", clock, lease_s=3)
    a.join(simulated=False)
    b.join(simulated=False)
    start_call(store, a, "wacid.1")
    clock.now = T0 + timedelta(seconds=2)
    await a.beat(simulated=False)
    clock.now = T0 + timedelta(seconds=3)
    assert (await b.beat(simulated=False))[1] == []  # steady for a lease now; a's lease holds
    b._steady_since = None  # then its heartbeats failed: the database was down for 10 s
    clock.now = T0 + timedelta(seconds=13)
    assert (await b.beat(simulated=False))[1] == []  # back, but not yet steady: a's lease is not judged
    assert (await a.beat(simulated=False))[0]  # a is back too, its calls its own
    assert store.get_call("wacid.1").state == "active"  # type: ignore[union-attr]
