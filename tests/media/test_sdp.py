"""Tests for `agent.media.sdp`: what we accept from Meta, and the shape of what we send back.

aiortc swallows garbage SDP without an error (stack notes §5), so `validate_offer` is the only thing
between a bad connect webhook and a silent, broken call. Each refusal must say what is wrong, because
the reason ends up in the call's `end_reason` and in the operator's log.
"""

from __future__ import annotations

import pytest

from agent.media.sdp import (
    CRLF,
    OfferSummary,
    SdpError,
    normalise_bic_answer,
    normalise_line_endings,
    shape_answer,
    validate_offer,
)

FINGERPRINT = ":".join(f"{(i * 37) % 256:02X}" for i in range(32))

# Meta's user-initiated offer, line for line as in spec §7.2 (documentation IP ranges).
META_OFFER_LINES = [
    "v=0",
    "o=- 1760681506762 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE audio",
    "a=msid-semantic: WMS sim-stream-1",
    "a=ice-lite",
    "m=audio 3484 UDP/TLS/RTP/SAVPF 111 126",
    "c=IN IP4 203.0.113.10",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 203.0.113.10 3484 typ host generation 0 network-cost 50",
    "a=candidate:2 1 udp 2122262783 2001:db8::10 3484 typ host generation 0 network-cost 50",
    "a=ice-ufrag:SimUfrag0000AAAA",
    "a=ice-pwd:SimIcePwd0000000000000==",
    f"a=fingerprint:sha-256 {FINGERPRINT}",
    "a=setup:actpass",
    "a=mid:audio",
    "a=sendrecv",
    "a=msid:sim-stream-1 WhatsAppTrack1",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1",
    "a=rtpmap:126 telephone-event/8000",
    "a=maxptime:20",
    "a=ptime:20",
    "a=ssrc:1047224411 cname:WhatsAppAudioStream1",
]


def crlf(lines: list[str]) -> str:
    """Join like Meta does: CRLF between lines and a trailing CRLF."""
    return CRLF.join(lines) + CRLF


def without(*prefixes: str) -> list[str]:
    return [line for line in META_OFFER_LINES if not line.startswith(prefixes)]


def replaced(old_prefix: str, new: str | list[str]) -> list[str]:
    """The Meta offer with every line starting with `old_prefix` replaced by `new`."""
    out: list[str] = []
    for line in META_OFFER_LINES:
        if line.startswith(old_prefix):
            out.extend([new] if isinstance(new, str) else new)
        else:
            out.append(line)
    return out


META_OFFER = crlf(META_OFFER_LINES)


# ---- validate_offer: accepts ------------------------------------------------------------------


def test_accepts_metas_offer_from_the_spec() -> None:
    summary = validate_offer(META_OFFER)
    assert summary == OfferSummary(
        opus_payload_type=111,
        ice_lite=True,
        setup="actpass",
        candidates=2,
        fingerprint_hashes=["sha-256"],
        telephone_event_payload_type=126,
    )


def test_accepts_lf_only_offer() -> None:
    """Tests, curl and some proxies turn CRLF into LF; the content is the same offer."""
    assert validate_offer("\n".join(META_OFFER_LINES) + "\n") == validate_offer(META_OFFER)


def test_accepts_offer_without_trailing_newline() -> None:
    assert validate_offer(CRLF.join(META_OFFER_LINES)).opus_payload_type == 111


def test_opus_payload_type_is_read_from_the_offer_not_assumed() -> None:
    """Meta uses 111 today, but the payload type is the offerer's choice (RFC 3264)."""
    lines = [
        line.replace("111", "109") if line.startswith(("m=audio", "a=rtpmap:111", "a=fmtp:111")) else line
        for line in META_OFFER_LINES
    ]
    assert validate_offer(crlf(lines)).opus_payload_type == 109


def test_telephone_event_at_48khz_is_not_taken_as_dtmf() -> None:
    """WhatsApp only supports telephone-event/8000 (spec §7.5)."""
    offer = crlf(replaced("a=rtpmap:126", "a=rtpmap:126 telephone-event/48000"))
    assert validate_offer(offer).telephone_event_payload_type is None


# ---- validate_offer: refusals ------------------------------------------------------------------


