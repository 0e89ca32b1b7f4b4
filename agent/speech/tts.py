"""Text-to-speech with piper, streamed piece by piece so the caller hears the first words early.

piper only yields audio per whole sentence (stack-notes §2), so time-to-first-audio grows with the
first sentence. :func:`split_for_speech` therefore cuts long sentences at clause boundaries, and each
piece is synthesised separately in the executor and yielded as soon as it is ready.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from agent.speech.audio import resample, trim_leading_quiet
from agent.speech.models import ModelNotFoundError

logger = logging.getLogger(__name__)


@runtime_checkable
class Synthesizer(Protocol):
    """What the call loop needs from a TTS engine: 48 kHz int16 mono, streamed."""

    sample_rate: int

    def stream(self, text: str) -> AsyncIterator[np.ndarray]: ...

    async def synthesize(self, text: str) -> np.ndarray: ...


class PiperSynthesizer:
    """piper voice shared by all calls; CPU work always runs in the given executor.

    ``stream`` is an async generator: closing it early (``aclose()``, or cancelling the consumer on
    barge-in) lets the piece being synthesised finish in its thread but starts no further pieces.
    """

    def __init__(
        self,
        model: Path,
        config: Path,
        *,
        executor: concurrent.futures.Executor,
        output_rate: int = 48000,
        length_scale: float | None = None,
        deterministic: bool = False,
        cache_size: int = 0,
        max_chars: int = 120,
        onnx_threads: int | None = None,
        speaker_id: int | None = None,
    ) -> None:
        for path, what in ((Path(model), "piper voice model"), (Path(config), "piper voice config")):
            if not path.is_file():
                raise ModelNotFoundError(f"{what} not found: {path}")
        from piper import PiperVoice, SynthesisConfig  # heavy import (onnxruntime); only when used

        t0 = time.perf_counter()
        voice = PiperVoice.load(model, config_path=config)
        if onnx_threads is not None:
            # PiperVoice.load has no thread option; rebuild the session so several calls' TTS can share
            # the cores instead of each run spinning up threads on all of them.
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = onnx_threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
            voice = PiperVoice(config=voice.config, session=session, espeak_data_dir=voice.espeak_data_dir)
        logger.info("loaded piper voice %s in %.2fs", Path(model).name, time.perf_counter() - t0)

        self._voice = voice
        self._executor = executor
        self.sample_rate = output_rate
        self.native_rate: int = int(voice.config.sample_rate)
        self._max_chars = max_chars
        # noise 0 makes output bit-identical across runs, which tests (and the cache) rely on.
        self.speaker_id = speaker_id
        self._syn_config = SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=length_scale,
            noise_scale=0.0 if deterministic else None,
            noise_w_scale=0.0 if deterministic else None,
        )
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 mono chunks at ``sample_rate``, one per speech piece, in order.

        A cached piece is handed out right here: sent through the inference pool, a static line would
        queue behind every call's Whisper decodes (measured with 12 calls: ~0.3 s between transcript and
        reply audio, for a line already in memory).
        """
        loop = asyncio.get_running_loop()
        first = True
        for piece in split_for_speech(text, self._max_chars, quick_start=True):
            audio = self._cached(piece)
            if audio is None:
                audio = await loop.run_in_executor(self._executor, self._synth_piece, piece)
            if first:
                audio = trim_leading_quiet(audio, self.sample_rate)  # the caller is waiting for these words
                first = False
            if audio.size:
                yield audio

    async def synthesize(self, text: str) -> np.ndarray:
        """Whole reply as one buffer; for prompts that are stored or measured rather than played live."""
        chunks = [chunk async for chunk in self.stream(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def synthesize_sync(self, text: str) -> np.ndarray:
        """Blocking variant for startup warm-up, offline tools and test fixtures."""
        chunks = [self._synth_piece(piece) for piece in split_for_speech(text, self._max_chars, quick_start=True)]
        if chunks:
            chunks[0] = trim_leading_quiet(chunks[0], self.sample_rate)  # as `stream` does
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def _cached(self, piece: str) -> np.ndarray | None:
        """A copy of the cached audio (callers may write into what they get), or None."""
        if not self._cache_size:
            return None
        with self._cache_lock:
            cached = self._cache.get(piece)
            if cached is None:
                return None
            self._cache.move_to_end(piece)
        return cached.copy()  # cached arrays are never written to, only replaced

    def _synth_piece(self, piece: str) -> np.ndarray:
        cached = self._cached(piece)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        native = [chunk.audio_int16_array for chunk in self._voice.synthesize(piece, self._syn_config)]
        if not native:
            return np.zeros(0, dtype=np.int16)
        audio = resample(np.concatenate(native), self.native_rate, self.sample_rate)
        logger.debug("TTS %r -> %.2fs audio in %.3fs", piece, audio.size / self.sample_rate, time.perf_counter() - t0)
        if self._cache_size:
            with self._cache_lock:
                self._cache[piece] = audio.copy()
                self._cache.move_to_end(piece)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return audio


# --- text splitting -------------------------------------------------------------------------------------

# Words that end in "." without ending a sentence; splitting after them makes piper pause mid-phrase.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "approx", "dept", "est"}
)
# End of sentence: terminal punctuation (plus closing quotes/brackets) followed by whitespace. Requiring
# whitespace is what keeps "3.50", "1,000" and "example.com" whole.
_SENTENCE_END = re.compile(r"""[.!?…]+["')\]]*(?=\s)""")
# Strong clause boundaries inside a sentence: cut after the punctuation.
_CLAUSE_PUNCT = re.compile(r"""[,;:]["')\]]*(?=\s)|\s[-–—]+(?=\s)""")
# Weak boundaries: cut before the conjunction, so it starts the next piece as a speaker would.
_CLAUSE_WORD = re.compile(
    r"\s(?=(?:and|but|or|so|because|which|while|although|though|then|unless|until|whereas)\b)",
    re.IGNORECASE,
)
_MIN_PIECE_CHARS = 12


QUICK_START_CHARS = 40


def split_for_speech(text: str, max_chars: int = 120, *, quick_start: bool = False) -> list[str]:
    """Split a reply into sentences, and long sentences into clauses of at most ``max_chars``.

    Short pieces mean the first audio is ready sooner; cutting at punctuation or conjunctions keeps the
    prosody natural. Numbers (3.50, 1,000), URLs and common abbreviations are never split, and a piece is
    only cut mid-clause (at a space, never inside a word) when no boundary exists.

    `quick_start` also cuts a first sentence longer than ``QUICK_START_CHARS`` at its first comma: the
    caller hears "Hello Ana," while the rest is made, and in a personalised line ("Hello {{caller.name}},
    thanks for calling…") the part after the name is the same for every call, so it can be cached.
    """
    pieces: list[str] = []
    for block in re.split(r"\n\s*\n|\n", text):
        block = " ".join(block.split())
        if not block:
            continue
        for sentence in _split_sentences(block):
            pieces.extend(_split_long(sentence, max_chars))
    pieces = [p for p in pieces if any(ch.isalnum() for ch in p)]
    if quick_start and pieces and len(pieces[0]) > QUICK_START_CHARS:
        pieces[:1] = _split_first_clause(pieces[0])
    return pieces


def _split_first_clause(piece: str) -> list[str]:
    match = _CLAUSE_PUNCT.search(piece)
    if match is None or len(piece) - match.end() < _MIN_PIECE_CHARS:
        return [piece]
    head, tail = piece[: match.end()].strip(), piece[match.end() :].strip()
    return [head, tail] if any(ch.isalnum() for ch in head) else [piece]


def _split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        single_period = match.group().rstrip("\"')]") == "."
        if single_period and _is_abbreviation(text[start : match.start()], text[end:]):
            continue
        sentences.append(text[start:end].strip())
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _is_abbreviation(before: str, after: str) -> bool:
    """A single "." after an abbreviation or initial, or before a lowercase word, is not a sentence end."""
    words = before.split()
    last = words[-1].lower().lstrip("(\"'") if words else ""
    next_word = after.lstrip()
    if last in _ABBREVIATIONS or (last == "no" and next_word[:1].isdigit()):
        return True
    if len(last) == 1 and last.isalpha() and words[-1].isupper():
        return True  # an initial, as in "J. Smith"
    return bool(next_word) and next_word[0].islower()


def _split_long(sentence: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    rest = sentence.strip()
    while len(rest) > max_chars:
        cut = _best_cut(rest, max_chars)
        if cut is None:
            break
        head, rest = rest[:cut].strip(), rest[cut:].strip()
        if head:
            pieces.append(head)
    if rest:
        pieces.append(rest)
    return pieces


def _best_cut(text: str, max_chars: int) -> int | None:
    """Latest good boundary within ``max_chars`` (fewer, longer pieces sound better than many tiny ones)."""

    def ok(pos: int) -> bool:
        return _MIN_PIECE_CHARS <= pos <= max_chars and len(text) - pos >= _MIN_PIECE_CHARS

    for pattern in (_CLAUSE_PUNCT, _CLAUSE_WORD):
        cuts = [m.end() if pattern is _CLAUSE_PUNCT else m.start() for m in pattern.finditer(text)]
        cuts = [c for c in cuts if ok(c)]
        if cuts:
            return max(cuts)
    spaces = [m.start() for m in re.finditer(r"\s", text)]
    within = [s for s in spaces if 0 < s <= max_chars]
    if within:
        return max(within)
    beyond = [s for s in spaces if s > max_chars]
    return min(beyond) if beyond else None
