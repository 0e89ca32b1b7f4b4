"""The offline handover summary: what an agent reads in the second before they pick up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from agent.handover.summary import Summariser, build_summary


def test_reason_slots_and_last_caller_turns() -> None:
    summary = build_summary(
        "wants a refund",
        {"order_number": "A17", "email": None, "name": "", "delivered": False, "due": dt.date(2025, 3, 1)},
        [
            ("bot", "How can I help?"),
            ("caller", "Hi"),
            ("caller", "My parcel never came"),
            ("bot", "Sorry to hear that."),
            ("caller", "  I want my money back  "),
            ("caller", "It was order A17"),
        ],
    )
    assert summary == (
        "Wants a refund. Known: order number: A17; delivered: no; due: 2025-03-01. "
        "Caller said: “My parcel never came” / “I want my money back” / “It was order A17”"
    )


def test_max_turns_limits_the_quotes() -> None:
    summary = build_summary("", {}, [("caller", "one"), ("caller", "two"), ("caller", "three")], max_turns=1)
    assert summary == "Caller said: “three”"
    assert build_summary("billing question", {}, [("caller", "x")], max_turns=0) == "Billing question."


def test_reason_keeps_its_own_punctuation() -> None:
    assert build_summary("Is the shop open?", {}, []) == "Is the shop open?"


def test_long_turns_are_clipped_at_a_word() -> None:
    text = "word " * 100
    summary = build_summary("", {}, [("caller", text)])
    quoted = summary.removeprefix("Caller said: “").removesuffix("”")
    assert quoted.endswith("word…") and len(quoted) <= 161


def test_nothing_known_still_says_something() -> None:
    assert build_summary("", {"x": None}, [("bot", "Hello")]) == "No details collected before the handover."


async def test_an_llm_summariser_fits_the_protocol() -> None:
    class Fake:
        async def __call__(self, reason: str, slots: Mapping[str, Any], transcript: Sequence[tuple[str, str]]) -> str:
            return f"LLM: {reason}"

    summariser: Summariser = Fake()
    assert await summariser("refund", {}, []) == "LLM: refund"
