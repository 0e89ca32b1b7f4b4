"""Call deep links: `https://wa.me/call/<number>?biz_payload=<payload>` (spec §6.3).

Opening one on a phone starts a WhatsApp call to the business; the payload comes back on the call's connect and
terminate webhooks as `deeplink_payload` (§6.4), which is how a web page or a poster tells wacall which campaign
the caller came from. Desktop clients do not support these links.
"""

from __future__ import annotations

from urllib.parse import quote

from agent.whatsapp.payloads import payload_problem

__all__ = ["CALL_LINK_BASE", "LinkError", "call_link", "link_number"]

CALL_LINK_BASE = "https://wa.me/call/"


class LinkError(ValueError):
    """The number or payload cannot make a working link; the message says which and why."""


def link_number(number: str) -> str:
    """The business number as the link wants it: international digits, no `+`, spaces or dashes."""
    digits = number.strip().removeprefix("+").replace(" ", "").replace("-", "")
    if not (digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 15):
        raise LinkError(f"the business number must be 6 to 15 digits in international format, not {number!r}")
    return digits


def call_link(number: str, payload: str | None = None) -> str:
    """The deep link calling `number`, carrying `payload` (percent-encoded, so any text survives the trip)."""
    url = CALL_LINK_BASE + link_number(number)
    if payload is None:
        return url
    problem = payload_problem(payload)
    if problem is not None:
        raise LinkError(f"the payload cannot be used: {problem}")
    return f"{url}?biz_payload={quote(payload, safe='')}"
