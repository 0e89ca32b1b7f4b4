"""The shape of Meta's SDP offer (spec §7.2), applied to the offer of our simulated phone."""

from __future__ import annotations

OPUS_FMTP = (
    "maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1"
)


META_MID = "audio"


def meta_shaped_offer(sdp: str) -> str:
    """Rewrite aiortc's offer into the shape of Meta's (spec §7.2): ice-lite, 111 + 126, sha-256 only."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    out: list[str] = []
    opus_pt: str | None = None
    for line in lines:
        if line.startswith("a=rtpmap:") and "opus/48000" in line.lower():
            opus_pt = line.split(":", 1)[1].split()[0]
    if opus_pt is None:
        raise ValueError("aiortc offered no opus")
    ssrc_done = False
    for line in lines:
        if line.startswith("m=audio"):
            port = line.split()[1]
            out.append(f"m=audio {port} UDP/TLS/RTP/SAVPF 111 126")
            continue
        if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            pt = line.split(":", 1)[1].split()[0]
            if pt != opus_pt:
                continue
            if line.startswith("a=rtpmap:"):
                out += ["a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", f"a=fmtp:111 {OPUS_FMTP}",
                        "a=rtpmap:126 telephone-event/8000", "a=maxptime:20", "a=ptime:20"]
            continue
        if line.startswith("a=fingerprint:") and not line.lower().startswith("a=fingerprint:sha-256"):
            continue
        if line.startswith("a=ssrc-group:"):
            continue
        if line.startswith("a=ssrc:"):
            if ssrc_done:
                continue
            ssrc = line.split(":", 1)[1].split()[0]
            out.append(f"a=ssrc:{ssrc} cname:WhatsAppAudioStream1")
            ssrc_done = True
            continue
        if line.startswith("a=msid:"):
            stream = line.split(":", 1)[1].split()[0]
            out.append(f"a=msid:{stream} WhatsAppTrack1")
            continue
        if line.startswith("a=group:BUNDLE"):
            line = f"a=group:BUNDLE {META_MID}"
        if line.startswith("a=mid:"):
            line = f"a=mid:{META_MID}"
        out.append(line)
        if line.startswith("t="):
            out.append("a=ice-lite")
    return "\r\n".join(out) + "\r\n"


def local_mid_answer(answer_sdp: str, local_mid: str) -> str:
    """Map Meta's mid in the business's answer back to the mid aiortc gave our phone's transceiver."""
    return answer_sdp.replace(f"a=mid:{META_MID}\r\n", f"a=mid:{local_mid}\r\n").replace(
        f"a=group:BUNDLE {META_MID}\r\n", f"a=group:BUNDLE {local_mid}\r\n"
    )


def meta_shaped_answer(sdp: str) -> str:
    """Meta's answer to a business's offer (spec §7.3): ICE-lite, sha-256 fingerprint only, setup active."""
    out: list[str] = []
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("a=fingerprint:") and not line.lower().startswith("a=fingerprint:sha-256"):
            continue
        out.append(line)
        if line.startswith("t="):
            out.append("a=ice-lite")
    return "\r\n".join(out) + "\r\n"
