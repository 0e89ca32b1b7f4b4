"""Shared resources of a running wacall process, and the registry that routes webhooks to calls.

One loaded Whisper model and one Piper voice serve every call through one bounded thread pool; calls
borrow them and never close them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.call import Call, CallServices, CallState
from agent.config import Settings
from agent.conversation import SORRY_TECHNICAL, ConversationConfig
from agent.dialogue.flow import Flow, load_flow
from agent.speech.models import resolve_stt_model, resolve_tts_voice
from agent.speech.stt import Transcriber, WhisperTranscriber
from agent.speech.tts import PiperSynthesizer, Synthesizer
from agent.speech.vad import VadConfig
from agent.whatsapp.graph import GraphClient, GraphError
from agent.whatsapp.webhooks import CallWebhook, WebhookPayload, call_events

log = logging.getLogger(__name__)

TOMBSTONE_TTL_S = 120.0


@dataclass
class Models:
    transcriber: Transcriber
    synthesizer: Synthesizer
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, settings: Settings) -> Models:
        """Load both models once (blocking, at startup: a first call must not pay for it)."""
        executor = ThreadPoolExecutor(max_workers=settings.speech.inference_threads, thread_name_prefix="infer")
        stt_dir = resolve_stt_model(settings.speech.stt_model_dir)
        model, config = resolve_tts_voice(settings.speech.tts_model, settings.speech.tts_config)
        transcriber = WhisperTranscriber(stt_dir, executor=executor, compute_type=settings.speech.stt_compute_type)
        synthesizer = PiperSynthesizer(model, config, executor=executor, cache_size=256)
        return cls(transcriber=transcriber, synthesizer=synthesizer, executor=executor)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def static_lines(flow: Flow) -> list[str]:
    """Every line a flow can say that does not depend on the call (no {{placeholders}})."""
    lines: list[str] = []
    candidates: list[str] = list(getattr(flow, "fallback", []) or [])
    for node in flow.nodes.values():
        candidates.extend(getattr(node, "say", []) or [])
    for line in candidates:
        if isinstance(line, str) and "{{" not in line and line not in lines:
            lines.append(line)
    return lines


class Runtime:
    """Owns settings, models, the Graph client and live calls; turns webhook events into call actions."""

    def __init__(self, settings: Settings, models: Models, *, flow: Flow | None = None) -> None:
        self.settings = settings
        self.models = models
        self.flow = flow or load_flow(settings.flow)
        self.graph = GraphClient(
            base_url=settings.graph_base_url,
            version=settings.graph_version,
            phone_number_id=settings.phone_number_id,
            token=settings.whatsapp_token,
        )
        vad = VadConfig(
            aggressiveness=settings.vad.aggressiveness,
            onset_frames=settings.vad.onset_frames,
            end_silence_ms=settings.vad.end_silence_ms,
            min_speech_ms=settings.vad.min_speech_ms,
            pause_ms=settings.vad.pause_ms,
        )
        self.services = CallServices(
            graph=self.graph,
            transcriber=models.transcriber,
            synthesizer=models.synthesizer,
            media_hosts=settings.media_hosts,
            ice_servers=settings.ice_servers,
            conversation=ConversationConfig(
                vad=vad,
                barge_in_min_ms=settings.speech.barge_in_min_ms,
                speculative_stt=settings.vad.speculative_stt,
                early_end_on_complete_sentence=settings.vad.early_end_on_complete_sentence,
            ),
        )
        self.calls: dict[str, Call] = {}
        self.finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tombstones: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()

    async def warm_up(self) -> None:
        """Synthesise the fallback line now, so a TTS failure mid-call still has something to say."""
        with contextlib.suppress(Exception):
            self.services.fallback_audio = await self.models.synthesizer.synthesize(SORRY_TECHNICAL)
        await self.presynthesize(self.flow)

    async def presynthesize(self, flow: Flow) -> int:
        """Synthesise a flow's fixed lines ahead of time; the TTS cache then answers them instantly."""
        done = 0
        for line in static_lines(flow):
            try:
                await self.models.synthesizer.synthesize(line)
                done += 1
            except Exception:
                log.exception("could not pre-synthesise %r", line)
        log.info("pre-synthesised %d fixed lines of flow %s", done, flow.name)
        return done

    # webhook dispatch ---------------------------------------------------------
    def dispatch(self, payload: WebhookPayload) -> None:
        """Called by the webhook route after the 200 is decided: work happens in the background."""
        task = asyncio.create_task(self._handle(payload), name="webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, payload: WebhookPayload) -> None:
        for event in call_events(payload):
            if event.phone_number_id != self.settings.phone_number_id:
                log.warning("ignoring call event for another number %s", event.phone_number_id)
                continue
            try:
                if event.call.event == "connect":
                    await self._on_connect(event)
                elif event.call.event == "terminate":
                    await self._on_terminate(event)
                else:
                    log.info("call %s: ignoring event %s", event.call.id, event.call.event)
            except Exception:
                log.exception("call %s: failed handling %s", event.call.id, event.call.event)

    async def _on_connect(self, event: CallWebhook) -> None:
        call_event = event.call
        if call_event.id in self.calls or call_event.id in self.finished:
            log.info("call %s: duplicate connect ignored", call_event.id)
            return
        if self._tombstones.pop(call_event.id, None) is not None:
            log.info("call %s: connect after its terminate; not answering", call_event.id)
            return
        if call_event.session is None or call_event.session.sdp_type != "offer":
            log.info("call %s: connect without an offer (business-initiated) not handled yet", call_event.id)
            return
        if len(self.calls) >= self.settings.max_concurrent_calls:
            log.warning("call %s: rejecting, %d calls already live", call_event.id, len(self.calls))
            with contextlib.suppress(GraphError):
                await self.graph.reject(call_event.id)
            return
        contact = event.contact
        call = Call(
            call_id=call_event.id,
            services=self.services,
            flow=self.flow,
            caller_number=call_event.from_ or (contact.wa_id if contact else None),
            caller_name=contact.name if contact else None,
            on_ended=self._forget,
        )
        self.calls[call.id] = call
        log.info("call %s: incoming from %s", call.id, call.caller_number)
        await call.answer(call_event.session.sdp)

    async def _on_terminate(self, event: CallWebhook) -> None:
        call = self.calls.get(event.call.id)
        if call is None:
            if event.call.id not in self.finished:
                self._prune_tombstones()
                self._tombstones[event.call.id] = time.monotonic()
            return
        await call.on_remote_terminate(event.call.status)

    def _prune_tombstones(self) -> None:
        cutoff = time.monotonic() - TOMBSTONE_TTL_S
        for call_id, t in list(self._tombstones.items()):
            if t < cutoff:
                del self._tombstones[call_id]

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.finished[call.id] = call.summary()
        while len(self.finished) > 500:
            self.finished.popitem(last=False)

    # shutdown -----------------------------------------------------------------
    async def aclose(self) -> None:
        for call in list(self.calls.values()):
            if call.state is not CallState.ENDED:
                await call.hangup("shutdown")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.graph.aclose()
