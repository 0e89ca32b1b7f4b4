"""Meta's webhook delivery: serialise, sign and POST event payloads to the business server.

The server's signature check is only meaningful if the bytes we sign are the bytes we send, so
payloads are serialised exactly once (spec §1.2, simulator rule 1). Fault modes exist so the
server's rejection and de-duplication paths can be exercised (spec §1, simulator rules 2-3).
"""

from __future__ import annotations

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
    duplicate: bool = False  # deliver every webhook twice
    title_case_status: bool = False  # "Completed" instead of "COMPLETED"


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

    async def send(self, payload: dict[str, Any]) -> httpx.Response:
        """POST `payload` (twice in duplicate mode, as Meta's retry would) and return the last response.

        Transport errors are recorded and re-raised: a server that cannot be reached is a test
        failure the caller should see, not something to swallow.
        """
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
        await self._client.aclose()
