"""The agent console in a real browser: a simulated WhatsApp caller asks for a person and a human agent, in
headless Chromium, signs in, accepts and talks; the caller must hear the agent's words.

Everything is real except the two humans: the caller is the simulated WhatsApp user (Meta's side simulated
too), and the agent's microphone is Chromium's fake capture device playing a WAV that our piper voice
synthesised. What the caller "hears" went browser → Opus → wacall → Opus → phone and was transcribed there.

Chromium runs only inside a network namespace that has nothing but loopback (`.ci/run` runs the suite in
one), so neither ICE nor any of the browser's own background requests can leave 127.0.0.1; elsewhere the
test skips and says why. The shared notes chromium-webrtc.md explain the flags and why each is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.app import create_app
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation, bound_socket, serve
from tests.chromium import CHROMIUM, CHROMIUM_FLAGS, skip_reason
from tests.wer import wer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# The README's picture is refreshed only on request (WACALL_REFRESH_DOCS=1); a normal run leaves the tree clean.
README_SCREENSHOT = REPO / "docs" / "console.png"
AGENT_TOKEN = "correct-horse-battery-staple"
AGENT_LINE = "Hello, this is Ana from the delivery team. I can see your parcel, and I will send a new one today."
ASK_FOR_PERSON = "I want to talk to a person."
CALLER_REPLY = "Thank you, that is great news."
MAX_WER = 0.3
HOLD_AND_POSITION = "Please hold while I connect you to a colleague. You are number one in the queue."

FLOW = """\
name: console_test
start: welcome
global_intents:
  - name: agent
    examples:
      - "I want to talk to a person"
      - "can I speak to someone"
      - "let me talk to a human"
    keywords: [person, human, agent, someone]
    goto: agent
  - name: goodbye
    examples: ["goodbye", "bye", "that's all thanks"]
    keywords: [goodbye]
    goto: goodbye
nodes:
  welcome:
    say: "Hello, thanks for calling Sunrise Electronics support. How can I help?"
    intents:
      - name: order
        examples: ["where is my order", "my package has not arrived"]
        keywords: [order, package, delivery]
        goto: order_status
  order_status:
    say: "Your order shipped yesterday and arrives tomorrow."
    next: anything_else
  anything_else:
    say: "Is there anything else I can help with?"
    intents:
      - name: "yes"
        examples: ["yes", "yes please"]
        goto: welcome
      - name: "no"
        examples: ["no", "no thanks"]
        goto: goodbye
  agent:
    say: "Of course. Let me find a colleague for you."
    interruptible: false
    handover:
      queue: support
      reason: "The caller asked for a person."
  goodbye:
    say: "Thanks for calling. Goodbye!"
    end: true
"""

HANDOVER = {
    "queues": [{"name": "support", "announce_every_s": 30, "max_wait_s": 240, "offer_timeout_s": 60}],
    "agents": [{"id": "ana", "name": "Ana Lima"}, {"id": "ben", "name": "Ben Okafor"}],
}

# Playwright adds --headless, --no-sandbox and --mute-audio (which keeps echo cancellation from eating the
# fake microphone: doc G5) and its own --disable-features list, which a second such switch would replace (G4).
def _write_wav(path: Path, pcm48k: np.ndarray) -> None:
    """48 kHz mono s16, what Chromium's fake capture wants; silence around the line so each loop of the file
    is one clean utterance for the caller's endpointer."""
    silence = np.zeros(48000, dtype=np.int16)
    audio = np.concatenate([silence, pcm48k.astype(np.int16), silence, silence])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(audio.tobytes())


def _best_match(reference: str, heard: list[str]) -> tuple[float, str]:
    """Chromium loops the file from wherever capture started, so the first pass may be cut: score every
    utterance and every pair of neighbours, and keep the best."""
    candidates = heard + [f"{a} {b}" for a, b in itertools.pairwise(heard)]
    scored = [(wer(reference, text), text) for text in candidates]
    return min(scored, default=(1.0, ""))


async def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def _screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("WACALL_REFRESH_DOCS") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        return README_SCREENSHOT
    return tmp_path / "console.png"


