"""Shared test settings: no outside calls, and the seed's sample files."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

REPO = Path(__file__).resolve().parents[1]
# The seed's sample files (the first lines of each real file, unchanged), copied from ../shared/fixtures/seed.
SEED_FIXTURES = REPO / "tests" / "fixtures" / "seed"


@pytest.fixture
def seed_dir() -> Path:
    return SEED_FIXTURES
