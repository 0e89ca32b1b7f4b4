"""Meta's checks on call-button messages (spec §6.1, §6.2), rebuilt from the spec for the simulator.

Shape only: whether a free-form button may be sent at all (the customer-service window, §8.1) is
`MetaSimulator`'s business, as it owns the window. Nothing here is shared with the server's Graph client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.simulator.graph_api import invalid_parameter, rule_error

DISPLAY_TEXT_MAX = 20  # §6.1
TTL_MIN, TTL_MAX = 1, 43200  # §6.1 (minutes)
DEFAULT_TTL = 10080  # §6.1: 7 days
PAYLOAD_MAX = 512  # §6.1
BODY_TEXT_MAX = 1024  # the Cloud API's interactive body limit


@dataclass
class CallButtonMessage:
    """One call-button message as Meta recorded it; `payload` comes back as `cta_payload` on a tap (§6.4)."""

    id: str
    wa_id: str
    kind: str  # "interactive" or "template"
    sent_at: int
    ttl_minutes: int
    status: str = "sent"  # or "failed" (131047: free-form outside the window)
    payload: str | None = None
    body_text: str | None = None
    display_text: str | None = None
    template_name: str | None = None

    def expired(self, now: int) -> bool:
        return now >= self.sent_at + self.ttl_minutes * 60


@dataclass(frozen=True)
class ButtonFields:
    """What a valid call-button request asked for."""

    ttl_minutes: int = DEFAULT_TTL
    payload: str | None = None
    body_text: str | None = None
    display_text: str | None = None
    template_name: str | None = None


def _ttl(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not TTL_MIN <= value <= TTL_MAX:
        raise invalid_parameter(f"{where} must be a whole number of minutes from {TTL_MIN} to {TTL_MAX}")
    return value


def _payload(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > PAYLOAD_MAX:
        raise invalid_parameter(f"{where} must be a string of at most {PAYLOAD_MAX} characters")
    return value


def is_voice_call_interactive(body: dict[str, Any]) -> bool:
    interactive = body.get("interactive")
    return (
        body.get("type") == "interactive" and isinstance(interactive, dict) and interactive.get("type") == "voice_call"
    )


def check_voice_call_interactive(interactive: dict[str, Any]) -> ButtonFields:
    """§6.1: body text, `action.name` voice_call, optional display_text (≤20), ttl_minutes, payload (≤512)."""
    body = interactive.get("body")
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text or len(text) > BODY_TEXT_MAX:
        raise invalid_parameter(f"interactive.body.text is required: a string of 1 to {BODY_TEXT_MAX} characters")
    action = interactive.get("action")
    if not isinstance(action, dict) or action.get("name") != "voice_call":
        raise invalid_parameter("interactive.action.name must be 'voice_call'")
    params = action.get("parameters", {})
    if not isinstance(params, dict):
        raise invalid_parameter("interactive.action.parameters must be an object")
    unknown = sorted(set(params) - {"display_text", "ttl_minutes", "payload"})
    if unknown:
        raise invalid_parameter(f"Unknown voice_call parameter(s) {unknown}")
    display = params.get("display_text")
    if display is not None and (not isinstance(display, str) or not 1 <= len(display) <= DISPLAY_TEXT_MAX):
        raise invalid_parameter(f"display_text must be 1 to {DISPLAY_TEXT_MAX} characters")
    ttl = DEFAULT_TTL if "ttl_minutes" not in params else _ttl(params["ttl_minutes"], "ttl_minutes")
    payload = None if "payload" not in params else _payload(params["payload"], "payload")
    return ButtonFields(ttl_minutes=ttl, payload=payload, body_text=text, display_text=display)


def check_voice_call_template(template: Any, registered: dict[str, tuple[str, int]]) -> ButtonFields:
    """§6.2: a registered template with a voice-call button; the send may override the TTL and add a payload.

    `registered` maps a template name to (language, ttl_minutes it was created with).
    """
    if not isinstance(template, dict):
        raise invalid_parameter("The parameter template is required")
    name = template.get("name")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name or not isinstance(code, str) or not code:
        raise invalid_parameter("template.name and template.language.code are required")
    known = registered.get(name)
    if known is None or known[0] != code:
        raise rule_error(132001, f"Template {name!r} does not exist in {code!r}")
    ttl, payload = known[1], None
    components = template.get("components", [])
    if not isinstance(components, list):
        raise invalid_parameter("template.components must be a list")
    for component in components:
        ctype = component.get("type") if isinstance(component, dict) else None
        if isinstance(ctype, str) and ctype.lower() == "body":
            continue
        if ctype != "button" or component.get("sub_type") != "voice_call":
            raise invalid_parameter(
                f"Invalid template component {ctype!r}: this template takes body parameters and its voice_call button"
            )
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            raise invalid_parameter("voice_call button parameters must be a list")
        for param in parameters:
            ptype = param.get("type") if isinstance(param, dict) else None
            if ptype == "ttl_minutes":
                ttl = _ttl(param.get("ttl_minutes"), "ttl_minutes")
            elif ptype == "payload":
                payload = _payload(param.get("payload"), "payload")
            else:
                raise invalid_parameter(f"Unknown voice_call button parameter type {ptype!r}")
    return ButtonFields(ttl_minutes=ttl, payload=payload, template_name=name)
