"""Routing rules of the handover desk, driven by explicit `now` values: no sleeping, no event loop."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.handover.queues import (
    Abandoned,
    AgentConfig,
    AgentStatus,
    Announce,
    Connected,
    Ended,
    HandoverDesk,
    HandoverError,
    Hold,
    MaxWaitReached,
    Offer,
    OfferWithdrawn,
    Outcome,
    QueueConfig,
    Requeued,
    ReturnToBot,
    WaitingCall,
)

SUPPORT = QueueConfig(name="support", max_wait_s=300, announce_every_s=30, offer_timeout_s=30, fallback_node="callback")
VIP = QueueConfig(name="vip", priority=10)
SPANISH = QueueConfig(name="es", skills=("spanish",))


def agent(agent_id: str, *skills: str, queues: frozenset[str] | str = "all") -> AgentConfig:
    return AgentConfig(id=agent_id, name=agent_id.title(), skills=frozenset(skills), queues=queues)  # type: ignore[arg-type]


def call(call_id: str, queue: str = "support", **kw: object) -> WaitingCall:
    return WaitingCall(call_id=call_id, queue=queue, **kw)  # type: ignore[arg-type]


def desk(*agents: AgentConfig, queues: tuple[QueueConfig, ...] = (SUPPORT, VIP, SPANISH)) -> HandoverDesk:
    return HandoverDesk(queues, agents)


def of(kind: type, events: list) -> list:
    return [e for e in events if isinstance(e, kind)]


def ended(events: list) -> Ended:
    (only,) = of(Ended, events)
    return only


def test_enqueue_plays_hold_then_position_then_offers_an_available_agent() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    events = d.enqueue(call("c1"), now=10)
    assert events == [
        Hold("c1", SUPPORT.hold_message),
        Announce("c1", 1, "You are number 1 in the queue."),
        Offer("ana", "c1", expires_at=40),
    ]
    assert d.agent("ana").status is AgentStatus.OFFERED


def test_an_agent_becoming_available_gets_the_waiting_call() -> None:
    d = desk(agent("ana"))
    assert of(Offer, d.enqueue(call("c1"), now=0)) == []
    assert d.agent_available("ana", now=5) == [Offer("ana", "c1", expires_at=35)]


def test_skills_must_all_match_queue_and_flow_skills() -> None:
    d = desk(agent("ana", "billing"), agent("bea", "spanish"), agent("cy", "spanish", "billing"))
    for name in ("ana", "bea", "cy"):
        d.agent_available(name, now=0)
    # The queue needs spanish and the flow node adds billing: only cy has both.
    assert of(Offer, d.enqueue(call("c1", "es", skills_required=("billing",)), now=1)) == [Offer("cy", "c1", 31)]
    assert of(Offer, d.enqueue(call("c2", "es"), now=2)) == [Offer("bea", "c2", 32)]
    assert of(Offer, d.enqueue(call("c3", "es"), now=3)) == []  # ana lacks spanish


def test_agents_only_get_calls_from_queues_they_serve() -> None:
    d = desk(agent("ana", queues=frozenset({"vip"})), agent("bea"))
    d.agent_available("ana", now=0)  # idle longer, but not in support
    d.agent_available("bea", now=5)
    assert of(Offer, d.enqueue(call("c1"), now=10)) == [Offer("bea", "c1", 40)]


def test_longest_idle_agent_wins_and_ties_go_to_config_order() -> None:
    d = desk(agent("ana"), agent("bea"), agent("cy"))
    d.agent_available("bea", now=0)
    d.agent_available("ana", now=5)
    d.agent_available("cy", now=5)
    assert of(Offer, d.enqueue(call("c1"), now=10)) == [Offer("bea", "c1", 40)]
    assert of(Offer, d.enqueue(call("c2"), now=11)) == [Offer("ana", "c2", 41)]
    assert of(Offer, d.enqueue(call("c3"), now=12)) == [Offer("cy", "c3", 42)]


def test_after_a_call_the_agent_goes_to_the_back_of_the_idle_line() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    d.enqueue(call("c1"), now=2)
    d.accept("ana", "c1", now=3)
    d.hangup_by_agent("c1", now=60)
    assert of(Offer, d.enqueue(call("c2"), now=61)) == [Offer("bea", "c2", 91)]


def test_one_agent_per_call_and_one_call_per_agent() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.enqueue(call("c1"), now=0)
    d.enqueue(call("c2"), now=1)
    d.enqueue(call("c3"), now=2)
    offers = of(Offer, d.agent_available("ana", now=3) + d.agent_available("bea", now=4))
    assert offers == [Offer("ana", "c1", 33), Offer("bea", "c2", 34)]
    # Ticking while offers are open never duplicates them, and c3 waits for a free agent.
    assert of(Offer, d.tick(10) + d.tick(20)) == []
    snapshot = d.snapshot(now=20)
    assert [(w["call_id"], w["offered_to"]) for w in snapshot["waiting"]] == [
        ("c1", "ana"),
        ("c2", "bea"),
        ("c3", None),
    ]
    # An agent can't take a call offered to someone else.
    assert d.accept("bea", "c1", now=21) == [OfferWithdrawn("bea", "c1", "stale")]
    assert d.accept("ana", "c1", now=22) == [Connected("ana", "c1")]
    assert d.accept("ana", "c1", now=23) == [OfferWithdrawn("ana", "c1", "stale")]


def test_unanswered_offer_moves_to_the_next_agent_after_30_s_and_sets_the_first_away() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    assert of(Offer, d.enqueue(call("c1"), now=10)) == [Offer("ana", "c1", 40)]
    assert of(Offer, d.tick(39.9)) == []
    events = d.tick(40)
    assert events[:2] == [OfferWithdrawn("ana", "c1", "timeout"), Offer("bea", "c1", 70)]
    assert d.agent("ana").status is AgentStatus.AWAY
    # Bea doesn't answer either: nobody is left, the caller keeps waiting (and hearing announcements).
    events = d.tick(70)
    assert of(OfferWithdrawn, events) == [OfferWithdrawn("bea", "c1", "timeout")]
    assert of(Offer, events) == []
    # Ana comes back and gets it again; the record counts every offer.
    assert d.agent_available("ana", now=75) == [Offer("ana", "c1", 105)]
    d.accept("ana", "c1", now=80)
    record = d.record("c1")
    assert record is not None and record.offers == 3 and record.waited_s == 70


def test_accept_racing_the_timeout_wins_until_the_tick_withdraws_the_offer() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    assert d.accept("ana", "c1", now=30.5) == [Connected("ana", "c1")]
    assert of(OfferWithdrawn, d.tick(31)) == []


def test_decline_skips_that_agent_for_that_call_only() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=1)
    assert d.decline("ana", "c1", now=2) == []  # nobody else yet
    assert d.agent("ana").status is AgentStatus.AVAILABLE
    assert of(Offer, d.tick(40)) == []  # not re-offered to ana
    assert of(Offer, d.enqueue(call("c2"), now=41)) == [Offer("ana", "c2", 71)]
    assert d.agent_available("bea", now=42) == [Offer("bea", "c1", 72)]


def test_decline_is_forgotten_when_the_agent_goes_away_and_comes_back() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=1)
    d.decline("ana", "c1", now=2)
    d.agent_away("ana", now=3)
    assert d.agent_available("ana", now=4) == [Offer("ana", "c1", 34)]


def test_decline_hands_the_call_to_the_next_agent_at_once() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    d.enqueue(call("c1"), now=2)
    assert d.decline("ana", "c1", now=3) == [Offer("bea", "c1", 33)]


def test_agent_going_away_with_an_open_offer_passes_it_on() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    d.enqueue(call("c1"), now=2)
    assert d.agent_away("ana", now=3) == [OfferWithdrawn("ana", "c1", "agent_away"), Offer("bea", "c1", 33)]


def test_going_away_mid_call_takes_effect_when_the_call_ends() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    d.accept("ana", "c1", now=1)
    assert d.agent_away("ana", now=2) == []
    assert d.agent("ana").status is AgentStatus.BUSY
    d.enqueue(call("c2"), now=3)
    assert of(Offer, d.hangup_by_agent("c1", now=10)) == []
    assert d.agent("ana").status is AgentStatus.AWAY


def test_max_wait_runs_the_fallback_node_and_records_timed_out() -> None:
    d = desk(agent("ana"))
    d.enqueue(call("c1"), now=100)
    assert of(MaxWaitReached, d.tick(399)) == []
    events = d.tick(400)
    assert of(MaxWaitReached, events) == [MaxWaitReached("c1", "callback")]
    record = ended(events).record
    assert (record.outcome, record.waited_s, record.talk_s, record.handled_by) == (Outcome.TIMED_OUT, 300, 0, None)
    assert of(Announce, events) == []  # no position announcement for a caller who has left the queue
    assert d.record("c1") is None and d.snapshot(400)["waiting"] == []


def test_max_wait_withdraws_an_open_offer_and_frees_the_agent_for_the_next_call() -> None:
    quick = QueueConfig(name="support", max_wait_s=45, offer_timeout_s=30)
    d = desk(agent("ana"), agent("bea"), queues=(quick,))
    d.enqueue(call("c1"), now=0)
    d.agent_available("ana", now=1)  # offered until 31
    d.tick(31)  # ana timed out, set away
    d.agent_available("bea", now=40)  # offered until 70
    d.enqueue(call("c2"), now=41)
    events = d.tick(45)
    assert of(OfferWithdrawn, events) == [OfferWithdrawn("bea", "c1", "max_wait")]
    assert of(MaxWaitReached, events) == [MaxWaitReached("c1", None)]
    assert of(Offer, events) == [Offer("bea", "c2", 75)]


def test_position_is_announced_every_interval_and_counts_down() -> None:
    d = desk(agent("ana"))
    d.enqueue(call("c1"), now=0)
    assert of(Announce, d.enqueue(call("c2"), now=10)) == [Announce("c2", 2, "You are number 2 in the queue.")]
    assert of(Announce, d.tick(29)) == []
    assert of(Announce, d.tick(30)) == [Announce("c1", 1, "You are number 1 in the queue.")]
    assert of(Announce, d.tick(40)) == [Announce("c2", 2, "You are number 2 in the queue.")]
    d.caller_hung_up("c1", now=45)
    assert of(Announce, d.tick(59)) == []
    assert of(Announce, d.tick(70)) == [Announce("c2", 1, "You are number 1 in the queue.")]


def test_position_counts_only_callers_of_the_same_queue() -> None:
    d = desk(agent("ana"))
    d.enqueue(call("v1", "vip"), now=0)
    d.enqueue(call("s1"), now=1)
    assert d.position("s1") == 1 and d.position("v1") == 1


def test_custom_position_message() -> None:
    q = QueueConfig(name="support", position_message="Quedan {position} personas antes que usted.")
    d = desk(queues=(q,))
    assert of(Announce, d.enqueue(call("c1"), now=0)) == [Announce("c1", 1, "Quedan 1 personas antes que usted.")]


def test_caller_hanging_up_while_waiting_is_abandoned_and_withdraws_the_offer() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=10)
    events = d.caller_hung_up("c1", now=25)
    assert events[:2] == [OfferWithdrawn("ana", "c1", "caller_hung_up"), Abandoned("c1", 15)]
    record = ended(events).record
    assert (record.outcome, record.waited_s, record.handled_by, record.ended_at) == (Outcome.ABANDONED, 15, None, 25)
    assert d.agent("ana").status is AgentStatus.AVAILABLE
    assert d.accept("ana", "c1", now=26) == [OfferWithdrawn("ana", "c1", "stale")]
    assert d.caller_hung_up("c1", now=27) == []  # a second hang-up notice is harmless


def test_abandoned_call_frees_its_agent_for_the_next_caller() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=1)
    d.enqueue(call("c2"), now=2)
    assert of(Offer, d.caller_hung_up("c1", now=3)) == [Offer("ana", "c2", 33)]


def test_caller_hanging_up_while_talking_records_talk_time() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    d.accept("ana", "c1", now=12)
    record = ended(d.caller_hung_up("c1", now=100)).record
    assert (record.outcome, record.handled_by, record.waited_s, record.talk_s) == (
        Outcome.CALLER_HUNG_UP,
        "ana",
        12,
        88,
    )
    assert d.agent("ana").status is AgentStatus.AVAILABLE and d.agent("ana").idle_since == 100


def test_record_fields_when_the_agent_hangs_up() -> None:
    d = desk(agent("ana"))
    d.enqueue(call("c1"), now=5)
    d.agent_available("ana", now=20)
    d.accept("ana", "c1", now=25)
    assert d.record("c1").outcome is Outcome.ANSWERED  # type: ignore[union-attr]
    record = ended(d.hangup_by_agent("c1", now=85)).record
    assert record.call_id == "c1" and record.queue == "support" and record.entered_at == 5
    assert (record.handled_by, record.waited_s, record.talk_s, record.outcome) == ("ana", 20, 60, Outcome.AGENT_HUNG_UP)
    assert (record.offers, record.requeues, record.ended_at) == (1, 0, 85)


def test_agent_disconnect_puts_the_call_back_at_the_front_of_the_queue() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    d.accept("ana", "c1", now=10)
    d.enqueue(call("c2"), now=20)  # waiting: bea is away
    events = d.agent_disconnected("ana", now=50)
    assert events == [
        Requeued("c1", "ana"),
        Hold("c1", SUPPORT.hold_message),
        Announce("c1", 1, "You are number 1 in the queue."),
    ]
    assert d.agent("ana").status is AgentStatus.AWAY
    assert [w["call_id"] for w in d.snapshot(50)["waiting"]] == ["c1", "c2"]
    assert d.agent_available("bea", now=55) == [Offer("bea", "c1", 85)]
    d.accept("bea", "c1", now=60)
    record = ended(d.hangup_by_agent("c1", now=100)).record
    assert (record.handled_by, record.waited_s, record.talk_s, record.requeues) == ("bea", 20, 80, 1)


def test_requeued_call_gets_a_fresh_max_wait() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    d.accept("ana", "c1", now=290)
    d.agent_disconnected("ana", now=300)
    assert of(MaxWaitReached, d.tick(590)) == []
    assert of(MaxWaitReached, d.tick(600)) == [MaxWaitReached("c1", "callback")]


def test_agent_disconnect_with_an_open_offer_passes_it_on() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    d.enqueue(call("c1"), now=2)
    assert d.agent_disconnected("ana", now=3) == [
        OfferWithdrawn("ana", "c1", "agent_disconnected"),
        Offer("bea", "c1", 33),
    ]


def test_return_to_bot_from_a_talking_agent() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    d.accept("ana", "c1", now=5)
    events = d.return_to_bot("c1", "take_payment", now=35)
    assert events[0] == ReturnToBot("c1", "take_payment")
    record = ended(events).record
    assert (record.outcome, record.handled_by, record.talk_s) == (Outcome.RETURNED_TO_BOT, "ana", 30)
    assert d.agent("ana").status is AgentStatus.AVAILABLE


def test_return_to_bot_from_the_queue() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("c1"), now=0)
    events = d.return_to_bot("c1", "menu", now=4)
    assert events[:2] == [OfferWithdrawn("ana", "c1", "returned_to_bot"), ReturnToBot("c1", "menu")]
    assert ended(events).record.waited_s == 4


def test_priorities_queue_first_then_call_then_entry_time() -> None:
    d = desk(agent("ana"))
    d.enqueue(call("s-early"), now=0)
    d.enqueue(call("s-urgent", priority=5), now=1)
    d.enqueue(call("v-late", "vip"), now=2)
    d.enqueue(call("s-late"), now=3)
    assert [w["call_id"] for w in d.snapshot(4)["waiting"]] == ["v-late", "s-urgent", "s-early", "s-late"]
    assert d.agent_available("ana", now=4) == [Offer("ana", "v-late", 34)]


def test_a_call_nobody_can_take_does_not_block_the_ones_behind_it() -> None:
    d = desk(agent("ana"))
    d.agent_available("ana", now=0)
    d.enqueue(call("e1", "es"), now=0)
    assert of(Offer, d.enqueue(call("s1"), now=1)) == [Offer("ana", "s1", 31)]


def test_snapshot_shows_what_the_console_needs() -> None:
    d = desk(agent("ana", "billing"), agent("bea"))
    d.agent_available("bea", now=0)
    d.enqueue(
        call(
            "c1",
            reason="refund",
            slots={"order": "A17", "due": dt.date(2025, 3, 1), "ok": True},
            transcript=[("bot", "Hello"), ("caller", "I want a refund")],
            summary="Refund for A17.",
            caller_number="+34600000000",
        ),
        now=10,
    )
    snap = d.snapshot(now=25)
    (waiting,) = snap["waiting"]
    assert waiting["position"] == 1 and waiting["waited_s"] == 15 and waiting["offered_to"] == "bea"
    assert waiting["reason"] == "refund" and waiting["summary"] == "Refund for A17."
    assert waiting["slots"] == {"order": "A17", "due": "2025-03-01", "ok": True}
    assert waiting["transcript"][-1] == {"who": "caller", "text": "I want a refund"}
    agents = {a["id"]: a for a in snap["agents"]}
    assert agents["ana"]["status"] == "away" and agents["ana"]["idle_s"] is None
    assert agents["bea"]["status"] == "offered" and agents["bea"]["call_id"] == "c1"
    d.accept("bea", "c1", now=26)
    (talking,) = d.snapshot(now=36)["talking"]
    assert talking["agent_id"] == "bea" and talking["talk_s"] == 10


def test_wiring_mistakes_raise() -> None:
    d = desk(agent("ana"))
    with pytest.raises(HandoverError, match="unknown queue 'sales'"):
        d.enqueue(call("c1", "sales"), now=0)
    d.enqueue(call("c1"), now=0)
    with pytest.raises(HandoverError, match="already"):
        d.enqueue(call("c1"), now=1)
    with pytest.raises(HandoverError, match="unknown agent"):
        d.agent_available("zed", now=0)


def test_stale_notices_are_no_ops() -> None:
    d = desk(agent("ana"))
    assert d.hangup_by_agent("nope", now=0) == []
    assert d.return_to_bot("nope", "menu", now=0) == []
    assert d.decline("ana", "nope", now=0) == [OfferWithdrawn("ana", "nope", "stale")]
    assert d.agent_disconnected("ana", now=0) == []
    assert d.agent_available("ana", now=1) == [] and d.agent_available("ana", now=2) == []
    assert d.agent("ana").idle_since == 1  # a repeated "available" doesn't cost the agent their place


def test_a_requeued_call_may_go_to_an_agent_who_declined_it_before() -> None:
    d = desk(agent("ana"), agent("bea"))
    d.agent_available("ana", now=0)
    d.agent_available("bea", now=1)
    d.enqueue(call("c1"), now=2)
    d.decline("ana", "c1", now=3)  # goes to bea
    d.accept("bea", "c1", now=4)
    d.enqueue(call("c2"), now=5)  # ana takes c2 and finishes it
    d.accept("ana", "c2", now=6)
    d.hangup_by_agent("c2", now=7)
    assert of(Offer, d.agent_disconnected("bea", now=8)) == [Offer("ana", "c1", 38)]
