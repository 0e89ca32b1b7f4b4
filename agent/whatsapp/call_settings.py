"""The business number's `calling` settings as code (spec §5): typed, validated as Meta does, diffed.

Meta's app UI and wacall's own inbound rules must agree on when the business takes calls; otherwise a
caller sees "open" on their phone and is turned away by wacall (or the reverse). So `call_hours` is
*generated* from wacall's `business_hours` config (one source of truth), checked against Meta's rules
before anything is sent (a refusal names the rule, not just "(#100) Invalid parameter"), and compared
with what Meta has, so an operator sees the change before applying it.

Pure: no I/O and no wall clock (the caller passes `now`), so the CLI and the tests agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.whatsapp.rules import BusinessHours

__all__ = [
    "DAYS",
    "MAX_ENTRIES_PER_DAY",
    "MAX_HOLIDAYS",
    "RULES",
    "CallHours",
    "CallingSettings",
    "Change",
    "Holiday",
    "SettingsProblem",
    "WeeklyHours",
    "call_hours_from_business_hours",
    "diff_settings",
    "holiday_deletion_warning",
    "validate_calling",
]

DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
STATUSES = ("ENABLED", "DISABLED")
#: §5: HIDE_IN_CHAT appears only in Meta's FAQ (probably legacy), never in the parameter table, so it is refused.
ICON_VISIBILITIES = ("DEFAULT", "DISABLE_ALL")
MAX_ENTRIES_PER_DAY = 2  # §5
MAX_HOLIDAYS = 20  # §5

#: Rule id -> the validation error as §5 lists Meta's; a problem's message starts with it, so an operator can
#: match it with what Meta would have answered. Ids are API (tests key on them).
RULES: Mapping[str, str] = {
    "invalid_status": "invalid status",
    "invalid_call_icon_visibility": "invalid call_icon_visibility",
    "invalid_country": "invalid country code",
    "invalid_timezone": "invalid timezone",
    "empty_weekly_hours": "empty weekly hours",
    "invalid_schedule": "invalid schedule",
    "too_many_entries_per_day": f"more than {MAX_ENTRIES_PER_DAY} entries per day",
    "overlapping_entries": "overlapping entries",
    "too_many_holidays": f"more than {MAX_HOLIDAYS} holidays",
    "bad_date_format": "bad date format",
    "past_holiday": "past holiday",
}

_HHMM = re.compile(r"^([01]\d|2[0-3])([0-5]\d)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True, order=True)
class WeeklyHours:
    """One opening span of `weekly_operating_hours`; times are Meta's "HHMM" strings, kept as sent."""

    day_of_week: str
    open_time: str
    close_time: str

    def __str__(self) -> str:
        return f"{self.day_of_week} {self.open_time}-{self.close_time}"


@dataclass(frozen=True, order=True)
class Holiday:
    """One `holiday_schedule` entry: closed on `date` (YYYY-MM-DD) from start_time to end_time."""

    date: str
    start_time: str = "0000"
    end_time: str = "2359"

    def __str__(self) -> str:
        return f"{self.date} {self.start_time}-{self.end_time}"


@dataclass(frozen=True)
class CallHours:
    """`calling.call_hours`. Meta replaces it whole on every update, so `holiday_schedule=None` (or empty)
    *deletes* the holidays Meta has (§5)."""

    status: str
    timezone_id: str
    weekly_operating_hours: tuple[WeeklyHours, ...]
    holiday_schedule: tuple[Holiday, ...] | None = None

    @classmethod
    def from_meta(cls, data: Mapping[str, Any]) -> CallHours:
        weekly = tuple(
            WeeklyHours(str(w.get("day_of_week", "")), str(w.get("open_time", "")), str(w.get("close_time", "")))
            for w in data.get("weekly_operating_hours") or ()
            if isinstance(w, Mapping)
        )
        raw_holidays = data.get("holiday_schedule")
        holidays = (
            None
            if raw_holidays is None
            else tuple(
                Holiday(str(h.get("date", "")), str(h.get("start_time", "")), str(h.get("end_time", "")))
                for h in raw_holidays
                if isinstance(h, Mapping)
            )
        )
        return cls(str(data.get("status", "")), str(data.get("timezone_id", "")), weekly, holidays)

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "timezone_id": self.timezone_id,
            "weekly_operating_hours": [
                {"day_of_week": w.day_of_week, "open_time": w.open_time, "close_time": w.close_time}
                for w in self.weekly_operating_hours
            ],
        }
        if self.holiday_schedule:
            out["holiday_schedule"] = [
                {"date": h.date, "start_time": h.start_time, "end_time": h.end_time} for h in self.holiday_schedule
            ]
        return out


