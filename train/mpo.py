"""Stage 3a: MPO (Mixed Preference Optimization) on the clarity preference pairs, with trl's DPOTrainer.

    python train/run_all.py --preset smoke --stages 3a       # in the recipe
    python -m train.mpo --preset smoke --data DIR --model START --out OUT [mpo.beta=0.2 ...]   # alone
Loss = 0.8 x DPO (sigmoid) + 0.2 x BCO-pair + 1.0 x SFT on the chosen answer, beta 0.1, against a frozen copy of the
starting model (with --lora: the starting model itself with the adapter switched off, which is the same thing).
trl is imported here only, so the other stages run without it. Resumes from the trainer's last checkpoint.
Every trl log (loss, learning rate, rewards/chosen, rewards/margins, rewards/accuracies, logps...) goes to loss.csv and
the run's tracker (train/tracking.py) through LossLog, not through trl's `report_to`: one tracker run per stage with
the other stages' names, and no Hub Space or sync that transformers' trackio callback may set up.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.common import (LossLog, StageConfig, TrainError, add_lora, finish_stage, load_policy, seed_everything,
                          set_trainable)
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

    seed_everything(cfg.seed)
    model, processor = load_policy(start)
    set_trainable(model, cfg.parts)
    if cfg.lora:
        model, ref_model = add_lora(model, cfg.parts, cfg.lora_rank, cfg.lora_alpha), None
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    args = DPOConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
        beta=cfg.beta, loss_type=list(cfg.loss_type), loss_weights=list(cfg.loss_weights), max_length=None,
        save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1, logging_steps=1, report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16, dataloader_num_workers=cfg.num_workers,
        remove_unused_columns=False, disable_tqdm=False, save_only_model=False,
    )
    log = LossLog(out / "loss.csv", ["step", "epoch", "loss", "lr", "rewards/accuracies", "rewards/margins"])

    class CSVLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                log.write(step=state.global_step, epoch=logs.get("epoch"), loss=logs["loss"],
                          lr=logs.get("learning_rate"), **{k: v for k, v in logs.items()  # all to the tracker
                                                            if k not in ("loss", "learning_rate", "epoch", "step")})

    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, processing_class=processor,
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
        raise TrainError(f"stage {stage.id}: no preference pairs: {error}") from None
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
