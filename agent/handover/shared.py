"""One handover desk for the whole deployment when several workers share PostgreSQL (issue 17, agent/cluster.py).

With one process the desk (agent/handover/queues.py) lives in memory. With several workers a caller handed
over on worker A must reach an agent whose console is on worker B, so the desk is shared:

* **The state is one row** (`handover_desk`): the desk's own state as `queues.dump_desk` writes it, plus who
  is where: the worker owning each handed-over call (it holds the caller's WebRTC peer, so the media bridge
  to the agent is built there), the flow nodes an agent may send that call back to, and each signed-in
  agent's presence (the worker their console is connected to).
* **Every desk operation is one write job**: load the row, run the `HandoverDesk` method, save the row. The
  store's advisory write lock (agent/store/postgres.py) serialises write jobs across the deployment, so each
  routing decision (who is offered which call, an offer timing out, a max wait) is made exactly once, by the
  very rules of `queues.py` rather than a second copy of them in SQL. Any worker may run the tick: it is one
  more job, and running it from every worker only makes timeouts fire a little sooner after they are due.
  Why one document and not a table per kind of row: the desk's rules read the whole desk anyway (the
  longest-idle agent, the caller's position in their queue), it stays small (waiting calls and agents of
  one contact centre), and the shape stays `queues.py`'s, which is what keeps the rules in one place.
* **Events go where they are acted on.** The job that produced them tells, for each event, the worker
  owning its call (hold lines, bridging, fallback, hang-up, the call record) and the worker holding its
  agent's console (rings, "connected", "call ended"): itself directly, the others through a row of
  `handover_messages` named to them by NOTIFY on their channel, both only if the job commits. The caller's
  live transcript lines and alerts reach a console on another worker the same way. A worker takes its
  messages by deleting them, so each is acted on once; one whose NOTIFY was lost (a listener reconnecting)
  is found by the catch-up the cluster runs every heartbeat and on every reconnection, as stored webhook
  events are. Consoles redraw from the shared row at every tick.
* **Accepting** happens on the call's owner: the agent's worker forwards the browser's SDP offer to the
  owner's internal route (`POST /internal/handover/accept` on its `WACALL_WORKER_URL`), signed with a key
  derived from the app secret every worker already shares; the owner builds the bridge and answers, the
  answer goes back to the browser, and media flows browser <-> owner directly.
* **A worker that dies** takes its agents and its callers off the desk within one lease: every job first
  drops presence on, and calls owned by, workers whose lease ran out (the agents are disconnected, the calls
  hung up, by the desk's own rules), judged as the take-over judges leases: only by a worker whose own
  heartbeats have held for a lease (after an outage of the database every lease looks expired). The calls
  themselves are ended by the cluster's take-over. A worker restarting under its old id clears what its
  last process left at start-up (`rejoin`), without waiting for a lease to run out.

Why not one elected "desk worker" holding the desk in memory: its death would lose the desk's state with it
and need an election and a hand-over of that state, while the database keeps it anyway; and every decision
still needs the callers' and agents' workers told, which NOTIFY already does. The cost is one small write
job per desk change and per tick, under the write lock every store write takes.

What stays per worker: a console's sign-in session (agent/handover/console.py keeps sessions in memory), so
a load balancer must send one agent's console requests to one worker (deploy/Caddyfile does, by cookie);
and the caller's audio, of course. With SQLite none of this runs: the desk is the process's own, in memory.

Times on the shared desk are wall-clock seconds (the workers' clocks must agree, as the leases need).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.handover.queues import (
    AgentConfig,
    Ended,
    Event,
    HandoverDesk,
    Offer,
    OfferWithdrawn,
    QueueConfig,
    decode_event,
    dump_desk,
    encode_event,
    load_desk,
    talking_agents,
)
from agent.store.sqlite import StoreTx, _ts

log = logging.getLogger(__name__)

#: What starts a NOTIFY payload meant for the handover service rather than a stored webhook event's key.
MESSAGE_PREFIX = "wacall-desk:"
ACCEPT_PATH = "/internal/handover/accept"
SIGNATURE_HEADER = "x-wacall-desk-signature"
SIGNATURE_MAX_AGE_S = 60.0
_ROW = 1


@dataclass
class Side:
    """Who is where, kept beside the desk's own state."""

    owners: dict[str, str] = field(default_factory=dict)  # call id -> worker holding its media
    nodes: dict[str, list[str]] = field(default_factory=dict)  # call id -> its flow's nodes (for "return to bot")
    presence: dict[str, str] = field(default_factory=dict)  # agent id -> worker their console is on

    def data(self) -> dict[str, Any]:
        return {"owners": self.owners, "nodes": self.nodes, "presence": self.presence}


