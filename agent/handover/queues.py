"""Human handover routing: which waiting caller goes to which agent, and when.

Pure on purpose: every method takes `now` (seconds, any monotonic origin) and returns the events the runtime
must act on: ring a console, play a hold line, run a fallback node, write the call record. There are no timers
or sleeps here, so the 30 s re-offer, max-wait and abandon rules are tested with a fake clock, and a crashed
task can never leave a timer firing for a call that is gone. The runtime calls `tick(now)` about once a second.

Rules, in the order they matter:

- Waiting calls are served by queue priority, then call priority (higher first for both), then calls put back
  after their agent's browser dropped, then entry time.
- A call goes to an *available* agent who serves its queue and has every skill it needs (the queue's skills
  plus the flow node's), choosing the agent idle longest; ties go to the agent listed first in the config.
- One open offer per call and per agent, so two agents never race for one caller.
- An offer nobody answers within the queue's `offer_timeout_s` is withdrawn, the agent is set *away* and the
  call is offered to the next agent. Away rather than "still available": an agent who let a call ring out has
  most likely left the desk, and keeping them available would make every later caller wait out the same
  timeout first. The console shows them as away; one click makes them available again.
- A decline keeps the agent available but skips them for that call, until they next go away and come back.
- A call waiting longer than `max_wait_s` (counted from when it last entered the queue) leaves it and the
  flow's fallback node runs; hanging up while waiting records the call as abandoned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

DEFAULT_HOLD_MESSAGE = "Please hold while I connect you to a colleague."
DEFAULT_POSITION_MESSAGE = "You are number {position} in the queue."


class HandoverError(ValueError):
    """The runtime asked about a queue or agent the desk was not configured with: a wiring bug, not a race."""


class AgentStatus(StrEnum):
    AWAY = "away"
    AVAILABLE = "available"
    OFFERED = "offered"
    BUSY = "busy"


class Outcome(StrEnum):
    ANSWERED = "answered"  # an agent is (or was, if the call was cut without either side hanging up) talking
    ABANDONED = "abandoned"
    TIMED_OUT = "timed_out"
    RETURNED_TO_BOT = "returned_to_bot"
    AGENT_HUNG_UP = "agent_hung_up"
    CALLER_HUNG_UP = "caller_hung_up"


@dataclass(frozen=True)
class QueueConfig:
    name: str
    skills: tuple[str, ...] = ()
    priority: int = 0
    max_wait_s: float = 300.0
    announce_every_s: float = 30.0
    offer_timeout_s: float = 30.0
    hold_message: str = DEFAULT_HOLD_MESSAGE
    position_message: str = DEFAULT_POSITION_MESSAGE
    fallback_node: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    id: str
    name: str = ""
    skills: frozenset[str] = frozenset()
    queues: frozenset[str] | Literal["all"] = "all"

    def can_take(self, queue: str, skills: Iterable[str]) -> bool:
        return (self.queues == "all" or queue in self.queues) and self.skills.issuperset(skills)


@dataclass
class AgentState:
    config: AgentConfig
    status: AgentStatus = AgentStatus.AWAY
    idle_since: float | None = None  # when they last became free; longest idle gets the next call
    call_id: str | None = None  # the call offered to them or that they are talking to
    away_after_call: bool = False  # asked to go away mid-call; honoured when the call ends


@dataclass(frozen=True)
class WaitingCall:
    """What the runtime knows about a caller when the flow hands them over; the desk stamps the times."""

    call_id: str
    queue: str
    reason: str = ""
    skills_required: tuple[str, ...] = ()  # on top of the queue's own skills
    priority: int = 0
    transcript: Sequence[tuple[str, str]] = ()  # (who, text), who being "caller" or "bot"
    slots: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    caller_number: str = ""
    caller_name: str = ""
    payload: str = ""  # the call button's or deep link's payload the caller came from, so the agent knows why
    payload_source: str = ""  # "button" or "link"


@dataclass(frozen=True)
class HandoverRecord:
    """The handover part of the call record; totals add up across a requeue after an agent's browser dropped."""

    call_id: str
    queue: str
    entered_at: float
    handled_by: str | None = None  # the last agent who talked to the caller
    waited_s: float = 0.0
    talk_s: float = 0.0
    outcome: Outcome | None = None  # None while waiting
    ended_at: float | None = None
    offers: int = 0
    requeues: int = 0


