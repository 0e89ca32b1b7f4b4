"""Which country a phone number belongs to, from phonenumbers' metadata instead of a table kept by hand.

Calling codes and NANP area codes change (new overlays, new members); phonenumbers tracks them with every
release, so the rules follow a package upgrade instead of someone remembering to edit a dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = ["NANP_NON_US_CA", "US_OR_CANADA", "calling_code", "country_of_number"]

#: What `country_of_number` says for a +1 number outside every other NANP member's area codes. The US and
#: Canada share the plan without a split by area code that matters to Meta's rules, so they are one answer.
US_OR_CANADA = "US/CA"


def calling_code(country: str) -> str:
    """The calling code of an ISO 3166 country ("TR" → "90"), or "" when phonenumbers knows none."""
    code = phonenumbers.country_code_for_region(country.upper())
    return str(code) if code else ""


@cache
def _nanp_area_codes() -> dict[str, str]:
    """Area code → ISO country for NANP members other than the US and Canada (US territories included:
    PR, GU, VI, AS and MP have their own ISO codes, so they are *not* reported as the US)."""
    table: dict[str, str] = {}
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        metadata = PhoneMetadata.metadata_for_region(region)
        pattern = metadata.leading_digits if metadata is not None else None
        if region in ("US", "CA") or not pattern:
            continue
        for area in range(200, 1000):
            # Whole 3-digit matches only: Dominican Republic's "8001" names a few 800 numbers, and a
            # number is classified by its area code as Meta does.
            if re.fullmatch(pattern, str(area)):
                table[str(area)] = region
    return table


NANP_NON_US_CA: Mapping[str, str] = _nanp_area_codes()


def country_of_number(number: str) -> str | None:
    """The ISO country of an international number in any format ("+90 212…", "90212…"), `US_OR_CANADA`
    for the rest of +1, or None when no calling code matches.

    Only the calling code (and, for +1, the area code) is looked at: business numbers in tests and sandboxes
    are often not valid numbers, and their country is still that of their code.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if not digits:
        return None
    if digits.startswith("1"):
        return NANP_NON_US_CA.get(digits[1:4], US_OR_CANADA)
    # Calling codes are prefix-free, so the first length that names a code is the code.
    for length in (1, 2, 3):
        regions = phonenumbers.region_codes_for_country_code(int(digits[:length]))
        if regions:
            return _region_within_code(digits, length, regions)
    return None


def _region_within_code(digits: str, length: int, regions: tuple[str, ...]) -> str:
    """For a code several countries share (+7: RU and KZ; +44: GB, JE, GG, IM), the one the number belongs to
    when phonenumbers can tell, else the code's main country."""
    if len(regions) > 1:
        try:
            parsed = phonenumbers.parse("+" + digits)
        except phonenumbers.NumberParseException:
            return regions[0]
        return phonenumbers.region_code_for_number(parsed) or regions[0]
    return regions[0]
