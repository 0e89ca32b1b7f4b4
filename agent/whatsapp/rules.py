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

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.store.base import UserStateRecord

__all__ = [
    "BIC_UNAVAILABLE_COUNTRIES",
    "DEFAULT_LIMITS",
    "MAX_CONCURRENT_CALLS",
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

#: Countries whose *business* numbers cannot place business-initiated calls (error 138013, §3.3).
#: The spec names the error but not the list (see the report); every source we found agrees on these six:
#: 360dialog's beta notes, Gupshup (quoted in anchors.md §1b), respond.io, Telnyx (without TR) and Infobip.
#: Infobip also lists sanctioned places (CU, IR, KP, SY, Crimea/Donetsk/Luhansk) where the Cloud API itself
#: is unavailable; those are included so a misconfigured number fails here, not at Meta. Crimea and the
#: Donbas regions share +7/+380 with allowed countries, so they cannot be told apart by calling code.
BIC_UNAVAILABLE_COUNTRIES: Mapping[str, str] = {
    "US": "1",
    "CA": "1",
    "TR": "90",
    "EG": "20",
    "VN": "84",
    "NG": "234",
    "CU": "53",
    "IR": "98",
    "KP": "850",
    "SY": "963",
}

#: NANP members other than the US and Canada share +1 but are separate countries (and may place BICs).
#: Area code -> ISO country. US territories (PR, GU, VI, AS, MP) have their own ISO 3166 codes and are
#: listed too, so they are *not* treated as the US. Whether Meta counts them as US for 138013 is not in
#: any source we found (UNCERTAIN); allowing them means Meta, not wacall, has the last word there.
NANP_NON_US_CA: Mapping[str, str] = {
    "242": "BS", "246": "BB", "264": "AI", "268": "AG", "284": "VG", "340": "VI", "345": "KY",
    "441": "BM", "473": "GD", "649": "TC", "658": "JM", "664": "MS", "670": "MP", "671": "GU",
    "684": "AS", "721": "SX", "758": "LC", "767": "DM", "784": "VC", "787": "PR", "809": "DO",
    "829": "DO", "849": "DO", "868": "TT", "869": "KN", "876": "JM", "939": "PR",
}  # fmt: skip


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
        unknown = sorted(set(self.bic_blocked_countries) - set(BIC_UNAVAILABLE_COUNTRIES))
        if unknown:
            # The country check works from calling codes, so it can only block countries whose code it knows.
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
# Refusals
# --------------------------------------------------------------------------------------------------

#: Stable rule id -> the human name every reason starts with. Ids are API: logs, tests and the console key
#: on them; never rename one.
RULE_NAMES: Mapping[str, str] = {
    "permission.none": "call permission required",
    "permission.expired": "temporary call permission expired",
    "permission.rejected": "call permission declined",
    "permission.revoked": "call permission revoked",
    "permission.request_limit_24h": "call-permission request limit per 24 h",
    "permission.request_limit_7d": "call-permission request limit per 7 days",
    "permission.window_closed": "customer-service window closed",
    "button.window_closed": "customer-service window closed",
    "permission.already_permanent": "permanent call permission already granted",
    "bic.daily_connected_limit": "connected business-initiated call limit per 24 h",
    "bic.country_blocked": "business-initiated calls unavailable in the business number's country",
    "bic.restricted": "business-initiated calling restricted by Meta",
    "bic.duplicate_call": "one call at a time per user",
    "capacity.full": "concurrent-call cap",
    "service.shutting_down": "wacall is shutting down",
    "calling.disabled": "calling disabled on this business number",
    "hours.closed": "outside business hours",
    "hours.holiday": "business holiday",
}


@dataclass(frozen=True)
class Refusal:
    """Why wacall will not do something, in words an operator can act on.

    `meta_error_code` is what Meta would have answered had we tried (None when the rule is ours alone, e.g.
    business hours or a configured cap below Meta's); `clears_at` is when retrying can succeed, if known.
    """

    rule: str
    reason: str
    meta_error_code: int | None = None
    clears_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULE_NAMES:
            raise ValueError(f"unknown rule id {self.rule!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "reason": self.reason,
            "meta_error_code": self.meta_error_code,
            "clears_at": None if self.clears_at is None else _iso(self.clears_at),
        }


class Refused(Exception):
    """Raised by callers that prefer exceptions; carries the refusal so the reason is never lost."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def _iso(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(moment: datetime, what: str = "time") -> datetime:
    """Naive datetimes are refused: a rule evaluated in the server's local zone is a silent off-by-hours."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {moment.isoformat()})")
    return moment.astimezone(UTC)


def _refuse(rule: str, detail: str, *, code: int | None, clears_at: datetime | None = None) -> Refusal:
    return Refusal(rule=rule, reason=f"{RULE_NAMES[rule]}: {detail}", meta_error_code=code, clears_at=clears_at)


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
    both blocked, so there is no need to tell those two apart (reported as "US/CA").
    """
    digits = _digits(business_number)
    if not digits:
        return None
    # E.164 country codes are prefix-free, so outside +1 a plain startswith on the code cannot misfire.
    if digits.startswith("1"):
        if digits[1:4] in NANP_NON_US_CA:
            country = NANP_NON_US_CA[digits[1:4]]
            return country if country in limits.bic_blocked_countries else None
        blocked = sorted({"US", "CA"} & limits.bic_blocked_countries)
        return "/".join(blocked) if blocked else None
    best: tuple[int, str] | None = None
    for country, code in BIC_UNAVAILABLE_COUNTRIES.items():
        if code != "1" and country in limits.bic_blocked_countries and digits.startswith(code):
            if best is None or len(code) > best[0]:
                best = (len(code), country)
    return None if best is None else best[1]


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
        return _refuse(
            "bic.duplicate_call",
            f"a call with user {state.user} is already in progress (§8.3); wait for it to end",
            code=138003,
        )
    return None


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
# Business hours
# --------------------------------------------------------------------------------------------------

_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_DAY_ALIASES = {d[:3].lower(): i for i, d in enumerate(_DAYS)} | {d.lower(): i for i, d in enumerate(_DAYS)}
_HHMM = re.compile(r"^(\d{1,2}):?(\d{2})$")
#: §5: Meta accepts at most 2 ranges per weekday and 20 holidays; keeping our config inside the same bounds
#: means it can be pushed to Meta's `call_hours` setting unchanged.
MAX_RANGES_PER_DAY = 2
MAX_HOLIDAYS = 20


def _parse_hhmm(text: str, what: str) -> int:
    """Meta's tables use "0900"; one Meta sample writes "09:00" (§5); accept both. 2400 means midnight."""
    match = _HHMM.match(str(text).strip())
    if not match:
        raise ValueError(f"{what}: expected HHMM or HH:MM, got {text!r}")
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{what}: {text!r} is not a time of day")
    return hours * 60 + minutes


def _fmt_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}{minutes % 60:02d}"


