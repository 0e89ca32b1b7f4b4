"""What a call costs: Meta's per-minute list rate for the callee's country, billed in 6-second pulses.

Spec §8.2: user-initiated calls are free; business-initiated calls are billed per 6-second pulse, partial
pulses rounded up (56 s = 9.33 -> 10 pulses), at the rate for the *called* number's country code, so
cost = pulses x rate_per_minute / 10. Monthly volume tiers (a discount Meta applies on the invoice) are not
modelled: we store the list-rate cost, which is an upper bound on what Meta bills.

The rate card is a CSV shipped in `agent/data/rate_card.csv` and can be replaced by a file of your own
(`RateCard.load(path)`), because Meta publishes the numbers as downloadable cards that change (cards
effective Apr 1 2026 and Jul 1 2026 at the time of writing) and the spec did not retrieve them.

Money is `Decimal` throughout and rounded once, at the end, to 4 decimals (half-up): floats would make the
per-call costs in the store disagree with their sum.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = [
    "BUSINESS_INITIATED",
    "PULSE_SECONDS",
    "USER_INITIATED",
    "PricingError",
    "Rate",
    "RateCard",
    "billed_seconds",
    "country_for_number",
    "default_rate_card",
    "price_call",
    "pulses",
]

USER_INITIATED = "USER_INITIATED"
BUSINESS_INITIATED = "BUSINESS_INITIATED"
#: §8.2: Meta bills business-initiated calls in 6-second pulses.
PULSE_SECONDS = 6
_PULSES_PER_MINUTE = Decimal(60 // PULSE_SECONDS)
_FOUR_PLACES = Decimal("0.0001")
_COLUMNS = ("country", "calling_code", "usd_per_minute")


class PricingError(ValueError):
    """A rate card is malformed, or a call cannot be priced (unknown country, negative duration)."""


@dataclass(frozen=True)
class Rate:
    country: str
    calling_code: str
    usd_per_minute: Decimal


def _digits(number: str) -> str:
    return "".join(ch for ch in str(number) if ch.isdigit())


class RateCard:
    """Calling-code prefix -> country and per-minute rate, looked up by longest matching prefix.

    Longest prefix is what makes shared codes work: "1" is the US, "1876" Jamaica, "7" Russia and "77"
    Kazakhstan. +1 NANP: a number that matches no 4-digit NANP row resolves to "US"; Canada shares +1 and, on
    Meta's cards, the same North America rate, so the card has no "1,CA" row (it would be ambiguous). To price
    Canada separately, add rows for its area codes, e.g. ``CA,1416,<rate>``; the longer prefix wins.
    """

    def __init__(self, rates: Iterable[Rate], *, source: str = "<memory>") -> None:
        self.source = source
        self._by_code: dict[str, Rate] = {}
        self._by_country: dict[str, Rate] = {}
        for rate in rates:
            other = self._by_code.get(rate.calling_code)
            if other is not None:
                raise PricingError(
                    f"{source}: calling code {rate.calling_code} is listed twice ({other.country} and "
                    f"{rate.country}); a prefix must name one country"
                )
            self._by_code[rate.calling_code] = rate
            self._by_country.setdefault(rate.country, rate)
        if not self._by_code:
            raise PricingError(f"{source}: the rate card has no rates")
        self._longest = max(len(code) for code in self._by_code)

    @classmethod
    def load(cls, path: str | Path | None = None) -> RateCard:
        """Read a card from `path`, or the one shipped with wacall when `path` is None."""
        if path is None:
            text = resources.files("agent").joinpath("data/rate_card.csv").read_text(encoding="utf-8")
            return cls.from_csv(text, source="agent/data/rate_card.csv")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PricingError(f"cannot read rate card {path}: {exc}") from exc
        return cls.from_csv(text, source=str(path))

    @classmethod
    def from_csv(cls, text: str, *, source: str = "<memory>") -> RateCard:
        """Parse `country,calling_code,usd_per_minute`; `#` lines and blank lines are comments."""
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        reader = csv.DictReader(io.StringIO("\n".join(lines)))
        header = tuple(name.strip() for name in reader.fieldnames or ())
        if header[: len(_COLUMNS)] != _COLUMNS:
            raise PricingError(f"{source}: header must start with {','.join(_COLUMNS)}, got {','.join(header)}")
        rates = []
        for number, row in enumerate(reader, start=2):
            country = (row.get("country") or "").strip().upper()
            code = (row.get("calling_code") or "").strip().lstrip("+")
            raw_rate = (row.get("usd_per_minute") or "").strip()
            if len(country) != 2 or not country.isalpha():
                raise PricingError(f"{source} row {number}: country must be an ISO 3166 alpha-2 code, got {country!r}")
            if not code.isdigit():
                raise PricingError(f"{source} row {number}: calling_code must be digits, got {code!r}")
            try:
                rate = Decimal(raw_rate)
            except InvalidOperation as exc:
                raise PricingError(f"{source} row {number}: usd_per_minute is not a number: {raw_rate!r}") from exc
            if not rate.is_finite() or rate < 0:
                raise PricingError(f"{source} row {number}: usd_per_minute must be zero or more, got {raw_rate}")
            rates.append(Rate(country, code, rate))
        return cls(rates, source=source)

    def rate_for_number(self, number: str) -> Rate | None:
        digits = _digits(number)
        for length in range(min(self._longest, len(digits)), 0, -1):
            rate = self._by_code.get(digits[:length])
            if rate is not None:
                return rate
        return None

    def country_for_number(self, number: str) -> str | None:
        rate = self.rate_for_number(number)
        return None if rate is None else rate.country

    def rate_for_country(self, country: str) -> Rate | None:
        return self._by_country.get(country.strip().upper())

    def __len__(self) -> int:
        return len(self._by_code)


@lru_cache(maxsize=1)
def default_rate_card() -> RateCard:
    """The shipped card, parsed once per process."""
    return RateCard.load()


def country_for_number(digits: str, card: RateCard | None = None) -> str | None:
    """ISO country of a phone number (digits, `+` and spaces allowed) by its calling code."""
    return (card or default_rate_card()).country_for_number(digits)


def _seconds(duration_s: float | int | Decimal) -> Decimal:
    value = duration_s if isinstance(duration_s, Decimal) else Decimal(str(duration_s))
    if not value.is_finite() or value < 0:
        raise PricingError(f"call duration must be zero or more seconds, got {duration_s}")
    return value


def pulses(duration_s: float | int | Decimal) -> int:
    """Billed 6-second pulses: a partial pulse counts as a whole one (§8.2)."""
    return int((_seconds(duration_s) / PULSE_SECONDS).to_integral_value(rounding=ROUND_CEILING))


def billed_seconds(duration_s: float | int | Decimal) -> int:
    return pulses(duration_s) * PULSE_SECONDS


def price_call(
    direction: str,
    callee_number: str,
    duration_s: float | int | Decimal,
    card: RateCard | None = None,
) -> Decimal:
    """List-rate cost of one call in USD, 4 decimals. User-initiated and zero-length calls cost 0.

    An unpriceable business-initiated call (callee country missing from the card) raises instead of
    recording a cost of 0, which would look like a free call in every report.
    """
    kind = direction.strip().upper()
    if kind not in (USER_INITIATED, BUSINESS_INITIATED):
        raise PricingError(f"direction must be {USER_INITIATED} or {BUSINESS_INITIATED}, got {direction!r}")
    count = pulses(duration_s)
    if kind == USER_INITIATED or count == 0:
        return Decimal("0.0000")
    card = card or default_rate_card()
    rate = card.rate_for_number(callee_number)
    if rate is None:
        raise PricingError(
            f"no rate for callee +{_digits(callee_number)} in {card.source}; add a row for its calling code"
        )
    return (count * rate.usd_per_minute / _PULSES_PER_MINUTE).quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP)
