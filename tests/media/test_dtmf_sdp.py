"""telephone-event/8000 in our answer when offered (and only then, and only at 8 kHz), and in our BIC offer.

Each SDP is also put through the simulator's Meta checks (spec §7.3, §7.5), so "accepted by Meta" is
tested, not assumed.
"""

from __future__ import annotations

import pytest

from agent.media.peer import MediaPeer
from agent.media.sdp import shape_offer
from agent.simulator.graph_api import check_answer_sdp, check_offer_sdp
from agent.simulator.phone_sdp import meta_shaped_offer

LOOPBACK = ["127.0.0.1"]


async def meta_offer() -> tuple[MediaPeer, str]:
    phone = MediaPeer(hosts=LOOPBACK, label="phone")
    transceiver = phone.pc.addTransceiver(phone.outbound, direction="sendrecv")
    ice = transceiver.sender.transport.transport
    ice._role_set = True
    ice._connection.ice_controlling = False
    return phone, meta_shaped_offer(await phone.offer())


def lines(sdp: str, prefix: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line.startswith(prefix)]


async def answer_to(offer: str) -> str:
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    try:
        return await bot.answer(offer)
    finally:
        await bot.close()


async def test_answer_has_telephone_event_8000_when_meta_offers_it() -> None:
    phone, offer = await meta_offer()
    try:
        assert "a=rtpmap:126 telephone-event/8000" in offer
        answer = await answer_to(offer)
    finally:
        await phone.close()
    (m_line,) = lines(answer, "m=audio")
    assert m_line.split()[3:] == ["111", "126"], "Opus first, then DTMF"
    assert "a=rtpmap:126 telephone-event/8000" in lines(answer, "a=rtpmap:")
    check_answer_sdp(answer, offer_sdp=offer)  # Meta accepts it


async def test_no_telephone_event_in_the_answer_when_not_offered() -> None:
    phone, offer = await meta_offer()
    await phone.close()
    without = "\r\n".join(
        line.replace(" 111 126", " 111") for line in offer.split("\r\n") if "telephone-event" not in line
    )
    answer = await answer_to(without)
    assert "telephone-event" not in answer
    (m_line,) = lines(answer, "m=audio")
    assert m_line.split()[3:] == ["111"]
    check_answer_sdp(answer, offer_sdp=without)


async def test_a_browser_style_offer_gets_only_the_8000_one() -> None:
    """Chrome lists telephone-event/48000 (110) next to /8000 (126); Meta supports 8000 only (spec §7.5)."""
    phone, offer = await meta_offer()
    await phone.close()
    out = []
    for line in offer.split("\r\n"):
        if line.startswith("m=audio"):
            line = line.replace(" 111 126", " 111 110 126")
        out.append(line)
        if line == "a=rtpmap:126 telephone-event/8000":
            out.insert(-1, "a=rtpmap:110 telephone-event/48000")
    browser = "\r\n".join(out)
    assert "a=rtpmap:110 telephone-event/48000" in browser
    answer = await answer_to(browser)
    assert [line for line in lines(answer, "a=rtpmap:") if "telephone-event" in line] == [
        "a=rtpmap:126 telephone-event/8000"
    ]
    (m_line,) = lines(answer, "m=audio")
    assert m_line.split()[3:] == ["111", "126"]
    check_answer_sdp(answer, offer_sdp=browser)


async def test_the_offer_for_calls_we_place_has_126_telephone_event_8000() -> None:
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    try:
        offer = shape_offer(await bot.offer())
    finally:
        await bot.close()
    (m_line,) = lines(offer, "m=audio")
    rtpmaps = lines(offer, "a=rtpmap:")
    assert rtpmaps[0].endswith(" opus/48000/2") and m_line.split()[3] == rtpmaps[0].split(":")[1].split()[0]
    assert "a=rtpmap:126 telephone-event/8000" in rtpmaps
    assert "126" in m_line.split()[3:]
    assert not [r for r in rtpmaps if "telephone-event/48000" in r]
    check_offer_sdp(offer)


@pytest.mark.parametrize("rate", ["48000", "16000"])
def test_meta_refuses_an_answer_with_another_clock_rate(rate: str) -> None:
    """The simulator's rule that keeps our answer honest: only telephone-event/8000 (spec §7.5)."""
    from agent.simulator.graph_api import GraphApiError

    answer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 101\r\n"
        "c=IN IP4 127.0.0.1\r\na=rtpmap:111 opus/48000/2\r\n"
        f"a=rtpmap:101 telephone-event/{rate}\r\na=setup:active\r\na=ice-ufrag:abcd\r\na=ice-pwd:{'p' * 24}\r\n"
        f"a=fingerprint:sha-256 {':'.join(['AB'] * 32)}\r\na=mid:audio\r\na=rtcp-mux\r\n"
        "a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\n"
    )
    with pytest.raises(GraphApiError, match="telephone-event"):
        check_answer_sdp(answer)
