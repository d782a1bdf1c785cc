"""Train the learned 3D expert on the synthetic dataset (3D supervision from DIR/train/shapes).

    python -m occmllm.recon.train --data data/synth --out runs/recon --minutes 5 --device cuda      # GPU, 5 minutes
    python -m occmllm.recon.train --data data/synth --out runs/recon --steps 3000 --batch-size 32  # CPU, by steps
    python -m occmllm.recon.train --data data/synth --out runs/recon --minutes 8 --device cuda      # resumes runs/recon

The whole split lives on the device as tensors (photos + voxelized ground truth; see occmllm.recon.data) and every
batch is cut there. bf16 autocast on CUDA, AdamW, linear warmup then cosine decay over the budget (--minutes of
training time, or --steps, whichever ends first). Every --eval-every seconds: the grid IoU on the test split (the
predicted occupancy vs the ground truth in the predicted window, both at the frustum cells, the window's depth set to
the true one: a fast proxy of the depth-aligned volumetric IoU that benchmarks/bench_recon.py measures on
meshes), and the same on as many training photos (unaugmented; the gap between the two shows overfitting).

Writes OUT/config.json + OUT/model.safetensors (load with LearnedExpert(OUT)), OUT/checkpoint.pt (model, optimizer,
step, training seconds: a rerun with the same OUT resumes), OUT/loss.csv, OUT/eval.csv and OUT/gt_{split}/ (the
ground-truth cache; the photos are decoded once into OUT/images_{split}.npy, which every process maps, removed at the
end). The recipe's stage 0 (train/expert.py) calls train_expert() with ExpertTrainConfig.from_dict of the preset's
settings.

Several GPUs: the same command under torchrun (DDP; --batch-size per process, each process its own batches and the
whole split on its GPU; rank 0 prepares the ground truth, evaluates, logs and saves; the time budget and the learning
rate follow rank 0's clock, shared every 25 steps):

    torchrun --nproc_per_node 8 -m occmllm.recon.train --data data/synth --out runs/recon --minutes 20 --device cuda
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from occmllm.dataset import kind_folder
from occmllm.recon.data import DeviceDataset, image_cache
from occmllm.recon.experts import SHIPPED
from occmllm.recon.model import OccupancyNet, OccupancyNetConfig, box_targets, expert_loss, widened


@torch.no_grad()
def evaluate_grid_iou(model: OccupancyNet, data: DeviceDataset, batch_size: int = 64, autocast: bool = False,
                      limit: int = 512) -> dict[str, float]:
    """Mean grid IoU on (the first `limit` samples of) a split: occupancy > 0.5 predicted in the predicted window vs
    the ground truth (> 0.5) at the same cells; plus the mean relative error of the predicted window centre and size."""
    model.eval()
    ious, centre_err, size_err = [], [], []
    n = min(len(data), limit)
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size), device=data.device)
        images, truth = data.images[index], data.windows[index]
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=autocast):
            x = model.normalize(images.float() / 255.0)
            pred = model(x)
        window = torch.stack([pred["u0"], pred["v0"], pred["r"], truth[:, 3]], 1).float()
        target = data.targets_at(index, window, data.K[index]) > 0.5
        occupied = pred["occupancy"].float() > 0
        inter = (occupied & target).flatten(1).sum(1).float()
        union = (occupied | target).flatten(1).sum(1).float().clamp_min(1)
        ious.append(inter / union)
        centre_err.append(torch.hypot(window[:, 0] - truth[:, 0], window[:, 1] - truth[:, 1]) / truth[:, 2])
        size_err.append((window[:, 2] / truth[:, 2] - 1).abs())
    model.train()
    return {"grid_iou": float(torch.cat(ious).mean()), "centre_err": float(torch.cat(centre_err).mean()),
            "size_err": float(torch.cat(size_err).mean())}


SYNC_EVERY = 25  # steps between the processes' shared clock (DDP) and between loss-log rows on a GPU


def start_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, this process's device) under torchrun: the process group (NCCL on CUDA, gloo on the CPU)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return rank, world, device


@dataclass
class ExpertTrainConfig:
    """How the 3D expert trains: the keyword names of the recipe's `stages.0` block (train/configs/*.yaml), which
    `from_dict` reads, and of this module's command line."""

    steps: int = 3000  # optimizer steps in total; with `minutes`, whichever ends first
    minutes: float | None = None  # training-time budget (data preparation does not count); the learning rate decays
    batch_size: int = 32  # per process
    lr: float = 2e-3
    seed: int = 0
    negative_fraction: float = 0.1  # share of object-free photos per batch
    augment: bool = True  # window jitter, flips, colour changes
    thin_targets: bool = False  # train the surface cells of thin parts as inside (occmllm.recon.data.thin_as_inside)
    network: OccupancyNetConfig | None = None  # the architecture; None: the default one (or that of `init`)
    init: str | Path | None = None  # start from these trained weights instead of random ones (see train_expert)
    save_every: int = 250  # steps between saves of model + checkpoint
    eval_every: float = 60.0  # seconds of training between grid-IoU evaluations on the test split (0: none)
    eval_limit: int = 512  # samples of the test split (and of the training split) each evaluation reads
    limit: int | None = None  # use only the first `limit` samples of each split
    workers: int | None = None  # processes preparing the ground truth (None: all cores)
    device: str = "cpu"
    threads: int | None = 1  # torch CPU threads (1 keeps a shared machine usable; None: torch's default)
    distributed: bool = False  # one process of a torchrun launch (DDP; see the module's docstring)
    progress: bool = True  # progress bars

    @classmethod
    def from_dict(cls, settings: dict) -> "ExpertTrainConfig":
        """From a preset's settings; `width: W` is the network of that width, the rest of the architecture the
        default. An unknown key raises ValueError naming the known ones."""
        settings = dict(settings)
        width = settings.pop("width", None)
        known = {f.name for f in fields(cls)} - {"network"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for the 3D expert; known: "
                             f"{sorted(known | {'width'})}")
        if width is not None:
            settings["network"] = OccupancyNetConfig(width=int(width), z_per_focal=True)
        return cls(**settings)


