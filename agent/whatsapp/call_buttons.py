"""Call buttons (spec §6.1, §6.2): which message may carry one to this user now, and sending it.

A free-form `voice_call` interactive only reaches a user inside the 24 h customer-service window (§8.1);
outside it Meta accepts the request and then fails the message (131047), which nobody sees until a status
webhook arrives. So the window is checked here first: inside it the interactive is sent, outside it the
configured voice-call template, and with no template the send is refused with the rule named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from agent.calling_config import CallButtonSettings
from agent.whatsapp.graph import GraphClient
from agent.whatsapp.rules import (
    DEFAULT_LIMITS,
    CallingLimits,
    Refusal,
    Refused,
    UserCallingState,
    button_window_refusal,
)

__all__ = ["ButtonKind", "choose_button_message", "send_call_button"]

ButtonKind = Literal["interactive", "template"]


def choose_button_message(
    state: UserCallingState,
    now: datetime,
    *,
    template: str | None,
    limits: CallingLimits = DEFAULT_LIMITS,
) -> ButtonKind | Refusal:
    """The interactive inside the window (free for the user to act on, no template approval needed), the
    template outside it, or a refusal when the window is closed and no template is configured."""
    if state.window(limits).is_open(now):
        return "interactive"
    if template:
        return "template"
    return button_window_refusal(state, limits)


async def send_call_button(
    graph: GraphClient,
    config: CallButtonSettings,
    state: UserCallingState,
    now: datetime,
    *,
    payload: str | None = None,
    text: str | None = None,
    limits: CallingLimits = DEFAULT_LIMITS,
) -> tuple[str, ButtonKind]:
    """Send the button to `state.user`; returns (message id, which message was used). Raises `Refused`
    before Meta is asked, or the Graph client's errors when Meta refuses."""
    kind = choose_button_message(state, now, template=config.template, limits=limits)
    if isinstance(kind, Refusal):
        raise Refused(kind)
    if kind == "interactive":
        message_id = await graph.send_call_button(
            state.user,
            body_text=text or config.body,
            payload=payload,
            display_text=config.display_text,
            ttl_minutes=config.ttl_minutes,
        )
    else:
        assert config.template is not None
        message_id = await graph.send_call_button_template(
            state.user,
            name=config.template,
            language=config.template_language,
            payload=payload,
            ttl_minutes=config.ttl_minutes,
        )
    return message_id, kind
