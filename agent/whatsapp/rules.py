"""Meta's calling rules, decided locally before Meta gets a chance to refuse.

Meta's refusals arrive late (after a Graph round trip), terse (an error code) and sometimes not at all (a UIC
over the concurrency cap just vanishes). Every rule here is a pure function of a per-user state and a
clock value passed in by the caller, so the server, the CLI and the tests all get the same answer for the
same instant, and a refusal can say *which* rule fired and *when* it clears.

Numbers come from `/work/shared/whatsapp-calling-spec.md`; each constant names its section. Where Meta
changed a number over time the current value is used and the older one is kept in a comment with its date.
Nothing here does I/O, reads the wall clock or sleeps; persistence of `UserCallingState` lives in
`agent.store` (see `UserCallingState.to_record` / `from_record`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from agent.store.base import UserStateRecord
from agent.whatsapp.business_hours import BusinessHours, Holiday, TimeRange
from agent.whatsapp.countries import NANP_NON_US_CA, calling_code, country_of_number
from agent.whatsapp.refusals import RULE_NAMES, Refusal, Refused, _iso, _refuse, _utc

__all__ = [
    "BIC_UNAVAILABLE_COUNTRIES",
    "DEFAULT_LIMITS",
    "MAX_CONCURRENT_CALLS",
    "NANP_NON_US_CA",
    "RULE_NAMES",
    "BusinessHours",
    "CallingLimits",
    "Clock",
    "Holiday",
    "PermissionStatus",
    "Refusal",
    "Refused",
    "RequestKind",
    "ServiceWindow",
    "TimeRange",
    "UserCallingState",
    "bic_blocked_country",
    "button_window_refusal",
    "check_can_call",
    "check_can_request_permission",
    "check_capacity",
    "check_inbound_call",
    "check_not_draining",
    "effective_permission",
    "missed_call_reason",
    "record_business_call_answered",
    "record_business_call_unanswered",
    "record_permission_expired",
    "record_permission_granted",
    "record_permission_rejected",
    "record_permission_reply",
    "record_permission_request",
    "record_permission_revoked",
    "record_user_call",
    "record_user_message",
    "utc_now",
    "validate_capacity",
]

Clock = Callable[[], datetime]
RequestKind = Literal["interactive", "template"]


def utc_now() -> datetime:
    """The production clock; tests pass fixed datetimes instead of calling this."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------
# Numbers from the spec
# --------------------------------------------------------------------------------------------------

DAY = timedelta(hours=24)
WEEK = timedelta(days=7)

#: §8.3 / §3.3 (138002): hard per-number cap Meta enforces; our configured cap may be lower, never higher.
MAX_CONCURRENT_CALLS = 1000

#: §8.1: the customer-service window lasts 24 h from the last user message, user call or accepted BIC.
SERVICE_WINDOW = DAY

#: Countries whose *business* numbers cannot place business-initiated calls (error 138013, §3.3), with
#: their calling codes (from phonenumbers' metadata, so a code can never be mistyped here).
#: The spec names the error but not the list (see the report); every source we found agrees on these six:
#: 360dialog's beta notes, Gupshup (quoted in anchors.md §1b), respond.io, Telnyx (without TR) and Infobip.
#: Infobip also lists sanctioned places (CU, IR, KP, SY, Crimea/Donetsk/Luhansk) where the Cloud API itself
#: is unavailable; those are included so a misconfigured number fails here, not at Meta. Crimea and the
#: Donbas regions share +7/+380 with allowed countries, so they cannot be told apart by calling code.
BIC_UNAVAILABLE_COUNTRIES: Mapping[str, str] = {
    country: calling_code(country) for country in ("US", "CA", "TR", "EG", "VN", "NG", "CU", "IR", "KP", "SY")
}


