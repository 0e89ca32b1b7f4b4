"""Several `wacall serve` workers answering one number, coordinated through the PostgreSQL they share.

Why PostgreSQL alone, and not Redis next to it: the store already serialises every write transaction across
workers with one advisory lock (agent/store/postgres.py), so a check-then-write inside one write job is
atomic deployment-wide; leases are rows renewed by a heartbeat, and LISTEN/NOTIFY hands an event to the
worker that must act on it, its NOTIFY sent only if the transaction storing the event commits. A second
engine would be one more thing to run, secure, back up and fail over, for agreement the database gives.

How it fits together:

* **Ownership is a lease.** The worker holding a call's WebRTC peer owns it (`calls.owner` =
  `WACALL_WORKER_ID`, default host-pid). Each worker renews its row in `workers` every third of
  `WACALL_WORKER_LEASE_S` (default 15 s); its calls live as long as that lease. One row per worker, so a
  heartbeat is one small write whatever the number of calls.
* **Any worker may receive any webhook.** The receiver stores it (the ledger dedupes) and, in the same write
  job, decides once who acts on it (`call_events.handler`): the call's live owner, else itself. An event for
  another worker is not acted on here; the owner is told by NOTIFY on its own channel carrying the event's
  dedupe key, and also re-reads its unhandled events every heartbeat and whenever its listener reconnects,
  so a notification lost with a dropped connection delays an event by one beat, never loses it. The
  ledger's `handled` mark and in-flight set make the owner act on it once.
* **Meta's rules across workers.** The concurrent-call cap counts live calls of live workers in the write
  job that records the new call; a terminate stored for the call by any worker is checked in that same job.
* **A worker that dies** (SIGKILL, a lost host) stops renewing its lease; after it runs out, the first
  worker to beat takes its calls over in one write job (so exactly one does): marks them
  `ended_by_worker_loss`, notes the terminate Meta is owed, and sends it through the runtime's owed-ending
  machinery (`Runtime.settle_restart`), which frees the slots. Other workers' calls never notice.
* **One handover desk.** Queues, waiting callers and agents' presence are shared through the database too,
  and an agent on any worker's console can take a caller held by any other; the media bridge lives on the
  caller's worker. See agent/handover/shared.py.

With SQLite (one process) none of this runs: `Runtime.cluster` is None and the store's new columns stay empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store import leases
from agent.store.base import CallEventRecord, CallRecord
from agent.store.sqlite import SqliteStore, StoreTx
from agent.whatsapp.rules import Refused, check_capacity, duplicate_call

log = logging.getLogger(__name__)

ENDED_BY_WORKER_LOSS = "ended_by_worker_loss"
#: Environment names the cluster reads (the rest of wacall's settings live in agent/config.py).
ENV_WORKER_ID = "WACALL_WORKER_ID"
ENV_WORKER_URL = "WACALL_WORKER_URL"
ENV_LEASE_S = "WACALL_WORKER_LEASE_S"
ENV_NAMES = (ENV_WORKER_ID, ENV_WORKER_URL, ENV_LEASE_S)
DEFAULT_LEASE_S = 15.0


class TerminatedMeanwhile(Exception):
    """Meta's terminate for a call reached another worker while this one was about to answer it."""


@dataclass(frozen=True)
class Identity:
    """Who this worker is to the others."""

    worker_id: str
    url: str | None = None
    lease_s: float = DEFAULT_LEASE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Identity:
        env = os.environ if env is None else env
        worker_id = env.get(ENV_WORKER_ID) or f"{socket.gethostname()}-{os.getpid()}"
        lease = float(env.get(ENV_LEASE_S) or DEFAULT_LEASE_S)
        if not 1.0 <= lease <= 600.0:
            raise ValueError(f"{ENV_LEASE_S} must be between 1 and 600 seconds (got {lease:g})")
        return cls(worker_id=worker_id[:200], url=env.get(ENV_WORKER_URL) or None, lease_s=lease)

    @property
    def channel(self) -> str:
        """This worker's NOTIFY channel: a hash, so any worker id makes a valid, short identifier."""
        return "wacall_" + hashlib.sha256(self.worker_id.encode()).hexdigest()[:24]

    @property
    def beat_s(self) -> float:
        return self.lease_s / 3


