"""Where the files wacall ships beside its code (the flows in prompts/, the model manifest in models/) are.

In the repository they sit at the top level, next to agent/, because that is where flow authors and
`wacall flows` look for them. The wheel cannot install top-level folders under those generic names, so it
carries them inside the package as agent/prompts and agent/models (see pyproject.toml). Both layouts must
resolve: a source checkout or editable install has only the first, an installed wheel (the container image)
only the second. The answer never depends on the working directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The folder `name` (``"prompts"`` or ``"models"``) inside the installed package, else in the checkout."""
    packaged = _PACKAGE_DIR / name
    return packaged if packaged.is_dir() else _PACKAGE_DIR.parent / name
