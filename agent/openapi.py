"""The OpenAPI document served at `/openapi.json`, written by hand as data.

Hand-written rather than generated from the handlers because the handlers parse their own input (bounded
bodies, strict query values) and no framework sees their shapes. tests/test_openapi.py holds the document to
the app's routes in both directions, and tests/test_openapi_schemathesis.py holds the responses to these
schemas, so a route or field added without its entry here fails a test.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]

_NULLABLE_STRING: dict[str, Any] = {"type": "string", "nullable": True}
_NULLABLE_NUMBER: dict[str, Any] = {"type": "number", "nullable": True}

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": True,
}

_HANDOVER: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "required": ["queue", "queue_wait_s", "talk_s", "outcome"],
    "properties": {
        "queue": {"type": "string"},
        "queue_wait_s": _NULLABLE_NUMBER,
        "talk_s": _NULLABLE_NUMBER,
        "outcome": _NULLABLE_STRING,
    },
}

_CALL_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "direction": {"type": "string"},
    "from": _NULLABLE_STRING,
    "to": _NULLABLE_STRING,
    "state": {"type": "string"},
    "outcome": _NULLABLE_STRING,
    "end_reason": _NULLABLE_STRING,
    "created_at": {**_NULLABLE_STRING, "format": "date-time"},
    "duration_s": _NULLABLE_NUMBER,
    "cost": {**_NULLABLE_STRING, "description": "decimal amount as text, so no precision is lost"},
    "currency": {"type": "string"},
    "handled_by": {**_NULLABLE_STRING, "description": "the human agent who last talked to the caller"},
    "simulated": {"type": "boolean", "description": "placed by `wacall simulate`"},
    "handover": _HANDOVER,
    "payload": {**_NULLABLE_STRING, "description": "the call button's or deep link's payload the caller came from"},
    "payload_source": {**_NULLABLE_STRING, "description": "where the payload came from: button or link"},
}

_CALL: dict[str, Any] = {
    "type": "object",
    "required": list(_CALL_PROPERTIES),
    "properties": _CALL_PROPERTIES,
}

_CAMPAIGN: dict[str, Any] = {
    "type": "object",
    "required": ["payload", "source", "calls", "answered", "handed_over"],
    "properties": {
        "payload": {"type": "string"},
        "source": {**_NULLABLE_STRING, "description": "button or link (the most common, if both)"},
        "calls": {"type": "integer", "minimum": 1},
        "answered": {"type": "integer", "minimum": 0},
        "handed_over": {"type": "integer", "minimum": 0},
    },
}

_TURN: dict[str, Any] = {
    "type": "object",
    "description": "one exchange's stage timings, in ms from the end of the caller's speech",
    "required": ["n", "at"],
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        "at": {"type": "string", "format": "date-time"},
        "transcript": {"type": "string"},
        "reply": {"type": "string"},
        "interrupted": {"type": "boolean"},
        "speculative_stt": {"type": "boolean"},
        "continued": {"type": "boolean"},
        "transcript_ready_ms": _NULLABLE_NUMBER,
        "reply_text_ready_ms": _NULLABLE_NUMBER,
        "first_audio_synthesized_ms": _NULLABLE_NUMBER,
        "first_audio_sent_ms": _NULLABLE_NUMBER,
    },
}

_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["seq", "event", "at", "received_at", "payload"],
    "properties": {
        "seq": {"type": "integer", "nullable": True},
        "event": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "received_at": {**_NULLABLE_STRING, "format": "date-time"},
        "payload": {
            "type": "object",
            "nullable": True,
            "description": "the stored webhook payload, with SDP bodies replaced by their size",
        },
    },
}

_RECORDING: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "description": "the call's recording (stereo Ogg/Opus: caller left, bot or agent right); null: none",
    "required": ["started_at", "ended_at", "duration_s", "bytes", "in_progress", "download"],
    "properties": {
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {**_NULLABLE_STRING, "format": "date-time"},
        "duration_s": _NULLABLE_NUMBER,
        "bytes": {"type": "integer", "nullable": True},
        "in_progress": {"type": "boolean", "description": "the call is still being recorded"},
        "download": {"type": "string", "description": "the path to GET the file from"},
    },
}

_CALL_DETAIL: dict[str, Any] = {
    "type": "object",
    "required": [
        *_CALL_PROPERTIES,
        "flow",
        "answered_at",
        "ended_at",
        "slots",
        "transcript",
        "turns",
        "events",
        "events_truncated",
        "recording",
    ],
    "properties": {
        **_CALL_PROPERTIES,
        "flow": _NULLABLE_STRING,
        "answered_at": {**_NULLABLE_STRING, "format": "date-time"},
        "ended_at": {**_NULLABLE_STRING, "format": "date-time"},
        "slots": {"type": "object", "additionalProperties": True},
        "transcript": {
            "type": "array",
            "description": "both sides in order; `who` is caller, bot or the human agent; older records lack `at_s`",
            "items": {
                "type": "object",
                "properties": {
                    "who": {"type": "string"},
                    "text": {"type": "string"},
                    "at_s": {"type": "number", "description": "seconds from the call's start"},
                },
            },
        },
        "turns": {"type": "array", "items": _TURN},
        "events": {"type": "array", "items": _EVENT},
        "events_truncated": {"type": "boolean"},
        "recording": _RECORDING,
    },
}

_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "bad input (the message names the parameter)",
        401: "missing or wrong bearer token",
        403: "the calls API is off (WACALL_API_TOKEN unset)",
        404: "not found",
        409: "refused by WhatsApp's calling rules, or shutting down",
        413: "request body too large",
        502: "Meta's Graph API refused the request",
    }
    return {str(code): _json(_ERROR, meaning[code]) for code in codes}


def _string_query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_LIST_PARAMETERS: list[dict[str, Any]] = [
    _string_query("direction", "who placed the call", enum=["USER_INITIATED", "BUSINESS_INITIATED"]),
    _string_query("number", "a phone number matching either side (digits, optional +)", pattern=r"^\+?[0-9]{1,15}$"),
    _string_query("outcome", "the call's outcome, exactly", minLength=1, maxLength=200),
    _string_query("flow", "the flow's name, exactly", minLength=1, maxLength=200),
    _string_query("handled_by", "the human agent's id, exactly", minLength=1, maxLength=200),
    _string_query("payload", "the call button's or deep link's payload, exactly", minLength=1, maxLength=512),
    _string_query("since", "created at or after: ISO 8601 date or datetime (naive means UTC)", format="date-time"),
    _string_query("until", "created before; a bare date means the end of that day", format="date-time"),
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "page size (larger values are served as 500)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 20},
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "calls to skip: the previous page's `next_offset`",
        "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0},
    },
]

_PLACE_CALL_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {"type": "string", "description": "international format, e.g. +34600111222"},
                    "flow": {"type": "string", "description": "a flow's name from the configured flow's folder"},
                },
            }
        }
    },
}

_PERMISSION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["to"],
                "properties": {"to": {"type": "string"}, "text": {"type": "string"}},
            }
        }
    },
}

_BUTTON_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {"type": "string"},
                    "payload": {
                        "type": "string",
                        "maxLength": 512,
                        "description": "comes back as the call's cta_payload when the user taps the button",
                    },
                    "text": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 1024,
                        "description": "the message above the button (default: call_button.body); not used by the "
                        "template",
                    },
                },
            }
        }
    },
}

_API = [{"apiToken": []}]

_RATE = {
    "type": "number",
    "nullable": True,
    "minimum": 0,
    "maximum": 1,
    "description": "a fraction; null: none to count",
}
_COUNT = {"type": "integer", "minimum": 0}
_FIGURE_PROPERTIES: dict[str, Any] = {
    **{
        name: _COUNT
        for name in (
            "calls",
            "inbound",
            "inbound_answered",
            "outbound",
            "outbound_answered",
            "answered",
            "contained",
            "handed_over",
            "abandoned",
            "turns",
        )
    },
    **{
        name: _RATE
        for name in (
            "pickup_rate_inbound",
            "pickup_rate_outbound",
            "containment_rate",
            "handover_rate",
            "queue_abandon_rate",
        )
    },
    "avg_handle_s": _NULLABLE_NUMBER,
    "avg_queue_wait_s": _NULLABLE_NUMBER,
    "cost": {"type": "string", "description": "decimal amount as text"},
    "v2v_p50_ms": _NULLABLE_NUMBER,
    "v2v_p95_ms": _NULLABLE_NUMBER,
}
_FIGURES: dict[str, Any] = {"type": "object", "required": list(_FIGURE_PROPERTIES), "properties": _FIGURE_PROPERTIES}
_COST_ROW: dict[str, Any] = {
    "type": "object",
    "required": ["country", "cost"],
    "properties": {
        "country": {"type": "string", "description": "ISO 3166 alpha-2 of the user's number, ?? if unknown"},
        "day": {"type": "string", "format": "date"},
        "cost": {"type": "string"},
    },
}
_ANALYTICS: dict[str, Any] = {
    "type": "object",
    "description": "definitions in the README's Analytics section and agent/analytics.py",
    "required": ["since", "until", "currency", "simulated_included", "total", "days", "cost_by_country"],
    "properties": {
        "since": {"type": "string", "format": "date"},
        "until": {"type": "string", "format": "date", "description": "the last day, included"},
        "currency": {"type": "string"},
        "simulated_included": {"type": "boolean"},
        "total": _FIGURES,
        "days": {
            "type": "array",
            "description": "every day of the range, in order, days without calls included",
            "items": {
                "type": "object",
                "required": ["day", *_FIGURE_PROPERTIES],
                "properties": {"day": {"type": "string", "format": "date"}, **_FIGURE_PROPERTIES},
            },
        },
        "cost_by_country": {"type": "array", "items": _COST_ROW},
        "cost_by_country_day": {"type": "array", "items": _COST_ROW},
    },
}
_ANALYTICS_PARAMETERS: list[dict[str, Any]] = [
    _string_query("since", "first day (UTC), YYYY-MM-DD", format="date"),
    _string_query("until", "last day, included (default: today)", format="date"),
    {
        "name": "days",
        "in": "query",
        "required": False,
        "description": "number of days (default 7); at most two of since, until and days",
        "schema": {"type": "integer", "minimum": 1, "maximum": 366},
    },
]
_CALL_ID: dict[str, Any] = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "example": "wacid.ABC",
}
_STILL_RECORDING = _json(_ERROR, "the call is still being recorded")

_PATHS: dict[str, Any] = {
    "/webhook": {
        "get": {
            "summary": "Meta's webhook subscription check",
            "operationId": "verifyWebhook",
            "parameters": [
                {"name": "hub.mode", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "hub.verify_token", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "hub.challenge", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "the challenge, echoed", "content": _TEXT},
                "403": {"description": "wrong mode or verify token", "content": _TEXT},
            },
        },
        "post": {
            "summary": "Meta's webhook deliveries (signed with the app secret)",
            "operationId": "receiveWebhook",
            "parameters": [
                {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {"description": "stored", "content": _TEXT},
                "400": {"description": "malformed payload", "content": _TEXT},
                "401": {"description": "invalid signature", "content": _TEXT},
                "413": {"description": "payload too large", "content": _TEXT},
                "500": {"description": "not stored; Meta retries", "content": _TEXT},
            },
        },
    },
    "/healthz": {
        "get": {
            "summary": "Liveness and store health",
            "operationId": "health",
            "responses": {
                "200": _json({"type": "object", "required": ["status"]}, "healthy"),
                "503": _json({"type": "object", "required": ["status"]}, "degraded"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
        }
    },
    "/v1/calls": {
        "get": {
            "summary": "List calls, newest first, filtered",
            "operationId": "listCalls",
            "security": _API,
            "parameters": _LIST_PARAMETERS,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["calls", "next_offset"],
                        "properties": {
                            "calls": {"type": "array", "items": _CALL},
                            "next_offset": {"type": "integer", "nullable": True},
                        },
                    },
                    "a page of calls; `next_offset` is null on the last page",
                ),
                **_errors(400, 401, 403),
            },
        },
        "post": {
            "summary": "Place a call",
            "operationId": "placeCall",
            "security": _API,
            "requestBody": _PLACE_CALL_BODY,
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["id", "ref", "to", "state"],
                        "properties": {
                            "id": {"type": "string"},
                            "ref": {"type": "string"},
                            "to": {"type": "string"},
                            "state": {"type": "string"},
                        },
                    },
                    "dialling",
                ),
                **_errors(400, 401, 403, 409, 413, 502),
            },
        },
    },
    "/v1/calls/campaigns": {
        "get": {
            "summary": "Calls per payload (campaign): how many came, were answered, were handed over",
            "operationId": "campaignCounts",
            "security": _API,
            "parameters": [p for p in _LIST_PARAMETERS if p["name"] in ("since", "until")],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["campaigns"],
                        "properties": {"campaigns": {"type": "array", "items": _CAMPAIGN}},
                    },
                    "one entry per payload, most calls first; calls without a payload are left out",
                ),
                **_errors(400, 401, 403),
            },
        }
    },
    "/v1/calls/{call_id}": {
        "get": {
            "summary": "One call: record, events, transcript, slots, per-turn latency, cost",
            "operationId": "getCall",
            "security": _API,
            "parameters": [
                {
                    "name": "call_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "wacid.ABC",
                }
            ],
            "responses": {"200": _json(_CALL_DETAIL, "the call"), **_errors(401, 403, 404)},
        }
    },
    "/v1/analytics": {
        "get": {
            "summary": "Call figures over a date range: pickup, containment, handover, queue abandon, handle time, "
            "cost by country and day, voice-to-voice p50/p95",
            "operationId": "getAnalytics",
            "security": _API,
            "parameters": _ANALYTICS_PARAMETERS,
            "responses": {"200": _json(_ANALYTICS, "the report"), **_errors(400, 401, 403, 404)},
        }
    },
    "/v1/calls/{call_id}/recording": {
        "get": {
            "summary": "Download the call's recording (Ogg/Opus, stereo: caller left, bot or agent right)",
            "operationId": "getCallRecording",
            "security": _API,
            "parameters": [_CALL_ID],
            "responses": {
                "200": {
                    "description": "the recording",
                    "content": {"audio/ogg": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_errors(401, 403, 404),
                "409": _STILL_RECORDING,
            },
        },
        "delete": {
            "summary": "Delete the call's recording: the file and the reference to it",
            "operationId": "deleteCallRecording",
            "security": _API,
            "parameters": [_CALL_ID],
            "responses": {
                "204": {"description": "deleted"},
                **_errors(401, 403, 404),
                "409": _STILL_RECORDING,
            },
        },
    },
    "/v1/call-permissions": {
        "post": {
            "summary": "Ask a user for permission to call them",
            "operationId": "requestCallPermission",
            "security": _API,
            "requestBody": _PERMISSION_BODY,
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["message_id", "to"],
                        "properties": {"message_id": {"type": "string"}, "to": {"type": "string"}},
                    },
                    "the permission request was sent",
                ),
                **_errors(400, 401, 403, 409, 413, 502),
            },
        }
    },
}

_PATHS["/v1/call-buttons"] = {
    "post": {
        "summary": "Send a call button: free-form inside the customer-service window, else the configured template",
        "operationId": "sendCallButton",
        "security": _API,
        "requestBody": _BUTTON_BODY,
        "responses": {
            "202": _json(
                {
                    "type": "object",
                    "required": ["message_id", "to", "kind"],
                    "properties": {
                        "message_id": {"type": "string"},
                        "to": {"type": "string"},
                        "kind": {"type": "string", "enum": ["interactive", "template"]},
                    },
                },
                "the call button was sent",
            ),
            **_errors(400, 401, 403, 409, 413, 502),
        },
    }
}

_METRICS_PATH: dict[str, Any] = {
    "get": {
        "summary": "Prometheus metrics (text exposition format)",
        "operationId": "metrics",
        "security": [{"metricsToken": []}],
        "responses": {
            "200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": {"description": "missing or wrong bearer token", "content": _TEXT},
            "404": {"description": "metrics are off (WACALL_METRICS_TOKEN unset)", "content": _TEXT},
        },
    }
}


def openapi_document(*, metrics: bool) -> dict[str, Any]:
    """The document for an app with (or without) `/metrics`; a fresh copy, so no caller can alter another's."""
    paths = copy.deepcopy(_PATHS)
    if metrics:
        paths["/metrics"] = copy.deepcopy(_METRICS_PATH)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wacall",
            "version": "1",
            "description": "Meta's webhook, the calls API (bearer WACALL_API_TOKEN), health and metrics.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer", "description": "WACALL_API_TOKEN"},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "WACALL_METRICS_TOKEN"},
            }
        },
    }
