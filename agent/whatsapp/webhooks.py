"""Inbound side of the WhatsApp Cloud API: signature checks, the GET handshake and `calls` payload models.

Meta's payloads drift (new BSUID fields, mixed-case enums, numbers sent as strings), so the models are
lenient about shape and strict only about the fields the call flow depends on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from agent.whatsapp.payloads import BUTTON, LINK, CallContext, payload_problem

__all__ = [
    "CallError",
    "CallEvent",
    "CallStatus",
    "CallWebhook",
    "CallsValue",
    "Change",
    "Contact",
    "Entry",
    "Metadata",
    "PayloadError",
    "SdpSession",
    "SignatureError",
    "StatusWebhook",
    "WebhookPayload",
    "call_events",
    "call_statuses",
    "parse_webhook",
    "verify_signature",
    "verify_subscription",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
WHATSAPP_OBJECT = "whatsapp_business_account"
CALLS_FIELD = "calls"
_SIGNATURE_PREFIX = "sha256="
_SHA256_HEX_LEN = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


# --------------------------------------------------------------------------------------------------
# Signatures and the subscription handshake
# --------------------------------------------------------------------------------------------------


class SignatureError(Exception):
    """Raised when a POST cannot be proven to come from Meta; the caller should answer 401/403."""


def verify_signature(body: bytes, header: str | None, app_secret: str) -> None:
    """Check `X-Hub-Signature-256` against the raw body, before any parsing touches it.

    Meta signs the exact bytes it sent (with escaped unicode), so re-serialised JSON would not match.
    """
    if header is None or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    value = header.strip()
    if not value.lower().startswith(_SIGNATURE_PREFIX):
        raise SignatureError("malformed signature header")
    received = value[len(_SIGNATURE_PREFIX) :]
    if len(received) != _SHA256_HEX_LEN or not set(received) <= _HEX_DIGITS:
        raise SignatureError("malformed signature header")
    expected = hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, received.lower()):
        raise SignatureError("signature does not match")


def verify_subscription(params: Mapping[str, str], verify_token: str) -> str | None:
    """Return the challenge to echo for a valid GET handshake, else None (answer 403).

    The challenge is opaque: it is returned byte-for-byte, never coerced to int.
    """
    if params.get("hub.mode") != "subscribe":
        return None
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if token is None or challenge is None or not verify_token:
        return None
    if not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        return None
    return challenge


# --------------------------------------------------------------------------------------------------
# Lenient field types
# --------------------------------------------------------------------------------------------------


# The last second `datetime` can hold (9999-12-31T23:59:59Z): anything later fails to convert on every
# retry of the delivery, so it is refused here as a malformed payload instead.
MAX_UNIX_SECONDS = 253_402_300_799


def _unix_seconds(value: Any) -> Any:
    """Meta sends unix times as digit strings; accept those and ints, refuse anything ambiguous."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PydanticCustomError("unix_seconds", "expected unix seconds, got a boolean")
    seconds: int | None = None
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 20:
            seconds = int(text)
    if seconds is not None:
        if not 0 <= seconds <= MAX_UNIX_SECONDS:
            raise PydanticCustomError(
                "unix_seconds", "unix seconds out of range (0 to {max})", {"max": MAX_UNIX_SECONDS}
            )
        return seconds
    shown = _shown(value)
    raise PydanticCustomError(
        "unix_seconds",
        "expected unix seconds as an integer or a string of digits, got {value}",
        {"value": shown},
    )


def _shown(value: Any, width: int = 40) -> str:
    """A short repr for messages; only strings are shown, since a deep structure's repr can recurse too far."""
    shown = repr(value) if isinstance(value, str | int | float | bool) or value is None else _json_type(value)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _upper(value: Any) -> Any:
    """Meta mixes "COMPLETED" and "Completed"; compare against one canonical case."""
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _context_payload(value: Any, info: ValidationInfo) -> Any:
    """A bad `cta_payload`/`deeplink_payload` is dropped with a warning, not refused: it is only context,
    and refusing the delivery would make Meta retry a connect we could still answer."""
    if value is None:
        return None
    problem = payload_problem(value)
    if problem is None:
        return value
    logging.getLogger(__name__).warning("ignoring %s: %s", info.field_name, problem)
    return None


def _none_as_empty(value: Any) -> Any:
    """An explicit null list is as good as an absent one."""
    return [] if value is None else value


UnixSeconds = Annotated[int, BeforeValidator(_unix_seconds)]
OptUnixSeconds = Annotated[int | None, BeforeValidator(_unix_seconds)]
UpperStr = Annotated[str, BeforeValidator(_upper)]
OptUpperStr = Annotated[str | None, BeforeValidator(_upper)]
ContextPayload = Annotated[str | None, BeforeValidator(_context_payload)]


