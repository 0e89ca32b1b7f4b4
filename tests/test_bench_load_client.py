"""bench/load.py's own HTTP client and delivery plan, checked against the real app over real HTTP on a
handful of deliveries, so a bench run is not the first time they meet a server."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import uvicorn

from agent.app import create_app
from agent.config import Settings
from agent.listen_socket import listening_socket
from agent.runtime import Models, Runtime


def _load_bench() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


load = _load_bench()


def test_plan_has_the_asked_share_of_duplicates_and_terminates_before_connects() -> None:
    plan = load.schedule(10, 100, 0.10, random.Random(3))
    assert len(plan) == 1000
    duplicates = sum(1 for _, new in plan if new == 0)
    assert 60 <= duplicates <= 140
    first_seen: dict[str, str] = {}
    for payload, _new in plan:
        for call in payload["entry"][0]["changes"][0]["value"].get("calls", []):
            first_seen.setdefault(call["id"], call["event"])
    assert "terminate" in first_seen.values() and "connect" in first_seen.values()


async def test_raw_client_against_the_real_app(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), app_secret=load.APP_SECRET, phone_number_id=load.OUR_NUMBER)
    runtime = Runtime(settings, Models(transcriber=load._NoTranscriber(), synthesizer=load._NoSynthesizer()))
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), log_level="error", lifespan="off", access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    client = load.RawClient(port, 3)
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        await client.start()
        plan = load.schedule(0.2, 100, 0.2, random.Random(5))
        results = await asyncio.gather(*(client.post("/webhook", *load._signed(p)) for p, _ in plan))
        assert [status for status, _wait, _took in results] == [200] * len(plan)
        status, _wait, _took = await client.post("/webhook", b"{}", {"X-Hub-Signature-256": "sha256=00"})
        assert status == 401  # a refused request leaves the connection usable
        assert (await client.post("/webhook", *load._signed(plan[0][0])))[0] == 200
        tasks = [t for t in runtime._tasks if not t.done()]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(runtime.store.flush, 5)
    finally:
        await client.aclose()
        server.should_exit = True
        await serving
        await runtime.aclose()
    handled, unhandled = load.count_store(tmp_path / "wacall.sqlite3")
    assert (handled, unhandled) == (sum(new for _, new in plan), 0)
