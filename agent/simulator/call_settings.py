"""Meta's side of `GET`/`POST /{phone-number-id}/settings` (spec §5): the stored `calling` object.

Written from the spec alone, like the rest of the simulator: it does not import the server's validator
(`agent.whatsapp.call_settings`), so a misreading of §5 on one side shows up as a failing test instead of
being shared. Pure bookkeeping plus validation; `MetaSimulator` wires it to HTTP and webhooks.

Merge rules (§5 simulator rules 1-2): top-level `calling` fields in an update replace the stored ones,
fields not sent are kept, and `call_hours` is replaced whole, so an update whose `call_hours` has no
`holiday_schedule` deletes the stored holidays.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.simulator.graph_api import GraphApiError

WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
ON_OFF = ("ENABLED", "DISABLED")
VISIBILITY = ("DEFAULT", "DISABLE_ALL")
PER_DAY_LIMIT = 2
HOLIDAY_LIMIT = 20
CODECS = ("PCMA", "PCMU")
KEY_EXCHANGE = ("DTLS", "SDES")

_TIME = re.compile(r"^(?:[01][0-9]|2[0-3])[0-5][0-9]$")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def settings_error(rule: str, details: str) -> GraphApiError:
    """Meta's catch-all code 100, with the §5 validation error named first in `details`."""
    return GraphApiError(100, f"{rule}: {details}", message="(#100) Invalid parameter")


def _on_off(value: Any, where: str) -> str:
    if value not in ON_OFF:
        raise settings_error("invalid status", f"{where} must be ENABLED or DISABLED, got {value!r}")
    return str(value)


def _clock_minutes(value: Any, where: str) -> int:
    if not isinstance(value, str) or not _TIME.match(value):
        raise settings_error("invalid schedule", f"{where} must be a time written HHMM, got {value!r}")
    return int(value[:2]) * 60 + int(value[2:])


def _check_weekly(hours: dict[str, Any]) -> None:
    weekly = hours.get("weekly_operating_hours")
    if not isinstance(weekly, list) or not weekly:
        raise settings_error(
            "empty weekly hours", "call_hours.weekly_operating_hours is required and must not be empty"
        )
    spans: dict[str, list[tuple[int, int]]] = {}
    for i, item in enumerate(weekly):
        where = f"weekly_operating_hours[{i}]"
        if not isinstance(item, dict):
            raise settings_error("invalid schedule", f"{where} must be an object")
        day = item.get("day_of_week")
        if day not in WEEKDAYS:
            raise settings_error("invalid schedule", f"{where}.day_of_week {day!r} is not a weekday name")
        opens = _clock_minutes(item.get("open_time"), f"{where}.open_time")
        closes = _clock_minutes(item.get("close_time"), f"{where}.close_time")
        if opens >= closes:
            raise settings_error("invalid schedule", f"{where}: open_time must come before close_time")
        spans.setdefault(day, []).append((opens, closes))
    for day, day_spans in spans.items():
        if len(day_spans) > PER_DAY_LIMIT:
            raise settings_error(
                f"more than {PER_DAY_LIMIT} entries per day", f"{day} has {len(day_spans)} operating-hour entries"
            )
        day_spans.sort()
        for i in range(1, len(day_spans)):
            if day_spans[i][0] < day_spans[i - 1][1]:
                raise settings_error("overlapping entries", f"two {day} entries overlap")


def _check_holidays(hours: dict[str, Any], zone: ZoneInfo, now: float) -> None:
    holidays = hours.get("holiday_schedule")
    if holidays is None:
        return
    if not isinstance(holidays, list):
        raise settings_error("invalid schedule", "call_hours.holiday_schedule must be a list")
    if len(holidays) > HOLIDAY_LIMIT:
        raise settings_error("invalid schedule", f"at most {HOLIDAY_LIMIT} holidays, got {len(holidays)}")
    local_today = dt.datetime.fromtimestamp(now, zone).date()
    for i, item in enumerate(holidays):
        where = f"holiday_schedule[{i}]"
        if not isinstance(item, dict):
            raise settings_error("invalid schedule", f"{where} must be an object")
        raw = item.get("date")
        try:
            day = dt.date.fromisoformat(raw) if isinstance(raw, str) and _DAY.match(raw) else None
        except ValueError:
            day = None
        if day is None:
            raise settings_error("bad date format", f"{where}.date must be YYYY-MM-DD, got {raw!r}")
        if day < local_today:
            raise settings_error("past holiday", f"{where}.date {raw} is in the past")
        starts = _clock_minutes(item.get("start_time"), f"{where}.start_time")
        ends = _clock_minutes(item.get("end_time"), f"{where}.end_time")
        if starts >= ends:
            raise settings_error("invalid schedule", f"{where}: start_time must come before end_time")


