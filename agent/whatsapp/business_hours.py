"""Business hours: when inbound calls are answered, in the shape Meta's `call_hours` setting accepts.

Kept apart from the calling rules: it is configuration parsing and calendar arithmetic, not a Meta limit, and
the settings validate it without loading the rule book.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.whatsapp.refusals import Refusal, _iso, _refuse, _utc

__all__ = ["MAX_HOLIDAYS", "MAX_RANGES_PER_DAY", "BusinessHours", "Holiday", "TimeRange"]


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
