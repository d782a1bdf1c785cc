"""Stage 3a: MPO (Mixed Preference Optimization) on the clarity preference pairs, with trl's DPOTrainer.

    python train/run_all.py --preset smoke --stages 3a       # in the recipe
    python -m train.mpo --preset smoke --data DIR --model START --out OUT [mpo.beta=0.2 ...]   # alone
Loss = 0.8 x DPO (sigmoid) + 0.2 x BCO-pair + 1.0 x SFT on the chosen answer, beta 0.1, against a frozen copy of the
starting model (with --lora: the starting model itself with the adapter switched off, which is the same thing).
`reward_shift: true` (the real preset) makes the BCO-pair term the seed's: its trainer (InternVL's MPO, on an older
trl) shifts the rewards r = beta (log pi - log ref) by delta, the running mean of every batch's mean reward (chosen and
rejected together, one value per process a batch, updated before use):
    bco_pair = -log sigmoid(r_chosen - delta) - log sigmoid(-(r_rejected - delta))
trl 1.16's bco_pair has no shift (delta = 0), which `reward_shift: false` (smoke, default) keeps. The running mean is
saved with the trainer's checkpoints (bco_running.json) and read back on resume.
trl is imported here only, so the other stages run without it. Resumes from the trainer's last checkpoint.
Every trl log (loss, learning rate, rewards/chosen, rewards/margins, rewards/accuracies, logps...) goes to loss.csv and
the run's tracker (train/tracking.py) through LossLog, not through trl's `report_to`: one tracker run per stage with
the other stages' names, and no Hub Space or sync that transformers' trackio callback may set up.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from train.common import (LossLog, StageConfig, TrainError, accumulation, add_lora, finish_stage, load_policy,
                          seed_everything, set_trainable)
from train.data import read_pairs, stage_data_dir
from train.recipe_config import run_one_stage, settings_as


@dataclass
class MPOConfig(StageConfig):
    parts: list[str] = field(default_factory=lambda: ["vision", "projector", "lm"])
    epochs: float = 1
    lr: float = 5e-6
    weight_decay: float = 0.05
    grad_accum: int = 1
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid", "bco_pair", "sft"])
    loss_weights: list[float] = field(default_factory=lambda: [0.8, 0.2, 1.0])
    num_workers: int = 0
    reward_shift: bool = False  # BCO-pair rewards minus their running mean, as the seed's trainer (see above)


class RunningMean:
    """The running mean of the BCO-pair rewards, as older trl's `RunningMoments.mean`: every update adds one value per
    process (its batch's mean reward), gathered across the processes, each value counted once."""

    FILE = "bco_running.json"

    def __init__(self, mean: float = 0.0, count: int = 0):
        self.mean, self.count = mean, count

    def update(self, value: torch.Tensor, accelerator=None) -> float:
        values = value.detach().float().reshape(1)
        if accelerator is not None and accelerator.num_processes > 1:
            values = accelerator.gather(values)
        self.count += values.numel()
        self.mean += (values.sum().item() - values.numel() * self.mean) / self.count
        return self.mean


def bco_pair_shifted(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
                     running: RunningMean, accelerator=None, update: bool = True) -> torch.Tensor:
    """The seed's per-pair BCO-pair loss: rewards beta * (log pi - log ref), shifted by the running mean of the batch
    mean rewards, `running` updated with this batch first (`update=False`: evaluation, the mean as it is)."""
    chosen, rejected = beta * chosen_logratios, beta * rejected_logratios
    delta = running.update(torch.cat([chosen, rejected]).mean(), accelerator) if update else running.mean
    return -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))


