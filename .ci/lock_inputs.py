"""The part of pyproject.toml the locks are compiled from, as one hash stamped into each lock.

`.ci/lock` stamps it; `.ci/install` refuses a lock whose stamp differs, so a dependency range changed without
re-locking fails on the first install instead of installing versions pyproject.toml no longer asks for.

    python3 .ci/lock_inputs.py stamp requirements.lock requirements-test.lock
    python3 .ci/lock_inputs.py check requirements-test.lock
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

STAMP = "# pyproject.toml dependency inputs sha256: "
ROOT = Path(__file__).resolve().parents[1]


def inputs_hash(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    inputs = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def stamp_of(lock: Path) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines()[:10]:
        if line.startswith(STAMP):
            return line[len(STAMP) :].strip()
    return None


def stamp(lock: Path, digest: str) -> None:
    lines = [line for line in lock.read_text(encoding="utf-8").splitlines() if not line.startswith(STAMP)]
    header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines.insert(header, STAMP + digest)
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("stamp", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    digest = inputs_hash()
    for name in argv[1:]:
        lock = Path(name)
        if argv[0] == "stamp":
            stamp(lock, digest)
        elif stamp_of(lock) != digest:
            print(
                f"error: {lock} was not made from this pyproject.toml's dependencies (its stamp is "
                f"{stamp_of(lock) or 'missing'}, pyproject.toml gives {digest}); run `bash .ci/lock`, "
                "then `bash .ci/run`, and commit the locks",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
