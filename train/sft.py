"""Supervised fine-tuning of chosen model parts on seed-format conversations (stages 1, 2, 3b, 4b, 4c).

    python train/run_all.py --preset smoke --stages 1        # how it is normally run, in the recipe
    python -m train.sft --preset smoke --stage 1 --data DIR --model START --out OUT [stages.1.epochs=3 ...]  # alone
The loop is plain PyTorch through `accelerate` (one process, or DDP under `accelerate launch` / `torchrun`):
AdamW, cosine schedule with warmup, gradient accumulation, loss on the answer tokens only, a loss CSV, a tqdm bar,
and a checkpoint every `save_every` optimizer steps that a restarted run continues from.
`time_budget_s` caps a stage's training time: after `BUDGET_PROBE` steps the measured speed fixes the number of
steps (at most `epochs`' worth) that fits, fitted again about every `BUDGET_REFIT` seconds, and the cosine schedule
ends there (the default preset uses it so that the whole recipe fits its time whatever the card's speed).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from train.common import (LossLog, StageConfig, accumulation, add_lora, cosine_with_warmup, finish_stage,
                          load_policy, make_accelerator, seed_everything, set_trainable, trainable_parameters)
from train.data import (EncodedCache, SFTDataset, Sample, augment_batch, collate, pixel_lattice, read_stage_samples,
                        stage_data_dir)
from train.recipe_config import run_one_stage, settings_as


@dataclass
class SFTConfig(StageConfig):
    epochs: float = 2
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    num_workers: int = 0
    time_budget_s: float | None = None  # stop (with the schedule ended) when training would take longer than this
    cache: str = "auto"  # encode every sample once and keep it: gpu | cpu | none | auto (gpu if it fits, else cpu)
    hflip: bool = False  # mirror images left-right at random (for one-tile models)
    compile: bool = False  # torch.compile the forward pass on CUDA; every batch full (an epoch's remainder left out)
    augment: bool = False  # move, scale, turn and recolour images at random (train.data.random_augment; one-tile models)


BUDGET_PROBE = (10, 40)  # steps whose duration measures the speed (the first ones warm up the loaders and kernels)
BUDGET_REFIT = 20.0  # seconds between later fits of the step count to the time left


def train_sft(start: Path, out: Path, samples: list[Sample], cfg: SFTConfig, name: str = "sft") -> Path:
    """Fine-tune the model in `start` on `samples`; save the result to `out/model`. Resumes from
    `out/checkpoint` when one exists. Returns the model folder."""
    accelerator = make_accelerator(cfg.bf16)
    seed_everything(cfg.seed)
    model, processor = load_policy(start, device=accelerator.device)
    set_trainable(model, cfg.parts)
    if cfg.lora:
        model = add_lora(model, cfg.parts, cfg.lora_rank, cfg.lora_alpha)
    params = trainable_parameters(model)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    pad_id = processor.tokenizer.pad_token_id
    dataset = SFTDataset(samples, processor)
    cache = build_cache(dataset, pad_id, cfg, accelerator)
    rank, world = accelerator.process_index, accelerator.num_processes
    grad_accum = accumulation(cfg, world)
    share = math.ceil(len(samples) / world)  # this process's samples per epoch (epoch_order)
    # compile: every batch full. The epoch's last, smaller batch is left out (a different few samples each epoch, as
    # every epoch shuffles): torch.compile would compile the model a second time for its shape, 13-40 s of stage 1's
    # budget on an H100 (docs/results/sft_loss_read_h100.md).
    full_only = cfg.compile and share >= cfg.batch_size
    batches_per_epoch = share // cfg.batch_size if full_only else math.ceil(share / cfg.batch_size)
    end = batches_per_epoch * cfg.batch_size  # where an epoch's batches stop in its order (past the end: all of it)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / grad_accum))
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    horizon = {"total": total_steps}
    scheduler = cosine_with_warmup(optimizer, total_steps, cfg.warmup_ratio, horizon)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = trainable_parameters(model)  # FSDP puts sharded parameters in place of the ones above
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process
    # compiled on CUDA only (on a CPU the compile costs more than it saves); shares the parameters with `model`
    forward = torch.compile(model) if cfg.compile and accelerator.device.type == "cuda" else model

    checkpoint, log = out / "checkpoint", LossLog(out / "loss.csv", ["step", "epoch", "loss", "lr"])
    step = 0
    if (checkpoint / "progress.json").is_file():  # a killed run: continue where it stopped
        accelerator.load_state(str(checkpoint))
        progress = json.loads((checkpoint / "progress.json").read_text())
        step = progress["step"]
        total_steps = horizon["total"] = progress.get("total_steps") or total_steps
        accelerator.print(f"[{name}] resuming from step {step}/{total_steps}")
    budget = Budget(cfg.time_budget_s, step, resumed=step > 0)

    bar = tqdm(total=total_steps, initial=step, desc=f"stage {name}", disable=not accelerator.is_local_main_process)
    model.train()
    while step < total_steps:
        epoch = step // max(1, steps_per_epoch)
        order = epoch_order(len(samples), cfg.seed + epoch, rank, world)
        skip = (step - epoch * steps_per_epoch) * grad_accum * cfg.batch_size
        if cache is not None:
            chunks = [order[i: i + cfg.batch_size] for i in range(skip, end, cfg.batch_size)]
            loader, n_batches = (cache.batch(c, accelerator.device, hflip=cfg.hflip, augment=cfg.augment) for c in chunks), len(chunks)
        else:
            loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order[skip:end]),
                                                 batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                                 collate_fn=lambda b: collate(b, pad_id))
            n_batches = len(loader)
        for index, batch in enumerate(loader):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if cache is None:
                batch = augment_batch(batch, cfg.hflip, cfg.augment)
            last = (index + 1) % grad_accum == 0 or index == n_batches - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                loss = forward(**batch).loss
                accelerator.backward(loss / grad_accum)
            if not last:
                continue
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            loss_value = accelerator.gather(loss.detach()).mean().item()
            if accelerator.is_main_process:
                log.write(step=step, epoch=round(step / max(1, steps_per_epoch), 4), loss=loss_value,
                          lr=scheduler.get_last_lr()[0])
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            fitted = budget.fit(step, total_steps, accelerator)
            if fitted != total_steps:
                if abs(fitted - total_steps) > 0.01 * total_steps:
                    accelerator.print(f"[{name}] time budget {cfg.time_budget_s:.0f} s: {fitted} steps instead of "
                                      f"{total_steps} ({fitted / max(1, steps_per_epoch):.2f} epochs)")
                total_steps = horizon["total"] = fitted
                bar.total = total_steps
                bar.refresh()
            if step % cfg.save_every == 0 and step < total_steps:
                save_checkpoint(accelerator, checkpoint, step, total_steps)
            if step >= total_steps:
                break
    bar.close()
    return finish_stage(accelerator, model, processor, out, start, name, checkpoint)


def train_stage_sft(stage, settings: dict, start: Path, data_dir: Path, folder: Path) -> Path:
    """One SFT stage of the recipe: the conversations of its data kinds (and `extra_data`, e.g. [attributes]: the
    paper's "Supervise Description"; `limit` of each; `renders` adds the Q1 samples again on renders) from data_dir,
    trained from `start` into folder/model."""
    settings = dict(settings)
    limit, data = settings.pop("limit", None), stage_data_dir(stage.kind, data_dir)
    samples = read_stage_samples(data, stage.data, limit, settings.pop("renders", False),
                                 settings.pop("extra_data", ()))
    if data.is_export:
        print(f">> stage {stage.id} on the export: {len(samples)} conversations "
              f"({', '.join(data.require(kind, 'train').annotation.name for kind in stage.data)})", flush=True)
    return train_sft(start, folder, samples, settings_as(SFTConfig, settings), stage.id)


def main(argv: list[str] | None = None) -> int:
    return run_one_stage(train_stage_sft, "sft", __doc__, argv)


def build_cache(dataset, pad_id: int, cfg: SFTConfig, accelerator) -> EncodedCache | None:
    """The encoded-once cache where `cfg.cache` asks for it and it fits (auto: GPU memory if under half of what is
    free, else host memory if under a third of what is available), else None (streaming from the files)."""
    if cfg.cache == "none" or not len(dataset):
        return None
    if cfg.cache not in ("auto", "gpu", "cpu"):
        raise ValueError(f"sft.cache must be auto, gpu, cpu or none, not {cfg.cache!r}")
    lattice = pixel_lattice(dataset.processor)
    need = EncodedCache.bytes_needed(dataset, lattice=lattice)
    place = cfg.cache
    if place == "auto":
        import psutil

        on_gpu = accelerator.device.type == "cuda" and need < torch.cuda.mem_get_info(accelerator.device)[0] / 2
        place = "gpu" if on_gpu else "cpu" if need < psutil.virtual_memory().available / 3 else "none"
        if place == "none":
            accelerator.print(f"sft: {need / 2**30:.1f} GB of encoded samples do not fit in memory; streaming")
            return None
    device = accelerator.device if place == "gpu" else "cpu"
    cache = EncodedCache.build(dataset, pad_id, device, cfg.num_workers, accelerator.is_local_main_process, lattice)
    if cache is None:
        accelerator.print("sft: samples have images of different shapes; streaming instead of caching")
    elif cache.lattice is not None:
        accelerator.print(f"sft: {len(cache)} samples cached in {place} memory, pixels as 8-bit levels (largest "
                          f"distance from a level: {cache.pixel_error:.3f})")
    return cache


def epoch_order(n: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """This process's sample indices for one epoch: a seeded shuffle, every process a strided share of equal size
    (DDP needs the same number of batches everywhere; a short share repeats its first indices)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    share = math.ceil(n / world)
    order = (order * 2)[: share * world] if n else order
    return order[rank::world]


class Budget:
    """Fits the number of steps to a time budget: first from the speed of the steps BUDGET_PROBE (counted from the
    start of this process's training), then again about every BUDGET_REFIT seconds from the mean speed since the
    probe began (a compiled model's first steps can run faster than the rest, so a single fit can overshoot the
    budget). Never more than the epochs' worth. A resumed run keeps the step count its checkpoint saved.
    Under DDP every process gets rank 0's numbers, at the same steps."""

    def __init__(self, seconds: float | None, first_step: int, resumed: bool = False):
        self.seconds, self.first_step = seconds, first_step
        self.start, self.mark = time.time(), None
        self.ceiling, self.every = None, None  # the epochs' worth of steps; steps between fits
        self.done = not seconds or resumed

    def fit(self, step: int, total_steps: int, accelerator=None) -> int:
        if self.done:
            return total_steps
        done_here = step - self.first_step
        if done_here == BUDGET_PROBE[0]:
            self.mark = time.time()
        if done_here < BUDGET_PROBE[1] or self.mark is None:
            return total_steps
        if self.every is not None and (done_here - BUDGET_PROBE[1]) % self.every:
            return total_steps
        now = time.time()
        per_step = (now - self.mark) / (done_here - BUDGET_PROBE[0])
        left = self.seconds - (now - self.start)
        self.ceiling = self.ceiling or total_steps
        fitted = max(step + 1, min(self.ceiling, step + int(left / per_step)))
        every = self.every or max(1, int(BUDGET_REFIT / per_step))
        if accelerator is not None and accelerator.num_processes > 1:  # every process stops at rank 0's step
            from accelerate.utils import broadcast_object_list

            fitted, every = broadcast_object_list([fitted, every])
        self.every = every
        self.done = fitted <= step + 1
        return fitted


def save_checkpoint(accelerator, checkpoint: Path, step: int, total_steps: int | None = None) -> None:
    """accelerate's state (model, optimizer, scheduler, RNG) + the step, written beside and renamed into place."""
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step, "total_steps": total_steps}))
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    sys.exit(main())
