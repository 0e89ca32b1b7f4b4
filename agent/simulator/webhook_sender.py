"""Meta's webhook delivery: serialise, sign and POST event payloads to the business server.

The server's signature check is only meaningful if the bytes we sign are the bytes we send, so
payloads are serialised exactly once (spec §1.2, simulator rule 1). Fault modes exist so the
server's rejection and de-duplication paths can be exercised (spec §1, simulator rules 2-3).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
# Meta's webhook client identifies itself like this; some servers log or filter on it.
USER_AGENT = "facebookexternalua"
# Meta's HTTPS client gives up after about 20 s (spec §1.2).
DEFAULT_TIMEOUT = 20.0


@dataclass
class DeliveryOptions:
    """Webhook delivery faults, for testing the server's defences.

    The object is shared by reference with the sender, so a test may flip a flag between two
    deliveries.
    """

    bad_signature: bool = False  # sign with a wrong key
    omit_signature: bool = False  # no X-Hub-Signature-256 header
    duplicate: bool = False  # deliver every webhook (calls, statuses, messages) twice
    title_case_status: bool = False  # "Completed" instead of "COMPLETED" in terminate
    # Terminate-before-connect (spec §1.2, simulator rule 3): a call's connect webhook is held back
    # and delivered right after that call's terminate, as a retried connect would arrive.
    out_of_order: bool = False
    # Deliver events whose event times (timestamp, start_time, end_time) are this many seconds in the
    # past, as a late retry would be (spec §1.2: "stale webhooks can still arrive").
    stale_by_s: int = 0
    # Business-initiated webhooks without `contacts` (spec §2.1, §2.6 simulator rule 3).
    omit_bic_contacts: bool = False


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST attempt, kept so tests can assert on what the server was actually given."""

    payload: dict[str, Any]
    body: bytes
    signature: str | None  # the X-Hub-Signature-256 header value sent, None when omitted
    status_code: int | None  # None when the request never got a response
    error: str | None = None


def serialise(payload: dict[str, Any]) -> bytes:
    """Encode like Meta: compact, non-ASCII escaped as lowercase \\uXXXX (spec §1.2)."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def call_event(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(event, call id) of a `calls` connect/terminate payload, else None; hand-built payloads may be odd."""
    try:
        call = payload["entry"][0]["changes"][0]["value"]["calls"][0]
        event, call_id = call["event"], call["id"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(event, str) and isinstance(call_id, str):
        return event, call_id
    return None


_EVENT_TIME_KEYS = ("timestamp", "start_time", "end_time")


def _event_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every call, status and message object of an envelope, tolerating hand-built odd shapes."""
    items: list[dict[str, Any]] = []
    entries = payload.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            for key in ("calls", "statuses", "messages"):
                listed = value.get(key)
                items += [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []
    return items


def make_stale(payload: dict[str, Any], by_s: int) -> dict[str, Any]:
    """A copy whose call, status and message event times are `by_s` seconds older.

    Only event times move; `duration` and a permission's `expiration_timestamp` are left alone,
    because a late delivery does not change how long a call lasted or when a grant lapses.
    """
    stale = copy.deepcopy(payload)
    for item in _event_items(stale):
        for key in _EVENT_TIME_KEYS:
            value = item.get(key)
            if isinstance(value, str) and value.isdigit():
                item[key] = str(int(value) - int(by_s))
    return stale


def sign(body: bytes, secret: str) -> str:
    """Header value for `body`: HMAC-SHA256 over the raw bytes, keyed with the app secret."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSender:
    """Delivers payloads to one callback URL, applying the configured delivery faults."""

    def __init__(
        self,
        *,
        url: str,
        app_secret: str,
        options: DeliveryOptions,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self._app_secret = app_secret
        self.options = options
        self.deliveries: list[WebhookDelivery] = []
        self._held: dict[str, dict[str, Any]] = {}  # call id -> connect payload, in arrival order
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
        )

    def _signature_for(self, body: bytes) -> str | None:
        if self.options.omit_signature:
            return None
        if self.options.bad_signature:
            # A different key rather than a mangled digest: the header stays well-formed, so only
            # a real HMAC comparison can catch it.
            return sign(body, self._app_secret + "-not-the-app-secret")
        return sign(body, self._app_secret)

    @property
    def held(self) -> list[dict[str, Any]]:
        """Connect payloads held back by `out_of_order`, waiting for their terminate."""
        return list(self._held.values())

    async def send(self, payload: dict[str, Any]) -> httpx.Response | None:
        """POST `payload` (twice in duplicate mode, as Meta's retry would) and return the last response.

        Returns None when `out_of_order` holds a connect back; it goes out right after its call's
        terminate (whatever the flag says by then), or through `release_held`.

        Transport errors are recorded and re-raised: a server that cannot be reached is a test
        failure the caller should see, not something to swallow.
        """
        event = call_event(payload)
        if event is not None and event[0] == "connect" and self.options.out_of_order:
            logger.info("webhook: holding connect for %s until its terminate", event[1])
            self._held[event[1]] = payload
            return None
        response = await self._post(payload)
        if event is not None and event[0] == "terminate" and (held := self._held.pop(event[1], None)):
            await self._post(held)
        return response

    async def release_held(self) -> None:
        """Deliver every held connect now, oldest first: a connect that arrives late with no terminate."""
        while self._held:
            call_id = next(iter(self._held))
            await self._post(self._held.pop(call_id))

    async def _post(self, payload: dict[str, Any]) -> httpx.Response:
        if self.options.stale_by_s:
            payload = make_stale(payload, self.options.stale_by_s)
        body = serialise(payload)
        signature = self._signature_for(body)
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        attempts = 2 if self.options.duplicate else 1
        response: httpx.Response | None = None
        for _ in range(attempts):
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.deliveries.append(WebhookDelivery(payload, body, signature, None, repr(exc)))
                logger.warning("webhook delivery to %s failed: %r", self.url, exc)
                raise
            self.deliveries.append(WebhookDelivery(payload, body, signature, response.status_code))
            if response.status_code != 200:
                logger.info("webhook delivery to %s got HTTP %s", self.url, response.status_code)
        assert response is not None
        return response

    async def aclose(self) -> None:
        """Close the client; held connects are dropped, as a retry abandoned by Meta would be."""
        self._held.clear()
        await self._client.aclose()