@dataclass(frozen=True)
class CallingLimits:
    """Every Meta limit in one place, so a test or the sandbox can swap the whole set at once.

    Defaults are the production numbers (§4.6, §8.1, §8.3).
    """

    #: §4.6: permission requests per business number + user, free-form and template combined.
    requests_per_24h: int = 1
    requests_per_7d: int = 2
    #: §4.6: temporary permission lives 7 calendar days (168 h) from approval. "72 h" appears only in
    #: third-party code comments (beta era) and is deliberately not used.
    temporary_permission: timedelta = WEEK
    #: §4.6: connected BICs per user per rolling 24 h (error 138012). Current value since Dec 19 2025;
    #: it was 10 from Oct 13 2025 and 5 before that (Meta's GET sample still shows 5).
    connected_calls_per_24h: int = 100
    #: §4.6: consecutive unanswered/rejected BICs before Meta's system message, and before auto-revoke.
    unanswered_system_message: int = 2
    unanswered_revoke: int = 4
    #: §8.1: customer-service window length.
    service_window: timedelta = SERVICE_WINDOW
    #: 138013: countries whose business numbers cannot place BICs.
    bic_blocked_countries: frozenset[str] = frozenset(BIC_UNAVAILABLE_COUNTRIES)

    def __post_init__(self) -> None:
        for name in ("requests_per_24h", "requests_per_7d", "connected_calls_per_24h"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.unanswered_system_message <= self.unanswered_revoke:
            raise ValueError("need 1 <= unanswered_system_message <= unanswered_revoke")
        unknown = sorted(c for c in self.bic_blocked_countries if not calling_code(c))
        if unknown:
            # The country check works from calling codes, so it can only block countries that have one.
            raise ValueError(f"no calling code known for blocked countries {', '.join(unknown)}")

    @classmethod
    def sandbox(cls) -> CallingLimits:
        """Meta's looser limits for sandbox accounts and public test numbers (§4.6).

        Public test numbers are +1 555 numbers, i.e. US numbers, and Meta lets them place BICs (that is what
        the sandbox row of §4.6 limits), so the country block is switched off here.
        """
        return cls(
            requests_per_24h=25,
            requests_per_7d=100,
            unanswered_system_message=5,
            unanswered_revoke=10,
            bic_blocked_countries=frozenset(),
        )


DEFAULT_LIMITS = CallingLimits()


# --------------------------------------------------------------------------------------------------
# Per-user state
# --------------------------------------------------------------------------------------------------


class PermissionStatus(StrEnum):
    NONE = "none"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ServiceWindow:
    """The 24 h customer-service window (§8.1): free-form messages, including permission requests, need it."""

    last_refresh: datetime | None
    length: timedelta = SERVICE_WINDOW

    @property
    def closes_at(self) -> datetime | None:
        return None if self.last_refresh is None else self.last_refresh + self.length

    def is_open(self, now: datetime) -> bool:
        now = _utc(now, "now")
        closes = self.closes_at
        return self.last_refresh is not None and closes is not None and self.last_refresh <= now < closes


@dataclass(frozen=True)
class UserCallingState:
    """Everything Meta's rules remember about one (business number, user) pair (§4.6 "per pair").

    Immutable: `record_*` functions return a new state, so a caller can compute, persist, and only then act,
    and a failed write never leaves a half-updated object in memory.

    `permission_requests` only holds the last 7 days (all any limit looks at); `requests_reset_at` marks the
    last connected call, which resets the request limits without erasing the history.
    """

    phone_number_id: str
    user: str
    permission: PermissionStatus = PermissionStatus.NONE
    permission_expires_at: datetime | None = None
    permission_source: str | None = None
    permission_updated_at: datetime | None = None
    permission_requests: tuple[datetime, ...] = ()
    requests_reset_at: datetime | None = None
    consecutive_unanswered: int = 0
    needs_system_message: bool = False
    window_refreshed_at: datetime | None = None
    connected_calls: tuple[datetime, ...] = ()

    @classmethod
    def new(cls, phone_number_id: str, user: str) -> UserCallingState:
        return cls(phone_number_id=phone_number_id, user=user)

    def window(self, limits: CallingLimits = DEFAULT_LIMITS) -> ServiceWindow:
        return ServiceWindow(self.window_refreshed_at, limits.service_window)

    def to_record(self) -> UserStateRecord:
        return UserStateRecord(
            phone_number_id=self.phone_number_id,
            user=self.user,
            permission_status=str(self.permission),
            permission_expires_at=self.permission_expires_at,
            permission_source=self.permission_source,
            permission_updated_at=self.permission_updated_at,
            permission_requests=self.permission_requests,
            requests_reset_at=self.requests_reset_at,
            consecutive_unanswered=self.consecutive_unanswered,
            needs_system_message=self.needs_system_message,
            window_refreshed_at=self.window_refreshed_at,
            connected_calls=self.connected_calls,
        )

    @classmethod
    def from_record(cls, record: UserStateRecord) -> UserCallingState:
        return cls(
            phone_number_id=record.phone_number_id,
            user=record.user,
            permission=PermissionStatus(record.permission_status),
            permission_expires_at=record.permission_expires_at,
            permission_source=record.permission_source,
            permission_updated_at=record.permission_updated_at,
            permission_requests=tuple(record.permission_requests),
            requests_reset_at=record.requests_reset_at,
            consecutive_unanswered=record.consecutive_unanswered,
            needs_system_message=record.needs_system_message,
            window_refreshed_at=record.window_refreshed_at,
            connected_calls=tuple(record.connected_calls),
        )


def effective_permission(state: UserCallingState, now: datetime) -> PermissionStatus:
    """Temporary permission expires silently (§4.4: no webhook), so its status depends on the clock."""
    now = _utc(now, "now")
    if (
        state.permission is PermissionStatus.TEMPORARY
        and state.permission_expires_at is not None
        and now >= state.permission_expires_at
    ):
        return PermissionStatus.EXPIRED
    return state.permission


def _later(a: datetime | None, b: datetime) -> datetime:
    """Webhooks arrive out of order (§1.2); a late, older event must not move a timestamp backwards."""
    return b if a is None or b > a else a


def _recent(stamps: Iterable[datetime], now: datetime, keep: timedelta) -> tuple[datetime, ...]:
    """Sorted, so a late (out-of-order) event still lands in time order; older than `keep` is dropped."""
    return tuple(sorted(t for t in stamps if t > now - keep))


# --------------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------------


def record_permission_request(state: UserCallingState, now: datetime) -> UserCallingState:
    """A request message (interactive or template) was sent; both count toward the same limits (§4.6)."""
    now = _utc(now, "now")
    return replace(state, permission_requests=_recent((*state.permission_requests, now), now, WEEK))


def record_permission_granted(
    state: UserCallingState,
    now: datetime,
    *,
    permanent: bool,
    expires_at: datetime | None = None,
    source: str = "user_action",
    limits: CallingLimits = DEFAULT_LIMITS,
) -> UserCallingState:
    """Accept from a request, the profile, or the automatic callback grant (§4.4).

    Meta sends `expiration_timestamp` with a temporary grant and we trust it; without one we assume the
    documented 7 days. A fresh grant starts the unanswered-call count over (our choice: the spec does not say
    whether Meta's counter survives a re-grant, and refusing a user who just opted in again would be worse).
    """
    now = _utc(now, "now")
    if permanent:
        expiry = None
        status = PermissionStatus.PERMANENT
    else:
        expiry = _utc(expires_at, "expires_at") if expires_at is not None else now + limits.temporary_permission
        status = PermissionStatus.TEMPORARY
    return replace(
        state,
        permission=status,
        permission_expires_at=expiry,
        permission_source=source,
        permission_updated_at=now,
        consecutive_unanswered=0,
        needs_system_message=False,
    )


def record_permission_rejected(
    state: UserCallingState, now: datetime, *, source: str = "user_action"
) -> UserCallingState:
    """The user declined a request, or withdrew a grant they had given."""
    now = _utc(now, "now")
    return replace(
        state,
        permission=PermissionStatus.REJECTED,
        permission_expires_at=None,
        permission_source=source,
        permission_updated_at=now,
    )


def record_permission_revoked(state: UserCallingState, now: datetime, *, source: str = "automatic") -> UserCallingState:
    """Meta's automatic revoke (reply `reject`/`automatic`, §4.4) or an operator-recorded revocation."""
    now = _utc(now, "now")
    return replace(
        state,
        permission=PermissionStatus.REVOKED,
        permission_expires_at=None,
        permission_source=source,
        permission_updated_at=now,
    )


def record_permission_expired(state: UserCallingState, now: datetime) -> UserCallingState:
    """Persist an expiry Meta never announces (§4.4); unchanged if the permission is not yet due."""
    now = _utc(now, "now")
    if (
        state.permission is not PermissionStatus.TEMPORARY
        or effective_permission(state, now) is not PermissionStatus.EXPIRED
    ):
        return state
    return replace(state, permission=PermissionStatus.EXPIRED, permission_updated_at=now)


def record_permission_reply(
    state: UserCallingState,
    now: datetime,
    *,
    response: str,
    is_permanent: bool = False,
    expires_at: datetime | None = None,
    source: str = "user_action",
    limits: CallingLimits = DEFAULT_LIMITS,
) -> UserCallingState:
    """Apply a `call_permission_reply` (§4.4 table): the six scenarios reduce to grant, decline or revoke.

    `reject` with `response_source: automatic` is Meta's auto-revoke after 4 unanswered calls, which is why
    it maps to REVOKED rather than REJECTED.
    """
    answer = response.strip().lower()
    if answer == "accept":
        return record_permission_granted(
            state, now, permanent=is_permanent, expires_at=expires_at, source=source, limits=limits
        )
    if answer == "reject":
        if source.strip().lower() == "automatic":
            return record_permission_revoked(state, now, source="automatic")
        return record_permission_rejected(state, now, source=source)
    raise ValueError(f"call_permission_reply.response must be 'accept' or 'reject', got {response!r}")


def record_user_message(state: UserCallingState, now: datetime) -> UserCallingState:
    """Any inbound user message opens or refreshes the customer-service window (§8.1)."""
    now = _utc(now, "now")
    return replace(state, window_refreshed_at=_later(state.window_refreshed_at, now))


def record_user_call(state: UserCallingState, now: datetime, *, connected: bool) -> UserCallingState:
    """A user called us: the window refreshes even if we never answered (§8.1); a connected call also
    resets the permission-request limits (§4.6: any connected call, either direction)."""
    now = _utc(now, "now")
    state = replace(state, window_refreshed_at=_later(state.window_refreshed_at, now))
    if connected:
        state = replace(state, requests_reset_at=_later(state.requests_reset_at, now))
    return state


def record_business_call_answered(state: UserCallingState, now: datetime) -> UserCallingState:
    """The user picked up our call (ACCEPTED): counts toward the 100/24 h cap, refreshes the window,
    resets the request limits and the unanswered streak (§4.6, §8.1)."""
    now = _utc(now, "now")
    return replace(
        state,
        window_refreshed_at=_later(state.window_refreshed_at, now),
        requests_reset_at=_later(state.requests_reset_at, now),
        connected_calls=_recent((*state.connected_calls, now), now, DAY),
        consecutive_unanswered=0,
        needs_system_message=False,
    )


def record_business_call_unanswered(
    state: UserCallingState, now: datetime, *, limits: CallingLimits = DEFAULT_LIMITS
) -> UserCallingState:
    """The user declined or never picked up (§4.6 counts both).

    At 2 in a row Meta shows the user a "reconsider" system message, which we flag for operators; at 4 Meta
    revokes permission. We revoke locally at once, so a 5th call is refused here even if the revoke webhook
    is late or lost.
    """
    now = _utc(now, "now")
    count = state.consecutive_unanswered + 1
    state = replace(
        state,
        consecutive_unanswered=count,
        needs_system_message=state.needs_system_message or count >= limits.unanswered_system_message,
    )
    if count >= limits.unanswered_revoke and state.permission in (
        PermissionStatus.TEMPORARY,
        PermissionStatus.PERMANENT,
    ):
        state = record_permission_revoked(state, now, source="automatic")
    return state


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def bic_blocked_country(business_number: str, limits: CallingLimits = DEFAULT_LIMITS) -> str | None:
    """The ISO code if this business number's calling code is in a BIC-blocked country, else None.

    Meta decides by the calling code of the *business* number (138013). +1 is shared: NANP members other
    than the US and Canada are recognised by area code and allowed; every other +1 number is US or Canada,
    both blocked, so there is no need to tell those two apart (reported as "CA/US").
    """
    country = country_of_number(business_number)
    if country is None:
        return None
    if country == "US/CA":
        blocked = sorted({"US", "CA"} & limits.bic_blocked_countries)
        return "/".join(blocked) if blocked else None
    return country if country in limits.bic_blocked_countries else None


def _next_allowed(stamps: Iterable[datetime], max_allowed: int, period: timedelta) -> datetime:
    """When enough of the counted events leave the rolling period to free one slot."""
    return sorted(stamps)[-max_allowed] + period


def check_can_request_permission(
    state: UserCallingState,
    now: datetime,
    *,
    kind: RequestKind = "interactive",
    limits: CallingLimits = DEFAULT_LIMITS,
    restricted_until: datetime | None = None,
) -> Refusal | None:
    """May we send a call-permission request to this user now? (§4.1, §4.6, §9.3)

    Checked in the order an operator can act on: a pause or a permanent grant makes the rest moot; the
    window is checked before the counters because switching to the template variant fixes it at once.
    """
    now = _utc(now, "now")
    if restricted_until is not None and now < _utc(restricted_until, "restricted_until"):
        return _refuse(
            "bic.restricted",
            "Meta has paused business-initiated calling and permission requests on this number (§9.3); "
            f"the pause ends at {_iso(restricted_until)}",
            code=138014,
            clears_at=_utc(restricted_until),
        )
    if effective_permission(state, now) is PermissionStatus.PERMANENT:
        return _refuse(
            "permission.already_permanent",
            f"user {state.user} already granted permanent permission, so Meta refuses new requests (§4.6); "
            "call them instead",
            code=138017,
        )
    if kind == "interactive":
        window = state.window(limits)
        if not window.is_open(now):
            closed = "has never been opened" if window.closes_at is None else f"closed at {_iso(window.closes_at)}"
            # Meta answers a free-form message outside the window with its generic messaging error 131047
            # ("re-engagement message"); that code is from the Cloud API messaging error list, not our spec.
            return _refuse(
                "permission.window_closed",
                "a free-form permission request needs an open 24 h customer-service window (§4.1, §8.1); "
                f"the window with user {state.user} {closed}; "
                "send the template variant or wait for the user to write or call",
                code=131047,
            )
    counted = tuple(
        t for t in state.permission_requests if state.requests_reset_at is None or t > state.requests_reset_at
    )
    last_day = tuple(t for t in counted if t > now - DAY)
    if len(last_day) >= limits.requests_per_24h:
        at = _next_allowed(last_day, limits.requests_per_24h, DAY)
        return _refuse(
            "permission.request_limit_24h",
            f"{limits.requests_per_24h} request per 24 h to this user (§4.6, reset by a connected call); "
            f"next allowed at {_iso(at)}",
            code=138009,
            clears_at=at,
        )
    last_week = tuple(t for t in counted if t > now - WEEK)
    if len(last_week) >= limits.requests_per_7d:
        at = _next_allowed(last_week, limits.requests_per_7d, WEEK)
        return _refuse(
            "permission.request_limit_7d",
            f"{limits.requests_per_7d} requests per 7 days to this user (§4.6, reset by a connected call); "
            f"next allowed at {_iso(at)}",
            code=138009,
            clears_at=at,
        )
    return None


def button_window_refusal(state: UserCallingState, limits: CallingLimits = DEFAULT_LIMITS) -> Refusal:
    """A free-form call button to a user whose window is closed (§6.1, §8.1): Meta would fail it with 131047."""
    window = state.window(limits)
    closed = "has never been opened" if window.closes_at is None else f"closed at {_iso(window.closes_at)}"
    return _refuse(
        "button.window_closed",
        "a free-form call button needs an open 24 h customer-service window (§6.1, §8.1); "
        f"the window with user {state.user} {closed}; configure call_button.template (an approved template "
        "with a voice-call button) or wait for the user to write or call",
        code=131047,
    )


def check_can_call(
    state: UserCallingState,
    business_number: str,
    now: datetime,
    *,
    limits: CallingLimits = DEFAULT_LIMITS,
    has_live_call: bool = False,
    restricted_until: datetime | None = None,
) -> Refusal | None:
    """May we place a business-initiated call to this user now?

    Order: facts about our number first (country, Meta's pause), then the user's permission, then the
    counters, so the reason names the thing that would still block after the others are fixed.
    """
    now = _utc(now, "now")
    blocked = bic_blocked_country(business_number, limits)
    if blocked is not None:
        return _refuse(
            "bic.country_blocked",
            f"business number +{_digits(business_number)} is in {blocked}, where Meta does not offer "
            "business-initiated calls (error 138013); use a business number from another country",
            code=138013,
        )
    if restricted_until is not None and now < _utc(restricted_until, "restricted_until"):
        return _refuse(
            "bic.restricted",
            f"Meta has paused business-initiated calling on this number (§9.3); the pause ends at "
            f"{_iso(restricted_until)}",
            code=138014,
            clears_at=_utc(restricted_until),
        )
    status = effective_permission(state, now)
    if status is PermissionStatus.NONE:
        return _refuse(
            "permission.none",
            f"user {state.user} has not granted call permission (§4); send a call-permission request first",
            code=138006,
        )
    if status is PermissionStatus.EXPIRED:
        expired = state.permission_expires_at
        return _refuse(
            "permission.expired",
            f"the 7-day temporary permission from user {state.user} ended at "
            f"{_iso(expired) if expired else 'an unknown time'} (§4.6); send a new call-permission request",
            code=138006,
        )
    if status is PermissionStatus.REJECTED:
        return _refuse(
            "permission.rejected",
            f"user {state.user} declined call permission (§4.4); only a new request they accept can change that",
            code=138006,
        )
    if status is PermissionStatus.REVOKED:
        if state.permission_source == "automatic":
            why = f"automatically after {limits.unanswered_revoke} consecutive unanswered business-initiated calls"
        else:
            why = "by the user"
        return _refuse(
            "permission.revoked",
            f"permission from user {state.user} was revoked {why} (§4.6); send a new call-permission request",
            code=138006,
        )
    connected = tuple(t for t in state.connected_calls if t > now - DAY)
    if len(connected) >= limits.connected_calls_per_24h:
        at = _next_allowed(connected, limits.connected_calls_per_24h, DAY)
        return _refuse(
            "bic.daily_connected_limit",
            f"{limits.connected_calls_per_24h} connected calls per user per rolling 24 h (§4.6); "
            f"next call allowed at {_iso(at)}",
            code=138012,
            clears_at=at,
        )
    if has_live_call:
        return duplicate_call(state.user)
    return None


def duplicate_call(user: str) -> Refusal:
    """One call at a time per user (§8.3), whichever worker holds the one in progress."""
    return _refuse(
        "bic.duplicate_call",
        f"a call with user {user} is already in progress (§8.3); wait for it to end",
        code=138003,
    )


def check_calling_enabled(enabled: bool) -> Refusal | None:
    """Meta answers 138000 while calling is off in the number's settings (spec §5, account_settings_update)."""
    if enabled:
        return None
    return _refuse(
        "calling.disabled",
        "the number's call settings say status DISABLED; enable calling in WhatsApp Manager or via /settings",
        code=138000,
    )


def validate_capacity(cap: int) -> int:
    """A configured cap above Meta's 1,000 would promise calls Meta drops without a webhook (§8.3)."""
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_CONCURRENT_CALLS:
        raise ValueError(f"concurrent-call cap must be an integer from 1 to {MAX_CONCURRENT_CALLS}, got {cap!r}")
    return cap


def check_capacity(live: int, cap: int) -> Refusal | None:
    """Refuse a new call when `live` calls already fill the per-number cap (config, ≤ Meta's 1,000)."""
    validate_capacity(cap)
    if live < cap:
        return None
    return _refuse(
        "capacity.full",
        f"{live} calls are live and this number's cap is {cap} (Meta's own limit is {MAX_CONCURRENT_CALLS}, §8.3); "
        "retry when a call ends",
        code=138002 if live >= MAX_CONCURRENT_CALLS else None,
    )


def check_not_draining(draining: bool) -> Refusal | None:
    """A process that is shutting down takes no new call: it would be cut off seconds after it began."""
    if not draining:
        return None
    return _refuse("service.shutting_down", "this wacall process is draining; retry in a moment", code=None)


# --------------------------------------------------------------------------------------------------
# Inbound calls
# --------------------------------------------------------------------------------------------------


def check_inbound_call(now: datetime, *, hours: BusinessHours, live: int, cap: int) -> Refusal | None:
    """Should an inbound (user-initiated) call be turned away? Hours first: "we are closed, open at 9"
    is the more useful thing to log than "busy" when both are true."""
    return hours.check_open(now) or check_capacity(live, cap)


#: How a refusal of an inbound call is filed as a missed-call contact event.
_MISSED_REASONS = {
    "hours.closed": "after_hours",
    "hours.holiday": "after_hours",
    "capacity.full": "over_capacity",
    "service.shutting_down": "over_capacity",  # like a full line: the caller is owed a call back
}


def missed_call_reason(refusal: Refusal | None) -> str:
    """The contact-event reason for a call we did not take: after_hours, over_capacity, or rejected."""
    if refusal is None:
        return "rejected"
    return _MISSED_REASONS.get(refusal.rule, "rejected")