class _Model(BaseModel):
    # "allow" keeps undocumented fields (e.g. chatwoot's terminate_reason) reachable via model_extra.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------------------------------
# `calls` field models
# --------------------------------------------------------------------------------------------------


class SdpSession(_Model):
    sdp_type: Annotated[Literal["offer", "answer"], BeforeValidator(_lower)]
    sdp: str


class CallError(_Model):
    code: int
    title: str | None = None
    message: str | None = None
    href: str | None = None
    error_data: dict[str, Any] | None = None


_ErrorList = Annotated[list[CallError], BeforeValidator(_none_as_empty)]


class CallEvent(_Model):
    id: str = Field(min_length=1)
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    event: str
    timestamp: UnixSeconds
    direction: OptUpperStr = None
    session: SdpSession | None = None
    status: OptUpperStr = None
    start_time: OptUnixSeconds = None
    end_time: OptUnixSeconds = None
    duration: OptUnixSeconds = None
    errors: _ErrorList = Field(default_factory=list)
    biz_opaque_callback_data: str | None = None
    cta_payload: ContextPayload = None
    deeplink_payload: ContextPayload = None
    # 2026 business-scoped user ids; phone fields may be omitted when these are present.
    from_user_id: str | None = None
    to_user_id: str | None = None
    from_parent_user_id: str | None = None
    to_parent_user_id: str | None = None

    @property
    def context(self) -> CallContext | None:
        """The button's or link's payload (spec §6.4); a call carries one or the other, the button first."""
        if self.cta_payload is not None:
            return CallContext(self.cta_payload, BUTTON)
        if self.deeplink_payload is not None:
            return CallContext(self.deeplink_payload, LINK)
        return None


class CallStatus(_Model):
    id: str = Field(min_length=1)
    timestamp: UnixSeconds
    type: str | None = None
    status: UpperStr
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    recipient_parent_user_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: _ErrorList = Field(default_factory=list)


class Contact(_Model):
    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile: dict[str, Any] | None = None

    @property
    def name(self) -> str | None:
        name = (self.profile or {}).get("name")
        return name if isinstance(name, str) else None


class Metadata(_Model):
    display_phone_number: str | None = None
    phone_number_id: str


class CallsValue(_Model):
    messaging_product: str | None = None
    metadata: Metadata
    contacts: Annotated[list[Contact], BeforeValidator(_none_as_empty)] = Field(default_factory=list)
    calls: Annotated[list[CallEvent], BeforeValidator(_none_as_empty)] = Field(default_factory=list)
    statuses: Annotated[list[CallStatus], BeforeValidator(_none_as_empty)] = Field(default_factory=list)
    errors: _ErrorList = Field(default_factory=list)


class PermissionReply(_Model):
    """`interactive.call_permission_reply` (spec §4.4): the user's answer to a call-permission request."""

    response: Annotated[str, BeforeValidator(_lower)]
    is_permanent: bool = False
    expiration_timestamp: OptUnixSeconds = None
    response_source: str | None = None


class Interactive(_Model):
    type: str | None = None
    call_permission_reply: PermissionReply | None = None


class UserMessage(_Model):
    """A message from the user: any message opens the customer-service window (spec §8.1)."""

    id: str | None = None
    from_: str | None = Field(default=None, alias="from")
    timestamp: UnixSeconds
    type: str | None = None
    context: dict[str, Any] | None = None
    interactive: Interactive | None = None


class MessagesValue(_Model):
    messaging_product: str | None = None
    metadata: Metadata
    contacts: Annotated[list[Contact], BeforeValidator(_none_as_empty)] = Field(default_factory=list)
    messages: Annotated[list[UserMessage], BeforeValidator(_none_as_empty)] = Field(default_factory=list)


class Change(_Model):
    """One change; `value` stays raw so fields we do not model (e.g. template updates) never break parsing."""

    field: str
    value: dict[str, Any] = Field(default_factory=dict)
    _calls: CallsValue | None = PrivateAttr(default=None)
    _messages: MessagesValue | None = PrivateAttr(default=None)


class Entry(_Model):
    id: str
    changes: list[Change]


class WebhookPayload(_Model):
    object: str
    entry: list[Entry]


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


class PayloadError(ValueError):
    """Raised for a body that cannot be a valid webhook; the message names where the problem is."""


def _format_loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _payload_error(exc: ValidationError, prefix: str = "") -> PayloadError:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        msg = msg[:1].lower() + msg[1:]
        problems.append(f"{_format_loc(err['loc'], prefix)}: {msg}")
    if len(problems) > 5:  # a 1 MB list of bad items would otherwise make a 1 MB answer and log line
        problems[5:] = [f"and {len(problems) - 5} more"]
    return PayloadError("; ".join(problems))


