"""Outbound side of the WhatsApp Cloud API: the `POST /{phone-number-id}/calls` actions, the messages that
ask for call permission or offer a call button, and the number's call settings.

Every action goes through one method so request shape, logging and Meta's error envelope are handled
in exactly one place; the simulator and the real Graph API are then interchangeable by `base_url`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import httpx

__all__ = [
    "ANSWER_RETRY",
    "ENDING_RETRY",
    "MAX_BIZ_OPAQUE_CALLBACK_DATA",
    "GraphClient",
    "GraphError",
    "GraphTransportError",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

MAX_BIZ_OPAQUE_CALLBACK_DATA = 512
MAX_BUTTON_PAYLOAD = 512  # spec §6.1
MAX_BUTTON_DISPLAY_TEXT = 20  # spec §6.1
MAX_BUTTON_TTL_MINUTES = 43200  # spec §6.1: 30 days
_SNIPPET = 200

Action = Literal["connect", "pre_accept", "accept", "reject", "terminate"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one kind of request is retried when Meta is briefly unwell (5xx, 429, no answer at all).

    Everything — attempts, back-off waits and each attempt's own timeout — fits in `budget_s`, so a caller of
    `terminate` knows the longest it can take; a Retry-After longer than what is left ends the retrying.
    """

    attempts: int
    first_backoff_s: float
    max_backoff_s: float
    budget_s: float
    attempt_timeout_s: float
    max_retry_after_s: float | None = None  # a longer Retry-After is not waited for: the error stands

    def backoff(self, attempt: int) -> float:
        """Exponential: first, 2×first, 4×first… (attempt counts from 1, the attempt that just failed)."""
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempt - 1))


#: terminate/reject: Meta bills the call until it hears one, so keep trying for about ten seconds.
ENDING_RETRY = RetryPolicy(attempts=5, first_backoff_s=0.25, max_backoff_s=4.0, budget_s=10.0, attempt_timeout_s=4.0)
#: pre_accept/accept: the caller is waiting on ringing, and a late accept is worse than a failed one.
ANSWER_RETRY = RetryPolicy(
    attempts=2, first_backoff_s=0.2, max_backoff_s=0.2, budget_s=8.0, attempt_timeout_s=5.0, max_retry_after_s=0.5
)


