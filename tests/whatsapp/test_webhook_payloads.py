"""`cta_payload` / `deeplink_payload` on connect and terminate webhooks (spec §2.2, §6.4): read into a call
context, and bad values dropped with a warning rather than refusing the delivery."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from agent.whatsapp.payloads import MAX_PAYLOAD_CHARS, CallContext, payload_problem
from agent.whatsapp.webhooks import call_events, parse_webhook


def webhook(event: str, **fields: Any) -> bytes:
    call: dict[str, Any] = {
        "id": "wacid.CTX1",
        "from": "15550002222",
        "to": "15550001111",
        "event": event,
        "timestamp": "1760681506",
        "direction": "USER_INITIATED",
        **fields,
    }
    if event == "connect":
        call["session"] = {"sdp_type": "offer", "sdp": "v=0\r\n"}
    else:
        call["status"] = "COMPLETED"
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540000000002"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "15550002222"}],
        "calls": [call],
    }
    change = {"field": "calls", "value": value}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    return json.dumps(body).encode()


@pytest.mark.parametrize("event", ["connect", "terminate"])
@pytest.mark.parametrize(
    ("fields", "context"),
    [
        ({"cta_payload": "cart-abandon-8812"}, CallContext("cart-abandon-8812", "button")),
        ({"deeplink_payload": "summer sale/2026?x=1"}, CallContext("summer sale/2026?x=1", "link")),
        ({}, None),
    ],
)
def test_context_read_from_connect_and_terminate(
    event: str, fields: dict[str, Any], context: CallContext | None
) -> None:
    (parsed,) = call_events(parse_webhook(webhook(event, **fields)))
    assert parsed.call.context == context


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (42, "not a string"),
        ("   ", "empty"),
        ("x" * (MAX_PAYLOAD_CHARS + 1), "longer than 512 characters (513)"),
        ("line\nbreak", "contains control characters"),
    ],
)
def test_bad_payload_is_dropped_with_a_warning(value: Any, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.whatsapp.webhooks")
    (parsed,) = call_events(parse_webhook(webhook("connect", deeplink_payload=value)))
    assert parsed.call.deeplink_payload is None and parsed.call.context is None
    assert parsed.call.session is not None  # the call itself is still answerable
    assert f"ignoring deeplink_payload: {problem}" in caplog.text


def test_payload_limits() -> None:
    assert payload_problem("x" * MAX_PAYLOAD_CHARS) is None
    assert payload_problem("ünïcode ✓") is None


def test_button_wins_when_both_are_present() -> None:
    (parsed,) = call_events(parse_webhook(webhook("connect", cta_payload="b", deeplink_payload="l")))
    assert parsed.call.context == CallContext("b", "button")
    assert parsed.call.context.as_template_data() == {"payload": "b", "payload_source": "button"}
