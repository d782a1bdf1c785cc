import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{family: folder} of tiny random checkpoints, built once per test session."""
    from tests.occmllm.tiny_models import FAMILIES, build

    root = tmp_path_factory.mktemp("tiny_models")
    return {family: build(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_vlms(tiny_model_dirs):
    from occmllm.vlm import VLM

    return {family: VLM.load(folder) for family, folder in tiny_model_dirs.items()}
