"""Check Meta's SDP before aiortc sees it, and shape our answer the way Meta accepts it.

aiortc takes garbage SDP without complaint (an empty string yields an answer with no m-lines), so a bad
offer would turn into a silent, broken call. We validate first and refuse with a reason instead.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field

CRLF = "\r\n"
# Meta sends two host candidates (IPv4 and IPv6); each remote candidate costs connectivity checks, so an
# offer listing thousands would have us send checks to thousands of addresses.
MAX_REMOTE_CANDIDATES = 20
_CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})

log = logging.getLogger(__name__)


class SdpError(ValueError):
    """The SDP cannot carry a WhatsApp call; the message says why."""


@dataclass(frozen=True)
class OfferSummary:
    """What we learned from a valid offer (kept on the call record for debugging)."""

    opus_payload_type: int
    ice_lite: bool
    setup: str
    candidates: int
    fingerprint_hashes: list[str] = field(default_factory=list)
    telephone_event_payload_type: int | None = None


def normalise_line_endings(sdp: str) -> str:
    """Meta sends CRLF; tools and tests often produce LF. aiortc and Meta both want CRLF."""
    lines = [line.rstrip("\r") for line in sdp.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return CRLF.join(lines) + CRLF


_ATTR = re.compile(r"^a=([^:]+)(?::(.*))?$")
_RTPMAP = re.compile(r"^(\d+) ([^/]+)/(\d+)(?:/(\d+))?$")
# RFC 8122: hash name, then the digest as colon-separated hex bytes.
_FINGERPRINT = re.compile(r"^(\S+) [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+$")


def validate_offer(sdp: str, *, expected_type: str = "offer") -> OfferSummary:
    """Refuse anything that is not one DTLS-SRTP audio stream with Opus, as Meta's calls always are."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError(f"empty SDP {expected_type}")
    lines = [line for line in normalise_line_endings(sdp).split(CRLF) if line]
    if lines[0] != "v=0":
        raise SdpError(f"SDP {expected_type} must start with v=0")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not an SDP line: {line[:40]!r}")
    media = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if not media:
        raise SdpError(f"SDP {expected_type} has no m=audio line")
    if len(media) != 1:
        raise SdpError(f"SDP {expected_type} has {len(media)} media sections; a WhatsApp call has exactly one")
    m_line = lines[media[0]]
    parts = m_line[2:].split()
    if len(parts) < 4 or parts[0] != "audio":
        raise SdpError(f"the media section is not audio: {m_line!r}")
    if not parts[1].isdigit() or int(parts[1]) > 65535:
        raise SdpError(f"bad port in {m_line!r}")
    if int(parts[1]) == 0:
        # Port 0 marks a disabled stream (RFC 3264); aiortc would still answer, and no audio would flow.
        raise SdpError(f"the audio stream is disabled (port 0) in {m_line!r}")
    if parts[2] != "UDP/TLS/RTP/SAVPF":
        raise SdpError(f"unsupported transport {parts[2]!r}; expected UDP/TLS/RTP/SAVPF (ICE + DTLS-SRTP)")
    offered_pts = {int(p) for p in parts[3:] if p.isdigit()}

    session_attrs = _attributes(lines[: media[0]])
    media_attrs = _attributes(lines[media[0] :])

    def attr(name: str) -> list[str]:
        return media_attrs.get(name, []) + session_attrs.get(name, [])

    opus_pt: int | None = None
    dtmf_pt: int | None = None
    for value in media_attrs.get("rtpmap", []):
        match = _RTPMAP.match(value.strip())
        if not match:
            raise SdpError(f"malformed a=rtpmap:{value}")
        pt, name, rate = int(match.group(1)), match.group(2).lower(), int(match.group(3))
        if name == "opus" and rate == 48000 and pt in offered_pts and opus_pt is None:
            opus_pt = pt
        if name == "telephone-event" and rate == 8000 and pt in offered_pts:
            dtmf_pt = pt
    if opus_pt is None:
        raise SdpError("no opus/48000 codec offered in the m=audio line")
    # An attribute present with an empty value is as missing as an absent one; aiortc would fail on it
    # with an unhelpful error (or, for a bad fingerprint, answer and let DTLS fail silently later).
    if not any(v.strip() for v in attr("ice-ufrag")) or not any(v.strip() for v in attr("ice-pwd")):
        raise SdpError("missing a=ice-ufrag or a=ice-pwd")
    fingerprints = [fp.strip() for fp in attr("fingerprint") if fp.strip()]
    if not fingerprints:
        raise SdpError("No fingerprint found in SDP")
    hashes: list[str] = []
    for fp in fingerprints:
        match = _FINGERPRINT.match(fp)
        if not match:
            raise SdpError(f"malformed a=fingerprint:{fp[:60]}")
        hashes.append(match.group(1).lower())
    setup = (attr("setup") or [""])[0].strip()
    allowed_setup = {"offer": {"actpass", "active", "passive"}, "answer": {"active", "passive", "actpass"}}
    if setup not in allowed_setup.get(expected_type, {"actpass"}):
        raise SdpError(f"missing or invalid a=setup ({setup!r})")
    if "rtcp-mux" not in media_attrs and "rtcp-mux" not in session_attrs:
        raise SdpError("a=rtcp-mux is required")
    candidates = attr("candidate")
    if not candidates:
        raise SdpError("no ICE candidates in the SDP (Meta always sends host candidates, no trickle)")
    for value in candidates:
        fields = value.split()
        # aioice needs foundation, component, transport, priority, address, port, "typ", type.
        if len(fields) < 8 or fields[6] != "typ" or not fields[1].isdigit() or not fields[5].isdigit():
            raise SdpError(f"malformed a=candidate:{value[:80]}")
    return OfferSummary(
        opus_payload_type=opus_pt,
        ice_lite="ice-lite" in session_attrs or "ice-lite" in media_attrs,
        setup=setup,
        candidates=len(candidates),
        fingerprint_hashes=hashes,
        telephone_event_payload_type=dtmf_pt,
    )


