"""Headless Debian Chromium as a WebRTC peer in tests: where it is, the flags it needs, and when it may run.

The shared notes chromium-webrtc.md explain each flag. Chromium runs only inside a network namespace that
has nothing but loopback (`.ci/run` runs the suite in one), so neither ICE nor any of the browser's own
background requests can leave 127.0.0.1; elsewhere the tests that need it skip and say why.
"""

from __future__ import annotations

import socket
from pathlib import Path

CHROMIUM_WRAPPER = Path("/usr/bin/chromium")  # what Debian's `chromium` package installs
CHROMIUM = Path("/usr/lib/chromium/chromium")  # the real binary behind the wrapper (doc gotcha G3)

CHROMIUM_FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--no-pings",
]


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def skip_reason() -> str | None:
    """Why a Chromium test cannot run here, or None."""
    if not CHROMIUM_WRAPPER.exists() or not CHROMIUM.exists():
        return "needs Debian's chromium package (/usr/bin/chromium): apt-get install -y chromium (.ci/run does)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -e '.[test]'); never `playwright install`"
    if not loopback_only():
        return (
            "runs Chromium only inside a loopback-only network namespace, as .ci/run does: "
            "unshare -n sh -c 'ip link set lo up && python -m pytest tests/e2e/…'"
        )
    return None
