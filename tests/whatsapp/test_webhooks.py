"""Webhook signature, handshake and `calls` payload parsing, against the shapes in the spec (§1, §2)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest

from agent.whatsapp.webhooks import (
    CallsValue,
    PayloadError,
    SignatureError,
    call_events,
    call_statuses,
    parse_webhook,
    verify_signature,
    verify_subscription,
)

APP_SECRET = "test-app-secret"
WABA_ID = "102290000000001"
PHONE_NUMBER_ID = "106540000000002"
BUSINESS = "15550001111"
USER = "15550002222"
CALL_ID = "wacid.EXAMPLE1"
OFFER_SDP = "v=0\r\no=- 1760681506762 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n"


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: Any) -> bytes:
    """Serialise the way Meta (and our simulator) does: escaped unicode, compact separators."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def envelope(value: dict[str, Any], field: str = "calls") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": field, "value": value}]}],
    }


def calls_value(**extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS, "phone_number_id": PHONE_NUMBER_ID},
        **extra,
    }


CONTACTS = [{"profile": {"name": "Ana Example"}, "wa_id": USER}]


def uic_connect() -> dict[str, Any]:
    return envelope(
        calls_value(
            contacts=copy.deepcopy(CONTACTS),
            calls=[
                {
                    "id": CALL_ID,
                    "from": USER,
                    "to": BUSINESS,
                    "event": "connect",
                    "timestamp": "1760681506",
                    "direction": "USER_INITIATED",
                    "cta_payload": "campaign-42",
                    "session": {"sdp_type": "offer", "sdp": OFFER_SDP},
                }
            ],
        )
    )


def terminate_completed(status: str = "COMPLETED") -> dict[str, Any]:
    return envelope(
        calls_value(
            contacts=copy.deepcopy(CONTACTS),
            calls=[
                {
                    "id": CALL_ID,
                    "from": USER,
                    "to": BUSINESS,
                    "event": "terminate",
                    "direction": "USER_INITIATED",
                    "timestamp": "1760681633",
                    "status": status,
                    "start_time": "1760681513",
                    "end_time": "1760681633",
                    "duration": 120,
                    "biz_opaque_callback_data": "session-7f3a",
                    "cta_payload": "campaign-42",
                }
            ],
        )
    )


MEDIA_TIMEOUT_ERROR = {
    "code": 138021,
    "title": "WhatsApp client terminated the call due to not receiving any media for a long time. "
    "Please try again",
    "message": "WhatsApp client terminated the call due to not receiving any media for a long time. "
    "Please try again",
    "error_data": {"details": "WhatsApp client terminated the call due to not receiving any media."},
}


def terminate_failed() -> dict[str, Any]:
    return envelope(
        calls_value(
            contacts=copy.deepcopy(CONTACTS),
            calls=[
                {
                    "id": CALL_ID,
                    "from": USER,
                    "to": BUSINESS,
                    "event": "terminate",
                    "direction": "USER_INITIATED",
                    "timestamp": "1760681533",
                    "start_time": "1760681513",
                    "end_time": "1760681533",
                    "duration": 20,
                    "status": "FAILED",
                    "errors": [copy.deepcopy(MEDIA_TIMEOUT_ERROR)],
                }
            ],
            errors=[copy.deepcopy(MEDIA_TIMEOUT_ERROR)],
        )
    )


def bic_status(status: str = "RINGING") -> dict[str, Any]:
    return envelope(
        calls_value(
            statuses=[
                {
                    "id": "wacid.EXAMPLE2",
                    "timestamp": "1749197000",
                    "type": "call",
                    "status": status,
                    "recipient_id": USER,
                    "biz_opaque_callback_data": "outreach-991",
                }
            ]
        )
    )


# --------------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------------


