"""Meta's Graph API surface for calling and call permissions.

Routes: `POST /{version}/{phone_number_id}/calls` (spec §3), `POST .../messages` (permission
requests and call buttons, spec §4.2-§4.3, §6.1-§6.2), `GET .../call_permissions` (spec §4.5) and
`GET`/`POST .../settings` (spec §5).

This module is the HTTP face only: it authenticates, checks the path and the request envelope,
validates SDP offers and answers the way Meta does, and renders errors in Graph's envelope (spec
§3.3). What a request *does* is the simulator's business and is delegated to handlers.

It deliberately shares no code with `agent.whatsapp`: the simulator re-derives every rule from the
spec, so a misreading on either side fails a test instead of hiding in both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)

MIN_GRAPH_MAJOR_VERSION = 17  # FAQ: calling needs v17.0 or newer (spec §3.1)
CALL_ACTIONS = frozenset({"connect", "pre_accept", "accept", "reject", "terminate"})
SUCCESS_BODY: dict[str, Any] = {"messaging_product": "whatsapp", "success": True}
MAX_OPAQUE_DATA_LEN = 512  # biz_opaque_callback_data limit (spec §3.2)

_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)$")
_SDP_LINE_RE = re.compile(r"^[a-z]=")
_FINGERPRINT_VALUE_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$")
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class GraphApiError(Exception):
    """A Graph error response; raised anywhere below the route and rendered once."""

    def __init__(
        self,
        code: int,
        details: str,
        *,
        http_status: int = 400,
        message: str | None = None,
        with_error_data: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.http_status = http_status
        self.message = message if message is not None else f"(#{code}) {details}"
        self.with_error_data = with_error_data
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """Graph's error envelope (spec §3.3), with a fresh fbtrace_id per response as Meta does."""
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code}
        if self.with_error_data:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return {"error": error}


def invalid_parameter(details: str) -> GraphApiError:
    """Code 100 is Meta's catch-all for bad parameters, SDP problems included (spec §3.3)."""
    return GraphApiError(100, details, message="(#100) Invalid parameter")


# Code -> (HTTP status, short title) from the spec §3.3 table, so every refusal of the same rule
# looks the same wherever it is raised. 132001 is not in the spec: it is the Cloud API's usual
# "template does not exist" code, used for permission templates nobody registered.
RULE_ERRORS: dict[int, tuple[int, str]] = {
    613: (429, "Fetch call permission API limit hit"),
    132001: (404, "Template name does not exist in the translation"),
    138000: (401, "Calling not enabled"),
    138002: (429, "Concurrent calls limit reached"),
    138003: (400, "Duplicate call"),
    138006: (401, "No approved call permission found"),
    138009: (400, "Call permission request limit reached"),
    138012: (400, "Business-initiated calls limit reached"),
    138013: (400, "Business-initiated calling not available"),
    138014: (400, "Calling restricted"),
    138017: (400, "Call permission request not sent"),
}


def rule_error(code: int, details: str) -> GraphApiError:
    """A Meta rule refusal with the HTTP status and message the spec lists for `code`."""
    http_status, title = RULE_ERRORS[code]
    return GraphApiError(code, details, http_status=http_status, message=f"(#{code}) {title}")


@dataclass
class GraphRequestRecord:
    """One Graph request as seen by Meta, so tests can assert on the server's exact calls."""

    method: str
    path: str
    action: str | None
    body: dict[str, Any] | None
    status: int  # HTTP status we answered with
    error_code: int | None  # Graph error code, None on success
    call_id: str | None = None


@dataclass
class GraphResult:
    """What an action handler wants sent back, plus work that must wait until the reply is out.

    `after_response` exists because Meta answers reject/terminate before it emits the terminate
    webhook; running it as a Starlette background task keeps that order under uvicorn.
    """

    body: dict[str, Any] = field(default_factory=lambda: dict(SUCCESS_BODY))
    after_response: Callable[[], Awaitable[None]] | None = None


