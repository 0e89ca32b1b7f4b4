"""The real app, serving the agent console over a store of known calls (tests/analytics_fixture.py), and the
steps an agent takes to reach the analytics page in a browser.

Shared by tests/e2e/test_console_analytics_browser.py and docs/make_console_analytics_png.py (the README's
picture), so the screenshot shows exactly what the test checked. No models and no call: the page only reads
records, so a stand-in runtime with a real SqliteStore and a real HandoverService is all `create_app` needs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from agent.app import create_app
from agent.config import Settings
from agent.handover.config import load_handover
from agent.handover.service import HandoverService
from agent.runtime import Runtime
from agent.simulator.session import bound_socket, serve
from agent.store.sqlite import SqliteStore
from tests.analytics_fixture import FIRST, LAST, seed_analytics
from tests.test_http_hardening import ApiRuntime

__all__ = ["AGENT_TOKEN", "analytics_console", "open_analytics"]

AGENT_TOKEN = "analytics-horse-battery"
HANDOVER = {
    "queues": [{"name": "support"}],
    "agents": [{"id": "sofia", "name": "Sofia Reyes"}],
}


@asynccontextmanager
async def analytics_console(data_dir: Path) -> AsyncIterator[str]:
    """The app on a free 127.0.0.1 port; yields its base URL. Sets the agent's token in the environment."""
    os.environ["WACALL_AGENT_TOKEN_SOFIA"] = AGENT_TOKEN
    store = SqliteStore.in_data_dir(data_dir)
    seed_analytics(store)
    handover = load_handover(HANDOVER)
    service = HandoverService(handover, store=store, tick_s=None)
    runtime: Any = ApiRuntime(settings=Settings(handover=handover), store=store, handover=service)  # type: ignore[arg-type]
    sock = bound_socket()
    try:
        async with serve(create_app(cast(Runtime, runtime)), sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await service.aclose()
        store.close()


async def open_analytics(page: Any, base: str) -> None:
    """Sign in on the console, follow its Analytics link and pick the fixture's three days with the form."""
    await page.goto(f"{base}/console/")
    await page.fill("#agent-id", "sofia")
    await page.fill("#agent-token", AGENT_TOKEN)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#analytics-link", state="visible", timeout=10_000)
    await page.click("#analytics-link")
    await page.wait_for_selector("#range", timeout=10_000)
    await page.fill("#range input[name=since]", FIRST.isoformat())
    await page.fill("#range input[name=until]", LAST.isoformat())
    await page.click("#range button[type=submit]")
    await page.wait_for_selector(f"#period:has-text('{FIRST} to {LAST}')", timeout=10_000)