class TestVerifySignature:
    body = encode(uic_connect())

    def test_accepts_valid_signature(self) -> None:
        verify_signature(self.body, sign(self.body), APP_SECRET)

    def test_accepts_surrounding_whitespace_and_uppercase_hex(self) -> None:
        header = "sha256=" + sign(self.body).removeprefix("sha256=").upper()
        verify_signature(self.body, f"  {header} ", APP_SECRET)

    def test_signature_is_over_escaped_unicode_bytes(self) -> None:
        payload = uic_connect()
        payload["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["name"] = "Anaïs 日本"
        body = encode(payload)
        assert b"\\u00ef" in body
        verify_signature(body, sign(body), APP_SECRET)
        reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
        with pytest.raises(SignatureError):
            verify_signature(reserialised, sign(body), APP_SECRET)

    def test_wrong_secret(self) -> None:
        with pytest.raises(SignatureError, match="signature does not match"):
            verify_signature(self.body, sign(self.body, "other-secret"), APP_SECRET)

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_missing_header(self, header: str | None) -> None:
        with pytest.raises(SignatureError, match="missing X-Hub-Signature-256 header"):
            verify_signature(self.body, header, APP_SECRET)

    @pytest.mark.parametrize(
        "header",
        [
            "abc123",
            "sha1=" + "0" * 40,
            "sha256=",
            "sha256=" + "0" * 63,
            "sha256=" + "0" * 65,
            "sha256=" + "z" * 64,
            hashlib.sha256(b"x").hexdigest(),
        ],
    )
    def test_malformed_header(self, header: str) -> None:
        with pytest.raises(SignatureError, match="malformed signature header"):
            verify_signature(self.body, header, APP_SECRET)

    def test_body_tampered_by_one_byte(self) -> None:
        header = sign(self.body)
        tampered = bytearray(self.body)
        tampered[len(tampered) // 2] ^= 0x01
        with pytest.raises(SignatureError, match="signature does not match"):
            verify_signature(bytes(tampered), header, APP_SECRET)

    def test_body_with_extra_byte(self) -> None:
        with pytest.raises(SignatureError, match="signature does not match"):
            verify_signature(self.body + b" ", sign(self.body), APP_SECRET)


# --------------------------------------------------------------------------------------------------
# GET handshake
# --------------------------------------------------------------------------------------------------


class TestVerifySubscription:
    token = "my-verify-token"

    def params(self, **overrides: str) -> dict[str, str]:
        return {
            "hub.mode": "subscribe",
            "hub.challenge": "1158863600",
            "hub.verify_token": self.token,
            **overrides,
        }

    def test_good(self) -> None:
        assert verify_subscription(self.params(), self.token) == "1158863600"

    @pytest.mark.parametrize("challenge", ["abc-DEF_123", " 0042 ", "x" * 300, ""])
    def test_challenge_echoed_unchanged(self, challenge: str) -> None:
        assert verify_subscription(self.params(**{"hub.challenge": challenge}), self.token) == challenge

    def test_wrong_token(self) -> None:
        assert verify_subscription(self.params(**{"hub.verify_token": "nope"}), self.token) is None

    def test_token_prefix_is_not_enough(self) -> None:
        assert verify_subscription(self.params(**{"hub.verify_token": self.token[:-1]}), self.token) is None

    @pytest.mark.parametrize("mode", ["unsubscribe", "SUBSCRIBE", ""])
    def test_wrong_mode(self, mode: str) -> None:
        assert verify_subscription(self.params(**{"hub.mode": mode}), self.token) is None

    @pytest.mark.parametrize("missing", ["hub.mode", "hub.verify_token", "hub.challenge"])
    def test_missing_parameter(self, missing: str) -> None:
        params = self.params()
        del params[missing]
        assert verify_subscription(params, self.token) is None

    def test_empty_configured_token_never_verifies(self) -> None:
        assert verify_subscription(self.params(**{"hub.verify_token": ""}), "") is None

    def test_non_ascii_token(self) -> None:
        assert verify_subscription(self.params(**{"hub.verify_token": "tøken"}), "tøken") == "1158863600"
        assert verify_subscription(self.params(**{"hub.verify_token": "token"}), "tøken") is None


# --------------------------------------------------------------------------------------------------
# Parsing: valid payloads
# --------------------------------------------------------------------------------------------------


def test_user_initiated_connect() -> None:
    payload = parse_webhook(encode(uic_connect()))

    assert payload.object == "whatsapp_business_account"
    events = call_events(payload)
    assert len(events) == 1
    ev = events[0]
    assert ev.waba_id == WABA_ID
    assert ev.phone_number_id == PHONE_NUMBER_ID
    assert ev.display_phone_number == BUSINESS
    assert ev.contact is not None
    assert ev.contact.wa_id == USER
    assert ev.contact.name == "Ana Example"

    call = ev.call
    assert call.id == CALL_ID
    assert call.from_ == USER
    assert call.to == BUSINESS
    assert call.event == "connect"
    assert call.timestamp == 1760681506
    assert call.direction == "USER_INITIATED"
    assert call.cta_payload == "campaign-42"
    assert call.session is not None
    assert call.session.sdp_type == "offer"
    assert call.session.sdp == OFFER_SDP
    assert call.status is None
    assert call.errors == []
    assert call_statuses(payload) == []


def test_terminate_completed() -> None:
    [ev] = call_events(parse_webhook(encode(terminate_completed())))
    call = ev.call
    assert call.event == "terminate"
    assert call.status == "COMPLETED"
    assert (call.start_time, call.end_time, call.duration) == (1760681513, 1760681633, 120)
    assert call.timestamp == 1760681633
    assert call.biz_opaque_callback_data == "session-7f3a"
    assert call.session is None
    assert call.errors == []


@pytest.mark.parametrize("raw", ["Completed", "completed", "COMPLETED"])
def test_status_case_normalised(raw: str) -> None:
    [ev] = call_events(parse_webhook(encode(terminate_completed(raw))))
    assert ev.call.status == "COMPLETED"


def test_terminate_failed_with_errors_in_both_places() -> None:
    payload = parse_webhook(encode(terminate_failed()))
    [ev] = call_events(payload)
    call = ev.call
    assert call.status == "FAILED"
    assert call.duration == 20
    [err] = call.errors
    assert err.code == 138021
    assert err.title is not None and err.title.startswith("WhatsApp client terminated")
    assert err.error_data == MEDIA_TIMEOUT_ERROR["error_data"]
    assert err.href is None

    value = CallsValue.model_validate(payload.entry[0].changes[0].value)
    assert [e.code for e in value.errors] == [138021]


def test_business_initiated_statuses() -> None:
    payload = parse_webhook(encode(bic_status("RINGING")))
    assert call_events(payload) == []
    [st] = call_statuses(payload)
    assert st.waba_id == WABA_ID
    assert st.phone_number_id == PHONE_NUMBER_ID
    status = st.status
    assert status.id == "wacid.EXAMPLE2"
    assert status.timestamp == 1749197000
    assert status.type == "call"
    assert status.status == "RINGING"
    assert status.recipient_id == USER
    assert status.biz_opaque_callback_data == "outreach-991"
    assert status.errors == []


@pytest.mark.parametrize(("raw", "expected"), [("ACCEPTED", "ACCEPTED"), ("Rejected", "REJECTED")])
def test_business_initiated_status_values(raw: str, expected: str) -> None:
    [st] = call_statuses(parse_webhook(encode(bic_status(raw))))
    assert st.status.status == expected


def test_business_initiated_connect_answer_without_contacts() -> None:
    payload = envelope(
        calls_value(
            calls=[
                {
                    "id": "wacid.EXAMPLE2",
                    "from": BUSINESS,
                    "to": USER,
                    "event": "connect",
                    "timestamp": 1749196895,
                    "direction": "business_initiated",
                    "session": {"sdp_type": "ANSWER", "sdp": "v=0\r\n"},
                    "connection": {"webrtc": {"sdp": '{"sdp":"v=0","type":"answer"}'}},
                }
            ]
        )
    )
    [ev] = call_events(parse_webhook(encode(payload)))
    assert ev.contact is None
    assert ev.call.timestamp == 1749196895
    assert ev.call.direction == "BUSINESS_INITIATED"
    assert ev.call.session is not None and ev.call.session.sdp_type == "answer"


def test_contact_matched_by_wa_id_not_position() -> None:
    payload = uic_connect()
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Someone Else"}, "wa_id": "15550009999"}, *CONTACTS]
    [ev] = call_events(parse_webhook(encode(payload)))
    assert ev.contact is not None and ev.contact.name == "Ana Example"


def test_contact_falls_back_to_first_when_nothing_matches() -> None:
    payload = uic_connect()
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Only One", "username": "only"}, "user_id": "US.123"}]
    [ev] = call_events(parse_webhook(encode(payload)))
    assert ev.contact is not None and ev.contact.name == "Only One"
    assert ev.contact.wa_id is None


def test_contact_matched_by_bsuid_when_phone_omitted() -> None:
    payload = uic_connect()
    value = payload["entry"][0]["changes"][0]["value"]
    call = value["calls"][0]
    del call["from"]
    call["from_user_id"] = "US.777"
    value["contacts"] = [{"user_id": "US.111"}, {"user_id": "US.777", "profile": {"name": "Bee"}}]
    [ev] = call_events(parse_webhook(encode(payload)))
    assert ev.call.from_ is None
    assert ev.call.from_user_id == "US.777"
    assert ev.contact is not None and ev.contact.name == "Bee"


def test_unknown_extra_fields_tolerated() -> None:
    payload = uic_connect()
    payload["brand_new_top_level"] = {"x": 1}
    entry = payload["entry"][0]
    entry["time"] = 1760681506
    entry["changes"][0]["extra"] = True
    value = entry["changes"][0]["value"]
    value["something_new"] = [1, 2, 3]
    value["metadata"]["region"] = "EU"
    value["contacts"][0]["profile"]["username"] = "ana"
    value["contacts"][0]["parent_user_id"] = "US.P1"
    call = value["calls"][0]
    call["terminate_reason"] = "whatever"
    call["to_user_id"] = "US.BIZ"
    call["recording"] = {"status": "ENABLED"}
    call["session"]["setup"] = "actpass"

    [ev] = call_events(parse_webhook(encode(payload)))
    assert ev.call.id == CALL_ID
    assert ev.call.to_user_id == "US.BIZ"
    assert ev.call.model_extra is not None and ev.call.model_extra["terminate_reason"] == "whatever"


def test_messages_field_change_tolerated() -> None:
    payload = uic_connect()
    payload["entry"][0]["changes"].insert(
        0,
        {
            "field": "messages",
            "value": {"messaging_product": "whatsapp", "messages": [{"type": "interactive"}]},
        },
    )
    parsed = parse_webhook(encode(payload))
    assert [c.field for c in parsed.entry[0].changes] == ["messages", "calls"]
    assert parsed.entry[0].changes[0].value["messages"] == [{"type": "interactive"}]
    [ev] = call_events(parsed)
    assert ev.call.id == CALL_ID


def test_messages_only_payload_has_no_call_events() -> None:
    parsed = parse_webhook(encode(envelope({"anything": "goes"}, field="messages")))
    assert call_events(parsed) == []
    assert call_statuses(parsed) == []


def test_multiple_entries_and_calls_flattened_in_order() -> None:
    first = uic_connect()
    second = terminate_completed()
    second["entry"][0]["id"] = "102290000000999"
    first["entry"].extend(second["entry"])
    events = call_events(parse_webhook(encode(first)))
    assert [(e.waba_id, e.call.event) for e in events] == [
        (WABA_ID, "connect"),
        ("102290000000999", "terminate"),
    ]


def test_null_lists_treated_as_empty() -> None:
    payload = envelope(calls_value(contacts=None, calls=None, statuses=None, errors=None))
    parsed = parse_webhook(encode(payload))
    assert call_events(parsed) == []
    assert call_statuses(parsed) == []


# --------------------------------------------------------------------------------------------------
# Parsing: malformed payloads
# --------------------------------------------------------------------------------------------------


def test_invalid_json() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_webhook(b'{"object": "whatsapp_business_account",')


def test_invalid_utf8() -> None:
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        parse_webhook(b'{"object": "\xff"}')


def test_empty_body() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_webhook(b"")


def test_json_array() -> None:
    with pytest.raises(PayloadError, match="expected a JSON object, got an array"):
        parse_webhook(encode(uic_connect()["entry"]))


def test_wrong_object() -> None:
    payload = uic_connect()
    payload["object"] = "page"
    with pytest.raises(PayloadError, match=r"object: expected 'whatsapp_business_account', got 'page'"):
        parse_webhook(encode(payload))


def test_missing_object() -> None:
    payload = uic_connect()
    del payload["object"]
    with pytest.raises(PayloadError, match=r"^object: field required"):
        parse_webhook(encode(payload))


def test_missing_call_id() -> None:
    payload = uic_connect()
    del payload["entry"][0]["changes"][0]["value"]["calls"][0]["id"]
    with pytest.raises(PayloadError) as info:
        parse_webhook(encode(payload))
    assert str(info.value) == "entry[0].changes[0].value.calls[0].id: field required"


def test_empty_call_id() -> None:
    payload = uic_connect()
    payload["entry"][0]["changes"][0]["value"]["calls"][0]["id"] = ""
    with pytest.raises(PayloadError, match=r"^entry\[0\]\.changes\[0\]\.value\.calls\[0\]\.id: "):
        parse_webhook(encode(payload))


def test_bad_timestamp_names_location() -> None:
    payload = uic_connect()
    payload["entry"][0]["changes"][0]["value"]["calls"][0]["timestamp"] = "abc"
    with pytest.raises(PayloadError) as info:
        parse_webhook(encode(payload))
    message = str(info.value)
    assert message.startswith("entry[0].changes[0].value.calls[0].timestamp: ")
    assert "'abc'" in message


def test_error_location_in_second_change() -> None:
    payload = uic_connect()
    broken = terminate_completed()["entry"][0]["changes"][0]
    broken["value"]["calls"][0]["duration"] = "12.5s"
    payload["entry"][0]["changes"].append(broken)
    with pytest.raises(PayloadError, match=r"^entry\[0\]\.changes\[1\]\.value\.calls\[0\]\.duration: "):
        parse_webhook(encode(payload))


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda v: v["metadata"].pop("phone_number_id"), "metadata.phone_number_id"),
        (lambda v: v["calls"][0].pop("event"), "calls[0].event"),
        (lambda v: v["calls"][0]["session"].update(sdp_type="pranswer"), "calls[0].session.sdp_type"),
        (lambda v: v["calls"][0].update(timestamp=True), "calls[0].timestamp"),
        (lambda v: v["calls"][0].update(errors=[{"title": "no code"}]), "calls[0].errors[0].code"),
        (lambda v: v.update(calls={"id": "x"}), "calls"),
    ],
)
def test_schema_errors_name_location(mutate: Any, location: str) -> None:
    payload = uic_connect()
    mutate(payload["entry"][0]["changes"][0]["value"])
    with pytest.raises(PayloadError) as info:
        parse_webhook(encode(payload))
    assert str(info.value).startswith(f"entry[0].changes[0].value.{location}: ")


def test_status_missing_status_names_location() -> None:
    payload = bic_status()
    del payload["entry"][0]["changes"][0]["value"]["statuses"][0]["status"]
    with pytest.raises(PayloadError, match=r"^entry\[0\]\.changes\[0\]\.value\.statuses\[0\]\.status: "):
        parse_webhook(encode(payload))


def test_envelope_errors_name_location() -> None:
    payload = uic_connect()
    del payload["entry"][0]["id"]
    with pytest.raises(PayloadError, match=r"^entry\[0\]\.id: field required"):
        parse_webhook(encode(payload))


def test_payload_error_is_value_error() -> None:
    assert issubclass(PayloadError, ValueError)
