"""This worker's LISTEN connection: event keys other workers stored for it, as they commit.

A connection of its own (asynchronous psycopg, on the event loop: it only waits), reconnected with backoff
when the server drops it (a restart, a failover, `pg_terminate_backend`). Notifications sent while it was
away are lost by design of LISTEN/NOTIFY, so every (re)connection starts with `on_connected`, which re-reads
the worker's unhandled events from the table; the heartbeat does the same every beat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


async def listen(
    url: str,
    channel: str,
    *,
    on_keys: Callable[[list[str]], Awaitable[None]],
    on_connected: Callable[[], Awaitable[None]],
) -> None:
    """Until cancelled. `channel` must be a plain identifier (agent.cluster.Identity.channel is)."""
    import psycopg

    failures = 0
    catching: asyncio.Future[None] | None = None  # the catch-up after a (re)connection runs beside the listening
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, application_name="wacall-listen"
            )
            async with conn:
                await conn.execute(f"LISTEN {channel}")
                if failures:
                    log.info("cluster listener reconnected after %d attempt(s)", failures)
                failures = 0
                if catching is None or catching.done():
                    catching = asyncio.ensure_future(on_connected())
                async for note in conn.notifies():
                    await on_keys([note.payload])
        except asyncio.CancelledError:
            if catching is not None:
                catching.cancel()
            raise
        except Exception as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            log.warning("cluster listener lost its connection (%s); reconnecting", why)
        await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
        failures += 1
