"""HTTP routes: Meta's webhook, the calls API, health. Handlers only check, parse and hand over."""

from __future__ import annotations

import hmac
import inspect
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from agent.dialogue.flow import FlowError, load_flow
from agent.runtime import Runtime
from agent.whatsapp.graph import GraphError
from agent.whatsapp.rules import Refused
from agent.whatsapp.webhooks import (
    PayloadError,
    SignatureError,
    parse_webhook,
    verify_signature,
    verify_subscription,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20

CONSOLE_OFF = (
    "agent console (/console) is off: the config has no handover queues; add a `handover:` section with "
    "`queues:` and `agents:` to the config file (--config or WACALL_CONFIG) to turn it on"
)
CONSOLE_OFF_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wacall: the agent console is off</title></head>
<body>
<h1>The agent console is off</h1>
<p>This wacall has no handover queues configured, so no caller is ever handed over to a person and there is
no console to sign in to.</p>
<p>To turn it on, add a <code>handover:</code> section with <code>queues:</code> and <code>agents:</code> to
the config file (<code>wacall serve --config FILE</code>, or the file named by <code>WACALL_CONFIG</code>)
and restart wacall. Each agent then signs in with the token in the environment variable
<code>WACALL_AGENT_TOKEN_&lt;ID&gt;</code>. The README's section "Handover to people" has an example.</p>
</body></html>
"""
_CONSOLE_OFF_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


async def _console_off(request: Request) -> Response:
    """404 either way, but saying why and which config key turns the console on."""
    if request.url.path.startswith("/console/api/"):
        return JSONResponse({"error": CONSOLE_OFF}, status_code=404, headers=_CONSOLE_OFF_HEADERS)
    return HTMLResponse(CONSOLE_OFF_PAGE, status_code=404, headers=_CONSOLE_OFF_HEADERS)


def _record_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "direction": record.direction,
        "from": record.from_number,
        "to": record.to_number,
        "state": record.state,
        "outcome": record.outcome,
        "end_reason": record.end_reason,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "duration_s": record.duration_s,
        "cost": str(record.cost) if record.cost is not None else None,
        "currency": record.currency,
        "handled_by": record.handled_by,
        "simulated": record.simulated,  # placed by `wacall simulate`, which may share the data dir
        "handover": None
        if record.handover_queue is None
        else {
            "queue": record.handover_queue,
            "queue_wait_s": record.queue_wait_s,
            "talk_s": record.talk_s,
            "outcome": record.handover_outcome,
        },
    }


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
        try:
            accepted = runtime.accept_webhook(payload)  # commits on the store's writer thread
            if inspect.isawaitable(accepted):  # a stand-in runtime (tests) may still be synchronous
                await accepted
        except Exception:
            # Not stored means not acknowledged: Meta retries, nothing is lost.
            log.exception("could not store the webhook; answering 500 so Meta retries")
            return PlainTextResponse("temporarily unable to store the event", status_code=500)
        return PlainTextResponse("OK")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "live_calls": len(runtime.calls), "flow": runtime.flow.name})

    def authorised(request: Request) -> Response | None:
        if not settings.api_token:
            return JSONResponse({"error": "the calls API is off: set WACALL_API_TOKEN"}, status_code=403)
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.api_token.encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return None

    async def _json(request: Request) -> dict[str, Any] | Response:
        try:
            data = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        return data

    def _to(data: dict[str, Any]) -> str | Response:
        to = str(data.get("to", "")).lstrip("+").replace(" ", "")
        if not to.isdigit() or not 6 <= len(to) <= 15:
            return JSONResponse({"error": "`to` must be a phone number in international format"}, status_code=400)
        return to

    async def _api_request(request: Request) -> tuple[dict[str, Any], str] | Response:
        """Bearer check, JSON body, and a `to` number: what every calls-API POST starts with."""
        denied = authorised(request)
        if denied:
            return denied
        data = await _json(request)
        if isinstance(data, Response):
            return data
        to = _to(data)
        if isinstance(to, Response):
            return to
        return data, to

    def _refused(exc: Refused | GraphError, what: str) -> Response:
        if isinstance(exc, Refused):
            return JSONResponse({"error": "refused", **exc.refusal.as_dict()}, status_code=409)
        return JSONResponse({"error": f"Meta refused the {what}", "code": exc.code, "detail": str(exc)}, 502)

    async def place_call(request: Request) -> Response:
        parsed = await _api_request(request)
        if isinstance(parsed, Response):
            return parsed
        data, to = parsed
        flow = None
        if data.get("flow"):
            try:
                flow = load_flow(str(data["flow"]))
            except (FlowError, OSError) as exc:
                return JSONResponse({"error": f"flow: {exc}"}, status_code=400)
        try:
            call = await runtime.place_call(to, flow=flow)
        except (Refused, GraphError) as exc:
            return _refused(exc, "call")
        return JSONResponse({"id": call.id, "ref": call.ref, "to": to, "state": str(call.state)}, status_code=202)

    async def list_calls(request: Request) -> Response:
        denied = authorised(request)
        if denied:
            return denied
        limit = min(int(request.query_params.get("limit", "20") or 20), 500)
        return JSONResponse({"calls": [_record_json(r) for r in runtime.store.recent_calls(limit)]})

    async def request_permission(request: Request) -> Response:
        parsed = await _api_request(request)
        if isinstance(parsed, Response):
            return parsed
        data, to = parsed
        try:
            message_id = await runtime.request_permission(to, data.get("text"))
        except (Refused, GraphError) as exc:
            return _refused(exc, "request")
        return JSONResponse({"message_id": message_id, "to": to}, status_code=202)

    routes: list[BaseRoute] = [
        Route("/webhook", verify, methods=["GET"]),
        Route("/webhook", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/calls", place_call, methods=["POST"]),
        Route("/v1/calls", list_calls, methods=["GET"]),
        Route("/v1/call-permissions", request_permission, methods=["POST"]),
    ]
    handover = getattr(runtime, "handover", None)
    if handover is not None:
        # The agent console (agent/handover/console.py): only when the config has handover queues.
        from agent.handover.console import Console

        routes.append(Mount("/console", routes=Console(handover, settings.handover).routes))
    else:
        log.info(CONSOLE_OFF)
        routes += [Route("/console", _console_off), Route("/console/{rest:path}", _console_off)]
    return Starlette(routes=routes)
