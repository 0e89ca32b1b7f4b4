"""The agent console: a plain HTML page under `/console` and the small JSON + SSE API behind it.

Sign-in is by agent id and the token in that agent's environment variable (`WACALL_AGENT_TOKEN_<ID>`, see
agent/handover/config.py). A session is a random id in an HttpOnly, SameSite=Strict cookie scoped to the
console's path; every POST must also carry the session's CSRF token in `X-CSRF-Token` (the page reads it
from `GET api/session`, which another site cannot read), and a POST whose `Origin` is another site is refused
before anything else. Sign-in itself must be JSON, which a cross-site form cannot send without a preflight.

The page gets its updates from one Server-Sent Events stream per tab. Each stream ends itself after
`stream_max_s` and the browser reconnects at once, so a server shutdown never waits on an open console.
When an agent's last stream has been gone for `disconnect_grace_s` (tab closed, laptop asleep), the desk is
told the agent disconnected: an offer to them moves on, and a caller they were talking to is put back at
the front of the queue instead of talking to nobody.

One console per agent: signing in again elsewhere signs the older page out, so two tabs can never both
accept calls as the same person.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from agent.analytics import FactsSource
from agent.app import BodyError, read_json_object
from agent.handover.analytics_page import AnalyticsPage
from agent.handover.config import AgentSettings, HandoverSettings
from agent.handover.service import ActionError, HandoverService
from agent.whatsapp.pricing import RateCard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "analytics.css": "text/css; charset=utf-8",
}
COOKIE = "wacall_console"
# A Secure cookie carries the prefix, so a browser refuses one set over plain http or by a sibling subdomain.
SECURE_COOKIE = "__Secure-" + COOKIE
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE_S = 12 * 3600
MAX_FAILURES = 5  # free failed sign-ins as one agent from one address; then LOCKOUT_S, doubling per failure
ADDRESS_MAX_FAILURES = 20  # free failed sign-ins from one address, whatever agent ids it tries
AGENT_MAX_FAILURES = 20  # failures for one agent from all addresses together (a spread-out guess)
LOCKOUT_S = 30.0
MAX_LOCKOUT_S = 3600.0
FAILURE_MEMORY_S = 3600.0  # a failure record this old, and not locking, is forgotten
MAX_FAILURE_RECORDS = 4096
STREAM_QUEUE = 500
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob: mediastream:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "Permissions-Policy": "microphone=(self), camera=()",
}


class FailureLimiter:
    """Failed sign-ins per key, with exponential lockout, expiry and a bounded size (least recently used go).

    Bounded because every record is memory an unauthenticated client makes the server hold.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        free: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        max_lockout_s: float = MAX_LOCKOUT_S,
        memory_s: float = FAILURE_MEMORY_S,
        max_records: int = MAX_FAILURE_RECORDS,
    ) -> None:
        self._clock = clock
        self._free = free
        self._lockout_s = lockout_s
        self._max_lockout_s = max_lockout_s
        self._memory_s = memory_s
        self._max_records = max_records
        self._records: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # failures, locked until, last

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, key: str) -> tuple[int, float, float] | None:
        record = self._records.get(key)
        if record is not None and record[1] <= self._clock() and self._clock() - record[2] > self._memory_s:
            del self._records[key]
            return None
        return record

    def failures(self, key: str) -> int:
        record = self._record(key)
        return record[0] if record else 0

    def locked_for(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        record = self._record(key)
        return max(0.0, record[1] - self._clock()) if record else 0.0

    def failed(self, key: str) -> None:
        now = self._clock()
        failures = self.failures(key) + 1
        locked_until = 0.0
        if failures >= self._free:
            locked_until = now + min(self._lockout_s * 2 ** min(failures - self._free, 30), self._max_lockout_s)
        self._records[key] = (failures, locked_until, now)
        self._records.move_to_end(key)
        while len(self._records) > self._max_records:
            self._records.popitem(last=False)

    def forget(self, key: str) -> None:
        self._records.pop(key, None)


@dataclass
class _Session:
    id: str
    agent_id: str
    csrf: str
    created_at: float
    streams: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)
    gone_timer: asyncio.TimerHandle | None = None


