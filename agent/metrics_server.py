"""/metrics on a listener of its own (`metrics_listen`), for deployments that scrape over an internal network.

The public app faces Meta's webhooks and the internet; a scraper usually lives on a private interface and is
configured with an address, not a credential. With `metrics_listen` set, the public app has no /metrics at all
and this second HTTP server answers it on that address. A `metrics_token`, if also set, is still required
here, for networks that are internal but shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.app import bearer_matches
from agent.config import split_host_port
from agent.listen_socket import listening_socket

if TYPE_CHECKING:
    from agent.metrics import Metrics

log = logging.getLogger(__name__)


def create_metrics_app(metrics: Metrics, token: str = "") -> Starlette:
    async def metrics_page(request: Request) -> Response:
        if token and not bearer_matches(request, token):
            return PlainTextResponse(
                "missing or wrong bearer token (WACALL_METRICS_TOKEN)\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="wacall metrics"'},
            )
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/metrics", metrics_page, methods=["GET"])])


class _SignalFreeServer(uvicorn.Server):
    """The main server's drain owns SIGTERM/SIGINT; this one stops when told."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsListener:
    """The second HTTP server's lifetime: `start` binds (so a taken port fails start-up), `aclose` stops it."""

    def __init__(self, metrics: Metrics, listen: str, token: str = "") -> None:
        self.host, self.port = split_host_port(listen)
        config = uvicorn.Config(
            create_metrics_app(metrics, token), host=self.host, port=self.port, lifespan="off", log_level="warning"
        )
        self._server = _SignalFreeServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]  # port 0 (tests) picks a free one
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics-listener")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the metrics listener stopped before it started")
            await asyncio.sleep(0.01)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def aclose(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
