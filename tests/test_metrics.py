"""The Prometheus metrics (agent/metrics.py) and the `/metrics` route that serves them.

Values are read back from each test's own registry with `get_sample_value`, the way Prometheus would see them
after a scrape, so a wrong name, label or bucket fails here rather than on an operator's dashboard.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from agent.app import create_app
from agent.config import ConfigError, Settings, load_settings
from agent.metrics import Metrics, graph_error_code, outcome_label
from agent.runtime import Runtime, StoreHealth, _queued_jobs
from agent.turn_record import TurnMetrics
from agent.whatsapp.graph import GraphClient, GraphError, GraphTransportError, RetryPolicy
from tests.test_app import APP_SECRET, VERIFY_TOKEN, connect_payload, meta_bytes, signature

TOKEN = "metrics-token-for-tests"


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# ---- what the runtime records ----------------------------------------------------------------------------


def test_a_turns_stage_timings_land_in_their_buckets() -> None:
    metrics = Metrics()
    turn = TurnMetrics(
        caller_speech_end=100.0,
        transcript_ready=100.25,
        reply_text_ready=100.35,
        first_audio_synthesized=100.45,
        first_audio_sent=100.7,
    )
    metrics.turn_observed(turn)
    bucket = "wacall_turn_stage_seconds_bucket"
    # 0.25 s to the transcript: above the 0.2 bucket, inside 0.3.
    assert value(metrics, bucket, stage="transcript", le="0.2") == 0
    assert value(metrics, bucket, stage="transcript", le="0.3") == 1
    assert value(metrics, bucket, stage="reply_text", le="0.3") == 0
    assert value(metrics, bucket, stage="reply_text", le="0.4") == 1
    assert value(metrics, bucket, stage="first_audio", le="0.5") == 1
    assert value(metrics, bucket, stage="voice_to_voice", le="0.6") == 0
    assert value(metrics, bucket, stage="voice_to_voice", le="0.8") == 1
    assert value(metrics, "wacall_turn_stage_seconds_sum", stage="voice_to_voice") == pytest.approx(0.7)
    for stage in ("transcript", "reply_text", "first_audio", "voice_to_voice"):
        assert value(metrics, "wacall_turn_stage_seconds_count", stage=stage) == 1


def test_a_stage_never_reached_is_not_observed() -> None:
    """An answer interrupted before its audio left has no voice-to-voice time: none is made up."""
    metrics = Metrics()
    metrics.turn_observed(TurnMetrics(caller_speech_end=5.0, transcript_ready=5.3, interrupted=True))
    metrics.turn_observed(TurnMetrics())  # no end of speech at all: nothing to measure from
    assert value(metrics, "wacall_turn_stage_seconds_count", stage="transcript") == 1
    assert value(metrics, "wacall_turn_stage_seconds_count", stage="voice_to_voice") == 0


def test_a_call_end_counts_the_call_by_direction_and_outcome_and_its_turns() -> None:
    metrics = Metrics()
    turns = [TurnMetrics(caller_speech_end=1.0, first_audio_sent=1.4), TurnMetrics(caller_speech_end=9.0)]
    metrics.call_ended("USER_INITIATED", "answered", turns=turns, barge_ins=2, false_starts=1)
    metrics.call_ended("BUSINESS_INITIATED", "unanswered")
    metrics.call_ended("USER_INITIATED", "graph_error: 131000")
    assert value(metrics, "wacall_calls_total", direction="inbound", outcome="answered") == 1
    assert value(metrics, "wacall_calls_total", direction="outbound", outcome="unanswered") == 1
    assert value(metrics, "wacall_calls_total", direction="inbound", outcome="graph_error") == 1
    assert value(metrics, "wacall_turn_stage_seconds_count", stage="voice_to_voice") == 1
    assert value(metrics, "wacall_barge_ins_total") == 2
    assert value(metrics, "wacall_false_starts_total") == 1


def test_outcome_labels_stay_bounded() -> None:
    assert outcome_label("bad_offer: no audio m-line in a very long SDP description") == "bad_offer"
    assert outcome_label("") == "unknown"
    assert len(outcome_label("x" * 500)) == 40


def test_answer_time_queue_wait_and_handovers() -> None:
    metrics = Metrics()
    metrics.call_answered("USER_INITIATED", 0.8)
    metrics.call_answered("BUSINESS_INITIATED", 7.0)
    metrics.handover_started("billing")
    metrics.queue_waited("billing", 42.0)
    assert value(metrics, "wacall_answer_seconds_bucket", direction="inbound", le="1.0") == 1
    assert value(metrics, "wacall_answer_seconds_bucket", direction="outbound", le="5.0") == 0
    assert value(metrics, "wacall_answer_seconds_count", direction="outbound") == 1
    assert value(metrics, "wacall_handovers_total", queue="billing") == 1
    assert value(metrics, "wacall_queue_wait_seconds_bucket", queue="billing", le="60.0") == 1
    assert value(metrics, "wacall_queue_wait_seconds_bucket", queue="billing", le="30.0") == 0


def test_scrape_time_gauges_read_the_runtime_when_scraped() -> None:
    live = {"n": 1}
    depths = {"billing": 2, "sales": 0}
    metrics = Metrics(live_calls=lambda: live["n"], queue_depths=lambda: depths, inference_queue=lambda: 3)
    assert value(metrics, "wacall_live_calls") == 1
    live["n"] = 4
    depths["billing"] = 0
    assert value(metrics, "wacall_live_calls") == 4
    assert metrics.registry.get_sample_value("wacall_queue_depth", {"queue": "billing"}) == 0
    assert metrics.registry.get_sample_value("wacall_queue_depth", {"queue": "sales"}) == 0
    assert value(metrics, "wacall_inference_queue_length") == 3


def test_a_failing_queue_reading_does_not_fail_the_scrape() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("desk mid-change")

    metrics = Metrics(live_calls=lambda: 2, queue_depths=broken, inference_queue=lambda: None)
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"wacall_live_calls 2.0" in body
    assert b"wacall_inference_queue_length" not in body  # no pool (stand-in models): no series, not a 0


def test_inference_queue_length_is_the_pools_backlog() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    try:
        running = pool.submit(release.wait)
        queued = [pool.submit(lambda: None) for _ in range(3)]
        assert _queued_jobs(pool) == 3
        release.set()
        running.result(timeout=5)
        for job in queued:
            job.result(timeout=5)
        assert _queued_jobs(pool) == 0
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert _queued_jobs(None) is None


def test_store_failures_are_counted() -> None:
    metrics = Metrics()
    health = StoreHealth(on_failure=metrics.store_write_failed)
    health.note(None)
    health.note(OSError("disk full"))
    health.failed(RuntimeError("locked"))
    assert value(metrics, "wacall_store_write_failures_total") == 2


# ---- Graph API errors, through the client's callback ----------------------------------------------------


def test_graph_error_codes() -> None:
    assert graph_error_code(GraphError(status=400, message="x", code=138006)) == "138006"
    assert graph_error_code(GraphTransportError("timed out")) == "transport"
    assert graph_error_code(GraphError(status=502, message="bad gateway")) == "http_502"
    assert graph_error_code(GraphError(status=200, message="not confirmed")) == "bad_response"


async def test_graph_client_reports_each_failed_request_by_action_and_code() -> None:
    metrics = Metrics()

    def meta(request: httpx.Request) -> httpx.Response:
        body = request.read()
        if b'"terminate"' in body:
            return httpx.Response(400, json={"error": {"message": "(#138006) no such call", "code": 138006}})
        if b'"reject"' in body:
            return httpx.Response(200, json={"success": False})
        raise httpx.ConnectError("refused")

    quick = RetryPolicy(attempts=2, first_backoff_s=0.01, max_backoff_s=0.01, budget_s=2.0, attempt_timeout_s=1.0)
    graph = GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id="1",
        token="t",
        transport=httpx.MockTransport(meta),
        answer_retry=quick,
        on_error=metrics.graph_error,
    )
    async with graph:
        with pytest.raises(GraphError):
            await graph.terminate("wacid.1")
        with pytest.raises(GraphError):
            await graph.reject("wacid.2")
        with pytest.raises(GraphTransportError):
            await graph.pre_accept("wacid.3", "v=0")
    assert value(metrics, "wacall_graph_errors_total", action="terminate", code="138006") == 1
    assert value(metrics, "wacall_graph_errors_total", action="reject", code="bad_response") == 1
    # Retried once: both attempts are counted, so a flapping Meta shows even when the retry saved the call.
    assert value(metrics, "wacall_graph_errors_total", action="pre_accept", code="transport") == 2


async def test_a_broken_error_callback_never_hides_metas_error() -> None:
    def broken(action: str, error: GraphError) -> None:
        raise RuntimeError("callback bug")

    def meta(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "nope", "code": 100}})

    async with GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id="1",
        token="t",
        transport=httpx.MockTransport(meta),
        on_error=broken,
    ) as graph:
        with pytest.raises(GraphError) as raised:
            await graph.terminate("wacid.1")
    assert raised.value.code == 100


# ---- event-loop lag ----------------------------------------------------------------------------------------


async def test_loop_lag_is_measured_and_the_task_ends_with_aclose() -> None:
    metrics = Metrics(loop_lag_every_s=0.01)
    metrics.start_loop_lag()
    metrics.start_loop_lag()  # once only
    assert [t.get_name() for t in asyncio.all_tasks()].count("loop-lag") == 1
    await asyncio.sleep(0.05)
    time.sleep(0.06)  # noqa: ASYNC251 (on purpose: the loop held up, its next wake-up is late by this much)
    await asyncio.sleep(0.03)
    assert value(metrics, "wacall_event_loop_lag_seconds_count") >= 2
    assert value(metrics, "wacall_event_loop_lag_seconds_bucket", le="0.02") < value(
        metrics, "wacall_event_loop_lag_seconds_count"
    )
    await metrics.aclose()
    assert [t.get_name() for t in asyncio.all_tasks()].count("loop-lag") == 0


def test_two_runtimes_metrics_do_not_clash() -> None:
    """Per-runtime registries: a second set of the same names is no 'Duplicated timeseries' error."""
    first, second = Metrics(), Metrics()
    first.barge_ins.inc()
    assert value(first, "wacall_barge_ins_total") == 1
    assert value(second, "wacall_barge_ins_total") == 0


# ---- GET /metrics ---------------------------------------------------------------------------------------


def test_the_token_is_a_secret_from_the_environment() -> None:
    settings = load_settings(env={"WACALL_METRICS_TOKEN": "from-env"})
    assert settings.metrics_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings)


@dataclass
class RuntimeWithMetrics:
    """What `create_app` uses, plus the metrics."""

    settings: Settings
    metrics: Metrics = field(default_factory=lambda: Metrics(live_calls=lambda: 1))
    calls: dict[str, object] = field(default_factory=dict)
    handover: None = None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "live_calls": 1, "flow": "demo"}

    async def accept_webhook(self, payload: Any) -> None:
        return None


def _client(runtime: Any) -> httpx.AsyncClient:
    app = create_app(cast(Runtime, runtime))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test")


@pytest.fixture
async def served() -> AsyncIterator[tuple[RuntimeWithMetrics, httpx.AsyncClient]]:
    runtime = RuntimeWithMetrics(Settings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN, metrics_token=TOKEN))
    async with _client(runtime) as client:
        yield runtime, client


async def test_metrics_off_without_a_token_says_how_to_turn_them_on() -> None:
    runtime = RuntimeWithMetrics(Settings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN))
    async with _client(runtime) as client:
        response = await client.get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 404
    assert "WACALL_METRICS_TOKEN" in response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_metrics_refuse_a_missing_or_wrong_token(
    served: tuple[RuntimeWithMetrics, httpx.AsyncClient], headers: dict[str, str]
) -> None:
    _, client = served
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "wacall_" not in response.text


async def test_metrics_with_the_token_are_prometheus_text(served: tuple[RuntimeWithMetrics, httpx.AsyncClient]) -> None:
    _, client = served
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")  # Prometheus's text format
    assert "wacall_live_calls 1.0" in response.text
    assert "# TYPE wacall_turn_stage_seconds histogram" in response.text
    assert "# TYPE wacall_calls_total counter" in response.text


async def test_webhook_acknowledgement_time_is_observed(served: tuple[RuntimeWithMetrics, httpx.AsyncClient]) -> None:
    runtime, client = served
    body = meta_bytes(connect_payload())
    ok = await client.post("/webhook", content=body, headers={"X-Hub-Signature-256": signature(body)})
    refused = await client.post("/webhook", content=body, headers={"X-Hub-Signature-256": "sha256=00"})
    assert (ok.status_code, refused.status_code) == (200, 401)
    assert value(runtime.metrics, "wacall_webhook_ack_seconds_count") == 2


async def test_an_app_for_a_runtime_without_metrics_has_no_metrics_route() -> None:
    from tests.test_app import FakeRuntime

    runtime = FakeRuntime(settings=Settings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN, metrics_token=TOKEN))
    async with _client(runtime) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404
        body = meta_bytes(connect_payload())
        ok = await client.post("/webhook", content=body, headers={"X-Hub-Signature-256": signature(body)})
        assert ok.status_code == 200


async def test_queue_depth_comes_from_the_handover_desk_at_scrape_time() -> None:
    from tests.handover.test_service import ASKED, Clock, FakeCall, make_service

    clock = Clock()
    service, _ = make_service(clock)
    metrics = Metrics(queue_depths=service.queue_depths)
    assert metrics.registry.get_sample_value("wacall_queue_depth", {"queue": "support"}) == 0
    call = FakeCall()
    service.on_handover(call, ASKED)
    assert value(metrics, "wacall_queue_depth", queue="support") == 1
    clock.now += 42
    call.ended.set()
    service.call_ended(call)
    assert metrics.registry.get_sample_value("wacall_queue_depth", {"queue": "support"}) == 0  # 0, not gone
    record = service.records[call.id]  # what the runtime reads when the call ends
    metrics.queue_waited(record.queue, record.waited_s)
    assert value(metrics, "wacall_queue_wait_seconds_sum", queue="support") == 42
    await service.aclose()


# ---- a listener of their own (`metrics_listen`) ---------------------------------------------------------------


async def test_a_metrics_listener_serves_them_on_its_own_address_and_the_public_app_has_none() -> None:
    from agent.metrics_server import MetricsListener

    settings = Settings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN, metrics_listen="127.0.0.1:0")
    runtime = RuntimeWithMetrics(settings)
    listener = MetricsListener(runtime.metrics, "127.0.0.1:0")
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            internal = await client.get(f"http://127.0.0.1:{listener.port}/metrics")
            elsewhere = await client.get(f"http://127.0.0.1:{listener.port}/healthz")
        async with _client(runtime) as client:
            public = await client.get("/metrics")
            document = (await client.get("/openapi.json")).json()
    finally:
        await listener.aclose()
    assert internal.status_code == 200 and "wacall_live_calls 1.0" in internal.text
    assert elsewhere.status_code == 404, "the internal listener serves metrics and nothing else"
    assert public.status_code == 404
    assert "/metrics" not in document["paths"]


async def test_a_metrics_listener_still_asks_for_the_token_when_one_is_set() -> None:
    from agent.metrics_server import MetricsListener

    listener = MetricsListener(Metrics(), "127.0.0.1:0", token=TOKEN)
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            refused = await client.get(f"http://127.0.0.1:{listener.port}/metrics")
            allowed = await client.get(
                f"http://127.0.0.1:{listener.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
    finally:
        await listener.aclose()
    assert (refused.status_code, allowed.status_code) == (401, 200)


async def test_a_taken_metrics_port_fails_start_up() -> None:
    from agent.metrics_server import MetricsListener

    first = MetricsListener(Metrics(), "127.0.0.1:0")
    await first.start()
    try:
        with pytest.raises(OSError):
            await MetricsListener(Metrics(), f"127.0.0.1:{first.port}").start()
    finally:
        await first.aclose()


@pytest.mark.parametrize("bad", ["9464", "metrics.internal:9464", "127.0.0.1:", "127.0.0.1:99999", ":9464"])
def test_the_metrics_listen_address_is_an_ip_and_a_port(bad: str) -> None:
    with pytest.raises(ConfigError, match="WACALL_METRICS_LISTEN"):
        load_settings(env={"WACALL_METRICS_LISTEN": bad})
    assert load_settings(env={"WACALL_METRICS_LISTEN": "[::1]:9464"}).metrics_listen == "[::1]:9464"
