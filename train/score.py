"""Stage 4a: self-correction by reinforcement learning, SCoRe (Kumar et al. 2024) done right.

    python train/run_all.py --preset smoke --stages 4a       # in the recipe
    python -m train.score --preset smoke --data DIR --model START --out OUT [stages.4a.clarity_kl=0.1 ...]   # alone
Per batch of Q1 images (the class is only used to score answers, never shown to the model):
  1. attempt 1: sample (temperature, no greedy) an answer to Q1 from the current policy;
  2. attempt 2: sample again, the prompt being the conversation [Q1, attempt 1, SECOND_ATTEMPT ("Please check again
     what's the object in the hand?")];
  3. rewards r1, r2 = 1 when `prompts.parse_object` of the attempt names the right class, else 0;
  4. log-probabilities of the sampled tokens only (up to and including the end-of-turn token), under the policy and
     under a frozen copy of the starting model (the reference), both of the distribution that was sampled (logits at
     `temperature`, the suppressed special tokens left out); the KL of each answer to the reference: by default the
     sampled estimate k3 = e^(ref-pi) - (ref-pi) - 1 per token; `exact_kl: true` (the real preset) the exact per-token
     KL, sum over the vocabulary of pi (log pi - log ref) at every answer position (the logits are there anyway).
Sampling uses a clean generation config (do_sample, `temperature`, `top_p`, no top-k, no repetition penalty, n-gram
ban or bad words): a checkpoint's own generation_config.json (e.g. repetition_penalty 1.3) would make the samples
off-policy. A per-process batch of 1 is refused: its baseline A(x) = x - mean(x) is 0, so no policy gradient.
Stage I (the first `stage1_epochs`): maximise r2 while a strong KL (`kl_first`) keeps attempt 1 at the reference:
    loss = -A(r2) logp(a2) + kl_first KL(a1) + kl KL(a2)
Stage II: both attempts, attempt 2 with the self-correction bonus alpha (r2 - r1), KL penalty:
    loss = -A(r1) logp(a1) - A(r2 + alpha (r2 - r1)) logp(a2) + kl (KL(a1) + KL(a2))
A(x) = x - batch mean of x (REINFORCE with a baseline; each batch of `batch_size` on a process has its own, and
`grad_accum` (or `global_batch`, common.accumulation) batches make one optimizer step). Loss CSV, tqdm, checkpoints, DDP through accelerate as
in train/sft.py.
`clarity_kl` > 0 (not in the seed; the default preset sets it) adds clarity_kl * KL(reference || policy) of the first
answer token of the clarity question (Q6) asked after attempt 1: attempt 2 is a class sentence after a second user
turn, and without this term the policy learns to answer the clarity question, also a second turn, with a class
sentence (Reflection 0 after stage 4a in the default preset's runs).
`correction_weight` > 0 with annotated self-corrections (not in the seed; the export of the app has them: its
`self_correction.jsonl`, an image with [Q1, an answer the annotators judged wrong, SECOND_ATTEMPT, their correction])
adds correction_weight * the cross-entropy of the correction's tokens given that conversation, `batch_size` of them a
step: a supervised term on attempt 2 after a real wrong attempt 1, the case the bonus alpha (r2 - r1) rewards and a
policy that is seldom wrong first rarely samples. It is off-policy on purpose and kept out of the REINFORCE terms,
which still see only the policy's own samples, scored against the labels (for an export, every judged item's accepted
or corrected answer: run_all reads `annotated_labels`), with the same baselines and KL to the reference.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from occmllm import prompts
from train.common import (LossLog, StageConfig, TrainError, accumulation, add_lora, cosine_with_warmup, finish_stage,
                          is_fsdp, load_policy, make_accelerator, seed_everything, set_trainable,
                          trainable_parameters)
from train.data import (Sample, collate, encode_sample, read_samples, read_stage_samples, render,
                        stage_data_dir)
from train.recipe_config import run_one_stage, settings_as
from train.sft import epoch_order, save_checkpoint


@dataclass
class SCoReConfig(StageConfig):
    stage1_epochs: float = 1
    stage2_epochs: float = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    kl_first: float = 1.0  # stage I: strong KL of attempt 1 to the reference
    kl: float = 0.05  # KL penalty elsewhere
    alpha: float = 1.0  # stage II self-correction bonus
    max_grad_norm: float = 1.0
    clarity_kl: float = 0.0  # keep the clarity answer (Q6 after attempt 1) at the reference's (0: the seed's SCoRe)
    correction_weight: float = 0.0  # supervised term on annotated corrections of a wrong attempt 1 (0: the seed's)
    grad_accum: int = 1  # batches per optimizer step (each batch its own baseline); global_batch sets it
    exact_kl: bool = False  # exact per-token KL over the vocabulary instead of the sampled k3 estimate
    synced_gpus: bool = False  # set by train_score under FSDP (sampling keeps every rank in step)


def _inputs(processor, images, texts, device):
    inputs = processor(text=texts, images=[[image] for image in images], return_tensors="pt", padding=True,
                       padding_side="left")
    return {k: v.to(device) for k, v in inputs.items()}


def suppressed_ids(tokenizer, vocabulary: int | None = None) -> list[int]:
    """No image or other special token inside an answer (an untrained model would sample them): eos ends it. Ids from
    `vocabulary` on (the model's output rows) are left out: the model cannot produce them (a converted checkpoint's
    <video> token can lie there)."""
    special = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    return sorted(i for i in special if vocabulary is None or i < vocabulary)


def output_rows(model) -> int:
    """How many tokens the model's head scores."""
    return model.get_output_embeddings().weight.shape[0]