class Console:
    """Routes for `/console`; state lives in the `HandoverService`, sessions here (in memory: a restart signs
    everyone out, which is what should happen when every call was dropped anyway)."""

    def __init__(
        self,
        service: HandoverService,
        settings: HandoverSettings,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        disconnect_grace_s: float = 5.0,
        stream_max_s: float = 25.0,
        heartbeat_s: float = 10.0,
        store: FactsSource | None = None,
        rate_card: RateCard | None = None,
    ) -> None:
        self.service = service
        # The analytics page (agent/handover/analytics_page.py), when there are call records to read.
        self._analytics = (
            None
            if store is None
            else AnalyticsPage(store, self._signed_in_agent, headers=SECURITY_HEADERS, card=rate_card)
        )
        self._agents: dict[str, AgentSettings] = {a.id: a for a in settings.agents}
        self._env = env
        self._clock = clock
        self._grace_s = disconnect_grace_s
        self._stream_max_s = stream_max_s
        self._heartbeat_s = heartbeat_s
        self._sessions: dict[str, _Session] = {}
        self._secure_cookies = settings.secure_cookies
        # Failures are counted per client address (and per known agent from that address), so an attacker
        # throttles only themselves, and per known agent, so guesses spread over many addresses are slowed
        # too (see `_throttled`). Unknown agent ids count only against the address.
        self._by_address = FailureLimiter(clock, free=ADDRESS_MAX_FAILURES)
        self._by_pair = FailureLimiter(clock, free=MAX_FAILURES)
        self._by_agent = FailureLimiter(clock, free=AGENT_MAX_FAILURES)
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in [*STATIC_FILES, "console.html"]}

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/api/session", self.session_info, methods=["GET"]),
            Route("/api/signin", self.sign_in, methods=["POST"]),
            Route("/api/signout", self.sign_out, methods=["POST"]),
            Route("/api/status", self.set_status, methods=["POST"]),
            Route("/api/state", self.state, methods=["GET"]),
            Route("/api/events", self.events, methods=["GET"]),
            Route("/api/calls/{call_id}/{action}", self.call_action, methods=["POST"]),
            *(self._analytics.routes if self._analytics is not None else []),
        ]

    # --- pages ----------------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return Response(self._static["console.html"], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return PlainTextResponse("not found", status_code=404)
        return Response(self._static[name], media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    # --- sessions -------------------------------------------------------------------------------------------

    async def session_info(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _json({"signed_in": False})
        return _json({"signed_in": True, "agent": self._agent_json(session.agent_id), "csrf": session.csrf})

    async def sign_in(self, request: Request) -> Response:
        refused = _cross_site(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "sign-in must be sent as JSON")
        data = await _body(request)
        if isinstance(data, Response):
            return data
        agent_id, token = data.get("agent", ""), data.get("token", "")
        if not isinstance(agent_id, str) or not isinstance(token, str):
            return _error(400, "agent and token must be strings")
        agent_id = agent_id.strip().lower()
        now = self._clock()
        address = _client_address(request)
        wait = self._throttled(address, agent_id)
        if wait > 0:
            log.warning("console sign-in from %s throttled for %.0f s", address, wait)
            return _error(429, f"too many failed sign-ins; try again in {wait:.0f} s")
        agent = self._agents.get(agent_id)
        expected = agent.token(self._env) if agent is not None else None
        if agent is not None and expected is None:
            log.warning("agent %s tried to sign in but %s is not set", agent_id, agent.token_variable)
        if agent is None or expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            self._by_address.failed(address)
            if agent is not None:  # unknown ids never get a record of their own
                self._by_pair.failed(f"{address} {agent_id}")
                self._by_agent.failed(agent_id)
            log.warning("console sign-in refused for %r from %s", agent_id[:40], address)
            return _error(401, "unknown agent or wrong token")
        self._by_address.forget(address)
        self._by_pair.forget(f"{address} {agent_id}")
        self._by_agent.forget(agent_id)
        for old in [s for s in self._sessions.values() if s.agent_id == agent_id]:
            self._end_session(old, "You signed in on another page.")
        session = _Session(
            id=secrets.token_urlsafe(32),
            agent_id=agent_id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
        )
        self._sessions[session.id] = session
        log.info("agent %s signed in to the console", agent_id)
        response = _json({"signed_in": True, "agent": self._agent_json(agent_id), "csrf": session.csrf})
        secure = self._secure(request)
        response.set_cookie(
            SECURE_COOKIE if secure else COOKIE,
            session.id,
            max_age=SESSION_MAX_AGE_S,
            path=_cookie_path(request),
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return response

    def _throttled(self, address: str, agent_id: str) -> float:
        """Seconds this address must wait before trying again as `agent_id` (0: it may try now).

        An address waits after many failures whatever ids it tries, or after a few as one agent. When one
        agent has had many failures from everywhere, addresses that have failed as that agent wait too, but
        an address with no failures (the real agent at their desk) is never locked out by others' guessing.
        """
        wait = self._by_address.locked_for(address)
        if agent_id not in self._agents:
            return wait
        pair = f"{address} {agent_id}"
        wait = max(wait, self._by_pair.locked_for(pair))
        if not wait and self._by_pair.failures(pair) and self._by_agent.failures(agent_id) >= AGENT_MAX_FAILURES:
            wait = max(LOCKOUT_S, self._by_agent.locked_for(agent_id))
        return wait

    def _secure(self, request: Request) -> bool:
        if self._secure_cookies == "auto":
            return request.url.scheme == "https"
        return self._secure_cookies == "always"

    async def sign_out(self, request: Request) -> Response:
        session = self._guard(request)
        if isinstance(session, Response):
            return session
        self._end_session(session, "You signed out.")
        self.service.agent_disconnected(session.agent_id)
        response = _json({"signed_in": False})
        secure = self._secure(request)
        name = SECURE_COOKIE if secure else COOKIE
        response.delete_cookie(name, path=_cookie_path(request), httponly=True, samesite="strict", secure=secure)
        return response

    # --- the agent's actions --------------------------------------------------------------------------------

    async def set_status(self, request: Request) -> Response:
        session = self._guard(request)
        if isinstance(session, Response):
            return session
        data = await _body(request)
        if isinstance(data, Response):
            return data
        status = data.get("status")
        if status not in ("available", "away"):
            return _error(400, "status must be available or away")
        self.service.set_available(session.agent_id, status == "available")
        return _json(self.service.view(session.agent_id))

    async def state(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _error(401, "not signed in")
        return _json(self.service.view(session.agent_id))

    async def call_action(self, request: Request) -> Response:
        session = self._guard(request)
        if isinstance(session, Response):
            return session
        call_id, action = request.path_params["call_id"], request.path_params["action"]
        data = await _body(request)
        if isinstance(data, Response):
            return data
        agent_id = session.agent_id
        try:
            if action == "accept":
                sdp = data.get("sdp")
                if not isinstance(sdp, str) or not sdp.strip():
                    return _error(400, "accept needs the browser's SDP offer in `sdp`")
                return _json({"sdp": await self.service.accept(agent_id, call_id, sdp)})
            if action == "decline":
                self.service.decline(agent_id, call_id)
            elif action == "hangup":
                self.service.hang_up(agent_id, call_id)
            elif action == "return":
                self.service.return_to_bot(agent_id, call_id, str(data.get("node", "")))
            else:
                return _error(404, f"unknown action {action!r}")
        except ActionError as exc:
            return _error(exc.status, str(exc))
        return _json(self.service.view(agent_id))

    # --- the live stream ------------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _error(401, "not signed in")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=STREAM_QUEUE)

        def push(message: dict[str, Any]) -> None:
            if queue.full() and message.get("type") == "state":
                return  # a newer state follows; a slow tab only misses intermediate ones
            _put_dropping_oldest(queue, message)

        unsubscribe = self.service.subscribe(session.agent_id, push)
        session.streams.add(queue)
        if session.gone_timer is not None:
            session.gone_timer.cancel()
            session.gone_timer = None
        return StreamingResponse(
            self._stream(session, queue, unsubscribe),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    async def _stream(
        self, session: _Session, queue: asyncio.Queue[dict[str, Any]], unsubscribe: Callable[[], None]
    ) -> AsyncIterator[str]:
        try:
            yield "retry: 1000\n\n"
            yield _sse({"type": "state", "state": self.service.view(session.agent_id)})
            deadline = self._clock() + self._stream_max_s
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    return
                try:
                    message = await asyncio.wait_for(queue.get(), min(self._heartbeat_s, left))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(message)
                if message.get("type") in ("closed", "signed_out"):
                    return
        finally:
            # Runs on client disconnect too (the response is cancelled): no awaits here.
            unsubscribe()
            session.streams.discard(queue)
            self._stream_closed(session)

    def _stream_closed(self, session: _Session) -> None:
        if session.streams or self.service.closed or self._sessions.get(session.id) is not session:
            return
        if session.gone_timer is None:
            loop = asyncio.get_running_loop()
            session.gone_timer = loop.call_later(self._grace_s, self._gone, session)

    def _gone(self, session: _Session) -> None:
        session.gone_timer = None
        if session.streams or self.service.closed:
            return
        log.info("agent %s: console gone for %.0f s; treating as disconnected", session.agent_id, self._grace_s)
        self.service.agent_disconnected(session.agent_id)

    # --- helpers --------------------------------------------------------------------------------------------

    def _session(self, request: Request) -> _Session | None:
        session_id = request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)
        session = self._sessions.get(session_id) if session_id else None
        if session is not None and self._clock() - session.created_at > SESSION_MAX_AGE_S:
            self._end_session(session, "Your session expired; please sign in again.")
            return None
        return session

    def _signed_in_agent(self, request: Request) -> str | None:
        session = self._session(request)
        return None if session is None else self._agent_json(session.agent_id)["name"]

    def _guard(self, request: Request) -> _Session | Response:
        """Every state-changing request: same site, signed in, and the session's CSRF token."""
        refused = _cross_site(request)
        if refused is not None:
            return refused
        session = self._session(request)
        if session is None:
            return _error(401, "not signed in")
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            return _error(403, "missing or wrong CSRF token; reload the page")
        return session

    def _end_session(self, session: _Session, why: str) -> None:
        self._sessions.pop(session.id, None)
        if session.gone_timer is not None:
            session.gone_timer.cancel()
            session.gone_timer = None
        for queue in list(session.streams):
            _put_dropping_oldest(queue, {"type": "signed_out", "reason": why})

    def _agent_json(self, agent_id: str) -> dict[str, Any]:
        agent = self._agents[agent_id]
        return {"id": agent.id, "name": agent.name or agent.id, "skills": list(agent.skills)}


def _cross_site(request: Request) -> Response | None:
    """Refuse a POST another site's page made the browser send (the cookie is SameSite=Strict as well)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return _error(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return _error(403, "cross-site request refused")
    return None


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path") or "/")


def _client_address(request: Request) -> str:
    """Behind a reverse proxy this is the proxy's address unless uvicorn is told to trust X-Forwarded-For."""
    return request.client.host if request.client else "unknown"


def _put_dropping_oldest(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    """A tab that stopped reading must not make the sender fail (a QueueFull here was a 500 at sign-in):
    it loses its oldest updates instead, and the newest, such as `signed_out`, always gets in."""
    while queue.full():
        queue.get_nowait()
    queue.put_nowait(message)


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        return await read_json_object(request, MAX_BODY_BYTES, empty_ok=True)
    except BodyError as exc:
        log.warning("console: %s %s refused: %s", request.method, request.url.path, exc)
        return _error(exc.status, str(exc))


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> JSONResponse:
    return _json({"error": message}, status)


def _sse(message: dict[str, Any]) -> str:
    return f"event: {message.get('type', 'message')}\ndata: {json.dumps(message, separators=(',', ':'))}\n\n"
