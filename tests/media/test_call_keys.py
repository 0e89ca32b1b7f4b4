"""The Call's side of keypad input: record, hand to the conversation (when it has `on_key`), then the taps."""

from __future__ import annotations

from typing import Any

from agent.call import Call, CallServices, CallState
from agent.dialogue.flow import load_flow
from agent.media.dtmf import KeyPress


def bare_call() -> Call:
    services = CallServices(graph=Any, transcriber=Any, synthesizer=Any)  # type: ignore[arg-type]
    return Call(call_id="wacid.test", services=services, flow=load_flow("prompts/demo.yaml"))


class Listening:
    def __init__(self) -> None:
        self.keys: list[KeyPress] = []

    def on_key(self, press: KeyPress) -> None:
        self.keys.append(press)


def test_presses_go_to_the_conversation_and_the_taps_in_order() -> None:
    call = bare_call()
    conversation = Listening()
    call.conversation = conversation  # type: ignore[assignment]
    order: list[str] = []
    call.add_key_tap(lambda p: order.append(f"tap {p.digit}"))
    one, hash_ = KeyPress("1", 100, 1.0), KeyPress("#", 120, 1.3)
    call._on_key(one)
    call._on_key(hash_)
    assert call.key_presses == [one, hash_]
    assert conversation.keys == [one, hash_]
    assert order == ["tap 1", "tap #"]


def test_a_conversation_without_on_key_only_records() -> None:
    call = bare_call()
    call.conversation = object()  # type: ignore[assignment]
    call._on_key(KeyPress("5", 100, 1.0))
    assert [k.digit for k in call.key_presses] == ["5"]


def test_a_failing_conversation_does_not_stop_the_taps_and_an_ended_call_takes_no_keys() -> None:
    call = bare_call()

    class Broken:
        def on_key(self, press: KeyPress) -> None:
            raise RuntimeError("flow bug")

    call.conversation = Broken()  # type: ignore[assignment]
    seen: list[KeyPress] = []
    call.add_key_tap(seen.append)
    call._on_key(KeyPress("2", 100, 1.0))
    assert len(seen) == 1
    call.remove_key_tap(seen.append)
    call.state = CallState.ENDED
    call._on_key(KeyPress("3", 100, 2.0))
    assert [k.digit for k in call.key_presses] == ["2"]


async def test_key_presses_count_as_media_for_the_no_rtp_watchdog() -> None:
    """While a key is held the phone sends telephone-event packets instead of audio: a caller keying in a long
    number must not be hung up as a peer that stopped sending media."""
    import asyncio

    class Graph:
        def __init__(self) -> None:
            self.terminated: list[str] = []

        async def terminate(self, call_id: str) -> None:
            self.terminated.append(call_id)

    graph = Graph()
    call = Call(
        call_id="wacid.keys",
        services=CallServices(graph=graph, transcriber=Any, synthesizer=Any),  # type: ignore[arg-type]
        flow=load_flow("prompts/demo.yaml"),
    )
    call.state = CallState.ACTIVE
    watchdog = asyncio.create_task(call._watch_rtp(0.4))
    for n in range(6):  # 1.2 s of keys, three times the timeout
        await asyncio.sleep(0.2)
        call._on_key(KeyPress(str(n), 180, float(n)))
    assert not watchdog.done() and graph.terminated == []
    await asyncio.wait_for(watchdog, timeout=2)  # the keys stop: the watchdog hangs up
    assert graph.terminated == ["wacid.keys"] and call.end_reason == "no_media"
