"""The short-window fast path must give the same words as the full 30 s window, or step aside."""

from __future__ import annotations

import numpy as np
import pytest

from agent.runtime import Models
from agent.speech.audio import resample
from agent.speech.stt import WhisperTranscriber, first_of_restarts, looks_degenerate
from tests.wer import wer

SENTENCES = [
    "I want to check the status of my order.",
    "Can I talk to a person?",
    "I'd like to book an appointment for next Tuesday at half past three in the afternoon.",
    "Yes.",
]


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        ("Yes, yes, yes, yes", True),
        ("No? No?", True),
        ("Can I talk to a person? Can I talk to a person? Can I talk to a person?", True),
        ("I want to check the status of my order.", False),
        ("no no", True),
        ("Where is my order? Where is my", True),
        ("yes please", False),
        ("", False),
    ],
)
def test_looks_degenerate(text: str, degenerate: bool) -> None:
    assert looks_degenerate(text) is degenerate


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Where is my order? Where is my order", "Where is my order?"),
        ("Explain your returns policy. Explain your returns policy.", "Explain your returns policy."),
        ("Yes. Yes. Yes. Yes", "Yes."),
        ("Can I pay by card? Can I pay", "Can I pay by card?"),
        ("Where is my order? It was due yesterday.", None),  # a second sentence of its own
        ("Hold on. Hold on I have a question", None),  # more than the first sentence again
        ("yes yes yes yes", None),  # no sentences to tell apart: the full window decides
        ("I want to check the status of my order.", None),
    ],
)
def test_first_of_restarts(text: str, first: str | None) -> None:
    assert first_of_restarts(text) == first


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_short_window_matches_full_window(models: Models, sentence: str) -> None:
    transcriber = models.transcriber
    assert isinstance(transcriber, WhisperTranscriber)
    pcm = resample(await models.synthesizer.synthesize(sentence), 48000, 16000)
    audio = np.concatenate([np.zeros(3200, np.int16), pcm, np.zeros(3200, np.int16)])
    fast = await transcriber.transcribe(audio)
    full_path = transcriber._short_window_frames
    transcriber._short_window_frames = 0
    try:
        full = await transcriber.transcribe(audio)
    finally:
        transcriber._short_window_frames = full_path
    assert wer(sentence, fast) <= 0.2, fast
    assert wer(sentence, full) <= 0.2, full


def test_long_audio_takes_the_full_window(models: Models) -> None:
    transcriber = models.transcriber
    assert isinstance(transcriber, WhisperTranscriber)
    long_audio = np.zeros(16000 * 9, np.float32)
    assert transcriber._transcribe_short_window(long_audio) is None


async def test_short_window_keeps_the_last_words_of_a_long_turn(models: Models) -> None:
    """CTranslate2 stops near half the max_length it is given: the last words of a 5 s turn were lost."""
    transcriber = models.transcriber
    assert isinstance(transcriber, WhisperTranscriber)
    sentence = "Yeah hi, I just got my bill and I wanted to check that my last payment actually went through."
    pcm = resample(await models.synthesizer.synthesize(sentence), 48000, 16000)
    fast = transcriber._transcribe_short_window(pcm.astype(np.float32) / 32768)
    assert fast is not None
    assert fast.rstrip(".").lower().endswith("went through"), fast


@pytest.mark.parametrize("word", ["Yes.", "No.", "Okay."])
async def test_short_words_take_the_short_window(models: Models, word: str) -> None:
    """One-word answers are the commonest turn: they must not wait for the full 30 s window."""
    transcriber = models.transcriber
    assert isinstance(transcriber, WhisperTranscriber)
    pcm = resample(await models.synthesizer.synthesize(word), 48000, 16000)
    lead_in = np.zeros(1600, np.float32)  # as transcribe() gives it, and the VAD's pre-roll
    fast = transcriber._transcribe_short_window(np.concatenate([lead_in, pcm.astype(np.float32) / 32768]))
    assert fast is not None and wer(word, fast) == 0, fast
