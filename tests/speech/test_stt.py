"""Whisper transcription of real synthesised speech, through the same 48k->16k path a call uses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest

from agent.speech.audio import int16_to_float32, resample
from agent.speech.models import ModelNotFoundError, resolve_stt_model, resolve_tts_voice
from agent.speech.stt import Transcriber, WhisperTranscriber
from agent.speech.tts import PiperSynthesizer

SENTENCE = "Thanks for calling the support line, how can I help you today?"
PARAGRAPH = (
    "I would like to change my delivery address. The parcel should go to my office instead. "
    "Can you do that before Friday?"
)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(_norm(reference), _norm(hypothesis)))


@pytest.fixture(scope="module")
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="stt-test")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def transcriber(executor: concurrent.futures.ThreadPoolExecutor) -> WhisperTranscriber:
    return WhisperTranscriber(resolve_stt_model(), executor=executor)


@pytest.fixture(scope="module")
def clips(executor: concurrent.futures.ThreadPoolExecutor) -> dict[str, np.ndarray]:
    """Speech as it would leave our TTS (48 kHz) and come back from the caller (16 kHz)."""
    model, config = resolve_tts_voice()
    tts = PiperSynthesizer(model, config, executor=executor, deterministic=True)
    return {text: resample(tts.synthesize_sync(text), 48000, 16000) for text in (SENTENCE, PARAGRAPH)}


def test_is_a_transcriber(transcriber: WhisperTranscriber) -> None:
    assert isinstance(transcriber, Transcriber)


@pytest.mark.parametrize("text", [SENTENCE, PARAGRAPH])
async def test_round_trip_wer(transcriber: WhisperTranscriber, clips: dict[str, np.ndarray], text: str) -> None:
    t0 = time.perf_counter()
    result = await transcriber.transcribe(clips[text])
    elapsed = time.perf_counter() - t0
    assert result == result.strip() and result
    assert _wer(text, result) <= 0.2, result
    print(f"STT {clips[text].size / 16000:.2f}s audio in {elapsed:.3f}s: {result!r}")


async def test_float32_input_gives_same_text(transcriber: WhisperTranscriber, clips: dict[str, np.ndarray]) -> None:
    pcm = clips[SENTENCE]
    assert await transcriber.transcribe(int16_to_float32(pcm)) == await transcriber.transcribe(pcm)


async def test_concurrent_calls_share_one_model(transcriber: WhisperTranscriber, clips: dict[str, np.ndarray]) -> None:
    serial = transcriber.transcribe_sync(clips[SENTENCE])
    results = await asyncio.gather(*(transcriber.transcribe(clips[SENTENCE]) for _ in range(3)))
    assert results == [serial] * 3


async def test_event_loop_stays_responsive(transcriber: WhisperTranscriber, clips: dict[str, np.ndarray]) -> None:
    """Decoding is lazy in faster-whisper; if it leaked onto the loop, the ticker would stall."""
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
    await transcriber.transcribe(clips[PARAGRAPH])
    done.set()
    await task
    assert len(gaps) > 10
    assert max(gaps) < 0.25  # on the loop, decoding would block it for the whole utterance (>0.3 s)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(32000, np.int16),  # digital silence
        np.zeros(0, np.int16),  # nothing
        (np.random.default_rng(0).standard_normal(32000) * 32768 * 10 ** (-70 / 20)).astype(np.int16),
        (np.random.default_rng(1).standard_normal(32000) * 32768 * 10 ** (-30 / 20)).astype(np.int16),
    ],
    ids=["silence", "empty", "noise-70dBFS", "noise-30dBFS"],
)
async def test_no_words_from_non_speech(transcriber: WhisperTranscriber, audio: np.ndarray) -> None:
    """Whisper's classic failure is inventing "Thank you." for silence; that must never reach dialogue."""
    assert await transcriber.transcribe(audio) == ""


async def test_too_short_audio_is_skipped(transcriber: WhisperTranscriber, clips: dict[str, np.ndarray]) -> None:
    pcm = clips[SENTENCE]
    loud = int(np.argmax(np.abs(pcm)))
    assert await transcriber.transcribe(pcm[loud : loud + 1600]) == ""  # 0.1 s of real speech


def test_missing_model_dir_fails_without_download(
    tmp_path: Path, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"model\.bin"):
        WhisperTranscriber(tmp_path / "tiny.en", executor=executor)


def test_rejects_integer_types_other_than_int16(transcriber: WhisperTranscriber) -> None:
    with pytest.raises(TypeError):
        transcriber.transcribe_sync(np.zeros(16000, np.int32))
