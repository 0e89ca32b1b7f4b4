"""HTTP routes: Meta's webhook, the calls API, health. Handlers only check, parse and hand over."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from agent.call import CallEnded
from agent.dialogue.flow import Flow, FlowError, parse_flow
from agent.handover.shared import ACCEPT_PATH as HANDOVER_ACCEPT_PATH
from agent.handover.shared import SIGNATURE_HEADER as HANDOVER_SIGNATURE_HEADER
from agent.openapi import openapi_document
from agent.runtime import Runtime
from agent.whatsapp.graph import GraphError
from agent.whatsapp.payloads import MAX_PAYLOAD_CHARS
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
MAX_FLOW_BYTES = 1 << 20  # the largest shipped flow is ~20 kB
MAX_LIST_LIMIT = 500
MAX_BUTTON_PAYLOAD = 512  # spec §6.1: the payload comes back as the call's cta_payload
MAX_BUTTON_TEXT = 1024  # the message body above the button
_FLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class BodyError(Exception):
    """A request body refused before or while it is read; `status` is the 4xx to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int) -> bytes:
    """The body, but never more than `limit` bytes of it in memory.

    `request.body()` buffers everything before anyone can look at the size, so an unauthenticated 200 MB
    chunked POST would be held whole; here a declared length over the limit is refused before reading, and
    a chunked body is refused as soon as it passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BodyError(400, "invalid Content-Length")
        if int(declared) > limit:
            raise BodyError(413, f"request body too large (limit {limit} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyError(413, f"request body too large (limit {limit} bytes)")
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: Request, limit: int, *, empty_ok: bool = False) -> dict[str, Any]:
    """A bounded body parsed as a JSON object; any other input is a `BodyError` (never a 500).

    Deep nesting raises RecursionError inside `json`, and NaN/Infinity would later fail to serialise in a
    response, so both are refused here with the rest of the bad input.
    """
    raw = await read_body(request, limit)
    if empty_ok and not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BodyError(400, "body must be JSON (nested too deeply)") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, too many digits, NaN
        raise BodyError(400, "body must be JSON") from None
    if not isinstance(data, dict):
        raise BodyError(400, "body must be a JSON object")
    return data


def _parse_limit(value: str | None) -> int:
    """`?limit=` for listings: a positive whole number; larger than the cap is served as the cap."""
    if value is None or value == "":
        return 20
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise BodyError(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    return min(int(text), MAX_LIST_LIMIT)


MAX_OFFSET = 1_000_000_000
MAX_FILTER_CHARS = 200
MAX_DETAIL_EVENTS = 2000
DIRECTIONS = ("USER_INITIATED", "BUSINESS_INITIATED")
#: Filters matched exactly against a column; values are bound parameters, so only their length is limited.
_TEXT_FILTERS = ("outcome", "flow", "handled_by")


def _parse_offset(value: str | None) -> int:
    if value is None or value == "":
        return 0
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_OFFSET:
        raise BodyError(400, f"offset must be a whole number from 0 to {MAX_OFFSET}")
    return int(text)


def _parse_when(name: str, value: str) -> datetime:
    """An ISO 8601 date or datetime as an aware UTC datetime; naive means UTC.

    A bare date for `until` means the end of that day, so `since=D&until=D` is the whole of day D. Converting to
    UTC here (not in the store) turns an out-of-range offset at year 1 or 9999 into a 400 rather than a 500.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return when + timedelta(days=1) if name == "until" else when
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BodyError(
            400, f"{name} must be an ISO 8601 date (2026-01-31) or datetime (2026-01-31T09:00:00Z)"
        ) from None


