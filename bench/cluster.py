"""Scale-out bench: three `wacall serve` workers on this machine sharing one PostgreSQL (issue 17).

Starts a throwaway PostgreSQL (tests/pg_server.py: Debian's binaries, a Unix socket) unless
WACALL_TEST_DATABASE_URL names one, three workers behind the round-robin proxy of the multi-worker tests
(tests/cluster_harness.py) and Meta's simulator for the Graph API, then prints:

- webhook throughput: signed terminate webhooks for unknown calls, 16 at a time through the proxy; each is
  verified, stored in its own transaction, handled and marked handled (the path every webhook takes);
- forwarding latency p50/p95: a status webhook for a call owned by w0 is posted to w1; measured from the
  POST until w0 has acted on it (the event's `handled` mark, polled every 2 ms on its own connection);
- failover: a call owned by w2, then w2 SIGKILLed; measured until another worker has ended the call
  (`ended_by_worker_loss`) and until Meta has been sent its terminate (`ending_settled`).

The "calls" here are rows, not WebRTC sessions: what is measured is the coordination, and the media of a
call never leaves its worker anyway. Figures are printed, not asserted.

    python bench/cluster.py [--webhooks 600] [--forwards 200] [--lease 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported (the workers inherit it)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from agent.simulator.session import SIM_PHONE_NUMBER_ID, bound_socket, serve  # noqa: E402
from agent.store.postgres import PostgresStore  # noqa: E402
from tests import pg_server  # noqa: E402
from tests.cluster_harness import Deployment, RoundRobinProxy  # noqa: E402


def signed(secret: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}


def envelope(value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550001111", "phone_number_id": SIM_PHONE_NUMBER_ID}
    change = {"field": "calls", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290000000001", "changes": [change]}]}


def terminate(call_id: str) -> dict[str, Any]:
    call = {"id": call_id, "from": "15550002222", "to": "15550001111", "event": "terminate"}
    call |= {"timestamp": str(int(time.time())), "status": "COMPLETED", "direction": "USER_INITIATED"}
    return envelope({"calls": [call]})


def status(call_id: str, n: int) -> dict[str, Any]:
    st = {"id": call_id, "timestamp": str(1_700_000_000 + n), "type": "call", "status": "RINGING"}
    return envelope({"statuses": [st | {"recipient_id": "15550002222"}]})


def fake_call(url: str, call_id: str, owner: str) -> None:
    """A live call row owned by `owner`, as `Runtime._register` writes one (without its media)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO calls (id, direction, state, created_at, owner, simulated) "
            "VALUES (%s, 'USER_INITIATED', 'active', %s, %s, 0)",
            (call_id, time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime()), owner),
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def throughput(proxy_url: str, secret: str, count: int, concurrency: int = 16) -> tuple[float, int]:
    bodies = [signed(secret, terminate(f"wacid.bench-{n}")) for n in range(count)]
    failures = 0
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            body, headers = queue.get_nowait()
            answer = await client.post(proxy_url, content=body, headers=headers)
            failures += answer.status_code != 200

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
    return count / (time.perf_counter() - started), failures


async def forwarding(url: str, worker_url: str, secret: str, call_id: str, count: int) -> list[float]:
    """Seconds from the POST at the non-owner to the owner's `handled` mark, per webhook."""
    out: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client, await psycopg.AsyncConnection.connect(url) as conn:
        await conn.set_autocommit(True)
        for n in range(count):
            body, headers = signed(secret, status(call_id, n))
            started = time.perf_counter()
            answer = await client.post(f"{worker_url}/webhook", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            event = "status:RINGING"
            while True:
                row = await (
                    await conn.execute(
                        "SELECT handled, handler FROM call_events WHERE call_id = %s AND event = %s AND at = %s",
                        (call_id, event, _at(1_700_000_000 + n)),
                    )
                ).fetchone()
                if row is not None and row[0] == 1:
                    assert row[1] == "w0", row
                    break
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"forwarded status {n} never handled")
                await asyncio.sleep(0.002)
            out.append(time.perf_counter() - started)
    return out


