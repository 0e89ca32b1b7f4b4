"""Per-call traces: the spans a finished call becomes, built from the timestamps it recorded anyway."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.config import ConfigError, load_settings
from agent.tracing import CallTrace, CallTracer, make_tracer, traces_endpoint
from agent.turn_record import TurnMetrics

WALL_AT_MONOTONIC_100 = 1_800_000_000.0


def _tracer(exporter: InMemorySpanExporter) -> CallTracer:
    # Monotonic 100.0 is wall time 1.8e9: every span's epoch time follows from its monotonic stamp.
    return CallTracer(exporter=exporter, wall_clock=lambda: WALL_AT_MONOTONIC_100, clock=lambda: 100.0)


def _call(**overrides: object) -> CallTrace:
    turns = (
        TurnMetrics(
            caller_speech_end=60.0,
            transcript_ready=60.3,
            reply_text_ready=60.31,
            first_audio_synthesized=60.4,
            first_audio_sent=60.42,
            transcript="where is my order",
            reply="it ships tomorrow",
        ),
        TurnMetrics(caller_speech_end=70.0, transcript_ready=70.2, interrupted=True),  # the caller hung up
        TurnMetrics(),  # a turn that never had an end of speech: nothing to time
    )
    values: dict[str, object] = {
        "call_id": "wacid.ABC",
        "direction": "USER_INITIATED",
        "flow": "demo",
        "outcome": "answered",
        "end_reason": "caller_ended",
        "created_at": 50.0,
        "accepted_at": 50.25,
        "ended_at": 80.0,
        "turns": turns,
        **overrides,
    }
    return CallTrace(**values)  # type: ignore[arg-type]


def _epoch_ns(monotonic: float) -> int:
    return int((monotonic - 100.0 + WALL_AT_MONOTONIC_100) * 1e9)


def test_a_call_becomes_one_trace_with_answer_turns_and_stages() -> None:
    exporter = InMemorySpanExporter()
    tracer = _tracer(exporter)
    tracer.call_ended(_call())
    tracer.close()
    spans = {(span.name, span.start_time): span for span in exporter.get_finished_spans()}
    names = sorted(name for name, _ in spans)
    assert names == ["answer", "call", "reply", "synthesize", "transcribe", "transcribe", "turn", "turn"]
    call = next(span for (name, _), span in spans.items() if name == "call")
    assert call.parent is None
    assert (call.start_time, call.end_time) == (_epoch_ns(50.0), _epoch_ns(80.0))
    assert call.attributes is not None and call.attributes["wacall.call.id"] == "wacid.ABC"
    assert call.resource.attributes["service.name"] == "wacall"
    trace_ids = {span.context.trace_id for span in spans.values()}
    assert trace_ids == {call.context.trace_id}, "every span of a call belongs to its one trace"
    first_turn = spans[("turn", _epoch_ns(60.0))]
    assert first_turn.parent is not None and first_turn.parent.span_id == call.context.span_id
    assert first_turn.end_time == _epoch_ns(60.42)
    assert first_turn.attributes is not None and first_turn.attributes["wacall.turn.voice_to_voice_s"] == 0.42
    synthesize = next(span for (name, _), span in spans.items() if name == "synthesize")
    assert synthesize.parent is not None and synthesize.parent.span_id == first_turn.context.span_id
    assert (synthesize.start_time, synthesize.end_time) == (_epoch_ns(60.31), _epoch_ns(60.4))
    # The interrupted turn ends where it stopped: at its transcript.
    second_turn = spans[("turn", _epoch_ns(70.0))]
    assert second_turn.end_time == _epoch_ns(70.2) and second_turn.attributes is not None
    assert second_turn.attributes["wacall.turn.interrupted"] is True


def test_a_call_never_answered_has_no_answer_span_and_caller_words_stay_out() -> None:
    exporter = InMemorySpanExporter()
    tracer = _tracer(exporter)
    tracer.call_ended(_call(accepted_at=None, turns=(), outcome="missed", end_reason="timeout"))
    tracer.call_ended(_call())
    tracer.close()
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans].count("answer") == 1
    for span in spans:
        # Transcripts are personal data: traces leave the machine, the words stay in the call record.
        assert "where is my order" not in repr(dict(span.attributes or {}))


def test_a_broken_call_never_raises_into_the_runtime(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    tracer = _tracer(exporter)
    tracer.call_ended(_call(turns=(object(),)))  # not a TurnMetrics
    tracer.close()
    assert "could not build its trace" in caplog.text


def test_tracing_is_off_by_default_and_the_endpoint_is_an_http_url() -> None:
    assert make_tracer(None) is None and make_tracer("") is None
    assert load_settings(env={}).otlp_endpoint is None
    settings = load_settings(env={"WACALL_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert settings.otlp_endpoint == "http://127.0.0.1:4318"
    with pytest.raises(ConfigError, match="WACALL_OTLP_ENDPOINT"):
        load_settings(env={"WACALL_OTLP_ENDPOINT": "127.0.0.1:4318"})


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_the_traces_path_is_added_once(given: str, used: str) -> None:
    assert traces_endpoint(given) == used
