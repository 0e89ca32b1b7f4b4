"""Shared resources of a running wacall process, and the registry that routes webhooks to calls.

One loaded Whisper model and one Piper voice serve every call through one bounded thread pool; calls
borrow them and never close them. Every webhook is written to the ledger (SQLite) before it is
acknowledged; only events not seen before are acted on. With several workers on one PostgreSQL database,
an event is acted on by the worker owning its call, whichever received it (agent/cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.call import Call, CallServices, CallState
from agent.cluster import ENDED_BY_WORKER_LOSS, Cluster, TerminatedMeanwhile
from agent.config import Settings
from agent.conversation import NO_AGENTS, SORRY_HEARING, SORRY_LLM, SORRY_TECHNICAL
from agent.dialogue.effects import Handover, HttpRequest, SendCallButton
from agent.dialogue.flow import Flow
from agent.dialogue.reloader import FlowReloader
from agent.ledger import CallLedger, FreshEvents
from agent.logs import call_id_var
from agent.metrics import Metrics
from agent.providers.load import make_end_of_turn, make_llm, make_synthesizer, make_transcriber, manifest_for
from agent.recordings.service import Recordings
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer, split_for_speech
from agent.store.base import CallRecord, Store
from agent.store.select import open_configured_store
from agent.tracing import CallTrace, make_tracer
from agent.whatsapp.graph import GraphClient, GraphError, retryable
from agent.whatsapp.payloads import CallContext
from agent.whatsapp.pricing import RateCard
from agent.whatsapp.rules import (
    DEFAULT_LIMITS,
    BusinessHours,
    CallingLimits,
    Refusal,
    Refused,
    check_capacity,
    check_not_draining,
)
from agent.whatsapp.webhooks import CallWebhook, MessageWebhook, StatusWebhook, WebhookPayload

if TYPE_CHECKING:
    from agent.handover.service import HandoverService

log = logging.getLogger(__name__)


@dataclass
class Models:
    transcriber: Transcriber
    synthesizer: Synthesizer
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, settings: Settings) -> Models:
        """Load both models once (blocking, at startup: a first call must not pay for it), by the engines the
        model manifest names (agent/providers)."""
        manifest = manifest_for(settings)  # every role's engine checked before anything loads
        executor = ThreadPoolExecutor(max_workers=settings.speech.inference_threads, thread_name_prefix="infer")
        try:
            transcriber = make_transcriber(settings, executor, manifest)
            synthesizer = make_synthesizer(settings, executor, manifest)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(transcriber=transcriber, synthesizer=synthesizer, executor=executor)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def static_lines(flow: Flow) -> list[str]:
    """Every line a flow can say that does not depend on the call (no {{placeholders}})."""
    lines: list[str] = []
    candidates: list[str] = list(getattr(flow, "fallback", []) or [])
    announce = getattr(getattr(flow, "recording", None), "announce", "")
    if announce:
        candidates.append(announce)
    for node in flow.nodes.values():
        candidates.extend(getattr(node, "say", []) or [])
    for line in candidates:
        if not isinstance(line, str):
            continue
        # A personalised line's fixed part ("…, thanks for calling us.") is a speech piece of its own.
        pieces = [line] if "{{" not in line else split_for_speech(line, quick_start=True)
        for piece in pieces:
            if "{{" not in piece and piece not in lines:
                lines.append(piece)
    return lines


def open_store(settings: Settings) -> Store:
    """PostgreSQL when `database_url` is set (WACALL_DATABASE_URL), else `<data_dir>/wacall.sqlite3`."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return open_configured_store(settings.database_url.get_secret_value(), settings.data_dir)


