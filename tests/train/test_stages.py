"""Each training stage trains exactly the model parts the seed's table says, and nothing else."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train.common import part_of
from train.data import DataDir, read_pairs, read_samples


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def assert_trained_exactly(before: dict, after: dict, parts: set[str]) -> None:
    assert before.keys() == after.keys()
    unchanged_trained = [n for n in before if part_of(n) in parts and torch.equal(before[n], after[n])]
    changed_frozen = [n for n in before if part_of(n) not in parts and not torch.equal(before[n], after[n])]
    assert not unchanged_trained, f"meant to train but unchanged: {unchanged_trained}"
    assert not changed_frozen, f"frozen but changed: {changed_frozen}"
    assert {part_of(n) for n in before} == {"vision", "projector", "lm"}  # every parameter belongs to a part


@pytest.mark.parametrize("parts", [["projector", "lm"], ["vision", "projector"]], ids=["stage1-2-4c", "stage3b-4b"])
def test_sft_trains_only_its_parts(tiny_model, toy_data, tmp_path, parts):
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1_Q6", "train"), limit=8)
    out = train_sft(tiny_model, tmp_path, samples, SFTConfig(parts=parts, lr=1e-3, batch_size=4, max_steps=2))
    assert_trained_exactly(weights(tiny_model), weights(out), set(parts))
    assert (tmp_path / "loss.csv").read_text().count("\n") == 3  # header + 2 steps


def test_mpo_trains_every_part(tiny_model, toy_data, tmp_path):
    from train.mpo import MPOConfig, train_mpo

    pairs = read_pairs(DataDir(toy_data).require("dpo", "train"), limit=8)
    out = train_mpo(tiny_model, tmp_path, pairs, MPOConfig(lr=1e-3, batch_size=4, max_steps=2))
    assert_trained_exactly(weights(tiny_model), weights(out), {"vision", "projector", "lm"})


def test_score_trains_projector_and_lm(tiny_model, toy_data, tmp_path):
    from train.score import SCoReConfig, train_score

    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=8)
    out = train_score(tiny_model, tmp_path, samples, SCoReConfig(lr=1e-3, batch_size=4, max_new_tokens=4,
                                                                 max_steps=2))
    assert_trained_exactly(weights(tiny_model), weights(out), {"projector", "lm"})
    assert "reward2" in (tmp_path / "loss.csv").read_text().splitlines()[0]


def test_lora_adapts_only_its_parts_and_merges(tiny_model, toy_data, tmp_path):
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=8)
    out = train_sft(tiny_model, tmp_path, samples, SFTConfig(parts=["projector", "lm"], lr=1e-2, batch_size=4,
                                                             max_steps=2, lora=True, lora_rank=4))
    before, after = weights(tiny_model), weights(out)
    assert not any("lora" in n for n in after), "the saved model must be merged (a plain model folder)"
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and {part_of(n) for n in changed} <= {"projector", "lm"}
    assert any(n.endswith("q_proj.weight") and part_of(n) == "lm" for n in changed)


def test_a_gathered_state_dict_saves_like_the_model(tiny_model, tmp_path):
    """FSDP saves from the full state dict gathered off the shards: same files as a plain save (tied weights once),
    and the model loads back with the same weights."""
    import torch
    from safetensors.torch import load_file

    from train.common import load_policy, save_model

    model, processor = load_policy(tiny_model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a changed weight, so that the saved one is checked
    gathered = {k: v.clone() for k, v in model.state_dict().items()}
    plain = save_model(model, processor, tmp_path / "plain")
    full = save_model(model, processor, tmp_path / "gathered", state_dict=gathered)
    a, b = load_file(plain / "model.safetensors"), load_file(full / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reloaded, _ = load_policy(full)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reloaded.parameters()))
