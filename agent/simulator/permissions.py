"""Meta's call-permission bookkeeping for one business phone number (spec §4, §8.1).

Meta, not the business, decides whether a business-initiated call may be placed, so the simulator
keeps its own record of every grant, request and connected call and refuses the way Meta does. This
module is pure bookkeeping: no HTTP, no webhooks, no asyncio. `MetaSimulator` turns its answers into
Graph errors and webhooks. Every time is an integer unix second from the simulator's injected clock,
so tests move through days and weeks without sleeping.

Like the rest of the simulator it shares nothing with the server's own rules (`agent.whatsapp`):
the two sides read the spec independently, so a misreading on one side fails a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NO_PERMISSION = "no_permission"
TEMPORARY = "temporary"
PERMANENT = "permanent"

DAY_S = 24 * 3600
WEEK_S = 7 * DAY_S

# Graph error codes the bookkeeping can ask for (spec §3.3).
PERMISSION_REQUEST_LIMIT = 138009
CONNECTED_CALL_LIMIT = 138012
PERMANENT_ALREADY = 138017


@dataclass
class PermissionLimits:
    """Meta's per business-number + user limits (spec §4.6 simulator rule 2); `None` switches a limit off.

    Shared by reference with the store, so a test may change a limit between two requests.
    """

    requests_per_24h: int | None = 1  # §4.6: 1 request per 24 h, free-form and template combined
    requests_per_7d: int | None = 2  # §4.6: 2 requests per 7 days
    temporary_lifetime_s: int = WEEK_S  # §4.6: temporary grants last 7 calendar days (not the "72 h" myth)
    connected_calls_per_24h: int | None = 100  # §4.6: 100 connected BICs per rolling 24 h (since Dec 2025)
    system_message_after: int | None = 2  # §4.6: 2 unanswered BICs in a row -> system message to the user
    revoke_after: int | None = 4  # §4.6: 4 unanswered BICs in a row -> permission auto-revoked
    window_s: int = DAY_S  # §8.1: customer-service window length


@dataclass(frozen=True)
class Refusal:
    """Why Meta would refuse; the caller renders it as a Graph error."""

    code: int
    details: str
    retry_at: int | None = None  # when the refused action becomes possible again, if known


@dataclass(frozen=True)
class UnansweredOutcome:
    """What one more unanswered BIC triggered (spec §4.6)."""

    consecutive: int
    system_message: bool
    revoked: bool


@dataclass
class PermissionRecord:
    """Meta's state for one (business number, user) pair (spec §4.6 simulator rule 1)."""

    wa_id: str
    status: str = NO_PERMISSION  # as last granted or revoked; expiry is applied on read
    expires_at: int | None = None
    request_times: list[int] = field(default_factory=list)
    connected_call_times: list[int] = field(default_factory=list)
    consecutive_unanswered: int = 0
    last_user_activity: int | None = None  # last message or call from the user (§8.1)
    pending_requests: dict[str, int] = field(default_factory=dict)  # unanswered request wamid -> sent at


