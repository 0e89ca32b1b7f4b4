"""FlowReloader: edits reach new calls, broken edits never replace a working flow."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.dialogue.flow import FlowError
from agent.dialogue.reloader import FlowReloader

GOOD = "start: a\nnodes:\n  a:\n    say: Version {n}.\n    end: true\n"
BROKEN = "start: a\nnodes:\n  a:\n    say: Broken.\n    next: nowhere\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Clock, FlowReloader]:
    path = tmp_path / "line.yaml"
    path.write_text(GOOD.format(n=1), encoding="utf-8")
    clock = Clock()
    return path, clock, FlowReloader(path, interval_s=2.0, clock=clock)


def said(reloader: FlowReloader) -> list[object]:
    return list(reloader.current().nodes["a"].say)


def test_a_saved_change_is_used_after_the_interval(setup: tuple[Path, Clock, FlowReloader]) -> None:
    path, clock, reloader = setup
    assert said(reloader) == ["Version 1."]
    path.write_text(GOOD.format(n=2), encoding="utf-8")
    clock.now += 1.0
    assert said(reloader) == ["Version 1."]  # not looked at yet: at most every interval_s
    clock.now += 1.0
    assert said(reloader) == ["Version 2."]
    assert reloader.reloads == 1 and reloader.last_error is None


def test_a_broken_version_is_refused_and_the_old_flow_kept(
    setup: tuple[Path, Clock, FlowReloader], caplog: pytest.LogCaptureFixture
) -> None:
    path, clock, reloader = setup
    before = reloader.current()
    path.write_text(BROKEN, encoding="utf-8")
    clock.now += 5
    with caplog.at_level(logging.ERROR):
        assert reloader.current() is before
        clock.now += 5
        assert reloader.current() is before
    assert reloader.last_error is not None
    assert str(reloader.last_error).startswith(f"{path}:5:11: next: 'nowhere' is not a node")
    assert sum("keeping the previous version" in r.message for r in caplog.records) == 1  # logged once

    path.write_text(GOOD.format(n=3), encoding="utf-8")
    clock.now += 5
    assert said(reloader) == ["Version 3."]
    assert reloader.last_error is None


def test_reverting_a_broken_edit_clears_the_error(setup: tuple[Path, Clock, FlowReloader]) -> None:
    path, clock, reloader = setup
    path.write_text(BROKEN, encoding="utf-8")
    clock.now += 5
    reloader.current()
    path.write_text(GOOD.format(n=1), encoding="utf-8")
    clock.now += 5
    assert said(reloader) == ["Version 1."]
    assert reloader.last_error is None and reloader.reloads == 0


def test_a_deleted_file_keeps_the_flow(setup: tuple[Path, Clock, FlowReloader]) -> None:
    path, clock, reloader = setup
    path.unlink()
    clock.now += 5
    assert said(reloader) == ["Version 1."]
    assert reloader.last_error is not None and "cannot read flow file" in str(reloader.last_error)


def test_a_broken_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(FlowError, match=r"bad\.yaml:5:11"):
        FlowReloader(path)
    with pytest.raises(FlowError, match="cannot read"):
        FlowReloader(tmp_path / "missing.yaml")
