"""Keypad presses from the caller's dialpad (RFC 4733 telephone events), as the call hands them on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyPress:
    digit: str  # "0123456789*#ABCD"
    duration_ms: int
    at: float  # monotonic time the key went down