# Events: what the runtime must do. Small and frozen so tests compare them with ==.
@dataclass(frozen=True)
class Offer:
    agent_id: str
    call_id: str
    expires_at: float


@dataclass(frozen=True)
class OfferWithdrawn:
    agent_id: str
    call_id: str
    reason: str  # timeout | agent_away | agent_disconnected | caller_hung_up | max_wait | returned_to_bot | stale


@dataclass(frozen=True)
class Hold:
    call_id: str
    text: str


@dataclass(frozen=True)
class Announce:
    call_id: str
    position: int
    text: str


@dataclass(frozen=True)
class MaxWaitReached:
    call_id: str
    fallback_node: str | None  # None: the runtime uses the flow's own fallback


@dataclass(frozen=True)
class Connected:
    agent_id: str
    call_id: str


@dataclass(frozen=True)
class Abandoned:
    call_id: str
    waited_s: float


@dataclass(frozen=True)
class Requeued:
    call_id: str
    agent_id: str  # whose browser dropped


@dataclass(frozen=True)
class ReturnToBot:
    call_id: str
    node: str


@dataclass(frozen=True)
class Ended:
    record: HandoverRecord


Event = (
    Offer | OfferWithdrawn | Hold | Announce | MaxWaitReached | Connected | Abandoned | Requeued | ReturnToBot | Ended
)


@dataclass
class _Ticket:
    call: WaitingCall
    queue: QueueConfig
    skills: frozenset[str]
    seq: int
    record: HandoverRecord
    wait_started_at: float
    next_announce_at: float
    front: bool = False  # put back after a dropped agent: ahead of calls of the same priorities
    agent_id: str | None = None  # offered to, or talking to
    offer_expires_at: float | None = None
    talk_started_at: float | None = None
    declined: set[str] = field(default_factory=set)

    @property
    def talking(self) -> bool:
        return self.talk_started_at is not None

    def order(self) -> tuple[int, int, int, float, int]:
        return (-self.queue.priority, -self.call.priority, 0 if self.front else 1, self.wait_started_at, self.seq)


