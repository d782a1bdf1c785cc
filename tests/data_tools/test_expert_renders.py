"""data_tools.expert_renders: the learned expert's renders of a split, as the 3D route shows them, for training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_tools import expert_renders
from data_tools.synth import __main__ as synth
from occmllm import expert_renders as library


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
    assert library.render_split(small_dataset, "train", progress=False)["skipped"] == len(written)


def test_batched_network_gives_the_same_renders(small_dataset, tmp_path):
    """The GPU layout (network batched in this process, meshing and rendering in worker processes), run on the CPU:
    the same files as reconstructing photo by photo, an unreadable photo counted as nothing reconstructed."""
    import shutil

    copy = tmp_path / "synth"
    shutil.copytree(small_dataset, copy, ignore=shutil.ignore_patterns("expert_renders"))
    photos = sorted((copy / "train" / "images").glob("*.jpg"))
    photos[-1].write_bytes(b"not a jpeg")  # a broken photo among them
    counts = library.render_split(copy, "train", workers=2, progress=False, batched=True, batch_size=2)
    assert counts["rendered"] + counts["nothing"] == len(photos) and counts["nothing"] >= 1
    written = sorted((copy / "train" / "expert_renders").glob("*.png"))
    assert len(written) == counts["rendered"] > 0
    assert not (copy / "train" / "expert_renders" / f"{photos[-1].stem}.png").exists()
    from occmllm.recon import LearnedExpert

    expert = LearnedExpert()
    for render in written:
        direct = expert.reconstruct(str(copy / "train" / "images" / f"{render.stem}.jpg")).render
        differs = np.abs(np.asarray(Image.open(render)).astype(int) - direct.astype(int)) > 0
        assert differs.mean() < 0.002  # batched convolutions round differently: at most a few edge pixels


def test_renders_of_another_expert_are_not_mixed_in(small_dataset, tmp_path, capsys):
    """A rerun with a different expert stops with a message; --overwrite renders every photo again."""
    import shutil

    from occmllm.recon.experts import WEIGHTS

    assert expert_renders.main(["--data", str(small_dataset), "--split", "train"]) == 0
    other = tmp_path / "other_expert"
    shutil.copytree(WEIGHTS, other)
    weights = (other / "model.safetensors").read_bytes()
    (other / "model.safetensors").write_bytes(weights[:-4] + bytes(4))  # other weights, same layout
    capsys.readouterr()
    assert expert_renders.main(["--data", str(small_dataset), "--split", "train", "--expert", str(other)]) == 2
    assert "another expert" in capsys.readouterr().err
    assert expert_renders.main(["--data", str(small_dataset), "--split", "train", "--expert", str(other),
                                "--overwrite"]) == 0
    assert "0 already there" in capsys.readouterr().out
    assert library.expert_identity(str(other))["weights_sha256"] in \
        (small_dataset / "train" / "expert_renders" / "expert.json").read_text()


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


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_the_gpu_without_one_stops_with_a_message(small_dataset, capsys):
    assert expert_renders.main(["--data", str(small_dataset), "--split", "train", "--device", "cuda"]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err