@dataclass(frozen=True)
class TimeRange:
    """Minutes since local midnight, half-open [start, end); end 1440 means "until midnight"."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= 1440:
            raise ValueError(
                f"time range {_fmt_minutes(self.start)}-{_fmt_minutes(self.end)}: open must be before close"
            )

    def __str__(self) -> str:
        return f"{_fmt_minutes(self.start)}-{_fmt_minutes(self.end)}"


@dataclass(frozen=True)
class Holiday:
    """A closed span on one local date. Meta writes whole days as 0000-2359, so `end` is inclusive to the
    minute: 2359 closes until midnight."""

    day: date
    start: int = 0
    end: int = 23 * 60 + 59

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end < 1440:
            raise ValueError(f"holiday {self.day}: start must not be after end")

    @property
    def closed(self) -> TimeRange:
        return TimeRange(self.start, self.end + 1)


def _subtract(ranges: Iterable[TimeRange], cut: TimeRange | None) -> list[TimeRange]:
    out: list[TimeRange] = []
    for r in ranges:
        if cut is None or cut.end <= r.start or cut.start >= r.end:
            out.append(r)
            continue
        if r.start < cut.start:
            out.append(TimeRange(r.start, cut.start))
        if cut.end < r.end:
            out.append(TimeRange(cut.end, r.end))
    return out


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening hours in an IANA zone, with holidays; inbound calls outside them are turned away.

    Times are local wall-clock times, so a 09:00 opening stays 09:00 across DST changes; `is_open` converts
    each instant into the zone rather than shifting a fixed UTC offset. `enabled=False` means open 24/7
    (as Meta treats `call_hours.status: DISABLED`, §5).
    """

    timezone: str = "UTC"
    weekly: tuple[tuple[TimeRange, ...], ...] = ((),) * 7
    holidays: tuple[Holiday, ...] = ()
    enabled: bool = True

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name like Europe/Madrid)") from exc
        if len(self.weekly) != 7:
            raise ValueError("weekly hours need exactly 7 days, Monday first")
        for index, ranges in enumerate(self.weekly):
            name = _DAYS[index]
            if len(ranges) > MAX_RANGES_PER_DAY:
                raise ValueError(f"{name}: at most {MAX_RANGES_PER_DAY} time ranges per day (§5)")
            ordered = sorted(ranges, key=lambda r: r.start)
            for before, after in pairwise(ordered):
                if after.start < before.end:
                    raise ValueError(f"{name}: time ranges {before} and {after} overlap")
        if self.enabled and not any(self.weekly):
            raise ValueError("business hours are enabled but no weekday has any hours")
        if len(self.holidays) > MAX_HOLIDAYS:
            raise ValueError(f"at most {MAX_HOLIDAYS} holidays (§5)")

    @classmethod
    def always_open(cls) -> BusinessHours:
        return cls(enabled=False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> BusinessHours:
        """Build from our config shape or from Meta's `call_hours` object (§5), whichever is given.

        Ours: ``{timezone, weekly: {monday: ["09:00-13:00", "14:00-18:00"], ...}, holidays: ["2026-12-25",
        {date, start_time, end_time}], enabled}``. Meta's: ``{status, timezone_id, weekly_operating_hours:
        [{day_of_week, open_time, close_time}], holiday_schedule: [{date, start_time, end_time}]}``.
        """
        tz = str(data.get("timezone") or data.get("timezone_id") or "UTC")
        status = data.get("status")
        enabled = bool(data.get("enabled", True)) if status is None else str(status).upper() == "ENABLED"
        days: list[list[TimeRange]] = [[] for _ in range(7)]
        for item in data.get("weekly_operating_hours") or ():
            index = _day_index(item.get("day_of_week"))
            days[index].append(
                TimeRange(
                    _parse_hhmm(item.get("open_time", ""), f"{_DAYS[index]} open_time"),
                    _parse_hhmm(item.get("close_time", ""), f"{_DAYS[index]} close_time"),
                )
            )
        weekly = data.get("weekly") or {}
        if not isinstance(weekly, Mapping):
            raise ValueError("weekly must map day names to lists of 'HH:MM-HH:MM' ranges")
        for day_name, spans in weekly.items():
            index = _day_index(day_name)
            for span in [spans] if isinstance(spans, str) else spans or ():
                start, sep, end = str(span).partition("-")
                if not sep:
                    raise ValueError(f"{_DAYS[index]}: expected 'HH:MM-HH:MM', got {span!r}")
                days[index].append(TimeRange(_parse_hhmm(start, _DAYS[index]), _parse_hhmm(end, _DAYS[index])))
        holidays: list[Holiday] = []
        for item in [*(data.get("holidays") or ()), *(data.get("holiday_schedule") or ())]:
            holidays.append(_parse_holiday(item))
        return cls(
            timezone=tz,
            weekly=tuple(tuple(sorted(d, key=lambda r: r.start)) for d in days),
            holidays=tuple(holidays),
            enabled=enabled,
        )

    def to_meta(self) -> dict[str, Any]:
        """Meta's `call_hours` object, so the same hours can be pushed to the settings endpoint (§5)."""
        return {
            "status": "ENABLED" if self.enabled else "DISABLED",
            "timezone_id": self.timezone,
            "weekly_operating_hours": [
                {
                    "day_of_week": _DAYS[i],
                    "open_time": _fmt_minutes(r.start),
                    "close_time": _fmt_minutes(min(r.end, 1439)),
                }
                for i, ranges in enumerate(self.weekly)
                for r in ranges
            ],
            "holiday_schedule": [
                {"date": h.day.isoformat(), "start_time": _fmt_minutes(h.start), "end_time": _fmt_minutes(h.end)}
                for h in self.holidays
            ],
        }

    def _holiday_at(self, local: datetime) -> Holiday | None:
        minute = local.hour * 60 + local.minute
        for holiday in self.holidays:
            if holiday.day == local.date() and holiday.start <= minute <= holiday.end:
                return holiday
        return None

    def _open_ranges(self, day: date) -> list[TimeRange]:
        ranges: list[TimeRange] = list(self.weekly[day.weekday()])
        for holiday in self.holidays:
            if holiday.day == day:
                ranges = _subtract(ranges, holiday.closed)
        return ranges

    def is_open(self, now: datetime) -> bool:
        if not self.enabled:
            return True
        local = _utc(now, "now").astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(r.start <= minute < r.end for r in self._open_ranges(local.date()))

    def next_open(self, now: datetime, *, horizon_days: int = 370) -> datetime | None:
        """The next instant (UTC) at which calls are taken; `now` itself if open. None if closed for a year."""
        now = _utc(now, "now")
        if self.is_open(now):
            return now
        zone = self.zone
        local = now.astimezone(zone)
        minute = local.hour * 60 + local.minute
        for offset in range(horizon_days + 1):
            day = local.date() + timedelta(days=offset)
            for r in sorted(self._open_ranges(day), key=lambda r: r.start):
                if offset == 0 and r.start <= minute:
                    continue
                wall = datetime.combine(day, time(r.start // 60, r.start % 60), tzinfo=zone)
                candidate = wall.astimezone(UTC)
                if candidate > now:
                    return candidate
        return None

    def check_open(self, now: datetime) -> Refusal | None:
        """Refuse an inbound call outside hours; the reason names the next opening in UTC and local time."""
        now = _utc(now, "now")
        if self.is_open(now):
            return None
        zone = self.zone
        local = now.astimezone(zone)
        nxt = self.next_open(now)
        if nxt is None:
            when = "no opening within the next year"
        else:
            nxt_local = nxt.astimezone(zone)
            when = f"next opening {_iso(nxt)} ({nxt_local:%A %H:%M} {self.timezone})"
        holiday = self._holiday_at(local)
        if holiday is not None:
            return _refuse(
                "hours.holiday",
                f"{holiday.day.isoformat()} is a holiday in {self.timezone}; {when}",
                code=None,
                clears_at=nxt,
            )
        return _refuse(
            "hours.closed",
            f"closed at {local:%Y-%m-%d %H:%M} ({local:%A}) {self.timezone}; {when}",
            code=None,
            clears_at=nxt,
        )


def _day_index(name: Any) -> int:
    key = str(name or "").strip().lower()
    if key not in _DAY_ALIASES:
        raise ValueError(f"unknown weekday {name!r} (use MONDAY..SUNDAY)")
    return _DAY_ALIASES[key]


def _parse_holiday(item: Any) -> Holiday:
    if isinstance(item, date) and not isinstance(item, datetime):
        return Holiday(item)
    if isinstance(item, str):
        return Holiday(_parse_date(item))
    if isinstance(item, Mapping):
        day = _parse_date(str(item.get("date", "")))
        start = _parse_hhmm(item.get("start_time", "0000"), f"holiday {day} start_time")
        end = _parse_hhmm(item.get("end_time", "2359"), f"holiday {day} end_time")
        return Holiday(day, start, min(end, 1439))
    raise ValueError(f"holiday must be a YYYY-MM-DD date or {{date, start_time, end_time}}, got {item!r}")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"holiday date must be YYYY-MM-DD, got {text!r}") from exc


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