class HandoverDesk:
    """Queues, agents and the calls between them; one per process, driven by the runtime."""

    def __init__(self, queues: Iterable[QueueConfig], agents: Iterable[AgentConfig]) -> None:
        self._queues = {q.name: q for q in queues}
        self._agents = {a.id: AgentState(a) for a in agents}
        self._rank = {agent_id: i for i, agent_id in enumerate(self._agents)}
        self._calls: dict[str, _Ticket] = {}
        self._seq = 0

    # --- the caller side -------------------------------------------------------------------------------------

    def enqueue(self, call: WaitingCall, now: float) -> list[Event]:
        queue = self._queues.get(call.queue)
        if queue is None:
            raise HandoverError(f"unknown queue {call.queue!r}; configured: {', '.join(self._queues) or 'none'}")
        if call.call_id in self._calls:
            raise HandoverError(f"call {call.call_id} is already handed over")
        self._seq += 1
        ticket = _Ticket(
            call=call,
            queue=queue,
            skills=frozenset(queue.skills) | frozenset(call.skills_required),
            seq=self._seq,
            record=HandoverRecord(call_id=call.call_id, queue=queue.name, entered_at=now),
            wait_started_at=now,
            next_announce_at=now,
        )
        self._calls[call.call_id] = ticket
        return [*self._start_waiting(ticket, now), *self._dispatch(now)]

    def caller_hung_up(self, call_id: str, now: float) -> list[Event]:
        """Abandoned if still waiting, caller_hung_up if talking; a hang-up the desk no longer tracks is a no-op."""
        ticket = self._calls.get(call_id)
        if ticket is None:
            return []
        if ticket.talking:
            return [*self._finish(ticket, Outcome.CALLER_HUNG_UP, now), *self._dispatch(now)]
        events = self._leave_queue(ticket, "caller_hung_up", now)
        events.append(Abandoned(call_id, round(ticket.record.waited_s, 3)))
        return [*events, *self._finish(ticket, Outcome.ABANDONED, now), *self._dispatch(now)]

    def return_to_bot(self, call_id: str, node: str, now: float) -> list[Event]:
        """Back to the flow at `node`, from a talking agent (e.g. to take a payment) or from the console queue."""
        ticket = self._calls.get(call_id)
        if ticket is None:
            return []
        events = [] if ticket.talking else self._leave_queue(ticket, "returned_to_bot", now)
        events.append(ReturnToBot(call_id, node))
        return [*events, *self._finish(ticket, Outcome.RETURNED_TO_BOT, now), *self._dispatch(now)]

    # --- the agent side --------------------------------------------------------------------------------------

    def agent_available(self, agent_id: str, now: float) -> list[Event]:
        agent = self._agent(agent_id)
        agent.away_after_call = False
        if agent.status is not AgentStatus.AWAY:
            return []
        agent.status, agent.idle_since = AgentStatus.AVAILABLE, now
        for ticket in self._calls.values():
            ticket.declined.discard(agent_id)
        return self._dispatch(now)

    def agent_away(self, agent_id: str, now: float) -> list[Event]:
        """Mid-call this only takes effect when the call ends: going away must never cut a caller off."""
        agent = self._agent(agent_id)
        if agent.status is AgentStatus.BUSY:
            agent.away_after_call = True
            return []
        events: list[Event] = []
        if agent.status is AgentStatus.OFFERED:
            events.append(self._withdraw(self._calls[agent.call_id or ""], "agent_away"))
        self._set_away(agent)
        return [*events, *self._dispatch(now)]

    def agent_disconnected(self, agent_id: str, now: float) -> list[Event]:
        """The console's connection dropped: the agent goes away, and a caller they were talking to goes back
        to the front of the queue rather than being cut off."""
        agent = self._agent(agent_id)
        ticket = self._calls.get(agent.call_id or "")
        events: list[Event] = []
        if ticket is not None and ticket.talking:
            assert ticket.talk_started_at is not None
            ticket.record = replace(
                ticket.record,
                talk_s=ticket.record.talk_s + now - ticket.talk_started_at,
                outcome=None,
                requeues=ticket.record.requeues + 1,
            )
            ticket.agent_id = ticket.talk_started_at = None
            ticket.front, ticket.wait_started_at = True, now
            ticket.declined.clear()  # a new wait after talking to someone: earlier declines no longer apply
            events.append(Requeued(ticket.call.call_id, agent_id))
            self._set_away(agent)
            events.extend(self._start_waiting(ticket, now))
        elif ticket is not None:
            events.append(self._withdraw(ticket, "agent_disconnected"))
            self._set_away(agent)
        else:
            self._set_away(agent)
        return [*events, *self._dispatch(now)]

    def accept(self, agent_id: str, call_id: str, now: float) -> list[Event]:
        """An offer stands until `tick` withdraws it, so an accept racing the timeout still wins; an accept
        for an offer already withdrawn gets a `stale` withdrawal back so the console can close its prompt."""
        agent = self._agent(agent_id)
        ticket = self._calls.get(call_id)
        if ticket is None or ticket.talking or ticket.agent_id != agent_id:
            return [OfferWithdrawn(agent_id, call_id, "stale")]
        waited = now - ticket.wait_started_at
        ticket.record = replace(
            ticket.record, handled_by=agent_id, waited_s=ticket.record.waited_s + waited, outcome=Outcome.ANSWERED
        )
        ticket.talk_started_at, ticket.offer_expires_at = now, None
        agent.status = AgentStatus.BUSY
        return [Connected(agent_id, call_id)]

    def decline(self, agent_id: str, call_id: str, now: float) -> list[Event]:
        agent = self._agent(agent_id)
        ticket = self._calls.get(call_id)
        if ticket is None or ticket.talking or ticket.agent_id != agent_id:
            return [OfferWithdrawn(agent_id, call_id, "stale")]
        ticket.declined.add(agent_id)
        ticket.agent_id = ticket.offer_expires_at = None
        agent.status, agent.call_id = AgentStatus.AVAILABLE, None  # idle_since kept: they are still idle
        return self._dispatch(now)

    def hangup_by_agent(self, call_id: str, now: float) -> list[Event]:
        ticket = self._calls.get(call_id)
        if ticket is None or not ticket.talking:
            return []
        return [*self._finish(ticket, Outcome.AGENT_HUNG_UP, now), *self._dispatch(now)]

    # --- time ------------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Offer timeouts first (so the freed call can go to the next agent in this same tick), then max-wait,
        then new offers, then position announcements, which must count only the calls still waiting."""
        events: list[Event] = []
        for ticket in self._waiting():
            if ticket.offer_expires_at is not None and now >= ticket.offer_expires_at:
                agent = self._agents[ticket.agent_id or ""]
                events.append(self._withdraw(ticket, "timeout"))
                self._set_away(agent)
        for ticket in self._waiting():
            if now - ticket.wait_started_at >= ticket.queue.max_wait_s:
                events.extend(self._leave_queue(ticket, "max_wait", now))
                events.append(MaxWaitReached(ticket.call.call_id, ticket.queue.fallback_node))
                events.extend(self._finish(ticket, Outcome.TIMED_OUT, now))
        events.extend(self._dispatch(now))
        for ticket in self._waiting():
            if now >= ticket.next_announce_at:
                events.append(self._announce(ticket, now))
        return events

    # --- reading ---------------------------------------------------------------------------------------------

    def record(self, call_id: str) -> HandoverRecord | None:
        """The record so far of a handover in progress; a finished one was handed out in its `Ended` event."""
        ticket = self._calls.get(call_id)
        return None if ticket is None else ticket.record

    def agent(self, agent_id: str) -> AgentState:
        return replace(self._agent(agent_id))

    def position(self, call_id: str) -> int | None:
        ticket = self._calls.get(call_id)
        if ticket is None or ticket.talking:
            return None
        return self._position(ticket)

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready state for the console: waiting calls in routing order, calls in progress, agents."""
        waiting = [
            {
                **_call_view(t, now),
                "position": self._position(t),
                "waited_s": round(now - t.wait_started_at, 1),
                "offered_to": t.agent_id,
            }
            for t in self._waiting()
        ]
        talking = [
            {**_call_view(t, now), "agent_id": t.agent_id, "talk_s": round(now - (t.talk_started_at or now), 1)}
            for t in self._calls.values()
            if t.talking
        ]
        agents = [
            {
                "id": a.config.id,
                "name": a.config.name or a.config.id,
                "status": a.status.value,
                "idle_s": _idle_s(a, now),
                "call_id": a.call_id,
                "skills": sorted(a.config.skills),
                "queues": "all" if a.config.queues == "all" else sorted(a.config.queues),
            }
            for a in self._agents.values()
        ]
        return {"waiting": waiting, "talking": talking, "agents": agents}

    # --- internals -------------------------------------------------------------------------------------------

    def _agent(self, agent_id: str) -> AgentState:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise HandoverError(f"unknown agent {agent_id!r}")
        return agent

    def _waiting(self) -> list[_Ticket]:
        return sorted((t for t in self._calls.values() if not t.talking), key=_Ticket.order)

    def _position(self, ticket: _Ticket) -> int:
        """Place among callers of the same queue: a caller can't see, and shouldn't count, other teams' queues."""
        key = ticket.order()
        return 1 + sum(1 for t in self._calls.values() if not t.talking and t.queue is ticket.queue and t.order() < key)

    def _start_waiting(self, ticket: _Ticket, now: float) -> list[Event]:
        return [Hold(ticket.call.call_id, ticket.queue.hold_message), self._announce(ticket, now)]

    def _announce(self, ticket: _Ticket, now: float) -> Announce:
        ticket.next_announce_at = now + ticket.queue.announce_every_s
        position = self._position(ticket)
        return Announce(ticket.call.call_id, position, ticket.queue.position_message.format(position=position))

    def _dispatch(self, now: float) -> list[Event]:
        events: list[Event] = []
        for ticket in self._waiting():
            if ticket.agent_id is not None:
                continue
            candidates = [
                a
                for a in self._agents.values()
                if a.status is AgentStatus.AVAILABLE
                and a.config.id not in ticket.declined
                and a.config.can_take(ticket.queue.name, ticket.skills)
            ]
            if not candidates:
                continue
            agent = min(candidates, key=lambda a: (a.idle_since or 0.0, self._rank[a.config.id]))
            agent.status, agent.call_id = AgentStatus.OFFERED, ticket.call.call_id
            ticket.agent_id, ticket.offer_expires_at = agent.config.id, now + ticket.queue.offer_timeout_s
            ticket.record = replace(ticket.record, offers=ticket.record.offers + 1)
            events.append(Offer(agent.config.id, ticket.call.call_id, ticket.offer_expires_at))
        return events

    def _withdraw(self, ticket: _Ticket, reason: str) -> OfferWithdrawn:
        """Clear an open offer; the agent is left available and the caller decides what happens to them."""
        agent = self._agents[ticket.agent_id or ""]
        agent.status, agent.call_id = AgentStatus.AVAILABLE, None
        ticket.agent_id = ticket.offer_expires_at = None
        return OfferWithdrawn(agent.config.id, ticket.call.call_id, reason)

    def _leave_queue(self, ticket: _Ticket, reason: str, now: float) -> list[Event]:
        events: list[Event] = [] if ticket.agent_id is None else [self._withdraw(ticket, reason)]
        ticket.record = replace(ticket.record, waited_s=ticket.record.waited_s + now - ticket.wait_started_at)
        return events

    def _finish(self, ticket: _Ticket, outcome: Outcome, now: float) -> list[Event]:
        if ticket.talking and ticket.talk_started_at is not None:
            ticket.record = replace(ticket.record, talk_s=ticket.record.talk_s + now - ticket.talk_started_at)
            agent = self._agents[ticket.agent_id or ""]
            agent.call_id = None
            if agent.away_after_call:
                self._set_away(agent)
            else:
                agent.status, agent.idle_since = AgentStatus.AVAILABLE, now
        del self._calls[ticket.call.call_id]
        record = replace(
            ticket.record,
            outcome=outcome,
            ended_at=now,
            waited_s=round(ticket.record.waited_s, 3),
            talk_s=round(ticket.record.talk_s, 3),
        )
        return [Ended(record)]

    @staticmethod
    def _set_away(agent: AgentState) -> None:
        agent.status, agent.call_id, agent.idle_since, agent.away_after_call = AgentStatus.AWAY, None, None, False