@dataclass(frozen=True)
class CallingSettings:
    """The parts of `calling` wacall manages; None means "not managed here" (left as Meta has it).

    `other` keeps what a GET returned beyond them (sip, audio, srtp, restrictions) for display only: a push
    never sends it, because Meta merges the top-level `calling` fields and only `call_hours` is replaced whole.
    """

    status: str | None = None
    call_icon_visibility: str | None = None
    restrict_to_user_countries: tuple[str, ...] | None = None
    callback_permission_status: str | None = None
    call_hours: CallHours | None = None
    other: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_meta(cls, calling: Mapping[str, Any]) -> CallingSettings:
        """From a GET's `calling` object (or a body we built); unknown fields go to `other`."""
        icons = calling.get("call_icons")
        countries = icons.get("restrict_to_user_countries") if isinstance(icons, Mapping) else None
        hours = calling.get("call_hours")
        known = {"status", "call_icon_visibility", "call_icons", "callback_permission_status", "call_hours"}
        return cls(
            status=_opt_str(calling.get("status")),
            call_icon_visibility=_opt_str(calling.get("call_icon_visibility")),
            restrict_to_user_countries=None if countries is None else tuple(str(c) for c in countries),
            callback_permission_status=_opt_str(calling.get("callback_permission_status")),
            call_hours=CallHours.from_meta(hours) if isinstance(hours, Mapping) else None,
            other={k: v for k, v in calling.items() if k not in known},
        )

    def to_meta(self) -> dict[str, Any]:
        """The `calling` object of a POST: only the managed fields."""
        out: dict[str, Any] = {}
        if self.status is not None:
            out["status"] = self.status
        if self.call_icon_visibility is not None:
            out["call_icon_visibility"] = self.call_icon_visibility
        if self.restrict_to_user_countries is not None:
            out["call_icons"] = {"restrict_to_user_countries": list(self.restrict_to_user_countries)}
        if self.callback_permission_status is not None:
            out["callback_permission_status"] = self.callback_permission_status
        if self.call_hours is not None:
            out["call_hours"] = self.call_hours.to_meta()
        return out


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------------
# Validation (§5 "Validation errors listed")
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsProblem:
    """One rule broken; `message` starts with Meta's name for the rule so it reads like Meta's refusal."""

    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


def _problem(rule: str, detail: str) -> SettingsProblem:
    return SettingsProblem(rule, f"{RULES[rule]}: {detail}")


def _minutes(text: str) -> int | None:
    match = _HHMM.match(text)
    return None if match is None else int(match[1]) * 60 + int(match[2])


def validate_calling(settings: CallingSettings, now: datetime) -> list[SettingsProblem]:
    """Every rule of §5 that `settings` breaks, in field order; empty when Meta should accept it.

    Past holidays are judged against today's date in the schedule's own time zone (UTC if that zone is
    invalid), as a holiday is a local date.
    """
    problems: list[SettingsProblem] = []
    for name in ("status", "callback_permission_status"):
        value = getattr(settings, name)
        if value is not None and value not in STATUSES:
            problems.append(_problem("invalid_status", f"{name} is {value!r}; expected ENABLED or DISABLED"))
    visibility = settings.call_icon_visibility
    if visibility is not None and visibility not in ICON_VISIBILITIES:
        problems.append(
            _problem("invalid_call_icon_visibility", f"{visibility!r}; expected {' or '.join(ICON_VISIBILITIES)}")
        )
    for country in settings.restrict_to_user_countries or ():
        if not _COUNTRY.match(country):
            problems.append(_problem("invalid_country", f"{country!r} in restrict_to_user_countries is not ISO-2"))
    if settings.call_hours is not None:
        problems += _validate_hours(settings.call_hours, now)
    return problems


def _validate_hours(hours: CallHours, now: datetime) -> list[SettingsProblem]:
    problems: list[SettingsProblem] = []
    if hours.status not in STATUSES:
        problems.append(
            _problem("invalid_status", f"call_hours.status is {hours.status!r}; expected ENABLED or DISABLED")
        )
    zone: ZoneInfo | None = None
    try:
        zone = ZoneInfo(hours.timezone_id) if hours.timezone_id else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        problems.append(_problem("invalid_timezone", f"timezone_id {hours.timezone_id!r} is not a time zone id"))
    if not hours.weekly_operating_hours:
        problems.append(_problem("empty_weekly_hours", "weekly_operating_hours needs at least one entry"))
    by_day: dict[str, list[tuple[int, int, WeeklyHours]]] = {}
    for entry in hours.weekly_operating_hours:
        if entry.day_of_week not in DAYS:
            problems.append(_problem("invalid_schedule", f"day_of_week {entry.day_of_week!r} is not MONDAY..SUNDAY"))
            continue
        start, end = _minutes(entry.open_time), _minutes(entry.close_time)
        if start is None or end is None:
            problems.append(_problem("invalid_schedule", f"{entry}: times must be HHMM, 0000 to 2359"))
            continue
        if start >= end:
            problems.append(_problem("invalid_schedule", f"{entry}: open_time must be before close_time"))
            continue
        by_day.setdefault(entry.day_of_week, []).append((start, end, entry))
    for day, spans in by_day.items():
        if len(spans) > MAX_ENTRIES_PER_DAY:
            problems.append(_problem("too_many_entries_per_day", f"{day} has {len(spans)} entries"))
        spans.sort()
        for (_, end_a, a), (start_b, _, b) in pairwise(spans):
            if start_b < end_a:
                problems.append(_problem("overlapping_entries", f"{a} and {b} overlap"))
    holidays = hours.holiday_schedule or ()
    if len(holidays) > MAX_HOLIDAYS:
        problems.append(_problem("too_many_holidays", f"holiday_schedule has {len(holidays)} entries"))
    today = now.astimezone(zone or UTC).date()
    for holiday in holidays:
        try:
            day = date.fromisoformat(holiday.date) if _DATE.match(holiday.date) else None
        except ValueError:
            day = None
        if day is None:
            problems.append(_problem("bad_date_format", f"holiday date {holiday.date!r} is not YYYY-MM-DD"))
            continue
        if day < today:
            problems.append(_problem("past_holiday", f"{holiday.date} is before today ({today.isoformat()})"))
        start, end = _minutes(holiday.start_time), _minutes(holiday.end_time)
        if start is None or end is None or start >= end:
            problems.append(
                _problem("invalid_schedule", f"holiday {holiday}: times must be HHMM with start before end")
            )
    return problems