class Cluster:
    """This worker's part in the deployment: its lease, where events go, the shared call cap, take-overs."""

    def __init__(self, store: SqliteStore, identity: Identity, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.identity = identity
        self.worker_id = identity.worker_id
        self._now = clock
        self._url: str = getattr(store, "_url", "")  # the listener's own connection (PostgresStore only)
        # Since when this worker's heartbeats have gone through without a failure. Another worker's lease is
        # judged only after a whole lease of them: after an outage of the database every lease looks expired,
        # and the first worker back must not take over the calls of the others, alive and coming back too.
        self._steady_since: datetime | None = None

    @classmethod
    def for_store(cls, store: Any, *, clock: Callable[[], datetime]) -> Cluster | None:
        """A cluster when the store is shared by processes (PostgreSQL); None for SQLite's one process."""
        if not getattr(store, "shared", False):
            return None
        return cls(store, Identity.from_env(), clock=clock)

    # start-up and the lease -------------------------------------------------------------------------------
    def join(self, *, simulated: bool) -> list[CallRecord]:
        """Blocking, at start-up: take the lease, then the calls this worker id left (its last process) and
        those of workers already dead. Returns the calls now owed an ending to Meta."""
        now = self._now()

        def job(tx: StoreTx) -> list[CallRecord]:
            leases.heartbeat(tx, self.worker_id, self.identity.url, now, self.identity.lease_s)
            return self._claim(tx, now, simulated=simulated, mine_too=True)

        taken = self.store.submit(job, deadline_s=30.0).result()
        self._steady_since = now
        log.info("worker %s joined (lease %.0f s)", self.worker_id, self.identity.lease_s)
        return taken

    def _claim(self, tx: StoreTx, now: datetime, *, simulated: bool, mine_too: bool) -> list[CallRecord]:
        return leases.claim_orphans(
            tx, self.worker_id, now, reason=ENDED_BY_WORKER_LOSS, simulated=simulated, mine_too=mine_too
        )

    async def beat(self, *, simulated: bool) -> tuple[bool, list[CallRecord]]:
        """Renew the lease and take over the calls of workers whose lease ran out (one write job). Returns
        whether this worker still held its lease (False: it stalled, and its calls were taken over)."""
        now = self._now()
        steady = self._steady_since
        may_claim = steady is not None and (now - steady).total_seconds() >= self.identity.lease_s

        def job(tx: StoreTx) -> tuple[bool, list[CallRecord]]:
            held = leases.holds_lease(tx, self.worker_id)
            leases.heartbeat(tx, self.worker_id, self.identity.url, now, self.identity.lease_s)
            return held, self._claim(tx, now, simulated=simulated, mine_too=False) if may_claim else []

        try:
            result = await asyncio.wrap_future(self.store.submit(job, deadline_s=self.identity.beat_s))
        except BaseException:
            self._steady_since = None
            raise
        if self._steady_since is None:
            self._steady_since = now
        return result

    def judges_leases(self) -> bool:
        """Whether this worker has beaten steadily for a whole lease, and so may take others' expired leases
        for dead workers (after an outage of the database, every lease looks expired for a while)."""
        steady = self._steady_since
        return steady is not None and (self._now() - steady).total_seconds() >= self.identity.lease_s

    async def leave(self) -> None:
        """A clean stop gives the lease up, so nobody waits for it to run out."""
        now = self._now()
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self.store.submit(lambda tx: leases.drop_worker(tx, self.worker_id, now)))

    # routing (on the store's writer thread, inside the job storing a delivery) ------------------------------
    def route(self, tx: StoreTx, call_id: str, ref: str | None, key: str, now: datetime) -> bool:
        """True when another worker is to act on this event (it has been told); False: act on it here."""
        owner = leases.alive_owner(tx, call_id, ref, now)
        target = leases.route_event(tx, key, self.worker_id, owner, now)
        if target is None:
            return True  # a redelivery another live worker is handling
        if target == self.worker_id:
            return False
        leases.notify(tx, Identity(target).channel, key)
        return True

    # the deployment-wide call cap ---------------------------------------------------------------------------
    def slot_guard(self, cap: int, *, simulated: bool) -> Callable[[StoreTx, CallRecord], None]:
        """The check run in the write job that records a new call: refuse it when the deployment's live calls
        fill `cap`, or when a terminate for it is stored already (taken by another worker meanwhile)."""
        now = self._now()

        def guard(tx: StoreTx, record: CallRecord) -> None:
            if record.direction == "USER_INITIATED" and leases.terminate_stored(tx, record.id):
                raise TerminatedMeanwhile(record.id)
            ref = record.biz_opaque_callback_data
            if ref and ref != record.id:  # a call we placed: its slot was held under our reference until now
                leases.drop_reservation(tx, ref)
            elif record.direction == "BUSINESS_INITIATED" and record.to_number:
                # Reserving a call we are about to place: the user may be on a call held by another worker.
                if leases.user_in_call(tx, record.to_number, now, but=record.id):
                    raise Refused(duplicate_call(record.to_number))
            refusal = check_capacity(leases.count_leased_live(tx, now, simulated=simulated), cap)
            if refusal is not None:
                raise Refused(refusal)
            record.owner = self.worker_id

        return guard

    # reading what is ours ------------------------------------------------------------------------------------
    async def unhandled(self) -> list[CallEventRecord]:
        return await asyncio.to_thread(leases.unhandled_for, self.store, self.worker_id)

    async def live_elsewhere(self, *, simulated: bool) -> int:
        """Live calls other live workers own (a read, off the loop)."""
        now = self._now()
        return await asyncio.to_thread(leases.live_elsewhere, self.store, self.worker_id, now, simulated=simulated)

    async def events(self, keys: list[str]) -> list[CallEventRecord]:
        return await asyncio.to_thread(leases.events_by_key, self.store, keys)

    async def run(
        self,
        *,
        simulated: bool,
        on_keys: Callable[[list[str]], Awaitable[None]],
        on_catch_up: Callable[[], Awaitable[None]],
        on_orphans: Callable[[list[CallRecord]], Awaitable[None]],
        on_lease_lost: Callable[[], Awaitable[None]],
    ) -> None:
        """Heartbeat (with take-overs and a catch-up read) and the NOTIFY listener, until cancelled."""
        from agent.cluster_listener import listen

        # What a beat finds is acted on beside the heartbeat, never in its way: telling Meta of a dead worker's
        # calls (retried for seconds) or answering a caught-up call must not let this worker's own lease lapse.
        side: set[asyncio.Task[None]] = set()

        def beside(work: Awaitable[None], name: str) -> None:
            task: asyncio.Task[None] = asyncio.ensure_future(work)
            task.set_name(name)
            side.add(task)
            task.add_done_callback(side.discard)

        listener = asyncio.create_task(
            listen(self._url, self.identity.channel, on_keys=on_keys, on_connected=on_catch_up),
            name="cluster-listen",
        )
        try:
            while True:
                await asyncio.sleep(self.identity.beat_s)
                try:
                    held, taken = await self.beat(simulated=simulated)
                except Exception as exc:
                    log.warning("worker %s: heartbeat failed (%s); retrying", self.worker_id, exc)
                    continue
                if not held:
                    log.error("worker %s: its lease ran out and its calls were taken over; ending them", self.worker_id)
                    beside(on_lease_lost(), "cluster-lease-lost")
                if taken:
                    log.warning(
                        "worker %s: took over %d call(s) of worker(s) whose lease ran out", self.worker_id, len(taken)
                    )
                    beside(on_orphans(taken), "cluster-take-over")
                if not any(t.get_name() == "cluster-catch-up" for t in side):
                    beside(on_catch_up(), "cluster-catch-up")
        finally:
            for task in (listener, *side):
                task.cancel()
            await asyncio.gather(listener, *side, return_exceptions=True)
