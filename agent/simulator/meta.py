"""Meta's side of WhatsApp Business Calling, for offline development and tests.

`MetaSimulator` owns Meta's view of each call: it places user-initiated calls (connect webhook),
runs the per-call state machine driven by the server's Graph requests (spec §3, Appendix A), and
emits terminate webhooks when a call ends for any reason (spec §2.4). It must be as strict as
Meta, so a server bug fails here rather than on a real phone.

Design rule: nothing here imports `agent.whatsapp`, `agent.media` or other server modules. The
payloads and checks are rebuilt from the spec so the two sides cannot share a misreading.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette

from agent.simulator.graph_api import (
    GraphApi,
    GraphApiError,
    GraphRequestRecord,
    GraphResult,
    check_answer_sdp,
    check_opaque_data,
    invalid_parameter,
    require_answer_session,
    require_call_id,
)
from agent.simulator.webhook_sender import DeliveryOptions, WebhookDelivery, WebhookSender

__all__ = [
    "DeliveryOptions",
    "GraphRequestRecord",
    "MetaSimulator",
    "SimCall",
    "WebhookDelivery",
]

logger = logging.getLogger(__name__)

USER_INITIATED = "USER_INITIATED"

OFFERED = "OFFERED"
PRE_ACCEPTED = "PRE_ACCEPTED"
ACTIVE = "ACTIVE"
ENDED = "ENDED"

COMPLETED = "COMPLETED"
FAILED = "FAILED"

# direction -> Graph action -> {state before: state after}. Anything missing is an invalid
# transition and gets HTTP 400 (spec §3 rule 2). Business-initiated calls will add their own
# table here rather than branching inside the handlers.
TRANSITIONS: dict[str, dict[str, dict[str, str]]] = {
    USER_INITIATED: {
        "pre_accept": {OFFERED: PRE_ACCEPTED},
        "accept": {OFFERED: ACTIVE, PRE_ACCEPTED: ACTIVE},
        "reject": {OFFERED: ENDED, PRE_ACCEPTED: ENDED},
        "terminate": {ACTIVE: ENDED},
    },
}

# Meta documents no error code for "the business never answered" (spec Appendix B item 1). We use
# 138019 "call setup failed", the nearest documented code, so a parser keyed on known codes sees a
# known one; the server must not depend on this choice.
NO_ANSWER_ERROR: dict[str, Any] = {
    "code": 138019,
    "title": "Call not answered: the business did not accept the call in time",
    "message": "Call not answered: the business did not accept the call in time",
    "error_data": {"details": "No accept was received within the answer window after the connect webhook."},
}


def new_call_id() -> str:
    """A Meta-looking call id; padding '=' kept because real ids end with it and servers must cope."""
    return "wacid." + base64.urlsafe_b64encode(secrets.token_bytes(40)).decode("ascii")


@dataclass(eq=False)
class SimCall:
    """Meta's view of one call.

    `actions` lists every Graph action received for this call id in order, including refused
    ones, so a test can see that the server retried or misbehaved; `MetaSimulator.requests`
    has the outcome of each.
    """

    id: str
    wa_id: str
    direction: str
    offer_sdp: str
    name: str = "Ana Example"
    cta_payload: str | None = None
    state: str = OFFERED
    answer_sdp: str | None = None
    biz_opaque_callback_data: str | None = None
    offered_at: int = 0  # connect webhook timestamp
    start_time: int | None = None
    end_time: int | None = None
    end_status: str | None = None
    actions: list[str] = field(default_factory=list)
    # The user's media peer applies `answer_sdp` once this is set.
    answer_ready: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class MetaSimulator:
    """Fake Graph API (`app`) plus the webhook sender, for one business phone number."""

    def __init__(
        self,
        *,
        webhook_url: str,
        app_secret: str,
        access_token: str,
        phone_number_id: str = "106540000000002",
        display_phone_number: str = "15550001111",
        waba_id: str = "102290000000001",
        answer_timeout: float = 45.0,
        clock: Callable[[], float] = time.time,
        delivery: DeliveryOptions | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.answer_timeout = answer_timeout
        self._clock = clock
        self.delivery = delivery if delivery is not None else DeliveryOptions()
        self.calls: dict[str, SimCall] = {}
        self.requests: list[GraphRequestRecord] = []
        self._sender = WebhookSender(
            url=webhook_url, app_secret=app_secret, options=self.delivery, transport=webhook_transport
        )
        self._graph = GraphApi(
            access_token=access_token,
            phone_number_id=phone_number_id,
            handler=self._handle_action,
            requests=self.requests,
        )
        self.app: Starlette = self._graph.app
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._action_handlers: dict[str, Callable[[SimCall, dict[str, Any], str], GraphResult]] = {
            "pre_accept": self._pre_accept,
            "accept": self._accept,
            "reject": self._reject,
            "terminate": self._terminate,
        }

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST attempt in order, with the server's HTTP status."""
        return self._sender.deliveries

    def _now(self) -> int:
        return int(self._clock())

    # ---- user side -------------------------------------------------------------------------

    async def place_user_call(
        self,
        *,
        wa_id: str,
        offer_sdp: str,
        name: str = "Ana Example",
        cta_payload: str | None = None,
    ) -> SimCall:
        """The user dials the business: register the call and deliver the signed connect webhook.

        The answer window starts before delivery, because Meta's clock starts when the caller
        dials, not when our server gets round to reading the webhook.
        """
        self._ensure_open()
        call = SimCall(
            id=new_call_id(),
            wa_id=wa_id,
            direction=USER_INITIATED,
            offer_sdp=offer_sdp,
            name=name,
            cta_payload=cta_payload,
            offered_at=self._now(),
        )
        self.calls[call.id] = call
        self._timers[call.id] = self._spawn(self._answer_timer(call))
        logger.info("call %s: user %s dials, state OFFERED", call.id, wa_id)
        await self.send_webhook(self.connect_payload(call, name, cta_payload))
        return call

    async def user_hangup(self, call_id: str) -> None:
        """The user hangs up. A no-op on an ended call, since the server may have hung up first."""
        call = self.calls[call_id]
        if call.state == ENDED:
            logger.info("call %s: user hangup ignored, call already ended", call_id)
            return
        # UNCERTAIN (spec §2.4): the status after a caller abandons before answer; COMPLETED is
        # what the brief chose, and start/end/duration appear only if the call was picked up.
        self._end_call(call, COMPLETED)
        await self.send_webhook(self.terminate_payload(call, status=COMPLETED))

    # ---- webhooks ---------------------------------------------------------------------------

    async def send_webhook(self, payload: dict[str, Any]) -> httpx.Response:
        """Serialise once, sign those bytes, POST them; honours `self.delivery`."""
        self._ensure_open()
        return await self._sender.send(payload)

    async def drain_webhooks(self) -> None:
        """Wait for background webhook deliveries (after reject/terminate/timeout) to finish."""
        while pending := [t for t in self._background if not t.done() and t not in self._timers.values()]:
            await asyncio.wait(pending)

    def _envelope(
        self,
        call: SimCall,
        call_obj: dict[str, Any],
        *,
        errors: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
            "contacts": [{"profile": {"name": call.name if name is None else name}, "wa_id": call.wa_id}],
            "calls": [call_obj],
        }
        if errors:
            value["errors"] = copy.deepcopy(errors)
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"field": "calls", "value": value}]}],
        }

    def connect_payload(self, call: SimCall, name: str, cta_payload: str | None) -> dict[str, Any]:
        """User-initiated connect carrying Meta's offer (spec §2.3). Fresh dict each time."""
        call_obj: dict[str, Any] = {
            "id": call.id,
            "from": call.wa_id,
            "to": self.display_phone_number,
            "event": "connect",
            "timestamp": str(call.offered_at),
            "direction": call.direction,
            "session": {"sdp_type": "offer", "sdp": call.offer_sdp},
        }
        if cta_payload is not None:
            call_obj["cta_payload"] = cta_payload
        return self._envelope(call, call_obj, name=name)

    def terminate_payload(
        self, call: SimCall, *, status: str, errors: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Terminate webhook (spec §2.4) from the call's current times.

        `start_time`/`end_time`/`duration` appear only when the call was picked up. `errors`, if
        given, goes both in the call object and at `value.errors`, as in the real FAILED capture
        (spec §2 rule 5).
        """
        end_time = call.end_time if call.end_time is not None else self._now()
        call_obj: dict[str, Any] = {
            "id": call.id,
            "from": call.wa_id,
            "to": self.display_phone_number,
            "event": "terminate",
            "direction": call.direction,
            "timestamp": str(end_time),
            "status": status.title() if self.delivery.title_case_status else status,
        }
        if call.start_time is not None:
            call_obj["start_time"] = str(call.start_time)
            call_obj["end_time"] = str(end_time)
            call_obj["duration"] = end_time - call.start_time
        if call.biz_opaque_callback_data is not None:
            call_obj["biz_opaque_callback_data"] = call.biz_opaque_callback_data
        if call.cta_payload is not None:
            call_obj["cta_payload"] = call.cta_payload
        if errors:
            call_obj["errors"] = copy.deepcopy(errors)
        return self._envelope(call, call_obj, errors=errors)

    # ---- Graph API actions ------------------------------------------------------------------

    async def _handle_action(self, action: str, body: dict[str, Any]) -> GraphResult:
        if action == "connect":
            raise invalid_parameter("business-initiated calls are not enabled in this simulator yet")
        call_id = require_call_id(body)
        call = self.calls.get(call_id)
        if call is None:
            raise invalid_parameter(f"Invalid call_id {call_id!r}")
        call.actions.append(action)
        new_state = self._next_state(call, action)
        result = self._action_handlers[action](call, body, new_state)
        logger.info("call %s: %s accepted, state now %s", call.id, action, call.state)
        return result

    def _next_state(self, call: SimCall, action: str) -> str:
        new_state = TRANSITIONS[call.direction].get(action, {}).get(call.state)
        if new_state is not None:
            return new_state
        if call.state == ENDED:
            reason = f"Call {call.id} has already ended ({call.end_status}); cannot {action} it"
        elif call.state == ACTIVE:
            reason = f"Call {call.id} is already in progress; cannot {action} it"
        elif action == "terminate":
            reason = f"Call {call.id} has not been accepted; use reject to decline it"
        else:
            reason = f"Cannot {action} call {call.id} in state {call.state}"
        raise GraphApiError(100, reason)

    def _pre_accept(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        sdp = require_answer_session(body)
        check_answer_sdp(sdp, offer_sdp=call.offer_sdp)
        call.answer_sdp = sdp
        call.state = new_state
        call.answer_ready.set()
        return GraphResult()

    def _accept(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        sdp = require_answer_session(body)
        if call.state == PRE_ACCEPTED:
            # Meta applies the pre_accept answer to the media leg; it cannot be changed (spec §3.2).
            if sdp != call.answer_sdp:
                raise invalid_parameter("SDP in accept differs from pre_accept")
        else:
            check_answer_sdp(sdp, offer_sdp=call.offer_sdp)
        opaque = check_opaque_data(body)
        self._cancel_timer(call.id)
        call.answer_sdp = sdp
        call.biz_opaque_callback_data = opaque
        call.state = new_state
        call.start_time = self._now()
        call.answer_ready.set()
        call.accepted.set()
        return GraphResult()

    def _reject(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        # UNCERTAIN (spec §2.4, Appendix B item 1): Meta's status after reject is undocumented. We
        # send COMPLETED without start/end/duration: nothing failed, the call was just never picked
        # up, and the absent start_time is what tells the server it was not answered.
        self._end_call(call, COMPLETED)
        return GraphResult(after_response=self._deliver_later(self.terminate_payload(call, status=COMPLETED)))

    def _terminate(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        self._end_call(call, COMPLETED)
        return GraphResult(after_response=self._deliver_later(self.terminate_payload(call, status=COMPLETED)))

    # ---- lifecycle --------------------------------------------------------------------------

    def _end_call(self, call: SimCall, status: str) -> None:
        self._cancel_timer(call.id)
        call.state = ENDED
        call.end_status = status
        call.end_time = self._now()
        call.ended.set()
        logger.info("call %s: ended %s", call.id, status)

    async def _answer_timer(self, call: SimCall) -> None:
        """Meta's 30-60 s answer window (spec §7.4 item 5): no accept means a FAILED terminate."""
        await asyncio.sleep(self.answer_timeout)
        self._timers.pop(call.id, None)
        if call.state not in (OFFERED, PRE_ACCEPTED):
            return
        logger.info("call %s: no accept within %.3f s", call.id, self.answer_timeout)
        self._end_call(call, FAILED)
        await self._deliver(self.terminate_payload(call, status=FAILED, errors=[NO_ANSWER_ERROR]))

    def _cancel_timer(self, call_id: str) -> None:
        timer = self._timers.pop(call_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _deliver_later(self, payload: dict[str, Any]) -> Callable[[], Coroutine[Any, Any, None]]:
        """A callable for after the Graph response is sent; it only spawns, so it never blocks."""

        async def start() -> None:
            if not self._closed:
                self._spawn(self._deliver(payload))

        return start

    async def _deliver(self, payload: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            await self._sender.send(payload)
        except httpx.HTTPError:
            logger.exception("background webhook delivery failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._closed:
            coro.close()
            raise RuntimeError("MetaSimulator is closed")
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("simulator task failed", exc_info=task.exception())

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("MetaSimulator is closed")

    async def aclose(self) -> None:
        """Cancel timers and pending deliveries, then close the HTTP client; nothing keeps running."""
        self._closed = True
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._background.clear()
        await self._sender.aclose()
