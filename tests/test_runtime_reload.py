"""`wacall serve` picks up an edited flow for new calls, and never swaps in a broken one."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config import load_settings
from agent.runtime import Models, Runtime

GOOD = """
name: v{n}
start: hello
nodes:
  hello:
    say: "Hello from version {n}."
    end: true
"""


async def test_edited_flow_is_used_for_new_calls_and_a_broken_edit_is_refused(
    models: Models, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(GOOD.format(n=1), encoding="utf-8")
    settings = load_settings(env={}, flow=str(flow), data_dir=str(tmp_path / "data"))
    runtime = Runtime(settings, models)
    runtime._reloader.interval_s = 0  # type: ignore[union-attr]
    try:
        assert runtime.flow.name == "v1"
        flow.write_text(GOOD.format(n=2), encoding="utf-8")
        os.utime(flow, (1, 1))  # a new mtime even within the same second
        assert runtime.flow.name == "v2"
        flow.write_text("name: v3\nstart: nowhere\nnodes: {}\n", encoding="utf-8")
        os.utime(flow, (2, 2))
        assert runtime.flow.name == "v2"  # the broken edit is refused; calls go on with v2
        assert runtime._reloader.last_error is not None  # type: ignore[union-attr]
        assert str(flow) in str(runtime._reloader.last_error)  # type: ignore[union-attr]
    finally:
        await runtime.aclose()
