"""However a call ends (hang-up, drain, a shutdown deadline cutting the ending short) its recording is finished:
the file is complete and playable, and its reference says how long and how big it is."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import numpy as np

from agent.call import Call, CallServices, CallState
from agent.dialogue.flow import parse_flow
from agent.recordings.service import Recordings
from agent.store.sqlite import SqliteStore

FLOW = parse_flow('start: a\nrecording: {enabled: true}\nnodes:\n  a: {say: "Hello.", end: true}\n')


def recorded_call(tmp_path: Path, store: SqliteStore) -> tuple[Call, Recordings]:
    recordings = Recordings(directory=tmp_path / "recordings", store=store)
    services = CallServices(graph=Any, transcriber=Any, synthesizer=Any, recordings=recordings)  # type: ignore[arg-type]
    now = [10.0]
    call = Call(call_id="wacid.REC", services=services, flow=FLOW, clock=lambda: now[0])
    assert call.recorded
    call.state = CallState.ACTIVE
    recorder = recordings.open(call.id, clock=lambda: now[0])
    call._recorder = recorder
    for _ in range(100):  # two seconds of the bot speaking
        now[0] += 0.02
        recorder.sent_frame(np.full(960, 3000, dtype=np.int16), now[0])
    return call, recordings


async def test_the_ending_completes_the_file_and_its_reference(tmp_path: Path) -> None:
    with SqliteStore.in_data_dir(tmp_path) as store:
        call, recordings = recorded_call(tmp_path, store)
        path = Path(store.get_recording(call.id).path)  # type: ignore[union-attr]
        await call.end("shutdown")
        assert call.recording is not None and call.recording.complete
        assert 1.9 < call.recording.duration_s < 2.2
        assert not recordings.is_live(call.id)
        with av.open(str(path)) as container:
            assert container.streams.audio[0].codec_context.channels == 2
        store.flush()
        saved = store.get_recording(call.id)
        assert (
            saved is not None and saved.bytes == path.stat().st_size and saved.duration_s == call.recording.duration_s
        )
        assert call.summary()["recording"]["path"] == str(path)


async def test_an_ending_cut_short_still_leaves_a_finished_file(tmp_path: Path) -> None:
    with SqliteStore.in_data_dir(tmp_path) as store:
        call, recordings = recorded_call(tmp_path, store)
        recorder = call._recorder
        assert recorder is not None
        ending = asyncio.create_task(call.end("shutdown"))
        await asyncio.sleep(0)
        ending.cancel()  # a drain's deadline
        await asyncio.gather(ending, return_exceptions=True)
        assert call.ended.is_set() and not recordings.is_live(call.id)
        assert await asyncio.to_thread(recorder._writer.join, 5.0)  # the writer finished the file on its own
        with av.open(str(recorder.path)) as container:
            frames = sum(f.samples for f in container.decode(audio=0))
        assert frames >= 1.9 * 48000
