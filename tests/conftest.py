"""Shared fixtures: the real models, loaded once per test session (they are read-only and thread-safe)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.config import Settings
from agent.runtime import Models


@pytest.fixture(scope="session")
def models() -> Iterator[Models]:
    loaded = Models.load(Settings())
    yield loaded
    loaded.close()
