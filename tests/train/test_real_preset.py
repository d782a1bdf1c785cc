"""The real preset as the seed's scripts run it: the seed's clarity rule, LoRA learning rates, a global batch that does
not depend on the number of processes, the MPO / SCoRe settings of the seed, a long process-group timeout."""

from __future__ import annotations

import pytest

from train import run_all
from train.common import TrainError, accumulation
from train.mpo import MPOConfig
from train.recipe_config import load_preset, settings_as, stage_settings
from train.score import SCoReConfig
from train.sft import SFTConfig

CONFIG_OF = {"sft": SFTConfig, "mpo": MPOConfig, "score": SCoReConfig}


def stage_config(config: dict, stage):
    settings = stage_settings(config, stage)
    for key in ("limit", "renders", "extra_data"):  # read by the stage's data, not by its trainer
        settings.pop(key, None)
    return settings_as(CONFIG_OF[stage.kind], settings)


@pytest.mark.parametrize("world, sft, mpo, score", [(1, 32, 8, 8), (2, 16, 4, 4), (8, 4, 1, 1)])
def test_real_preset_keeps_the_seeds_global_batch_on_any_number_of_gpus(world, sft, mpo, score):
    config = load_preset("real")
    expected = {"sft": sft, "mpo": mpo, "score": score}
    for stage in run_all.STAGES:
        if stage.kind == "expert":
            continue
        cfg = stage_config(config, stage)
        assert accumulation(cfg, world) == expected[stage.kind]
        assert cfg.batch_size * world * accumulation(cfg, world) == {"sft": 256, "mpo": 32, "score": 64}[stage.kind]


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(TrainError, match="not a multiple of batch_size 8 x 3 process"):
        accumulation(SFTConfig(batch_size=8, global_batch=256), 3)
    assert accumulation(SFTConfig(batch_size=8, grad_accum=5), 4) == 5  # without global_batch: grad_accum as set
    assert accumulation(SCoReConfig(batch_size=8), 2) == 1


def test_real_preset_follows_the_seed_where_lora_does_not_change_it():
    config = load_preset("real")
    assert config["clarity"]["relabel"] is True and config["clarity"]["rule"] == "answer"
    assert config["lora"] is True and config["dist_timeout_minutes"] >= 60
    for stage in run_all.STAGES:
        if stage.kind == "expert":
            continue
        cfg = stage_config(config, stage)
        assert cfg.lora and cfg.bf16
        assert 1e-5 <= cfg.lr <= 2e-4  # LoRA rates, above the seed's full fine-tuning 5e-6 for MPO
        if stage.kind == "sft":
            assert cfg.lr == 2e-4
        if stage.kind == "mpo":
            assert cfg.reward_shift and cfg.loss_type == ["sigmoid", "bco_pair", "sft"]
            assert cfg.loss_weights == [0.8, 0.2, 1.0] and cfg.beta == 0.1
        if stage.kind == "score":
            assert cfg.exact_kl and cfg.batch_size >= 2
    for preset in ("smoke", "default"):  # the other presets keep trl's bco_pair, the k3 estimate, no global batch
        other = load_preset(preset)
        for stage in run_all.STAGES:
            if stage.kind in ("mpo", "score"):
                cfg = stage_config(other, stage)
                assert not getattr(cfg, "reward_shift", False) and not getattr(cfg, "exact_kl", False)
                assert cfg.global_batch is None


def test_process_group_timeout_and_barrier_only_under_several_processes(monkeypatch):
    """One process: neither sets up a process group. Under WORLD_SIZE 2 the timeout goes to the process group that
    accelerate's PartialState starts (the others keep it), and the barrier is PartialState's."""
    import accelerate
    from datetime import timedelta

    from train import common

    calls = []

    class FakeState:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def wait_for_everyone(self):
            calls.append("barrier")

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setenv("WORLD_SIZE", "1")
    common.start_process_group(240)
    common.wait_for_all_ranks()
    assert calls == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    common.start_process_group(240)
    common.wait_for_all_ranks()
    assert calls[0]["timeout"] == timedelta(minutes=240) and calls[1:] == [{}, "barrier"]


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3", "internlm2_5"])
def test_real_preset_trains_every_stage_of_a_paper_format_checkpoint(family, toy_copy, tmp_path, capsys):
    """The `real` preset end to end on CPU from an InternVL2 chat-layout folder (the tiny fixtures of the paper's four
    models' layouts), as `--model` takes the paper's checkpoints: converted on first use, LoRA in every stage, MPO
    (trl, bf16 on a CPU-only machine) with the reward shift, SCoRe with the exact KL (the converted tokenizer's <video>
    id can lie past the model's output rows: 312 in the Qwen2 fixture). Every stage finishes and the final model is a
    whole model of the converted one's names and shapes, with trained weights."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "internvl2_chat" / family / "checkpoint"
    model = Path(shutil.copytree(fixture, tmp_path / family))
    out = tmp_path / "run"
    code = run_all.main([
        "--preset", "real", "--model", str(model), "--data", str(toy_copy), "--out", str(out), "--report-to", "none",
        "stages.0.expert=none", "stages.0.steps=2", "stages.0.batch_size=4", "stages.0.eval_every=0",
        "clarity.relabel=false", "sft.global_batch=8", "mpo.global_batch=4", "score.global_batch=8",
        "sft.num_workers=0", "mpo.limit=8", "score.limit=8", "evaluate.limit=6",
        *[f"stages.{s}.epochs=1" for s in ("1", "2", "3b", "4b", "4c")]])
    text = capsys.readouterr()
    assert code == 0, (text.out + text.err)[-3000:]
    for stage in run_all.STAGES:
        assert (out / f"stage_{stage.id}" / "DONE").is_file(), stage.id
    assert (model / "occmllm_native" / "model.safetensors").is_file()  # converted once, beside the folder
    mpo_log = (out / "stage_3a" / "loss.csv").read_text().splitlines()
    assert len(mpo_log) > 1 and "rewards/margins" in mpo_log[0]
    assert "kl1" in (out / "stage_4a" / "loss.csv").read_text().splitlines()[0]
    base = load_file(model / "occmllm_native" / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    assert {k: v.shape for k, v in final.items()} == {k: v.shape for k, v in base.items()}  # LoRA merged, not adapters
    changed = [k for k in base if not (final[k].float() == base[k].float()).all()]
    assert any("language_model" in k for k in changed), changed