def parse_call_filters(query: Mapping[str, str]) -> dict[str, Any]:
    """`GET /v1/calls` query parameters as `Store.find_calls` keywords; any bad value is a 400 `BodyError`."""
    filters: dict[str, Any] = {
        "limit": _parse_limit(query.get("limit")),
        "offset": _parse_offset(query.get("offset")),
    }
    direction = query.get("direction")
    if direction is not None:
        if direction not in DIRECTIONS:
            raise BodyError(400, f"direction must be one of {', '.join(DIRECTIONS)}")
        filters["direction"] = direction
    number = query.get("number")
    if number is not None:
        digits = number.strip().lstrip("+").replace(" ", "")
        if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 15:
            raise BodyError(400, "number must be a phone number in international format (digits, optional +)")
        filters["number"] = digits
    for name in _TEXT_FILTERS:
        value = query.get(name)
        if value is not None:
            if not value or len(value) > MAX_FILTER_CHARS:
                raise BodyError(400, f"{name} must be 1 to {MAX_FILTER_CHARS} characters")
            filters[name] = value
    payload = query.get("payload")
    if payload is not None:
        if not 1 <= len(payload) <= MAX_PAYLOAD_CHARS:
            raise BodyError(400, f"payload must be 1 to {MAX_PAYLOAD_CHARS} characters")
        filters["payload"] = payload
    filters.update(parse_period(query))
    return filters


def parse_period(query: Mapping[str, str]) -> dict[str, datetime]:
    """`since`/`until` query parameters, shared by the calls listing and the campaign counts."""
    period: dict[str, datetime] = {}
    for name in ("since", "until"):
        value = query.get(name)
        if value is not None:
            period[name] = _parse_when(name, value)
    if "since" in period and "until" in period and period["since"] > period["until"]:
        raise BodyError(400, "since must not be after until")
    return period


def flows_dir(settings_flow: str) -> Path:
    """The folder API callers may pick flows from: the one the configured flow lives in."""
    return Path(settings_flow).resolve().parent


def available_flows(folder: Path) -> list[str]:
    try:
        files = sorted(folder.glob("*.yaml"))
    except OSError:
        return []
    return [f.stem for f in files if not f.name.endswith(".test.yaml") and _FLOW_NAME.match(f.stem)]