def _at(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime(ts))


async def failover(deployment: Deployment, call_id: str) -> tuple[float, float]:
    url = deployment.database_url
    fake_call(url, call_id, "w2")
    deployment.workers[2].kill()
    killed = time.perf_counter()
    ended = settled = 0.0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not settled:
            if time.perf_counter() - killed > 120:
                raise RuntimeError("the dead worker's call was never taken over")
            row = await (await conn.execute("SELECT end_reason FROM calls WHERE id = %s", (call_id,))).fetchone()
            if not ended and row is not None and row[0] == "ended_by_worker_loss":
                ended = time.perf_counter() - killed
            query = "SELECT 1 FROM call_events WHERE call_id = %s AND event = 'ending_settled'"
            done = await (await conn.execute(query, (call_id,))).fetchone()
            if ended and done is not None:
                settled = time.perf_counter() - killed
            await asyncio.sleep(0.01)
    return ended, settled


async def run(args: argparse.Namespace, database_url: str, directory: Path) -> None:
    PostgresStore(database_url).close()  # migrated once here, so no worker's start-up waits for another's
    deployment = Deployment.make(database_url, directory, count=3, max_calls=1000, lease_s=args.lease)
    meta_sock = bound_socket()
    deployment.meta_port = meta_sock.getsockname()[1]
    for worker in deployment.workers:
        worker.env["WACALL_GRAPH_BASE_URL"] = f"http://127.0.0.1:{deployment.meta_port}"
    proxy_sock = bound_socket()
    proxy = RoundRobinProxy(deployment.workers)
    meta = deployment.meta(proxy_sock.getsockname()[1])
    secret = deployment.secrets["WHATSAPP_APP_SECRET"]
    started = time.perf_counter()
    deployment.start()
    try:
        async with serve(meta.app, meta_sock), serve(proxy.app, proxy_sock):
            await deployment.wait_healthy(timeout=240)
            print(f"3 workers healthy after {time.perf_counter() - started:.1f} s (models loaded in each)")
            proxy_url = f"http://127.0.0.1:{proxy_sock.getsockname()[1]}/webhook"
            await throughput(proxy_url, secret, 30)  # warm the connections and the code paths
            rate, failed = await throughput(proxy_url, secret, args.webhooks)
            print(
                f"webhook throughput: {rate:.0f} webhooks/s through the proxy ({args.webhooks} sent, {failed} failed)"
            )
            fake_call(database_url, "wacid.bench-owned", "w0")
            latencies = await forwarding(
                database_url, deployment.workers[1].url, secret, "wacid.bench-owned", args.forwards
            )
            p50, p95, worst = (1000 * v for v in (statistics.median(latencies), pct(latencies, 0.95), max(latencies)))
            print(
                f"forwarding latency (at w1, acted on by w0): p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                f"max {worst:.1f} ms ({len(latencies)} webhooks)"
            )
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE calls SET state = 'ended', ended_at = created_at WHERE id = 'wacid.bench-owned'")
            ended, settled = await failover(deployment, "wacid.bench-orphan")
            print(
                f"failover after SIGKILL (lease {args.lease:g} s, heartbeat every {args.lease / 3:g} s): call ended by "
                f"another worker after {ended:.1f} s, Meta sent its terminate after {settled:.1f} s"
            )
    finally:
        deployment.stop()
        await proxy.aclose()
        await meta.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=600)
    parser.add_argument("--forwards", type=int, default=200)
    parser.add_argument("--lease", type=float, default=6.0, help="WACALL_WORKER_LEASE_S of the workers")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wacall-cluster-bench-")))
        if os.environ.get(pg_server.ENV_URL):
            server = pg_server.PgServer(os.environ[pg_server.ENV_URL])
        else:
            reason = pg_server.skip_reason()
            if reason is not None:
                sys.exit(f"bench/cluster.py needs PostgreSQL: {reason}")
            server = stack.enter_context(pg_server.pg_server())
        url = server.new_database(migrated=False)
        asyncio.run(run(args, url, directory))


if __name__ == "__main__":
    main()
