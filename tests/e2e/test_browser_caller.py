"""A real libwebrtc caller: headless Chromium dials the bot through the simulated Meta and says one long
sentence with two one-second pauses inside it. The bot must answer once, to the whole sentence.

The browser is the WhatsApp user's phone: its own offer (Chromium's codecs, extensions and RTP timing,
Opus from libwebrtc's encoder) goes to wacall in Meta's connect webhook, wacall's answer comes back to it.
Its microphone is Web Audio playing our piper voice, started once the greeting has been heard, so the
words reach the bot at a known moment. See tests/chromium.py for where Chromium may run.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import numpy as np
import pytest

from agent.runtime import Models
from agent.simulator.caller_voice import trim
from agent.simulator.natural_caller import resolve_flow
from agent.simulator.session import USER_WA_ID, Simulation
from tests.chromium import CHROMIUM, CHROMIUM_FLAGS, skip_reason
from tests.test_conversation import until
from tests.wer import wer

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

PARTS = ["I am calling about", "an order I placed on Saturday,", "and it still has not come."]
SENTENCE = " ".join(PARTS)
PAUSE_S = 1.0
RATE = 48000
PHONE_URL = "http://127.0.0.1:9/phone"
PHONE_PAGE = "<!doctype html><title>WhatsApp user</title>"

PHONE_JS = """
window.phone = {
  async dial(b64) {
    const ctx = new AudioContext({sampleRate: 48000});
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer);
    const buffer = ctx.createBuffer(1, pcm.length, 48000);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const mic = ctx.createMediaStreamDestination();
    const pc = new RTCPeerConnection({iceServers: []});
    pc.addTrack(mic.stream.getAudioTracks()[0], mic.stream);
    pc.ontrack = (e) => {  // play the bot's voice, as a phone does (Chrome pulls remote audio only when played)
      const speaker = new Audio();
      speaker.srcObject = e.streams[0] || new MediaStream([e.track]);
      speaker.play().catch(() => {});
    };
    Object.assign(this, {ctx, buffer, mic, pc});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
    });
    return pc.localDescription.sdp;
  },
  async answer(sdp) { await this.pc.setRemoteDescription({type: "answer", sdp}); },
  state() { return this.pc.connectionState; },
  speak() {
    const source = this.ctx.createBufferSource();
    source.buffer = this.buffer;
    source.connect(this.mic);
    source.start();
    return this.buffer.duration;
  },
};
"""


def _to_48k(pcm: np.ndarray, rate: int) -> np.ndarray:
    t_out = np.arange(round(pcm.size * RATE / rate)) / RATE
    return np.interp(t_out, np.arange(pcm.size) / rate, pcm.astype(np.float64)).astype(np.int16)


def _spoken(models: Models) -> np.ndarray:
    """The sentence in our piper voice, with exactly one second of silence at each pause."""
    synth = models.synthesizer
    gap = np.zeros(int(PAUSE_S * RATE), dtype=np.int16)
    pieces: list[np.ndarray] = []
    for i, part in enumerate(PARTS):
        if i:
            pieces.append(gap)
        pieces.append(trim(_to_48k(synth.synthesize_sync(part), synth.sample_rate)))  # piper's padding off
    pieces.append(np.zeros(RATE // 2, dtype=np.int16))
    return np.concatenate(pieces)


async def test_browser_caller_pausing_mid_sentence_gets_one_answer_to_the_whole_sentence(
    models: Models, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    audio = base64.b64encode(_spoken(models).tobytes()).decode("ascii")
    async with Simulation.start(models, flow=resolve_flow("demo")) as sim, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # An http origin on 127.0.0.1 (served by Playwright itself): on about:blank Chromium gathers no
            # ICE candidates at all.
            await page.route(PHONE_URL, lambda route: route.fulfill(content_type="text/html", body=PHONE_PAGE))
            await page.goto(PHONE_URL)
            await page.add_script_tag(content=PHONE_JS)
            offer = await page.evaluate("(b64) => window.phone.dial(b64)", audio)
            sim_call = await sim.meta.place_user_call(wa_id=USER_WA_ID, offer_sdp=offer)
            await asyncio.wait_for(sim_call.answer_ready.wait(), 20)
            assert sim_call.answer_sdp is not None
            await page.evaluate("(sdp) => window.phone.answer(sdp)", sim_call.answer_sdp)
            await asyncio.wait_for(sim_call.accepted.wait(), 20)
            await until(lambda: sim_call.id in sim.runtime.calls, 10, "the bot's call")
            call = sim.runtime.calls[sim_call.id]
            conversation = call.conversation
            assert conversation is not None
            # The greeting and the menu question play out before the caller speaks.
            await until(lambda: len(conversation.transcript) >= 1, 20, "the greeting")
            await until(lambda: not conversation.bot_talking, 30, "the greeting to end")
            await asyncio.sleep(0.5)
            assert await page.evaluate("() => window.phone.state()") == "connected"

            duration = await page.evaluate("() => window.phone.speak()")
            await asyncio.sleep(duration)

            def answered() -> bool:
                return any(e.who == "bot" and "shipped" in e.text.lower() for e in conversation.transcript)

            await until(answered, 15, "the answer to the sentence")
            await asyncio.sleep(1.0)  # anything said to a fragment would be in by now
            caller = [e.text for e in conversation.transcript if e.who == "caller"]
            bot = [e.text for e in conversation.transcript if e.who == "bot"]
            story = f"caller: {caller}\nbot: {bot}\nbrowser errors: {errors}"
            assert len(caller) == 1, story  # one turn: the pauses did not cut it
            assert wer(SENTENCE, caller[0]) <= 0.3, story
            assert sum("shipped" in line.lower() for line in bot) == 1, story
            assert not any("sorry" in line.lower() for line in bot), story
            assert conversation.false_starts == 0, story
            assert not errors
        finally:
            await browser.close()