def train_expert(data_dir: str | Path, out_dir: str | Path, config: ExpertTrainConfig | None = None,
                 on_log=None) -> Path:
    """Train (or resume) the expert for `config.steps` optimizer steps or `config.minutes` of training time in
    total, whichever comes first; returns out_dir with the saved model.

    config.init: start a new run from these weights (a folder with config.json + model.safetensors, or a shipped
    expert's name) instead of random ones: its architecture is kept, except a larger width in `config.network`, to
    which it is widened first (model.widened: the same function, more channels); the optimizer and schedule start
    afresh. A checkpoint in out_dir wins over it: the run resumes.
    on_log: called as on_log(values, step) with every loss.csv row (loss, bce, soft_iou, box, objectness, lr) and
    every evaluation (test_grid_iou, train_grid_iou, centre_err, size_err, samples_per_s), in the main process (e.g.
    train/run_all.py's tracker).
    """
    cfg = config or ExpertTrainConfig()
    # --- the process: its rank under torchrun, threads, seed ---
    rank, world, device = start_distributed(cfg.device) if cfg.distributed else (0, 1, cfg.device)
    main = rank == 0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # --- where training starts: the checkpoint in out_dir, else `init`'s weights, else random ones ---
    checkpoint = out / "checkpoint.pt"
    state = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint.is_file() else None
    network, initial = starting_network(cfg, state, main)

    # --- the splits on the device: photos and ground truth ---
    data, test = device_splits(data_dir, out, network, cfg, device, main)
    K = data.median_K
    network.fx, network.fy, network.cx, network.cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    # --- model, optimizer and the batches' generator, from the checkpoint when resuming ---
    net = OccupancyNet(network).to(device)  # the module itself: saved, evaluated
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    if initial is not None:
        net.load_state_dict(initial.state_dict())
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed + 7919 * rank)  # each process its own batches; rank 0 as a single process
    step, trained = 0, 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained = state["step"], state.get("seconds", 0.0)
        if main:
            generator.set_state(state["generator"].cpu())
            print(f"resuming from {checkpoint} at step {step} ({trained:.0f} s trained)")
        else:
            generator.manual_seed(cfg.seed + 7919 * rank + step)
    model = net
    if cfg.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[torch.device(device).index] if cuda else None)

    # --- the loop: until the steps or the time budget run out; logs, evaluations and saves along the way ---
    log = ExpertLog(out, main, fresh=step == 0, on_log=on_log)
    clock = trained  # the training time the schedule and the budget follow: shared by the processes under DDP
    budget = cfg.minutes * 60 if cfg.minutes else None
    model.train()
    bar = tqdm(initial=step, total=cfg.steps if budget is None else None, desc="train 3D expert",
               disable=not (cfg.progress and main))
    next_eval = trained + cfg.eval_every
    while step < cfg.steps and (budget is None or clock < budget):
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, clock)
        parts = train_step(model, net, optimizer, data, generator, cfg, cuda)
        step += 1
        if main and (step % SYNC_EVERY == 0 or step == 1 or not cuda):
            values = {k: float(v.detach()) for k, v in parts.items()}  # (a sync: only every 25 steps on GPU)
            log.losses(step, values, optimizer.param_groups[0]["lr"], trained)
            bar.set_postfix(loss=f"{values['loss']:.3f}", iou=f"{1 - values.get('soft_iou', 1):.3f}",
                            s=f"{trained:.0f}")
        if cuda and step % SYNC_EVERY == 0:
            torch.cuda.synchronize()
        trained += time.perf_counter() - tick
        if not cfg.distributed:
            clock = trained
        elif step % SYNC_EVERY == 0:  # every process takes rank 0's clock: the same learning rates, the same last step
            shared = torch.tensor([trained if main else 0.0], dtype=torch.float64, device=device)
            torch.distributed.broadcast(shared, 0)
            clock = trained = float(shared)
        bar.update(1)
        if trained >= next_eval:
            log.evaluation(net, data, test, step, trained, cfg, world, cuda)
            next_eval = trained + cfg.eval_every
        if step % cfg.save_every == 0:
            log.flush()
            if main:
                save_checkpoint(out, net, optimizer, generator, network, step, clock)
    bar.close()

    # --- the end: the last save and evaluation, the decoding cache removed, the DDP copies checked equal ---
    if main:
        save_checkpoint(out, net, optimizer, generator, network, step, clock)
    log.evaluation(net, data, test, step, trained, cfg, world, cuda)
    log.close()
    if main:  # the decoded photos (196 KB a photo) are only a loading cache: a resumed run decodes them again
        for split in ("train", "test"):
            for path in image_cache(out, split):
                path.unlink(missing_ok=True)
    if cfg.distributed:
        check_processes_agree(net, world)
    return out


