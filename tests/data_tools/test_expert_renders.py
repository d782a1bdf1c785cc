"""data_tools.expert_renders: the learned expert's renders of a split, as the 3D route shows them, for training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_tools import expert_renders
from data_tools.synth import __main__ as synth


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("er") / "synth"
    assert synth.main(["--out", str(out), "--n", "6", "--seed", "3", "--workers", "1", "--split-test", "0.3"]) == 0
    return out


def test_renders_are_the_experts_and_a_rerun_skips_them(small_dataset, capsys):
    from occmllm.recon import LearnedExpert
    from occmllm import formats

    assert expert_renders.main(["--data", str(small_dataset), "--split", "train"]) == 0
    photos = [c.images[0] for c in formats.read_conversations(small_dataset / "train_Q1.jsonl")]
    written = sorted((small_dataset / "train" / "expert_renders").glob("*.png"))
    assert "rendered" in capsys.readouterr().out and 0 < len(written) <= len(photos)
    first = written[0]
    direct = LearnedExpert().reconstruct(str(small_dataset / "train" / "images" / f"{first.stem}.jpg"))
    assert direct.ok and np.array_equal(np.asarray(Image.open(first)), direct.render)  # the pipeline's render
    assert expert_renders.render_split(small_dataset, "train", progress=False)["skipped"] == len(written)


def test_training_reads_expert_renders_and_says_when_they_are_missing(small_dataset):
    from train.common import TrainError
    from train.data import DataDir, read_samples

    source = DataDir(small_dataset).require("Q1", "train")
    plain = read_samples(source)
    expert = read_samples(source, renders="expert")
    both = read_samples(source, renders="both")
    assert len(plain) < len(expert) < len(both)
    assert {s.image.parent.name for s in expert} == {"images", "expert_renders"}
    with pytest.raises(TrainError, match="data_tools.expert_renders"):
        read_samples(DataDir(small_dataset).require("Q1", "test"), renders="expert")
    with pytest.raises(TrainError, match="oracle, expert or both"):
        read_samples(source, renders="learned")
