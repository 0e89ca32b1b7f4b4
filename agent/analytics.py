"""Call-centre figures over a date range, from the call records: what `wacall report` and the console's
analytics page show.

Pure computation over `SqliteStore.call_facts` (one query, no transcripts), so the CLI can run it with the
server stopped and the server runs it in a worker thread (`asyncio.to_thread`): reading weeks of records must
never hold up a call's audio. Every figure has one definition, here, and the README repeats it:

* **Scope.** Calls *created* in ``[since, until)`` (UTC); a call belongs to the UTC day it started on.
  Calls placed by `wacall simulate` are left out unless asked for.
* **Answered.** The record has `answered_at` (we accepted an inbound call and media connected, or the user
  picked up an outbound one), or its outcome is "answered".
* **Pickup rate.** Inbound: answered / offered, where *offered* is every inbound call, including the ones
  refused after hours or over capacity (the caller rang and nobody took it). Outbound: picked up / placed,
  where *placed* is every outbound call Meta accepted (a record exists only once the user's phone rang).
* **Containment.** Answered calls the bot finished on its own / answered calls: never handed over (no
  handover queue) and ended by the flow itself, i.e. the flow reached an ``end: true`` node and the bot hung
  up after its last words (end reason "bot_ended"), without having given up on the way: a call the flow sent
  to its `no_match` node (out of retries; its `flow_result` event says `gave_up`) is not contained, whatever
  that node promised. A caller hanging up before the end is not contained either.
* **Handover rate.** Answered calls handed to the human queue / answered calls.
* **Queue abandon rate.** Handed-over calls whose caller hung up while still queued for a person (handover
  outcome "abandoned") / handed-over calls.
* **Average handle time.** Mean `duration_s` (pickup to hang-up: bot, queue and agent together) of answered
  calls; also the mean queue wait of handed-over calls.
* **Cost.** The stored list-rate cost, by the country of the user's number (its calling code in the rate
  card; "??" when unknown) and by day.
* **Voice-to-voice.** Each bot turn's server-side latency, from the end of the caller's speech to the first
  reply audio sent (`first_audio_sent_ms`; the network and the phone's jitter buffer are not in it). p50 and
  p95 are nearest-rank percentiles: the smallest value with at least that share of turns at or below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol

from agent.store.facts import CallFacts
from agent.whatsapp.pricing import RateCard, default_rate_card

__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "FactsSource",
    "Figures",
    "Period",
    "Report",
    "compute_report",
    "parse_period",
    "percentile",
    "report_period",
]

DEFAULT_DAYS = 7
#: The longest range one report covers: a year of days is still one small query and a readable chart.
MAX_DAYS = 366
UNKNOWN_COUNTRY = "??"
INBOUND = "USER_INITIATED"
OUTBOUND = "BUSINESS_INITIATED"
_ZERO = Decimal("0.0000")


class FactsSource(Protocol):
    def call_facts(self, since: datetime, until: datetime, *, simulated: bool = False) -> list[CallFacts]: ...


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `first` to `last` inclusive: what a person means by "from the 1st to the 7th"."""

    first: date
    last: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), tzinfo=UTC)

    @property
    def until(self) -> datetime:
        """Exclusive: midnight after `last`."""
        return datetime.combine(self.last + timedelta(days=1), time(), tzinfo=UTC)

    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def report_period(
    *, since: date | None = None, until: date | None = None, days: int | None = None, today: date
) -> Period:
    """The range from the options `wacall report` and the page take; ValueError says what is wrong.

    `until` defaults to today and `days` (counting back from `until`) to DEFAULT_DAYS; `since` with `days`
    counts forward. All three together is ambiguous and refused.
    """
    if since is not None and until is not None and days is not None:
        raise ValueError("give at most two of since, until and days")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be from 1 to {MAX_DAYS}")
    try:
        if since is not None and until is None and days is not None:
            until = since + timedelta(days=days - 1)
        last = until or today
        first = since or last - timedelta(days=(days or DEFAULT_DAYS) - 1)
        if last >= date.max:  # the period ends at the midnight after `last`, which must exist
            raise OverflowError
    except OverflowError:
        raise ValueError("the range goes past the dates a calendar can hold") from None
    if first > last:
        raise ValueError("since must not be after until")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValueError(f"a report covers at most {MAX_DAYS} days")
    return Period(first, last)


def parse_period(query: Mapping[str, str], *, today: date) -> Period:
    """`since` and `until` (YYYY-MM-DD) and `days` from a URL query, as the page and the API take them; an empty
    value counts as not given (the page's date form sends empty fields). ValueError names the bad one."""

    def day(name: str) -> date | None:
        text = (query.get(name) or "").strip()
        if not text:
            return None
        try:
            if len(text) != 10:
                raise ValueError
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} must be a date, YYYY-MM-DD") from None

    text = (query.get("days") or "").strip()
    if text and not (text.isascii() and text.isdigit() and len(text) <= 4):
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}")
    return report_period(since=day("since"), until=day("until"), days=int(text) if text else None, today=today)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty): no interpolation, so it is always a value
    that was measured, and a small sample's p95 is its slowest turn rather than a made-up number."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _mean(total: float, count: int) -> float | None:
    return None if count == 0 else total / count