def retryable(exc: GraphError) -> bool:
    """Meta may do better next time: no answer at all, a server error, or a rate limit. Any other 4xx is
    a refusal that would only be repeated."""
    return isinstance(exc, GraphTransportError) or exc.status >= 500 or exc.status == 429


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class GraphError(Exception):
    """A Graph API call that Meta refused (or answered nonsensically); keeps Meta's code for branching."""

    def __init__(
        self,
        *,
        status: int,
        message: str,
        code: int | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        error_type: str | None = None,
        error_data: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after  # seconds, from Meta's Retry-After header
        self.code = code
        self.message = message
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.error_type = error_type
        self.error_data = error_data
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = f"Graph API {self.status}"
        message = self.message
        if self.code is not None:
            head += f" (#{self.code})"
            # Meta usually repeats the code in the message itself; say it once.
            message = message.removeprefix(f"(#{self.code})").strip() or message
        text = f"{head}: {message}"
        if self.details and self.details != message:
            text += f" — {self.details}"
        return text

    def __str__(self) -> str:
        return self._describe()


class GraphTransportError(GraphError):
    """The request never got an HTTP answer (DNS, connect, timeout): retrying may help, Meta saw nothing."""

    def __init__(self, message: str) -> None:
        super().__init__(status=0, message=message)

    def _describe(self) -> str:
        return f"Graph API transport error: {self.message}"


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _error_from_response(response: httpx.Response) -> GraphError:
    """Build a GraphError from Meta's `{"error": {...}}` envelope, tolerating proxies' HTML pages."""
    error = _parse_error(response)
    error.retry_after = _retry_after(response.headers.get("retry-after"))
    return error


def _parse_error(response: httpx.Response) -> GraphError:
    status = response.status_code
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = _snippet(response.text)
        return GraphError(
            status=status,
            message=response.reason_phrase or "non-JSON error response",
            details=body or None,
        )
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return GraphError(status=status, message="unexpected error response", details=_snippet(str(data)))
    code = error.get("code")
    error_data = error.get("error_data")
    if not isinstance(error_data, dict):
        error_data = None
    details = (error_data or {}).get("details") or error.get("error_user_msg")
    message = error.get("message")
    trace = error.get("fbtrace_id")
    return GraphError(
        status=status,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        message=str(message) if message else response.reason_phrase or "error",
        details=str(details) if details else None,
        fbtrace_id=str(trace) if trace else None,
        error_type=str(error["type"]) if error.get("type") else None,
        error_data=error_data,
    )


def _require(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must be a non-empty string")


def _check_callback_data(value: str | None) -> None:
    if value is not None and len(value) > MAX_BIZ_OPAQUE_CALLBACK_DATA:
        raise ValueError(
            f"biz_opaque_callback_data is {len(value)} characters; Meta allows at most {MAX_BIZ_OPAQUE_CALLBACK_DATA}"
        )


def _check_button(payload: str | None, ttl_minutes: int | None) -> None:
    """Spec §6.1: payload at most 512 characters, TTL 1 to 43200 minutes."""
    if payload is not None and len(payload) > MAX_BUTTON_PAYLOAD:
        raise ValueError(f"payload is {len(payload)} characters; Meta allows at most {MAX_BUTTON_PAYLOAD}")
    if ttl_minutes is not None and not 1 <= ttl_minutes <= MAX_BUTTON_TTL_MINUTES:
        raise ValueError(f"ttl_minutes must be 1 to {MAX_BUTTON_TTL_MINUTES}")


class GraphClient:
    """Client for one business phone number's calling endpoint."""

    def __init__(
        self,
        *,
        base_url: str,
        version: str,
        phone_number_id: str,
        token: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ending_retry: RetryPolicy = ENDING_RETRY,
        answer_retry: RetryPolicy = ANSWER_RETRY,
        on_error: Callable[[str, GraphError], None] | None = None,
    ) -> None:
        # Public so a deployment (or a test against a misbehaving simulator) can tune them.
        self.ending_retry = ending_retry
        self.answer_retry = answer_retry
        # Told of every failed request (each attempt, retries included) with its action: the runtime's
        # metrics count Graph errors by code here without this module knowing about metrics.
        self.on_error = on_error
        self._url = f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/calls"
        self._messages_url = f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/messages"
        self._settings_url = f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/settings"
        # The token lives only in the client's default headers so no log line can pick it up by accident.
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._url

    async def pre_accept(self, call_id: str, sdp: str) -> None:
        """Let Meta start ICE/DTLS before we commit; the caller's UI moves to "Ringing"."""
        _require("call_id", call_id)
        _require("sdp", sdp)
        await self._post(
            "pre_accept", {"call_id": call_id, "session": _session("answer", sdp)}, retry=self.answer_retry
        )

    async def accept(self, call_id: str, sdp: str, biz_opaque_callback_data: str | None = None) -> None:
        """The SDP must be the same one given to pre_accept, or Meta refuses the accept."""
        _require("call_id", call_id)
        _require("sdp", sdp)
        _check_callback_data(biz_opaque_callback_data)
        body: dict[str, Any] = {"call_id": call_id, "session": _session("answer", sdp)}
        if biz_opaque_callback_data is not None:
            body["biz_opaque_callback_data"] = biz_opaque_callback_data
        await self._post("accept", body, retry=self.answer_retry)

    async def reject(self, call_id: str) -> None:
        """Retried like terminate: an unanswered reject leaves the caller's phone ringing."""
        _require("call_id", call_id)
        await self._post("reject", {"call_id": call_id}, retry=self.ending_retry)

    async def terminate(self, call_id: str) -> None:
        """Always sent when we hang up, even after RTCP BYE: Meta bills from it, so a transient failure
        (5xx, 429, timeout) is retried with back-off for about ten seconds (`ending_retry`)."""
        _require("call_id", call_id)
        await self._post("terminate", {"call_id": call_id}, retry=self.ending_retry)

    async def connect(self, to: str, sdp: str, biz_opaque_callback_data: str | None = None) -> str:
        """Start a business-initiated call with our offer; Meta's answer arrives later in a webhook."""
        _require("to", to)
        _require("sdp", sdp)
        _check_callback_data(biz_opaque_callback_data)
        body: dict[str, Any] = {"to": to, "session": _session("offer", sdp)}
        if biz_opaque_callback_data is not None:
            body["biz_opaque_callback_data"] = biz_opaque_callback_data
        status, data = await self._post("connect", body)
        calls = data.get("calls")
        first = calls[0] if isinstance(calls, list) and calls else None
        call_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise self._failed(
                "connect",
                GraphError(status=status, message="connect response has no call id", details=_snippet(str(data))),
            )
        return call_id

    async def send_call_permission_request(self, to: str, body_text: str | None = None) -> str:
        """Ask a user for permission to call them (free-form interactive message, spec §4.2).

        Needs an open customer-service window; returns the message id (wamid) the reply will refer to.
        """
        _require("to", to)
        interactive: dict[str, Any] = {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
        }
        if body_text:
            interactive["body"] = {"text": body_text}
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "interactive",
            "interactive": interactive,
        }
        return await self._send_message(body, "call_permission_request")

    async def send_call_button(
        self,
        to: str,
        *,
        body_text: str,
        payload: str | None = None,
        display_text: str | None = None,
        ttl_minutes: int | None = None,
    ) -> str:
        """The free-form `voice_call` interactive message (spec §6.1): a button that calls the business.

        Needs an open customer-service window (§8.1); a tap starts a call whose webhooks carry `payload` as
        `cta_payload` (§6.4). Limits are checked here so a bad value fails before Meta is asked.
        """
        _require("to", to)
        _require("body_text", body_text)
        _check_button(payload, ttl_minutes)
        if display_text is not None and not 1 <= len(display_text) <= MAX_BUTTON_DISPLAY_TEXT:
            raise ValueError(f"display_text must be 1 to {MAX_BUTTON_DISPLAY_TEXT} characters")
        parameters: dict[str, Any] = {}
        if display_text is not None:
            parameters["display_text"] = display_text
        if ttl_minutes is not None:
            parameters["ttl_minutes"] = ttl_minutes
        if payload is not None:
            parameters["payload"] = payload
        action: dict[str, Any] = {"name": "voice_call"}
        if parameters:
            action["parameters"] = parameters
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "interactive",
            "interactive": {"type": "voice_call", "body": {"text": body_text}, "action": action},
        }
        return await self._send_message(body, "call_button")

    async def send_call_button_template(
        self,
        to: str,
        *,
        name: str,
        language: str,
        payload: str | None = None,
        ttl_minutes: int | None = None,
    ) -> str:
        """An approved template with a voice-call button (spec §6.2): the way to reach a user outside the
        customer-service window. The send may override the TTL and attach the payload."""
        _require("to", to)
        _require("name", name)
        _require("language", language)
        _check_button(payload, ttl_minutes)
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        parameters: list[dict[str, Any]] = []
        if ttl_minutes is not None:
            parameters.append({"type": "ttl_minutes", "ttl_minutes": ttl_minutes})
        if payload is not None:
            parameters.append({"type": "payload", "payload": payload})
        if parameters:
            template["components"] = [{"type": "button", "sub_type": "voice_call", "parameters": parameters}]
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }
        return await self._send_message(body, "call_button_template")

    async def get_settings(self) -> dict[str, Any]:
        """`GET /{phone-number-id}/settings` (spec §5): the whole answer; the `calling` object is in it."""
        _, data = await self._request_json("GET", self._settings_url, None, "get_settings", None)
        return data

    async def update_settings(self, calling: dict[str, Any]) -> None:
        """`POST /{phone-number-id}/settings` with a `calling` object (spec §5). Meta replaces `call_hours`
        whole, so a body without `holiday_schedule` deletes the holidays it has."""
        status, data = await self._post_json(self._settings_url, {"calling": calling}, "update_settings", None)
        if data.get("success") is not True:
            raise self._failed(
                "update_settings",
                GraphError(
                    status=status,
                    message='settings update was not confirmed (no "success": true)',
                    details=_snippet(json.dumps(data)),
                ),
            )

    async def _send_message(self, body: dict[str, Any], what: str) -> str:
        """POST to /messages; the message id (wamid) that statuses and replies will refer to."""
        status, data = await self._post_json(self._messages_url, body, what, body.get("to"))
        messages = data.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        message_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise self._failed(
                what,
                GraphError(status=status, message="message response has no id", details=_snippet(str(data))),
            )
        return message_id

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post(
        self, action: Action, fields: dict[str, Any], *, retry: RetryPolicy | None = None
    ) -> tuple[int, dict[str, Any]]:
        body = {"messaging_product": "whatsapp", "action": action, **fields}
        target = fields.get("call_id") or fields.get("to")
        if retry is None:
            status, data = await self._post_json(self._url, body, action, target)
        else:
            status, data = await self._post_retrying(body, action, target, retry)
        if action != "connect" and data.get("success") is not True:
            raise self._failed(
                action,
                GraphError(
                    status=status,
                    message=f'{action} was not confirmed (no "success": true)',
                    details=_snippet(json.dumps(data)),
                ),
            )
        return status, data

    def _failed(self, action: str, error: GraphError) -> GraphError:
        """Tell `on_error` (whose own failure must never replace Meta's error) and hand the error back."""
        if self.on_error is not None:
            try:
                self.on_error(action, error)
            except Exception:
                logger.exception("Graph error callback failed")
        return error

    async def _post_retrying(
        self, body: dict[str, Any], action: Action, target: Any, retry: RetryPolicy
    ) -> tuple[int, dict[str, Any]]:
        """`_post_json` again on a transient failure, with exponential back-off (or Meta's Retry-After),
        all within the policy's budget; the last error is raised when the budget or attempts run out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry.budget_s
        attempt = 0
        while True:
            attempt += 1
            timeout = max(0.1, min(retry.attempt_timeout_s, deadline - loop.time()))
            try:
                return await self._post_json(self._url, body, action, target, timeout=timeout)
            except GraphError as exc:
                if not retryable(exc) or attempt >= retry.attempts:
                    raise
                wait = retry.backoff(attempt)
                if exc.retry_after is not None:
                    if retry.max_retry_after_s is not None and exc.retry_after > retry.max_retry_after_s:
                        raise
                    wait = max(wait, exc.retry_after)
                if loop.time() + wait + 0.1 >= deadline:
                    raise
                logger.warning(
                    "Graph %s for %s failed (%s); retry %d of %d in %.2f s",
                    action,
                    target,
                    exc,
                    attempt,
                    retry.attempts - 1,
                    wait,
                )
                await asyncio.sleep(wait)

    async def _post_json(
        self, url: str, body: dict[str, Any], action: str, target: Any, *, timeout: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        return await self._request_json("POST", url, body, action, target, timeout=timeout)

    async def _request_json(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        action: str,
        target: Any,
        *,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        logger.debug("Graph %s %s action=%s target=%s", method, url, action, target)
        try:
            if timeout is None:
                response = await self._client.request(method, url, json=body)
            else:
                response = await self._client.request(method, url, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            logger.debug("Graph %s action=%s failed: %r", method, action, exc)
            raise self._failed(
                action, GraphTransportError(f"{action} request failed: {type(exc).__name__}: {exc}")
            ) from exc
        logger.debug("Graph %s action=%s -> %d", method, action, response.status_code)
        if not response.is_success:
            raise self._failed(action, _error_from_response(response))
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._failed(
                action,
                GraphError(
                    status=response.status_code,
                    message=f"{action} response is not JSON",
                    details=_snippet(response.text) or None,
                ),
            ) from exc
        if not isinstance(data, dict):
            raise self._failed(
                action,
                GraphError(
                    status=response.status_code,
                    message=f"{action} response is not a JSON object",
                    details=_snippet(str(data)),
                ),
            )
        return response.status_code, data


def _session(sdp_type: Literal["offer", "answer"], sdp: str) -> dict[str, str]:
    return {"sdp_type": sdp_type, "sdp": sdp}
