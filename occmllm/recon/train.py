"""Train the learned 3D expert on the synthetic dataset (3D supervision from DIR/train/shapes).

    python -m occmllm.recon.train --data data/synth --out runs/recon --steps 3000 --batch-size 32
    python -m occmllm.recon.train --data data/synth --out runs/recon --steps 6000   # resumes from runs/recon
    python -m occmllm.recon.train --data data/synth --out runs/recon --steps 20000 --batch-size 64 --device cuda --threads 0

Writes OUT/config.json + OUT/model.safetensors (load with LearnedExpert(OUT)), OUT/checkpoint.pt (model, optimizer,
step: a rerun with the same OUT resumes), OUT/loss.csv (one row per logged step) and OUT/cache_{split}.npz (the
voxelized ground truth). train/run_all.py's stage 0 calls train_expert().
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from occmllm.recon.data import ReconTrainingSet
from occmllm.recon.model import OccupancyNet, OccupancyNetConfig, box_targets, expert_loss


def train_expert(data_dir: str | Path, out_dir: str | Path, steps: int = 3000, batch_size: int = 32, lr: float = 2e-3,
                 device: str = "cpu", threads: int | None = 1, limit: int | None = None, seed: int = 0,
                 negative_fraction: float = 0.1, save_every: int = 250, config: OccupancyNetConfig | None = None,
                 progress: bool = True) -> Path:
    """Train (or resume) the expert for `steps` optimizer steps in total; returns out_dir with the saved model.

    threads: torch CPU threads (1 keeps a shared machine usable; None leaves torch's default).
    limit: use only the first `limit` training samples. The dataset's K sets the model's default intrinsics.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = config or OccupancyNetConfig()
    data = ReconTrainingSet(data_dir, "train", config, cache_dir=out, limit=limit)
    K = np.median(data.K, axis=0)
    config.fx, config.fy, config.cx, config.cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    model = OccupancyNet(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    step, rng = 0, np.random.default_rng(seed)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, rng = state["step"], state["rng"]
        print(f"resuming from {checkpoint} at step {step}")
    warmup = min(100, max(1, steps // 10))
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    log_path = out / "loss.csv"
    new_log = not log_path.is_file() or step == 0
    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "loss", "bce", "soft_iou", "box", "objectness", "lr", "seconds"])
        model.train()
        bar = tqdm(range(step, steps), initial=step, total=steps, desc="train 3D expert", disable=not progress)
        start = time.time()
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule(step)
            batch = data.batch(rng.integers(0, len(data), batch_size), rng, augment=True,
                               negative_fraction=negative_fraction)
            batch = {k: v.to(device) for k, v in batch.items()}
            x = model.normalize(batch["images"])
            pred = model(x, box={k: batch[k] for k in ("u0", "v0", "r")})
            target_box = box_targets(*batch["box"].unbind(1), config.image_size)
            parts = expert_loss(pred, batch["occupancy"], target_box, batch["has_object"])
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            values = {k: float(v.detach()) for k, v in parts.items()}
            log.writerow([step + 1, *(f"{values.get(k, float('nan')):.5f}" for k in
                                      ("loss", "bce", "soft_iou", "box", "objectness")),
                          f"{optimizer.param_groups[0]['lr']:.6f}", f"{time.time() - start:.1f}"])
            bar.set_postfix(loss=f"{values['loss']:.3f}", iou=f"{1 - values.get('soft_iou', 1):.3f}")
            if (step + 1) % save_every == 0 or step + 1 == steps:
                log_file.flush()
                model.save_pretrained(out)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                            "rng": rng}, checkpoint)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the learned 3D expert (occupancy from one photo) on the "
                                     "synthetic dataset made by `python -m data_tools.synth`.")
    parser.add_argument("--data", required=True, help="dataset folder holding train/images and train/shapes")
    parser.add_argument("--out", required=True, help="output folder: model, checkpoint.pt (resumes), loss.csv")
    parser.add_argument("--steps", type=int, default=3000, help="total optimizer steps (a resumed run continues)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=24, help="network width (24: ~1.2 M parameters, ~5 MB)")
    parser.add_argument("--save-every", type=int, default=250, help="steps between saves of model + checkpoint")
    args = parser.parse_args(argv)
    out = train_expert(args.data, args.out, args.steps, args.batch_size, args.lr, args.device, args.threads or None,
                       args.limit, args.seed, save_every=args.save_every, config=OccupancyNetConfig(width=args.width))
    print(f"saved the 3D expert to {out} (load with occmllm.recon.LearnedExpert('{out}'))")


if __name__ == "__main__":
    main()
