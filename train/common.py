"""What every training stage shares: loading the policy, choosing which parts train, LoRA, saving, seeding, logging.

The parts of an InternVL-style model (names as in transformers' `InternVLForConditionalGeneration`, LLaVA and
Qwen2-VL use the same split):
    vision     model.vision_tower / model.visual
    projector  model.multi_modal_projector / model.visual.merger
    lm         model.language_model + lm_head (tied input embeddings included)
A stage lists the parts it trains; every other parameter is frozen (`requires_grad=False`).
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

PARTS = ("vision", "projector", "lm")
_PART_PREFIXES = {
    "vision": ("model.vision_tower.", "model.visual.blocks.", "model.visual.patch_embed.", "vision_tower.",
               "model.vision_model."),
    "projector": ("model.multi_modal_projector.", "model.visual.merger.", "multi_modal_projector.", "model.connector."),
    "lm": ("model.language_model.", "lm_head.", "language_model.", "model.text_model."),
}
LORA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # language model
               "projection_layer", "fc1", "fc2", "qkv", "proj",  # vision encoder
               "linear_1", "linear_2")  # projector


class TrainError(RuntimeError):
    """Bad input found before training: the message says `file:line: what is wrong`."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def part_of(name: str) -> str | None:
    """Which part ('vision', 'projector', 'lm') a parameter name belongs to (peft's `base_model.model.` stripped)."""
    name = name.removeprefix("base_model.model.")
    for part, prefixes in _PART_PREFIXES.items():
        if name.startswith(prefixes):
            return part
    return None