@dataclass
class GraphFault:
    """Meta's edge misbehaving for the next `count` requests of `action` (None: any calls action).

    `status` is the error answered (5xx, 429), or None to answer normally; `delay_s` stalls the answer first,
    longer than the client's timeout to simulate a request that never comes back. A stalled request with an
    error status is never acted on; one with `status=None` is acted on late, as a slow Meta would.
    """

    action: str | None = None
    status: int | None = 503
    count: int = 1
    retry_after: str | None = None  # the Retry-After header, as sent
    delay_s: float = 0.0
    hits: int = 0

    def error(self) -> GraphApiError:
        assert self.status is not None
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        if self.status == 429:
            return GraphApiError(
                130429, "Rate limit hit", http_status=429, message="(#130429) Rate limit hit", headers=headers
            )
        return GraphApiError(
            2,
            "Service temporarily unavailable",
            http_status=self.status,
            message="(#2) Service temporarily unavailable",
            headers=headers,
        )


class GraphFaults:
    """Fault injection for tests: queued `GraphFault`s, consumed in order by matching requests."""

    def __init__(self) -> None:
        self._pending: list[GraphFault] = []

    def inject(
        self,
        action: str | None = None,
        *,
        status: int | None = 503,
        count: int = 1,
        retry_after: str | None = None,
        delay_s: float = 0.0,
    ) -> GraphFault:
        fault = GraphFault(action=action, status=status, count=count, retry_after=retry_after, delay_s=delay_s)
        self._pending.append(fault)
        return fault

    def take(self, action: str | None) -> GraphFault | None:
        for fault in self._pending:
            if fault.action is None or fault.action == action:
                fault.hits += 1
                if fault.hits >= fault.count:
                    self._pending.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._pending.clear()


ActionHandler = Callable[[str, dict[str, Any]], Awaitable[GraphResult]]
MessagesHandler = Callable[[dict[str, Any]], Awaitable[GraphResult]]
QueryHandler = Callable[[dict[str, str]], Awaitable[GraphResult]]
#: (phone_number_id, POST body or None for a GET) -> result.
SettingsHandler = Callable[[str, dict[str, Any] | None], Awaitable[GraphResult]]