def check_call_hours(hours: Any, now: float) -> None:
    """Every §5 rule on `call_hours`; raises the first broken one as Graph error 100."""
    if not isinstance(hours, dict):
        raise settings_error("invalid schedule", "call_hours must be an object")
    _on_off(hours.get("status"), "call_hours.status")
    tz = hours.get("timezone_id")
    try:
        zone = ZoneInfo(tz) if isinstance(tz, str) and tz else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        raise settings_error("invalid timezone", f"call_hours.timezone_id {tz!r} is not a known time zone")
    _check_weekly(hours)
    _check_holidays(hours, zone, now)


def check_update(calling: Any, now: float) -> None:
    """The whole `calling` object of a POST, field by field (§5)."""
    if not isinstance(calling, dict) or not calling:
        raise GraphApiError(100, "The parameter calling is required", message="(#100) Invalid parameter")
    for key in ("status", "callback_permission_status"):
        if key in calling:
            _on_off(calling[key], key)
    if "call_icon_visibility" in calling and calling["call_icon_visibility"] not in VISIBILITY:
        raise settings_error(
            "invalid status",
            f"call_icon_visibility must be DEFAULT or DISABLE_ALL, got {calling['call_icon_visibility']!r}",
        )
    if "call_icons" in calling:
        icons = calling["call_icons"]
        countries = icons.get("restrict_to_user_countries") if isinstance(icons, dict) else None
        if not isinstance(countries, list) or not all(
            isinstance(c, str) and len(c) == 2 and c.isascii() and c.isupper() for c in countries
        ):
            raise settings_error(
                "invalid parameter", "call_icons.restrict_to_user_countries must be a list of ISO-2 country codes"
            )
    if "call_hours" in calling:
        check_call_hours(calling["call_hours"], now)
    if "srtp_key_exchange_protocol" in calling and calling["srtp_key_exchange_protocol"] not in KEY_EXCHANGE:
        raise settings_error("invalid parameter", "srtp_key_exchange_protocol must be DTLS or SDES")
    if "audio" in calling:
        audio = calling["audio"]
        codecs = audio.get("additional_codecs") if isinstance(audio, dict) else None
        if not isinstance(codecs, list) or any(c not in CODECS for c in codecs):
            raise settings_error("invalid parameter", "audio.additional_codecs must list PCMA and/or PCMU only")
    if "sip" in calling:
        sip = calling["sip"]
        if not isinstance(sip, dict):
            raise settings_error("invalid parameter", "sip must be an object")
        if "status" in sip:
            _on_off(sip["status"], "sip.status")


class OutsideCallHours(Exception):
    """The user tried to call while `call_hours` says closed: WhatsApp offers a chat or a callback request
    instead and never rings the business (§5 simulator rule 3), so there is no connect webhook."""


def within_call_hours(calling: dict[str, Any], now: float) -> bool:
    """Whether stored `call_hours` let a call through at `now`; DISABLED (or none) means open 24/7 (§5).

    Holiday spans include their end minute (Meta writes a whole day as 0000-2359); weekly spans end at
    close_time.
    """
    hours = calling.get("call_hours")
    if not isinstance(hours, dict) or hours.get("status") != "ENABLED":
        return True
    local = dt.datetime.fromtimestamp(now, ZoneInfo(hours["timezone_id"]))
    minute = local.hour * 60 + local.minute
    for holiday in hours.get("holiday_schedule") or ():
        if holiday["date"] == local.date().isoformat():
            if _clock_minutes(holiday["start_time"], "") <= minute <= _clock_minutes(holiday["end_time"], ""):
                return False
    today = WEEKDAYS[local.weekday()]
    return any(
        span["day_of_week"] == today
        and _clock_minutes(span["open_time"], "") <= minute < _clock_minutes(span["close_time"], "")
        for span in hours["weekly_operating_hours"]
    )


class SettingsStore:
    """The `calling` settings Meta holds, per phone-number id (§5 simulator rule 1)."""

    def __init__(self) -> None:
        self._by_number: dict[str, dict[str, Any]] = {}

    def calling(self, phone_number_id: str) -> dict[str, Any]:
        """A copy of what is stored, as GET shows it (status fields are added by the simulator)."""
        return copy.deepcopy(self._by_number.get(phone_number_id, {}))

    def update(self, phone_number_id: str, calling: dict[str, Any], now: float) -> dict[str, Any]:
        """Validate, then merge with §5's replace semantics; returns the stored object."""
        check_update(calling, now)
        stored = self._by_number.setdefault(phone_number_id, {})
        for key, value in calling.items():
            stored[key] = copy.deepcopy(value)  # call_hours included: replaced whole, holidays and all
        return copy.deepcopy(stored)