def set_trainable(model: torch.nn.Module, parts: list[str]) -> dict[str, list[str]]:
    """Train exactly the parameters of `parts`; freeze the rest. Returns {"trained": names, "frozen": names}."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown model part(s) {sorted(unknown)}; expected some of {PARTS}")
    trained, frozen = [], []
    for name, param in model.named_parameters():
        on = part_of(name) in parts
        param.requires_grad_(on)
        (trained if on else frozen).append(name)
    if not trained:
        raise ValueError(f"no parameter belongs to {parts}: is this a vision-language model?")
    return {"trained": trained, "frozen": frozen}


def add_lora(model: torch.nn.Module, parts: list[str], rank: int = 16, alpha: int = 32, dropout: float = 0.0):
    """Wrap `model` with LoRA adapters on the linear layers of `parts` (everything else frozen)."""
    from peft import LoraConfig, get_peft_model

    targets = [name for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and part_of(name + ".") in parts
               and name.rsplit(".", 1)[-1] in LORA_LEAVES]
    if not targets:
        raise ValueError(f"no linear layer to adapt in {parts}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, config)


def use_fsdp(version: int = 2) -> None:
    """Shard the trained models with FSDP (accelerate's, FSDP2 by default) in every stage this process runs: what
    `accelerate launch --use_fsdp --fsdp_version 2` sets, for `torchrun` and for `run_all.py --fsdp`. Each decoder
    layer is one shard unit (the model's `_no_split_modules`); checkpoints are sharded, the saved model is whole."""
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    os.environ["FSDP_VERSION"] = str(version)
    os.environ.setdefault("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    os.environ.setdefault("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def make_accelerator(bf16: bool):
    """accelerate's Accelerator for one stage. The stages of one run_all process differ in mixed precision (bf16 SFT,
    fp32 MPO/SCoRe, trl's own Accelerator in MPO), and accelerate refuses a second setting unless its state is reset;
    the distributed part (PartialState: the process group) is kept. `cpu=True` where CUDA is missing: otherwise
    accelerate ignores torchrun's WORLD_SIZE there (one process each)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    _undo_fsdp_mark()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")


def _undo_fsdp_mark() -> None:
    """An FSDP AcceleratorState writes `distributed_type = FSDP` into the kept PartialState; the next stage's
    AcceleratorState then skips setting up its FSDP plugin (accelerate only does that for a MULTI_GPU process group)
    and fails ('no attribute is_fsdp2'). Put back what the process group is."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    shared = PartialState._shared_state
    if shared.get("distributed_type") == DistributedType.FSDP and torch.cuda.is_available():
        shared["distributed_type"] = DistributedType.MULTI_GPU


def load_policy(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(model in train mode, processor) from a model folder, through occmllm.vlm's loader (same checks, same
    processor without torchvision)."""
    from occmllm.vlm import VLM, ModelLoadError

    try:
        vlm = VLM.load(folder, device=str(device), dtype=dtype)
    except ModelLoadError as error:
        raise TrainError(str(error)) from None
    model = vlm.model.train()
    model.config.use_cache = False
    return model, vlm.processor


def check_model_folder(folder: str | Path) -> None:
    """Raise TrainError when `folder` is not a loadable vision-language model folder (before any training)."""
    from occmllm.vlm import ModelLoadError, check_model_folder as check

    try:
        check(Path(folder))
    except ModelLoadError as error:
        raise TrainError(str(error)) from None



@dataclass
class StageConfig:
    """The settings every training stage shares; `SFTConfig`, `MPOConfig` and `SCoReConfig` add their own."""

    parts: list[str] = field(default_factory=lambda: ["projector", "lm"])  # vision | projector | lm
    lr: float = 4e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    batch_size: int = 8  # per device
    save_every: int = 50  # optimizer steps between checkpoints
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0
    bf16: bool = False
    max_steps: int | None = None  # stop early (tests)
    global_batch: int | None = None  # samples per optimizer step over all processes: sets grad_accum (accumulation)


def accumulation(cfg: StageConfig, world: int) -> int:
    """The gradient accumulation of a stage on `world` processes: `cfg.grad_accum` (1 where the stage has none), or
    with `cfg.global_batch` the one that makes global_batch = batch_size x world x accumulation, so that an optimizer
    step sees the same number of samples on 1, 2 or 8 GPUs."""
    if not cfg.global_batch:
        return getattr(cfg, "grad_accum", 1)
    per_pass = cfg.batch_size * world
    if cfg.global_batch % per_pass:
        raise TrainError(f"global_batch {cfg.global_batch} is not a multiple of batch_size {cfg.batch_size} x "
                         f"{world} process(es) = {per_pass}: change batch_size or global_batch")
    return cfg.global_batch // per_pass


def start_process_group(timeout_minutes: float | None) -> None:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1), set up the process group now with a `timeout_minutes`
    timeout (NCCL's default is 10 minutes: a rank waiting longer at a barrier or collective kills the run); every
    later Accelerator keeps it. Nothing on one process or without a timeout."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not timeout_minutes:
        return
    from datetime import timedelta

    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=float(timeout_minutes)))


def wait_for_all_ranks() -> None:
    """A barrier of every process of a multi-process run (nothing on one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()

def save_model(model: torch.nn.Module, processor, folder: Path, source: Path | None = None,
               state_dict: dict | None = None, **info) -> Path:
    """Save a plain (LoRA merged) model + processor to `folder`, atomically (written beside, then renamed).
    `state_dict`: the full weights gathered from a sharded (FSDP) model (`accelerator.get_state_dict`).
    A default-model marker in `source` is copied and set to trained."""
    from occmllm.default_model import mark_trained, read_marker

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.config.use_cache = True
    if state_dict is not None:  # without the second names of tied weights (lm_head = embeddings), as usual
        unique = {name for name, _ in model.named_parameters()}
        tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - unique
        model.save_pretrained(tmp, state_dict={k: v for k, v in state_dict.items() if k not in tied})
    else:
        model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if source is not None and read_marker(source) is not None:
        mark_trained(tmp, source, **info)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


class LossLog:
    """Appends rows to a CSV file (header on first write); survives restarts by appending. Every row also goes to the
    run's tracker (train/tracking.py: trackio, TensorBoard or none) as train/NAME at its `step`, with the numbers that
    are not CSV columns too (e.g. all of trl's logs)."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **row) -> None:
        from train import tracking

        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        tracking.log({k: v for k, v in row.items() if k != "step"}, row.get("step"))



def finish_stage(accelerator, model: torch.nn.Module, processor, out: Path, start: str | Path, name: str,
                 checkpoint: Path) -> Path:
    """Save a stage's trained model to OUT/model (main process) and drop its resume checkpoint; all ranks wait.
    Under FSDP every rank takes part in gathering the full weights first."""
    accelerator.wait_for_everyone()
    folder = out / "model"
    state_dict = accelerator.get_state_dict(model) if is_fsdp(accelerator) else None
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), processor, folder, source=Path(start), stage=name,
                   state_dict=state_dict)
        shutil.rmtree(checkpoint, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder

def cosine_with_warmup(optimizer, total_steps: int, warmup_ratio: float, horizon: dict | None = None):
    """The seed's schedule: linear warmup over `warmup_ratio` of the steps, then cosine to 0. With `horizon` (a dict),
    `horizon["total"]` may be changed later (a time budget shortens the run) and the schedule follows it."""
    horizon = horizon if horizon is not None else {}
    horizon.setdefault("total", total_steps)

    def factor(step: int) -> float:
        total = horizon["total"]
        warmup = max(1, int(round(total * warmup_ratio))) if warmup_ratio > 0 else 0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return float(0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
