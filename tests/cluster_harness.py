"""A scale-out deployment on this machine, for the multi-worker tests and bench/cluster.py.

Real `wacall serve` processes sharing one PostgreSQL database, behind a small round-robin HTTP proxy that
Meta's simulator sends its webhooks to: the stand-in for an operator's load balancer, so any worker may
receive any webhook. The proxy is a test fixture, not part of wacall. `pin` sends the next webhook to a
chosen worker (to aim a terminate at one that does not own the call); a worker that does not answer is
skipped, like a load balancer's failed health check would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.simulator.meta import MetaSimulator
from agent.simulator.session import SIM_PHONE_NUMBER_ID, bound_socket

#: A UK number: business-initiated calls are allowed from there.
BUSINESS_NUMBER = "447700900111"
#: The flow every worker runs: a one-line greeting, then it waits (silently) for the caller.
FLOW = """\
name: cluster_check
start: hello
nodes:
  hello:
    say: Hello.
    ask: {slot: anything, type: text}
    next: bye
  bye:
    say: Goodbye.
    end: true
"""

CONFIG = """\
turns:
  silence_reprompt_s: null
shutdown:
  deadline_s: 5
"""


def free_port() -> int:
    sock = bound_socket()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class Worker:
    """One `wacall serve` process, configured through the environment as an operator would."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "agent.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Deployment:
    """Workers sharing `database_url`, the proxy in front of them, and the Graph API at `meta_port`."""

    database_url: str
    directory: Path
    meta_port: int
    workers: list[Worker] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        database_url: str,
        directory: Path,
        *,
        count: int,
        max_calls: int,
        lease_s: float,
        flow: str = FLOW,
        config: str = CONFIG,
        extra_env: dict[str, str] | None = None,
    ) -> Deployment:
        """`flow` and `config`: the YAML every worker runs with; `extra_env`: added to each worker's environment."""
        deployment = cls(database_url, directory, meta_port=free_port())
        deployment.secrets = {
            "WHATSAPP_TOKEN": secrets.token_urlsafe(24),
            "WHATSAPP_APP_SECRET": secrets.token_urlsafe(24),
            "WHATSAPP_VERIFY_TOKEN": secrets.token_urlsafe(24),
            "WHATSAPP_PHONE_NUMBER_ID": SIM_PHONE_NUMBER_ID,
            "WACALL_API_TOKEN": secrets.token_urlsafe(24),
        }
        (directory / "flow.yaml").write_text(flow, encoding="utf-8")
        (directory / "wacall.yaml").write_text(config, encoding="utf-8")
        for n in range(count):
            name = f"w{n}"
            env = {
                **os.environ,
                **deployment.secrets,
                "WACALL_CONFIG": str(directory / "wacall.yaml"),
                "WACALL_FLOW": str(directory / "flow.yaml"),
                "WACALL_DATABASE_URL": database_url,
                "WACALL_WORKER_ID": name,
                "WACALL_WORKER_LEASE_S": str(lease_s),
                "WACALL_MAX_CALLS": str(max_calls),
                "WACALL_GRAPH_BASE_URL": f"http://127.0.0.1:{deployment.meta_port}",
                "WACALL_MEDIA_HOSTS": "127.0.0.1",
                "WACALL_DATA_DIR": str(directory / name),
                "WACALL_BUSINESS_NUMBER": BUSINESS_NUMBER,
                "WACALL_API_TOKEN": deployment.secrets["WACALL_API_TOKEN"],
                "HF_HUB_OFFLINE": "1",
                **(extra_env or {}),
            }
            env.pop("WACALL_LLM_BASE_URL", None)
            port = free_port()
            env["WACALL_WORKER_URL"] = f"http://127.0.0.1:{port}"
            deployment.workers.append(Worker(name, port, env, directory / f"{name}.log"))
        return deployment

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    async def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            for worker in self.workers:
                while True:
                    if not worker.running:
                        raise RuntimeError(f"{worker.name} exited at start-up:\n{worker.tail()}")
                    try:
                        if (await client.get(f"{worker.url}/healthz", timeout=1)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{worker.name} not healthy in {timeout:g} s:\n{worker.tail()}")
                    await asyncio.sleep(0.2)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.running:
                assert worker.proc is not None
                worker.proc.terminate()
        for worker in self.workers:
            if worker.proc is not None:
                try:
                    worker.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.kill()

    def meta(self, proxy_port: int) -> MetaSimulator:
        return MetaSimulator(
            webhook_url=f"http://127.0.0.1:{proxy_port}/webhook",
            app_secret=self.secrets["WHATSAPP_APP_SECRET"],
            access_token=self.secrets["WHATSAPP_TOKEN"],
            phone_number_id=SIM_PHONE_NUMBER_ID,
            display_phone_number=BUSINESS_NUMBER,
        )


class RoundRobinProxy:
    """Meta's webhooks to the workers in turn; `pin(i, needle)` sends the next one containing `needle` to worker i."""

    def __init__(self, workers: list[Worker]) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.workers = workers
        self._next = 0
        self._pinned: tuple[int, bytes] | None = None
        self.sent: list[tuple[int, bytes, dict[str, str]]] = []  # (worker index, body, headers) per delivery
        self._client = httpx.AsyncClient(timeout=25.0)
        self.app = Starlette(routes=[Route("/webhook", self._forward, methods=["POST"])])

    def pin(self, index: int, needle: bytes = b"") -> None:
        """The next webhook whose body contains `needle` goes to worker `index` (others keep their turn):
        a late webhook of another call must not take the pin."""
        self._pinned = (index, needle)

    async def _forward(self, request: Any) -> Any:
        from starlette.responses import Response

        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "x-hub-signature-256")}
        order = list(range(len(self.workers)))
        if self._pinned is not None and self._pinned[1] in body:
            first, self._pinned = self._pinned[0], None
        else:
            first, self._next = self._next % len(order), self._next + 1
        for index in order[first:] + order[:first]:
            if not self.workers[index].running:
                continue
            try:
                answer = await self._client.post(f"{self.workers[index].url}/webhook", content=body, headers=headers)
            except httpx.TransportError:
                continue
            self.sent.append((index, body, headers))
            return Response(answer.content, status_code=answer.status_code)
        return Response(b"no worker", status_code=502)

    async def replay(self, delivery: int, index: int) -> int:
        """Send a delivery the proxy passed on again, to worker `index` (Meta's at-least-once redelivery)."""
        _, body, headers = self.sent[delivery]
        answer = await self._client.post(f"{self.workers[index].url}/webhook", content=body, headers=headers)
        return answer.status_code

    async def aclose(self) -> None:
        await self._client.aclose()
