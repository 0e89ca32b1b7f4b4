"""The console's analytics page in headless Chromium: an agent signs in, follows the Analytics link, picks a
range with the form, and sees the hand-computed figures and four SVG charts drawn to scale.

No models and no call (the page only reads records), so this takes a few seconds. Chromium runs only inside
a loopback-only network namespace, as in test_console_browser.py; elsewhere the test skips and says why.
The screenshot goes to the test's tmp dir: the README's picture is made by docs/make_console_analytics_png.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.analytics_console import analytics_console, open_analytics
from tests.chromium import CHROMIUM, CHROMIUM_FLAGS, skip_reason

HEADLINE = {
    "calls": "7",
    "pickup-inbound": "75.0 %",
    "pickup-outbound": "66.7 %",
    "containment": "40.0 %",
    "handover": "40.0 %",
    "abandon": "50.0 %",
    "aht": "120 s",
    "v2v-p50": "600 ms",
    "v2v-p95": "900 ms",
    "cost": "0.0700",
}
CHARTS = ("calls-per-day", "v2v-by-day", "cost-by-country", "cost-by-day")


@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_an_agent_sees_the_figures_and_the_charts(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with analytics_console(tmp_path / "data") as base, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, env={**os.environ, "HOME": str(tmp_path)}
        )
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            # A CSP violation (an inline style, a script) is reported as a console error; so is a failed load, but
            # the browser's own request for /favicon.ico (the console has none) is no problem of the page's.
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"{msg.text} ({msg.location.get('url')})")
                    if msg.type == "error" and not str(msg.location.get("url", "")).endswith("/favicon.ico")
                    else None
                ),
            )

            await open_analytics(page, base)

            for key, value in HEADLINE.items():
                assert (await page.inner_text(f"#fig-{key} .value")).strip() == value, key

            for chart in CHARTS:
                box = await page.locator(f"#chart-{chart} svg").bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100, (chart, box)

            # Bars drawn to scale: 4, 3 and 0 calls on the three days; GB's cost is 4/3 of Spain's.
            calls = await page.eval_on_selector_all(
                "#chart-calls-per-day rect.bar", "els => els.map(e => e.getBoundingClientRect().height)"
            )
            assert len(calls) == 3 and calls[2] == 0
            assert calls[1] / calls[0] == pytest.approx(3 / 4, rel=0.02)
            costs = await page.eval_on_selector_all(
                "#chart-cost-by-country rect.bar", "els => els.map(e => e.getBoundingClientRect().height)"
            )
            assert costs[1] / costs[0] == pytest.approx(3 / 4, rel=0.02) and costs[2] == 0
            # The latency lines: p50 and p95 each a line across the two measured days, the empty third a gap.
            assert await page.locator("#chart-v2v-by-day polyline").count() == 2
            assert await page.locator("#chart-v2v-by-day circle.point").count() == 4

            screenshot = tmp_path / "console-analytics.png"
            await page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert problems == []
        finally:
            await browser.close()