def shifted_bco_trainer(dpo_trainer):
    """trl's DPOTrainer class `dpo_trainer` with the seed's shifted BCO-pair term in place of trl's.
    trl computes the whole loss in one method, so this one lets trl compute the other terms (bco_pair taken out of its
    `loss_types`), reads the policy's and the reference's per-token log-probabilities of the same batch from the
    model calls trl makes (a forward hook on each model: the policy's call first, the reference's second, with the
    adapter off under LoRA), and adds weight x the shifted term, summed over the answer tokens as trl sums them."""

    class MPOTrainer(dpo_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if "bco_pair" not in self.loss_types or self.precompute_ref_logps or self.ld_alpha is not None:
                raise TrainError("mpo.reward_shift needs bco_pair in mpo.loss_type (and reference log-probabilities "
                                 "computed per batch, no ld_alpha)")
            index = self.loss_types.index("bco_pair")
            self.bco_weight = self.loss_weights[index]
            self.loss_types = [t for i, t in enumerate(self.loss_types) if i != index]
            self.loss_weights = [w for i, w in enumerate(self.loss_weights) if i != index]
            self.running = RunningMean()
            self._log_probs: list[torch.Tensor] = []

            def record(module, args, kwargs, output):
                if kwargs.get("fused_lm_head"):
                    self._log_probs.append(output.log_probs)

            for model in {id(m): m for m in (self.model, self.ref_model) if m is not None}.values():
                model.register_forward_hook(record, with_kwargs=True)

        def _compute_loss(self, model, inputs, return_outputs):
            self._log_probs.clear()
            result = super()._compute_loss(model, inputs, return_outputs)
            loss, outputs = result if return_outputs else (result, None)
            if len(self._log_probs) < 2:
                raise RuntimeError("MPO reward_shift: expected the policy's and the reference's forward passes")
            length = inputs["completion_mask"].shape[1] - 1  # the shifted answer mask, as trl counts positions
            policy, reference = (log_probs[:, -length:].sum(1) for log_probs in self._log_probs[:2])
            chosen, rejected = (policy - reference.detach()).chunk(2)
            training = self.model.training
            term = bco_pair_shifted(chosen, rejected, self.beta, self.running, self.accelerator, update=training)
            self._metrics["train" if training else "eval"]["bco_pair/delta"].append(self.running.mean)
            loss = loss + self.bco_weight * term.mean()
            return (loss, outputs) if return_outputs else loss

        def _save_optimizer_and_scheduler(self, output_dir):
            super()._save_optimizer_and_scheduler(output_dir)
            if self.args.should_save:
                (Path(output_dir) / RunningMean.FILE).write_text(
                    json.dumps({"mean": self.running.mean, "count": self.running.count}))

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            saved = Path(checkpoint) / RunningMean.FILE if checkpoint else None
            if saved is not None and saved.is_file():
                self.running = RunningMean(**json.loads(saved.read_text()))

    return MPOTrainer


def preference_records(pairs) -> list[dict]:
    """trl's conversational vision preference records, with the prompt rendered as occmllm.vlm asks questions."""
    from occmllm.images import load_image
    from occmllm.vlm import to_messages

    return [{"images": [load_image(image)], "prompt": to_messages(pair.question),
             "chosen": [{"role": "assistant", "content": [{"type": "text", "text": pair.chosen}]}],
             "rejected": [{"role": "assistant", "content": [{"type": "text", "text": pair.rejected}]}]}
            for image, pair in pairs]


def build_trainer(start: Path, out: Path, pairs, cfg: MPOConfig):
    """(trainer, model, processor): a DPOTrainer set up for MPO on `pairs` [(image path, PreferencePair)]."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    if cfg.reward_shift and "bco_pair" not in cfg.loss_type:
        raise TrainError(f"mpo.reward_shift shifts the bco_pair term, and mpo.loss_type {cfg.loss_type} has none")
    seed_everything(cfg.seed)
    model, processor = load_policy(start)
    set_trainable(model, cfg.parts)
    if cfg.lora:
        model, ref_model = add_lora(model, cfg.parts, cfg.lora_rank, cfg.lora_alpha), None
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    args = DPOConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=accumulation(cfg, int(os.environ.get("WORLD_SIZE", "1"))),
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
        beta=cfg.beta, loss_type=list(cfg.loss_type), loss_weights=list(cfg.loss_weights), max_length=None,
        save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1, logging_steps=1, report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16, dataloader_num_workers=cfg.num_workers,
        use_cpu=not torch.cuda.is_available(),  # (transformers refuses bf16 without it on a CPU-only machine)
        remove_unused_columns=False, disable_tqdm=False, save_only_model=False,
    )
    log = LossLog(out / "loss.csv", ["step", "epoch", "loss", "lr", "rewards/accuracies", "rewards/margins"])

    class CSVLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                log.write(step=state.global_step, epoch=logs.get("epoch"), loss=logs["loss"],
                          lr=logs.get("learning_rate"), **{k: v for k, v in logs.items()  # all to the tracker
                                                            if k not in ("loss", "learning_rate", "epoch", "step")})

    trainer_class = shifted_bco_trainer(DPOTrainer) if cfg.reward_shift else DPOTrainer
    trainer = trainer_class(model=model, ref_model=ref_model, args=args, processing_class=processor,
                         train_dataset=Dataset.from_list(preference_records(pairs)), callbacks=[CSVLog()])
    return trainer, model, processor


def train_mpo(start: Path, out: Path, pairs, cfg: MPOConfig, name: str = "3a") -> Path:
    """Run MPO from the model in `start`; save to `out/model`; resume from `out/trainer/checkpoint-*`."""
    trainer, model, processor = build_trainer(start, out, pairs, cfg)
    resume = any((out / "trainer").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    return finish_stage(trainer.accelerator, trainer.model, processor, out, start, name, out / "trainer")


def train_stage_mpo(stage, settings: dict, start: Path, data_dir: Path, folder: Path) -> Path:
    """Stage 3a of the recipe: the preference pairs of its data kinds (`limit` of each) from data_dir, trained from
    `start` into folder/model."""
    from occmllm.formats import FormatError

    settings = dict(settings)
    limit = settings.pop("limit", None)
    settings.pop("renders", None)
    data = stage_data_dir(stage.kind, data_dir)
    try:
        pairs = [p for kind in stage.data for p in read_pairs(data.require(kind, "train"), limit)]
    except FormatError as error:  # e.g. relabelled clarity with every answer right: nothing to balance
        raise TrainError(f"stage {stage.id}: no preference pairs: {error} (the balanced clarity pairs need photos "
                         "labelled clear and unclear: with relabelled clarity, see the '>> clarity labels' line, e.g. "
                         "a stage-1 model that answered no Q1 right labels every photo unclear)") from None
    if data.is_export:
        print(f">> stage {stage.id} on the export: {len(pairs)} preference pairs "
              f"({data.require('dpo', 'train').annotation.name})", flush=True)
    return train_mpo(start, folder, pairs, settings_as(MPOConfig, settings), stage.id)


def main(argv: list[str] | None = None) -> int:
    return run_one_stage(train_stage_mpo, "mpo", __doc__, argv)


@torch.no_grad()
def sequence_logps(model, processor, image, question: str, answer: str) -> tuple[torch.Tensor, int]:
    """(sum of the answer tokens' log-probabilities, number of answer tokens), encoded by train.data (not by trl):
    the independent side of the MPO loss test."""
    from train.data import encode_sample

    sample = encode_sample(processor, image, [(question, answer)])
    batch = {k: (v[None] if k in ("input_ids", "attention_mask", "labels") else v) for k, v in sample.items()}
    labels = batch.pop("labels")
    logits = model(**batch).logits[0, :-1].float()
    targets = labels[0, 1:]
    mask = targets != -100
    logps = logits.log_softmax(-1)[mask].gather(-1, targets[mask][:, None])[:, 0]
    return logps, int(mask.sum())


if __name__ == "__main__":
    sys.exit(main())