def starting_network(cfg: ExpertTrainConfig, state: dict | None,
                     main: bool) -> tuple[OccupancyNetConfig, OccupancyNet | None]:
    """(the architecture, the weights to start from or None): a resumed run keeps its checkpoint's architecture;
    `cfg.init` gives its own, widened first to a larger `cfg.network.width`; else `cfg.network` or the default."""
    network = cfg.network or OccupancyNetConfig(z_per_focal=True)
    if state is not None:
        return (OccupancyNetConfig.from_dict(state["config"]) if "config" in state else network), None
    if cfg.init is None:
        return network, None
    from occmllm.recon.experts import weights_folder

    init = weights_folder(cfg.init)
    if not (init / "config.json").is_file():
        raise FileNotFoundError(f"{init}: no config.json (--init wants a trained expert folder)")
    initial = OccupancyNet.from_pretrained(init)
    if cfg.network is not None and cfg.network.width != initial.config.width:
        if main:
            print(f"widening the expert in {init} from width {initial.config.width} to {cfg.network.width} (the same "
                  f"function to start with)")
        initial = widened(initial, cfg.network.width, cfg.seed)
    print(f"starting from the weights in {init}")
    return initial.config, initial


def device_splits(data_dir: str | Path, out: Path, network: OccupancyNetConfig, cfg: ExpertTrainConfig, device: str,
                  main: bool) -> tuple[DeviceDataset, DeviceDataset | None]:
    """(the training split, the test split the main process evaluates on or None) as tensors on the device; under
    torchrun rank 0 prepares the ground-truth cache in OUT first, and the other processes then read it."""
    if cfg.distributed and not main:
        torch.distributed.barrier()
    data = DeviceDataset(data_dir, "train", network, out, device, cfg.limit, cfg.workers, cfg.progress and main,
                         cfg.thin_targets)
    test = None
    if main and kind_folder(data_dir, "test", "shapes").is_dir() and cfg.eval_every > 0:
        test = DeviceDataset(data_dir, "test", network, out, device, min(cfg.limit or cfg.eval_limit, cfg.eval_limit),
                             cfg.workers, cfg.progress, cfg.thin_targets)
    if cfg.distributed and main:
        torch.distributed.barrier()
    return data, test


