"""Durable memory of calls and users: every webhook fact is written here before Meta gets its 200.

It joins the pure rules (`agent.whatsapp.rules`), the rate card and the store, so the runtime asks one
place "may I call this user?", "was this webhook seen before?" and "what did this call cost?".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agent.store.base import (
    ENDING_OWED,
    ENDING_SETTLED,
    CallEventRecord,
    CallRecord,
    ContactEvent,
    Store,
    StoreError,
)
from agent.store.sqlite import EventWrite, StoreTx
from agent.whatsapp.pricing import RateCard, price_call
from agent.whatsapp.rules import (
    DEFAULT_LIMITS,
    BusinessHours,
    CallingLimits,
    Refusal,
    UserCallingState,
    check_calling_enabled,
    check_can_call,
    check_can_request_permission,
    check_inbound_call,
    missed_call_reason,
    record_business_call_answered,
    record_business_call_unanswered,
    record_permission_reply,
    record_permission_request,
    record_user_call,
    record_user_message,
)
from agent.whatsapp.webhooks import (
    CallEvent,
    CallStatus,
    CallWebhook,
    Contact,
    MessageWebhook,
    StatusWebhook,
    UserMessage,
    WebhookPayload,
    call_events,
    call_statuses,
    user_messages,
)

log = logging.getLogger(__name__)

SETTINGS_KEY = "account:settings"  # where settings webhooks are kept, so a restart knows the latest


def _utc(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class FreshEvents:
    """The part of a delivery not handled before: only this is acted on (Meta delivers at least once).

    `keys` are the dedupe keys of every event in it; `CallLedger.handled` marks them handled once the
    runtime is done, and until then a redelivery of them in this process counts as a duplicate.
    """

    calls: list[CallWebhook] = field(default_factory=list)
    statuses: list[StatusWebhook] = field(default_factory=list)
    messages: list[MessageWebhook] = field(default_factory=list)
    duplicates: int = 0
    forwarded: int = 0  # events another worker acts on (the owner of their call, agent/cluster.py)
    keys: list[str] = field(default_factory=list)
    key_of: dict[int, str] = field(default_factory=dict)  # id(event) -> its dedupe key

    def add(self, kind: str, item: Any, key: str) -> None:
        {"call": self.calls, "status": self.statuses, "message": self.messages}[kind].append(item)
        self.keys.append(key)
        self.key_of[id(item)] = key

    def __bool__(self) -> bool:
        return bool(self.calls or self.statuses or self.messages)


# What the writer thread found for each event of a delivery: (kind, the event, its dedupe key, the write).
_Written = tuple[str, Any, str, EventWrite]
#: Decides, inside the job storing a delivery, whether another worker acts on an event (True: it was told):
#: (transaction, call id, our reference or None, dedupe key, now). See agent/cluster.py.
Router = Callable[[StoreTx, str, "str | None", str, datetime], bool]
#: How many recently handled keys are remembered, so a catch-up read racing a handler never repeats it.
_RECENT_KEYS = 10_000


class CallLedger:
    #: How long a webhook delivery may wait for a locked database before it fails (and Meta gets a 500).
    delivery_deadline_s = 5.0

    def __init__(
        self,
        store: Store,
        *,
        phone_number_id: str,
        business_number: str = "",
        limits: CallingLimits = DEFAULT_LIMITS,
        hours: BusinessHours | None = None,
        rate_card: RateCard | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.phone_number_id = phone_number_id
        self.business_number = business_number
        self.limits = limits
        self.hours = hours or BusinessHours.always_open()
        self.rate_card = rate_card or RateCard.load()
        self.now = clock
        # Told how each queued write ended (None: stored), on the writer thread: the runtime's health check.
        self.on_background_write: Callable[[BaseException | None], None] | None = None
        self.calling_enabled = True
        self.bic_restricted_until: datetime | None = None
        # Dedupe keys being handled by this process right now: a redelivery of one is a duplicate, while a
        # redelivery of a stored event nobody is handling (a crash, a handler that raised) is acted on.
        self._in_flight: set[str] = set()
        self._recent: dict[str, None] = {}  # keys this process marked handled lately (insertion-ordered)
        # Several workers on one database: who acts on each stored event (None: this process, always).
        self.router: Router | None = None
        for event in self.store.list_events(SETTINGS_KEY):
            self._apply_settings(dict(event.payload or {}))

    # webhooks -----------------------------------------------------------------
    async def record_webhook(self, payload: WebhookPayload) -> FreshEvents:
        """Store the whole delivery in one transaction (on the writer thread) and say what is to be handled.

        All or nothing: if any event cannot be stored, none is and this raises, so Meta's retry finds
        nothing stored and everything is handled then. The user-state facts are applied in the same
        transaction, once, when an event is first stored, and only for our own number.
        """
        received = self.now()
        # Bounded here too: queued behind slow background writes, the job's own deadline is checked late.
        # A delivery stored after we gave up is unhandled, so Meta's retry still gets it handled.
        written: list[_Written] = await asyncio.wait_for(
            asyncio.wrap_future(
                self.store.submit(
                    lambda tx: self._store_delivery(tx, payload, received), deadline_s=self.delivery_deadline_s
                )
            ),
            self.delivery_deadline_s,
        )
        fresh = FreshEvents()
        for kind, item, key, write in written:
            if kind == "settings":
                if write.stored:
                    self._apply_settings(item)
                continue
            if kind == "forwarded":
                fresh.forwarded += 1
                continue
            if key in self._in_flight or key in self._recent:
                # Taken already: with several workers, a catch-up read may see the commit before this does.
                fresh.duplicates += 1
                continue
            if not (write.stored or (not write.handled and key not in self._in_flight)):
                fresh.duplicates += 1
                continue
            self._in_flight.add(key)
            fresh.add(kind, item, key)
        return fresh

    def _store_delivery(self, tx: StoreTx, payload: WebhookPayload, received: datetime) -> list[_Written]:
        """Runs on the writer thread inside the delivery's savepoint: touches only `tx`, never `self`'s state."""
        out: list[_Written] = []
        for event in call_events(payload):
            call = event.call
            key = _key(call.id, call.event, call.timestamp, call.status, call.session.sdp if call.session else None)
            at = _utc(call.timestamp) or received
            raw = call.model_dump(by_alias=True, exclude_none=True)
            envelope = {
                "kind": "call",
                "waba_id": event.waba_id,
                "phone_number_id": event.phone_number_id,
                "display_phone_number": event.display_phone_number,
                "contact": event.contact.model_dump(by_alias=True, exclude_none=True) if event.contact else None,
            }
            write = tx.record_event(
                call.id, call.event, at, raw, dedupe_key=key, received_at=received, handled=False, envelope=envelope
            )
            routed = self._route(tx, "call", call.id, call.biz_opaque_callback_data, key, write, received)
            out.append((routed, event, key, write))
            ours = event.phone_number_id == self.phone_number_id
            if write.stored and ours and call.event == "connect":
                if (call.direction or "USER_INITIATED") == "USER_INITIATED":
                    user = call.from_ or (event.contact.wa_id if event.contact else None)
                    if user:
                        # §8.1: a user call opens the window even if we never answer it.
                        self._update_user_in(tx, user, lambda s, at=at: record_user_call(s, at, connected=False))
        for status in call_statuses(payload):
            st = status.status
            key = _key(st.id, "status", st.status, st.timestamp)
            at = _utc(st.timestamp) or received
            raw = st.model_dump(exclude_none=True)
            envelope = {"kind": "status", "waba_id": status.waba_id, "phone_number_id": status.phone_number_id}
            write = tx.record_event(
                st.id, f"status:{st.status}", at, raw, dedupe_key=key, received_at=received, handled=False,
                envelope=envelope,
            )  # fmt: skip
            routed = self._route(tx, "status", st.id, st.biz_opaque_callback_data, key, write, received)
            out.append((routed, status, key, write))
        for change in (c for entry in payload.entry for c in entry.changes if c.field == "account_settings_update"):
            key = _key("settings", change.value)
            write = tx.record_event(SETTINGS_KEY, change.field, received, change.value, dedupe_key=key)
            out.append(("settings", change.value, key, write))
        for message in user_messages(payload):
            msg = message.message
            at = _utc(msg.timestamp) or received
            key = _key("message", msg.id or (message.user, msg.timestamp))
            raw = msg.model_dump(by_alias=True, exclude_none=True)
            envelope = {"kind": "message", "phone_number_id": message.phone_number_id, "user": message.user}
            write = tx.record_event(
                f"user:{message.user}", "message", at, raw, dedupe_key=key, handled=False, envelope=envelope
            )
            out.append(("message", message, key, write))
            if not write.stored or message.phone_number_id != self.phone_number_id:
                continue
            self._update_user_in(tx, message.user, lambda s, at=at: record_user_message(s, at))
            reply = message.permission_reply
            if reply is not None:
                self._update_user_in(
                    tx,
                    message.user,
                    lambda s, at=at, reply=reply: record_permission_reply(
                        s,
                        at,
                        response=reply.response,
                        is_permanent=reply.is_permanent,
                        expires_at=_utc(reply.expiration_timestamp),
                        source=reply.response_source or "user_action",
                        limits=self.limits,
                    ),
                )
        return out

    def _route(
        self, tx: StoreTx, kind: str, call_id: str, ref: str | None, key: str, write: EventWrite, now: datetime
    ) -> str:
        """`kind`, or "forwarded" when another worker is to act on the event (only with a router)."""
        if self.router is None or (write.handled and not write.stored):
            return kind
        return "forwarded" if self.router(tx, call_id, ref, key, now) else kind

    async def handled(self, fresh: FreshEvents, *, only: Sequence[object] | None = None) -> None:
        """Mark a delivery's events handled (after the runtime finished with them, however it went).

        `only` limits the mark to those events (a handler cut short); the others stay unhandled for the next
        start-up, and this process stops treating any of them as in flight.
        """
        keys = list(fresh.keys) if only is None else [fresh.key_of[id(e)] for e in only if id(e) in fresh.key_of]
        marked = False
        try:
            if keys:
                # Shielded: a shutdown cancelling the handler must not leave done work to be redone at start-up.
                await asyncio.shield(asyncio.wrap_future(self.store.submit(lambda tx: tx.mark_handled(keys))))
            marked = True
        except Exception:
            log.exception("could not mark %d webhook events handled; they will be handled again at start-up", len(keys))
        finally:
            self._in_flight.difference_update(fresh.keys)
            if marked:  # remembered as done (a catch-up read from before the mark must not redo them)
                for key in keys:
                    self._recent[key] = None
                while len(self._recent) > _RECENT_KEYS:
                    del self._recent[next(iter(self._recent))]

    def pending_events(self, records: Sequence[CallEventRecord] | None = None) -> FreshEvents:
        """Events stored by an earlier process (or an earlier delivery) and never handled, rebuilt for handling.

        Blocking read, for start-up, unless `records` are given (a worker's own events, read off the loop).
        Events this process is handling now or has just handled are left out; one that cannot be rebuilt is
        logged and marked handled, so it is not retried at every start-up.
        """
        fresh = FreshEvents()
        broken: list[str] = []
        for record in self.store.unhandled_events() if records is None else records:
            if record.dedupe_key in self._in_flight or record.dedupe_key in self._recent:
                continue
            try:
                rebuilt = self._rebuild(record)
            except Exception:
                log.exception("stored event %s of %s cannot be rebuilt; dropping it", record.event, record.call_id)
                rebuilt = None
            if rebuilt is None:
                broken.append(record.dedupe_key)
                continue
            self._in_flight.add(record.dedupe_key)
            fresh.add(rebuilt[0], rebuilt[1], record.dedupe_key)
        if broken:
            self.store.mark_handled(broken)
        return fresh

    @staticmethod
    def _rebuild(record: CallEventRecord) -> tuple[str, Any] | None:
        envelope = dict(record.envelope or {})
        payload = dict(record.payload or {})
        kind = envelope.get("kind")
        if kind == "call":
            contact = envelope.get("contact")
            return kind, CallWebhook(
                waba_id=str(envelope.get("waba_id") or ""),
                phone_number_id=str(envelope.get("phone_number_id") or ""),
                display_phone_number=envelope.get("display_phone_number"),
                contact=Contact.model_validate(contact) if contact else None,
                call=CallEvent.model_validate(payload),
            )
        if kind == "status":
            return kind, StatusWebhook(
                waba_id=str(envelope.get("waba_id") or ""),
                phone_number_id=str(envelope.get("phone_number_id") or ""),
                status=CallStatus.model_validate(payload),
            )
        if kind == "message":
            message = UserMessage.model_validate(payload)
            reply = message.interactive.call_permission_reply if message.interactive else None
            return kind, MessageWebhook(
                str(envelope.get("phone_number_id") or ""), str(envelope["user"]), message, reply
            )
        return None

    def _apply_settings(self, value: dict[str, Any]) -> None:
        """Meta's own record of the number's call settings (spec §5): calling on/off, BIC restrictions."""
        calling = (value.get("phone_number_settings") or {}).get("calling") or value.get("calling")
        if not isinstance(calling, dict):
            return
        if isinstance(calling.get("status"), str):
            self.calling_enabled = calling["status"].upper() != "DISABLED"
            log.info("calling is %s on this number (settings update)", calling["status"])
        restrictions = (calling.get("restrictions") or {}).get("restrictions_list") or []
        until = None
        for item in restrictions:
            if isinstance(item, dict) and item.get("type") == "RESTRICTED_BUSINESS_INITIATED_CALLING":
                expiry = item.get("expiration")
                with contextlib.suppress(TypeError, ValueError):
                    until = datetime.fromtimestamp(int(expiry), UTC)
        self.bic_restricted_until = until

    def terminated_before_connect(self, call_id: str) -> bool:
        """Meta does not order deliveries: a terminate stored before its connect means do not answer.

        Webhook events are committed before they are handled, so no need to wait for queued writes here.
        """
        return any(e.event == "terminate" for e in self.store.list_events(call_id, settle=False))

    # users --------------------------------------------------------------------
    def user_state(self, user: str) -> UserCallingState:
        record = self.store.get_user_state(self.phone_number_id, user)
        return UserCallingState.from_record(record) if record else UserCallingState.new(self.phone_number_id, user)

    def _update_user_in(
        self, tx: StoreTx, user: str, change: Callable[[UserCallingState], UserCallingState]
    ) -> UserCallingState:
        """Read, change and write a user's state inside one transaction, so two changes never overwrite."""
        record = tx.get_user_state(self.phone_number_id, user)
        state = UserCallingState.from_record(record) if record else UserCallingState.new(self.phone_number_id, user)
        state = change(state)
        tx.put_user_state(state.to_record())
        return state

    def _update_user(self, user: str, change: Callable[[UserCallingState], UserCallingState]) -> None:
        self._background(f"user {user}'s calling state", lambda tx: self._update_user_in(tx, user, change))

    def _background(self, what: str, fn: Callable[[StoreTx], Any]) -> None:
        """Queue a write on the store's writer thread without waiting: the loop never blocks on the disk.

        Writes keep their order (one writer); a failure is logged, as nobody is waiting to hear about it.
        Reads through the store wait for queued writes first, so a reader still sees them.
        """

        def report(future: Future[Any]) -> None:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                log.error("could not store %s", what, exc_info=error)
            if self.on_background_write is not None:
                self.on_background_write(error)

        try:
            self.store.submit(fn).add_done_callback(report)
        except StoreError as exc:  # closed: a call ending during shutdown; nobody is waiting to hear it
            log.error("could not store %s: %s", what, exc)

    def check_outbound(self, user: str, *, has_live_call: bool) -> Refusal | None:
        return check_calling_enabled(self.calling_enabled) or check_can_call(
            self.user_state(user),
            self.business_number,
            self.now(),
            limits=self.limits,
            has_live_call=has_live_call,
            restricted_until=self.bic_restricted_until,
        )

    def check_permission_request(self, user: str) -> Refusal | None:
        return check_can_request_permission(self.user_state(user), self.now(), limits=self.limits)

    def permission_requested(self, user: str) -> None:
        now = self.now()
        self._update_user(user, lambda s: record_permission_request(s, now))

    async def reserve_permission_request(self, user: str) -> tuple[Refusal | None, datetime]:
        """Check the request limits (§4.6) and count the request in one write job, so two requests at once
        (two workers, or two API calls) cannot both pass the last allowed one. Returns (refusal, when)."""
        now = self.now()

        def job(tx: StoreTx) -> Refusal | None:
            record = tx.get_user_state(self.phone_number_id, user)
            state = UserCallingState.from_record(record) if record else UserCallingState.new(self.phone_number_id, user)
            refusal = check_can_request_permission(state, now, limits=self.limits)
            if refusal is None:
                tx.put_user_state(record_permission_request(state, now).to_record())
            return refusal

        refusal = await asyncio.wait_for(asyncio.wrap_future(self.store.submit(job, deadline_s=5.0)), 5.0)
        return refusal, now

    def release_permission_request(self, user: str, at: datetime) -> None:
        """The request reserved at `at` was never sent (Meta refused it): it does not count."""

        def forget(state: UserCallingState) -> UserCallingState:
            return replace(state, permission_requests=tuple(t for t in state.permission_requests if t != at))

        self._update_user(user, forget)

    def check_inbound(self, live: int, cap: int) -> Refusal | None:
        return check_inbound_call(self.now(), hours=self.hours, live=live, cap=cap)

    def business_call_answered(self, user: str) -> None:
        now = self.now()
        self._update_user(user, lambda s: record_business_call_answered(s, now))

    def business_call_unanswered(self, user: str) -> None:
        now = self.now()
        self._update_user(user, lambda s: record_business_call_unanswered(s, now, limits=self.limits))

    def user_call_connected(self, user: str) -> None:
        now = self.now()
        self._update_user(user, lambda s: record_user_call(s, now, connected=True))

    # calls --------------------------------------------------------------------
    def call_started(self, record: CallRecord) -> None:
        record.created_at = record.created_at or self.now()
        record.phone_number_id = record.phone_number_id or self.phone_number_id
        self._background(f"call {record.id}", lambda tx: tx.save_call(record))

    async def record_call_start(
        self, record: CallRecord, guard: Callable[[StoreTx, CallRecord], None] | None = None
    ) -> None:
        """Like `call_started`, but waits until the record is durably stored (and raises if it cannot be).

        `guard` runs first in the same write job and may refuse the call by raising: a rule checked and the
        call recorded at once, e.g. the deployment-wide call cap (agent/cluster.py)."""
        record.created_at = record.created_at or self.now()
        record.phone_number_id = record.phone_number_id or self.phone_number_id

        def job(tx: StoreTx) -> None:
            if guard is not None:
                guard(tx, record)
            tx.save_call(record)

        await asyncio.wait_for(asyncio.wrap_future(self.store.submit(job, deadline_s=5.0)), 5.0)

    def call_updated(self, call_id: str, **changes: Any) -> None:
        self._background(f"call {call_id}'s update", lambda tx: tx.update_call(call_id, **changes))

    def call_finished(
        self,
        call_id: str,
        *,
        direction: str,
        callee: str | None,
        outcome: str,
        end_reason: str,
        answered_at: datetime | None,
        transcript: list[Any],
        slots: dict[str, Any],
        handled_by: str | None = None,
    ) -> Decimal:
        """Close the record: duration from pickup to now, cost at the callee's list rate (6 s pulses)."""
        ended = self.now()
        duration = (ended - answered_at).total_seconds() if answered_at else 0.0
        try:
            cost = price_call(direction, callee or "", duration, self.rate_card) if callee else Decimal(0)
        except Exception as exc:  # an unknown country must not lose the call record
            log.warning("call %s: no price for %s (%s); cost left empty", call_id, callee, exc)
            cost = Decimal(0)
        changes = dict(
            state="ended",
            outcome=outcome,
            end_reason=end_reason,
            ended_at=ended,
            answered_at=answered_at,
            duration_s=round(duration, 2),
            cost=cost,
            transcript=transcript,
            slots=slots,
            handled_by=handled_by,
        )
        self._background(f"call {call_id}'s record", lambda tx: tx.update_call(call_id, **changes))
        return cost

    def ending_owed(self, call_id: str, error: str) -> None:
        """Meta never acknowledged this call's terminate: until it does, it is sent again (now and then, and
        at the next start)."""
        at = self.now()
        self._background(
            f"call {call_id}'s owed ending",
            lambda tx: tx.record_event(
                call_id, ENDING_OWED, at, {"error": error[:300]}, dedupe_key=f"{call_id}:{ENDING_OWED}"
            ),
        )

    def ending_settled(self, call_id: str, how: str) -> None:
        at = self.now()
        self._background(
            f"call {call_id}'s settled ending",
            lambda tx: tx.record_event(
                call_id, ENDING_SETTLED, at, {"how": how}, dedupe_key=f"{call_id}:{ENDING_SETTLED}"
            ),
        )

    def record_flow_result(self, call_id: str, result: dict[str, Any]) -> None:
        """Where the flow left the call (`flow_result` event), read by reports for containment."""
        at = self.now()
        self._background(
            f"call {call_id}'s flow result",
            lambda tx: tx.record_event(call_id, "flow_result", at, result, dedupe_key=f"{call_id}:flow_result"),
        )

    def record_turn(self, call_id: str, n: int, turn: dict[str, Any]) -> None:
        """One turn's stage timings as an event of the call, queued like every other runtime write."""
        at = self.now()
        self._background(
            f"call {call_id}'s turn {n}",
            lambda tx: tx.record_event(call_id, "turn", at, turn, dedupe_key=f"{call_id}:turn:{n}"),
        )

    def missed_call(self, user: str, reason: str, call_id: str | None, refusal: Refusal | None = None) -> None:
        detail = refusal.as_dict() if refusal else {}
        event = ContactEvent(
            at=self.now(),
            user=user,
            reason=reason,
            phone_number_id=self.phone_number_id,
            call_id=call_id,
            detail=detail,
        )
        self._background(f"missed call {call_id}", lambda tx: tx.add_contact_event(event))

    @staticmethod
    def missed_reason(refusal: Refusal | None) -> str:
        return missed_call_reason(refusal)
