"""Prometheus metrics of one Runtime: what an operator graphs and alerts on while calls are live.

Each Runtime owns its own `CollectorRegistry` rather than prometheus-client's global one, so several runtimes
in one process (tests, a simulation next to a server) never clash over metric names. The rest of wacall never
imports prometheus: the runtime hands small callbacks to the modules it wires (Graph client, store health) and
records call-level figures itself when a call is accepted and when it ends.

Values that exist anyway at any moment (live calls, queue depths, the inference pool's backlog) are read at
scrape time through callables, so they can never drift from the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.turn_record import TurnMetrics

log = logging.getLogger(__name__)

# Seconds from the caller's last voiced frame; the README's targets are p50 ≤ 0.45 s, p95 ≤ 0.8 s.
TURN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Inbound: connect webhook → accept (Meta wants it within ~20 s); outbound: dialling → the user picks up.
ANSWER_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 60.0)
QUEUE_WAIT_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
# Meta retries a webhook it waited too long for; the ledger's write is the slow part.
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A 20 ms audio frame late by more than a few frames is audible.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

#: TurnMetrics timestamp → the `stage` label, each measured from the caller's end of speech.
TURN_STAGES = {
    "transcript": "transcript_ready",
    "reply_text": "reply_text_ready",
    "first_audio": "first_audio_synthesized",
    "voice_to_voice": "first_audio_sent",  # server-side estimate: the network and jitter buffer are not in it
}

DIRECTIONS = {"USER_INITIATED": "inbound", "BUSINESS_INITIATED": "outbound"}


def direction_label(direction: str) -> str:
    return DIRECTIONS.get(direction, "other")


def outcome_label(outcome: str) -> str:
    """A bounded label: outcomes of calls never answered can carry detail ("graph_error: 131000") after a colon."""
    return (outcome.split(":", 1)[0].strip() or "unknown")[:40]


def graph_error_code(error: Any) -> str:
    """Meta's error code when it sent one; otherwise what kind of failure it was."""
    code = getattr(error, "code", None)
    if code is not None:
        return str(code)
    status = getattr(error, "status", 0) or 0
    if status == 0:
        return "transport"  # no HTTP answer at all: DNS, connect, timeout
    if 200 <= status < 300:
        return "bad_response"  # an answer without the expected success or id
    return f"http_{status}"


class _ScrapeTimeGauges(Collector):
    """Gauges read when Prometheus scrapes, from the runtime's own state."""

    def __init__(
        self,
        live_calls: Callable[[], int],
        queue_depths: Callable[[], Mapping[str, int]],
        inference_queue: Callable[[], int | None],
    ) -> None:
        self._live_calls = live_calls
        self._queue_depths = queue_depths
        self._inference_queue = inference_queue

    def describe(self) -> Iterable[Any]:
        return []  # values come from callables: nothing to evaluate at registration

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily(
            "wacall_live_calls", "Calls holding a slot now (live and being dialled).", value=self._live_calls()
        )
        depth = GaugeMetricFamily(
            "wacall_queue_depth", "Callers waiting for a person, by handover queue.", labels=["queue"]
        )
        with contextlib.suppress(Exception):  # a scrape must never fail because the desk is mid-change
            for queue, waiting in sorted(self._queue_depths().items()):
                depth.add_metric([queue], waiting)
        yield depth
        pending = None
        with contextlib.suppress(Exception):
            pending = self._inference_queue()
        if pending is not None:
            yield GaugeMetricFamily(
                "wacall_inference_queue_length",
                "STT/TTS jobs waiting for a thread of the shared inference pool.",
                value=pending,
            )