REFUSALS: list[tuple[str, str, str]] = [
    ("empty", "", "empty SDP"),
    ("whitespace", " \r\n \n", "empty SDP"),
    ("prose", "this is not sdp", "must start with v=0"),
    ("version only", "v=0", "no m=audio"),
    ("no m-line", crlf(without("m=")), "no m=audio"),
    (
        "audio and video",
        crlf([*META_OFFER_LINES, "m=video 3484 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:96 VP8/90000"]),
        "2 media sections",
    ),
    ("video only", crlf(replaced("m=audio", "m=video 3484 UDP/TLS/RTP/SAVPF 111 126")), "not audio"),
    ("plain RTP", crlf(replaced("m=audio", "m=audio 3484 RTP/AVP 111 126")), "unsupported transport 'RTP/AVP'"),
    (
        "G729 only",
        crlf(
            [
                line
                for line in replaced("m=audio", "m=audio 3484 UDP/TLS/RTP/SAVPF 18")
                if not line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))
            ]
            + ["a=rtpmap:18 G729/8000"]
        ),
        "no opus",
    ),
    (
        "opus listed but not on the m-line",
        crlf(replaced("m=audio", "m=audio 3484 UDP/TLS/RTP/SAVPF 126")),
        "no opus",
    ),
    ("no ice-ufrag", crlf(without("a=ice-ufrag")), "ice-ufrag"),
    ("no ice-pwd", crlf(without("a=ice-pwd")), "ice-pwd"),
    ("no fingerprint", crlf(without("a=fingerprint")), "No fingerprint found in SDP"),
    ("no setup", crlf(without("a=setup")), "a=setup"),
    ("bogus setup", crlf(replaced("a=setup", "a=setup:holdconn")), "a=setup"),
    ("no rtcp-mux", crlf(without("a=rtcp-mux")), "rtcp-mux"),
    ("no candidates", crlf(without("a=candidate")), "no ICE candidates"),
    ("bad port", crlf(replaced("m=audio", "m=audio notaport UDP/TLS/RTP/SAVPF 111 126")), "bad port"),
    ("port out of range", crlf(replaced("m=audio", "m=audio 99999 UDP/TLS/RTP/SAVPF 111 126")), "bad port"),
    # The cases below used to pass validation; aiortc then failed with an unhelpful message (or, for a
    # disabled stream or a bad fingerprint, answered and the call would have had no audio).
    ("disabled stream", crlf(replaced("m=audio", "m=audio 0 UDP/TLS/RTP/SAVPF 111 126")), r"disabled \(port 0\)"),
    ("empty ice-ufrag", crlf(replaced("a=ice-ufrag", "a=ice-ufrag:")), "ice-ufrag"),
    ("empty ice-pwd", crlf(replaced("a=ice-pwd", "a=ice-pwd:")), "ice-pwd"),
    ("empty fingerprint", crlf(replaced("a=fingerprint", "a=fingerprint:")), "No fingerprint found in SDP"),
    ("fingerprint without digest", crlf(replaced("a=fingerprint", "a=fingerprint:sha-256")), "malformed a=fingerprint"),
    ("fingerprint not hex", crlf(replaced("a=fingerprint", "a=fingerprint:sha-256 zz:zz")), "malformed a=fingerprint"),
    ("empty candidate", crlf(replaced("a=candidate:1", "a=candidate:")), "malformed a=candidate"),
    (
        "candidate without typ",
        crlf(replaced("a=candidate:1", "a=candidate:1 1 udp 2122260223 203.0.113.10 3484 host")),
        "malformed a=candidate",
    ),
    ("truncated m-line", crlf(replaced("m=audio", "m=audio 3484")), "not audio"),
    ("garbage line", crlf([*META_OFFER_LINES[:5], "this line is garbage", *META_OFFER_LINES[5:]]), "line 6"),
    ("malformed rtpmap", crlf(replaced("a=rtpmap:111", "a=rtpmap:111 opus")), "malformed a=rtpmap"),
]


@pytest.mark.parametrize(("sdp", "reason"), [(sdp, reason) for _, sdp, reason in REFUSALS],
                         ids=[name for name, _, _ in REFUSALS])
