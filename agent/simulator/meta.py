"""Meta's side of WhatsApp Business Calling, for offline development and tests.

`MetaSimulator` owns Meta's view of each call and of each user's call permission:

* user-initiated calls (UIC): it places them (connect webhook with Meta's offer), runs the per-call
  state machine driven by the server's Graph requests (spec §3, Appendix A) and emits terminate
  webhooks when a call ends for any reason (spec §2.4);
* business-initiated calls (BIC): it validates `POST /calls action=connect` and every rule Meta
  applies before it rings anyone, then drives the call from a scripted `UserPhone` through RINGING,
  the connect webhook carrying the SDP answer, ACCEPTED or REJECTED, and terminate (spec §2.5, §2.6,
  §7.4, Appendix A);
* call permissions: permission-request messages, the user's reply webhook, GET call_permissions,
  the customer-service window and the request, call and unanswered-call limits (spec §4, §8);
* call buttons (spec §6.1, §6.2) and the number's call settings (spec §5, `GET`/`POST .../settings`).

It must be as strict as Meta, so a server bug fails here rather than on a real phone.

Design rule: nothing here imports `agent.whatsapp`, `agent.media`, `agent.store` or other server
modules. The payloads and checks are rebuilt from the spec so the two sides cannot share a misreading.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import enum
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette

from agent.simulator.call_buttons import (
    CallButtonMessage,
    check_voice_call_interactive,
    check_voice_call_template,
    is_voice_call_interactive,
)
from agent.simulator.call_settings import OutsideCallHours, SettingsStore, within_call_hours
from agent.simulator.graph_api import (
    GraphApi,
    GraphApiError,
    GraphRequestRecord,
    GraphResult,
    check_answer_sdp,
    check_offer_sdp,
    check_opaque_data,
    invalid_parameter,
    require_answer_session,
    require_call_id,
    require_offer_session,
    rule_error,
)
from agent.simulator.permissions import (
    PERMANENT,
    PermissionLimits,
    PermissionStore,
    Refusal,
)
from agent.simulator.webhook_sender import DeliveryOptions, WebhookDelivery, WebhookSender

__all__ = [
    "BIC_BLOCKED_COUNTRIES",
    "NANP_OTHER_COUNTRIES",
    "Decision",
    "DeliveryOptions",
    "GraphRequestRecord",
    "MetaRules",
    "MetaSimulator",
    "MetaTimings",
    "PermissionChoice",
    "PermissionLimits",
    "PermissionRequest",
    "ScriptedPhone",
    "SimCall",
    "SystemMessage",
    "UserAnswer",
    "UserPhone",
    "WebhookDelivery",
    "auto_permission",
]

logger = logging.getLogger(__name__)

USER_INITIATED = "USER_INITIATED"
BUSINESS_INITIATED = "BUSINESS_INITIATED"

# UIC states (Appendix A).
OFFERED = "OFFERED"
PRE_ACCEPTED = "PRE_ACCEPTED"
ACTIVE = "ACTIVE"
ENDED = "ENDED"
# BIC states (Appendix A): POST connect -> DIALING -> RINGING -> MEDIA_READY (connect webhook sent)
# -> ACTIVE (ACCEPTED) -> ENDED.
DIALING = "DIALING"
RINGING = "RINGING"
MEDIA_READY = "MEDIA_READY"

COMPLETED = "COMPLETED"
FAILED = "FAILED"

# BIC `statuses` values (spec §2.6); nothing else is documented for the Graph API path.
STATUS_RINGING = "RINGING"
STATUS_ACCEPTED = "ACCEPTED"
STATUS_REJECTED = "REJECTED"

# direction -> Graph action -> {state before: state after}. Anything missing is an invalid
# transition and gets HTTP 400 (spec §3 rule 2).
TRANSITIONS: dict[str, dict[str, dict[str, str]]] = {
    USER_INITIATED: {
        "pre_accept": {OFFERED: PRE_ACCEPTED},
        "accept": {OFFERED: ACTIVE, PRE_ACCEPTED: ACTIVE},
        "reject": {OFFERED: ENDED, PRE_ACCEPTED: ENDED},
        "terminate": {ACTIVE: ENDED},
    },
    # No accept/pre_accept/reject for a call we placed (spec §2.5: "No accept call is made for
    # business-initiated calls"). terminate also cancels a call that is still ringing: the business
    # hanging up before pickup is the only way to stop it.
    BUSINESS_INITIATED: {
        "terminate": {DIALING: ENDED, RINGING: ENDED, MEDIA_READY: ENDED, ACTIVE: ENDED},
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
# Same UNCERTAIN choice for a BIC that rings out (spec §2.6: "no answer" shows up only as a later
# terminate; Appendix B item 3).
BIC_NO_ANSWER_ERROR: dict[str, Any] = {
    "code": 138019,
    "title": "Call not answered: the user did not pick up in time",
    "message": "Call not answered: the user did not pick up in time",
    "error_data": {"details": "The user did not answer the business-initiated call within the ring window."},
}
BIC_SETUP_FAILED_ERROR: dict[str, Any] = {
    "code": 138019,
    "title": "Call setup failed",
    "message": "Call setup failed",
    "error_data": {"details": "The WhatsApp client could not set up media for the business's offer."},
}
# The Cloud API's answer to a free-form message outside the customer-service window: the send is
# accepted, then a `failed` message status carries 131047. Not in the calling spec (§8.1 only says
# free-form needs the window); this is the general Cloud API behaviour.
WINDOW_CLOSED_ERROR: dict[str, Any] = {
    "code": 131047,
    "title": "Re-engagement message",
    "message": "Re-engagement message",
    "error_data": {
        "details": "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number."
    },
}

# Business-number countries where BIC is not offered (138013), by E.164 calling code; configurable
# per test through MetaRules.
BIC_BLOCKED_COUNTRIES: dict[str, str] = {
    "US": "1",
    "CA": "1",
    "TR": "90",
    "EG": "20",
    "VN": "84",
    "NG": "234",
}
# +1 is shared by the North American Numbering Plan. Meta judges the number's *country*, so these
# area codes belong to their own countries rather than to US/CA. The rest of +1 is US or CA, which we
# cannot tell apart without a full area-code table; both are blocked, so it does not matter there.
# UNCERTAIN: the US territories (PR, VI, GU, MP, AS) are counted by their ISO codes, not as the US.
NANP_OTHER_COUNTRIES: dict[str, str] = {
    "242": "BS", "246": "BB", "264": "AI", "268": "AG", "284": "VG", "340": "VI", "345": "KY",
    "441": "BM", "473": "GD", "649": "TC", "658": "JM", "664": "MS", "670": "MP", "671": "GU",
    "684": "AS", "721": "SX", "758": "LC", "767": "DM", "784": "VC", "787": "PR", "809": "DO",
    "829": "DO", "849": "DO", "868": "TT", "869": "KN", "876": "JM", "939": "PR",
}  # fmt: skip

DEFAULT_USER_NAME = "Ana Example"
SYSTEM_MESSAGE_TEXT = (
    "You missed recent calls from this business. You can change its call permission in the business profile."
)
_PHONE_RE = re.compile(r"\+?\d{5,15}")
_ENDED: Any = object()  # `_race` outcome: the call ended first
_TIMED_OUT: Any = object()  # `_race` outcome: the deadline passed first


def new_call_id() -> str:
    """A Meta-looking call id; padding '=' kept because real ids end with it and servers must cope."""
    return "wacid." + base64.urlsafe_b64encode(secrets.token_bytes(40)).decode("ascii")


def new_message_id() -> str:
    """A Meta-looking message id (`wamid.` + base64), distinct in shape from call ids on purpose."""
    return "wamid." + base64.urlsafe_b64encode(secrets.token_bytes(30)).decode("ascii")


# ---- options ------------------------------------------------------------------------------------


@dataclass
class MetaRules:
    """Which of Meta's rules the simulator enforces; each can be switched off or tuned per test.

    Defaults are Meta's documented behaviour. The object is shared by reference, so a test may
    change a field between two requests (change `limits` fields in place: the permission store
    holds that object).
    """

    calling_enabled: bool = True  # 138000 when off (§5 simulator rule 4)
    require_permission: bool = True  # 138006 without an approved, unexpired permission (§4, §3 rule 4)
    one_call_per_user: bool = True  # 138003 while a call with the user is ongoing (§8.3)
    max_concurrent_calls: int | None = 1000  # 138002 per business number (§8.3); None: no cap
    # 138013: business-number countries without BIC; {} switches the rule off.
    bic_blocked_countries: dict[str, str] = field(default_factory=lambda: dict(BIC_BLOCKED_COUNTRIES))
    bic_restricted: bool = False  # 138014: negative-feedback pause, no BIC nor permission requests (§9.3)
    require_window: bool = True  # free-form permission requests need an open window (§4.1, §8.1)
    callback_permission: bool = False  # callback_permission_status ENABLED: a user's call grants (§4.1, §5)
    permission_get_per_second: int | None = 5  # 613 / HTTP 429 above it (§4.5, Appendix B item 5)
    message_status_webhooks: bool = True  # sent/delivered statuses after a request (§4.2)
    limits: PermissionLimits = field(default_factory=PermissionLimits)


@dataclass
class MetaTimings:
    """Delays between the steps Meta takes on its own; small defaults so tests run fast.

    Spec §2.6 simulator rule 2 wants every BIC step after a configurable delay; `ring_timeout` is
    how long a BIC rings before it counts as unanswered (undocumented, 30 s, spec §7.4 / Appendix B
    item 3).
    """

    ringing_after: float = 0.05  # POST connect -> statuses RINGING
    connect_after: float = 0.05  # RINGING -> connect webhook with the answer (media leg ready)
    pickup_after: float = 0.05  # connect webhook -> ACCEPTED / REJECTED
    terminate_after: float = 0.05  # REJECTED -> terminate
    ring_timeout: float = 30.0  # RINGING -> FAILED terminate when nobody picks up
    message_status_after: float = 0.0  # permission request accepted -> sent/delivered statuses
    permission_reply_after: float = 0.05  # request delivered -> a policy's automatic reply
    # Every Graph API request's network round trip (half before Meta acts, half before the answer is back).
    # 0 answers at once, as unit tests want; `wacall simulate` and the benches use `graph_round_trip_s()`.
    graph_round_trip: float = 0.0


GRAPH_RTT_ENV = "WACALL_SIM_GRAPH_RTT_MS"
DEFAULT_GRAPH_RTT_S = 0.1  # a request from a European server to graph.facebook.com and back, roughly


def graph_round_trip_s(override: float | None = None, env: Mapping[str, str] | None = None) -> float:
    """The simulated Graph round trip for whole-call simulations: `override`, else $WACALL_SIM_GRAPH_RTT_MS
    (milliseconds; 0 answers at once), else 100 ms. Without it Meta would answer in microseconds and
    answer times measured on the simulator would look faster than any real call."""
    if override is not None:
        return max(0.0, override)
    raw = (os.environ if env is None else env).get(GRAPH_RTT_ENV, "").strip()
    if not raw:
        return DEFAULT_GRAPH_RTT_S
    try:
        return max(0.0, float(raw) / 1000)
    except ValueError:
        raise ValueError(f"{GRAPH_RTT_ENV} must be a number of milliseconds, not {raw!r}") from None


# ---- the scripted user --------------------------------------------------------------------------


class Decision(enum.StrEnum):
    """What the user does with a ringing business-initiated call."""

    ACCEPT = "accept"
    REJECT = "reject"
    NO_ANSWER = "no_answer"


AnswerMaker = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class UserAnswer:
    """The user's response to one ring, and how Meta's media leg answers the business's offer.

    `make_answer(offer_sdp)` returns the SDP answer that Meta puts in the connect webhook (spec
    §2.5): a real WebRTC phone answers the offer, a signalling-only test returns a hand-built one.
    With `make_answer=None` Meta never sends connect, as when the media leg is never ready; that is
    only possible when the user does not pick up.
    """

    decision: Decision
    make_answer: AnswerMaker | None = None

    def __post_init__(self) -> None:
        if self.decision is Decision.ACCEPT and self.make_answer is None:
            raise ValueError("an accepted call needs make_answer: Meta sends connect before ACCEPTED (spec §7.4)")


class UserPhone(Protocol):
    """The user's WhatsApp client for business-initiated calls.

    `ring` is called when the call starts ringing (after the RINGING status) and returns when the
    user decides. It may take as long as it likes: past the ring timeout the call rings out and the
    coroutine is cancelled. It is also cancelled when the business cancels the call first.
    """

    async def ring(self, call: SimCall) -> UserAnswer: ...


@dataclass
class ScriptedPhone:
    """A `UserPhone` that always responds the same way, after `think_s` seconds; records each ring."""

    decision: Decision = Decision.ACCEPT
    make_answer: AnswerMaker | None = None
    think_s: float = 0.0
    rang: list[SimCall] = field(default_factory=list)

    async def ring(self, call: SimCall) -> UserAnswer:
        self.rang.append(call)
        if self.think_s:
            await asyncio.sleep(self.think_s)
        return UserAnswer(self.decision, self.make_answer)


@dataclass(frozen=True)
class PermissionChoice:
    """A user's answer to a permission request (spec §4.4)."""

    accept: bool
    permanent: bool = False