@dataclass
class Figures:
    """Counts for one day or for the whole range; rates are derived, so days and totals can never disagree."""

    inbound: int = 0
    inbound_answered: int = 0
    outbound: int = 0
    outbound_answered: int = 0
    contained: int = 0
    handed_over: int = 0
    abandoned: int = 0
    handle_s: float = 0.0
    handle_calls: int = 0
    queue_wait_s: float = 0.0
    queue_wait_calls: int = 0
    cost: Decimal = _ZERO
    v2v_ms: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.inbound + self.outbound

    @property
    def answered(self) -> int:
        return self.inbound_answered + self.outbound_answered

    def add(self, call: CallFacts) -> None:
        answered = call.answered_at is not None or call.outcome == "answered"
        if call.direction == OUTBOUND:
            self.outbound += 1
            self.outbound_answered += answered
        else:
            self.inbound += 1
            self.inbound_answered += answered
        self.cost += call.cost or _ZERO
        self.v2v_ms.extend(call.v2v_ms)
        if not answered:
            return
        if call.duration_s is not None:
            self.handle_s += call.duration_s
            self.handle_calls += 1
        if call.handover_queue is not None:
            self.handed_over += 1
            self.abandoned += call.handover_outcome == "abandoned"
            if call.queue_wait_s is not None:
                self.queue_wait_s += call.queue_wait_s
                self.queue_wait_calls += 1
        elif call.end_reason == "bot_ended" and not call.gave_up:
            self.contained += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: rates as fractions (0.75, not 75), money as decimal text, None where nothing was measured."""
        return {
            "calls": self.calls,
            "inbound": self.inbound,
            "inbound_answered": self.inbound_answered,
            "outbound": self.outbound,
            "outbound_answered": self.outbound_answered,
            "answered": self.answered,
            "contained": self.contained,
            "handed_over": self.handed_over,
            "abandoned": self.abandoned,
            "pickup_rate_inbound": _rate(self.inbound_answered, self.inbound),
            "pickup_rate_outbound": _rate(self.outbound_answered, self.outbound),
            "containment_rate": _rate(self.contained, self.answered),
            "handover_rate": _rate(self.handed_over, self.answered),
            "queue_abandon_rate": _rate(self.abandoned, self.handed_over),
            "avg_handle_s": _mean(self.handle_s, self.handle_calls),
            "avg_queue_wait_s": _mean(self.queue_wait_s, self.queue_wait_calls),
            "cost": str(self.cost),
            "turns": len(self.v2v_ms),
            "v2v_p50_ms": percentile(self.v2v_ms, 50),
            "v2v_p95_ms": percentile(self.v2v_ms, 95),
        }


@dataclass
class Report:
    period: Period
    total: Figures
    by_day: dict[date, Figures]  # every day of the period, in order, days without calls included
    cost_by_country: dict[str, Decimal]  # most expensive first
    cost_by_country_day: dict[tuple[str, date], Decimal]
    currency: str = "USD"
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.period.first.isoformat(),
            "until": self.period.last.isoformat(),
            "currency": self.currency,
            "simulated_included": self.simulated,
            "total": self.total.as_dict(),
            "days": [{"day": day.isoformat(), **figures.as_dict()} for day, figures in self.by_day.items()],
            "cost_by_country": [{"country": c, "cost": str(v)} for c, v in self.cost_by_country.items()],
            "cost_by_country_day": [
                {"country": c, "day": d.isoformat(), "cost": str(v)}
                for (c, d), v in sorted(self.cost_by_country_day.items(), key=lambda item: (item[0][1], item[0][0]))
            ],
        }


def summarise(
    calls: Iterable[CallFacts],
    period: Period,
    *,
    country_of: Callable[[str], str | None] | None = None,
    simulated: bool = False,
) -> Report:
    """The report from already-read facts; `country_of` maps a number to its country (the rate card's)."""
    lookup = country_of or default_rate_card().country_for_number
    total = Figures()
    by_day = {day: Figures() for day in period.days()}
    by_country: dict[str, Decimal] = {}
    by_country_day: dict[tuple[str, date], Decimal] = {}
    currencies: set[str] = set()
    for call in calls:
        day = call.created_at.astimezone(UTC).date()
        if day not in by_day:  # the query's range is the period's; a stray row is not counted twice
            continue
        total.add(call)
        by_day[day].add(call)
        currencies.add(call.currency)
        country = (lookup(call.user_number) if call.user_number else None) or UNKNOWN_COUNTRY
        cost = call.cost or _ZERO
        by_country[country] = by_country.get(country, _ZERO) + cost
        by_country_day[(country, day)] = by_country_day.get((country, day), _ZERO) + cost
    ranked = dict(sorted(by_country.items(), key=lambda item: (-item[1], item[0])))
    currency = currencies.pop() if len(currencies) == 1 else ("USD" if not currencies else "mixed")
    return Report(period, total, by_day, ranked, by_country_day, currency=currency, simulated=simulated)


def compute_report(
    store: FactsSource, period: Period, *, card: RateCard | None = None, simulated: bool = False
) -> Report:
    """Blocking (one database read): from the event loop, run it with `asyncio.to_thread`."""
    facts = store.call_facts(period.since, period.until, simulated=simulated)
    lookup = (card or default_rate_card()).country_for_number
    return summarise(facts, period, country_of=lookup, simulated=simulated)
