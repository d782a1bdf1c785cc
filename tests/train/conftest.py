"""Fixtures of the train tests: a tiny InternVL-architecture model and a toy dataset, both built in code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.train.toy_data import make_toy_dataset

TINY = dict(image_size=32, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
            text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=1, text_intermediate=128)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from occmllm.default_model import DefaultModelConfig, build_default_model

    return build_default_model(tmp_path_factory.mktemp("tiny") / "model", DefaultModelConfig(**TINY))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=32, n_test=12)


@pytest.fixture
def toy_copy(toy_data, tmp_path) -> Path:
    """A copy of the toy dataset that a test may break."""
    return Path(shutil.copytree(toy_data, tmp_path / "data"))