class PermissionStore:
    """All permission records of one business phone number, keyed by the user's wa_id."""

    def __init__(self, limits: PermissionLimits) -> None:
        self.limits = limits
        self.records: dict[str, PermissionRecord] = {}

    def record(self, wa_id: str) -> PermissionRecord:
        rec = self.records.get(wa_id)
        if rec is None:
            rec = self.records[wa_id] = PermissionRecord(wa_id)
        return rec

    # ---- permission state -------------------------------------------------------------------

    def status(self, wa_id: str, now: int) -> str:
        """Effective status: a temporary grant silently lapses at its expiry, no webhook (spec §4.4)."""
        rec = self.records.get(wa_id)
        if rec is None:
            return NO_PERMISSION
        if rec.status == TEMPORARY and rec.expires_at is not None and now >= rec.expires_at:
            return NO_PERMISSION
        return rec.status

    def expiration(self, wa_id: str, now: int) -> int | None:
        rec = self.records.get(wa_id)
        if rec is None or self.status(wa_id, now) != TEMPORARY:
            return None
        return rec.expires_at

    def has_permission(self, wa_id: str, now: int) -> bool:
        return self.status(wa_id, now) != NO_PERMISSION

    def grant(self, wa_id: str, now: int, *, permanent: bool) -> int | None:
        """Record an approval; returns the temporary expiry (none for permanent grants, spec §4.4).

        A fresh grant starts a fresh unanswered streak: the 2/4 rule is about calls made under the
        permission the user is currently giving.
        """
        rec = self.record(wa_id)
        rec.consecutive_unanswered = 0
        if permanent:
            rec.status, rec.expires_at = PERMANENT, None
            return None
        rec.status, rec.expires_at = TEMPORARY, now + self.limits.temporary_lifetime_s
        return rec.expires_at

    def revoke(self, wa_id: str) -> None:
        rec = self.record(wa_id)
        rec.status, rec.expires_at = NO_PERMISSION, None

    # ---- customer-service window (spec §8.1) ---------------------------------------------------

    def note_user_activity(self, wa_id: str, now: int) -> None:
        """A user message, a user call (answered or not) or an accepted BIC opens or refreshes the window."""
        rec = self.record(wa_id)
        rec.last_user_activity = now if rec.last_user_activity is None else max(rec.last_user_activity, now)

    def window_open(self, wa_id: str, now: int) -> bool:
        rec = self.records.get(wa_id)
        return rec is not None and rec.last_user_activity is not None and now < rec.last_user_activity + (
            self.limits.window_s
        )

    # ---- permission requests (spec §4.2, §4.3, §4.6) -------------------------------------------

    def _requests_within(self, rec: PermissionRecord, now: int, period: int) -> list[int]:
        return [t for t in rec.request_times if now - period < t <= now]

    def request_refusal(self, wa_id: str, now: int) -> Refusal | None:
        """Why a new permission request would be refused, or None. Permanent is checked first (138017)."""
        if self.status(wa_id, now) == PERMANENT:
            return Refusal(
                PERMANENT_ALREADY,
                "Call permission request not sent: the user has already granted permanent call permission",
            )
        rec = self.record(wa_id)
        for limit, period, label in (
            (self.limits.requests_per_24h, DAY_S, "24 hours"),
            (self.limits.requests_per_7d, WEEK_S, "7 days"),
        ):
            if limit is None:
                continue
            recent = self._requests_within(rec, now, period)
            if len(recent) >= limit:
                retry_at = min(recent) + period
                return Refusal(
                    PERMISSION_REQUEST_LIMIT,
                    f"Call permission request limit reached: {limit} per {label} for this user; "
                    f"the next request is allowed at {retry_at}",
                    retry_at,
                )
        return None

    def note_request(self, wa_id: str, now: int, message_id: str) -> None:
        rec = self.record(wa_id)
        rec.request_times.append(now)
        rec.pending_requests[message_id] = now
        # Keep only what a 7-day limit can still see.
        rec.request_times = self._requests_within(rec, now, WEEK_S)

    def pending_requests(self, wa_id: str, now: int) -> list[str]:
        """Requests the user can still answer, oldest first: unanswered ones go stale 7 days after delivery (§4.6)."""
        rec = self.record(wa_id)
        rec.pending_requests = {rid: sent for rid, sent in rec.pending_requests.items() if now < sent + WEEK_S}
        return list(rec.pending_requests)

    def take_pending_request(self, wa_id: str, now: int, request_id: str | None = None) -> str | None:
        """The request a reply answers: the given one, else the newest.

        Answering one makes every other request stale (spec §4.6: "when the user interacts with a
        newer request"), so all are cleared. Raises KeyError for a request that cannot be answered.
        """
        pending = self.pending_requests(wa_id, now)
        if request_id is not None and request_id not in pending:
            raise KeyError(f"no pending call permission request {request_id!r} for {wa_id} (unknown or stale)")
        if request_id is None and not pending:
            return None
        self.record(wa_id).pending_requests.clear()
        return request_id if request_id is not None else pending[-1]

    # ---- calls (spec §4.6, §8.3) ---------------------------------------------------------------

    def _calls_within_day(self, rec: PermissionRecord, now: int) -> list[int]:
        return [t for t in rec.connected_call_times if now - DAY_S < t <= now]

    def call_refusal(self, wa_id: str, now: int) -> Refusal | None:
        """138012 when the rolling 24 h connected-BIC cap is used up; it does not revoke permission."""
        cap = self.limits.connected_calls_per_24h
        if cap is None:
            return None
        recent = self._calls_within_day(self.record(wa_id), now)
        if len(recent) < cap:
            return None
        retry_at = min(recent) + DAY_S
        return Refusal(
            CONNECTED_CALL_LIMIT,
            f"Business-initiated call limit reached: {cap} connected calls per 24 hours to this user; "
            f"the next call is allowed at {retry_at}",
            retry_at,
        )

    def note_connected_call(self, wa_id: str, now: int, *, business_initiated: bool) -> None:
        """A connected call in either direction resets the request counters (spec §4.6).

        Only connected BICs count towards the 24 h cap, and only a BIC the user picks up breaks the
        unanswered streak.
        """
        rec = self.record(wa_id)
        rec.request_times.clear()
        if business_initiated:
            rec.connected_call_times = [*self._calls_within_day(rec, now), now]
            rec.consecutive_unanswered = 0

    def note_unanswered(self, wa_id: str) -> UnansweredOutcome:
        """Count one more unanswered or rejected BIC; report the system message (2) and revoke (4) thresholds."""
        rec = self.record(wa_id)
        rec.consecutive_unanswered += 1
        n = rec.consecutive_unanswered
        system_message = self.limits.system_message_after is not None and n == self.limits.system_message_after
        revoked = (
            self.limits.revoke_after is not None
            and n >= self.limits.revoke_after
            and rec.status != NO_PERMISSION
        )
        if revoked:
            self.revoke(wa_id)
            rec.consecutive_unanswered = 0
        return UnansweredOutcome(n, system_message, revoked)

    # ---- GET call_permissions (spec §4.5) ------------------------------------------------------

    def view(self, wa_id: str, now: int) -> dict[str, Any]:
        """The GET call_permissions body. `limit_expiration_time` appears only on an exhausted limit."""
        status = self.status(wa_id, now)
        permission: dict[str, Any] = {"status": status}
        expiration = self.expiration(wa_id, now)
        if expiration is not None:
            permission["expiration_time"] = expiration
        rec = self.record(wa_id)

        request_limits: list[dict[str, Any]] = []
        request_blocked = status == PERMANENT
        for limit, period, label in (
            (self.limits.requests_per_24h, DAY_S, "PT24H"),
            (self.limits.requests_per_7d, WEEK_S, "P7D"),
        ):
            if limit is None:
                continue
            recent = self._requests_within(rec, now, period)
            entry: dict[str, Any] = {"time_period": label, "max_allowed": limit, "current_usage": len(recent)}
            if len(recent) >= limit:
                entry["limit_expiration_time"] = min(recent) + period
                request_blocked = True
            request_limits.append(entry)

        call_limits: list[dict[str, Any]] = []
        call_blocked = status == NO_PERMISSION
        cap = self.limits.connected_calls_per_24h
        if cap is not None:
            recent_calls = self._calls_within_day(rec, now)
            entry = {"time_period": "PT24H", "max_allowed": cap, "current_usage": len(recent_calls)}
            if len(recent_calls) >= cap:
                entry["limit_expiration_time"] = min(recent_calls) + DAY_S
                call_blocked = True
            call_limits.append(entry)

        return {
            "messaging_product": "whatsapp",
            "permission": permission,
            "actions": [
                {
                    "action_name": "send_call_permission_request",
                    "can_perform_action": not request_blocked,
                    "limits": request_limits,
                },
                {"action_name": "start_call", "can_perform_action": not call_blocked, "limits": call_limits},
            ],
        }
