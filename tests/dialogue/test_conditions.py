"""The condition language of `branches`: parsing with offsets, and forgiving evaluation."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.dialogue.conditions import ConditionError, evaluate, names, parse_condition

TODAY = dt.date(2024, 12, 2)
SLOTS = {
    "party_size": 10,
    "confirmed": True,
    "changing": False,
    "status": "Delivered",
    "promise_date": dt.date(2024, 12, 20),
    "time": dt.time(8, 30),
    "note": "",
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("party_size > 8", True),
        ("party_size <= 8", False),
        ("confirmed", True),
        ("not confirmed", False),
        ("confirmed and not changing", True),
        ("changing or party_size == 10", True),
        ("(changing or confirmed) and party_size >= 10", True),
        ("status is 'delivered'", True),
        ("status is not 'delivered'", False),
        ('status == "shipped"', False),
        ("promise_date > today + 14 days", True),
        ("promise_date > today + 3 weeks", False),
        ("promise_date < today", False),
        ("time < '09:00'", True),
        ("confirmed == yes", True),
        ("note is empty", True),
        ("note is set", False),
        ("missing is set", False),
        ("missing", False),
        ("missing > 3", False),
        ("missing != 3", True),
        ("caller.name is set", True),
        ("caller.vip", False),
        ("caller.balance > 100", True),
        ("party_size > 'lots'", False),
    ],
)
def test_evaluate(condition: str, expected: bool) -> None:
    caller = {"name": "Maria", "balance": "120.50", "vip": "no"}
    assert evaluate(condition, SLOTS, caller, today=TODAY) is expected


@pytest.mark.parametrize(
    ("condition", "offset", "fragment"),
    [
        ("", 0, "empty"),
        ("n = 3", 2, "use `==`"),
        ("n >", 3, "ends too early"),
        ("n > 3 m", 6, "join conditions"),
        ("(n > 3", 6, "missing ')'"),
        ("n > 'three", 4, "closing quote"),
        ("n ! 3", 2, "unexpected '!'"),
        ("today + x", 8, "whole number of days"),
        ("slot.x > 1", 0, "unknown name 'slot.x'"),
        ("n > and", 4, "expected a slot name"),
    ],
)
def test_errors_carry_an_offset(condition: str, offset: int, fragment: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(condition)
    assert info.value.offset == offset
    assert fragment in info.value.message


def test_names_lists_slots_with_positions() -> None:
    found = names(parse_condition("party_size > 8 and not vip or caller.name is set"))
    assert [(n.scope, n.name, n.start) for n in found] == [
        ("slot", "party_size", 0),
        ("slot", "vip", 23),
        ("caller", "name", 30),
    ]
