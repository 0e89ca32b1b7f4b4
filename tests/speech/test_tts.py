"""piper synthesis: streamed, off the event loop, cancellable, and sentence splitting that helps it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.speech.audio import rms_dbfs
from agent.speech.models import ModelNotFoundError, resolve_tts_voice
from agent.speech.tts import PiperSynthesizer, Synthesizer, split_for_speech

LONG_REPLY = (
    "Sure, I can help with that. I have checked your account and I can see that the payment you made on "
    "Tuesday was received, but the refund for the earlier order has not been processed yet. "
    "Is there anything else?"
)


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A real thread pool that records what was submitted, to see how much work a stream started."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.submitted = 0
        self.threads: set[str] = set()
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._count_lock:
            self.submitted += 1

        def run() -> Any:
            self.threads.add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return super().submit(run)


@pytest.fixture(scope="module")
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def voice_paths() -> tuple[Path, Path]:
    return resolve_tts_voice()


@pytest.fixture(scope="module")
def tts(voice_paths: tuple[Path, Path], executor: CountingExecutor) -> PiperSynthesizer:
    model, config = voice_paths
    synth = PiperSynthesizer(model, config, executor=executor, deterministic=True)
    synth.synthesize_sync("Warm up.")  # espeak-ng initialises on first use; keep it out of timings
    return synth


def test_is_a_synthesizer(tts: PiperSynthesizer) -> None:
    assert isinstance(tts, Synthesizer)
    assert tts.sample_rate == 48000
    assert tts.native_rate == 22050


async def test_stream_yields_one_chunk_per_piece(tts: PiperSynthesizer, executor: CountingExecutor) -> None:
    pieces = split_for_speech(LONG_REPLY)
    assert len(pieces) >= 3
    before = executor.submitted
    chunks: list[np.ndarray] = []
    t0 = time.perf_counter()
    first_at = 0.0
    async for chunk in tts.stream(LONG_REPLY):
        if not chunks:
            first_at = time.perf_counter() - t0
        chunks.append(chunk)
    total = time.perf_counter() - t0
    assert len(chunks) == len(pieces)
    assert executor.submitted - before == len(pieces)
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    assert all(rms_dbfs(c) > -40 for c in chunks)
    assert first_at < total
    audio_s = sum(c.size for c in chunks) / 48000
    assert 6 < audio_s < 20  # about 30 words of speech
    print(f"TTS first chunk {first_at:.3f}s, all {total:.3f}s for {audio_s:.2f}s audio")


async def test_synthesis_runs_in_executor_not_on_loop(tts: PiperSynthesizer, executor: CountingExecutor) -> None:
    loop_thread = threading.current_thread().name
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await tts.synthesize(LONG_REPLY)
    done.set()
    await task
    assert loop_thread not in executor.threads
    assert gaps and max(gaps) < 0.25  # lenient: shared CI VMs stall; blocking would stall for the whole reply


async def test_deterministic_output(tts: PiperSynthesizer) -> None:
    a = await tts.synthesize("Your order number is 4 5 6.")
    b = await tts.synthesize("Your order number is 4 5 6.")
    assert np.array_equal(a, b)
    assert np.array_equal(a, tts.synthesize_sync("Your order number is 4 5 6."))


async def test_synthesize_equals_concatenated_stream(tts: PiperSynthesizer) -> None:
    chunks = [c async for c in tts.stream(LONG_REPLY)]
    assert np.array_equal(np.concatenate(chunks), await tts.synthesize(LONG_REPLY))


async def test_aclose_stops_after_current_piece(tts: PiperSynthesizer, executor: CountingExecutor) -> None:
    """Barge-in: the caller stops listening; no further pieces may be synthesised."""
    before = executor.submitted
    stream = tts.stream(LONG_REPLY)
    first = await anext(stream)
    assert first.size > 0
    await stream.aclose()
    await asyncio.sleep(0.2)
    assert executor.submitted - before == 1


async def test_cancel_mid_piece_starts_nothing_more(tts: PiperSynthesizer, executor: CountingExecutor) -> None:
    before = executor.submitted

    async def consume() -> None:
        async for _ in tts.stream(LONG_REPLY):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)  # inside the first piece's synthesis
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert executor.submitted - before == 1


async def test_empty_text(tts: PiperSynthesizer) -> None:
    assert [c async for c in tts.stream("  ")] == []
    out = await tts.synthesize("")
    assert out.dtype == np.int16 and out.size == 0


async def test_cache_reuses_static_lines(voice_paths: tuple[Path, Path], executor: CountingExecutor) -> None:
    model, config = voice_paths
    synth = PiperSynthesizer(model, config, executor=executor, cache_size=2)  # stochastic on purpose
    greeting = "Hello, thanks for calling."
    first = await synth.synthesize(greeting)
    first[:100] = 0  # callers may scribble on what they get; the cache must not change
    again = await synth.synthesize(greeting)
    # piper is stochastic here, so identical audio can only have come from the cache.
    assert np.array_equal(again, await synth.synthesize(greeting))
    assert not np.array_equal(first, again)
    await synth.synthesize("One more line.")
    await synth.synthesize("And another one.")
    assert greeting not in synth._cache  # least recently used was evicted


async def test_cached_lines_do_not_wait_for_a_busy_inference_pool(voice_paths: tuple[Path, Path]) -> None:
    """Every pool thread is busy (as with a dozen calls' Whisper decodes); a cached line still plays at once."""
    model, config = voice_paths
    pool = CountingExecutor(max_workers=1)
    release = threading.Event()
    try:
        synth = PiperSynthesizer(model, config, executor=pool, cache_size=4)
        line = "We are open from nine to six."
        expected = await synth.synthesize(line)
        before = pool.submitted
        pool.submit(release.wait, 10)  # occupies the only worker
        chunks = await asyncio.wait_for(synth.synthesize(line), 1.0)
        assert np.array_equal(chunks, expected)
        assert pool.submitted == before + 1  # only the blocker: the cached line never went to the pool
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_missing_voice_files(tmp_path: Path, executor: CountingExecutor) -> None:
    with pytest.raises(ModelNotFoundError, match=r"ghost\.onnx"):
        PiperSynthesizer(tmp_path / "ghost.onnx", tmp_path / "ghost.onnx.json", executor=executor)


def test_onnx_threads_option(voice_paths: tuple[Path, Path], executor: CountingExecutor) -> None:
    model, config = voice_paths
    synth = PiperSynthesizer(model, config, executor=executor, deterministic=True, onnx_threads=1)
    audio = synth.synthesize_sync("Just a moment.")
    assert audio.size > 48000 * 0.4


# --- split_for_speech -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello. How are you?", ["Hello.", "How are you?"]),
        ("Your total is $3.50. Pay now!", ["Your total is $3.50.", "Pay now!"]),
        ("That costs 1,250.75 dollars in total.", ["That costs 1,250.75 dollars in total."]),
        ("See example.com for more. Thanks.", ["See example.com for more.", "Thanks."]),
        ("Dr. Smith will call at 5 p.m. today.", ["Dr. Smith will call at 5 p.m. today."]),
        ("Order No. 42 shipped. Oh no. It broke.", ["Order No. 42 shipped.", "Oh no.", "It broke."]),
        ("Really?! Yes...  Okay.", ["Really?!", "Yes...", "Okay."]),
        ("First line\nsecond line", ["First line", "second line"]),
        ("  \n ", []),
        ("...", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_for_speech(text) == expected


def test_split_long_sentence_at_clauses() -> None:
    sentence = (
        "I have checked your account and I can see that the payment you made on Tuesday was received, "
        "but the refund for the earlier order has not been processed yet because the bank needs two more "
        "working days to confirm it."
    )
    pieces = split_for_speech(sentence, max_chars=120)
    assert pieces == [
        "I have checked your account and I can see that the payment you made on Tuesday was received,",
        "but the refund for the earlier order has not been processed yet",
        "because the bank needs two more working days to confirm it.",
    ]
    assert " ".join(pieces) == sentence


def test_split_prefers_punctuation_and_never_breaks_words_or_numbers() -> None:
    sentence = "We can deliver on Monday; the fee is 3.50 and " + "the driver will call you first " * 6 + "ok."
    pieces = split_for_speech(sentence, max_chars=60)
    assert pieces[0] == "We can deliver on Monday;"
    assert all(len(p) <= 60 for p in pieces)
    assert " ".join(pieces) == sentence
    assert any("3.50" in p for p in pieces)


def test_split_unbreakable_text_is_kept_whole() -> None:
    word = "x" * 200
    assert split_for_speech(word, max_chars=50) == [word]


def test_quick_start_cuts_a_long_first_sentence_at_its_first_comma() -> None:
    assert split_for_speech("Hello Ana Lima, thanks for calling Sunrise Electronics support.", quick_start=True) == [
        "Hello Ana Lima,",
        "thanks for calling Sunrise Electronics support.",
    ]
    # Short first sentences, and later sentences, are left as they are.
    assert split_for_speech("Yes, of course. Hello there, how are you today?", quick_start=True) == [
        "Yes, of course.",
        "Hello there, how are you today?",
    ]
    assert split_for_speech("Hello Ana Lima, thanks for calling Sunrise Electronics support.") == [
        "Hello Ana Lima, thanks for calling Sunrise Electronics support."
    ]


def test_the_fixed_part_of_a_personalised_greeting_is_synthesised_ahead() -> None:
    from agent.dialogue.flow import parse_flow
    from agent.runtime import static_lines

    flow = parse_flow(
        """
name: greet
start: hello
nodes:
  hello:
    say: "Hello {{caller.name}}, thanks for calling Sunrise Electronics support."
    end: true
""",
        source="greet.yaml",
    )
    assert "thanks for calling Sunrise Electronics support." in static_lines(flow)
    assert not any("{{" in line for line in static_lines(flow))


async def test_a_reply_starts_with_its_first_sound(tts: PiperSynthesizer) -> None:
    """piper leads most lines with 40-50 ms of silence: at the start of a reply that is waiting, for nothing."""
    from agent.speech.audio import rms_dbfs

    audio = await tts.synthesize("We open at nine.")
    first_15_ms = audio[: tts.sample_rate * 15 // 1000]
    assert rms_dbfs(first_15_ms) > -60
