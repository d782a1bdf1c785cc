"""SCoRe as the real preset runs it: the exact per-token KL on answer positions, sampling that ignores a checkpoint's
own generation settings, and no per-process batch of 1."""

from __future__ import annotations

import math

import pytest
import torch

from occmllm import prompts
from occmllm.images import load_image
from train.data import DataDir, read_samples


def test_exact_kl_is_the_sum_over_the_vocabulary_at_answer_positions_by_hand():
    from train.score import kl_exact

    p = [[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.6, 0.4, 0.0]]  # the last position is padding (mask 0)
    q = [[0.25, 0.5, 0.25], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]]
    policy = torch.tensor([p]).log()
    reference = torch.tensor([q]).log()
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    by_hand = sum(pi * math.log(pi / qi) for row_p, row_q in zip(p[:2], q[:2]) for pi, qi in zip(row_p, row_q))
    assert kl_exact(policy, reference, mask).item() == pytest.approx(by_hand, abs=1e-6)
    assert by_hand == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5) + 0.1 * math.log(1 / 3)
                                    + 0.2 * math.log(2 / 3) + 0.7 * math.log(7 / 4), abs=1e-9)
    assert kl_exact(policy, policy, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_exact_kl_leaves_out_suppressed_tokens_with_a_finite_gradient():
    from train.score import kl_exact

    logits = torch.tensor([[[1.0, 0.5, -0.3, 2.0]]], requires_grad=True)
    suppressed = logits.clone()
    suppressed[..., 3] = float("-inf")  # as answer_distributions marks the special tokens
    policy = suppressed.log_softmax(-1)
    reference = torch.tensor([[[0.0, 0.0, 0.0, float("-inf")]]]).log_softmax(-1)
    kl = kl_exact(policy, reference, torch.ones(1, 1))
    p = torch.tensor([1.0, 0.5, -0.3]).softmax(-1)
    assert kl.item() == pytest.approx((p * (p.log() - math.log(1 / 3))).sum().item(), abs=1e-6)
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_score_step_uses_the_exact_kl_when_asked(tiny_model, toy_data):
    import copy

    import train.score as score
    from train.common import load_policy

    policy, processor = load_policy(tiny_model)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=3)
    images, labels = [load_image(s.image) for s in samples], [prompts.parse_object(s.turns[0][1]) for s in samples]
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen = []
    original = score.kl_exact
    score_kl = lambda *a: seen.append(original(*a)) or seen[-1]  # noqa: E731
    cfg = score.SCoReConfig(max_new_tokens=4, exact_kl=True)
    import unittest.mock as mock

    with mock.patch.object(score, "kl_exact", score_kl), mock.patch.object(score, "kl_k3", side_effect=AssertionError):
        loss, stats = score.score_step(policy, reference, processor, images, labels, cfg, stage=1)
    assert len(seen) == 2 and stats["kl1"] == pytest.approx(seen[0].mean().item()) and stats["kl1"] > 0
    assert loss.requires_grad


def test_sampling_ignores_the_checkpoints_generation_config(tiny_model, toy_data):
    """A checkpoint's generation_config.json with repetition_penalty 1.3 (and an n-gram ban, bad words, top-k) does not
    reach the sampling call: generate() runs with plain sampling, no such logits processor; the model keeps its own."""
    from transformers import RepetitionPenaltyLogitsProcessor

    import train.score as score
    from train.common import load_policy
    from train.data import render

    model, processor = load_policy(tiny_model)
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.bad_words_ids = [[5]]
    model.generation_config.top_k = 5
    used, processors = [], []
    prepare, get_processors = model._prepare_generation_config, model._get_logits_processor
    model._prepare_generation_config = lambda *a, **k: used.append(prepare(*a, **k)) or used[-1]
    model._get_logits_processor = lambda *a, **k: processors.append(get_processors(*a, **k)) or processors[-1]
    images = [load_image(s.image) for s in read_samples(DataDir(toy_data).require("Q1", "train"), limit=2)]
    cfg = score.SCoReConfig(max_new_tokens=4, temperature=0.7)
    score.sample_attempt(model, processor, images, [render(processor, [(prompts.Q1, None)])] * 2, cfg)
    config = used[0][0]
    assert config.repetition_penalty in (None, 1.0) and not config.no_repeat_ngram_size and not config.bad_words_ids
    assert config.do_sample and config.temperature == 0.7 and config.top_p == 1.0 and not config.top_k
    names = {type(p).__name__ for p in processors[0]}
    assert not any(isinstance(p, RepetitionPenaltyLogitsProcessor) for p in processors[0])
    assert not names & {"NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor", "TopKLogitsWarper"}, names
    assert model.generation_config.repetition_penalty == 1.3  # the checkpoint's own, put back


def test_score_refuses_a_batch_of_one(tmp_path):
    from train.common import TrainError
    from train.score import SCoReConfig, train_score

    with pytest.raises(TrainError, match="at least 2 samples per process"):
        train_score(tmp_path / "no-model-needed", tmp_path / "out", [], SCoReConfig(batch_size=1))
    assert not (tmp_path / "out").exists()