def _usable_candidate(value: str, families: Collection[int]) -> bool:
    """A candidate aioice can check right away: UDP, an IP literal of a family we gather, a real port.

    Hostnames (mDNS `.local` among them) would need resolving first, and a TCP or other-family candidate
    can never pair with ours; keeping them only adds checks that cannot succeed.
    """
    fields = value.split()
    if len(fields) < 8 or fields[6] != "typ" or fields[7] not in _CANDIDATE_TYPES:
        return False
    if fields[1] != "1" or fields[2].lower() != "udp":  # component 1: rtcp-mux is required
        return False
    if not fields[5].isdigit() or not 0 < int(fields[5]) <= 65535:
        return False
    try:
        address = ipaddress.ip_address(fields[4])
    except ValueError:
        return False
    return address.version in families and not address.is_unspecified and not address.is_multicast


def usable_candidates(sdp: str, *, families: Collection[int] = (4, 6), limit: int = MAX_REMOTE_CANDIDATES) -> str:
    """The SDP with only the remote candidates worth checking, at most `limit` per media section.

    The highest-priority ones are kept, in their original order. An SDP that had candidates but none usable
    is refused here; one with none at all is left for `validate_offer` to refuse.
    """
    lines = normalise_line_endings(sdp).split(CRLF) if isinstance(sdp, str) and sdp.strip() else []
    sections: list[list[int]] = [[]]
    for i, line in enumerate(lines):
        if line.startswith("m="):
            sections.append([])
        if line.startswith("a=candidate:"):
            sections[-1].append(i)
    drop: set[int] = set()
    for section in sections:
        usable = [i for i in section if _usable_candidate(lines[i][len("a=candidate:") :], families)]
        if section and not usable:
            raise SdpError(f"none of the {len(section)} ICE candidates is usable (UDP to an IP address we can reach)")
        usable.sort(key=lambda i: -_priority(lines[i]))
        drop |= set(section) - set(usable[:limit])
    if drop:
        log.info("ignoring %d of the remote SDP's ICE candidates (unusable, or over %d)", len(drop), limit)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return CRLF.join(kept) if lines else sdp


def _priority(line: str) -> int:
    fields = line.split()
    return int(fields[3]) if len(fields) > 3 and fields[3].isdigit() and len(fields[3]) <= 10 else 0


def _attributes(lines: list[str]) -> dict[str, list[str]]:
    attrs: dict[str, list[str]] = {}
    for line in lines:
        if not line.startswith("a="):
            continue
        match = _ATTR.match(line)
        if match:
            attrs.setdefault(match.group(1), []).append(match.group(2) or "")
    return attrs


def _sha256_only(sdp: str) -> str:
    lines = [
        line
        for line in normalise_line_endings(sdp).split(CRLF)
        if line and not (line.startswith("a=fingerprint:") and not line.lower().startswith("a=fingerprint:sha-256 "))
    ]
    return CRLF.join(lines) + CRLF


def shape_offer(sdp: str) -> str:
    """Our offer for a call we place: SHA-256 fingerprint only, as Meta accepts (spec §7.3)."""
    shaped = _sha256_only(sdp)
    validate_offer(shaped)
    return shaped


def shape_answer(sdp: str) -> str:
    """Meta accepts only SHA-256 fingerprints; aiortc also lists sha-384/512, which Meta refuses."""
    shaped = _sha256_only(sdp)
    if "a=fingerprint:sha-256 " not in shaped.lower():
        raise SdpError("our answer has no SHA-256 fingerprint; Meta would refuse it")
    if "a=setup:actpass" in shaped:
        raise SdpError("an answer must pick a DTLS role, not actpass")
    if "\r\nm=audio " not in shaped:
        raise SdpError("our answer has no m=audio line")
    return shaped


def normalise_bic_answer(sdp: str) -> str:
    """Meta's business-initiated answers have been seen saying actpass, which is invalid in an answer."""
    return normalise_line_endings(sdp).replace("a=setup:actpass", "a=setup:active")
