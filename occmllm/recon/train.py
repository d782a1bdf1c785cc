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
end). train/run_all.py's stage 0 calls train_expert().

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
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from occmllm.recon.data import DeviceDataset, image_cache
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


def train_expert(data_dir: str | Path, out_dir: str | Path, steps: int = 3000, batch_size: int = 32, lr: float = 2e-3,
                 device: str = "cpu", threads: int | None = 1, limit: int | None = None, seed: int = 0,
                 negative_fraction: float = 0.1, save_every: int = 250, config: OccupancyNetConfig | None = None,
                 progress: bool = True, minutes: float | None = None, workers: int | None = None,
                 eval_every: float = 60.0, eval_limit: int = 512, augment: bool = True,
                 init: str | Path | None = None, distributed: bool = False, thin_targets: bool = False,
                 on_log=None) -> Path:
    """Train (or resume) the expert for `steps` optimizer steps or `minutes` of training time in total, whichever
    comes first; returns out_dir with the saved model.

    threads: torch CPU threads (1 keeps a shared machine usable; None leaves torch's default).
    limit: use only the first `limit` samples of each split. workers: processes preparing the ground truth.
    eval_every: seconds of training between grid-IoU evaluations on the test split (when it exists).
    init: start a new run from these weights (a folder with config.json + model.safetensors, e.g. the shipped
    expert) instead of random ones: its architecture is kept, except a larger width in `config`, to which it is
    widened first (model.widened: the same function, more channels); the optimizer and schedule start afresh.
    distributed: one process of a torchrun launch (DDP; see the module's docstring).
    thin_targets: the surface cells of parts thinner than about two cells are trained as inside (blades, walls; see
    occmllm.recon.data.thin_as_inside) instead of 1/2. The test grid IoU is scored against the same targets.
    on_log: called as on_log(values, step) with every loss.csv row (loss, bce, soft_iou, box, objectness, lr) and
    every evaluation (test_grid_iou, train_grid_iou, centre_err, size_err, samples_per_s), in the main process (e.g.
    train/run_all.py's tracker).
    """
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        rank, world, device = start_distributed(device)
    main = rank == 0
    progress = progress and main
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    requested = config
    config = config or OccupancyNetConfig(z_per_focal=True)
    checkpoint = out / "checkpoint.pt"
    state = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint.is_file() else None
    if state is not None and "config" in state:
        config = OccupancyNetConfig.from_dict(state["config"])  # a resumed run keeps its architecture
    initial = None
    if state is None and init is not None:
        from occmllm.recon.experts import weights_folder

        init = weights_folder(init)
        if not (init / "config.json").is_file():
            raise FileNotFoundError(f"{init}: no config.json (--init wants a trained expert folder)")
        initial = OccupancyNet.from_pretrained(init)
        if requested is not None and requested.width != initial.config.width:
            if main:
                print(f"widening the expert in {init} from width {initial.config.width} to {requested.width} (the same "
                      f"function to start with)")
            initial = widened(initial, requested.width, seed)
        config = initial.config
    if distributed and not main:
        dist.barrier()  # rank 0 prepares the ground-truth cache first
    data = DeviceDataset(data_dir, "train", config, out, device, limit, workers, progress, thin_targets)
    test = None
    if main and (Path(data_dir) / "test" / "shapes").is_dir() and eval_every > 0:
        test = DeviceDataset(data_dir, "test", config, out, device, min(limit or eval_limit, eval_limit), workers,
                             progress, thin_targets)
    if distributed and main:
        dist.barrier()
    K = data.median_K
    config.fx, config.fy, config.cx, config.cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    model = OccupancyNet(config).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    if initial is not None:
        model.load_state_dict(initial.state_dict())
        print(f"starting from the weights in {init}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + 7919 * rank)  # each process its own batches; rank 0 as a single process
    step, trained = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained = state["step"], state.get("seconds", 0.0)
        if main:
            generator.set_state(state["generator"].cpu())
        else:
            generator.manual_seed(seed + 7919 * rank + step)
        if main:
            print(f"resuming from {checkpoint} at step {step} ({trained:.0f} s trained)")
    net = model  # the module itself: saved, evaluated
    if distributed:
        model = DistributedDataParallel(model, device_ids=[torch.device(device).index] if cuda else None)
    clock = trained  # the training time the schedule and the budget follow: shared by the processes under DDP
    budget = minutes * 60 if minutes else None
    warmup = min(200, max(1, steps // 20))

    def progress_of(step: int, seconds: float) -> float:
        done = step / steps
        return max(done, seconds / budget) if budget else done

    def lr_at(step: int, seconds: float) -> float:
        p = min(1.0, progress_of(step, seconds))
        return lr * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))

    log_path, eval_path = out / "loss.csv", out / "eval.csv"
    new_log = not log_path.is_file() or step == 0
    log_file = open(log_path if main else os.devnull, "w" if new_log else "a", newline="")
    eval_file = open(eval_path if main else os.devnull, "w" if new_log or not eval_path.is_file() else "a", newline="")
    log, eval_log = csv.writer(log_file), csv.writer(eval_file)
    if new_log:
        log.writerow(["step", "loss", "bce", "soft_iou", "box", "objectness", "lr", "seconds"])
        eval_log.writerow(["step", "seconds", "grid_iou", "centre_err", "size_err", "samples_per_s", "train_grid_iou"])

    def save():
        if not main:
            return
        net.save_pretrained(out)
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "seconds": clock, "generator": generator.get_state(), "config": vars(config).copy()},
                   checkpoint)

    def run_eval():
        if test is None:
            return
        if cuda:
            torch.cuda.synchronize()
        scores = evaluate_grid_iou(net, test, 128 if cuda else 16, cuda, eval_limit)
        seen = evaluate_grid_iou(net, data, 128 if cuda else 16, cuda, eval_limit)["grid_iou"]  # photos it trains on
        eval_log.writerow([step, f"{trained:.1f}", f"{scores['grid_iou']:.4f}", f"{scores['centre_err']:.4f}",
                           f"{scores['size_err']:.4f}", f"{step * batch_size * world / max(trained, 1e-9):.0f}",
                           f"{seen:.4f}"])
        eval_file.flush()
        if on_log is not None:
            on_log({"test_grid_iou": scores["grid_iou"], "train_grid_iou": seen, "centre_err": scores["centre_err"],
                    "size_err": scores["size_err"], "samples_per_s": step * batch_size * world / max(trained, 1e-9)},
                   step)
        tqdm.write(f"step {step} ({trained:.0f} s): test grid IoU {scores['grid_iou']:.3f} (training photos "
                   f"{seen:.3f}), window centre error {scores['centre_err']:.3f} r, size error {scores['size_err']:.3f}")

    model.train()
    total = steps if budget is None else None
    bar = tqdm(initial=step, total=total, desc="train 3D expert", disable=not progress)
    next_eval = trained + eval_every
    values = {}
    while step < steps and (budget is None or clock < budget):
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, clock)
        index = torch.randint(0, len(data), (batch_size,), generator=generator, device=device)
        batch = data.batch(index, generator, augment=augment, negative_fraction=negative_fraction)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            x = net.normalize(batch["images"].float() / 255.0)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            pred = model(x, box={k: batch[k] for k in ("u0", "v0", "r")})
        pred = {k: v.float() for k, v in pred.items()}
        target_box = box_targets(*batch["box"].unbind(1), config.image_size)
        parts = expert_loss(pred, batch["occupancy"], target_box, batch["has_object"])
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if main and (step % SYNC_EVERY == 0 or step == 1 or not cuda):
            values = {k: float(v.detach()) for k, v in parts.items()}  # (a sync: only every 25 steps on GPU)
            log.writerow([step, *(f"{values.get(k, float('nan')):.5f}" for k in
                                  ("loss", "bce", "soft_iou", "box", "objectness")),
                          f"{optimizer.param_groups[0]['lr']:.6f}", f"{trained:.1f}"])
            if on_log is not None:
                on_log({**values, "lr": optimizer.param_groups[0]["lr"]}, step)
            bar.set_postfix(loss=f"{values['loss']:.3f}", iou=f"{1 - values.get('soft_iou', 1):.3f}",
                            s=f"{trained:.0f}")
        if cuda and step % SYNC_EVERY == 0:
            torch.cuda.synchronize()
        trained += time.perf_counter() - tick
        if not distributed:
            clock = trained
        elif step % SYNC_EVERY == 0:  # every process takes rank 0's clock: the same learning rates, the same last step
            shared = torch.tensor([trained if main else 0.0], dtype=torch.float64, device=device)
            dist.broadcast(shared, 0)
            clock = trained = float(shared)
        bar.update(1)
        if trained >= next_eval:
            run_eval()
            next_eval = trained + eval_every
        if step % save_every == 0:
            log_file.flush()
            save()
    bar.close()
    save()
    run_eval()
    log_file.close()
    eval_file.close()
    if main:  # the decoded photos (196 KB a photo) are only a loading cache: a resumed run decodes them again
        for split in ("train", "test"):
            for path in image_cache(out, split):
                path.unlink(missing_ok=True)
    if distributed:  # DDP keeps the copies equal; check it once rather than trust it
        flat = torch.cat([p.detach().double().flatten() for p in net.parameters()])
        mine = torch.stack([flat.sum(), flat.square().sum()])
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        if not all(torch.allclose(other, every[0], rtol=1e-9, atol=0.0) for other in every):
            raise RuntimeError(f"the {world} processes ended with different weights: {[t.tolist() for t in every]}")
    return out


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
                        "folder, or a shipped expert's name: v4, v5) instead of random ones; ignored when --out has a "
                        "checkpoint to resume")
    parser.add_argument("--thin-targets", action="store_true", help="train the surface cells of thin parts (blades, "
                        "walls) as inside instead of 1/2, so that they survive the 0.5 threshold")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (evaluations are still printed)")
    args = parser.parse_args(argv)
    config = OccupancyNetConfig(width=args.width or 24, head=args.head, z_per_focal=True)
    if args.tiny:
        config = OccupancyNetConfig(n_xy=32, n_depth=32, crop=64, box_input=64, width=args.width or 16, head=args.head,
                                    z_per_focal=True)
    if args.init and args.width is None:
        config = None  # --init keeps its architecture
    steps = args.steps or (10 ** 9 if args.minutes else 3000)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # under torchrun
    out = train_expert(args.data, args.out, steps, args.batch_size, args.lr, args.device, args.threads or None,
                       args.limit, args.seed, args.negatives, args.save_every, config, progress=not args.quiet,
                       minutes=args.minutes, workers=args.workers, eval_every=args.eval_every,
                       augment=not args.no_augment, init=args.init, distributed=distributed,
                       thin_targets=args.thin_targets)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved the 3D expert to {out} (load with occmllm.recon.LearnedExpert('{out}'))")
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
