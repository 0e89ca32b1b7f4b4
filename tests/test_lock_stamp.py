"""The locks say which pyproject.toml dependencies they were compiled from, and an install refuses a stale one.

A range changed in pyproject.toml without re-locking would otherwise install the old pins on every machine
while pyproject.toml promises something else (or, with a new dependency, not install it at all)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(root: Path, *locks: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / ".ci" / "lock_inputs.py"), "check", *locks],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_shipped_locks_were_made_from_this_pyproject() -> None:
    done = check(ROOT, "requirements.lock", "requirements-test.lock")
    assert done.returncode == 0, done.stderr


def test_a_dependency_changed_without_relocking_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "lock_inputs.py", tmp_path / ".ci" / "lock_inputs.py")
    shutil.copy(ROOT / "requirements-test.lock", tmp_path / "requirements-test.lock")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    assert check(tmp_path, "requirements-test.lock").returncode == 0
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace("dependencies = [", 'dependencies = [\n    "left-pad>=1",', 1), encoding="utf-8"
    )
    done = check(tmp_path, "requirements-test.lock")
    assert done.returncode == 1
    assert "run `bash .ci/lock`" in done.stderr


def test_a_packaging_only_change_keeps_the_lock(tmp_path: Path) -> None:
    """Listing a new subpackage is no dependency change: the lock stays valid."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "lock_inputs.py", tmp_path / ".ci" / "lock_inputs.py")
    shutil.copy(ROOT / "requirements.lock", tmp_path / "requirements.lock")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"agent.media",', '"agent.media",\n    "agent.x",'))
    assert check(tmp_path, "requirements.lock").returncode == 0
