"""`wacall serve` ending on SIGTERM/SIGINT without losing a call.

uvicorn's own signal handling stops the HTTP server and then re-raises the signal, so the process dies
before anything after `serve()` runs: live calls got no terminate (Meta kept billing them), records stayed
`ringing`. Here the signal starts a drain instead: new calls are refused, live callers hear a short goodbye,
Meta gets its terminates, every record is written, then the HTTP server stops and the process exits 0, all
within the configured deadline. A second signal skips what is left of the goodbyes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = logging.getLogger(__name__)

# uvicorn's `timeout_graceful_shutdown`: what is kept of the deadline for closing HTTP connections (console
# event streams stay open until told to go).
HTTP_CLOSE_S = 2.0


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose signals drain the runtime first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install handlers that stop serving at once and re-raise the signal afterwards.
        yield

    async def serve_until_drained(
        self,
        runtime: Runtime,
        *,
        sockets: list[socket.socket],
        goodbye: str | None,
        deadline_s: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        hurry = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                log.warning("%s again: ending the remaining calls without their goodbye", sig.name)
                hurry.set()
                self.force_exit = True
                return
            log.warning("%s: draining (no new calls; live calls end within %.0f s)", sig.name, deadline_s)
            stop.set()

        handled = (signal.SIGTERM, signal.SIGINT)
        for sig in handled:
            loop.add_signal_handler(sig, on_signal, sig)
        serving = asyncio.create_task(self.serve(sockets=sockets), name="http-server")
        stopping = asyncio.create_task(stop.wait(), name="wait-for-signal")
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                started = loop.time()
                try:
                    # Webhooks and the console keep being served while calls end: Meta's terminates still land.
                    await runtime.drain(goodbye=goodbye, deadline_s=max(1.0, deadline_s - HTTP_CLOSE_S), hurry=hurry)
                    log.info("drained in %.1f s; stopping the HTTP server", loop.time() - started)
                finally:
                    self.should_exit = True
            await serving
        finally:
            stopping.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