def learning_rate(cfg: ExpertTrainConfig, step: int, seconds: float) -> float:
    """Linear warmup, then cosine decay to 2% of `cfg.lr` over the run: its steps, or its minutes when those end
    first."""
    warmup = min(200, max(1, cfg.steps // 20))
    done = step / cfg.steps
    if cfg.minutes:
        done = max(done, seconds / (cfg.minutes * 60))
    p = min(1.0, done)
    return cfg.lr * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def train_step(model, net: OccupancyNet, optimizer, data: DeviceDataset, generator, cfg: ExpertTrainConfig,
               cuda: bool) -> dict[str, torch.Tensor]:
    """One optimizer step on a random batch cut on the device (bf16 autocast on CUDA); returns the loss parts."""
    index = torch.randint(0, len(data), (cfg.batch_size,), generator=generator, device=data.device)
    batch = data.batch(index, generator, augment=cfg.augment, negative_fraction=cfg.negative_fraction)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        x = net.normalize(batch["images"].float() / 255.0)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        pred = model(x, box={k: batch[k] for k in ("u0", "v0", "r")})
    pred = {k: v.float() for k, v in pred.items()}
    target_box = box_targets(*batch["box"].unbind(1), net.config.image_size)
    parts = expert_loss(pred, batch["occupancy"], target_box, batch["has_object"])
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return parts


class ExpertLog:
    """OUT/loss.csv and OUT/eval.csv (written by the main process only; appended to when a run resumes), each row
    also handed to `on_log`."""

    def __init__(self, out: Path, main: bool, fresh: bool, on_log=None):
        loss_path, eval_path = out / "loss.csv", out / "eval.csv"
        new = not loss_path.is_file() or fresh
        self.loss_file = open(loss_path if main else os.devnull, "w" if new else "a", newline="")
        self.eval_file = open(eval_path if main else os.devnull, "w" if new or not eval_path.is_file() else "a",
                              newline="")
        self.loss_csv, self.eval_csv, self.on_log = csv.writer(self.loss_file), csv.writer(self.eval_file), on_log
        if new:
            self.loss_csv.writerow(["step", "loss", "bce", "soft_iou", "box", "objectness", "lr", "seconds"])
            self.eval_csv.writerow(["step", "seconds", "grid_iou", "centre_err", "size_err", "samples_per_s",
                                    "train_grid_iou"])

    def losses(self, step: int, values: dict[str, float], lr: float, trained: float) -> None:
        self.loss_csv.writerow([step, *(f"{values.get(k, float('nan')):.5f}" for k in
                                        ("loss", "bce", "soft_iou", "box", "objectness")),
                               f"{lr:.6f}", f"{trained:.1f}"])
        if self.on_log is not None:
            self.on_log({**values, "lr": lr}, step)

    def evaluation(self, net: OccupancyNet, data: DeviceDataset, test: DeviceDataset | None, step: int,
                   trained: float, cfg: ExpertTrainConfig, world: int, cuda: bool) -> None:
        """The grid IoU on the test split and on as many training photos (none without a test split)."""
        if test is None:
            return
        if cuda:
            torch.cuda.synchronize()
        scores = evaluate_grid_iou(net, test, 128 if cuda else 16, cuda, cfg.eval_limit)
        seen = evaluate_grid_iou(net, data, 128 if cuda else 16, cuda, cfg.eval_limit)["grid_iou"]  # training photos
        speed = step * cfg.batch_size * world / max(trained, 1e-9)
        self.eval_csv.writerow([step, f"{trained:.1f}", f"{scores['grid_iou']:.4f}", f"{scores['centre_err']:.4f}",
                                f"{scores['size_err']:.4f}", f"{speed:.0f}", f"{seen:.4f}"])
        self.eval_file.flush()
        if self.on_log is not None:
            self.on_log({"test_grid_iou": scores["grid_iou"], "train_grid_iou": seen,
                         "centre_err": scores["centre_err"], "size_err": scores["size_err"], "samples_per_s": speed},
                        step)
        tqdm.write(f"step {step} ({trained:.0f} s): test grid IoU {scores['grid_iou']:.3f} (training photos "
                   f"{seen:.3f}), window centre error {scores['centre_err']:.3f} r, size error {scores['size_err']:.3f}")

    def flush(self) -> None:
        self.loss_file.flush()

    def close(self) -> None:
        self.loss_file.close()
        self.eval_file.close()


def save_checkpoint(out: Path, net: OccupancyNet, optimizer, generator, network: OccupancyNetConfig, step: int,
                    clock: float) -> None:
    """The model (OUT/config.json + model.safetensors) and OUT/checkpoint.pt, which a rerun resumes from."""
    net.save_pretrained(out)
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "seconds": clock,
                "generator": generator.get_state(), "config": vars(network).copy()}, out / "checkpoint.pt")