@dataclass(frozen=True)
class Routed:
    """One event for this worker: which of its parts to act on here."""

    event: Event
    call_here: bool  # this worker owns the event's call
    agent_here: bool  # this worker holds the console of the event's agent
    talking: str | None = None  # for `Ended`: the agent who was talking to the caller, to tell their console


@dataclass
class DeskResult:
    desk: HandoverDesk
    side: Side
    events: list[Event]  # everything the operation produced, wherever it is acted on
    mine: list[Routed]  # what this worker acts on


Op = Callable[[HandoverDesk, Side], list[Event]]


class SharedDesk:
    """The shared desk's storage and routing; `HandoverService` drives it (see the module docstring)."""

    def __init__(
        self,
        store: Any,
        queues: Iterable[QueueConfig],
        agents: Iterable[AgentConfig],
        *,
        worker_id: str,
        channel_of: Callable[[str], str],
        key: bytes,
        judges_leases: Callable[[], bool] = lambda: True,
    ) -> None:
        """`judges_leases` (the cluster's): whether this worker may take an expired lease for a dead worker
        now; not until its own heartbeats have gone through for a whole lease (see agent/cluster.py)."""
        self.store = store
        self._judges_leases = judges_leases
        self.queues = tuple(queues)
        self.agents = tuple(agents)
        self.worker_id = worker_id
        self._channel_of = channel_of
        self._key = key

    def empty(self) -> HandoverDesk:
        return HandoverDesk(self.queues, self.agents)

    # the operations -----------------------------------------------------------------------------------------
    def submit(self, op: Op, now: float) -> Future[DeskResult]:
        """Run `op` on the shared desk in one write job (never blocks the caller)."""
        return self.store.submit(lambda tx: self.run(tx, op, now))  # type: ignore[no-any-return]

    def run(self, tx: StoreTx, op: Op, now: float) -> DeskResult:
        """Inside a write job: load, drop what dead workers left, `op`, route the events, save."""
        row = tx.conn.execute("SELECT state FROM handover_desk WHERE id = ?", (_ROW,)).fetchone()
        desk, side = self._parse(None if row is None else row["state"])
        if self._judges_leases():
            leased = tx.conn.execute("SELECT id FROM workers WHERE lease_until > ?", (_ts(tx.now()),))
            alive = {str(r["id"]) for r in leased}
        else:  # just back from an outage of the database: every lease may look expired, nobody is judged dead
            alive = {*side.presence.values(), *side.owners.values()}
        alive.add(self.worker_id)
        talking = talking_agents(desk)
        events: list[Event] = []
        known = {a.id for a in self.agents}
        for agent_id, worker in list(side.presence.items()):
            if worker not in alive or agent_id not in known:
                del side.presence[agent_id]
                if agent_id in known:
                    events += desk.agent_disconnected(agent_id, now)
        for call_id, worker in list(side.owners.items()):
            if desk.record(call_id) is None:
                side.owners.pop(call_id, None)
                side.nodes.pop(call_id, None)
            elif worker not in alive:
                events += desk.caller_hung_up(call_id, now)
        events += op(desk, side)
        mine = self._route(tx, events, side, talking, alive)
        if self._judges_leases():
            tx.conn.execute(  # left for workers that died before taking them
                "DELETE FROM handover_messages WHERE worker != ? "
                "AND worker NOT IN (SELECT id FROM workers WHERE lease_until > ?)",
                (self.worker_id, _ts(tx.now())),
            )
        for event in events:
            if isinstance(event, Ended):
                side.owners.pop(event.record.call_id, None)
                side.nodes.pop(event.record.call_id, None)
        state = json.dumps({"desk": dump_desk(desk), "side": side.data()}, separators=(",", ":"))
        tx.conn.execute(
            "INSERT INTO handover_desk (id, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (_ROW, state, _ts(tx.now())),
        )
        return DeskResult(desk, side, events, mine)

    def rejoin(self, now: float) -> DeskResult:
        """Blocking, at start-up: what this worker id's last process left on the desk goes (its callers were
        ended by the cluster's take-over, its consoles' sessions died with it). Without this, a worker that
        restarts faster than its lease runs out would keep its dead callers waiting on the desk."""
        me = self.worker_id

        def forget(desk: HandoverDesk, side: Side) -> list[Event]:
            events: list[Event] = []
            for agent_id in [a for a, worker in side.presence.items() if worker == me]:
                del side.presence[agent_id]
                events += desk.agent_disconnected(agent_id, now)
            for call_id in [c for c, worker in side.owners.items() if worker == me]:
                events += desk.caller_hung_up(call_id, now)
            return events

        def job(tx: StoreTx) -> DeskResult:
            tx.conn.execute("DELETE FROM handover_messages WHERE worker = ?", (me,))  # the old process's
            return self.run(tx, forget, now)

        return self.store.submit(job).result()  # type: ignore[no-any-return]

    def _route(
        self, tx: StoreTx, events: list[Event], side: Side, talking: dict[str, str], alive: set[str]
    ) -> list[Routed]:
        mine: list[Routed] = []
        for event in events:
            if isinstance(event, Ended):
                call_id: str | None = event.record.call_id
                agent_id = talking.get(event.record.call_id)
            else:
                call_id, agent_id = getattr(event, "call_id", None), getattr(event, "agent_id", None)
            # An offer rings a console and nothing else: the caller's worker has no part in it.
            call_worker = None if isinstance(event, Offer | OfferWithdrawn) else side.owners.get(call_id or "")
            agent_worker = side.presence.get(agent_id or "")
            extra = agent_id if isinstance(event, Ended) else None
            for worker in dict.fromkeys(w for w in (call_worker, agent_worker) if w is not None and w in alive):
                routed = Routed(event, worker == call_worker, worker == agent_worker, extra)
                if worker == self.worker_id:
                    mine.append(routed)
                else:
                    message = {
                        "event": encode_event(event),
                        "call": routed.call_here,
                        "agent": routed.agent_here,
                        "talking": extra,
                    }
                    self._notify(tx, worker, message)
        return mine

    # messages between workers -----------------------------------------------------------------------------
    def _notify(self, tx: StoreTx, worker: str, message: dict[str, Any]) -> None:
        """Leave `message` for `worker` and name it by NOTIFY (both only if the job commits)."""
        row = tx.conn.execute(
            "INSERT INTO handover_messages (worker, payload, created_at) VALUES (?, ?, ?) RETURNING id",
            (worker, json.dumps(message, separators=(",", ":")), _ts(tx.now())),
        ).fetchone()
        tx.conn.execute("SELECT pg_notify(?, ?)", (self._channel_of(worker), f"{MESSAGE_PREFIX}{row['id']}"))

    def take(self, ids: list[int] | None = None) -> Future[list[str]]:
        """This worker's messages (those named, or all that are left), deleted as they are read, so each is
        acted on once whether its NOTIFY came or the catch-up found it."""
        me = self.worker_id

        def job(tx: StoreTx) -> list[str]:
            if ids is None:
                rows = tx.conn.execute(
                    "DELETE FROM handover_messages WHERE worker = ? RETURNING id, payload", (me,)
                ).fetchall()
            else:
                rows = [
                    r
                    for i in ids
                    for r in tx.conn.execute(
                        "DELETE FROM handover_messages WHERE id = ? AND worker = ? RETURNING id, payload", (i, me)
                    ).fetchall()
                ]
            return [str(r["payload"]) for r in sorted(rows, key=lambda r: int(r["id"]))]

        return self.store.submit(job)  # type: ignore[no-any-return]

    def waiting_messages(self) -> bool:
        """Whether messages are left for this worker (a read, blocking: off the event loop)."""
        query = "SELECT 1 FROM handover_messages WHERE worker = ? LIMIT 1"
        return bool(self.store._rows(query, (self.worker_id,), settle=False))

    def push(self, worker: str, agent_id: str, message: dict[str, Any]) -> None:
        """A console message for an agent whose console is on `worker` (a transcript line, an alert)."""
        text = message.get("text")
        if isinstance(text, str) and len(text) > 2000:
            message = {**message, "text": text[:2000]}
        note = {"push": agent_id, "message": message}
        future = self.store.submit(lambda tx: self._notify(tx, worker, note))
        future.add_done_callback(_report)

    @staticmethod
    def message_id(note: str) -> int | None:
        """The message a NOTIFY payload of `MESSAGE_PREFIX` names."""
        rest = note[len(MESSAGE_PREFIX) :] if note.startswith(MESSAGE_PREFIX) else ""
        return int(rest) if rest.isdigit() else None

    @staticmethod
    def parse_message(payload: str) -> Routed | tuple[str, dict[str, Any]] | None:
        """A message taken from the table: an event to act on, or (agent id, console message)."""
        try:
            data = json.loads(payload)
            if "push" in data:
                return str(data["push"]), dict(data["message"])
            return Routed(decode_event(data["event"]), bool(data["call"]), bool(data["agent"]), data.get("talking"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("handover: ignored a malformed message from another worker (%s)", exc)
            return None

    # reads (blocking, on the read connection: call them off the event loop) ----------------------------------
    def read(self) -> tuple[HandoverDesk, Side]:
        rows = self.store._rows("SELECT state FROM handover_desk WHERE id = ?", (_ROW,), settle=False)
        return self._parse(rows[0]["state"] if rows else None)

    def worker_url(self, worker: str) -> str | None:
        rows = self.store._rows("SELECT url FROM workers WHERE id = ?", (worker,), settle=False)
        return str(rows[0]["url"]) if rows and rows[0]["url"] else None

    def _parse(self, text: str | None) -> tuple[HandoverDesk, Side]:
        if not text:
            return self.empty(), Side()
        state = json.loads(text)
        side = state.get("side") or {}
        return load_desk(self.queues, self.agents, state.get("desk") or {}), Side(
            owners=dict(side.get("owners") or {}),
            nodes={k: list(v) for k, v in (side.get("nodes") or {}).items()},
            presence=dict(side.get("presence") or {}),
        )

    # the internal accept route's signature --------------------------------------------------------------------
    def sign(self, body: bytes, now: float | None = None) -> str:
        return sign(self._key, body, now)

    def verify(self, body: bytes, header: str, now: float | None = None) -> bool:
        return verify(self._key, body, header, now)


def desk_key(app_secret: str) -> bytes:
    """The key workers sign forwarded accepts with: derived from the app secret they all share, so it is not
    the key Meta signs webhooks with (a webhook body can never pass as a forwarded accept)."""
    return hmac.new(app_secret.encode(), b"wacall handover forward v1", hashlib.sha256).digest()


def sign(key: bytes, body: bytes, now: float | None = None) -> str:
    stamp = str(int(time.time() if now is None else now))
    mac = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{stamp}.{mac}"


def verify(key: bytes, body: bytes, header: str, now: float | None = None) -> bool:
    """A signature made with `key` over `body`, less than `SIGNATURE_MAX_AGE_S` old."""
    stamp, _, mac = header.partition(".")
    if not stamp.isdigit() or not mac or not key:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > SIGNATURE_MAX_AGE_S:
        return False
    expected = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, expected)


def _report(done: Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("handover: could not send a message to another worker: %s", done.exception())
