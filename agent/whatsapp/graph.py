"""Outbound side of the WhatsApp Cloud API: the `POST /{phone-number-id}/calls` actions.

Every action goes through one method so request shape, logging and Meta's error envelope are handled
in exactly one place; the simulator and the real Graph API are then interchangeable by `base_url`.
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any, Literal, Self

import httpx

__all__ = ["MAX_BIZ_OPAQUE_CALLBACK_DATA", "GraphClient", "GraphError", "GraphTransportError"]

logger = logging.getLogger(__name__)

MAX_BIZ_OPAQUE_CALLBACK_DATA = 512
_SNIPPET = 200

Action = Literal["connect", "pre_accept", "accept", "reject", "terminate"]


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
    ) -> None:
        self.status = status
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
            f"biz_opaque_callback_data is {len(value)} characters; Meta allows at most "
            f"{MAX_BIZ_OPAQUE_CALLBACK_DATA}"
        )


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
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/calls"
        self._messages_url = f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/messages"
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
        await self._post("pre_accept", {"call_id": call_id, "session": _session("answer", sdp)})

    async def accept(self, call_id: str, sdp: str, biz_opaque_callback_data: str | None = None) -> None:
        """The SDP must be the same one given to pre_accept, or Meta refuses the accept."""
        _require("call_id", call_id)
        _require("sdp", sdp)
        _check_callback_data(biz_opaque_callback_data)
        body: dict[str, Any] = {"call_id": call_id, "session": _session("answer", sdp)}
        if biz_opaque_callback_data is not None:
            body["biz_opaque_callback_data"] = biz_opaque_callback_data
        await self._post("accept", body)

    async def reject(self, call_id: str) -> None:
        _require("call_id", call_id)
        await self._post("reject", {"call_id": call_id})

    async def terminate(self, call_id: str) -> None:
        """Always sent when we hang up, even after RTCP BYE: Meta bills from it."""
        _require("call_id", call_id)
        await self._post("terminate", {"call_id": call_id})

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
            raise GraphError(
                status=status, message="connect response has no call id", details=_snippet(str(data))
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
        status, data = await self._post_json(self._messages_url, body, "call_permission_request", to)
        messages = data.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        message_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise GraphError(status=status, message="message response has no id", details=_snippet(str(data)))
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

    async def _post(self, action: Action, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = {"messaging_product": "whatsapp", "action": action, **fields}
        target = fields.get("call_id") or fields.get("to")
        status, data = await self._post_json(self._url, body, action, target)
        if action != "connect" and data.get("success") is not True:
            raise GraphError(
                status=status,
                message=f'{action} was not confirmed (no "success": true)',
                details=_snippet(json.dumps(data)),
            )
        return status, data

    async def _post_json(
        self, url: str, body: dict[str, Any], action: str, target: Any
    ) -> tuple[int, dict[str, Any]]:
        logger.debug("Graph POST %s action=%s target=%s", url, action, target)
        try:
            response = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            logger.debug("Graph POST action=%s failed: %r", action, exc)
            raise GraphTransportError(f"{action} request failed: {type(exc).__name__}: {exc}") from exc
        logger.debug("Graph POST action=%s -> %d", action, response.status_code)
        if not response.is_success:
            raise _error_from_response(response)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GraphError(
                status=response.status_code,
                message=f"{action} response is not JSON",
                details=_snippet(response.text) or None,
            ) from exc
        if not isinstance(data, dict):
            raise GraphError(
                status=response.status_code,
                message=f"{action} response is not a JSON object",
                details=_snippet(str(data)),
            )
        return response.status_code, data


def _session(sdp_type: Literal["offer", "answer"], sdp: str) -> dict[str, str]:
    return {"sdp_type": sdp_type, "sdp": sdp}
