"""Carry out a flow's `http` action: call a business system and report what came back.

The engine only describes the request (pure); doing it here keeps network I/O out of the flow engine and
gives every request a hard timeout, so a slow business system costs the caller seconds, not the call.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from agent.dialogue.effects import HttpRequest, unsafe_url

log = logging.getLogger(__name__)


async def run_http(request: HttpRequest, *, transport: httpx.AsyncBaseTransport | None = None) -> tuple[bool, Any]:
    """Returns (ok, JSON body or None). Errors and timeouts are (False, None): the flow's error branch.

    A URL whose path a slot value could have moved (`..`, encoded slashes) is refused here as well as by the
    reply runner, since this function is also called directly (`wacall flows chat`, tests).
    """
    problem = unsafe_url(request.url)
    if problem is not None:
        log.error("http action %s refused: %s (%s)", request.id, problem, request.url)
        return False, None
    try:
        async with httpx.AsyncClient(timeout=request.timeout_s, transport=transport) as client:
            response = await client.request(
                request.method.upper(), request.url, headers=request.headers or None, json=request.json_body
            )
    except Exception as exc:  # httpx.HTTPError, but also InvalidURL and friends: the error branch, not a crash
        log.warning("http action %s %s failed: %r", request.method, request.url, exc)
        return False, None
    if not response.is_success:
        log.warning("http action %s %s answered %d", request.method, request.url, response.status_code)
        return False, None
    try:
        return True, response.json()
    except ValueError:
        return True, None
