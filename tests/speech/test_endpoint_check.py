"""Silero's second opinion: silence after a sentence is silence; a sentence cut mid-word is not over."""

from __future__ import annotations

import concurrent.futures

import numpy as np

from agent.runtime import Models
from agent.speech.audio import resample
from agent.speech.endpoint_check import SileroEndpointCheck


async def test_silence_after_speech_is_an_end_and_cut_speech_is_not(models: Models) -> None:
    speech = resample(await models.synthesizer.synthesize("I would like to check the status of my order"), 48000, 16000)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        check = SileroEndpointCheck(pool)
        loud_end = int(np.flatnonzero(np.abs(speech.astype(np.int32)) > 500)[-1])
        # Exactly what the endpointer hands over at a 200 ms pause: the sentence, then 200 ms of silence.
        finished = np.concatenate([np.zeros(3200, np.int16), speech[:loud_end], np.zeros(3200, np.int16)])
        assert not await check.still_talking(finished, silence_ms=200)
        # The default pause is 100 ms: a sentence ending in a soft "s" fades within Silero's decay.
        assert not await check.still_talking(finished[:-1600], silence_ms=100)
        loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 1000)
        cut = np.concatenate([np.zeros(3200, np.int16), speech[: int(loud[len(loud) // 2])]])
        assert await check.still_talking(cut, silence_ms=200)
        assert await check.still_talking(cut, silence_ms=100)
        # The caller trailing on, softly, through the end of the pause.
        # (The sentence's loudest 100 ms, a vowel, at a tenth of its level: where the murmur comes from must
        # not depend on how piper happened to time the words this run.)
        energy = np.convolve(speech.astype(np.float64) ** 2, np.ones(1600), mode="valid")
        peak = int(np.argmax(energy))
        murmur = (speech[peak : peak + 1600].astype(np.float32) * 0.1).astype(np.int16)
        soft = np.concatenate([finished[:-1600], murmur])
        assert await check.still_talking(soft, silence_ms=100)
