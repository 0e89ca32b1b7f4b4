"""The business systems the shipped flows talk to, as simulated callers see them (bench and tests).

Each call gets its own `BusinessSystems`: it answers the flows' `http` steps (booking, order lookup,
callbacks, billing) with fixed, plausible data and keeps every request, so a caller script can say which
request completes its task ("a booking for tomorrow at 15:30 was sent"). It plugs into the runtime's own
`http` seam, the one that sends real requests in production, so the flow runs exactly as it would.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from agent.dialogue.effects import HttpRequest

BIRTH_YEAR = 1984  # payment_followup asks the caller for it before anything else
ACCOUNT_NAME = "John Smith"
AMOUNT_DUE = 120


def _answers(today: dt.date) -> list[tuple[str, str, Callable[[re.Match[str]], tuple[bool, Any]]]]:
    """(method, URL path pattern, answer) in the order they are tried."""
    in_days = lambda n: (today + dt.timedelta(days=n)).isoformat()  # noqa: E731
    return [
        ("GET", r"/api/appointments\b", lambda m: (True, {"id": 981, "date": in_days(3), "time": "10:00"})),
        ("POST", r"/api/appointments$", lambda m: (True, {"id": 981})),
        ("PUT", r"/api/appointments/\w+", lambda m: (True, {"id": 981})),
        ("GET", r"/api/orders/(\w+)", lambda m: (True, {"status": "shipped", "delivery_date": in_days(2)})),
        ("POST", r"/api/callbacks$", lambda m: (True, {"id": 77})),
        ("POST", r"/api/accounts/by-phone/\w+/promises$", lambda m: (True, {"id": 5})),
        (
            "GET",
            r"/api/accounts/by-phone/\w+$",
            lambda m: (
                True,
                {"name": ACCOUNT_NAME, "balance": AMOUNT_DUE, "due_date": in_days(-20), "birth_year": BIRTH_YEAR},
            ),
        ),
        ("POST", r"/api/payment-links$", lambda m: (True, {"url": "https://pay.example.com/x"})),
    ]


class BusinessSystems:
    """One call's view of the business's systems: canned answers, every request kept."""

    def __init__(self, today: dt.date | None = None) -> None:
        self.today = today or dt.date.today()
        self.requests: list[dict[str, Any]] = []
        self._answers = _answers(self.today)

    async def __call__(self, request: HttpRequest) -> tuple[bool, Any]:
        self.requests.append({"method": request.method.upper(), "url": request.url, "json": request.json_body})
        path = re.sub(r"^[a-z]+://[^/]+", "", request.url).split("?", 1)[0]
        for method, pattern, answer in self._answers:
            match = re.search(pattern, path)
            if match and method == request.method.upper():
                return answer(match)
        return False, None  # a system this bench does not know: the flow's error branch