class Runtime:
    """Owns settings, models, the Graph client, the ledger and live calls."""

    def __init__(
        self,
        settings: Settings,
        models: Models,
        *,
        flow: Flow | None = None,
        store: Store | None = None,
        limits: CallingLimits | None = None,
        clock: Any = None,
        simulated: bool = False,
        http: Callable[[HttpRequest], Awaitable[tuple[bool, Any]]] | None = None,
    ) -> None:
        """`simulated` marks every call record as placed by `wacall simulate`; `http` replaces the real
        business-system requests of flows' `http` steps (the simulation's canned answers)."""
        self.settings = settings
        self.simulated = simulated
        self.models = models
        # A flow passed in is fixed (tests, simulate); a flow from a file is re-read when it changes, and a
        # broken edit is refused with its file:line:col while calls go on with the last good version.
        self._reloader = None if flow is not None else FlowReloader(settings.flow)
        self._fixed_flow = flow
        # Built first: the Graph client, the store's health and the handover desk report into it.
        self.metrics = Metrics(
            live_calls=lambda: self.live_count,
            queue_depths=lambda: self.handover.queue_depths() if self.handover is not None else {},
            inference_queue=lambda: _queued_jobs(self.models.executor),
        )
        # Per-call traces (off by default); a missing SDK stops start-up here rather than losing traces quietly.
        self.tracer = make_tracer(settings.otlp_endpoint, settings.otel_service_name)
        self.graph = GraphClient(
            base_url=settings.graph_base_url,
            version=settings.graph_version,
            phone_number_id=settings.phone_number_id,
            token=settings.whatsapp_token.get_secret_value(),
            on_error=self.metrics.graph_error,
        )
        self.store = store or open_store(settings)
        ledger_kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.ledger = CallLedger(
            self.store,
            phone_number_id=settings.phone_number_id,
            business_number=settings.business_number,
            limits=limits or (CallingLimits.sandbox() if settings.sandbox_limits else DEFAULT_LIMITS),
            hours=BusinessHours.from_config(settings.business_hours) if settings.business_hours else None,
            rate_card=RateCard.load(settings.rate_card),
            **ledger_kwargs,
        )
        # Several workers sharing a PostgreSQL database (agent/cluster.py); None with SQLite's one process.
        self.cluster = Cluster.for_store(self.store, clock=self.ledger.now)
        if self.cluster is None:
            self._owe_endings_left_by_last_process(simulated)
        else:
            # Only the calls of this worker id's last process and of dead workers: the others' are live.
            taken = self.cluster.join(simulated=simulated)
            self.owed_endings = [r for r in taken if _reached_meta(r)]
            self._unsettled = {r.id for r in self.owed_endings}  # each has its ENDING_OWED event now
            self._ended_by_restart = {r.id for r in taken}
            self.ledger.router = self.cluster.route
        self.store_health = StoreHealth(on_failure=self.metrics.store_write_failed)
        self.ledger.on_background_write = self.store_health.note
        self.draining = False
        self.services = CallServices(
            graph=self.graph,
            transcriber=models.transcriber,
            synthesizer=models.synthesizer,
            media_hosts=settings.media_hosts,
            ice_servers=settings.ice_servers,
            conversation=settings.conversation(),
            no_rtp_timeout_s=settings.media.no_rtp_timeout_s,
            max_call_s=settings.media.max_call_s,
            max_call_goodbye=settings.media.max_call_goodbye,
        )
        check = make_end_of_turn(settings, models.executor)
        if check is not None:
            self.services.endpoint_check = check
        if http is not None:
            self.services.http = http
        self.llm = self._make_llm(settings)
        self.services.llm = self.llm
        # Always there, even with recording off in the settings: a flow may turn it on, and recordings made
        # earlier must still be downloadable, deletable and expire.
        self.recordings = Recordings(
            directory=settings.recordings.directory(settings.data_dir),
            store=self.store,
            enabled=settings.recordings.enabled,
            retention_days=settings.recordings.retention_days,
            sweep_every_s=settings.recordings.sweep_every_s,
            bitrate=settings.recordings.bitrate,
        )
        self.services.recordings = self.recordings
        self.services.on_permission_request = self._permission_requested_by_flow
        self.services.on_call_button = self._call_button_by_flow
        self.calls: dict[str, Call] = {}
        self._by_ref: dict[str, Call] = {}
        self.finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()
        self.handover = self._make_handover(settings)
        self._dialing: dict[str, Call] = {}  # calls we place, counted against the caps before Meta answers
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpointed: dict[str, int] = {}  # call id → transcript length last written
        self._pending_started = False
        self._start_pending()

    def _owe_endings_left_by_last_process(self, simulated: bool) -> None:
        """One process on its database: every call still live in it was left by the last process."""
        # Only calls of our own kind: a simulation sharing the data dir must not end a live server's calls.
        # Those that reached Meta are owed a terminate (or reject): Meta bills a call until it hears of its end.
        self.owed_endings = [r for r in self.store.live_calls() if r.simulated == simulated and _reached_meta(r)]
        # And calls that ended while Meta could not be told (every retry of the terminate failed).
        unsettled = [r for r in self.store.unsettled_endings() if r.simulated == simulated]
        self._unsettled = {r.id for r in unsettled}
        self.owed_endings += unsettled
        # Their connects may still be stored unhandled: never answer those again after the restart.
        self._ended_by_restart = {r.id for r in self.owed_endings}
        restarted = self.store.mark_live_calls_ended(now=self.ledger.now(), simulated=simulated)
        if restarted:
            log.warning("%d calls were live when wacall last stopped; marked ended_by_restart", len(restarted))

    def _make_handover(self, settings: Settings) -> HandoverService | None:
        """The agent console's desk, when the config has queues; flows then hand callers over to people."""
        # {queue: fixed extra skills} of the flow's handover nodes; templated skills are only known per call.
        wanted = {
            node.handover.queue: [s for s in node.handover.skills if "{{" not in s]
            for node in self.flow.nodes.values()
            if getattr(node, "handover", None) is not None
        }
        if not settings.handover.enabled:
            if wanted:
                log.warning(
                    "flow %s hands over to %s, but the config has no handover queues (handover.queues): callers "
                    "sent there hear that nobody is available and the call ends",
                    self.flow.name,
                    ", ".join(sorted(wanted)),
                )
            return None
        from agent.handover.service import HandoverService

        for problem in settings.handover.queue_problems(wanted):
            log.warning("flow %s: %s", self.flow.name, problem)
        missing = settings.handover.missing_tokens()
        if missing:
            log.warning("agents cannot sign in to the console until these are set: %s", ", ".join(missing))
        shared: dict[str, Any] = {}
        if self.cluster is not None:
            # Several workers: one desk for all of them, kept in the database (agent/handover/shared.py), on
            # wall-clock time, which the workers share.
            from agent.cluster import Identity
            from agent.handover.shared import SharedDesk, desk_key

            shared = {
                "shared": SharedDesk(
                    self.store,
                    [q.to_queue() for q in settings.handover.queues],
                    [a.to_agent() for a in settings.handover.agents],
                    worker_id=self.cluster.worker_id,
                    channel_of=lambda worker: Identity(worker).channel,
                    key=desk_key(settings.app_secret.get_secret_value()),
                    judges_leases=self.cluster.judges_leases,
                ),
                "clock": time.time,
            }
            shared["shared"].rejoin(time.time())
        service = HandoverService(
            settings.handover,
            store=self.store,
            transcriber=self.models.transcriber,
            media_hosts=settings.media_hosts,
            ice_servers=settings.ice_servers,
            request_permission=self.request_permission,
            **shared,
        )

        def on_handover(call: Call, handover: Handover) -> None:
            self.metrics.handover_started(handover.queue)
            service.on_handover(call, handover)

        self.services.on_handover = on_handover
        self.services.on_handover_keys = service.keys_pressed
        return service

    @property
    def flow(self) -> Flow:
        """The flow for a new call."""
        if self._reloader is None:
            assert self._fixed_flow is not None
            return self._fixed_flow
        return self._reloader.current()

    @staticmethod
    def _make_llm(settings: Settings) -> Any:
        """An LLM client when one is configured; flows without LLM nodes never need it."""
        return make_llm(settings)

    async def warm_up(self) -> None:
        """Synthesise the fallback line now, so a TTS failure mid-call still has something to say.

        Also starts the event-loop lag measurement and the recordings' retention sweep (first run at once, so
        expired recordings go at start-up): every server (and simulation) warms up in the loop it then serves
        from, right before serving; `aclose` stops both."""
        self.metrics.start_loop_lag()
        if not any(t.get_name() == "recordings-retention" for t in self._tasks):
            self._spawn(self.recordings.keep_sweeping(), "recordings-retention")  # cancelled by `aclose`
        if self.cluster is not None and not any(t.get_name() == "cluster" for t in self._tasks):
            self._spawn(
                self.cluster.run(
                    simulated=self.simulated,
                    on_keys=self._forwarded,
                    on_catch_up=self._catch_up,
                    on_orphans=self._take_over,
                    on_lease_lost=self._lease_lost,
                ),
                "cluster",
            )  # cancelled by `aclose`
        with contextlib.suppress(Exception):
            self.services.fallback_audio = await self.models.synthesizer.synthesize(SORRY_TECHNICAL)
            extra = [q.hold_message for q in self.settings.handover.queues] if self.handover is not None else []
            if self.settings.shutdown.goodbye:
                extra.append(self.settings.shutdown.goodbye)
            for line in (SORRY_LLM, SORRY_HEARING, NO_AGENTS, *extra):
                await self.models.synthesizer.synthesize(line)  # into the TTS cache: fallbacks must be instant
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

    # webhooks -----------------------------------------------------------------
    async def accept_webhook(self, payload: WebhookPayload) -> FreshEvents:
        """Commit the delivery to the ledger (before the 200) and start handling what is new.

        The commit runs on the store's writer thread and this awaits it, so the loop keeps serving calls while
        the disk syncs or another process holds the database; it raises (and Meta gets a 500 and retries)
        when the delivery could not be stored, in which case none of its events is.
        """
        self._start_pending()
        try:
            fresh = await self.ledger.record_webhook(payload)
        except Exception as exc:
            self.store_health.failed(exc)
            raise
        if fresh.duplicates:
            log.info("ignored %d duplicate webhook events", fresh.duplicates)
        if fresh:
            self._spawn(self._handle(fresh), "webhook")
        return fresh

    def _start_pending(self) -> None:
        """Hand events stored but never handled (the last process died first) to the usual handler, once.

        Called from `__init__` (when a loop is already running) and again from `accept_webhook` and
        `handle_pending`, whichever comes first in a loop: `__init__` may run before the loop exists.
        """
        if self._pending_started:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._pending_started = True
        if self.cluster is not None:
            self._spawn(self._catch_up(), "pending-webhooks")  # only this worker's: others handle theirs
            return
        fresh = self.ledger.pending_events()
        if fresh.keys:
            log.warning("handling %d webhook events stored but never handled before the restart", len(fresh.keys))
            self._spawn(self._handle(fresh), "pending-webhooks")

    async def handle_pending(self) -> None:
        """Start-up: handle the events an earlier process stored but never handled, and wait for that."""
        self._start_pending()
        pending = [t for t in self._tasks if t.get_name() == "pending-webhooks"]
        await asyncio.gather(*pending, return_exceptions=True)

    # other workers (agent/cluster.py) ---------------------------------------------------------------------
    async def _forwarded(self, keys: list[str]) -> None:
        """Events another worker stored for this one (the owner of their calls), named by a NOTIFY."""
        assert self.cluster is not None
        from agent.handover.shared import MESSAGE_PREFIX

        for key in [k for k in keys if k.startswith(MESSAGE_PREFIX)]:  # the shared handover desk's messages
            if self.handover is not None:
                self.handover.on_worker_message(key)
        keys = [k for k in keys if not k.startswith(MESSAGE_PREFIX)]
        if not keys:
            return
        fresh = self.ledger.pending_events(await self.cluster.events(keys))
        if fresh:
            log.info("handling %d event(s) forwarded by another worker", len(fresh.keys))
            self._spawn(self._handle(fresh), "forwarded-webhooks")

    async def _catch_up(self) -> None:
        """This worker's unhandled events, re-read: those whose NOTIFY was lost, and a crash's leftovers."""
        assert self.cluster is not None
        if self.handover is not None:
            self.handover.catch_up()  # the shared handover desk's messages, likewise (agent/handover/shared.py)
        try:
            fresh = self.ledger.pending_events(await self.cluster.unhandled())
        except Exception as exc:
            log.warning("could not read this worker's unhandled events: %s", exc)
            return
        if fresh:
            log.info("handling %d stored event(s) not handled yet", len(fresh.keys))
            await self._handle(fresh)

    async def _take_over(self, records: list[CallRecord]) -> None:
        """Calls of a dead worker, now ended and ours: Meta is owed their terminate, as after a restart."""
        self._ended_by_restart.update(r.id for r in records)
        owed = [r for r in records if _reached_meta(r)]
        self._unsettled.update(r.id for r in owed)
        self.owed_endings += owed
        for record in records:
            log.warning("call %s: its worker %s is gone; ended and terminated here", record.id, record.owner)
        await self.settle_restart()

    async def _lease_lost(self) -> None:
        """This worker stalled past its lease and another ended its calls and told Meta: drop them here too."""
        for call in list(self.calls.values()):
            await call.end(ENDED_BY_WORKER_LOSS)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _handle(self, fresh: FreshEvents) -> None:
        """Act on fresh events, then mark them handled: done, or failed in a way a retry would not fix.

        Cut short (a shutdown cancels it), only the events already acted on are marked: the rest are handled
        at the next start-up, where a connect will be stale and is not answered, but a terminate still counts.
        """
        done: list[object] = []
        try:
            for event in fresh.calls:
                done.append(event)
                call_id_var.set(event.call.id)  # the tasks this call starts from here log under its id
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
                await asyncio.sleep(0)  # a 1,000-event delivery must not hold the loop (and calls' audio) at once
            for status in fresh.statuses:
                done.append(status)
                call_id_var.set(status.status.id)
                try:
                    await self._on_status(status)
                except Exception:
                    log.exception("call %s: failed handling status %s", status.status.id, status.status.status)
                await asyncio.sleep(0)
            call_id_var.set(None)
            for message in fresh.messages:
                done.append(message)
                self._on_message(message)
        except BaseException:
            await self.ledger.handled(fresh, only=done)
            raise
        await self.ledger.handled(fresh)

    def _find(self, call_id: str, ref: str | None) -> Call | None:
        return self.calls.get(call_id) or (self._by_ref.get(ref) if ref else None)

    async def _on_connect(self, event: CallWebhook) -> None:
        call_event = event.call
        if call_event.session is not None and call_event.session.sdp_type == "answer":
            call = self._find(call_event.id, call_event.biz_opaque_callback_data)
            if call is None:
                log.warning("call %s: an answer for a call we do not know", call_event.id)
                return
            await call.on_answer_sdp(call_event.session.sdp)
            return
        if call_event.id in self.calls or call_event.id in self.finished or call_event.id in self._ended_by_restart:
            log.info("call %s: connect for a known call ignored", call_event.id)
            return
        user = call_event.from_ or (event.contact.wa_id if event.contact else None) or "unknown"
        if self.ledger.terminated_before_connect(call_event.id):
            log.info("call %s: connect arrived after its terminate; not answering", call_event.id)
            return
        age = self.ledger.now().timestamp() - call_event.timestamp
        if age > self.settings.stale_event_s:
            log.warning("call %s: connect is %.0f s old (stale); not answering", call_event.id, age)
            return
        if call_event.session is None:
            log.warning("call %s: connect without an SDP offer; rejecting", call_event.id)
            await self._reject_missed(call_event.id, user, "rejected", None, call_event.context)
            return
        refusal = check_not_draining(self.draining) or self.ledger.check_inbound(
            self.live_count, self.settings.max_concurrent_calls
        )
        if refusal is not None:
            log.warning("call %s: rejecting: %s", call_event.id, refusal.reason)
            await self._reject_missed(
                call_event.id, user, self.ledger.missed_reason(refusal), refusal, call_event.context
            )
            return
        contact = event.contact
        call = Call(
            call_id=call_event.id,
            services=self.services,
            flow=self.flow,
            caller_number=user,
            caller_name=contact.name if contact else None,
            on_ended=self._forget,
            context=call_event.context,
        )
        try:
            await self._register(call)
        except TerminatedMeanwhile:
            log.info("call %s: its terminate reached another worker first; not answering", call.id)
            return
        except Refused as exc:  # the deployment's cap is full, counting other workers' calls
            log.warning("call %s: rejecting: %s", call.id, exc.refusal.reason)
            await self._reject_missed(call.id, user, self.ledger.missed_reason(exc.refusal), exc.refusal, call.context)
            return
        except Exception as exc:
            # Not recorded means not taken: a call we cannot write down must not hold a slot for good.
            self.store_health.failed(exc)
            log.exception("call %s: could not record the incoming call; rejecting it", call.id)
            with contextlib.suppress(GraphError):
                await self.graph.reject(call.id)
            return
        log.info("call %s: incoming", call.id)
        log.debug("call %s: caller %s", call.id, call.caller_number)
        if call.context is not None:
            log.debug("call %s: came from a %s with payload %r", call.id, call.context.source, call.context.payload)
        try:
            await call.answer(call_event.session.sdp)
            if call.accepted_at is not None:
                self.metrics.call_answered(call.direction, call.accepted_at - call.created_at)
                self.ledger.user_call_connected(user)
                self.ledger.call_updated(call.id, state="active", answered_at=call.wall_accepted_at)
        except Exception as exc:
            self.store_health.failed(exc)
            log.exception("call %s: failed while answering; ending it", call.id)
            await call.hangup("answer_failed")  # ends it and, through _forget, frees its slot

    async def _reject_missed(
        self, call_id: str, user: str, reason: str, refusal: Refusal | None, context: CallContext | None = None
    ) -> None:
        with contextlib.suppress(GraphError):
            await self.graph.reject(call_id)
        self.ledger.call_started(
            CallRecord(
                id=call_id,
                direction="USER_INITIATED",
                from_number=user,
                state="ended",
                outcome=reason,
                simulated=self.simulated,
                # A campaign's missed calls count too: they are callers its button or link brought.
                payload=context.payload if context else None,
                payload_source=context.source if context else None,
            )
        )
        self.ledger.call_updated(call_id, end_reason=reason, ended_at=self.ledger.now())
        self.ledger.missed_call(user, reason, call_id, refusal)
        self.metrics.call_ended("USER_INITIATED", reason)

    @property
    def live_count(self) -> int:
        """Calls holding a slot: live ones and those we are dialling (reserved before Meta answers)."""
        return len(self.calls) + sum(1 for c in self._dialing.values() if c.id not in self.calls)

    async def _register(self, call: Call) -> None:
        """Count the call live (taking its slot at once) and write it down durably before answering; a failed
        write gives the slot back and raises: a call we cannot record is not taken."""
        inbound = call.direction == "USER_INITIATED"
        self.calls[call.id] = call
        self._by_ref[call.ref] = call
        record = CallRecord(
            id=call.id,
            direction=call.direction,
            from_number=call.user_number if inbound else self.settings.business_number or None,
            to_number=(self.settings.business_number or None) if inbound else call.user_number,
            state=str(call.state),
            biz_opaque_callback_data=call.ref,
            flow=call.flow.name,
            simulated=self.simulated,
            payload=call.context.payload if call.context else None,
            payload_source=call.context.source if call.context else None,
        )
        guard = None
        if self.cluster is not None:  # the cap counts every worker's calls, checked as the call is recorded
            guard = self.cluster.slot_guard(self.settings.max_concurrent_calls, simulated=self.simulated)
        try:
            await self.ledger.record_call_start(record, guard)
        except BaseException:
            self.calls.pop(call.id, None)
            self._by_ref.pop(call.ref, None)
            raise
        if self._checkpointer is None or self._checkpointer.done():
            self._checkpointer = asyncio.create_task(self._checkpoint_live_calls(), name="checkpoint")

    async def _on_terminate(self, event: CallWebhook) -> None:
        call = self._find(event.call.id, event.call.biz_opaque_callback_data)
        if call is None:
            return  # stored by the ledger; a later connect for it will not be answered
        context = event.call.context
        if call.context is None and context is not None:
            # Meta repeats the payload on terminate (spec §6.4): keep it if the connect came without it.
            call.context = context
            self.ledger.call_updated(call.id, payload=context.payload, payload_source=context.source)
        await call.on_remote_terminate(event.call.status)

    async def _on_status(self, status: StatusWebhook) -> None:
        st = status.status
        call = self._find(st.id, st.biz_opaque_callback_data)
        if call is None:
            log.info("status %s for unknown call %s", st.status, st.id)
            return
        was_answered = call.accepted_at is not None
        if st.status == "ACCEPTED" and call.accepted_at is None and call.user_number:
            self.ledger.business_call_answered(call.user_number)
        await call.on_status(st.status)
        if not was_answered and call.accepted_at is not None:
            self.metrics.call_answered(call.direction, call.accepted_at - call.created_at)
        if call.accepted_at is not None:
            self.ledger.call_updated(call.id, state="active", answered_at=call.wall_accepted_at)

    def _on_message(self, message: MessageWebhook) -> None:
        reply = message.permission_reply
        if reply is not None:
            log.info("a user answered the call-permission request: %s", reply.response)
            log.debug("user %s answered the call-permission request", message.user)

    # calls we place -----------------------------------------------------------
    async def place_call(self, to: str, *, flow: Flow | None = None) -> Call:
        """Business-initiated call. Raises Refused (naming the rule) when Meta would refuse it."""
        # Other workers' calls first (a read): the cap is the deployment's, checked again as the call is recorded.
        elsewhere = 0 if self.cluster is None else await self.cluster.live_elsewhere(simulated=self.simulated)
        # Checked and reserved with no await in between: parallel requests cannot overshoot the caps.
        has_live = any(c.user_number == to for c in [*self.calls.values(), *self._dialing.values()])
        refusal = check_not_draining(self.draining) or self.ledger.check_outbound(to, has_live_call=has_live)
        live = self.live_count + elsewhere
        if refusal is None and live >= self.settings.max_concurrent_calls:
            refusal = check_capacity(live, self.settings.max_concurrent_calls)
        if refusal is not None:
            raise Refused(refusal)
        ref = "wacall-" + secrets.token_urlsafe(9)
        call = Call(
            call_id=ref,
            services=self.services,
            flow=flow or self.flow,
            caller_number=to,
            direction="BUSINESS_INITIATED",
            on_ended=self._forget,
            ref=ref,
        )
        self._by_ref[ref] = call
        self._dialing[ref] = call
        token = call_id_var.set(ref)  # the call's own tasks keep it; this request's context gets it back
        try:
            if self.cluster is not None:
                await self._reserve_dial(call, to)
            await call.dial(to)
            await self._register(call)
        except BaseException as exc:
            self._by_ref.pop(ref, None)
            self.calls.pop(call.id, None)
            if not isinstance(exc, (GraphError, Refused, asyncio.CancelledError)):
                self.store_health.failed(exc)
            if call.id != ref:  # Meta has the call: it is owed a terminate
                await call.hangup("dial_failed")
            else:
                await call.end("dial_failed")
            raise
        finally:
            self._dialing.pop(ref, None)
            call_id_var.reset(token)
        log.info("call %s: placed", call.id)
        log.debug("call %s: placed to %s", call.id, to)
        return call

    async def _reserve_dial(self, call: Call, to: str) -> None:
        """Several workers: a slot of the deployment's cap, and this worker's ownership, before Meta is asked.

        Meta's webhooks for the call (its answer, its statuses) may reach any worker as soon as it has the call,
        before `_register` knows Meta's id; they carry our reference, which this row holds, so they find
        their way here. `_register` replaces the row with the call's own (see `Cluster.slot_guard`)."""
        assert self.cluster is not None
        record = CallRecord(
            id=call.ref,
            direction=call.direction,
            from_number=self.settings.business_number or None,
            to_number=to,
            state="dialing",
            biz_opaque_callback_data=call.ref,
            flow=call.flow.name,
            simulated=self.simulated,
        )
        guard = self.cluster.slot_guard(self.settings.max_concurrent_calls, simulated=self.simulated)
        await self.ledger.record_call_start(record, guard)

    def _permission_requested_by_flow(self, call: Call, reason: str) -> None:
        """A flow's `request_call_permission`: ask the caller by WhatsApp message, if the rules allow."""
        if not call.user_number:
            return

        async def send() -> None:
            try:
                await self.request_permission(call.user_number or "", reason or None)
            except Refused as exc:
                log.info("call %s: call-permission request not sent: %s", call.id, exc.refusal.reason)
            except GraphError as exc:
                log.warning("call %s: Meta refused the call-permission request: %s", call.id, exc)

        self._spawn(send(), "permission-request")

    def _call_button_by_flow(self, call: Call, button: SendCallButton) -> None:
        """A flow's `send_call_button`: the caller is on the line, so their window is open (§8.1)."""
        if not call.user_number:
            return

        async def send() -> None:
            try:
                message_id, kind = await self.send_call_button(
                    call.user_number or "", payload=button.payload, text=button.text
                )
                log.info("call %s: call button sent (%s, %s)", call.id, kind, message_id)
            except Refused as exc:
                log.info("call %s: call button not sent: %s", call.id, exc.refusal.reason)
            except (GraphError, ValueError) as exc:
                log.warning("call %s: the call button was not sent: %s", call.id, exc)

        self._spawn(send(), "call-button")

    async def request_permission(self, to: str, text: str | None = None) -> str:
        # Checked and counted at once (one write job): parallel requests, on any worker, cannot overshoot.
        refusal, reserved_at = await self.ledger.reserve_permission_request(to)
        if refusal is not None:
            raise Refused(refusal)
        try:
            return await self.graph.send_call_permission_request(to, text)
        except BaseException:
            self.ledger.release_permission_request(to, reserved_at)
            raise

    async def send_call_button(
        self, to: str, *, payload: str | None = None, text: str | None = None
    ) -> tuple[str, str]:
        """A call button to `to` (spec §6): the interactive inside the customer-service window, else the
        configured template; `Refused` when neither may be sent. Returns (message id, which was sent)."""
        from agent.whatsapp.call_buttons import send_call_button

        state = self.ledger.user_state(to)
        return await send_call_button(
            self.graph, self.settings.call_button, state, self.ledger.now(), payload=payload, text=text,
            limits=self.ledger.limits,
        )  # fmt: skip

    # endings ------------------------------------------------------------------
    def _forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self._checkpointed.pop(call.id, None)
        self._by_ref.pop(call.ref, None)
        if self.handover is not None:
            # First, so a caller who hangs up in the queue is recorded as abandoned and `handled_by` is final.
            self.handover.call_ended(call)
        self._count_ended(call)
        summary = call.summary()
        self.finished[call.id] = summary
        while len(self.finished) > 500:
            self.finished.popitem(last=False)
        reached_meta = call.id != call.ref  # Meta gave it a call id: the user's phone rang
        if call.direction == "BUSINESS_INITIATED" and reached_meta and call.accepted_at is None and call.user_number:
            self.ledger.business_call_unanswered(call.user_number)
            reason = "rejected" if "REJECTED" in call.statuses else "unanswered"
            self.ledger.missed_call(call.user_number, reason, call.id)
        try:
            cost = self.ledger.call_finished(
                call.id,
                direction=call.direction,
                callee=call.user_number if call.direction == "BUSINESS_INITIATED" else None,
                outcome=call.outcome,
                end_reason=call.end_reason or "ended",
                answered_at=call.wall_accepted_at,
                transcript=summary["transcript"],
                slots=summary.get("slots", {}),
                handled_by=call.handled_by,
            )
            summary["cost"] = str(cost)
            if call.ending_owed is not None:
                self.ledger.ending_owed(call.id, call.ending_owed)
                self._unsettled.add(call.id)
                self._spawn(self._settle_ending_later(call.id), f"settle-ending-{call.id}")
            # Each turn's stage timings stay with the call (as its events), for finding slow turns later.
            for n, turn in enumerate(summary.get("turns", []), 1):
                log.debug("call %s turn %d: %s", call.id, n, turn)
                self.ledger.record_turn(call.id, n, turn)
            result = call.flow_result
            if result is not None and call.accepted_at is not None:
                self.ledger.record_flow_result(call.id, result)
        except Exception as exc:
            self.store_health.failed(exc)
            log.exception("call %s: could not write the call record", call.id)

    def _count_ended(self, call: Call) -> None:
        """The call's figures into the metrics; a failure here must never cost the call its record."""
        try:
            handed = self.handover.records.get(call.id) if self.handover is not None else None
            if handed is not None and handed.outcome is not None:
                self.metrics.queue_waited(handed.queue, handed.waited_s)
            conversation = call.conversation
            self.metrics.call_ended(
                call.direction,
                call.outcome,
                turns=conversation.turns if conversation is not None else (),
                barge_ins=conversation.barge_ins if conversation is not None else 0,
                false_starts=conversation.false_starts if conversation is not None else 0,
            )
        except Exception:
            log.exception("call %s: could not count the call in the metrics", call.id)
        if self.tracer is not None:
            self.tracer.call_ended(
                CallTrace(
                    call_id=call.id,
                    direction=call.direction,
                    flow=call.flow.name,
                    outcome=call.outcome,
                    end_reason=call.end_reason or "ended",
                    created_at=call.created_at,
                    accepted_at=call.accepted_at,
                    ended_at=call.ended_at if call.ended_at is not None else time.monotonic(),
                    turns=tuple(conversation.turns) if (conversation := call.conversation) is not None else (),
                    handled_by=call.handled_by,
                )
            )

    async def _settle_ending_later(self, call_id: str) -> None:
        """Keep telling Meta a call is over while this process runs; a stop leaves it owed to the next start."""
        for wait_s in ENDING_RETRY_WAITS_S:
            await asyncio.sleep(wait_s)
            try:
                await self.graph.terminate(call_id)
            except GraphError as exc:
                if retryable(exc):
                    log.info("call %s: Meta still cannot be told of its end (%s)", call_id, exc)
                    continue
                how = "refused"  # Meta no longer knows the call: it has ended it itself
            else:
                how = "terminated"
            self._unsettled.discard(call_id)
            self.ledger.ending_settled(call_id, how)
            log.info("call %s: Meta has the end of the call now (%s)", call_id, how)
            return
        log.warning("call %s: Meta could not be told of its end; the next start tries again", call_id)

    # start-up and health -----------------------------------------------------
    async def settle_restart(self) -> int:
        """Tell Meta about calls the previous process never ended (killed, power loss): until it hears,
        Meta keeps the call up and bills it. Returns how many Meta acknowledged."""
        settled = 0
        owed, self.owed_endings = self.owed_endings, []
        for record in owed:
            # Answered (active, with an agent, or its "active" write lost with the process) or placed by us:
            # terminate. Only a call never picked up is rejected, and if Meta says it was, terminated after all.
            answered = (
                record.answered_at is not None
                or record.state not in ("ringing", "connecting", "dialing")
                or record.direction == "BUSINESS_INITIATED"
            )
            try:
                if answered:
                    await self.graph.terminate(record.id)
                else:
                    try:
                        await self.graph.reject(record.id)
                    except GraphError:
                        await self.graph.terminate(record.id)
                settled += 1
                if record.id in self._unsettled:
                    self._unsettled.discard(record.id)
                    self.ledger.ending_settled(record.id, "terminated")
                log.info(
                    "call %s: sent Meta the %s it was owed (its process stopped before ending it)",
                    record.id,
                    "terminate" if answered else "reject",
                )
            except GraphError as exc:
                if retryable(exc):
                    # Meta's side is down, not done with the call: keep it owed, and keep trying while we run.
                    log.warning("call %s: the owed ending could not reach Meta (%s); trying again", record.id, exc)
                    if record.id not in self._unsettled:
                        self._unsettled.add(record.id)
                        self.ledger.ending_owed(record.id, str(exc) or type(exc).__name__)
                    self._spawn(self._settle_ending_later(record.id), f"settle-ending-{record.id}")
                    continue
                # Usually Meta ended it already (the caller hung up on the silence): nothing is owed then.
                log.info("call %s: Meta refused the owed ending (%s); it has ended the call itself", record.id, exc)
                if record.id in self._unsettled:
                    self._unsettled.discard(record.id)
                    self.ledger.ending_settled(record.id, "refused")
        return settled

    def health(self) -> dict[str, Any]:
        """What /healthz says: load balancers stop sending work to a draining or failing process."""
        status = "ok"
        detail: dict[str, Any] = {}
        if self.store_health.failing:
            status = "degraded"
            detail["store"] = self.store_health.describe()
        if self.draining:
            status = "draining"
        if self.cluster is not None:
            detail["worker"] = self.cluster.worker_id
        return {"status": status, "live_calls": len(self.calls), "flow": self.flow.name, **detail}

    async def _checkpoint_live_calls(self) -> None:
        """Write live calls' transcripts and slots as they grow: a kill then loses seconds, not the call."""
        every = self.settings.shutdown.checkpoint_s
        while self.calls:
            await asyncio.sleep(every)
            for call in list(self.calls.values()):
                said = 0 if call.conversation is None else len(call.conversation.transcript)
                if said == self._checkpointed.get(call.id, 0) or call.state is CallState.ENDED:
                    continue
                summary = call.summary()
                try:
                    self.ledger.call_updated(call.id, transcript=summary["transcript"], slots=summary.get("slots", {}))
                    self._checkpointed[call.id] = said
                except Exception as exc:
                    self.store_health.failed(exc)
                    log.warning("call %s: could not checkpoint the transcript: %s", call.id, exc)

    # shutdown -----------------------------------------------------------------
    async def hang_up_all(self, reason: str = "shutdown") -> None:
        for call in list(self.calls.values()):
            if call.state is not CallState.ENDED:
                await call.hangup(reason)

    async def drain(
        self, *, goodbye: str | None = None, deadline_s: float = 10.0, hurry: asyncio.Event | None = None
    ) -> None:
        """Stop taking calls and end the live ones properly: a goodbye, Meta's terminate, every record written.

        Within `deadline_s` whatever happens; `hurry` (a second signal) skips what is left of the goodbyes.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        ends_by = loop.time() + deadline_s
        calls = [c for c in list(self.calls.values()) + list(self._dialing.values()) if c.state is not CallState.ENDED]
        if not calls:
            return
        log.warning("shutting down: ending %d live call(s) within %.0f s", len(calls), deadline_s)
        # Leave time after the goodbyes for Meta's terminates (retried on errors) and the records.
        goodbye_by = ends_by - min(4.0, deadline_s / 2)
        endings = [asyncio.create_task(self._end_for_shutdown(c, goodbye, goodbye_by, hurry)) for c in calls]
        _, late = await asyncio.wait(endings, timeout=max(0.0, ends_by - loop.time()))
        for task in late:
            task.cancel()
        await asyncio.gather(*endings, return_exceptions=True)
        for call in calls:  # whatever did not make it: ended and written down now, without a word
            if call.state is not CallState.ENDED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup("shutdown"), timeout=1.0)
                if call.state is not CallState.ENDED:
                    await call.end("shutdown")

    async def _end_for_shutdown(
        self, call: Call, goodbye: str | None, goodbye_by: float, hurry: asyncio.Event | None
    ) -> None:
        loop = asyncio.get_running_loop()
        if goodbye and call.state is CallState.ACTIVE and call.conversation is not None:
            say = asyncio.create_task(call.say_goodbye(goodbye))
            waits: list[asyncio.Future[Any]] = [say]
            hurried = asyncio.create_task(hurry.wait()) if hurry is not None else None
            if hurried is not None:
                waits.append(hurried)
            try:
                await asyncio.wait(
                    waits, timeout=max(0.0, goodbye_by - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (say, hurried):
                    if task is not None and not task.done():
                        task.cancel()
                await asyncio.gather(say, *([hurried] if hurried else []), return_exceptions=True)
        await call.hangup("shutdown")

    async def aclose(self) -> None:
        await self.hang_up_all()
        await self.metrics.aclose()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)  # flushes the last calls' spans: blocking network I/O
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.handover is not None:
            await self.handover.aclose()
        if self.cluster is not None:
            await self.cluster.leave()
        await self.graph.aclose()
        if self.llm is not None:
            await self.llm.aclose()
        await asyncio.to_thread(self.store.close)  # commits the queued writes and stops the writer thread


def utc_now() -> datetime:
    return datetime.now(UTC)


def _queued_jobs(executor: ThreadPoolExecutor | None) -> int | None:
    """Jobs waiting for an inference thread: the pool has no public count, so its queue is read if it has one."""
    queue = getattr(executor, "_work_queue", None)
    if queue is None:
        return None
    try:
        return int(queue.qsize())
    except Exception:
        return None


def _reached_meta(record: CallRecord) -> bool:
    """Meta gave the call an id: a call we placed but never got an answer for is only our reference."""
    return record.direction == "USER_INITIATED" or record.id != record.biz_opaque_callback_data


#: Seconds between the attempts to tell Meta of a call's end after the call's own retries all failed.
ENDING_RETRY_WAITS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class StoreHealth:
    """Whether writes to the store failed lately: /healthz says degraded (503) for `window_s` after a failure.

    A window rather than "until the next write works": the writes that fail (a call record) and those that
    go on working (a small status row) differ, and an operator must see the failure, not a flicker.
    """

    def __init__(
        self,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._on_failure = on_failure  # the metrics' failure counter (thread-safe: writes fail off the loop)
        self.failures = 0
        self.last_error: str | None = None
        self._failed_at: float | None = None

    @property
    def failing(self) -> bool:
        return self._failed_at is not None and self._clock() - self._failed_at < self.window_s

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        self._failed_at = self._clock()
        if self._on_failure is not None:
            with contextlib.suppress(Exception):
                self._on_failure()

    def note(self, error: BaseException | None) -> None:
        """A queued write's outcome (called on the store's writer thread: plain assignments and a counter that
        takes its own thread lock, nothing of the event loop's)."""
        if error is not None:
            self.failed(error)

    def describe(self) -> str:
        return f"writes failing ({self.failures} failure(s) so far; last: {self.last_error})"