def test_refuses_with_a_reason(sdp: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        validate_offer(sdp)


def test_non_string_is_refused_as_sdp_error() -> None:
    """A webhook with `"sdp": null` must become a refusal, not a TypeError deep inside a call task."""
    with pytest.raises(SdpError, match="empty SDP"):
        validate_offer(None)  # type: ignore[arg-type]


def test_sdp_error_is_a_value_error() -> None:
    """Callers that already catch ValueError (as aiortc raises for SDP) keep working."""
    assert issubclass(SdpError, ValueError)


def test_refusal_names_the_expected_type() -> None:
    with pytest.raises(SdpError, match="empty SDP answer"):
        validate_offer("", expected_type="answer")


# ---- shape_answer -------------------------------------------------------------------------------

SHA256 = "a=fingerprint:sha-256 " + FINGERPRINT
SHA384 = "a=fingerprint:sha-384 " + ":".join(["AB"] * 48)
SHA512 = "a=fingerprint:sha-512 " + ":".join(["CD"] * 64)

AIORTC_ANSWER_LINES = [
    "v=0",
    "o=- 3951110493 3951110493 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE audio",
    "a=msid-semantic:WMS *",
    "m=audio 50000 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 127.0.0.1",
    "a=sendrecv",
    "a=mid:audio",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "a=end-of-candidates",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijkl",
    SHA256,
    SHA384,
    SHA512,
    "a=setup:active",
]


def test_shape_answer_keeps_only_sha256_fingerprint() -> None:
    shaped = shape_answer(crlf(AIORTC_ANSWER_LINES))
    fingerprints = [line for line in shaped.split(CRLF) if line.startswith("a=fingerprint:")]
    assert fingerprints == [SHA256]
    # Nothing else is touched.
    assert shaped == crlf([line for line in AIORTC_ANSWER_LINES if line not in (SHA384, SHA512)])


def test_shape_answer_produces_crlf_with_trailing_crlf_from_lf_input() -> None:
    shaped = shape_answer("\n".join(AIORTC_ANSWER_LINES))
    assert shaped.endswith(CRLF)
    assert not shaped.endswith(CRLF + CRLF)
    assert "\n" not in shaped.replace(CRLF, "")
    assert shaped.count(CRLF) == len(AIORTC_ANSWER_LINES) - 2


def test_shape_answer_fingerprint_hash_name_is_case_insensitive() -> None:
    upper = [line.replace("sha-256", "SHA-256") for line in AIORTC_ANSWER_LINES]
    assert "a=fingerprint:SHA-256 " in shape_answer(crlf(upper))


def test_shape_answer_refuses_answer_without_sha256() -> None:
    with pytest.raises(SdpError, match="SHA-256"):
        shape_answer(crlf([line for line in AIORTC_ANSWER_LINES if line != SHA256]))


def test_shape_answer_refuses_actpass() -> None:
    lines = [("a=setup:actpass" if line == "a=setup:active" else line) for line in AIORTC_ANSWER_LINES]
    with pytest.raises(SdpError, match="actpass"):
        shape_answer(crlf(lines))


def test_shape_answer_refuses_answer_without_audio() -> None:
    with pytest.raises(SdpError, match="m=audio"):
        shape_answer(crlf([line for line in AIORTC_ANSWER_LINES if not line.startswith("m=")]))


# ---- normalise_bic_answer / normalise_line_endings ---------------------------------------------


def test_normalise_bic_answer_rewrites_actpass_to_active() -> None:
    """Chatwoot saw Meta's BIC answers say actpass, invalid in an answer (spec §7.3)."""
    lines = [("a=setup:actpass" if line == "a=setup:active" else line) for line in AIORTC_ANSWER_LINES]
    normalised = normalise_bic_answer("\n".join(lines))
    assert "a=setup:actpass" not in normalised
    assert "a=setup:active\r\n" in normalised
    assert normalised == crlf(AIORTC_ANSWER_LINES)


def test_normalise_bic_answer_leaves_valid_answer_alone() -> None:
    answer = crlf(AIORTC_ANSWER_LINES)
    assert normalise_bic_answer(answer) == answer
    passive = answer.replace("a=setup:active", "a=setup:passive")
    assert normalise_bic_answer(passive) == passive


def test_normalise_line_endings_handles_mixed_endings_and_trailing_blank_lines() -> None:
    assert normalise_line_endings("v=0\ns=-\r\nt=0 0\r\n\r\n\n") == "v=0\r\ns=-\r\nt=0 0\r\n"