def _read_named_flow(folder: Path, name: str) -> Flow:
    """Runs in a worker thread: stat, open and parse may block (a FIFO, a slow disk) and must not stall
    the event loop. Only a regular file directly inside `folder` is read, and at most MAX_FLOW_BYTES."""
    path = (folder / f"{name}.yaml").resolve()
    if path.parent != folder:
        raise FlowError(f"{path} is outside {folder}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise FlowError(f"{path} is not a regular file")
        raw = f.read(MAX_FLOW_BYTES + 1)
    if len(raw) > MAX_FLOW_BYTES:
        raise FlowError(f"{path} is larger than {MAX_FLOW_BYTES} bytes")
    return parse_flow(raw.decode("utf-8-sig"), source=f"{name}.yaml")


async def load_named_flow(folder: Path, requested: Any) -> Flow:
    """A flow picked by NAME from `folder` for one API call.

    The API used to take any server path and echo a parse error, which leaked other files' contents and
    let a FIFO block the loop. Errors now only name the flow and the flows there are; details go to the log.
    """
    choices = ", ".join(available_flows(folder)) or "none"
    name = requested.removesuffix(".yaml") if isinstance(requested, str) else ""
    if not _FLOW_NAME.match(name):
        shown = requested[:200] if isinstance(requested, str) else type(requested).__name__
        log.warning("calls API: refused flow %r (not a flow name)", shown)
        raise BodyError(400, f"flow must be the name of a flow (no path); available flows: {choices}")
    try:
        return await asyncio.to_thread(_read_named_flow, folder, name)
    except FileNotFoundError:
        log.warning("calls API: unknown flow %r (looked in %s)", name, folder)
        raise BodyError(400, f"unknown flow {name!r}; available flows: {choices}") from None
    except Exception as exc:  # FlowError, OSError, bad UTF-8, a symlink loop: the operator reads which
        log.warning("calls API: flow %r (in %s) cannot be used: %s", name, folder, exc)
        raise BodyError(400, f"flow {name!r} cannot be loaded (see the server log); available: {choices}") from None


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


def _forwarded_accept(handover: Any) -> Any:
    """`POST /internal/handover/accept`: signed by another worker with the key derived from the app secret."""
    from agent.handover.service import ActionError

    async def accept(request: Request) -> Response:
        limit = 256 * 1024  # an SDP offer is a few kB
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > limit:
            return JSONResponse({"error": "a forwarded accept has a length, of at most 256 kB"}, status_code=413)
        body = await request.body()
        if len(body) > limit:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            answer = await handover.accept_forwarded(body, request.headers.get(HANDOVER_SIGNATURE_HEADER, ""))
        except ActionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse({"sdp": answer})

    return accept


async def _console_off(request: Request) -> Response:
    """404 either way, but saying why and which config key turns the console on."""
    if request.url.path.startswith("/console/api/"):
        return JSONResponse({"error": CONSOLE_OFF}, status_code=404, headers=_CONSOLE_OFF_HEADERS)
    return HTMLResponse(CONSOLE_OFF_PAGE, status_code=404, headers=_CONSOLE_OFF_HEADERS)


def bearer_matches(request: Request, expected: str) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    return hmac.compare_digest(token.encode(), expected.encode())


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
        "payload": record.payload,  # the call button's or deep link's payload (a campaign), if any
        "payload_source": record.payload_source,
        "handover": None
        if record.handover_queue is None
        else {
            "queue": record.handover_queue,
            "queue_wait_s": record.queue_wait_s,
            "talk_s": record.talk_s,
            "outcome": record.handover_outcome,
        },
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _without_sdp(value: Any) -> Any:
    """A stored payload with SDP bodies replaced by their size: SDP holds ICE credentials and network addresses
    that an API reader has no use for, and it is most of the bytes of a connect webhook."""
    if isinstance(value, Mapping):
        return {
            k: f"[sdp omitted, {len(v)} characters]" if k == "sdp" and isinstance(v, str) else _without_sdp(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_sdp(v) for v in value]
    return value


DOWNLOAD_CHUNK = 1 << 16


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """`size` bytes of a file, read in a worker thread chunk by chunk: never the whole file in memory, never a
    disk read on the loop. asyncio's default executor rather than Starlette's FileResponse (AnyIO's own thread
    pool), so the process keeps to the thread pools it already has."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        remaining = size
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(DOWNLOAD_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def _recording_json(call_id: str, recording: Any, live: bool) -> dict[str, Any] | None:
    """Whether the call has a recording and what it is; the file's place on the server is not the API's business."""
    if recording is None:
        return None
    return {
        "started_at": _iso(recording.started_at),
        "ended_at": _iso(recording.ended_at),
        "duration_s": recording.duration_s,
        "bytes": recording.bytes,
        "in_progress": live,
        "download": f"/v1/calls/{call_id}/recording",
    }


def _detail_json(record: Any, events: list[Any], recording: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call's record with its events, transcript, slots and per-turn latency.

    Turn timings are stored as events of kind "turn" (`Ledger.record_turn`), so they are lifted out of the event
    list into `turns` rather than shown twice. Transcript entries are returned as stored: `who`, `text` and `at_s`
    (seconds from the call's start; records written before `at_s` existed lack it).
    """
    shown = [e for e in events if e.event != "turn"]
    turns = [
        {"n": n, "at": _iso(e.at), **(dict(e.payload) if isinstance(e.payload, Mapping) else {})}
        for n, e in enumerate((e for e in events if e.event == "turn"), 1)
    ]
    return {
        **_record_json(record),
        "flow": record.flow,
        "answered_at": _iso(record.answered_at),
        "ended_at": _iso(record.ended_at),
        "slots": record.slots if isinstance(record.slots, dict) else {},
        "transcript": [t for t in record.transcript if isinstance(t, dict)],
        "turns": turns,
        "events": [
            {
                "seq": e.seq,
                "event": e.event,
                "at": _iso(e.at),
                "received_at": _iso(e.received_at),
                "payload": _without_sdp(e.payload) if isinstance(e.payload, Mapping) else None,
            }
            for e in shown[:MAX_DETAIL_EVENTS]
        ],
        "events_truncated": len(shown) > MAX_DETAIL_EVENTS,
        "recording": recording,
    }


METRICS_OFF = (
    "metrics (/metrics) are off: set WACALL_METRICS_TOKEN and scrape with it as a bearer token, "
    "or WACALL_METRICS_LISTEN for a listener of their own on an internal address"
)


def create_app(runtime: Runtime) -> Starlette:
    settings = runtime.settings
    # A stand-in runtime (tests) may have none: then there is no /metrics and webhooks are not timed.
    metrics = getattr(runtime, "metrics", None)
    recordings = getattr(runtime, "recordings", None)  # a stand-in runtime may have none: no recordings then

    async def verify(request: Request) -> Response:
        challenge = verify_subscription(request.query_params, settings.verify_token.get_secret_value())
        if challenge is None:
            log.warning("webhook verification refused (wrong mode or verify token)")
            return PlainTextResponse("verification failed", status_code=403)
        return PlainTextResponse(challenge)

    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await _receive(request)
        finally:
            if metrics is not None:
                metrics.webhook_acknowledged(time.perf_counter() - started)

    async def _receive(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyError as exc:
            log.warning("webhook refused: %s", exc)
            return PlainTextResponse("payload too large" if exc.status == 413 else str(exc), status_code=exc.status)
        try:
            verify_signature(body, request.headers.get("x-hub-signature-256"), settings.app_secret.get_secret_value())
        except SignatureError as exc:
            log.warning("webhook refused: %s", exc)
            return PlainTextResponse(f"invalid signature: {exc}", status_code=401)
        try:
            payload = parse_webhook(body)
        except PayloadError as exc:
            log.warning("malformed webhook refused (%d bytes): %s", len(body), exc)
            log.debug("malformed webhook body starts %r", body[:300])  # callers' names and numbers: DEBUG only
            return PlainTextResponse(f"malformed payload: {exc}", status_code=400)
        try:
            await runtime.accept_webhook(payload)  # commits on the store's writer thread
        except Exception:
            # Not stored means not acknowledged: Meta retries, nothing is lost.
            log.exception("could not store the webhook; answering 500 so Meta retries")
            return PlainTextResponse("temporarily unable to store the event", status_code=500)
        return PlainTextResponse("OK")

    async def healthz(request: Request) -> Response:
        health = runtime.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    async def metrics_page(request: Request) -> Response:
        """Prometheus text format behind its own bearer token: numbers of calls and queues are business data,
        and the token differs from the calls API's so a scraper's credential cannot place calls."""
        token = getattr(settings, "metrics_token", "")
        token = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        if not token:
            return PlainTextResponse(METRICS_OFF + "\n", status_code=404)
        if not bearer_matches(request, token):
            return PlainTextResponse(
                "missing or wrong bearer token (WACALL_METRICS_TOKEN)\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="wacall metrics"'},
            )
        assert metrics is not None
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    def authorised(request: Request) -> Response | None:
        if not settings.api_token.get_secret_value():
            return JSONResponse({"error": "the calls API is off: set WACALL_API_TOKEN"}, status_code=403)
        if not bearer_matches(request, settings.api_token.get_secret_value()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return None

    async def _json(request: Request) -> dict[str, Any] | Response:
        try:
            return await read_json_object(request, MAX_BODY_BYTES)
        except BodyError as exc:
            log.warning("calls API: %s %s refused: %s", request.method, request.url.path, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    def _to(data: dict[str, Any]) -> str | Response:
        raw = data.get("to", "")
        to = str(raw).lstrip("+").replace(" ", "") if isinstance(raw, str | int) else ""
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
                flow = await load_named_flow(flows_dir(settings.flow), data["flow"])
            except BodyError as exc:
                return JSONResponse({"error": f"flow: {exc}"}, status_code=exc.status)
        try:
            call = await runtime.place_call(to, flow=flow)
        except (Refused, GraphError) as exc:
            return _refused(exc, "call")
        except CallEnded as exc:  # shutting down while Meta was placing it: cancelled, not half-placed
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse({"id": call.id, "ref": call.ref, "to": to, "state": str(call.state)}, status_code=202)

    async def list_calls(request: Request) -> Response:
        denied = authorised(request)
        if denied:
            return denied
        try:
            filters = parse_call_filters(request.query_params)
        except BodyError as exc:
            log.warning("calls API: GET /v1/calls refused: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        # Off the loop: a read first waits (briefly) for queued writes, and calls' audio must not wait with it.
        store = runtime.store
        if filters.keys() == {"limit", "offset"} and filters["offset"] == 0:
            # The same query as `wacall calls`; a store without `find_calls` still serves the plain listing.
            records = await asyncio.to_thread(store.recent_calls, filters["limit"])
        else:
            records = await asyncio.to_thread(lambda: store.find_calls(**filters))
        full_page = len(records) == filters["limit"] and filters["offset"] + filters["limit"] <= MAX_OFFSET
        return JSONResponse(
            {
                "calls": [_record_json(r) for r in records],
                "next_offset": filters["offset"] + filters["limit"] if full_page else None,
            }
        )

    async def campaigns(request: Request) -> Response:
        """Calls per payload: how many each call button or deep link brought, answered and handed over."""
        denied = authorised(request)
        if denied:
            return denied
        try:
            period = parse_period(request.query_params)
        except BodyError as exc:
            log.warning("calls API: GET /v1/calls/campaigns refused: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        counts = await asyncio.to_thread(lambda: runtime.store.campaign_counts(**period))
        return JSONResponse({"campaigns": [dataclasses.asdict(c) for c in counts]})

    async def call_detail(request: Request) -> Response:
        denied = authorised(request)
        if denied:
            return denied
        call_id = request.path_params["call_id"]
        not_found = JSONResponse({"error": "no such call"}, status_code=404)
        if not 1 <= len(call_id) <= MAX_FILTER_CHARS:
            return not_found

        def read() -> tuple[Any, list[Any], Any]:
            record = runtime.store.get_call(call_id)
            if record is None:
                return None, [], None
            recording = recordings.store.get_recording(call_id) if recordings is not None else None
            return record, runtime.store.list_events(call_id), recording

        record, events, recording = await asyncio.to_thread(read)
        if record is None:
            return not_found
        live = recordings is not None and recordings.is_live(call_id)
        return JSONResponse(_detail_json(record, events, _recording_json(call_id, recording, live)))

    async def _recording_request(request: Request) -> tuple[str, Any] | Response:
        """Bearer check and the call's recording reference (404 when there is none)."""
        denied = authorised(request)
        if denied:
            return denied
        call_id = request.path_params["call_id"]
        if recordings is None or not 1 <= len(call_id) <= MAX_FILTER_CHARS:
            return JSONResponse({"error": "this call has no recording"}, status_code=404)
        if recordings.is_live(call_id):
            return JSONResponse({"error": "the call is still being recorded; try again when it has ended"}, 409)
        recording = await recordings.find(call_id)
        if recording is None:
            return JSONResponse({"error": "this call has no recording"}, status_code=404)
        return call_id, recording

    async def download_recording(request: Request) -> Response:
        found = await _recording_request(request)
        if isinstance(found, Response):
            return found
        call_id, recording = found
        path = Path(recording.path)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError:
            log.warning("call %s: the recording's file %s is missing", call_id, path.name)
            return JSONResponse({"error": "the recording's file is missing on the server"}, status_code=404)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:100] + ".ogg"
        return StreamingResponse(
            _file_chunks(path, size),
            media_type="audio/ogg",
            headers={
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def delete_recording(request: Request) -> Response:
        found = await _recording_request(request)
        if isinstance(found, Response):
            return found
        call_id, _ = found
        assert recordings is not None
        try:
            deleted = await recordings.delete(call_id)
        except ValueError as exc:  # recording started again in between: refuse, as above
            return JSONResponse({"error": str(exc)}, status_code=409)
        if not deleted:
            return JSONResponse({"error": "this call has no recording"}, status_code=404)
        log.info("call %s: recording deleted through the API", call_id)
        return Response(status_code=204)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def analytics(request: Request) -> Response:
        """The figures of `wacall report` (agent/analytics.py), computed off the loop like every records read."""
        denied = authorised(request)
        if denied:
            return denied
        from agent.analytics import compute_report, parse_period

        store = getattr(runtime, "store", None)
        if not hasattr(store, "call_facts"):
            return JSONResponse({"error": "no call records to report on"}, status_code=404)
        try:
            period = parse_period(request.query_params, today=datetime.now(UTC).date())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        card = getattr(getattr(runtime, "ledger", None), "rate_card", None)
        report = await asyncio.to_thread(compute_report, store, period, card=card)
        return JSONResponse(report.as_dict())

    async def request_permission(request: Request) -> Response:
        parsed = await _api_request(request)
        if isinstance(parsed, Response):
            return parsed
        data, to = parsed
        if not isinstance(data.get("text"), str | None):
            return JSONResponse({"error": "`text` must be a string"}, status_code=400)
        try:
            message_id = await runtime.request_permission(to, data.get("text"))
        except (Refused, GraphError) as exc:
            return _refused(exc, "request")
        return JSONResponse({"message_id": message_id, "to": to}, status_code=202)

    async def call_button(request: Request) -> Response:
        parsed = await _api_request(request)
        if isinstance(parsed, Response):
            return parsed
        data, to = parsed
        payload, text = data.get("payload"), data.get("text")
        if not isinstance(payload, str | None) or len(payload or "") > MAX_BUTTON_PAYLOAD:
            return JSONResponse(
                {"error": f"`payload` must be a string of at most {MAX_BUTTON_PAYLOAD} characters"}, 400
            )
        if not isinstance(text, str | None) or text == "" or len(text or "") > MAX_BUTTON_TEXT:
            return JSONResponse({"error": f"`text` must be a string of 1 to {MAX_BUTTON_TEXT} characters"}, 400)
        try:
            message_id, kind = await runtime.send_call_button(to, payload=payload, text=text)
        except (Refused, GraphError) as exc:
            return _refused(exc, "call button")
        return JSONResponse({"message_id": message_id, "to": to, "kind": kind}, status_code=202)

    routes: list[BaseRoute] = [
        Route("/webhook", verify, methods=["GET"]),
        Route("/webhook", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/calls", place_call, methods=["POST"]),
        Route("/v1/calls", list_calls, methods=["GET"]),
        Route("/v1/calls/campaigns", campaigns, methods=["GET"]),  # before {call_id}, which would match it
        Route("/v1/calls/{call_id}", call_detail, methods=["GET"]),
        Route("/v1/calls/{call_id}/recording", download_recording, methods=["GET"]),
        Route("/v1/calls/{call_id}/recording", delete_recording, methods=["DELETE"]),
        Route("/v1/call-permissions", request_permission, methods=["POST"]),
        Route("/v1/analytics", analytics, methods=["GET"]),
        Route("/v1/call-buttons", call_button, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    # With a listener of its own (`metrics_listen`, agent/metrics_server.py) the public app has no /metrics.
    public_metrics = metrics is not None and not getattr(settings, "metrics_listen", None)
    if public_metrics:
        routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    # Built once from the same condition as the routes, so the document never lists a route this app lacks.
    document = openapi_document(metrics=public_metrics)
    handover = getattr(runtime, "handover", None)
    if handover is not None:
        # The agent console (agent/handover/console.py): only when the config has handover queues.
        from agent.handover.console import Console

        # Its analytics page reads the call records (a stand-in runtime in tests may have none to read).
        store = getattr(runtime, "store", None)
        facts = store if hasattr(store, "call_facts") else None
        rate_card = getattr(getattr(runtime, "ledger", None), "rate_card", None)
        console = Console(handover, settings.handover, store=facts, rate_card=rate_card)
        routes.append(Mount("/console", routes=console.routes))
        if getattr(handover, "shared", False):
            # Several workers: an agent on another worker accepting a call this one holds (agent/handover/shared.py).
            routes.append(Route(HANDOVER_ACCEPT_PATH, _forwarded_accept(handover), methods=["POST"]))
    else:
        log.info(CONSOLE_OFF)
        routes += [Route("/console", _console_off), Route("/console/{rest:path}", _console_off)]
    return Starlette(routes=routes)