def _calls_value(change: Change, location: str) -> CallsValue:
    """Validate (once) the value of a `calls` change, reporting errors at their full location."""
    if change._calls is None:
        try:
            change._calls = CallsValue.model_validate(change.value)
        except ValidationError as exc:
            raise _payload_error(exc, f"{location}.value") from exc
    return change._calls


def _calls_changes(payload: WebhookPayload) -> list[tuple[Entry, CallsValue]]:
    found: list[tuple[Entry, CallsValue]] = []
    for i, entry in enumerate(payload.entry):
        for j, change in enumerate(entry.changes):
            if change.field == CALLS_FIELD:
                found.append((entry, _calls_value(change, f"entry[{i}].changes[{j}]")))
    return found


MESSAGES_FIELD = "messages"


def _messages_changes(payload: WebhookPayload) -> list[tuple[Entry, MessagesValue]]:
    found: list[tuple[Entry, MessagesValue]] = []
    for i, entry in enumerate(payload.entry):
        for j, change in enumerate(entry.changes):
            if change.field != MESSAGES_FIELD or "messages" not in change.value:
                continue  # message *statuses* share the field; we have no use for them yet
            if change._messages is None:
                try:
                    change._messages = MessagesValue.model_validate(change.value)
                except ValidationError as exc:
                    # Not our concern enough to refuse the whole delivery (it may carry call events too).
                    problem = _payload_error(exc, f"entry[{i}].changes[{j}].value")
                    logging.getLogger(__name__).warning("ignoring malformed messages change: %s", problem)
                    continue
            found.append((entry, change._messages))
    return found


def parse_webhook(body: bytes) -> WebhookPayload:
    """Parse and fully validate a POST body, so a malformed `calls` payload is refused up front."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"body is not valid JSON: {exc.msg} at {where}") from exc
    except RecursionError as exc:
        raise PayloadError("body is not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise PayloadError(f"body: expected a JSON object, got {_json_type(data)}")
    if "object" in data and data["object"] != WHATSAPP_OBJECT:
        raise PayloadError(f"object: expected {WHATSAPP_OBJECT!r}, got {_shown(data['object'])}")
    try:
        payload = WebhookPayload.model_validate(data)
        _calls_changes(payload)
        _messages_changes(payload)
    except ValidationError as exc:
        raise _payload_error(exc) from exc
    except RecursionError as exc:  # a value nested just under json's limit can still be too deep to validate
        raise PayloadError("body: nested too deeply") from exc
    return payload


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


# --------------------------------------------------------------------------------------------------
# Flattened views for the call handler
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallWebhook:
    """One call event with the envelope facts a handler needs, so it never walks entry/changes itself."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str | None
    contact: Contact | None
    call: CallEvent


@dataclass(frozen=True)
class StatusWebhook:
    waba_id: str
    phone_number_id: str
    status: CallStatus


def _contact_for(call: CallEvent, contacts: list[Contact]) -> Contact | None:
    """Pick the user's contact: for UIC the user is `from`, for BIC `to`, so try both sides."""
    phones = {p for p in (call.from_, call.to) if p}
    user_ids = {u for u in (call.from_user_id, call.to_user_id) if u}
    for contact in contacts:
        if (contact.wa_id and contact.wa_id in phones) or (contact.user_id and contact.user_id in user_ids):
            return contact
    return contacts[0] if contacts else None


def call_events(payload: WebhookPayload) -> list[CallWebhook]:
    return [
        CallWebhook(
            waba_id=entry.id,
            phone_number_id=value.metadata.phone_number_id,
            display_phone_number=value.metadata.display_phone_number,
            contact=_contact_for(call, value.contacts),
            call=call,
        )
        for entry, value in _calls_changes(payload)
        for call in value.calls
    ]


def call_statuses(payload: WebhookPayload) -> list[StatusWebhook]:
    return [
        StatusWebhook(waba_id=entry.id, phone_number_id=value.metadata.phone_number_id, status=status)
        for entry, value in _calls_changes(payload)
        for status in value.statuses
    ]


@dataclass(frozen=True)
class MessageWebhook:
    """A user message, flattened; `permission_reply` is set for call-permission replies."""

    phone_number_id: str
    user: str
    message: UserMessage
    permission_reply: PermissionReply | None


def user_messages(payload: WebhookPayload) -> list[MessageWebhook]:
    out: list[MessageWebhook] = []
    for _entry, value in _messages_changes(payload):
        for message in value.messages:
            user = message.from_ or (value.contacts[0].wa_id if value.contacts else None)
            if not user:
                continue
            reply = message.interactive.call_permission_reply if message.interactive else None
            out.append(MessageWebhook(value.metadata.phone_number_id, user, message, reply))
    return out
