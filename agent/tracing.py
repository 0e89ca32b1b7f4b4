"""OpenTelemetry traces, one per call, for operators who already follow requests through a tracing backend.

Off unless `otlp_endpoint` is set and the `otel` extra is installed. Spans are built when the call ends, from
the timestamps the call and its conversation record anyway (the same figures as `/metrics` and the call
record), instead of being opened and closed along the audio path: a tracing backend that is slow or down
can then never cost a caller a frame, and a call that never reaches its end (the process was killed) simply
has no trace. The SDK's batch processor exports on its own thread.

The shape of a trace: a `call` span from the connect (or dialling) to the end, an `answer` child up to the
moment the call was up, and per caller turn a `turn` child from the caller's end of speech to the bot's first
audio, with `transcribe`, `reply` and `synthesize` children for the stages it reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.turn_record import TurnMetrics

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

OTEL_MISSING = "OpenTelemetry is not installed: pip install 'wacall[otel]' (or unset WACALL_OTLP_ENDPOINT)"

#: A turn's stages, each from the stage before it (span name, TurnMetrics field that ends it).
TURN_STAGES: tuple[tuple[str, str], ...] = (
    ("transcribe", "transcript_ready"),
    ("reply", "reply_text_ready"),
    ("synthesize", "first_audio_synthesized"),
)


@dataclass(frozen=True)
class CallTrace:
    """What a finished call hands the tracer: its identity, outcome and monotonic timestamps."""

    call_id: str
    direction: str
    flow: str
    outcome: str
    end_reason: str
    created_at: float
    accepted_at: float | None
    ended_at: float
    turns: tuple[TurnMetrics, ...]
    handled_by: str | None = None


def traces_endpoint(endpoint: str) -> str:
    """OTLP/HTTP collectors take traces at /v1/traces; accept either the base URL or the full one."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class CallTracer:
    """Turns finished calls into spans; `close` flushes what is left (blocking: run it off the loop)."""

    def __init__(
        self,
        *,
        endpoint: str = "",
        service_name: str = "wacall",
        exporter: SpanExporter | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise RuntimeError(OTEL_MISSING) from exc
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise RuntimeError(OTEL_MISSING) from exc
            exporter = OTLPSpanExporter(endpoint=traces_endpoint(endpoint), timeout=5)
        self._provider: TracerProvider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        # Our own provider, not the global one: embedding wacall must not change the host program's tracing.
        self._tracer = self._provider.get_tracer("wacall")
        self._wall_clock = wall_clock
        self._clock = clock

    def call_ended(self, call: CallTrace) -> None:
        """Never raises: a trace is worth less than the call record written next to it."""
        try:
            self._emit(call)
        except Exception:
            log.exception("call %s: could not build its trace", call.call_id)

    def _emit(self, call: CallTrace) -> None:
        from opentelemetry import trace

        offset = self._wall_clock() - self._clock()  # monotonic → epoch seconds, read once per call

        def ns(at: float) -> int:
            return int((at + offset) * 1e9)

        attributes: dict[str, Any] = {
            "wacall.call.id": call.call_id,
            "wacall.call.direction": call.direction,
            "wacall.flow": call.flow,
            "wacall.call.outcome": call.outcome,
            "wacall.call.end_reason": call.end_reason,
            "wacall.call.turns": len(call.turns),
        }
        if call.handled_by:
            attributes["wacall.call.handled_by"] = call.handled_by
        root = self._tracer.start_span("call", start_time=ns(call.created_at), attributes=attributes)
        context = trace.set_span_in_context(root)
        if call.accepted_at is not None:
            self._tracer.start_span("answer", context=context, start_time=ns(call.created_at)).end(
                end_time=ns(call.accepted_at)
            )
        for n, turn in enumerate(call.turns, 1):
            self._turn(n, turn, context, ns)
        root.end(end_time=ns(call.ended_at))

    def _turn(self, n: int, turn: TurnMetrics, context: Any, ns: Callable[[float], int]) -> None:
        start = turn.caller_speech_end
        if start is None:
            return
        reached = [at for at in _stage_times(turn) if at is not None]
        end = turn.first_audio_sent or (max(reached) if reached else start)
        from opentelemetry import trace

        span = self._tracer.start_span(
            "turn",
            context=context,
            start_time=ns(start),
            attributes={
                "wacall.turn.number": n,
                "wacall.turn.interrupted": turn.interrupted,
                "wacall.turn.speculative_stt": turn.speculative,
                "wacall.turn.continued": turn.continued,
                # Seconds, like the `wacall_turn_stage_seconds` histogram: one figure to search traces by.
                "wacall.turn.voice_to_voice_s": round(end - start, 4),
            },
        )
        inner = trace.set_span_in_context(span)
        previous = start
        for name, field in TURN_STAGES:
            at = getattr(turn, field)
            if at is None:
                break
            self._tracer.start_span(name, context=inner, start_time=ns(previous)).end(end_time=ns(max(previous, at)))
            previous = max(previous, at)
        span.end(end_time=ns(max(start, end)))

    def close(self) -> None:
        """Flush and stop the exporter thread (blocks up to the exporter's timeout)."""
        try:
            self._provider.shutdown()
        except Exception:
            log.exception("could not flush the last traces")


def _stage_times(turn: TurnMetrics) -> Iterable[float | None]:
    return (turn.transcript_ready, turn.reply_text_ready, turn.first_audio_synthesized, turn.first_audio_sent)


def make_tracer(endpoint: str | None, service_name: str = "wacall") -> CallTracer | None:
    """The runtime's tracer, or None when tracing is off; a missing SDK is a clear start-up error."""
    if not endpoint:
        return None
    return CallTracer(endpoint=endpoint, service_name=service_name)
