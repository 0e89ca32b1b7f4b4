"""The caller's country comes from phonenumbers' metadata; these pin the answers the rules depend on."""

from __future__ import annotations

import pytest

from agent.whatsapp import rules
from agent.whatsapp.business_hours import BusinessHours
from agent.whatsapp.countries import NANP_NON_US_CA, US_OR_CANADA, calling_code, country_of_number


@pytest.mark.parametrize(
    ("number", "country"),
    [
        ("+90 212 000 0000", "TR"),
        ("+44 7700 900000", "GB"),
        ("+7 727 000 0000", "KZ"),  # +7 is shared; Almaty's area code is Kazakhstan's
        ("+7 495 000 0000", "RU"),
        ("+1 876 555 0000", "JM"),
        ("+1 787 555 0000", "PR"),
        ("+1 416 555 0000", US_OR_CANADA),
        ("+1 800 100 0000", US_OR_CANADA),  # toll-free, though the DR's metadata names "8001" numbers
        ("", None),
        ("+999 1234", None),
    ],
)
def test_country_of_number(number: str, country: str | None) -> None:
    assert country_of_number(number) == country


def test_the_area_code_table_is_the_one_the_rules_carried_by_hand() -> None:
    by_hand = {
        "242": "BS", "246": "BB", "264": "AI", "268": "AG", "284": "VG", "340": "VI", "345": "KY",
        "441": "BM", "473": "GD", "649": "TC", "658": "JM", "664": "MS", "670": "MP", "671": "GU",
        "684": "AS", "721": "SX", "758": "LC", "767": "DM", "784": "VC", "787": "PR", "809": "DO",
        "829": "DO", "849": "DO", "868": "TT", "869": "KN", "876": "JM", "939": "PR",
    }  # fmt: skip
    assert dict(NANP_NON_US_CA) == by_hand


def test_calling_codes() -> None:
    assert calling_code("tr") == "90"
    assert calling_code("XX") == ""


def test_any_country_with_a_calling_code_can_be_blocked() -> None:
    limits = rules.CallingLimits(bic_blocked_countries=frozenset({"GB"}))
    assert rules.bic_blocked_country("447700900000", limits) == "GB"


def test_business_hours_still_importable_from_rules() -> None:
    assert rules.BusinessHours is BusinessHours
