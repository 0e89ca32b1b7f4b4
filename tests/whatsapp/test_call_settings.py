"""Issue 19, call settings as code: Meta's §5 rules one by one, call_hours from business hours, the diff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.whatsapp.call_settings import (
    RULES,
    CallHours,
    CallingSettings,
    Holiday,
    WeeklyHours,
    call_hours_from_business_hours,
    diff_settings,
    holiday_deletion_warning,
    validate_calling,
)
from agent.whatsapp.rules import BusinessHours

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MON = WeeklyHours("MONDAY", "0900", "1200")


def hours(*weekly: WeeklyHours, holidays: tuple[Holiday, ...] | None = None, tz: str = "Europe/Madrid") -> CallHours:
    return CallHours("ENABLED", tz, weekly or (MON,), holidays)


def rules_broken(settings: CallingSettings) -> list[str]:
    return [p.rule for p in validate_calling(settings, NOW)]


def test_a_valid_schedule_passes() -> None:
    settings = CallingSettings(
        status="ENABLED",
        call_icon_visibility="DISABLE_ALL",
        restrict_to_user_countries=("BR", "IN"),
        callback_permission_status="ENABLED",
        call_hours=hours(MON, WeeklyHours("MONDAY", "1300", "1800"), holidays=(Holiday("2026-12-25"),)),
    )
    assert validate_calling(settings, NOW) == []


@pytest.mark.parametrize(
    ("settings", "rule"),
    [
        (CallingSettings(status="ON"), "invalid_status"),
        (CallingSettings(callback_permission_status="enabled"), "invalid_status"),
        (CallingSettings(call_hours=CallHours("YES", "UTC", (MON,))), "invalid_status"),
        (CallingSettings(call_icon_visibility="HIDE_IN_CHAT"), "invalid_call_icon_visibility"),
        (CallingSettings(restrict_to_user_countries=("BRA",)), "invalid_country"),
        (CallingSettings(call_hours=hours(tz="Mars/Olympus")), "invalid_timezone"),
        (CallingSettings(call_hours=CallHours("ENABLED", "UTC", ())), "empty_weekly_hours"),
        (CallingSettings(call_hours=hours(WeeklyHours("MON", "0900", "1000"))), "invalid_schedule"),
        (CallingSettings(call_hours=hours(WeeklyHours("MONDAY", "09:00", "1000"))), "invalid_schedule"),
        (CallingSettings(call_hours=hours(WeeklyHours("MONDAY", "0900", "2400"))), "invalid_schedule"),
        (CallingSettings(call_hours=hours(WeeklyHours("MONDAY", "1000", "0900"))), "invalid_schedule"),
        (
            CallingSettings(
                call_hours=hours(
                    WeeklyHours("MONDAY", "0800", "0900"),
                    WeeklyHours("MONDAY", "1000", "1100"),
                    WeeklyHours("MONDAY", "1200", "1300"),
                )
            ),
            "too_many_entries_per_day",
        ),
        (
            CallingSettings(call_hours=hours(MON, WeeklyHours("MONDAY", "1100", "1400"))),
            "overlapping_entries",
        ),
        (
            CallingSettings(call_hours=hours(holidays=tuple(Holiday(f"2027-01-{d:02d}") for d in range(1, 22)))),
            "too_many_holidays",
        ),
        (CallingSettings(call_hours=hours(holidays=(Holiday("25/12/2026"),))), "bad_date_format"),
        (CallingSettings(call_hours=hours(holidays=(Holiday("2026-02-30"),))), "bad_date_format"),
        (CallingSettings(call_hours=hours(holidays=(Holiday("2026-12-06"),))), "past_holiday"),
        (CallingSettings(call_hours=hours(holidays=(Holiday("2026-12-26", "1200", "1100"),))), "invalid_schedule"),
    ],
)
def test_each_rule_is_refused_by_name(settings: CallingSettings, rule: str) -> None:
    problems = validate_calling(settings, NOW)
    assert [p.rule for p in problems] == [rule]
    assert problems[0].message.startswith(RULES[rule] + ":")


def test_touching_entries_do_not_overlap_and_two_a_day_is_the_limit() -> None:
    ok = CallingSettings(call_hours=hours(MON, WeeklyHours("MONDAY", "1200", "1800")))
    assert rules_broken(ok) == []


def test_past_is_judged_in_the_schedules_time_zone() -> None:
    """At 23:30 UTC on Dec 7 it is already Dec 8 in Tokyo: a Dec 7 holiday there is past."""
    late = datetime(2026, 12, 7, 23, 30, tzinfo=UTC)
    tokyo = CallingSettings(call_hours=hours(holidays=(Holiday("2026-12-07"),), tz="Asia/Tokyo"))
    assert [p.rule for p in validate_calling(tokyo, late)] == ["past_holiday"]
    utc = CallingSettings(call_hours=hours(holidays=(Holiday("2026-12-07"),), tz="UTC"))
    assert validate_calling(utc, late) == []


def test_call_hours_are_generated_from_wacalls_business_hours() -> None:
    business = BusinessHours.from_config(
        {
            "timezone": "America/Sao_Paulo",
            "weekly": {"monday": ["09:00-12:00", "13:00-18:00"], "tuesday": "09:00-24:00"},
            "holidays": ["2026-12-25", "2026-01-01", {"date": "2026-12-31", "start_time": "1400", "end_time": "2359"}],
        }
    )
    generated, notes = call_hours_from_business_hours(business, NOW)
    assert generated == CallHours(
        "ENABLED",
        "America/Sao_Paulo",
        (
            WeeklyHours("MONDAY", "0900", "1200"),
            WeeklyHours("MONDAY", "1300", "1800"),
            WeeklyHours("TUESDAY", "0900", "2359"),
        ),
        (Holiday("2026-12-25", "0000", "2359"), Holiday("2026-12-31", "1400", "2359")),
    )
    assert notes == ["holiday 2026-01-01 is past and is not sent (Meta refuses past dates)"]
    assert validate_calling(CallingSettings(call_hours=generated), NOW) == []
    assert generated.to_meta()["weekly_operating_hours"][0] == {
        "day_of_week": "MONDAY",
        "open_time": "0900",
        "close_time": "1200",
    }


def test_hours_that_are_off_still_give_meta_weekly_hours() -> None:
    generated, notes = call_hours_from_business_hours(BusinessHours.always_open(), NOW)
    assert generated.status == "DISABLED" and len(generated.weekly_operating_hours) == 7
    assert validate_calling(CallingSettings(call_hours=generated), NOW) == []
    assert "open 24/7" in notes[0]


def test_diff_lists_only_managed_fields_and_compares_entries_as_sets() -> None:
    current = CallingSettings.from_meta(
        {
            "status": "ENABLED",
            "call_icon_visibility": "DEFAULT",
            "call_hours": {
                "status": "ENABLED",
                "timezone_id": "Europe/Madrid",
                "weekly_operating_hours": [
                    {"day_of_week": "TUESDAY", "open_time": "0900", "close_time": "1800"},
                    {"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200"},
                ],
                "holiday_schedule": [{"date": "2026-12-25", "start_time": "0000", "end_time": "2359"}],
            },
            "sip": {"status": "DISABLED", "servers": []},
        }
    )
    assert current.other == {"sip": {"status": "DISABLED", "servers": []}}
    same_hours = hours(WeeklyHours("MONDAY", "0900", "1200"), WeeklyHours("TUESDAY", "0900", "1800"))
    desired = CallingSettings(status="DISABLED", call_hours=same_hours)
    changes = [str(c) for c in diff_settings(current, desired)]
    assert changes == [
        "~ status: ENABLED -> DISABLED",
        "- call_hours.holiday_schedule: 2026-12-25 0000-2359",
    ]
    warning = holiday_deletion_warning(current, desired)
    assert warning is not None and "DELETES the 1 holiday(s)" in warning and "2026-12-25" in warning
    keep = CallingSettings(
        call_hours=CallHours(
            same_hours.status, same_hours.timezone_id, same_hours.weekly_operating_hours, (Holiday("2026-12-25"),)
        )
    )
    assert diff_settings(current, keep) == [] and holiday_deletion_warning(current, keep) is None


def test_a_push_body_holds_only_the_managed_fields() -> None:
    desired = CallingSettings(restrict_to_user_countries=(), call_hours=hours())
    assert desired.to_meta() == {
        "call_icons": {"restrict_to_user_countries": []},
        "call_hours": {
            "status": "ENABLED",
            "timezone_id": "Europe/Madrid",
            "weekly_operating_hours": [{"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200"}],
        },
    }
