"""Log format: the call id on every line of a call (from a context variable), and JSON lines on request."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from agent.logs import CallIdFilter, JsonFormatter, call_id_var, setup_logging


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("agent.call", level, __file__, 1, message, None, None)
    CallIdFilter().filter(record)
    return record


async def test_tasks_started_for_a_call_log_under_its_id() -> None:
    seen: dict[str, str | None] = {}

    async def worker(name: str) -> None:
        await asyncio.sleep(0)
        seen[name] = _record("x").call_id  # type: ignore[attr-defined]

    async def handle(call_id: str) -> asyncio.Task[None]:
        call_id_var.set(call_id)
        return asyncio.create_task(worker(call_id))

    tasks = [await asyncio.create_task(handle(c)) for c in ("wacid.A", "wacid.B")]
    await asyncio.gather(*tasks)
    assert seen == {"wacid.A": "wacid.A", "wacid.B": "wacid.B"}
    assert _record("outside").call_id is None  # type: ignore[attr-defined]


def test_json_lines_carry_level_logger_message_and_call_id() -> None:
    token = call_id_var.set("wacid.JSON")
    try:
        line = JsonFormatter().format(_record("answered in 312 ms", logging.WARNING))
    finally:
        call_id_var.reset(token)
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "agent.call"
    assert entry["msg"] == "answered in 312 ms" and entry["call_id"] == "wacid.JSON"
    assert entry["ts"].endswith("+00:00")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        setup_logging(verbose=False, fmt="xml")
