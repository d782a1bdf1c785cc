"""The MPO loss is the three terms computed independently; SCoRe samples on-policy, keeps a real frozen reference
(non-zero KL once the policy moves) and raises the reward on a toy task."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from occmllm import prompts
from occmllm.images import load_image
from train.data import DataDir, Sample, read_pairs, read_samples


def independent_logratios(trainer, processor, pairs):
    """(the chosen answers' per-token log-probabilities, log pi - log ref of each chosen and each rejected answer),
    encoded by train.data (train.mpo.sequence_logps), not by trl: the independent side of the MPO loss tests."""
    from train.mpo import sequence_logps

    chosen_tokens, dc, dr = [], [], []
    for image_path, pair in pairs:
        image = load_image(image_path)
        pc, _ = sequence_logps(trainer.model, processor, image, pair.question, pair.chosen)
        pr, _ = sequence_logps(trainer.model, processor, image, pair.question, pair.rejected)
        rc, _ = sequence_logps(trainer.ref_model, processor, image, pair.question, pair.chosen)
        rr, _ = sequence_logps(trainer.ref_model, processor, image, pair.question, pair.rejected)
        chosen_tokens.append(pc)
        dc.append(pc.sum() - rc.sum())
        dr.append(pr.sum() - rr.sum())
    return chosen_tokens, torch.stack(dc), torch.stack(dr)


def test_mpo_loss_equals_independent_three_terms(tiny_model, toy_data, tmp_path):
    from train.mpo import MPOConfig, build_trainer

    pairs = read_pairs(DataDir(toy_data).require("dpo", "train"), limit=4)
    trainer, model, processor = build_trainer(tiny_model, tmp_path, pairs, MPOConfig(batch_size=4))
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference so that every term is non-trivial
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()

    beta = 0.1
    chosen_tokens, dc, dr = independent_logratios(trainer, processor, pairs)
    sigmoid = (-F.logsigmoid(beta * (dc - dr))).mean()
    bco_pair = (-F.logsigmoid(beta * dc) - F.logsigmoid(-beta * dr)).mean()
    sft = -torch.cat(chosen_tokens).mean()
    expected = 0.8 * sigmoid + 0.2 * bco_pair + 1.0 * sft
    assert abs(dc).max() > 1e-3 and abs(dr).max() > 1e-3  # the DPO terms are not at their trivial value
    assert loss == pytest.approx(expected.item(), abs=1e-4)


def test_score_kl_nonzero_against_frozen_reference_and_prompts_are_honest(tiny_model, toy_data, monkeypatch):
    import train.score as score
    from train.common import load_policy, set_trainable

    policy, processor = load_policy(tiny_model)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    set_trainable(policy, ["projector", "lm"])
    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=6)
    images = [load_image(s.image) for s in samples]
    labels = [prompts.parse_object(s.turns[0][1]) for s in samples]
    seen = []
    original = score.sample_attempt
    monkeypatch.setattr(score, "sample_attempt", lambda m, p, i, texts, c: seen.append(texts) or original(m, p, i, texts, c))
    cfg = score.SCoReConfig(max_new_tokens=6)

    loss, stats = score.score_step(policy, reference, processor, images, labels, cfg, stage=1)
    assert stats["kl1"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    first, second = seen
    assert len(set(first)) == 1 and not any(label in first[0] for label in labels)  # no ground truth in the prompt
    for text in second:
        assert prompts.CHECK_AGAIN_TEXT in text and text.startswith(first[0][: first[0].index("assistant")])
    assert any(answer and answer in text for answer, text in zip([stats["answer1"]], second))  # attempt 1 is inside

    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    ref_before = {n: p.clone() for n, p in reference.named_parameters()}
    (loss + sum(p.sum() * 0 for p in policy.parameters() if p.requires_grad)).backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    optimizer.step()
    seen.clear()
    loss, stats = score.score_step(policy, reference, processor, images, labels, cfg, stage=2)
    assert stats["kl1"] > 1e-4 and stats["kl2"] > 1e-4
    assert loss.requires_grad
    assert all(torch.equal(p, ref_before[n]) for n, p in reference.named_parameters())
    samples_twice = [score.sample_attempt(policy, processor, images[:1] * 2, first[:2], cfg)[2] for _ in range(3)]
    assert len({tuple(s) for s in samples_twice}) > 1  # sampled, not greedy


def test_score_clarity_kl_is_the_kl_of_the_clarity_answer_against_the_reference(tiny_model, toy_data):
    """clarity_kl: 0 while the policy is the reference; after a change, the batched (left-padded) value equals the KL
    of the first clarity-answer token computed photo by photo, and score_step adds it to the loss."""
    import train.score as score
    from train.common import load_policy
    from train.data import render

    policy, processor = load_policy(tiny_model)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=4)
    images = [load_image(s.image) for s in samples]
    answers = ["It's a bottle.", "A remote control, I think, held in a hand.", "", "bowl"]  # different lengths: padding
    assert score.clarity_kl(policy, reference, processor, images, answers).abs().max() < 1e-5
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batched = score.clarity_kl(policy, reference, processor, images, answers)
    for image, answer, value in zip(images, answers, batched):
        inputs = score._inputs(processor, [image], [render(processor, [(prompts.Q1, answer), (prompts.Q6, None)])],
                               "cpu")
        with torch.no_grad():
            p = policy(**inputs).logits[0, -1].log_softmax(-1)
            q = reference(**inputs).logits[0, -1].log_softmax(-1)
        assert value.item() == pytest.approx((q.exp() * (q - p)).sum().item(), rel=1e-3, abs=1e-6) and value > 1e-4
    labels = [prompts.parse_object(s.turns[0][1]) for s in samples]
    loss, stats = score.score_step(policy, reference, processor, images, labels,
                                   score.SCoReConfig(max_new_tokens=6, clarity_kl=1.0), stage=1)
    assert stats["kl_clarity"] > 1e-4 and loss.requires_grad


def test_score_logps_are_those_of_the_sampling_distribution(tiny_model, toy_data):
    """The policy gradient is on-policy: answer_logps of the sampled tokens equal the log-probabilities generate() drew
    them with (temperature applied, special tokens suppressed), here at temperature 0.7."""
    import train.score as score
    from train.common import load_policy
    from train.data import render

    model, processor = load_policy(tiny_model)
    model.eval()
    tokenizer = processor.tokenizer
    images = [load_image(s.image) for s in read_samples(DataDir(toy_data).require("Q1", "train"), limit=3)]
    inputs = score._inputs(processor, images, [render(processor, [(prompts.Q1, None)])] * 3, model.device)
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=6,
                         pad_token_id=tokenizer.pad_token_id, suppress_tokens=score.suppressed_ids(tokenizer),
                         return_dict_in_generate=True, output_scores=True)
    answer = out.sequences[:, inputs["input_ids"].shape[1]:]
    drawn = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, answer[..., None])[..., 0]
    ended = (answer == tokenizer.eos_token_id).int().cumsum(1)
    mask = (ended == 0) | ((ended == 1) & (answer == tokenizer.eos_token_id))
    full = dict(inputs, input_ids=out.sequences,
                attention_mask=torch.cat([inputs["attention_mask"], mask.long()], 1))
    with torch.no_grad():
        logps = score.answer_logps(model, full, mask, temperature=0.7, suppress=score.suppressed_ids(tokenizer))
        plain = score.answer_logps(model, full, mask)
    assert torch.allclose(logps[mask], drawn[mask], atol=1e-4)
    assert not torch.allclose(plain[mask], drawn[mask], atol=1e-2)  # temperature 1 would be off-policy
    assert (logps[~mask] == 0).all()


def sampled_reward(folder: Path, samples: list[Sample], n_rounds: int = 2) -> float:
    from train.common import load_policy
    from train.data import render
    from train.score import SCoReConfig, rewards_of, sample_attempt

    model, processor = load_policy(folder)
    torch.manual_seed(123)
    images = [load_image(s.image) for s in samples]
    labels = [prompts.parse_object(s.turns[0][1]) for s in samples]
    text = render(processor, [(prompts.Q1, None)])
    total = 0.0
    for _ in range(n_rounds):
        _, _, answers = sample_attempt(model, processor, images, [text] * len(images), SCoReConfig(max_new_tokens=6))
        total += rewards_of(answers, labels, "cpu").mean().item()
    return total / n_rounds


def test_score_reward_rises_on_toy_task(tiny_model, tmp_path):
    """Toy task: two classes told apart by colour. SFT with shuffled labels teaches the answer format but not which
    class (reward ~0.5); SCoRe, rewarded on the parsed answer only, must then learn to look at the image. The reward
    is measured on held-out images (the test split), sampled as in training, with the same seed before and after.
    Each SCoRe step sees the whole training set (48 images): with smaller batches the REINFORCE gradient of this tiny
    model is mostly noise (measured at batch 16 after 61 steps: 0.42 -> 0.44 at lr 1e-3, 0.42 -> 0.56 at lr 3e-3)."""
    from tests.train.toy_data import make_toy_dataset
    from train.score import SCoReConfig, train_score
    from train.sft import SFTConfig, train_sft

    data = make_toy_dataset(tmp_path / "data", n_train=48, n_test=48, n_classes=2, seed=1)
    samples = read_samples(DataDir(data).require("Q1", "train"))
    held_out = read_samples(DataDir(data).require("Q1", "test"))
    shuffled = [Sample(s.image, [(s.turns[0][0], prompts.identify_answer(random.Random(i).choice(prompts.CLASSES[:2])))])
                for i, s in enumerate(samples)]
    warm = train_sft(tiny_model, tmp_path / "warm", shuffled, SFTConfig(lr=5e-3, batch_size=16, epochs=16, warmup_ratio=0.1))
    before = sampled_reward(warm, held_out)
    assert before < 0.8, f"the warm-up should not know the class yet, reward {before}"
    cfg = SCoReConfig(lr=3e-3, batch_size=len(samples), max_new_tokens=6, stage1_epochs=10, stage2_epochs=90)
    trained = train_score(warm, tmp_path / "score", samples, cfg)
    after = sampled_reward(trained, held_out)
    print(f"SCoRe toy task: sampled reward on held-out images {before:.3f} -> {after:.3f}")
    assert after > before + 0.15, f"reward did not rise: {before:.2f} -> {after:.2f}"


def test_score_warns_when_the_second_attempt_never_scores(tmp_path, capsys):
    from train.score import warn_without_signal

    log = tmp_path / "loss.csv"
    log.write_text("step,stage,loss,reward1,reward2\n1,1,0.1,0.8,0\n2,2,0.2,0.9,0\n")
    assert "never right in all 2 steps" in warn_without_signal(log)
    assert "never right" in capsys.readouterr().out
    log.write_text("step,stage,loss,reward1,reward2\n1,1,0.1,0.8,0\n2,2,0.2,0.9,0.25\n")
    assert warn_without_signal(log) is None
