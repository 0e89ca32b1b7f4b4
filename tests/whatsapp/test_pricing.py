"""Call pricing (§8.2): 6-second pulses rounded up, the callee country's per-minute rate, UIC free."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agent.whatsapp.pricing import (
    BUSINESS_INITIATED,
    USER_INITIATED,
    PricingError,
    RateCard,
    billed_seconds,
    country_for_number,
    default_rate_card,
    price_call,
    pulses,
)

CARD = RateCard.from_csv(
    """# test card
country,calling_code,usd_per_minute
US,1,0.0100
JM,1876,0.0600
RU,7,0.0300
KZ,77,0.0250
IN,91,0.0050
ES,34,0.0333
"""
)


@pytest.mark.parametrize(
    ("seconds", "billed"),
    [(0, 0), (1, 6), (5.9, 6), (6, 6), (7, 12), (12, 12), (56, 60), (60, 60), (61, 66), (3600, 3600)],
)
def test_six_second_pulses_round_up(seconds: float, billed: int) -> None:
    assert billed_seconds(seconds) == billed
    assert pulses(seconds) == billed // 6


@pytest.mark.parametrize(
    ("seconds", "cost"),
    [(1, "0.0010"), (6, "0.0010"), (7, "0.0020"), (56, "0.0100"), (61, "0.0110")],
)
def test_business_call_price_in_pulses(seconds: int, cost: str) -> None:
    # US at $0.0100/min, so one 6 s pulse is $0.0010: 1 s bills 6 s, 7 s bills 12 s, 61 s bills 66 s.
    assert price_call(BUSINESS_INITIATED, "15550002222", seconds, CARD) == Decimal(cost)


def test_spec_example_56_seconds_is_10_pulses() -> None:
    assert pulses(56) == 10
    assert price_call(BUSINESS_INITIATED, "919800000000", 56, CARD) == Decimal("0.0050")


def test_rounding_to_four_decimals_half_up() -> None:
    # ES $0.0333/min, 1 pulse = 0.00333 -> 0.0033; 15 pulses = 0.04995 -> 0.0500 (half up).
    assert price_call(BUSINESS_INITIATED, "34600000001", 6, CARD) == Decimal("0.0033")
    assert price_call(BUSINESS_INITIATED, "34600000001", 90, CARD) == Decimal("0.0500")
    assert price_call(BUSINESS_INITIATED, "34600000001", 90, CARD).as_tuple().exponent == -4


def test_user_initiated_and_zero_duration_are_free() -> None:
    assert price_call(USER_INITIATED, "15550002222", 600, CARD) == Decimal("0")
    assert price_call("user_initiated", "0000", 600, CARD) == Decimal("0")  # country irrelevant when free
    assert price_call(BUSINESS_INITIATED, "15550002222", 0, CARD) == Decimal("0")


def test_longest_prefix_country_lookup() -> None:
    assert CARD.country_for_number("15550002222") == "US"
    assert CARD.country_for_number("+1 876 555 0000") == "JM"
    assert CARD.country_for_number("79161234567") == "RU"
    assert CARD.country_for_number("77011234567") == "KZ"
    assert CARD.country_for_number("4420000000") is None
    assert CARD.country_for_number("") is None
    assert price_call(BUSINESS_INITIATED, "18765550000", 60, CARD) == Decimal("0.0600")


def test_shipped_card_covers_common_countries() -> None:
    card = default_rate_card()
    assert len(card) > 50
    expected = {
        "15550002222": "US",
        "14165550000": "US",  # Canada shares +1 and the North America rate; see the CSV header
        "18095550000": "DO",
        "34600000001": "ES",
        "447700900000": "GB",
        "5511999990000": "BR",
        "919800000000": "IN",
        "77011234567": "KZ",
        "2348000000000": "NG",
    }
    for number, country in expected.items():
        assert country_for_number(number) == country, number
    assert price_call(BUSINESS_INITIATED, "34600000001", 61, card) > 0


def test_unknown_country_raises_for_business_calls() -> None:
    with pytest.raises(PricingError, match=r"no rate for callee \+4420000000"):
        price_call(BUSINESS_INITIATED, "4420000000", 10, CARD)


@pytest.mark.parametrize(
    ("direction", "seconds", "message"),
    [
        ("SIDEWAYS", 10, "direction must be"),
        (BUSINESS_INITIATED, -1, "zero or more"),
        (BUSINESS_INITIATED, float("nan"), "zero or more"),
    ],
)
def test_bad_inputs(direction: str, seconds: float, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        price_call(direction, "15550002222", seconds, CARD)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("country,code,rate\nUS,1,0.01\n", "header must start with"),
        ("country,calling_code,usd_per_minute\nUSA,1,0.01\n", "ISO 3166"),
        ("country,calling_code,usd_per_minute\nUS,+1a,0.01\n", "must be digits"),
        ("country,calling_code,usd_per_minute\nUS,1,cheap\n", "not a number"),
        ("country,calling_code,usd_per_minute\nUS,1,-0.01\n", "zero or more"),
        ("country,calling_code,usd_per_minute\nUS,1,0.01\nCA,1,0.01\n", "listed twice"),
        ("country,calling_code,usd_per_minute\n", "no rates"),
    ],
)
def test_bad_rate_cards(text: str, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        RateCard.from_csv(text)


def test_card_loads_from_an_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "card.csv"
    path.write_text("# mine\ncountry,calling_code,usd_per_minute\nCA,1416,0.0200\nUS,1,0.0100\n", encoding="utf-8")
    card = RateCard.load(path)
    assert card.country_for_number("14165550000") == "CA"
    assert price_call(BUSINESS_INITIATED, "14165550000", 60, card) == Decimal("0.0200")
    with pytest.raises(PricingError, match="cannot read rate card"):
        RateCard.load(tmp_path / "missing.csv")