SAMPLING_KEEPS = ("eos_token_id", "bos_token_id", "decoder_start_token_id")  # the checkpoint's, for its turn's end


def sampling_config(model, tokenizer, cfg: SCoReConfig):
    """The generation config SCoRe samples with: plain sampling from softmax(logits / temperature) with top-p, the
    special tokens suppressed, and nothing of the checkpoint's generation_config.json but its special token ids
    (transformers fills every value a passed config leaves unset from the model's own, hence the explicit 1.0 / 0)."""
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    keep = {key: getattr(own, key) for key in SAMPLING_KEEPS if getattr(own, key, None) is not None}
    return GenerationConfig(**keep, pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=cfg.temperature,
                            top_p=cfg.top_p, top_k=0, min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
                            repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
                            encoder_no_repeat_ngram_size=0, length_penalty=1.0, min_length=0, min_new_tokens=None,
                            max_new_tokens=cfg.max_new_tokens, num_beams=1, num_return_sequences=1,
                            suppress_tokens=suppressed_ids(tokenizer, output_rows(model)), begin_suppress_tokens=None, bad_words_ids=None,
                            sequence_bias=None, forced_bos_token_id=None, forced_eos_token_id=None,
                            renormalize_logits=False, watermarking_config=None)


@torch.no_grad()
def sample_attempt(model, processor, images, texts, cfg: SCoReConfig):
    """Sample one answer per prompt. Returns (inputs of the prompt + answer, answer mask, answer texts)."""
    tokenizer = processor.tokenizer
    inputs = _inputs(processor, images, texts, model.device)
    prompt_length = inputs["input_ids"].shape[1]
    config = sampling_config(model, tokenizer, cfg)
    saved, model.generation_config = model.generation_config, config  # generate() fills unset values from it
    try:
        sequences = model.generate(**inputs, generation_config=config,
                                   synced_gpus=cfg.synced_gpus)  # FSDP: every rank runs as many forward passes
    finally:
        model.generation_config = saved
    answer = sequences[:, prompt_length:]
    ended = (answer == tokenizer.eos_token_id).int().cumsum(1)
    answer_mask = (ended == 0) | ((ended == 1) & (answer == tokenizer.eos_token_id))  # up to and incl. the first eos
    texts_out = [t.strip() for t in tokenizer.batch_decode(answer.masked_fill(~answer_mask, tokenizer.pad_token_id),
                                                           skip_special_tokens=True)]
    full = dict(inputs)
    full["input_ids"] = sequences
    full["attention_mask"] = torch.cat([inputs["attention_mask"], answer_mask.long()], dim=1)
    return full, answer_mask, texts_out


def answer_distributions(model, full: dict, answer_mask: torch.Tensor, temperature: float = 1.0,
                         suppress: list[int] | None = None) -> torch.Tensor:
    """Log-probabilities over the vocabulary at every answer position, shape (batch, answer length, vocabulary),
    of the distribution `sample_attempt` draws from: logits / `temperature`, the `suppress` token ids impossible
    (-inf; top-p < 1 is not reproduced)."""
    attention = full["attention_mask"]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: positions as generate() used them
    logits = model(**full, position_ids=position_ids, use_cache=False).logits
    length = answer_mask.shape[1]
    logits = logits[:, -length - 1:-1].float() / temperature
    if suppress:
        logits[..., suppress] = float("-inf")
    return logits.log_softmax(-1)