def _call_view(ticket: _Ticket, now: float) -> dict[str, Any]:
    call = ticket.call
    return {
        "call_id": call.call_id,
        "queue": ticket.queue.name,
        "priority": call.priority,
        "reason": call.reason,
        "summary": call.summary,
        "caller_number": call.caller_number,
        "caller_name": call.caller_name,
        "payload": call.payload,
        "payload_source": call.payload_source,
        "skills": sorted(ticket.skills),
        "slots": {name: _plain(value) for name, value in call.slots.items()},
        "transcript": [{"who": who, "text": text} for who, text in call.transcript],
        "in_handover_s": round(now - ticket.record.entered_at, 1),
    }


def _idle_s(agent: AgentState, now: float) -> float | None:
    free = agent.status in (AgentStatus.AVAILABLE, AgentStatus.OFFERED)
    return round(now - agent.idle_since, 1) if free and agent.idle_since is not None else None


def _plain(value: Any) -> Any:
    """Slots may hold dates and times; the console wants JSON."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


# --- a desk as data (agent/handover/shared.py keeps one in PostgreSQL for several workers) -------------------

_EVENT_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (Offer, OfferWithdrawn, Hold, Announce, MaxWaitReached, Connected, Abandoned, Requeued, ReturnToBot)
}


def dump_desk(desk: HandoverDesk) -> dict[str, Any]:
    """The desk's whole state, JSON-ready; `load_desk` with the same configuration gives it back. Routing stays
    in `HandoverDesk`: this only moves its state in and out, so a shared desk decides by the same rules."""
    return {
        "seq": desk._seq,
        "agents": {
            agent_id: {
                "status": a.status.value,
                "idle_since": a.idle_since,
                "call_id": a.call_id,
                "away_after_call": a.away_after_call,
            }
            for agent_id, a in desk._agents.items()
        },
        "calls": [
            {
                "call": {
                    **{name: getattr(t.call, name) for name in _CALL_TEXT},
                    "skills_required": list(t.call.skills_required),
                    "priority": t.call.priority,
                    "transcript": [list(line) for line in t.call.transcript],
                    "slots": {name: _plain(value) for name, value in t.call.slots.items()},
                },
                "seq": t.seq,
                "record": _record_data(t.record),
                "wait_started_at": t.wait_started_at,
                "next_announce_at": t.next_announce_at,
                "front": t.front,
                "agent_id": t.agent_id,
                "offer_expires_at": t.offer_expires_at,
                "talk_started_at": t.talk_started_at,
                "declined": sorted(t.declined),
            }
            for t in desk._calls.values()
        ],
    }


def load_desk(queues: Iterable[QueueConfig], agents: Iterable[AgentConfig], state: Mapping[str, Any]) -> HandoverDesk:
    """A desk configured with `queues` and `agents`, in the state `dump_desk` wrote. Agents and queues no longer
    configured are left out (a config changed between workers' restarts), their calls with them."""
    desk = HandoverDesk(queues, agents)
    desk._seq = int(state.get("seq", 0))
    for agent_id, data in (state.get("agents") or {}).items():
        agent = desk._agents.get(agent_id)
        if agent is None:
            continue
        agent.status = AgentStatus(data["status"])
        agent.idle_since, agent.call_id = data["idle_since"], data["call_id"]
        agent.away_after_call = bool(data["away_after_call"])
    for data in state.get("calls") or ():
        raw = data["call"]
        queue = desk._queues.get(raw["queue"])
        if queue is None:
            continue
        call = WaitingCall(
            **{name: raw[name] for name in _CALL_TEXT},
            skills_required=tuple(raw["skills_required"]),
            priority=int(raw["priority"]),
            transcript=tuple((str(who), str(text)) for who, text in raw["transcript"]),
            slots=dict(raw["slots"]),
        )
        desk._calls[call.call_id] = _Ticket(
            call=call,
            queue=queue,
            skills=frozenset(queue.skills) | frozenset(call.skills_required),
            seq=int(data["seq"]),
            record=_record_from(data["record"]),
            wait_started_at=data["wait_started_at"],
            next_announce_at=data["next_announce_at"],
            front=bool(data["front"]),
            agent_id=data["agent_id"],
            offer_expires_at=data["offer_expires_at"],
            talk_started_at=data["talk_started_at"],
            declined=set(data["declined"]),
        )
    return desk


def offer_of(desk: HandoverDesk, agent_id: str) -> tuple[str, float] | None:
    """The call open as an offer to this agent and when the offer runs out, if any."""
    agent = desk._agents.get(agent_id)
    ticket = desk._calls.get(agent.call_id or "") if agent is not None else None
    if ticket is None or ticket.talking or ticket.agent_id != agent_id or ticket.offer_expires_at is None:
        return None
    return ticket.call.call_id, ticket.offer_expires_at


def talking_agents(desk: HandoverDesk) -> dict[str, str]:
    """{call id: agent id} of the calls an agent is talking to."""
    return {t.call.call_id: t.agent_id for t in desk._calls.values() if t.talking and t.agent_id}


def encode_event(event: Event) -> dict[str, Any]:
    if isinstance(event, Ended):
        return {"kind": "Ended", "record": _record_data(event.record)}
    return {"kind": type(event).__name__, **{k: v for k, v in vars(event).items()}}


def decode_event(data: Mapping[str, Any]) -> Event:
    fields_ = {k: v for k, v in data.items() if k != "kind"}
    if data["kind"] == "Ended":
        return Ended(_record_from(fields_["record"]))
    return _EVENT_TYPES[data["kind"]](**fields_)  # type: ignore[no-any-return]


_CALL_TEXT = (
    "call_id",
    "queue",
    "reason",
    "summary",
    "caller_number",
    "caller_name",
    "payload",
    "payload_source",
)


def _record_data(record: HandoverRecord) -> dict[str, Any]:
    data = dict(vars(record))
    data["outcome"] = None if record.outcome is None else record.outcome.value
    return data


def _record_from(data: Mapping[str, Any]) -> HandoverRecord:
    outcome = data.get("outcome")
    return HandoverRecord(**{**data, "outcome": None if outcome is None else Outcome(outcome)})
