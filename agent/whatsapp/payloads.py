"""Call context: the opaque payload a call button (`cta_payload`) or a deep link (`deeplink_payload`) carries.

One module owns the rules so the webhook parser, the `wacall link` builder and the simulator agree on what a
usable payload is. Meta caps a call button's payload at 512 characters (spec §6.1) and documents no other
limit for `biz_payload` (§6.3), so the same cap applies to both. Control characters are refused because the
payload ends up in logs, the agent console and spoken lines, where a newline or an escape would mislead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BUTTON",
    "LINK",
    "MAX_PAYLOAD_CHARS",
    "CallContext",
    "PayloadSource",
    "payload_problem",
]

#: Meta's limit for a call button's `payload` (spec §6.1), applied to deep-link payloads too.
MAX_PAYLOAD_CHARS = 512

PayloadSource = Literal["button", "link"]
#: The call was started from a call button (`cta_payload`).
BUTTON: PayloadSource = "button"
#: The call was started from a `wa.me/call` deep link (`deeplink_payload`).
LINK: PayloadSource = "link"


def payload_problem(value: Any) -> str | None:
    """Why `value` cannot be a call payload, or None when it can."""
    if not isinstance(value, str):
        return "not a string"
    if not value.strip():
        return "empty"
    if len(value) > MAX_PAYLOAD_CHARS:
        return f"longer than {MAX_PAYLOAD_CHARS} characters ({len(value)})"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "contains control characters"
    return None


@dataclass(frozen=True)
class CallContext:
    """What started a user-initiated call, when the user came from a button or a link."""

    payload: str
    source: PayloadSource

    def as_template_data(self) -> dict[str, str]:
        """The `{{call.*}}` names a flow can use."""
        return {"payload": self.payload, "payload_source": self.source}