def sampled_logps(distributions: torch.Tensor, full: dict, answer_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of the sampled answer tokens (0 elsewhere), shape (batch, answer length)."""
    targets = full["input_ids"][:, -answer_mask.shape[1]:]
    logps = distributions.gather(-1, targets[..., None])[..., 0]
    return logps.masked_fill(~answer_mask.bool(), 0.0)  # padding after eos may be a suppressed id: -inf there


def answer_logps(model, full: dict, answer_mask: torch.Tensor, temperature: float = 1.0,
                 suppress: list[int] | None = None) -> torch.Tensor:
    """Per-token log-probabilities of the sampled answer tokens (0 elsewhere), shape (batch, answer length), under the
    distribution `sample_attempt` draws from (answer_distributions)."""
    return sampled_logps(answer_distributions(model, full, answer_mask, temperature, suppress), full, answer_mask)


def kl_exact(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL(policy || reference): at each answer position (`mask`) the exact KL of the two distributions
    over the vocabulary (log-probabilities, shape (batch, length, vocabulary)), sum of p (log p - log q), summed over
    the positions. Tokens impossible under both (suppressed: -inf) add 0, with a finite gradient."""
    possible = torch.isfinite(policy) & torch.isfinite(reference)
    log_p, log_q = policy.masked_fill(~possible, 0.0), reference.masked_fill(~possible, 0.0)
    per_token = (log_p.exp() * possible * (log_p - log_q)).sum(-1)
    return (per_token * mask).sum(1)


def kl_k3(policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL(policy || reference) estimate on sampled tokens: sum of e^(ref-pi) - (ref-pi) - 1."""
    delta = (ref_logps - policy_logps) * mask
    return ((delta.exp() - delta - 1) * mask).sum(1)


def clarity_kl(policy, reference, processor, images, first_answers: list[str]) -> torch.Tensor:
    """Per-sample KL(reference || policy) of the first token of the answer to the clarity question (Q6) asked after
    `first_answers` (the conversation [Q1, answer, Q6] the chain of thought asks), over the whole vocabulary."""
    texts = [render(processor, [(prompts.Q1, a), (prompts.Q6, None)]) for a in first_answers]
    inputs = _inputs(processor, images, texts, next(policy.parameters()).device)
    position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding, as generate() counts
    logp = policy(**inputs, position_ids=position_ids, use_cache=False).logits[:, -1].float().log_softmax(-1)
    with torch.no_grad():
        ref = reference(**inputs, position_ids=position_ids, use_cache=False).logits[:, -1].float().log_softmax(-1)
    return (ref.exp() * (ref - logp)).sum(-1)


def correction_loss(policy, processor, corrections: list[Sample], images) -> torch.Tensor:
    """Cross-entropy of the annotated corrections (the last answer of [Q1, wrong answer, SECOND_ATTEMPT, correction]),
    the wrong first answer being context only."""
    encoded = [encode_sample(processor, image, s.turns, last_only=True) for s, image in zip(corrections, images)]
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in collate(encoded, processor.tokenizer.pad_token_id).items()}
    return policy(**batch, use_cache=False).loss


def rewards_of(texts: list[str], labels: list[str], device) -> torch.Tensor:
    return torch.tensor([float(prompts.parse_object(t) == label) for t, label in zip(texts, labels)], device=device)


def score_step(policy, reference, processor, images, labels, cfg: SCoReConfig, stage: int) -> tuple[torch.Tensor, dict]:
    """The loss of one SCoRe step (stage 1 or 2) on a batch, and its statistics."""
    generator = getattr(policy, "module", policy)
    first_texts = [render(processor, [(prompts.Q1, None)])] * len(images)
    full1, mask1, answers1 = sample_attempt(generator, processor, images, first_texts, cfg)
    second_texts = [render(processor, [(prompts.Q1, a1), (prompts.SECOND_ATTEMPT, None)]) for a1 in answers1]
    full2, mask2, answers2 = sample_attempt(generator, processor, images, second_texts, cfg)
    r1, r2 = rewards_of(answers1, labels, mask1.device), rewards_of(answers2, labels, mask2.device)

    suppress = suppressed_ids(processor.tokenizer, output_rows(generator))
    sampled = dict(temperature=cfg.temperature, suppress=suppress)
    dist1, dist2 = (answer_distributions(policy, full1, mask1, **sampled),
                    answer_distributions(policy, full2, mask2, **sampled))
    with torch.no_grad():
        ref_dist1, ref_dist2 = (answer_distributions(reference, full1, mask1, **sampled),
                                answer_distributions(reference, full2, mask2, **sampled))
    logp1, logp2 = sampled_logps(dist1, full1, mask1), sampled_logps(dist2, full2, mask2)
    if cfg.exact_kl:
        kl1, kl2 = kl_exact(dist1, ref_dist1, mask1), kl_exact(dist2, ref_dist2, mask2)
    else:
        ref1, ref2 = sampled_logps(ref_dist1, full1, mask1), sampled_logps(ref_dist2, full2, mask2)
        kl1, kl2 = kl_k3(logp1, ref1, mask1), kl_k3(logp2, ref2, mask2)
    advantage = lambda x: x - x.mean()  # noqa: E731
    if stage == 1:
        loss = (-advantage(r2) * logp2.sum(1) + cfg.kl_first * kl1 + cfg.kl * kl2).mean()
    else:
        shaped2 = r2 + cfg.alpha * (r2 - r1)
        loss = (-advantage(r1) * logp1.sum(1) - advantage(shaped2) * logp2.sum(1) + cfg.kl * (kl1 + kl2)).mean()
    stats = {"reward1": r1.mean().item(), "reward2": r2.mean().item(), "kl1": kl1.mean().item(),
             "kl2": kl2.mean().item(), "answer1": answers1[0], "answer2": answers2[0]}
    if cfg.clarity_kl:
        kl_q6 = clarity_kl(policy, reference, processor, images, answers1).mean()
        loss = loss + cfg.clarity_kl * kl_q6
        stats["kl_clarity"] = kl_q6.item()
    return loss, stats


def train_score(start: Path, out: Path, samples: list[Sample], cfg: SCoReConfig, name: str = "4a",
                corrections: list[Sample] = ()) -> Path:
    """SCoRe from the model in `start` on Q1 `samples` (and, with `cfg.correction_weight`, the supervised term on the
    annotated self-`corrections`); save to `out/model`; resume from `out/checkpoint`."""
    from occmllm.images import load_image

    if cfg.batch_size < 2:
        raise TrainError(f"score.batch_size {cfg.batch_size}: SCoRe needs at least 2 samples per process and step; "
                         "with 1 the baseline (the batch's mean reward) equals the reward and the policy gradient is 0")
    accelerator = make_accelerator(cfg.bf16)
    seed_everything(cfg.seed + accelerator.process_index)
    cfg.synced_gpus = is_fsdp(accelerator) and accelerator.num_processes > 1
    policy, processor = load_policy(start, device=accelerator.device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)  # a real frozen copy of the starting model
    set_trainable(policy, cfg.parts)
    if cfg.lora:
        policy = add_lora(policy, cfg.parts, cfg.lora_rank, cfg.lora_alpha)
    params = trainable_parameters(policy)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rank, world = accelerator.process_index, accelerator.num_processes
    grad_accum = accumulation(cfg, world)
    steps_per_epoch = max(1, math.ceil(len(samples) / world / (cfg.batch_size * grad_accum)))
    stage1_steps = max(1, math.ceil(steps_per_epoch * cfg.stage1_epochs))
    total_steps = stage1_steps + max(1, math.ceil(steps_per_epoch * cfg.stage2_epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = cosine_with_warmup(optimizer, total_steps, cfg.warmup_ratio)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    params = trainable_parameters(policy)  # FSDP puts sharded parameters in place of the ones above
    accelerator.register_for_checkpointing(scheduler)

    checkpoint = out / "checkpoint"
    log = LossLog(out / "loss.csv", ["step", "stage", "loss", "reward1", "reward2", "kl1", "kl2", "kl_clarity",
                                     "correction", "lr"])
    step = 0
    if (checkpoint / "progress.json").is_file():
        accelerator.load_state(str(checkpoint))
        step = json.loads((checkpoint / "progress.json").read_text())["step"]
        accelerator.print(f"[{name}] resuming from step {step}/{total_steps}")
    labels_of = [prompts.parse_object(s.turns[0][1]) for s in samples]

    bar = tqdm(total=total_steps, initial=step, desc=f"stage {name} (SCoRe)", disable=not accelerator.is_local_main_process)
    while step < total_steps:
        stage = 1 if step < stage1_steps else 2
        epoch, within = divmod(step if stage == 1 else step - stage1_steps, steps_per_epoch)
        order = epoch_order(len(samples), cfg.seed + 1000 * stage + epoch, rank, world)
        policy.train()
        loss_sum, parts = 0.0, []
        for micro in range(grad_accum):  # `grad_accum` batches of `batch_size` per optimizer step
            first = (within * grad_accum + micro) * cfg.batch_size
            chunk = order[first:first + cfg.batch_size] or order[: cfg.batch_size]
            if len(chunk) == 1:  # a last batch of 1 has no baseline: filled from the epoch's start
                chunk = chunk + order[: cfg.batch_size - 1]
            images = [load_image(samples[i].image) for i in chunk]
            with contextlib.nullcontext() if micro == grad_accum - 1 else accelerator.no_sync(policy):
                loss, stats = score_step(policy, reference, processor, images, [labels_of[i] for i in chunk], cfg,
                                         stage)
                if cfg.correction_weight and corrections:  # annotated corrections, `batch_size` a batch, seeded order
                    per_epoch = max(1, math.ceil(len(corrections) / world / cfg.batch_size))
                    fix_epoch, fix_within = divmod(step * grad_accum + micro, per_epoch)
                    fix_order = epoch_order(len(corrections), cfg.seed + 7000 + fix_epoch, rank, world)
                    fix_chunk = (fix_order[fix_within * cfg.batch_size:(fix_within + 1) * cfg.batch_size]
                                 or fix_order[: cfg.batch_size])
                    fixes = [corrections[i] for i in fix_chunk]
                    correction = correction_loss(policy, processor, fixes, [load_image(s.image) for s in fixes])
                    loss = loss + cfg.correction_weight * correction
                    stats["correction"] = correction.item()
                accelerator.backward(loss / grad_accum)
            loss_sum += loss.item() / grad_accum
            parts.append(stats)
        stats = {k: (sum(p[k] for p in parts) / len(parts) if not k.startswith("answer") else v)
                 for k, v in parts[-1].items()}
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        if accelerator.is_main_process:
            log.write(step=step, stage=stage, loss=loss_sum, lr=scheduler.get_last_lr()[0],
                      **{k: v for k, v in stats.items() if not k.startswith("answer")})
        bar.update(1)
        bar.set_postfix(stage=stage, r1=f"{stats['reward1']:.2f}", r2=f"{stats['reward2']:.2f}",
                        kl=f"{stats['kl1']:.3f}")
        if step % cfg.save_every == 0 and step < total_steps:
            save_checkpoint(accelerator, checkpoint, step)
    bar.close()
    warn_without_signal(out / "loss.csv", accelerator)
    return finish_stage(accelerator, policy, processor, out, start, name, checkpoint)


def train_stage_score(stage, settings: dict, start: Path, data_dir: Path, folder: Path) -> Path:
    """Stage 4a of the recipe: the Q1 samples of data_dir (`limit` of them; on an export the judged items' labels) and
    its annotated self-corrections when it has them, trained from `start` into folder/model."""
    settings = dict(settings)
    limit, data = settings.pop("limit", None), stage_data_dir(stage.kind, data_dir)
    samples = read_stage_samples(data, stage.data, limit, settings.pop("renders", False),
                                 settings.pop("extra_data", ()))
    cfg = settings_as(SCoReConfig, settings)
    fixes = data.source("self_correction", "train")  # an export's: [Q1, wrong answer, check again, correction]
    corrections = read_samples(fixes, limit) if fixes and cfg.correction_weight else []
    if data.is_export:
        print(f">> stage {stage.id} on the export: {len(samples)} labelled items "
              f"({data.require('Q1', 'train').annotation.name}), {len(corrections)} annotated self-corrections"
              f"{f' ({fixes.annotation.name}, weight {cfg.correction_weight})' if corrections else ''}", flush=True)
    return train_score(start, folder, samples, cfg, stage.id, corrections)


def main(argv: list[str] | None = None) -> int:
    return run_one_stage(train_stage_score, "score", __doc__, argv)


def warn_without_signal(loss_csv: Path, accelerator=None) -> str | None:
    """A warning when no second attempt was ever right (the policy gradient of attempt 2 was zero all along: the
    model may not know the check-again turn yet) or every one was (nothing to improve); printed and returned."""
    import csv

    if not loss_csv.is_file():
        return None
    with open(loss_csv, newline="") as f:
        rewards = [float(row["reward2"]) for row in csv.DictReader(f)]
    if not rewards or 0.0 < max(rewards) and min(rewards) < 1.0:
        return None
    which = "never right" if max(rewards) == 0.0 else "always right"
    message = (f"SCoRe warning: the second attempt was {which} in all {len(rewards)} steps, so attempt 2 had no "
               "learning signal (see reward2 in loss.csv)")
    if accelerator is None or accelerator.is_main_process:
        print(message, flush=True)
    return message


if __name__ == "__main__":
    sys.exit(main())