class Metrics:
    """The metric objects of one Runtime, and the few methods the runtime and the app call to move them."""

    def __init__(
        self,
        *,
        live_calls: Callable[[], int] = lambda: 0,
        queue_depths: Callable[[], Mapping[str, int]] = dict,
        inference_queue: Callable[[], int | None] = lambda: None,
        loop_lag_every_s: float = 0.5,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loop_lag_every_s = loop_lag_every_s
        self._lag_task: asyncio.Task[None] | None = None
        r = self.registry
        r.register(_ScrapeTimeGauges(live_calls, queue_depths, inference_queue))
        self.calls = Counter(
            "wacall_calls_total", "Calls that ended, by direction and outcome.", ["direction", "outcome"], registry=r
        )
        self.turn_stage = Histogram(
            "wacall_turn_stage_seconds",
            "Seconds from the caller's end of speech to each stage of the bot's answer.",
            ["stage"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.answer = Histogram(
            "wacall_answer_seconds",
            "Seconds from a call's start (connect webhook, or dialling) to the call being up.",
            ["direction"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter(
            "wacall_barge_ins_total", "Times a caller talked over the bot and stopped it.", registry=r
        )
        self.false_starts = Counter(
            "wacall_false_starts_total",
            "Answers whose audio had started and was dropped because the caller went on talking.",
            registry=r,
        )
        self.handovers = Counter(
            "wacall_handovers_total", "Calls handed over to a person, by queue.", ["queue"], registry=r
        )
        self.queue_wait = Histogram(
            "wacall_queue_wait_seconds",
            "Seconds a handed-over caller waited for a person (written when the handover ends).",
            ["queue"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.graph_errors = Counter(
            "wacall_graph_errors_total",
            "Failed Graph API requests (each attempt, retries included), by action and Meta's error code.",
            ["action", "code"],
            registry=r,
        )
        self.webhook_ack = Histogram(
            "wacall_webhook_ack_seconds",
            "Seconds wacall took to answer a webhook POST (reading, checking and storing it).",
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "wacall_event_loop_lag_seconds",
            "How late the event loop woke a periodic sleep: time every call's audio waited too.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.store_write_failures = Counter(
            "wacall_store_write_failures_total", "Writes to the call store that failed.", registry=r
        )

    # --- exposition ------------------------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type, so the app never imports prometheus-client itself."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # --- what the runtime records ---------------------------------------------------------------------------

    def call_answered(self, direction: str, seconds: float) -> None:
        self.answer.labels(direction_label(direction)).observe(max(0.0, seconds))

    def call_ended(
        self, direction: str, outcome: str, turns: Sequence[TurnMetrics] = (), barge_ins: int = 0, false_starts: int = 0
    ) -> None:
        """Once per call, from the runtime's end-of-call bookkeeping."""
        self.calls.labels(direction_label(direction), outcome_label(outcome)).inc()
        for turn in turns:
            self.turn_observed(turn)
        if barge_ins > 0:
            self.barge_ins.inc(barge_ins)
        if false_starts > 0:
            self.false_starts.inc(false_starts)

    def turn_observed(self, turn: TurnMetrics) -> None:
        """Each stage the turn reached; a stage it never reached (an interrupted answer) is left out."""
        start = turn.caller_speech_end
        if start is None:
            return
        for stage, field in TURN_STAGES.items():
            at = getattr(turn, field)
            if at is not None:
                self.turn_stage.labels(stage).observe(max(0.0, at - start))

    def handover_started(self, queue: str) -> None:
        self.handovers.labels(queue).inc()

    def queue_waited(self, queue: str, seconds: float) -> None:
        self.queue_wait.labels(queue).observe(max(0.0, seconds))

    def graph_error(self, action: str, error: Any) -> None:
        """`GraphClient.on_error`."""
        self.graph_errors.labels(action, graph_error_code(error)).inc()

    def webhook_acknowledged(self, seconds: float) -> None:
        self.webhook_ack.observe(max(0.0, seconds))

    def store_write_failed(self) -> None:
        """May be called from the store's writer thread: prometheus-client's counters take a lock."""
        self.store_write_failures.inc()

    # --- event-loop lag --------------------------------------------------------------------------------------

    def start_loop_lag(self) -> None:
        """Start measuring the running loop's lag, once; `aclose` stops it."""
        if self._lag_task is not None and not self._lag_task.done():
            return
        self._lag_task = asyncio.get_running_loop().create_task(self._measure_loop_lag(), name="loop-lag")

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        every = self.loop_lag_every_s
        while True:
            asked = loop.time()
            await asyncio.sleep(every)
            self.loop_lag.observe(max(0.0, loop.time() - asked - every))

    async def aclose(self) -> None:
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