@dataclass
class PermissionRequest:
    """One permission-request message the business sent, as Meta recorded it (spec §4.2, §4.3)."""

    id: str  # wamid returned to the business
    wa_id: str
    kind: str  # "interactive" or "template"
    sent_at: int
    status: str  # "sent", or "failed" when the window was closed (131047)
    body_text: str | None = None
    template_name: str | None = None


PermissionPolicy = Callable[[PermissionRequest], Awaitable[PermissionChoice | None]]


def auto_permission(accept: bool = True, permanent: bool = False) -> PermissionPolicy:
    """A policy under which every user answers every permission request the same way."""

    async def policy(request: PermissionRequest) -> PermissionChoice | None:
        return PermissionChoice(accept=accept, permanent=permanent)

    return policy


@dataclass(frozen=True)
class SystemMessage:
    """The in-app notice Meta shows a user after repeated unanswered BICs (spec §4.6). No webhook."""

    wa_id: str
    timestamp: int
    consecutive_unanswered: int
    text: str = SYSTEM_MESSAGE_TEXT


@dataclass(eq=False)
class SimCall:
    """Meta's view of one call.

    `actions` lists every Graph action received for this call id in order, including refused
    ones, so a test can see that the server retried or misbehaved; `MetaSimulator.requests`
    has the outcome of each. For a BIC, `offer_sdp` is the business's offer, `answer_sdp` Meta's
    answer (the connect webhook's), and `statuses` the call statuses sent so far.
    """

    id: str
    wa_id: str
    direction: str
    offer_sdp: str
    name: str = DEFAULT_USER_NAME
    cta_payload: str | None = None  # UIC: the user tapped a call button carrying this payload (spec §6.4)
    deeplink_payload: str | None = None  # UIC: the user opened a wa.me/call link with this biz_payload
    state: str = OFFERED
    answer_sdp: str | None = None
    biz_opaque_callback_data: str | None = None
    offered_at: int = 0  # UIC: connect webhook timestamp; BIC: when the business posted connect
    start_time: int | None = None
    end_time: int | None = None
    end_status: str | None = None
    actions: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    decision: Decision | None = None  # BIC: what the scripted user chose
    # UIC: the user's media peer applies `answer_sdp` once this is set. BIC: Meta's answer is ready.
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
        rules: MetaRules | None = None,
        timings: MetaTimings | None = None,
        phone: UserPhone | None = None,
        permission_policy: PermissionPolicy | None = None,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.answer_timeout = answer_timeout
        self._clock = clock
        self.delivery = delivery if delivery is not None else DeliveryOptions()
        self.rules = rules if rules is not None else MetaRules()
        self.timings = timings if timings is not None else MetaTimings()
        # The phone used for users without one of their own (`add_user`). None: calls ring out.
        self.phone = phone
        # Answers permission requests on the users' behalf; None leaves them to the test.
        self.permission_policy = permission_policy
        self.calls: dict[str, SimCall] = {}
        self.requests: list[GraphRequestRecord] = []
        self.permissions = PermissionStore(self.rules.limits)
        self.permission_requests: list[PermissionRequest] = []
        self.system_messages: list[SystemMessage] = []
        self.user_names: dict[str, str] = {}
        self.user_phones: dict[str, UserPhone] = {}
        self.permission_templates: dict[str, tuple[str, str]] = {}  # name -> (language, category)
        self.call_button_templates: dict[str, tuple[str, int]] = {}  # name -> (language, ttl_minutes)
        self.call_buttons: list[CallButtonMessage] = []
        # Meta's record of each number's `calling` settings (spec §5); status and callback permission live in
        # `rules` (calling_enabled, callback_permission) so a test toggling a rule sees it in GET too.
        self.settings = SettingsStore()
        self._permission_gets: list[float] = []
        self._sender = WebhookSender(
            url=webhook_url, app_secret=app_secret, options=self.delivery, transport=webhook_transport
        )
        self._graph = GraphApi(
            access_token=access_token,
            phone_number_id=phone_number_id,
            handler=self._handle_action,
            requests=self.requests,
            messages_handler=self._handle_message,
            permissions_handler=self._handle_permissions_query,
            settings_handler=self._handle_settings,
            round_trip_s=lambda: self.timings.graph_round_trip,
        )
        self.app: Starlette = self._graph.app
        # Fault injection for tests: make the Graph API answer 5xx/429 or stall for the next requests.
        self.graph_faults = self._graph.faults
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

    @property
    def held_webhooks(self) -> list[dict[str, Any]]:
        """Connect payloads held back by `DeliveryOptions.out_of_order`."""
        return self._sender.held

    def _now(self) -> int:
        return int(self._clock())

    # ---- users ------------------------------------------------------------------------------

    def add_user(self, wa_id: str, *, name: str | None = None, phone: UserPhone | None = None) -> None:
        """Give a user a profile name and/or their own phone for business-initiated calls."""
        if name is not None:
            self.user_names[wa_id] = name
        if phone is not None:
            self.user_phones[wa_id] = phone

    def add_permission_template(self, name: str, *, language: str = "en", category: str = "UTILITY") -> None:
        """Register an approved template with a call_permission_request component (spec §4.3).

        Only MARKETING and UTILITY templates may carry one, so anything else is a test bug.
        """
        if category not in ("MARKETING", "UTILITY"):
            raise ValueError("call permission request templates must be MARKETING or UTILITY (spec §4.3)")
        self.permission_templates[name] = (language, category)

    def add_call_button_template(self, name: str, *, language: str = "en", ttl_minutes: int = 10080) -> None:
        """Register an approved template with a voice-call button (spec §6.2); its TTL must be 1440-43200."""
        if not 1440 <= ttl_minutes <= 43200:
            raise ValueError("a voice-call button template's ttl_minutes must be 1440 to 43200 (spec §6.2)")
        self.call_button_templates[name] = (language, ttl_minutes)

    async def user_taps_call_button(self, message_id: str, *, offer_sdp: str) -> SimCall:
        """The user taps a call button: a UIC whose webhooks carry the button's payload (spec §6.4)."""
        button = next((b for b in self.call_buttons if b.id == message_id), None)
        if button is None or button.status != "sent":
            raise LookupError(f"no delivered call button {message_id!r}")
        if button.expired(self._now()):
            raise LookupError(f"call button {message_id!r} expired after {button.ttl_minutes} minutes")
        return await self.place_user_call(
            wa_id=button.wa_id, offer_sdp=offer_sdp, name=self._name(button.wa_id), cta_payload=button.payload
        )

    def _name(self, wa_id: str) -> str:
        return self.user_names.get(wa_id, DEFAULT_USER_NAME)

    # ---- user side: calls -------------------------------------------------------------------

    async def place_user_call(
        self,
        *,
        wa_id: str,
        offer_sdp: str,
        name: str = DEFAULT_USER_NAME,
        cta_payload: str | None = None,
        deeplink_payload: str | None = None,
    ) -> SimCall:
        """The user dials the business: register the call and deliver the signed connect webhook.

        `cta_payload`: the user tapped a call button carrying it; `deeplink_payload`: they opened a
        `wa.me/call/<number>?biz_payload=...` link. Both connect and terminate carry it (spec §6.4).

        The answer window starts before delivery, because Meta's clock starts when the caller
        dials, not when our server gets round to reading the webhook. Dialling opens the
        customer-service window whether or not the business answers (spec §8.1).

        Raises `OutsideCallHours` when the number's `call_hours` say closed: the phone never rings the
        business then (spec §5 simulator rule 3).
        """
        if cta_payload is not None and deeplink_payload is not None:
            raise ValueError("a call starts from a call button or from a deep link, not both (spec §6.4)")
        self._ensure_open()
        if not within_call_hours(self.settings.calling(self.phone_number_id), self._clock()):
            raise OutsideCallHours(f"{wa_id} called outside the number's call_hours: no connect webhook")
        call = SimCall(
            id=new_call_id(),
            wa_id=wa_id,
            direction=USER_INITIATED,
            offer_sdp=offer_sdp,
            name=name,
            cta_payload=cta_payload,
            deeplink_payload=deeplink_payload,
            offered_at=self._now(),
        )
        self.calls[call.id] = call
        self.permissions.note_user_activity(wa_id, call.offered_at)
        self._timers[call.id] = self._spawn(self._answer_timer(call))
        logger.info("call %s: user %s dials, state OFFERED", call.id, wa_id)
        await self.send_webhook(self.connect_payload(call, name, cta_payload))
        return call

    async def user_hangup(self, call_id: str) -> None:
        """The user hangs up. A no-op on an ended call, since the server may have hung up first.

        On a business-initiated call that has not been picked up this is the user declining it:
        REJECTED, then terminate (spec §2.6).
        """
        call = self.calls[call_id]
        if call.state == ENDED:
            logger.info("call %s: user hangup ignored, call already ended", call_id)
            return
        self._ensure_open()
        if call.direction == BUSINESS_INITIATED and call.state != ACTIVE:
            call.decision = Decision.REJECT
            await self._decline(call)
            return
        # UNCERTAIN (spec §2.4): the status after a caller abandons before answer; COMPLETED is
        # what the brief chose, and start/end/duration appear only if the call was picked up.
        self._end_call(call, COMPLETED)
        await self._finish(call, COMPLETED)

    # ---- user side: messages and permissions ------------------------------------------------

    async def user_sends_message(self, wa_id: str, text: str) -> str:
        """The user writes to the business: a `messages` webhook, and the window opens (spec §8.1).

        Returns the message's wamid.
        """
        self._ensure_open()
        now = self._now()
        self.permissions.note_user_activity(wa_id, now)
        message_id = new_message_id()
        message = {"from": wa_id, "id": message_id, "timestamp": str(now), "type": "text", "text": {"body": text}}
        await self.send_webhook(self._messages_envelope(wa_id, "messages", [message]))
        return message_id

    async def user_replies_to_permission(
        self, wa_id: str, accept: bool, permanent: bool = False, *, request_id: str | None = None
    ) -> str:
        """The user answers a permission request: Meta records it and sends the reply webhook (spec §4.4).

        Answers `request_id`, or the newest pending request; answering makes the others stale, and
        an unanswered request goes stale 7 days after delivery (spec §4.6). Raises LookupError when
        there is nothing to answer: a grant without a request is `user_sets_profile_permission`.
        Returns the reply's wamid.
        """
        self._ensure_open()
        try:
            context_id = self.permissions.take_pending_request(wa_id, self._now(), request_id)
        except KeyError as exc:
            raise LookupError(exc.args[0]) from None
        if context_id is None:
            raise LookupError(f"no pending call permission request for {wa_id} (none sent, answered or stale)")
        return await self._permission_reply(wa_id, accept=accept, permanent=permanent, context_id=context_id)

    async def user_sets_profile_permission(self, wa_id: str, grant: bool, permanent: bool = True) -> str:
        """The user toggles permission on the business profile: a reply webhook without context (spec §4.1, §4.4)."""
        self._ensure_open()
        return await self._permission_reply(wa_id, accept=grant, permanent=permanent, context_id=None)

    async def _permission_reply(self, wa_id: str, *, accept: bool, permanent: bool, context_id: str | None) -> str:
        now = self._now()
        expiration = self.permissions.grant(wa_id, now, permanent=permanent) if accept else None
        if not accept:
            self.permissions.revoke(wa_id)
        # A tap on the reply is an inbound message, so it opens the window like any other (spec §8.1).
        self.permissions.note_user_activity(wa_id, now)
        message_id = new_message_id()
        payload = self.permission_reply_payload(
            wa_id,
            accept=accept,
            permanent=permanent,
            expiration=expiration,
            source="user_action",
            context_id=context_id,
            message_id=message_id,
        )
        await self.send_webhook(payload)
        return message_id

    # ---- webhooks ---------------------------------------------------------------------------

    async def send_webhook(self, payload: dict[str, Any]) -> httpx.Response | None:
        """Serialise once, sign those bytes, POST them; honours `self.delivery`.

        Returns None only when `out_of_order` holds a connect back.
        """
        self._ensure_open()
        return await self._sender.send(payload)

    async def release_held_webhooks(self) -> None:
        """Deliver connects held by `out_of_order` whose terminate never came: a late connect on its own."""
        self._ensure_open()
        await self._sender.release_held()

    async def drain_webhooks(self) -> None:
        """Wait for background work to finish: webhook deliveries and BIC steps Meta has scheduled.

        UIC answer timers are not waited for. A BIC that is still ringing is: drain returns once it
        is answered, rejected or rung out, so keep `ring_timeout` short in no-answer tests.
        """
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
            "metadata": self._metadata(),
        }
        # contacts may be missing on business-initiated webhooks (spec §2.1, §2.6 rule 3).
        if not (call.direction == BUSINESS_INITIATED and self.delivery.omit_bic_contacts):
            value["contacts"] = [{"profile": {"name": call.name if name is None else name}, "wa_id": call.wa_id}]
        value["calls"] = [call_obj]
        if errors:
            value["errors"] = copy.deepcopy(errors)
        return self._wrap("calls", value)

    def _metadata(self) -> dict[str, str]:
        return {"display_phone_number": self.display_phone_number, "phone_number_id": self.phone_number_id}

    def _wrap(self, field_name: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"field": field_name, "value": value}]}],
        }

    def _parties(self, call: SimCall) -> tuple[str, str]:
        """(from, to): the user calls the business in a UIC, the business calls the user in a BIC (spec §2.2)."""
        if call.direction == BUSINESS_INITIATED:
            return self.display_phone_number, call.wa_id
        return call.wa_id, self.display_phone_number

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
        if call.deeplink_payload is not None:
            call_obj["deeplink_payload"] = call.deeplink_payload
        return self._envelope(call, call_obj, name=name)

    def bic_connect_payload(self, call: SimCall) -> dict[str, Any]:
        """Business-initiated connect carrying Meta's SDP *answer* (spec §2.5). Fresh dict each time."""
        if call.answer_sdp is None:
            raise ValueError(f"call {call.id} has no answer SDP yet")
        call_obj: dict[str, Any] = {
            "id": call.id,
            "from": self.display_phone_number,
            "to": call.wa_id,
            "event": "connect",
            "timestamp": str(self._now()),
            "direction": BUSINESS_INITIATED,
        }
        if call.biz_opaque_callback_data is not None:
            call_obj["biz_opaque_callback_data"] = call.biz_opaque_callback_data
        call_obj["session"] = {"sdp_type": "answer", "sdp": call.answer_sdp}
        return self._envelope(call, call_obj)

    def status_payload(self, call: SimCall, status: str) -> dict[str, Any]:
        """A BIC call status (spec §2.6): `type: call` tells it apart from a message status."""
        status_obj: dict[str, Any] = {
            "id": call.id,
            "timestamp": str(self._now()),
            "type": "call",
            "status": status,
            "recipient_id": call.wa_id,
        }
        if call.biz_opaque_callback_data is not None:
            status_obj["biz_opaque_callback_data"] = call.biz_opaque_callback_data
        return self._wrap(
            "calls", {"messaging_product": "whatsapp", "metadata": self._metadata(), "statuses": [status_obj]}
        )

    def terminate_payload(
        self, call: SimCall, *, status: str, errors: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Terminate webhook (spec §2.4) from the call's current times, for either direction.

        `start_time`/`end_time`/`duration` appear only when the call was picked up. `errors`, if
        given, goes both in the call object and at `value.errors`, as in the real FAILED capture
        (spec §2 rule 5).
        """
        end_time = call.end_time if call.end_time is not None else self._now()
        sender, receiver = self._parties(call)
        call_obj: dict[str, Any] = {
            "id": call.id,
            "from": sender,
            "to": receiver,
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
        if call.deeplink_payload is not None:
            call_obj["deeplink_payload"] = call.deeplink_payload
        if errors:
            call_obj["errors"] = copy.deepcopy(errors)
        return self._envelope(call, call_obj, errors=errors)

    def _messages_envelope(
        self, wa_id: str, key: str, items: list[dict[str, Any]], *, contacts: bool = True
    ) -> dict[str, Any]:
        value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": self._metadata()}
        if contacts:
            value["contacts"] = [{"profile": {"name": self._name(wa_id)}, "wa_id": wa_id}]
        value[key] = items
        return self._wrap("messages", value)

    def permission_reply_payload(
        self,
        wa_id: str,
        *,
        accept: bool,
        permanent: bool = False,
        expiration: int | None = None,
        source: str = "user_action",
        context_id: str | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """The user's permission reply, on the `messages` field, not `calls` (spec §4.4).

        `is_permanent` and `expiration_timestamp` appear only on an accept, the latter only for a
        temporary one, as a string like Meta's samples. `context.id` is the request's wamid, the
        call's wacid for a callback grant, or absent (profile toggle, automatic revoke).
        """
        reply: dict[str, Any] = {"response": "accept" if accept else "reject"}
        if accept:
            reply["is_permanent"] = permanent
            if not permanent and expiration is not None:
                reply["expiration_timestamp"] = str(expiration)
        reply["response_source"] = source
        message: dict[str, Any] = {
            "from": wa_id,
            "id": message_id or new_message_id(),
            "timestamp": str(self._now()),
            # UNCERTAIN (spec §4.4): Meta's sample omits the top-level type; the spec keeps it.
            "type": "interactive",
        }
        if context_id is not None:
            # UNCERTAIN (spec §4.4): the spec's sample puts the user's number in context.from,
            # although elsewhere context.from names the sender of the quoted message. We follow the
            # sample; a server should key on context.id only.
            message["context"] = {"from": wa_id, "id": context_id}
        message["interactive"] = {"type": "call_permission_reply", "call_permission_reply": reply}
        return self._messages_envelope(wa_id, "messages", [message])

    def message_status_payload(
        self, message_id: str, wa_id: str, status: str, *, errors: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A message status (sent/delivered/failed) for a message the business sent (spec §4.2)."""
        status_obj: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(self._now()),
            "recipient_id": wa_id,
        }
        if errors:
            status_obj["errors"] = copy.deepcopy(errors)
        return self._messages_envelope(wa_id, "statuses", [status_obj], contacts=False)

    # ---- Graph API: /calls ------------------------------------------------------------------

    async def _handle_action(self, action: str, body: dict[str, Any]) -> GraphResult:
        if action == "connect":
            return self._connect(body)
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
        elif call.direction == BUSINESS_INITIATED:
            reason = (
                f"Call {call.id} is business-initiated; {action} applies only to user-initiated calls "
                "(the user answers a business-initiated call)"
            )
        elif call.state == ACTIVE:
            reason = f"Call {call.id} is already in progress; cannot {action} it"
        elif action == "terminate":
            reason = f"Call {call.id} has not been accepted; use reject to decline it"
        else:
            reason = f"Cannot {action} call {call.id} in state {call.state}"
        raise GraphApiError(100, reason)

    def _connect(self, body: dict[str, Any]) -> GraphResult:
        """Business-initiated connect (spec §3.2): check parameters, then Meta's rules, then ring.

        Order: parameters (100), then the business number (138000, 138014, 138013, 138002), then the
        user (138006, 138003, 138012). Meta does not document its order; this one reports the
        broadest problem first.
        """
        wa_id = _require_phone(body, "to", bsuid_key="recipient")
        offer = require_offer_session(body)
        check_offer_sdp(offer)
        opaque = check_opaque_data(body)
        now = self._now()
        rules = self.rules
        if not rules.calling_enabled:  # §5 simulator rule 4
            raise rule_error(138000, "Calling is not enabled for this business phone number")
        if rules.bic_restricted:  # §9.3: 7-day pause after negative feedback
            raise rule_error(138014, "Business-initiated calling is temporarily restricted for this number")
        if blocked := self._blocked_country():  # 138013 (§3.3)
            raise rule_error(
                138013,
                f"Business-initiated calling is not available for business phone numbers in {blocked}",
            )
        ongoing = [c for c in self.calls.values() if c.state != ENDED]
        if rules.max_concurrent_calls is not None and len(ongoing) >= rules.max_concurrent_calls:  # §8.3
            raise rule_error(
                138002, f"Concurrent call limit of {rules.max_concurrent_calls} reached for this phone number"
            )
        if rules.require_permission and not self.permissions.has_permission(wa_id, now):  # §4, §3 rule 4
            raise rule_error(138006, "No approved call permission from the recipient")
        if rules.one_call_per_user and any(c.wa_id == wa_id for c in ongoing):  # §8.3
            raise rule_error(138003, "A call with this recipient is already ongoing")
        if refusal := self.permissions.call_refusal(wa_id, now):  # §4.6: 100 connected BICs / 24 h
            raise _refusal_error(refusal)

        call = SimCall(
            id=new_call_id(),
            wa_id=wa_id,
            direction=BUSINESS_INITIATED,
            offer_sdp=offer,
            name=self._name(wa_id),
            state=DIALING,
            biz_opaque_callback_data=opaque,
            offered_at=now,
        )
        call.actions.append("connect")
        self.calls[call.id] = call
        phone = self.user_phones.get(wa_id, self.phone)
        logger.info("call %s: business calls %s, state DIALING", call.id, wa_id)
        return GraphResult(
            body={"messaging_product": "whatsapp", "calls": [{"id": call.id}]},
            after_response=self._later(lambda: self._run_bic(call, phone)),
        )

    def _blocked_country(self) -> str | None:
        """The business number's blocked country (138013), e.g. "CA/US" for a +1 number that is not Caribbean."""
        number = self.display_phone_number
        blocked = self.rules.bic_blocked_countries
        if number.startswith("1") and (other := NANP_OTHER_COUNTRIES.get(number[1:4])):
            countries = [other] if other in blocked else []
        else:
            countries = sorted(
                country
                for country, code in blocked.items()
                if number.startswith(code) and (code != "1" or country in ("US", "CA"))
            )
        return "/".join(countries) if countries else None

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
        # A connected call in either direction resets the permission-request counters (spec §4.6).
        self.permissions.note_connected_call(call.wa_id, call.start_time, business_initiated=False)
        call.answer_ready.set()
        call.accepted.set()
        return GraphResult()

    def _reject(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        # UNCERTAIN (spec §2.4, Appendix B item 1): Meta's status after reject is undocumented. We
        # send COMPLETED without start/end/duration: nothing failed, the call was just never picked
        # up, and the absent start_time is what tells the server it was not answered.
        self._end_call(call, COMPLETED)
        return GraphResult(after_response=self._later(lambda: self._finish(call, COMPLETED)))

    def _terminate(self, call: SimCall, body: dict[str, Any], new_state: str) -> GraphResult:
        # On a ringing BIC this cancels it; COMPLETED without times, like a reject (Appendix B item 1).
        self._end_call(call, COMPLETED)
        return GraphResult(after_response=self._later(lambda: self._finish(call, COMPLETED)))

    # ---- Graph API: /messages (permission requests) -----------------------------------------

    async def _handle_message(self, body: dict[str, Any]) -> GraphResult:
        """A call permission request, free-form (spec §4.2) or template (spec §4.3).

        Refusals with an HTTP error: bad shape (100), unknown template (132001), BIC restriction
        (138014), permanent permission already (138017), request limits (138009). A free-form
        request outside the customer-service window is accepted and then fails by webhook (131047),
        as the Cloud API does, and does not count towards the limits.
        """
        raw_to = body.get("to")
        wa_id = _require_phone(body, "to", bsuid_key="recipient")
        recipient_type = body.get("recipient_type")
        if recipient_type is not None and recipient_type != "individual":
            raise invalid_parameter(f"Invalid recipient_type {recipient_type!r}; expected 'individual'")
        if is_voice_call_interactive(body) or (
            body.get("type") == "template"
            and isinstance(body.get("template"), dict)
            and body["template"].get("name") in self.call_button_templates
        ):
            return self._call_button(body, raw_to, wa_id)
        kind = body.get("type")
        body_text: str | None = None
        template_name: str | None = None
        if kind == "interactive":
            body_text = _check_permission_interactive(body.get("interactive"))
        elif kind == "template":
            template_name = self._check_permission_template(body.get("template"))
        else:
            raise invalid_parameter(
                f"Unsupported message type {kind!r}: this simulator implements only call permission requests "
                "(type 'interactive' with call_permission_request, or a call permission request 'template')"
            )
        now = self._now()
        if self.rules.bic_restricted:  # §9.3: no permission requests during the pause either
            raise rule_error(138014, "Business-initiated calling, permission requests included, is restricted")
        if refusal := self.permissions.request_refusal(wa_id, now):  # §4.6: 138017 first, then 138009
            raise _refusal_error(refusal)

        request = PermissionRequest(
            id=new_message_id(),
            wa_id=wa_id,
            kind=kind,
            sent_at=now,
            status="sent",
            body_text=body_text,
            template_name=template_name,
        )
        self.permission_requests.append(request)
        if kind == "interactive" and self.rules.require_window and not self.permissions.window_open(wa_id, now):
            request.status = "failed"  # §4.1: free-form only inside the window
            logger.info("permission request %s to %s: window closed, will fail with 131047", request.id, wa_id)
        else:
            self.permissions.note_request(wa_id, now, request.id)
        response = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": raw_to, "wa_id": wa_id}],
            "messages": [{"id": request.id}],
        }
        return GraphResult(body=response, after_response=self._later(lambda: self._after_request(request)))

    def _call_button(self, body: dict[str, Any], raw_to: Any, wa_id: str) -> GraphResult:
        """A call-button message (spec §6.1 free-form, §6.2 template). Like any free-form message, the
        interactive outside the customer-service window is accepted and then fails by webhook (131047)."""
        interactive = body["type"] == "interactive"
        if interactive:
            fields = check_voice_call_interactive(body["interactive"])
        else:
            fields = check_voice_call_template(body["template"], self.call_button_templates)
        now = self._now()
        button = CallButtonMessage(
            id=new_message_id(),
            wa_id=wa_id,
            kind="interactive" if interactive else "template",
            sent_at=now,
            ttl_minutes=fields.ttl_minutes,
            payload=fields.payload,
            body_text=fields.body_text,
            display_text=fields.display_text,
            template_name=fields.template_name,
        )
        if interactive and self.rules.require_window and not self.permissions.window_open(wa_id, now):
            button.status = "failed"  # §6.1, §8.1: free-form only inside the window
            logger.info("call button %s to %s: window closed, will fail with 131047", button.id, wa_id)
        self.call_buttons.append(button)
        response = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": raw_to, "wa_id": wa_id}],
            "messages": [{"id": button.id}],
        }
        return GraphResult(body=response, after_response=self._later(lambda: self._after_button(button)))

    async def _after_button(self, button: CallButtonMessage) -> None:
        await asyncio.sleep(self.timings.message_status_after)
        if button.status == "failed":
            await self._emit(
                self.message_status_payload(button.id, button.wa_id, "failed", errors=[WINDOW_CLOSED_ERROR])
            )
            return
        if self.rules.message_status_webhooks:
            for status in ("sent", "delivered"):
                await self._emit(self.message_status_payload(button.id, button.wa_id, status))

    # ---- Graph API: settings ----------------------------------------------------------------

    def settings_view(self, phone_number_id: str | None = None) -> dict[str, Any]:
        """The `calling` object as GET shows it (spec §5)."""
        calling = self.settings.calling(phone_number_id or self.phone_number_id)
        calling["status"] = "ENABLED" if self.rules.calling_enabled else "DISABLED"
        calling["callback_permission_status"] = "ENABLED" if self.rules.callback_permission else "DISABLED"
        calling.setdefault("call_icon_visibility", "DEFAULT")
        return calling

    async def _handle_settings(self, phone_number_id: str, body: dict[str, Any] | None) -> GraphResult:
        """GET returns the stored settings; POST validates (100, rule named), stores with §5's replace rules,
        applies status and callback permission to the rules, and fires `account_settings_update`."""
        if body is None:
            return GraphResult(body={"calling": self.settings_view(phone_number_id), "id": phone_number_id})
        unknown = sorted(set(body) - {"calling"})
        if unknown:
            raise invalid_parameter(f"Unsupported settings field(s) {unknown}: this simulator implements `calling`")
        calling = body.get("calling")
        self.settings.update(phone_number_id, calling, self._clock())  # validated: `calling` is a dict now
        assert isinstance(calling, dict)
        if "status" in calling:  # §5 rule 4: DISABLED makes /calls answer 138000
            self.rules.calling_enabled = calling["status"] == "ENABLED"
        if "callback_permission_status" in calling:
            self.rules.callback_permission = calling["callback_permission_status"] == "ENABLED"
        update = self._wrap(
            "account_settings_update",
            {
                "type": "PHONE_NUMBER_SETTINGS",
                "timestamp": str(self._now()),
                "phone_number_settings": {
                    "phone_number_id": phone_number_id,
                    "calling": self.settings_view(phone_number_id),
                },
            },
        )
        return GraphResult(body={"success": True}, after_response=self._later(lambda: self._emit(update)))

    def _check_permission_template(self, template: Any) -> str:
        if not isinstance(template, dict):
            raise invalid_parameter("The parameter template is required")
        name = template.get("name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not name or not isinstance(code, str) or not code:
            raise invalid_parameter("template.name and template.language.code are required")
        registered = self.permission_templates.get(name)
        if registered is None or registered[0] != code:
            raise rule_error(132001, f"Template {name!r} does not exist in {code!r}")
        components = template.get("components", [])
        if not isinstance(components, list):
            raise invalid_parameter("template.components must be a list")
        for component in components:
            ctype = component.get("type") if isinstance(component, dict) else None
            # §4.3: a permission request template is sent with body parameters only.
            if not isinstance(ctype, str) or ctype.lower() != "body":
                raise invalid_parameter(
                    f"Invalid template component {ctype!r}: a call permission request template takes "
                    "body parameters only"
                )
        return name

    async def _after_request(self, request: PermissionRequest) -> None:
        """What follows an accepted request: statuses, then possibly the user's automatic answer."""
        await asyncio.sleep(self.timings.message_status_after)
        if request.status == "failed":
            await self._emit(
                self.message_status_payload(request.id, request.wa_id, "failed", errors=[WINDOW_CLOSED_ERROR])
            )
            return
        if self.rules.message_status_webhooks:
            for status in ("sent", "delivered"):
                await self._emit(self.message_status_payload(request.id, request.wa_id, status))
        policy = self.permission_policy
        if policy is None:
            return
        choice = await policy(request)
        if choice is None:
            return
        await asyncio.sleep(self.timings.permission_reply_after)
        if request.id not in self.permissions.pending_requests(request.wa_id, self._now()):
            return  # answered meanwhile by the test, stale, or made stale by an answer to another
        self.permissions.take_pending_request(request.wa_id, self._now(), request.id)
        await self._permission_reply(
            request.wa_id, accept=choice.accept, permanent=choice.permanent, context_id=request.id
        )

    # ---- Graph API: GET call_permissions ----------------------------------------------------

    async def _handle_permissions_query(self, query: dict[str, str]) -> GraphResult:
        """GET call_permissions (spec §4.5), rate-limited per second on the injected clock (613)."""
        now_f = self._clock()
        if (limit := self.rules.permission_get_per_second) is not None:
            self._permission_gets = [t for t in self._permission_gets if now_f - 1.0 < t <= now_f]
            if len(self._permission_gets) >= limit:
                raise rule_error(613, f"Limit of {limit} call permission requests per second reached")
        wa_id = _require_phone(query, "user_wa_id", bsuid_key="recipient")
        self._permission_gets.append(now_f)
        return GraphResult(body=self.permissions.view(wa_id, int(now_f)))

    # ---- BIC lifecycle ----------------------------------------------------------------------

    async def _run_bic(self, call: SimCall, phone: UserPhone | None) -> None:
        """Drive one BIC as Meta would (spec §2.6 rule 2, §7.4, Appendix A).

        RINGING, then the phone decides; if it provides an answer maker the connect webhook with the
        answer follows (during ringing, as chatwoot observed); then ACCEPTED, or REJECTED and
        terminate, or a FAILED terminate when the ring window runs out. Every wait also ends when the
        call does (business terminate, user hangup), and then the driver just stops.
        """
        t = self.timings
        try:
            if await self._race(call, asyncio.sleep(t.ringing_after), None) is _ENDED:
                return
            call.state = RINGING
            await self._emit_status(call, STATUS_RINGING)
            deadline = asyncio.get_running_loop().time() + t.ring_timeout

            answer = await self._ring(call, phone, deadline)
            if answer is _ENDED:
                return
            if answer is _TIMED_OUT:
                await self._ring_out(call)
                return
            call.decision = answer.decision

            if answer.make_answer is not None:
                if (got := await self._race(call, asyncio.sleep(t.connect_after), deadline)) is not None:
                    await self._stop_ringing(call, got)
                    return
                try:
                    sdp = await self._race(call, answer.make_answer(call.offer_sdp), deadline)
                except Exception:
                    logger.exception("call %s: the user's phone could not answer the offer", call.id)
                    await self._setup_failed(call)
                    return
                if sdp is _ENDED or sdp is _TIMED_OUT:
                    await self._stop_ringing(call, sdp)
                    return
                if not isinstance(sdp, str) or not sdp:
                    logger.error("call %s: make_answer returned %r, not an SDP string", call.id, sdp)
                    await self._setup_failed(call)
                    return
                call.answer_sdp = sdp
                call.state = MEDIA_READY
                call.answer_ready.set()
                await self._emit(self.bic_connect_payload(call))

            wait = t.ring_timeout if answer.decision is Decision.NO_ANSWER else t.pickup_after
            if (got := await self._race(call, asyncio.sleep(wait), deadline)) is not None:
                await self._stop_ringing(call, got)
                return
            if answer.decision is Decision.NO_ANSWER:  # only reachable with a zero-length ring window
                await self._ring_out(call)
            elif answer.decision is Decision.ACCEPT:
                await self._pick_up(call)
            else:
                await self._decline(call)
        except httpx.HTTPError:
            logger.exception("call %s: webhook delivery failed; the BIC driver stops", call.id)

    async def _ring(self, call: SimCall, phone: UserPhone | None, deadline: float) -> Any:
        """The phone's decision, `_ENDED` or `_TIMED_OUT`. A phone that fails counts as not answering."""
        if phone is None:
            logger.warning("call %s: no UserPhone for %s; the call will ring out", call.id, call.wa_id)
            return await self._race(call, asyncio.sleep(self.timings.ring_timeout), deadline)
        try:
            answer = await self._race(call, phone.ring(call), deadline)
        except Exception:
            logger.exception("call %s: the user's phone failed while ringing; treating it as no answer", call.id)
            return UserAnswer(Decision.NO_ANSWER)
        if answer is _ENDED or answer is _TIMED_OUT or isinstance(answer, UserAnswer):
            return answer
        logger.error("call %s: ring() returned %r, not a UserAnswer; treating it as no answer", call.id, answer)
        return UserAnswer(Decision.NO_ANSWER)

    async def _race(self, call: SimCall, coro: Coroutine[Any, Any, Any], deadline: float | None) -> Any:
        """Run `coro` until it finishes, the call ends (`_ENDED`) or the loop-time `deadline` passes (`_TIMED_OUT`).

        A plain sleep returns None. Whatever is still running is cancelled and awaited, so no task
        outlives the race. Exceptions from `coro` propagate.
        """
        work = asyncio.ensure_future(coro)
        ended = asyncio.ensure_future(call.ended.wait())
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            done, _ = await asyncio.wait({work, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, ended):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, ended, return_exceptions=True)
        if call.ended.is_set():
            return _ENDED
        if work in done:
            return work.result()
        return _TIMED_OUT

    async def _stop_ringing(self, call: SimCall, outcome: Any) -> None:
        if outcome is _TIMED_OUT:
            await self._ring_out(call)

    async def _emit_status(self, call: SimCall, status: str) -> None:
        call.statuses.append(status)
        await self._emit(self.status_payload(call, status))

    async def _pick_up(self, call: SimCall) -> None:
        """The user answers: ACCEPTED (spec §2.6). start_time is this moment (spec §2.5)."""
        now = self._now()
        call.state = ACTIVE
        call.start_time = now
        # §4.6: counts towards the 24 h cap, resets request counters and the unanswered streak.
        self.permissions.note_connected_call(call.wa_id, now, business_initiated=True)
        # §8.1: a user accepting a BIC opens or refreshes the customer-service window.
        self.permissions.note_user_activity(call.wa_id, now)
        call.accepted.set()
        logger.info("call %s: user picked up, state ACTIVE", call.id)
        await self._emit_status(call, STATUS_ACCEPTED)

    async def _decline(self, call: SimCall) -> None:
        """The user declines: REJECTED, then terminate (spec §2.6); counts as unanswered (spec §4.6)."""
        self._end_call(call, COMPLETED)
        await self._emit_status(call, STATUS_REJECTED)
        await asyncio.sleep(self.timings.terminate_after)
        # UNCERTAIN (Appendix B item 1): COMPLETED without times, as for a UIC reject.
        await self._finish(call, COMPLETED)

    async def _ring_out(self, call: SimCall) -> None:
        """Nobody picked up within the ring window: FAILED terminate; counts as unanswered (Appendix A)."""
        if call.state == ENDED:
            return
        call.decision = call.decision or Decision.NO_ANSWER
        logger.info("call %s: not answered within %.3f s", call.id, self.timings.ring_timeout)
        self._end_call(call, FAILED)
        await self._finish(call, FAILED, errors=[BIC_NO_ANSWER_ERROR])

    async def _setup_failed(self, call: SimCall) -> None:
        """Meta's media leg could not answer our offer; not the user's doing, so not unanswered."""
        if call.state == ENDED:
            return
        self._end_call(call, FAILED)
        await self._finish(call, FAILED, errors=[BIC_SETUP_FAILED_ERROR], count_unanswered=False)

    # ---- lifecycle --------------------------------------------------------------------------

    def _end_call(self, call: SimCall, status: str) -> None:
        self._cancel_timer(call.id)
        call.state = ENDED
        call.end_status = status
        call.end_time = self._now()
        call.ended.set()
        logger.info("call %s: ended %s", call.id, status)

    async def _finish(
        self,
        call: SimCall,
        status: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        count_unanswered: bool = True,
    ) -> None:
        """Send the terminate, then the permission consequences of how the call ended.

        BIC never picked up: one more unanswered call; the 2nd in a row shows the user a system
        message, the 4th revokes permission with an automatic reject reply (spec §4.6). Whether a
        call the business cancels while ringing counts is undocumented; we count it, since the
        user saw a missed call. UIC with callback permission on: the automatic temporary grant
        whose context is the call id (spec §4.1 item 2, §4.4).
        """
        await self._emit(self.terminate_payload(call, status=status, errors=errors))
        now = self._now()
        if call.direction == BUSINESS_INITIATED:
            if call.start_time is not None or not count_unanswered:
                return
            outcome = self.permissions.note_unanswered(call.wa_id)
            if outcome.system_message:
                self.system_messages.append(SystemMessage(call.wa_id, now, outcome.consecutive))
                logger.info("user %s: system message after %d unanswered calls", call.wa_id, outcome.consecutive)
            if outcome.revoked:
                logger.info("user %s: call permission auto-revoked", call.wa_id)
                await self._emit(self.permission_reply_payload(call.wa_id, accept=False, source="automatic"))
        elif self.rules.callback_permission and self.permissions.status(call.wa_id, now) != PERMANENT:
            expiration = self.permissions.grant(call.wa_id, now, permanent=False)
            await self._emit(
                self.permission_reply_payload(
                    call.wa_id, accept=True, expiration=expiration, source="automatic", context_id=call.id
                )
            )

    async def _answer_timer(self, call: SimCall) -> None:
        """Meta's 30-60 s answer window (spec §7.4 item 5): no accept means a FAILED terminate."""
        await asyncio.sleep(self.answer_timeout)
        self._timers.pop(call.id, None)
        if call.state not in (OFFERED, PRE_ACCEPTED):
            return
        logger.info("call %s: no accept within %.3f s", call.id, self.answer_timeout)
        self._end_call(call, FAILED)
        try:
            await self._finish(call, FAILED, errors=[NO_ANSWER_ERROR])
        except httpx.HTTPError:
            logger.exception("background webhook delivery failed")

    def _cancel_timer(self, call_id: str) -> None:
        timer = self._timers.pop(call_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _later(self, work: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], Coroutine[Any, Any, None]]:
        """A callable for after the Graph response is sent; it only spawns, so it never blocks.

        Meta answers the request before it emits the webhooks the request causes (spec §3.2).
        """

        async def start() -> None:
            if not self._closed:
                self._spawn(self._quietly(work()))

        return start

    async def _quietly(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except httpx.HTTPError:
            logger.exception("background webhook delivery failed")

    async def _emit(self, payload: dict[str, Any]) -> None:
        """Deliver from Meta's own flow: silently nothing once closed; transport errors propagate."""
        if self._closed:
            return
        await self._sender.send(payload)

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
        """Cancel timers, BIC drivers and pending deliveries, then close the HTTP client; nothing keeps running."""
        self._closed = True
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._background.clear()
        await self._sender.aclose()


# ---- request checks -----------------------------------------------------------------------------


def _require_phone(source: dict[str, Any], key: str, *, bsuid_key: str) -> str:
    """A user's phone number in digits; a leading '+' is tolerated and dropped.

    Business-scoped user ids (BSUIDs, spec §2.1, §3.2, §4.5) are not simulated, so a request that
    names the user only by one is refused with a clear reason instead of being misread.
    """
    value = source.get(key)
    if value is None:
        if source.get(bsuid_key) is not None:
            raise invalid_parameter(f"The parameter {bsuid_key} (BSUID) is not supported by this simulator; use {key}")
        raise invalid_parameter(f"The parameter {key} is required")
    if not isinstance(value, str) or not _PHONE_RE.fullmatch(value):
        raise invalid_parameter(f"Invalid parameter {key} {value!r}: expected a phone number in digits")
    return value.lstrip("+")


def _check_permission_interactive(interactive: Any) -> str | None:
    """Shape of the free-form request (spec §4.2); returns the body text, if any."""
    if not isinstance(interactive, dict):
        raise invalid_parameter("The parameter interactive is required")
    itype = interactive.get("type")
    if itype != "call_permission_request":
        raise invalid_parameter(
            f"Unsupported interactive type {itype!r}: this simulator implements call_permission_request and voice_call"
        )
    action = interactive.get("action")
    if not isinstance(action, dict) or action.get("name") != "call_permission_request":
        raise invalid_parameter("interactive.action.name must be 'call_permission_request'")
    for part in ("header", "footer"):
        if part in interactive:
            raise invalid_parameter(f"interactive.{part} is not supported on a call_permission_request message")
    if "body" not in interactive:
        return None
    body = interactive["body"]
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text or len(text) > 1024:
        raise invalid_parameter("interactive.body.text must be a non-empty string of at most 1024 characters")
    return text


def _refusal_error(refusal: Refusal) -> GraphApiError:
    return rule_error(refusal.code, refusal.details)
