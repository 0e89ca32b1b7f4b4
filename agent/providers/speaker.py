"""Which speaker of a Piper voice talks: multi-speaker voices (e.g. libritts) carry many in one model."""

from __future__ import annotations

import json
from pathlib import Path


class SpeakerError(ValueError):
    """A speaker the voice does not have."""


def resolve_speaker(config_path: Path, speaker: int | str | None) -> int | None:
    """The speaker id for piper, from an id or a name in the voice's `speaker_id_map`.

    Checked against the voice's own config at start-up: piper silently ignores a speaker on a single-speaker
    voice (the operator would hear the wrong voice without a word), and an id past the last speaker would
    fail inside onnxruntime on the first line spoken.
    """
    if speaker is None or speaker == "":
        return None
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    count = int(config.get("num_speakers") or 1)
    names: dict[str, int] = config.get("speaker_id_map") or {}
    voice = Path(config_path).name.removesuffix(".json")
    if count <= 1:
        raise SpeakerError(f"voice {voice} has a single speaker; remove the speaker setting ({speaker!r})")
    if isinstance(speaker, str) and not speaker.isdigit():
        if speaker not in names:
            shown = ", ".join(sorted(names)[:10]) + (" …" if len(names) > 10 else "")
            raise SpeakerError(f"voice {voice} has no speaker {speaker!r}; it has {shown or 'no named speakers'}")
        return int(names[speaker])
    sid = int(speaker)
    if not 0 <= sid < count:
        raise SpeakerError(f"voice {voice} has speakers 0..{count - 1}, not {sid}")
    return sid
