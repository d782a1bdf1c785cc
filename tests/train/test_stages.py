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


@pytest.mark.parametrize("module", ["sft", "mpo", "score", "expert"])
def test_every_stage_module_has_a_command_line(module, capsys):
    """`python -m train.MODULE --help`: each stage runs alone, as its docstring shows."""
    import importlib

    with pytest.raises(SystemExit) as exit:
        importlib.import_module(f"train.{module}").main(["--help"])
    assert exit.value.code == 0 and f"python -m train.{module}" in capsys.readouterr().out


def test_a_stage_runs_alone_with_the_presets_settings(tiny_model, toy_data, tmp_path, capsys):
    """`python -m train.sft --preset smoke --stage 4b ...`: the preset's settings of stage 4b (vision + projector), a
    loadable trained model in OUT/model that changed exactly those parts; a bad setting stops it with a message."""
    from occmllm.vlm import VLM
    from train.sft import main

    out = tmp_path / "alone"
    code = main(["--preset", "smoke", "--stage", "4b", "--data", str(toy_data), "--model", str(tiny_model),
                 "--out", str(out), "stages.4b.max_steps=2", "sft.limit=8", "sft.batch_size=4"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert_trained_exactly(weights(tiny_model), weights(out / "model"), {"vision", "projector"})
    assert (out / "loss.csv").read_text().count("\n") == 3  # header + 2 steps
    assert VLM.load(out / "model").trained
    assert f">> stage 4b (SFT Q1, LM frozen): {out / 'model'}" in capsys.readouterr().out
    code = main(["--data", str(toy_data), "--model", str(tiny_model), "--out", str(tmp_path / "bad"), "sft.epoch=1"])
    assert code == 2 and "unknown setting(s) ['epoch'] for SFTConfig" in capsys.readouterr().err