async def test_caller_asks_for_a_person_and_hears_the_agent_from_the_browser(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import async_playwright

    monkeypatch.setenv("WACALL_AGENT_TOKEN_ANA", AGENT_TOKEN)
    monkeypatch.setenv("WACALL_AGENT_TOKEN_BEN", "another-token")
    flow_path = tmp_path / "console_test.yaml"
    flow_path.write_text(FLOW, encoding="utf-8")
    mic_wav = tmp_path / "agent.wav"
    _write_wav(mic_wav, await models.synthesizer.synthesize(AGENT_LINE))

    async with Simulation.start(models, flow=str(flow_path), handover=HANDOVER) as sim:
        runtime = sim.runtime
        assert runtime.handover is not None
        console_sock = bound_socket()
        base = f"http://127.0.0.1:{console_sock.getsockname()[1]}"
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            async with serve(create_app(runtime), console_sock), async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM),
                    headless=True,
                    args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}"],
                    env={**os.environ, "HOME": str(tmp_path)},
                )
                try:
                    page = await (await browser.new_context(viewport={"width": 1280, "height": 600})).new_page()
                    console_errors: list[str] = []
                    page.on("pageerror", lambda exc: console_errors.append(str(exc)))

                    # -- the caller asks for a person and is queued --------------------------------------------
                    sim_call, _ = await sim.place_call(user)
                    greeting = await user.listen(timeout=30)
                    assert "sunrise" in greeting.lower(), greeting
                    heard_from = len(user.heard)
                    await user.say(ASK_FOR_PERSON)
                    hold = "Of course. Let me find a colleague for you. " + HOLD_AND_POSITION

                    def on_hold() -> str:
                        return " ".join(h.text for h in user.heard[heard_from:])

                    try:
                        await _wait_for(lambda: wer(hold, on_hold()) <= MAX_WER, 40, "the hold and position lines")
                    finally:
                        print(f"\ncaller heard on hold: {on_hold()!r}")
                    call = runtime.calls[sim_call.id]
                    assert call.handover is not None and call.handover.queue == "support"
                    waiting = runtime.handover.desk.snapshot(time.monotonic())["waiting"]
                    assert [w["call_id"] for w in waiting] == [sim_call.id]
                    assert runtime.store.get_call(sim_call.id).state == "handover"  # type: ignore[union-attr]

                    # -- the agent signs in and sees the waiting call ------------------------------------------
                    await page.goto(f"{base}/console/")
                    await page.fill("#agent-id", "ana")
                    await page.fill("#agent-token", "wrong-token")
                    await page.click("#signin-form button[type=submit]")
                    await page.wait_for_selector("#notice:has-text('wrong token')", timeout=10_000)
                    await page.fill("#agent-token", AGENT_TOKEN)
                    await page.click("#signin-form button[type=submit]")
                    await page.wait_for_selector("#waiting-list li", timeout=10_000)
                    await page.wait_for_selector("#details-transcript li", timeout=10_000)
                    details = await page.inner_text("#details")
                    assert "asked for a person" in details.lower(), details
                    assert "talk to a person" in details.lower(), details  # the caller's words, in the summary

                    # -- goes available, gets the prompt, accepts ----------------------------------------------
                    await page.click("#toggle-status")
                    await page.wait_for_selector("#incoming:not([hidden])", timeout=10_000)
                    assert "asked for a person" in (await page.inner_text("#incoming")).lower()
                    await page.wait_for_selector("#waiting-list li:has-text('ringing Ana Lima')", timeout=5_000)
                    # A waiting call, ringing: what the README shows.
                    await page.screenshot(path=str(_screenshot_path(tmp_path)))
                    heard_before = len(user.heard)
                    accepted_at = time.monotonic()
                    await page.click("#accept")
                    # Waits are selectors, not wait_for_function: the page's CSP forbids the eval that needs.
                    await page.wait_for_selector("#media-state:has-text('connected')", timeout=15_000)
                    connected_after = time.monotonic() - accepted_at

                    # -- the caller hears the agent ------------------------------------------------------------
                    best = (1.0, "")

                    def heard_agent() -> bool:
                        nonlocal best
                        best = _best_match(AGENT_LINE, [h.text for h in user.heard[heard_before:]])
                        return best[0] <= MAX_WER

                    try:
                        await _wait_for(heard_agent, 30, "the caller to hear the agent")
                    finally:
                        print(
                            f"caller heard the agent: {best[1]!r} (WER {best[0]:.2f}); "
                            f"media connected {connected_after:.2f} s after accept"
                        )
                    assert best[0] <= MAX_WER, best

                    # The console shows the live transcript of the agent's own words.
                    await page.wait_for_selector("#live li.agent", timeout=20_000)
                    live_agent = await page.eval_on_selector_all(
                        "#live li.agent .said", "els => els.map(e => e.textContent)"
                    )
                    live_wer, live_text = _best_match(AGENT_LINE, live_agent)
                    print(f"console live transcript (agent): {live_text!r} (WER {live_wer:.2f})")
                    assert live_wer <= 0.5, live_agent

                    # -- the agent hears the caller: their words in the live transcript, their audio in the page --
                    await page.evaluate("window.wacallConsole.callerPeak = 0")
                    await user.say(CALLER_REPLY)
                    await page.wait_for_selector("#live li.caller", timeout=20_000)
                    live_caller = await page.eval_on_selector_all(
                        "#live li.caller .said", "els => els.map(e => e.textContent)"
                    )
                    caller_wer, caller_text = _best_match(CALLER_REPLY, live_caller)
                    caller_peak = await page.evaluate("window.wacallConsole.callerPeak")
                    print(
                        f"console live transcript (caller): {caller_text!r} (WER {caller_wer:.2f}); "
                        f"caller audio in the page peaked at RMS {caller_peak:.3f}"
                    )
                    assert caller_wer <= 0.5, live_caller
                    assert caller_peak > 0.02

                    # -- the agent hangs up --------------------------------------------------------------------
                    await page.click("#hangup")
                    await asyncio.wait_for(sim_call.ended.wait(), 10)
                    await _wait_for(lambda: sim_call.id in runtime.finished, 10, "the call record")
                    await page.wait_for_selector("#notice:has-text('Call ended')", timeout=10_000)
                    assert await page.is_hidden("#oncall")
                    assert console_errors == []
                finally:
                    await browser.close()
        finally:
            await user.close()

        assert "terminate" in sim_call.actions
        record = runtime.store.get_call(sim_call.id)
        assert record is not None
        print(
            f"record: handled_by={record.handled_by} queue={record.handover_queue} "
            f"wait={record.queue_wait_s}s talk={record.talk_s}s outcome={record.handover_outcome}"
        )
        assert record.state == "ended"
        assert record.end_reason == "agent_hung_up"
        assert record.handled_by == "ana"
        assert record.handover_queue == "support"
        assert record.handover_outcome == "agent_hung_up"
        assert record.queue_wait_s is not None and record.queue_wait_s > 0
        assert record.talk_s is not None and record.talk_s >= 2
        said_by = {entry["who"] for entry in record.transcript}
        assert {"caller", "bot", "agent"} <= said_by, record.transcript
        # Nothing of the agent's leg is left running.
        assert not runtime.handover._calls
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("bridge:", "live-transcript"))]