class GraphApi:
    """The fake `graph.facebook.com` for one business phone number."""

    def __init__(
        self,
        *,
        access_token: str,
        phone_number_id: str,
        handler: ActionHandler,
        requests: list[GraphRequestRecord],
        messages_handler: MessagesHandler | None = None,
        permissions_handler: QueryHandler | None = None,
        settings_handler: SettingsHandler | None = None,
        round_trip_s: Callable[[], float] | float = 0.0,
    ) -> None:
        self._access_token = access_token
        # A real request to Meta takes a network round trip; a callable is read per request, so a test can
        # change the delay between two requests.
        self._round_trip_s = round_trip_s if callable(round_trip_s) else (lambda: float(round_trip_s))
        self._phone_number_id = phone_number_id
        self._handler = handler
        self._messages_handler = messages_handler
        self._permissions_handler = permissions_handler
        self._settings_handler = settings_handler
        self.requests = requests
        self.faults = GraphFaults()
        travel = self._travelling
        routes = [Route("/{version}/{phone_number_id}/calls", travel(self._calls_endpoint), methods=["POST"])]
        if messages_handler is not None:
            routes.append(
                Route("/{version}/{phone_number_id}/messages", travel(self._messages_endpoint), methods=["POST"])
            )
        if permissions_handler is not None:
            routes.append(
                Route(
                    "/{version}/{phone_number_id}/call_permissions",
                    travel(self._permissions_endpoint),
                    methods=["GET"],
                )
            )
        if settings_handler is not None:
            routes.append(
                Route(
                    "/{version}/{phone_number_id}/settings",
                    travel(self._settings_endpoint),
                    methods=["GET", "POST"],
                )
            )
        routes.append(Route("/{path:path}", travel(self._unsupported_endpoint), methods=_ALL_METHODS))
        self.app = Starlette(routes=routes)

    def _travelling(self, endpoint: Callable[[Request], Awaitable[JSONResponse]]) -> Callable[..., Any]:
        """`endpoint` behind the network: half the round trip before Meta acts on the request (so its
        webhooks and state changes come that much later), half before the answer reaches the business."""

        async def travelled(request: Request) -> JSONResponse:
            half = max(0.0, self._round_trip_s()) / 2
            if half:
                await asyncio.sleep(half)
            response = await endpoint(request)
            if half:
                await asyncio.sleep(half)
            return response

        return travelled

    async def _calls_endpoint(self, request: Request) -> JSONResponse:
        body: dict[str, Any] | None = None
        action: str | None = None
        try:
            self._check_auth(request)
            self._check_path(request.path_params["version"], request.path_params["phone_number_id"])
            body = await _read_json_object(request)
            action = _resolve_action(body)
            fault = self.faults.take(action)
            if fault is not None:
                logger.info("graph: injected fault on %s: %s after %.1f s", action, fault.status, fault.delay_s)
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.status is not None:
                    raise fault.error()
            result = await self._handler(action, body)
        except GraphApiError as err:
            return self._error(request, action, body, err)
        return self._success(request, action, body, result)

    async def _messages_endpoint(self, request: Request) -> JSONResponse:
        assert self._messages_handler is not None
        body: dict[str, Any] | None = None
        try:
            self._check_auth(request)
            self._check_path(request.path_params["version"], request.path_params["phone_number_id"])
            body = await _read_json_object(request)
            result = await self._messages_handler(body)
        except GraphApiError as err:
            return self._error(request, None, body, err)
        return self._success(request, None, body, result)

    async def _permissions_endpoint(self, request: Request) -> JSONResponse:
        assert self._permissions_handler is not None
        query = dict(request.query_params)
        try:
            self._check_auth(request)
            self._check_path(request.path_params["version"], request.path_params["phone_number_id"])
            result = await self._permissions_handler(query)
        except GraphApiError as err:
            return self._error(request, None, dict(query), err)
        return self._success(request, None, dict(query), result)

    async def _settings_endpoint(self, request: Request) -> JSONResponse:
        """Settings need the management permission, not messaging (spec §3.1), and their body carries no
        `messaging_product` (spec §5's example), so the envelope check of the other routes is not applied."""
        assert self._settings_handler is not None
        body: dict[str, Any] | None = None
        try:
            self._check_auth(request)
            phone_number_id = request.path_params["phone_number_id"]
            self._check_path(request.path_params["version"], phone_number_id)
            if request.method == "POST":
                body = await _read_json_object(request, messaging_product=False)
            result = await self._settings_handler(phone_number_id, body)
        except GraphApiError as err:
            return self._error(request, None, body, err)
        return self._success(request, None, body, result)

    def _error(
        self, request: Request, action: str | None, body: dict[str, Any] | None, err: GraphApiError
    ) -> JSONResponse:
        self._record(request, action, body, err.http_status, err.code)
        logger.info(
            "graph %s %s -> %s (#%s) %s", request.url.path, action or "", err.http_status, err.code, err.details
        )
        return JSONResponse(err.body(), status_code=err.http_status, headers=err.headers)

    def _success(
        self, request: Request, action: str | None, body: dict[str, Any] | None, result: GraphResult
    ) -> JSONResponse:
        self._record(request, action, body, 200, None)
        background = BackgroundTask(result.after_response) if result.after_response else None
        return JSONResponse(result.body, status_code=200, background=background)

    async def _unsupported_endpoint(self, request: Request) -> JSONResponse:
        """Anything else the server calls is a bug or a feature we have not simulated; say so loudly."""
        err = GraphApiError(
            100,
            f"Unsupported {request.method} request to {request.url.path}: this simulator implements "
            "only POST /{version}/{phone_number_id}/calls, POST .../messages, GET .../call_permissions "
            "and GET/POST .../settings",
            message=f"(#100) Unsupported {request.method.lower()} request.",
        )
        self._record(request, None, None, err.http_status, err.code)
        logger.warning("graph: unsupported %s %s", request.method, request.url.path)
        return JSONResponse(err.body(), status_code=err.http_status)

    def _record(
        self,
        request: Request,
        action: str | None,
        body: dict[str, Any] | None,
        status: int,
        error_code: int | None,
    ) -> None:
        call_id = body.get("call_id") if body is not None else None
        self.requests.append(
            GraphRequestRecord(
                method=request.method,
                path=request.url.path,
                action=action,
                body=body,
                status=status,
                error_code=error_code,
                call_id=call_id if isinstance(call_id, str) else None,
            )
        )

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("authorization")
        challenge = 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"'
        if not header:
            raise GraphApiError(
                190,
                "missing access token",
                http_status=401,
                message="An access token is required to request this resource.",
                with_error_data=False,
                headers={"WWW-Authenticate": challenge},
            )
        scheme, _, token = header.partition(" ")
        # Auth schemes are case-insensitive (RFC 7235); the token itself is compared exactly.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._access_token.encode()):
            raise GraphApiError(
                190,
                "invalid access token",
                http_status=401,
                message="Invalid OAuth access token - Cannot parse access token",
                with_error_data=False,
                headers={"WWW-Authenticate": challenge},
            )

    def _check_path(self, version: str, phone_number_id: str) -> None:
        match = _VERSION_RE.match(version)
        if match is None or int(match.group(1)) < MIN_GRAPH_MAJOR_VERSION:
            raise GraphApiError(
                100,
                f"Unsupported Graph API version {version!r}: calling needs v{MIN_GRAPH_MAJOR_VERSION}.0 "
                "or newer, written like v23.0",
                message=f"(#100) Unknown path components: /{version}",
            )
        if phone_number_id != self._phone_number_id:
            raise GraphApiError(
                100,
                f"Invalid phone number id {phone_number_id!r}",
                message=(
                    f"(#100) Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                    "cannot be loaded due to missing permissions, or does not support this operation."
                ),
            )


