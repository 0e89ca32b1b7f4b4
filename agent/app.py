"""HTTP routes: Meta's webhook, health. Handlers only check, parse and hand over to the runtime."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.runtime import Runtime
from agent.whatsapp.webhooks import (
    PayloadError,
    SignatureError,
    parse_webhook,
    verify_signature,
    verify_subscription,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


def create_app(runtime: Runtime) -> Starlette:
    settings = runtime.settings

    async def verify(request: Request) -> Response:
        challenge = verify_subscription(request.query_params, settings.verify_token)
        if challenge is None:
            log.warning("webhook verification refused (wrong mode or verify token)")
            return PlainTextResponse("verification failed", status_code=403)
        return PlainTextResponse(challenge)

    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return PlainTextResponse("payload too large", status_code=413)
        try:
            verify_signature(body, request.headers.get("x-hub-signature-256"), settings.app_secret)
        except SignatureError as exc:
            log.warning("webhook refused: %s", exc)
            return PlainTextResponse(f"invalid signature: {exc}", status_code=401)
        try:
            payload = parse_webhook(body)
        except PayloadError as exc:
            log.warning("malformed webhook refused: %s; body starts %r", exc, body[:300])
            return PlainTextResponse(f"malformed payload: {exc}", status_code=400)
        runtime.dispatch(payload)
        return PlainTextResponse("OK")

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "live_calls": len(runtime.calls), "flow": runtime.flow.name},
        )

    return Starlette(
        routes=[
            Route("/webhook", verify, methods=["GET"]),
            Route("/webhook", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