def check_processes_agree(net: OccupancyNet, world: int) -> None:
    """DDP keeps the processes' copies equal; check it once rather than trust it."""
    flat = torch.cat([p.detach().double().flatten() for p in net.parameters()])
    mine = torch.stack([flat.sum(), flat.square().sum()])
    every = [torch.zeros_like(mine) for _ in range(world)]
    torch.distributed.all_gather(every, mine)
    if not all(torch.allclose(other, every[0], rtol=1e-9, atol=0.0) for other in every):
        raise RuntimeError(f"the {world} processes ended with different weights: {[t.tolist() for t in every]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the learned 3D expert (occupancy from one photo) on the "
                                     "synthetic dataset made by `python -m data_tools.synth`. A rerun with the same "
                                     "--out resumes.")
    parser.add_argument("--data", required=True, help="dataset folder holding train/images and train/shapes")
    parser.add_argument("--out", required=True, help="output folder: model, checkpoint.pt (resumes), loss.csv")
    parser.add_argument("--steps", type=int, default=None,
                        help="total optimizer steps (default: 3000, or unlimited with --minutes)")
    parser.add_argument("--minutes", type=float, default=None, help="training-time budget in minutes (the LR decays "
                        "over it; data preparation does not count)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--workers", type=int, default=None, help="processes for the ground-truth preparation "
                        "(default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples of each split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=None, help="network width (default 24: ~3 M parameters, ~12 MB; "
                        "the shipped expert: 32, 18.6 MB); with --init, a larger width than its widens it")
    parser.add_argument("--save-every", type=int, default=500, help="steps between saves of model + checkpoint")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between test grid-IoU "
                        "evaluations (0: none)")
    parser.add_argument("--negatives", type=float, default=0.1, help="share of object-free photos per batch")
    parser.add_argument("--no-augment", action="store_true", help="no window jitter, flips or colour changes "
                        "(to check that the network can overfit a few samples)")
    parser.add_argument("--tiny", action="store_true", help="a small network (32^3 cells, 64 px crop, width 16) "
                        "for quick CPU checks")
    parser.add_argument("--head", default="depth", choices=["depth", "intervals"], help="depth: a logit per depth "
                        "cell of each ray; intervals: two (start, length, presence) depth intervals per ray")
    parser.add_argument("--init", default=None, help="start from this trained expert's weights (a "
                        f"folder, or a shipped expert's name: {', '.join(SHIPPED)}) instead of random ones; ignored when --out has a "
                        "checkpoint to resume")
    parser.add_argument("--thin-targets", action="store_true", help="train the surface cells of thin parts (blades, "
                        "walls) as inside instead of 1/2, so that they survive the 0.5 threshold")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (evaluations are still printed)")
    args = parser.parse_args(argv)
    network = OccupancyNetConfig(width=args.width or 24, head=args.head, z_per_focal=True)
    if args.tiny:
        network = OccupancyNetConfig(n_xy=32, n_depth=32, crop=64, box_input=64, width=args.width or 16, head=args.head,
                                    z_per_focal=True)
    if args.init and args.width is None:
        network = None  # --init keeps its architecture
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # under torchrun
    out = train_expert(args.data, args.out, ExpertTrainConfig(
        steps=args.steps or (10 ** 9 if args.minutes else 3000), minutes=args.minutes, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, negative_fraction=args.negatives, augment=not args.no_augment,
        thin_targets=args.thin_targets, network=network, init=args.init, save_every=args.save_every,
        eval_every=args.eval_every, limit=args.limit, workers=args.workers, device=args.device,
        threads=args.threads or None, distributed=distributed, progress=not args.quiet))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved the 3D expert to {out} (load with occmllm.recon.LearnedExpert('{out}'))")
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # every process here before any tears the group down (a gloo peer leaving while another
        dist.destroy_process_group()  # still saves ended that one with "terminate called" under a loaded CPU)


if __name__ == "__main__":
    main()