async def _read_json_object(request: Request, *, messaging_product: bool = True) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_parameter(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid_parameter("Request body must be a JSON object")
    if messaging_product and body.get("messaging_product") != "whatsapp":
        raise GraphApiError(
            100,
            "The parameter messaging_product is required and must be 'whatsapp'",
            message="(#100) The parameter messaging_product is required.",
        )
    return body


def _resolve_action(body: dict[str, Any]) -> str:
    """Return the action, applying Meta's (UNCERTAIN) default of connect when only `to` is given.

    Values are case-sensitive: only the documented lowercase forms are accepted (spec §3.2,
    Appendix B item 2), so a server sending "ACCEPT" fails here rather than in production.
    """
    if "action" not in body:
        if "to" in body or "recipient" in body:
            logger.warning("graph: request without 'action' but with 'to'; treating it as connect")
            return "connect"
        raise invalid_parameter("The parameter action is required")
    action = body["action"]
    if not isinstance(action, str) or action not in CALL_ACTIONS:
        raise invalid_parameter(
            f"Invalid action {action!r}; expected one of {', '.join(sorted(CALL_ACTIONS))} (lowercase)"
        )
    return action


def require_call_id(body: dict[str, Any]) -> str:
    call_id = body.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_parameter("The parameter call_id is required")
    return call_id


def _require_session(body: dict[str, Any], sdp_type: str, needs: str) -> str:
    session = body.get("session")
    if not isinstance(session, dict):
        raise invalid_parameter("The parameter session is required")
    got = session.get("sdp_type")
    if got != sdp_type:
        raise invalid_parameter(f"Invalid session.sdp_type {got!r}; {needs} '{sdp_type}'")
    sdp = session.get("sdp")
    if not isinstance(sdp, str) or not sdp:
        raise invalid_parameter("The parameter session.sdp is required")
    return sdp


def require_answer_session(body: dict[str, Any]) -> str:
    """Return `session.sdp` after checking the session object is an answer (spec §3 rule 1)."""
    return _require_session(body, "answer", "this action needs")


def check_opaque_data(body: dict[str, Any]) -> str | None:
    data = body.get("biz_opaque_callback_data")
    if data is None:
        return None
    if not isinstance(data, str) or len(data) > MAX_OPAQUE_DATA_LEN:
        raise invalid_parameter(
            f"biz_opaque_callback_data must be a string of at most {MAX_OPAQUE_DATA_LEN} characters"
        )
    return data


def require_offer_session(body: dict[str, Any]) -> str:
    """Return `session.sdp` of a BIC connect after checking it is an offer (spec §3.2, §7.1)."""
    return _require_session(body, "offer", "connect needs")


def _sdp_lines(sdp: str, kind: str) -> list[str]:
    lines = re.split(r"\r?\n", sdp)
    if lines and lines[-1] == "":
        lines.pop()
    if "\r\n" not in sdp:
        # RFC 8866 wants CRLF and the spec says to send it; we have no evidence Meta refuses bare
        # LF, so only warn.
        logger.warning("graph: SDP %s does not use CRLF line endings", kind)
    return lines


@dataclass
class _MediaSection:
    attrs: list[str]  # every a= line, without the "a=" prefix, session and media level together
    formats: list[str]  # payload types on the m=audio line
    rtpmaps: dict[str, str]  # payload type -> lowercased encoding/clock[/channels]


def _check_common(sdp: str, kind: str) -> _MediaSection:
    """Rules both directions share (spec §7.1, §7.3): one audio m-line over DTLS-SRTP, sha-256, ICE creds."""
    if not sdp.startswith("v=0"):
        raise invalid_parameter("Invalid SDP: must start with v=0")
    lines = _sdp_lines(sdp, kind)
    for line in lines:
        if not _SDP_LINE_RE.match(line):
            raise invalid_parameter(f"Invalid SDP: malformed line {line[:60]!r}")

    m_lines = [line for line in lines if line.startswith("m=")]
    audio = [line for line in m_lines if line.startswith("m=audio ")]
    if len(audio) != 1 or len(m_lines) != 1:
        raise invalid_parameter(
            f"Invalid SDP: exactly one m=audio media section is required, found {len(m_lines)} m= line(s)"
        )
    m_parts = audio[0].split()
    if len(m_parts) < 4:
        raise invalid_parameter(f"Invalid SDP: malformed media line {audio[0]!r}")
    _, port, proto, *formats = m_parts
    if port == "0":
        raise invalid_parameter("Invalid SDP: the audio stream is rejected (port 0)")
    if proto != "UDP/TLS/RTP/SAVPF":
        raise invalid_parameter(f"Invalid SDP: media protocol {proto!r}; DTLS-SRTP needs UDP/TLS/RTP/SAVPF")

    attrs = [line[2:] for line in lines if line.startswith("a=")]

    fingerprints = [a[len("fingerprint:") :].split(None, 1) for a in attrs if a.startswith("fingerprint:")]
    sha256 = [fp for fp in fingerprints if fp and fp[0].lower() == "sha-256"]
    if not sha256:
        raise invalid_parameter("No fingerprint found in SDP")
    others = sorted({fp[0] for fp in fingerprints if fp and fp[0].lower() != "sha-256"})
    if others:
        # Meta only accepts SHA-256; aiortc also emits sha-384/sha-512 lines, which pipecat strips
        # for this reason (spec §7.3, which applies to our answer and our BIC offer alike).
        raise invalid_parameter(f"Unsupported fingerprint hash function(s) {others}: only sha-256 is accepted")
    for fp in sha256:
        if len(fp) != 2 or not _FINGERPRINT_VALUE_RE.match(fp[1].strip()):
            raise invalid_parameter("Invalid SDP: malformed sha-256 fingerprint")

    rtpmaps: dict[str, str] = {}
    for a in attrs:
        if a.startswith("rtpmap:"):
            pt, _, encoding = a[len("rtpmap:") :].partition(" ")
            rtpmaps[pt.strip()] = encoding.strip().lower()
    return _MediaSection(attrs=attrs, formats=formats, rtpmaps=rtpmaps)


def _check_setup(attrs: list[str], *, required: str, why: str) -> None:
    setups = [a[len("setup:") :].strip() for a in attrs if a.startswith("setup:")]
    if not setups:
        raise invalid_parameter(f"Invalid SDP: a=setup is missing; the {why} must use a=setup:{required}")
    bad_setup = [s for s in setups if s != required]
    if bad_setup:
        role = "an offer" if required == "actpass" else "answer"
        reason = (
            "the business offers and Meta picks its DTLS role"
            if required == "actpass"
            else "Meta offers actpass and acts as the DTLS server"
        )
        raise invalid_parameter(
            f"Invalid SDP: a=setup:{bad_setup[0]} in {role}; it must be a=setup:{required} ({reason})"
        )


def _check_ice(attrs: list[str], *, kind: str) -> None:
    ufrags = [a[len("ice-ufrag:") :].strip() for a in attrs if a.startswith("ice-ufrag:")]
    pwds = [a[len("ice-pwd:") :].strip() for a in attrs if a.startswith("ice-pwd:")]
    if not ufrags or not pwds:
        raise invalid_parameter("Invalid SDP: a=ice-ufrag and a=ice-pwd are required")
    # RFC 8839 §5.4 lengths; a truncated credential means STUN checks can never authenticate.
    if any(not 4 <= len(u) <= 256 for u in ufrags) or any(not 22 <= len(p) <= 256 for p in pwds):
        raise invalid_parameter("Invalid SDP: ice-ufrag must be 4-256 and ice-pwd 22-256 characters")
    if "ice-lite" in attrs:
        raise invalid_parameter(
            f"Invalid SDP: a=ice-lite in {kind}; Meta is ICE-lite, so the business must run full ICE"
        )


def _check_opus(section: _MediaSection) -> None:
    if not any(section.rtpmaps.get(pt) in ("opus/48000", "opus/48000/2") for pt in section.formats):
        raise invalid_parameter("Invalid SDP: no opus/48000 codec offered on the m=audio line")


def check_answer_sdp(sdp: str, *, offer_sdp: str | None = None) -> None:
    """Validate a UIC answer as Meta does; raise code 100 with the reason in `details`.

    Rules come from spec §7.1-§7.3 and §7.6 rule 5. Beyond the listed ones we also refuse answers
    that could never carry audio against Meta's ICE-lite, DTLS-SRTP offer (stream rejected with
    port 0, an ICE-lite answer, a mid that does not match the offer): Meta would accept the
    signalling and then the call would die silently, which is a worse test failure.
    """
    section = _check_common(sdp, "answer")
    _check_setup(section.attrs, required="active", why="answer")
    _check_ice(section.attrs, kind="answer")
    _check_opus(section)
    for pt in section.formats:
        encoding = section.rtpmaps.get(pt, "")
        if encoding.startswith("telephone-event/") and encoding != "telephone-event/8000":
            raise invalid_parameter(f"Invalid SDP: {encoding} is not supported; DTMF needs telephone-event/8000")

    if offer_sdp is not None:
        offer_mids = [ln[6:].strip() for ln in _split_quiet(offer_sdp) if ln.startswith("a=mid:")]
        mids = [a[4:].strip() for a in section.attrs if a.startswith("mid:")]
        if offer_mids and mids and mids != offer_mids[:1]:
            raise invalid_parameter(f"Invalid SDP: a=mid:{mids[0]} does not match the offer's {offer_mids[0]}")


def check_offer_sdp(sdp: str) -> None:
    """Validate a BIC offer as Meta does; raise code 100 with the reason in `details`.

    Same family as the answer (spec §7.3 "Our answer (UIC) and our offer (BIC)"), with the offerer's
    DTLS role `actpass`. Extra telephone-event clock rates are tolerated, because Meta's own sample
    BIC offer (a browser offer) lists telephone-event/48000 next to 126/8000 (spec §7.3, §7.5).
    """
    section = _check_common(sdp, "offer")
    _check_setup(section.attrs, required="actpass", why="offer")
    _check_ice(section.attrs, kind="offer")
    _check_opus(section)


def _split_quiet(sdp: str) -> list[str]:
    return [line for line in re.split(r"\r?\n", sdp) if line]
