"""Make docs/console-analytics.png, the README's picture of the console's analytics page.

    python docs/make_console_analytics_png.py

It serves the same known calls and takes the same steps as tests/e2e/test_console_analytics_browser.py
(tests/analytics_console.py), in headless Debian Chromium. Like the tests, Chromium only runs inside a network
namespace with nothing but loopback: started elsewhere, the script re-runs itself in one (`unshare -n`, root).
The test never writes here, so running the tests leaves the work tree clean; this script is how the picture
is refreshed after the page changes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "console-analytics.png"
sys.path.insert(0, str(REPO))

from tests.chromium import CHROMIUM, CHROMIUM_FLAGS, loopback_only  # noqa: E402


async def main() -> None:
    from playwright.async_api import async_playwright

    from tests.analytics_console import analytics_console, open_analytics

    with tempfile.TemporaryDirectory(prefix="wacall-analytics-png-") as tmp:
        async with analytics_console(Path(tmp) / "data") as base, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, env={**os.environ, "HOME": tmp}
            )
            try:
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                await open_analytics(page, base)
                await page.screenshot(path=str(OUT), full_page=True)
            finally:
                await browser.close()
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    if not loopback_only():
        script = 'ip link set lo up && exec "$0" "$@"'
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(main())