# --------------------------------------------------------------------------------------------------
# call_hours from wacall's business hours
# --------------------------------------------------------------------------------------------------


def call_hours_from_business_hours(hours: BusinessHours, now: datetime) -> tuple[CallHours, list[str]]:
    """Meta's `call_hours` for the same hours wacall enforces, and notes on what had to be adapted.

    Holidays already past are left out (Meta refuses past dates, and they no longer matter to wacall either).
    Hours that are off ("open 24/7") still need non-empty weekly hours at Meta, so every day is sent as
    0000-2359 under status DISABLED, which Meta also reads as open around the clock.
    """
    meta = hours.to_meta()
    notes: list[str] = []
    today = now.astimezone(hours.zone).date()
    holidays = []
    for h in meta["holiday_schedule"]:
        if date.fromisoformat(h["date"]) < today:
            notes.append(f"holiday {h['date']} is past and is not sent (Meta refuses past dates)")
            continue
        holidays.append(Holiday(h["date"], h["start_time"], h["end_time"]))
    weekly = tuple(
        WeeklyHours(w["day_of_week"], w["open_time"], w["close_time"]) for w in meta["weekly_operating_hours"]
    )
    if not weekly:
        weekly = tuple(WeeklyHours(day, "0000", "2359") for day in DAYS)
        notes.append("business hours are off (open 24/7): call_hours is sent DISABLED with every day 0000-2359")
    return CallHours(meta["status"], meta["timezone_id"], weekly, tuple(holidays) or None), notes


# --------------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference: `before` None means added, `after` None removed."""

    path: str
    before: Any
    after: Any

    def __str__(self) -> str:
        if self.before is None:
            return f"+ {self.path}: {self.after}"
        if self.after is None:
            return f"- {self.path}: {self.before}"
        return f"~ {self.path}: {self.before} -> {self.after}"


def diff_settings(current: CallingSettings, desired: CallingSettings) -> list[Change]:
    """What a push of `desired` would change on Meta's side; fields `desired` does not manage are skipped.

    Weekly hours and holidays are compared as sets of entries (Meta does not promise to keep their order).
    """
    changes: list[Change] = []
    for name in ("status", "call_icon_visibility", "callback_permission_status"):
        after = getattr(desired, name)
        before = getattr(current, name)
        if after is not None and after != before:
            changes.append(Change(name, before if before is not None else "(unset)", after))
    if desired.restrict_to_user_countries is not None:
        before_c = current.restrict_to_user_countries or ()
        if sorted(before_c) != sorted(desired.restrict_to_user_countries):
            changes.append(
                Change(
                    "call_icons.restrict_to_user_countries",
                    list(before_c),
                    list(desired.restrict_to_user_countries),
                )
            )
    if desired.call_hours is not None:
        changes += _diff_hours(current.call_hours, desired.call_hours)
    return changes


def _diff_hours(current: CallHours | None, desired: CallHours) -> list[Change]:
    if current is None:
        current = CallHours("(unset)", "(unset)", ())
    changes: list[Change] = []
    for name in ("status", "timezone_id"):
        before, after = getattr(current, name), getattr(desired, name)
        if before != after:
            changes.append(Change(f"call_hours.{name}", before, after))
    for name in ("weekly_operating_hours", "holiday_schedule"):
        before_set = set(getattr(current, name) or ())
        after_set = set(getattr(desired, name) or ())
        changes += [Change(f"call_hours.{name}", str(e), None) for e in sorted(before_set - after_set)]
        changes += [Change(f"call_hours.{name}", None, str(e)) for e in sorted(after_set - before_set)]
    return changes


def holiday_deletion_warning(current: CallingSettings, desired: CallingSettings) -> str | None:
    """Meta deletes the holiday schedule when an update omits it (§5); say so before it happens."""
    if desired.call_hours is None or desired.call_hours.holiday_schedule:
        return None
    existing = (current.call_hours.holiday_schedule if current.call_hours else None) or ()
    if not existing:
        return None
    dates = ", ".join(h.date for h in existing)
    return (
        f"this push has no holiday_schedule, so Meta DELETES the {len(existing)} holiday(s) it has ({dates}): "
        "call_hours is replaced as a whole; add them to business_hours.holidays to keep them"
    )
