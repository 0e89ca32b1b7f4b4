"""Why wacall will not do something: stable rule ids and the refusal an operator reads.

A module of its own because both the calling rules and business hours refuse things, and business hours
must not import the whole rule book (nor the rule book import it back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
