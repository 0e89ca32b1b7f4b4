"""Durable memory of calls and users: every webhook fact is written here before Meta gets its 200.

It joins the pure rules (`agent.whatsapp.rules`), the rate card and the store, so the runtime asks one
place "may I call this user?", "was this webhook seen before?" and "what did this call cost?".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agent.store.base import CallRecord, ContactEvent, Store
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
    CallWebhook,
    MessageWebhook,
    StatusWebhook,
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
    """The part of a delivery not seen before: only this is acted on (Meta delivers at least once)."""

    calls: list[CallWebhook] = field(default_factory=list)
    statuses: list[StatusWebhook] = field(default_factory=list)
    messages: list[MessageWebhook] = field(default_factory=list)
    duplicates: int = 0

    def __bool__(self) -> bool:
        return bool(self.calls or self.statuses or self.messages)


class CallLedger:
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
        self.calling_enabled = True
        self.bic_restricted_until: datetime | None = None
        for event in self.store.list_events(SETTINGS_KEY):
            self._apply_settings(dict(event.payload or {}))

    # webhooks -----------------------------------------------------------------
    def record_webhook(self, payload: WebhookPayload) -> FreshEvents:
        """Store every event (deduplicated) and apply the user-state facts it carries."""
        fresh = FreshEvents()
        received = self.now()
        for event in call_events(payload):
            call = event.call
            key = _key(call.id, call.event, call.timestamp, call.status, call.session.sdp if call.session else None)
            at = _utc(call.timestamp) or received
            raw = call.model_dump(by_alias=True, exclude_none=True)
            if self.store.record_event(call.id, call.event, at, raw, dedupe_key=key, received_at=received):
                fresh.calls.append(event)
                if call.event == "connect" and (call.direction or "USER_INITIATED") == "USER_INITIATED":
                    user = call.from_ or (event.contact.wa_id if event.contact else None)
                    if user:
                        # §8.1: a user call opens the window even if we never answer it.
                        self._update_user(user, lambda s, at=at: record_user_call(s, at, connected=False))
            else:
                fresh.duplicates += 1
        for status in call_statuses(payload):
            st = status.status
            key = _key(st.id, "status", st.status, st.timestamp)
            at = _utc(st.timestamp) or received
            raw = st.model_dump(exclude_none=True)
            if self.store.record_event(st.id, f"status:{st.status}", at, raw, dedupe_key=key, received_at=received):
                fresh.statuses.append(status)
            else:
                fresh.duplicates += 1
        for change in (c for entry in payload.entry for c in entry.changes if c.field == "account_settings_update"):
            key = _key("settings", change.value)
            if self.store.record_event(SETTINGS_KEY, change.field, received, change.value, dedupe_key=key):
                self._apply_settings(change.value)
        for message in user_messages(payload):
            msg = message.message
            at = _utc(msg.timestamp) or received
            key = _key("message", msg.id or (message.user, msg.timestamp))
            raw = msg.model_dump(by_alias=True, exclude_none=True)
            if not self.store.record_event(f"user:{message.user}", "message", at, raw, dedupe_key=key):
                fresh.duplicates += 1
                continue
            fresh.messages.append(message)
            self._update_user(message.user, lambda s, at=at: record_user_message(s, at))
            reply = message.permission_reply
            if reply is not None:
                self._update_user(
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
        return fresh

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
        """Meta does not order deliveries: a terminate stored before its connect means do not answer."""
        return any(e.event == "terminate" for e in self.store.list_events(call_id))

    # users --------------------------------------------------------------------
    def user_state(self, user: str) -> UserCallingState:
        record = self.store.get_user_state(self.phone_number_id, user)
        return UserCallingState.from_record(record) if record else UserCallingState.new(self.phone_number_id, user)

    def _update_user(self, user: str, change: Callable[[UserCallingState], UserCallingState]) -> UserCallingState:
        state = change(self.user_state(user))
        self.store.put_user_state(state.to_record())
        return state

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
        self._update_user(user, lambda s: record_permission_request(s, self.now()))

    def check_inbound(self, live: int, cap: int) -> Refusal | None:
        return check_inbound_call(self.now(), hours=self.hours, live=live, cap=cap)

    def business_call_answered(self, user: str) -> None:
        self._update_user(user, lambda s: record_business_call_answered(s, self.now()))

    def business_call_unanswered(self, user: str) -> UserCallingState:
        return self._update_user(user, lambda s: record_business_call_unanswered(s, self.now(), limits=self.limits))

    def user_call_connected(self, user: str) -> None:
        self._update_user(user, lambda s: record_user_call(s, self.now(), connected=True))

    # calls --------------------------------------------------------------------
    def call_started(self, record: CallRecord) -> None:
        record.created_at = record.created_at or self.now()
        record.phone_number_id = record.phone_number_id or self.phone_number_id
        self.store.save_call(record)

    def call_updated(self, call_id: str, **changes: Any) -> None:
        self.store.update_call(call_id, **changes)

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
        self.store.update_call(
            call_id,
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
        return cost

    def missed_call(self, user: str, reason: str, call_id: str | None, refusal: Refusal | None = None) -> None:
        detail = refusal.as_dict() if refusal else {}
        self.store.add_contact_event(
            ContactEvent(
                at=self.now(),
                user=user,
                reason=reason,
                phone_number_id=self.phone_number_id,
                call_id=call_id,
                detail=detail,
            )
        )

    @staticmethod
    def missed_reason(refusal: Refusal | None) -> str:
        return missed_call_reason(refusal)
