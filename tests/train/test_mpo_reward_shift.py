"""MPO's BCO-pair term with the seed's reward shift (mpo.reward_shift, the real preset): rewards minus the running mean
of every batch's mean reward, checked against numbers worked out by hand and against the trainer's loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.train.test_mpo_score import independent_logratios
from train.data import DataDir, read_pairs


def nls(x: float) -> float:
    """-log sigmoid(x)"""
    return math.log1p(math.exp(-x))


def test_bco_pair_shift_is_the_running_mean_over_batches_by_hand():
    from train.mpo import RunningMean, bco_pair_shifted

    running, beta = RunningMean(), 0.1
    # batch 1: log-ratios chosen [0.5, -1.0], rejected [-1.0, 0.5] -> rewards [0.05, -0.1], [-0.1, 0.05]; mean -0.025
    policy_c, ref_c = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    policy_r, ref_r = torch.tensor([-3.0, -0.5]), torch.tensor([-2.0, -1.0])
    first = bco_pair_shifted(policy_c - ref_c, policy_r - ref_r, beta, running)
    assert running.mean == pytest.approx(-0.025) and running.count == 1
    expected = [nls(0.05 + 0.025) + nls(0.1 - 0.025), nls(-0.1 + 0.025) + nls(-0.05 - 0.025)]
    assert first.tolist() == pytest.approx(expected, abs=1e-6)
    # batch 2: rewards chosen [0.08, 0.0], rejected [-0.1, 0.0]; batch mean -0.005; delta = (-0.025 - 0.005) / 2
    policy_c, ref_c = torch.tensor([-0.2, -0.4]), torch.tensor([-1.0, -0.4])
    policy_r, ref_r = torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -1.0])
    second = bco_pair_shifted(policy_c - ref_c, policy_r - ref_r, beta, running)
    assert running.mean == pytest.approx(-0.015) and running.count == 2
    expected = [nls(0.08 + 0.015) + nls(0.1 - 0.015), nls(0.0 + 0.015) + nls(0.0 - 0.015)]
    assert second.tolist() == pytest.approx(expected, abs=1e-6)
    # trl 1.16's bco_pair (no shift) differs: the shift is really there
    assert not torch.allclose(second, -F.logsigmoid(beta * (policy_c - ref_c)) - F.logsigmoid(-beta * (policy_r - ref_r)))


def test_bco_pair_running_mean_gathers_every_process():
    """Under two processes each batch adds both processes' batch means (as trl's RunningMoments gathers them)."""
    from train.mpo import RunningMean

    class TwoProcesses:
        num_processes = 2

        def gather(self, value):
            return torch.cat([value, torch.tensor([0.3])])  # the other process's batch mean

    running = RunningMean()
    assert running.update(torch.tensor(0.1), TwoProcesses()) == pytest.approx(0.2)
    assert running.update(torch.tensor(-0.3), TwoProcesses()) == pytest.approx((0.1 + 0.3 - 0.3 + 0.3) / 4)
    assert running.count == 4


def test_mpo_loss_with_reward_shift_equals_independent_terms_over_two_batches(tiny_model, toy_data, tmp_path):
    from train.mpo import MPOConfig, build_trainer

    pairs = read_pairs(DataDir(toy_data).require("dpo", "train"), limit=4)
    beta = 1.0  # rewards of order 1: the shift changes the loss by far more than the tolerance (checked below)
    trainer, model, processor = build_trainer(tiny_model, tmp_path, pairs,
                                              MPOConfig(batch_size=2, beta=beta, reward_shift=True))
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.bco_weight == 0.2
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference so that every term is non-trivial
        for p in trainer.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    trainer.model.train()  # the running mean moves in training only
    batch_means = []
    for batch_pairs, indices in ((pairs[:2], [0, 1]), (pairs[2:], [2, 3])):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in indices])
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch).item()
        chosen_tokens, dc, dr = independent_logratios(trainer, processor, batch_pairs)
        batch_means.append(torch.cat([beta * dc, beta * dr]).mean().item())
        delta = sum(batch_means) / len(batch_means)
        sigmoid = (-F.logsigmoid(beta * (dc - dr))).mean()
        bco_pair = (-F.logsigmoid(beta * dc - delta) - F.logsigmoid(-(beta * dr - delta))).mean()
        sft = -torch.cat(chosen_tokens).mean()
        unshifted = (-F.logsigmoid(beta * dc) - F.logsigmoid(-beta * dr)).mean()
        assert abs(0.2 * (bco_pair - unshifted)) > 1e-3  # the shift is not trivially 0: trl's term would fail here
        assert loss == pytest.approx((0.8 * sigmoid + 0.2 * bco_pair + 1.0 * sft).item(), abs=1e-4)
        # float32 log-probabilities of a padded batch (trl) and of one pair at a time (here) differ in the 6th digit
        assert trainer.running.mean == pytest.approx(delta, abs=1e-5)


def test_mpo_with_reward_shift_trains_and_checkpoints_its_running_mean(tiny_model, toy_data, tmp_path):
    from train.mpo import MPOConfig, build_trainer

    pairs = read_pairs(DataDir(toy_data).require("dpo", "train"), limit=8)
    cfg = MPOConfig(lr=1e-3, batch_size=4, max_steps=2, save_every=2, reward_shift=True)
    trainer, model, processor = build_trainer(tiny_model, tmp_path, pairs, cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == set(before), f"unchanged: {sorted(set(before) - changed)}"
    saved = json.loads((tmp_path / "trainer" / "checkpoint-2" / "bco_running.json").read_text())
    assert saved["count"] == 2 and saved["mean"] == pytest.approx(trainer.running.mean)
    again, _, _ = build_trainer(tiny_model, tmp_path / "again", pairs, cfg)
    again.create_optimizer_and_scheduler(num_training_steps=2)
    again._load_optimizer_and_scheduler(str(tmp_path / "trainer" / "checkpoint-2"))
    assert (again.running.mean, again.running.count) == (saved["mean"], saved["count"])
