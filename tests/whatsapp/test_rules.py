"""Meta's calling rules, decided locally: every refusal is checked for its exact rule id, Meta error code and
reason text, at fixed instants (no wall clock, no sleeping), with limits probed on both sides of the edge."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from agent.whatsapp.pricing import RateCard
from agent.whatsapp.rules import (
    BIC_UNAVAILABLE_COUNTRIES,
    MAX_CONCURRENT_CALLS,
    NANP_NON_US_CA,
    RULE_NAMES,
    BusinessHours,
    CallingLimits,
    Holiday,
    PermissionStatus,
    Refusal,
    Refused,
    ServiceWindow,
    TimeRange,
    UserCallingState,
    bic_blocked_country,
    check_can_call,
    check_can_request_permission,
    check_capacity,
    check_inbound_call,
    effective_permission,
    missed_call_reason,
    record_business_call_answered,
    record_business_call_unanswered,
    record_permission_expired,
    record_permission_granted,
    record_permission_rejected,
    record_permission_reply,
    record_permission_request,
    record_permission_revoked,
    record_user_call,
    record_user_message,
    validate_capacity,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
S = timedelta(seconds=1)
BIZ = "34910000000"  # a Spanish business number: business-initiated calls are available in ES
USER = "34600000001"


def refused(result: Refusal | None, rule: str, code: int | None, reason: str | None = None) -> Refusal:
    """Every refusal names its rule: stable id, Meta's code, and a reason that starts with the rule's name."""
    assert result is not None, f"expected {rule}, got no refusal"
    assert result.rule == rule
    assert result.meta_error_code == code
    assert result.reason.startswith(RULE_NAMES[rule] + ": "), result.reason
    if reason is not None:
        assert result.reason == reason
    return result


def fresh() -> UserCallingState:
    return UserCallingState.new("106540000000002", USER)


def with_window(at: datetime = T0) -> UserCallingState:
    return record_user_message(fresh(), at)


def permitted(at: datetime = T0, *, permanent: bool = False) -> UserCallingState:
    return record_permission_granted(fresh(), at, permanent=permanent)


# --------------------------------------------------------------------------------------------------
# Permission requests (§4.1, §4.6)
# --------------------------------------------------------------------------------------------------


def test_free_form_request_needs_an_open_window() -> None:
    refused(
        check_can_request_permission(fresh(), T0),
        "permission.window_closed",
        131047,
        "customer-service window closed: a free-form permission request needs an open 24 h customer-service "
        "window (§4.1, §8.1); the window with user 34600000001 has never been opened; send the template "
        "variant or wait for the user to write or call",
    )
    # The template variant is allowed outside the window (§4.1).
    assert check_can_request_permission(fresh(), T0, kind="template") is None


def test_window_closed_reason_says_when_it_closed() -> None:
    state = with_window(T0)
    assert check_can_request_permission(state, T0 + 24 * H - S) is None
    refused(
        check_can_request_permission(state, T0 + 24 * H),
        "permission.window_closed",
        131047,
        "customer-service window closed: a free-form permission request needs an open 24 h customer-service "
        "window (§4.1, §8.1); the window with user 34600000001 closed at 2026-11-25T10:00:00Z; send the "
        "template variant or wait for the user to write or call",
    )


def test_one_request_per_24h_allowed_again_at_exactly_24h() -> None:
    state = record_permission_request(fresh(), T0)
    r = refused(
        check_can_request_permission(state, T0 + H, kind="template"),
        "permission.request_limit_24h",
        138009,
        "call-permission request limit per 24 h: 1 request per 24 h to this user (§4.6, reset by a connected "
        "call); next allowed at 2026-11-25T10:00:00Z",
    )
    assert r.clears_at == T0 + 24 * H
    refused(
        check_can_request_permission(state, T0 + 24 * H - S, kind="template"), "permission.request_limit_24h", 138009
    )
    assert check_can_request_permission(state, T0 + 24 * H, kind="template") is None


def test_interactive_request_limit_with_open_window() -> None:
    state = record_permission_request(with_window(T0), T0)
    state = record_user_message(state, T0 + 2 * H)
    refused(check_can_request_permission(state, T0 + 3 * H), "permission.request_limit_24h", 138009)
    state = record_user_message(state, T0 + 23 * H)
    assert check_can_request_permission(state, T0 + 24 * H) is None


def test_third_request_within_7_days_refused() -> None:
    state = record_permission_request(fresh(), T0)
    state = record_permission_request(state, T0 + 24 * H)
    r = refused(
        check_can_request_permission(state, T0 + 48 * H, kind="template"),
        "permission.request_limit_7d",
        138009,
        "call-permission request limit per 7 days: 2 requests per 7 days to this user (§4.6, reset by a "
        "connected call); next allowed at 2026-12-01T10:00:00Z",
    )
    assert r.clears_at == T0 + 7 * D
    refused(check_can_request_permission(state, T0 + 7 * D - S, kind="template"), "permission.request_limit_7d", 138009)
    assert check_can_request_permission(state, T0 + 7 * D, kind="template") is None


def test_connected_user_call_resets_request_limits() -> None:
    state = record_permission_request(fresh(), T0)
    state = record_permission_request(state, T0 + 24 * H)
    state = record_user_call(state, T0 + 30 * H, connected=True)
    assert check_can_request_permission(state, T0 + 30 * H) is None
    # The history survives the reset; only requests after it count again.
    assert state.permission_requests == (T0, T0 + 24 * H)
    state = record_permission_request(state, T0 + 31 * H)
    refused(check_can_request_permission(state, T0 + 32 * H), "permission.request_limit_24h", 138009)


def test_unanswered_user_call_does_not_reset_request_limits_but_opens_window() -> None:
    state = record_permission_request(fresh(), T0)
    state = record_user_call(state, T0 + H, connected=False)
    assert state.window().is_open(T0 + H)
    refused(check_can_request_permission(state, T0 + 2 * H), "permission.request_limit_24h", 138009)


def test_answered_business_call_resets_request_limits() -> None:
    state = record_permission_request(fresh(), T0)
    state = record_permission_request(state, T0 + 24 * H)
    state = record_permission_granted(state, T0 + 25 * H, permanent=False)
    state = record_business_call_answered(state, T0 + 26 * H)
    assert check_can_request_permission(state, T0 + 26 * H) is None


def test_request_refused_when_permanent_permission_exists() -> None:
    refused(
        check_can_request_permission(permitted(permanent=True), T0 + H, kind="template"),
        "permission.already_permanent",
        138017,
        "permanent call permission already granted: user 34600000001 already granted permanent permission, "
        "so Meta refuses new requests (§4.6); call them instead",
    )
    # A temporary permission does not block a new request.
    assert check_can_request_permission(permitted(), T0 + H, kind="template") is None


def test_request_refused_during_meta_restriction() -> None:
    r = refused(
        check_can_request_permission(with_window(), T0, restricted_until=T0 + 7 * D),
        "bic.restricted",
        138014,
        "business-initiated calling restricted by Meta: Meta has paused business-initiated calling and "
        "permission requests on this number (§9.3); the pause ends at 2026-12-01T10:00:00Z",
    )
    assert r.clears_at == T0 + 7 * D
    assert check_can_request_permission(with_window(T0 + 7 * D), T0 + 7 * D, restricted_until=T0 + 7 * D) is None


def test_sandbox_limits_are_looser() -> None:
    state = fresh()
    for i in range(25):
        assert check_can_request_permission(state, T0 + i * S, kind="template", limits=CallingLimits.sandbox()) is None
        state = record_permission_request(state, T0 + i * S)
    refused(
        check_can_request_permission(state, T0 + H, kind="template", limits=CallingLimits.sandbox()),
        "permission.request_limit_24h",
        138009,
    )


def test_request_history_keeps_only_the_last_7_days() -> None:
    state = record_permission_request(fresh(), T0)
    state = record_permission_request(state, T0 + 8 * D)
    assert state.permission_requests == (T0 + 8 * D,)


# --------------------------------------------------------------------------------------------------
# Permission state (§4.4, §4.6)
# --------------------------------------------------------------------------------------------------


def test_no_permission_refuses_call() -> None:
    refused(
        check_can_call(fresh(), BIZ, T0),
        "permission.none",
        138006,
        "call permission required: user 34600000001 has not granted call permission (§4); send a "
        "call-permission request first",
    )


def test_temporary_permission_expires_after_7_days() -> None:
    state = permitted(T0)
    assert state.permission_expires_at == T0 + 7 * D
    assert check_can_call(state, BIZ, T0 + 7 * D - S) is None
    refused(
        check_can_call(state, BIZ, T0 + 7 * D),
        "permission.expired",
        138006,
        "temporary call permission expired: the 7-day temporary permission from user 34600000001 ended at "
        "2026-12-01T10:00:00Z (§4.6); send a new call-permission request",
    )
    assert effective_permission(state, T0 + 7 * D) is PermissionStatus.EXPIRED
    assert record_permission_expired(state, T0 + 7 * D - S) is state
    expired = record_permission_expired(state, T0 + 7 * D)
    assert expired.permission is PermissionStatus.EXPIRED
    refused(check_can_call(expired, BIZ, T0 + 8 * D), "permission.expired", 138006)


def test_temporary_permission_uses_metas_expiration_when_given() -> None:
    state = record_permission_granted(fresh(), T0, permanent=False, expires_at=T0 + 3 * D)
    assert check_can_call(state, BIZ, T0 + 3 * D - S) is None
    refused(check_can_call(state, BIZ, T0 + 3 * D), "permission.expired", 138006)


def test_permanent_permission_never_expires() -> None:
    state = permitted(T0, permanent=True)
    assert state.permission_expires_at is None
    assert check_can_call(state, BIZ, T0 + 400 * D) is None


def test_reply_webhook_scenarios() -> None:
    temp = record_permission_reply(fresh(), T0, response="accept", expires_at=T0 + 7 * D)
    assert (temp.permission, temp.permission_expires_at) == (PermissionStatus.TEMPORARY, T0 + 7 * D)
    perm = record_permission_reply(fresh(), T0, response="accept", is_permanent=True)
    assert perm.permission is PermissionStatus.PERMANENT
    callback = record_permission_reply(fresh(), T0, response="accept", expires_at=T0 + 7 * D, source="automatic")
    assert (callback.permission, callback.permission_source) == (PermissionStatus.TEMPORARY, "automatic")
    declined = record_permission_reply(temp, T0 + H, response="reject")
    assert declined.permission is PermissionStatus.REJECTED
    refused(
        check_can_call(declined, BIZ, T0 + 2 * H),
        "permission.rejected",
        138006,
        "call permission declined: user 34600000001 declined call permission (§4.4); only a new request they "
        "accept can change that",
    )
    revoked = record_permission_reply(perm, T0 + H, response="REJECT", source="automatic")
    assert (revoked.permission, revoked.permission_source) == (PermissionStatus.REVOKED, "automatic")
    with pytest.raises(ValueError, match="accept' or 'reject"):
        record_permission_reply(fresh(), T0, response="maybe")


def test_user_revocation_reason() -> None:
    state = record_permission_revoked(permitted(T0, permanent=True), T0 + H, source="user_action")
    refused(
        check_can_call(state, BIZ, T0 + 2 * H),
        "permission.revoked",
        138006,
        "call permission revoked: permission from user 34600000001 was revoked by the user (§4.6); send a new "
        "call-permission request",
    )


def test_rejected_then_granted_again() -> None:
    state = record_permission_rejected(permitted(T0), T0 + H)
    state = record_permission_granted(state, T0 + 2 * H, permanent=True)
    assert check_can_call(state, BIZ, T0 + 3 * H) is None


# --------------------------------------------------------------------------------------------------
# Connected-call cap and unanswered calls (§4.6)
# --------------------------------------------------------------------------------------------------


def test_100th_connected_call_allowed_101st_refused() -> None:
    state = permitted(T0, permanent=True)
    for i in range(99):
        state = record_business_call_answered(state, T0 + i * 10 * S)
    assert check_can_call(state, BIZ, T0 + H) is None  # placing the 100th
    state = record_business_call_answered(state, T0 + H)
    r = refused(
        check_can_call(state, BIZ, T0 + 2 * H),
        "bic.daily_connected_limit",
        138012,
        "connected business-initiated call limit per 24 h: 100 connected calls per user per rolling 24 h "
        "(§4.6); next call allowed at 2026-11-25T10:00:00Z",
    )
    assert r.clears_at == T0 + 24 * H
    refused(check_can_call(state, BIZ, T0 + 24 * H - S), "bic.daily_connected_limit", 138012)
    assert check_can_call(state, BIZ, T0 + 24 * H) is None


def test_connected_cap_does_not_revoke_permission() -> None:
    state = permitted(T0, permanent=True)
    for i in range(100):
        state = record_business_call_answered(state, T0 + i * S)
    assert state.permission is PermissionStatus.PERMANENT
    assert len(state.connected_calls) == 100


def test_two_unanswered_flag_system_message_four_revoke() -> None:
    state = permitted(T0)
    state = record_business_call_unanswered(state, T0 + H)
    assert (state.consecutive_unanswered, state.needs_system_message) == (1, False)
    state = record_business_call_unanswered(state, T0 + 2 * H)
    assert (state.consecutive_unanswered, state.needs_system_message) == (2, True)
    state = record_business_call_unanswered(state, T0 + 3 * H)
    assert state.permission is PermissionStatus.TEMPORARY
    assert check_can_call(state, BIZ, T0 + 3 * H) is None
    state = record_business_call_unanswered(state, T0 + 4 * H)
    assert (state.permission, state.permission_source) == (PermissionStatus.REVOKED, "automatic")
    refused(
        check_can_call(state, BIZ, T0 + 5 * H),
        "permission.revoked",
        138006,
        "call permission revoked: permission from user 34600000001 was revoked automatically after 4 "
        "consecutive unanswered business-initiated calls (§4.6); send a new call-permission request",
    )


def test_answered_call_breaks_the_unanswered_streak() -> None:
    state = permitted(T0)
    for i in range(3):
        state = record_business_call_unanswered(state, T0 + i * H)
    state = record_business_call_answered(state, T0 + 4 * H)
    assert (state.consecutive_unanswered, state.needs_system_message) == (0, False)
    for i in range(3):
        state = record_business_call_unanswered(state, T0 + (5 + i) * H)
    assert state.permission is PermissionStatus.TEMPORARY


def test_sandbox_unanswered_thresholds() -> None:
    state, limits = permitted(T0), CallingLimits.sandbox()
    for i in range(9):
        state = record_business_call_unanswered(state, T0 + i * H, limits=limits)
    assert state.needs_system_message and state.permission is PermissionStatus.TEMPORARY
    state = record_business_call_unanswered(state, T0 + 10 * H, limits=limits)
    assert state.permission is PermissionStatus.REVOKED


def test_duplicate_call_refused() -> None:
    refused(
        check_can_call(permitted(), BIZ, T0 + H, has_live_call=True),
        "bic.duplicate_call",
        138003,
        "one call at a time per user: a call with user 34600000001 is already in progress (§8.3); wait for it to end",
    )


def test_call_refused_during_meta_restriction() -> None:
    refused(check_can_call(permitted(), BIZ, T0 + H, restricted_until=T0 + 2 * H), "bic.restricted", 138014)
    assert check_can_call(permitted(), BIZ, T0 + 2 * H, restricted_until=T0 + 2 * H) is None


# --------------------------------------------------------------------------------------------------
# Countries without business-initiated calls (138013)
# --------------------------------------------------------------------------------------------------


def test_us_business_number_cannot_call() -> None:
    refused(
        check_can_call(permitted(), "15550001111", T0 + H),
        "bic.country_blocked",
        138013,
        "business-initiated calls unavailable in the business number's country: business number +15550001111 "
        "is in CA/US, where Meta does not offer business-initiated calls (error 138013); use a business "
        "number from another country",
    )


@pytest.mark.parametrize(
    ("number", "country"),
    [
        ("+90 212 000 0000", "TR"),
        ("201000000000", "EG"),
        ("84900000000", "VN"),
        ("2348000000000", "NG"),
        ("5350000000", "CU"),
        ("989120000000", "IR"),
        ("96393000000", "SY"),
        ("14165550000", "CA/US"),
    ],
)
def test_blocked_countries(number: str, country: str) -> None:
    assert bic_blocked_country(number) == country
    refused(check_can_call(permitted(), number, T0 + H), "bic.country_blocked", 138013)


@pytest.mark.parametrize("number", ["34910000000", "18765550000", "17875550000", "447700900000", "919800000000"])
def test_allowed_countries(number: str) -> None:
    """Spain, Jamaica and Puerto Rico (+1 but not US/CA), the UK, India; 2 (Egypt is 20) must not prefix-match."""
    assert bic_blocked_country(number) is None
    assert check_can_call(permitted(), number, T0 + H) is None


def test_country_is_checked_before_permission() -> None:
    refused(check_can_call(fresh(), "905320000000", T0), "bic.country_blocked", 138013)


def test_sandbox_test_numbers_may_call() -> None:
    assert check_can_call(permitted(), "15550001111", T0 + H, limits=CallingLimits.sandbox()) is None


def test_blocked_calling_codes_agree_with_rate_card() -> None:
    """The rules and the rate card name the same country for every calling code the rules know."""
    card = RateCard.load()
    for country, code in BIC_UNAVAILABLE_COUNTRIES.items():
        if code != "1":
            assert card.country_for_number(code + "1234567") == country
    for area, country in NANP_NON_US_CA.items():
        assert card.country_for_number("1" + area + "5550000") == country


# --------------------------------------------------------------------------------------------------
# Customer-service window (§8.1)
# --------------------------------------------------------------------------------------------------


def test_window_open_for_24h_after_user_message() -> None:
    window = with_window(T0).window()
    assert window.closes_at == T0 + 24 * H
    assert not window.is_open(T0 - S)
    assert window.is_open(T0)
    assert window.is_open(T0 + 24 * H - S)
    assert not window.is_open(T0 + 24 * H)
    assert not ServiceWindow(None).is_open(T0)


@pytest.mark.parametrize("how", ["message", "unanswered user call", "answered user call", "answered business call"])
def test_window_refreshers(how: str) -> None:
    state = with_window(T0)
    later = T0 + 20 * H
    if how == "message":
        state = record_user_message(state, later)
    elif how == "unanswered user call":
        state = record_user_call(state, later, connected=False)
    elif how == "answered user call":
        state = record_user_call(state, later, connected=True)
    else:
        state = record_business_call_answered(permitted(T0), later)
    assert state.window().is_open(later + 24 * H - S)
    assert not state.window().is_open(later + 24 * H)


def test_unanswered_business_call_does_not_open_window() -> None:
    state = record_business_call_unanswered(permitted(T0), T0 + H)
    assert state.window_refreshed_at is None


def test_late_webhook_does_not_move_window_backwards() -> None:
    state = record_user_message(with_window(T0 + 10 * H), T0)
    assert state.window_refreshed_at == T0 + 10 * H


# --------------------------------------------------------------------------------------------------
# Capacity (§8.3)
# --------------------------------------------------------------------------------------------------


def test_capacity_cap() -> None:
    assert check_capacity(7, 8) is None
    refused(
        check_capacity(8, 8),
        "capacity.full",
        None,
        "concurrent-call cap: 8 calls are live and this number's cap is 8 (Meta's own limit is 1000, §8.3); "
        "retry when a call ends",
    )
    assert check_capacity(999, 1000) is None
    refused(check_capacity(1000, MAX_CONCURRENT_CALLS), "capacity.full", 138002)


@pytest.mark.parametrize("cap", [0, -1, 1001, True])
def test_capacity_cap_validated(cap: int) -> None:
    with pytest.raises(ValueError, match="from 1 to 1000"):
        validate_capacity(cap)
    with pytest.raises(ValueError, match="from 1 to 1000"):
        check_capacity(0, cap)


# --------------------------------------------------------------------------------------------------
# Business hours (§5 shape), time zones, DST, holidays
# --------------------------------------------------------------------------------------------------


def madrid() -> BusinessHours:
    weekday = ["09:00-14:00", "15:00-18:00"]
    return BusinessHours.from_config(
        {
            "timezone": "Europe/Madrid",
            "weekly": {d: weekday for d in ("monday", "tuesday", "wednesday", "thursday", "friday")},
            "holidays": ["2026-12-25", {"date": "2026-12-24", "start_time": "1400", "end_time": "2359"}],
        }
    )


def test_hours_open_and_lunch_break() -> None:
    hours = madrid()
    assert hours.is_open(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))  # Tue 10:00 CET
    assert hours.check_open(datetime(2026, 11, 24, 8, 0, tzinfo=UTC)) is None  # Tue 09:00 CET, opening minute
    assert not hours.is_open(datetime(2026, 11, 24, 7, 59, 59, tzinfo=UTC))
    r = refused(
        hours.check_open(datetime(2026, 11, 24, 13, 30, tzinfo=UTC)),  # Tue 14:30 CET
        "hours.closed",
        None,
        "outside business hours: closed at 2026-11-24 14:30 (Tuesday) Europe/Madrid; next opening "
        "2026-11-24T14:00:00Z (Tuesday 15:00 Europe/Madrid)",
    )
    assert r.clears_at == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def test_hours_closing_minute_and_weekend() -> None:
    hours = madrid()
    assert hours.is_open(datetime(2026, 11, 27, 16, 59, 59, tzinfo=UTC))  # Fri 17:59:59 CET
    refused(
        hours.check_open(datetime(2026, 11, 27, 17, 0, tzinfo=UTC)),  # Fri 18:00 CET
        "hours.closed",
        None,
        "outside business hours: closed at 2026-11-27 18:00 (Friday) Europe/Madrid; next opening "
        "2026-11-30T08:00:00Z (Monday 09:00 Europe/Madrid)",
    )


def test_holiday() -> None:
    hours = madrid()
    refused(
        hours.check_open(datetime(2026, 12, 25, 10, 0, tzinfo=UTC)),  # Fri, Christmas
        "hours.holiday",
        None,
        "business holiday: 2026-12-25 is a holiday in Europe/Madrid; next opening 2026-12-28T08:00:00Z "
        "(Monday 09:00 Europe/Madrid)",
    )


def test_partial_day_holiday() -> None:
    hours = madrid()
    assert hours.is_open(datetime(2026, 12, 24, 12, 59, tzinfo=UTC))  # Thu 13:59 CET
    refused(hours.check_open(datetime(2026, 12, 24, 14, 0, tzinfo=UTC)), "hours.holiday", None)  # 15:00 CET


def test_dst_spring_forward_keeps_local_opening_time() -> None:
    hours = madrid()
    # Mon 23 Mar 2026, CET (UTC+1): 07:30Z is 08:30 local, closed; opens at 08:00Z.
    before = refused(hours.check_open(datetime(2026, 3, 23, 7, 30, tzinfo=UTC)), "hours.closed", None)
    assert before.clears_at == datetime(2026, 3, 23, 8, 0, tzinfo=UTC)
    # Mon 30 Mar 2026, after the 29 Mar switch to CEST (UTC+2): 07:30Z is 09:30 local, open.
    assert hours.is_open(datetime(2026, 3, 30, 7, 30, tzinfo=UTC))
    refused(
        hours.check_open(datetime(2026, 3, 29, 12, 0, tzinfo=UTC)),  # the switch-over Sunday
        "hours.closed",
        None,
        "outside business hours: closed at 2026-03-29 14:00 (Sunday) Europe/Madrid; next opening "
        "2026-03-30T07:00:00Z (Monday 09:00 Europe/Madrid)",
    )


def test_dst_fall_back() -> None:
    hours = madrid()
    # Fri 23 Oct 2026 is CEST: 17:00 local = 15:00Z. Mon 26 Oct is CET: 09:00 local = 08:00Z.
    assert hours.is_open(datetime(2026, 10, 23, 15, 59, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 10, 23, 16, 0, tzinfo=UTC))
    r = refused(hours.check_open(datetime(2026, 10, 23, 16, 0, tzinfo=UTC)), "hours.closed", None)
    assert r.clears_at == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)


def test_meta_call_hours_shape_round_trips() -> None:
    meta = {
        "status": "ENABLED",
        "timezone_id": "America/Sao_Paulo",
        "weekly_operating_hours": [
            {"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200"},
            {"day_of_week": "MONDAY", "open_time": "1300", "close_time": "1800"},
            {"day_of_week": "TUESDAY", "open_time": "0900", "close_time": "1800"},
        ],
        "holiday_schedule": [{"date": "2026-12-25", "start_time": "0000", "end_time": "2359"}],
    }
    hours = BusinessHours.from_config(meta)
    assert hours.weekly[0] == (TimeRange(540, 720), TimeRange(780, 1080))
    assert hours.holidays == (Holiday(date(2026, 12, 25)),)
    assert hours.to_meta() == meta
    # Monday 12:30 in São Paulo (UTC-3) is the lunch gap.
    assert not hours.is_open(datetime(2026, 11, 23, 15, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2026, 11, 23, 16, 0, tzinfo=UTC))


def test_disabled_hours_mean_always_open() -> None:
    assert BusinessHours.always_open().check_open(datetime(2026, 12, 25, 3, 0, tzinfo=UTC)) is None
    assert BusinessHours.from_config({"status": "DISABLED", "timezone_id": "UTC"}).is_open(T0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"timezone": "Mars/Olympus", "weekly": {"monday": "09:00-17:00"}}, "unknown time zone"),
        ({"weekly": {"monday": ["08:00-09:00", "10:00-11:00", "12:00-13:00"]}}, "at most 2 time ranges"),
        ({"weekly": {"monday": ["08:00-12:00", "11:00-13:00"]}}, "overlap"),
        ({"weekly": {"monday": "17:00-09:00"}}, "open must be before close"),
        ({"weekly": {"funday": "09:00-17:00"}}, "unknown weekday"),
        ({"weekly": {"monday": "9-17"}}, "HHMM or HH:MM"),
        ({"weekly": {}}, "no weekday has any hours"),
        ({"weekly": {"monday": "09:00-17:00"}, "holidays": ["25/12/2026"]}, "YYYY-MM-DD"),
        (
            {"weekly": {"monday": "09:00-17:00"}, "holidays": [f"2027-01-{d:02d}" for d in range(1, 22)]},
            "at most 20 holidays",
        ),
    ],
)
def test_hours_validation(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessHours.from_config(config)


# --------------------------------------------------------------------------------------------------
# Inbound calls and missed-call reasons
# --------------------------------------------------------------------------------------------------


def test_inbound_call_checks_hours_then_capacity() -> None:
    hours = madrid()
    open_at = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    closed_at = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
    assert check_inbound_call(open_at, hours=hours, live=3, cap=4) is None
    full = refused(check_inbound_call(open_at, hours=hours, live=4, cap=4), "capacity.full", None)
    late = refused(check_inbound_call(closed_at, hours=hours, live=4, cap=4), "hours.closed", None)
    xmas = refused(
        check_inbound_call(datetime(2026, 12, 25, 9, 0, tzinfo=UTC), hours=hours, live=0, cap=4), "hours.holiday", None
    )
    assert [missed_call_reason(r) for r in (full, late, xmas, None)] == [
        "over_capacity",
        "after_hours",
        "after_hours",
        "rejected",
    ]


# --------------------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------------------


def test_state_round_trips_through_store_record() -> None:
    state = record_permission_request(with_window(T0), T0)
    state = record_permission_granted(state, T0 + H, permanent=False)
    state = record_business_call_answered(state, T0 + 2 * H)
    state = record_business_call_unanswered(state, T0 + 3 * H)
    assert UserCallingState.from_record(state.to_record()) == state


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_can_call(permitted(), BIZ, datetime(2026, 11, 24, 10, 0))


def test_refusal_serialises_and_raises() -> None:
    r = refused(
        check_can_request_permission(record_permission_request(fresh(), T0), T0 + H, kind="template"),
        "permission.request_limit_24h",
        138009,
    )
    assert r.as_dict()["clears_at"] == "2026-11-25T10:00:00Z"
    with pytest.raises(Refused) as info:
        raise Refused(r)
    assert info.value.refusal is r
    with pytest.raises(ValueError, match="unknown rule"):
        Refusal(rule="made.up", reason="x")


def test_default_limits_match_the_spec() -> None:
    limits = CallingLimits()
    assert (limits.requests_per_24h, limits.requests_per_7d) == (1, 2)
    assert limits.temporary_permission == timedelta(days=7)
    assert limits.connected_calls_per_24h == 100
    assert (limits.unanswered_system_message, limits.unanswered_revoke) == (2, 4)
    assert limits.service_window == timedelta(hours=24)
    assert set(limits.bic_blocked_countries) >= {"US", "CA", "TR", "EG", "VN", "NG"}


def test_late_request_webhook_keeps_history_in_time_order() -> None:
    state = record_permission_request(fresh(), T0 + 2 * H)
    state = record_permission_request(state, T0)
    assert state.permission_requests == (T0, T0 + 2 * H)
    r = refused(
        check_can_request_permission(state, T0 + 3 * H, kind="template"), "permission.request_limit_24h", 138009
    )
    assert r.clears_at == T0 + 26 * H


def test_blocked_country_set_is_configurable_but_must_be_known() -> None:
    only_turkey = CallingLimits(bic_blocked_countries=frozenset({"TR"}))
    assert check_can_call(permitted(), "15550001111", T0 + H, limits=only_turkey) is None
    refused(check_can_call(permitted(), "905320000000", T0 + H, limits=only_turkey), "bic.country_blocked", 138013)
    with pytest.raises(ValueError, match="no calling code known for blocked countries XX"):
        CallingLimits(bic_blocked_countries=frozenset({"XX"}))
