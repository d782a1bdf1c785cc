"""Benchmark of data_tools.synth: speed, disk, occlusion distribution, and how hard hidden objects are to classify.

    python tests/benchmarks/bench_synth.py                       # 2,000 samples, 2 workers, in a temp folder
    python tests/benchmarks/bench_synth.py --n 4000 --out /tmp/synth_bench --keep

Prints samples/s (wall clock, and CPU seconds per sample of the workers), bytes per sample, the projection to the
paper's 110,000 samples, the per-class histogram of visible fraction, the share under 50% visible, and the test
accuracy per occlusion bucket of a simple classifier (HOG features + multinomial logistic regression, trained on the
train split). Heavily hidden objects must come out clearly harder than lightly hidden ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from occmllm.dataset import SynthDataset  # noqa: E402
from occmllm.prompts import CLASSES  # noqa: E402

BUCKETS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01))
TARGET_N, TARGET_S, TARGET_BYTES = 110_000, 3600, 10e9


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def hog_features(ds: SynthDataset) -> np.ndarray:
    from PIL import Image
    from skimage.feature import hog

    feats = []
    for sid in ds.ids:
        grey = np.asarray(Image.open(ds.image_path(sid)).convert("L").resize((128, 128), Image.BILINEAR))
        feats.append(hog(grey, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2)))
    return np.asarray(feats, dtype=np.float32)


def logistic_regression(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3, epochs: int = 300):
    import torch

    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / std)
    yt = torch.tensor(y)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(xn: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (torch.tensor((xn - mean) / std) @ w + b).argmax(1).numpy()

    return predict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-test", type=float, default=0.3)
    p.add_argument("--out", type=Path, help="dataset folder (default: a temp folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_")) / "data"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "data_tools.synth", "--out", str(out), "--n", str(args.n), "--seed", str(args.seed),
           "--workers", str(args.workers), "--split-test", str(args.split_test)]
    print("$", " ".join(cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    total = folder_bytes(out)
    load = os.getloadavg()
    print(f"\n== speed and disk ({args.n} samples, {args.workers} workers, {os.cpu_count()} CPUs, "
          f"load average now {load[0]:.1f}: other agents share this CPU)")
    print(f"wall {wall:.1f} s -> {args.n / wall:.1f} samples/s (start-up, manifest and JSONL writing included)")
    print(f"CPU {cpu / args.n * 1000:.1f} ms per sample -> {2 / (cpu / args.n):.1f} samples/s on 2 otherwise idle cores")
    print(f"disk {total / args.n / 1024:.1f} KB per sample ({total / 1e6:.1f} MB in all)")
    print(f"projected for {TARGET_N:,}: {TARGET_N / (args.n / wall) / 60:.0f} min at the measured wall rate, "
          f"{TARGET_N * cpu / args.n / 2 / 60:.0f} min on 2 idle cores (target <= {TARGET_S // 60} min); "
          f"{TARGET_N * total / args.n / 1e9:.1f} GB (target <= {TARGET_BYTES / 1e9:.0f} GB)")
    for kind in ("images", "renders", "masks", "shapes"):
        b = sum(folder_bytes(out / s / kind) for s in ("train", "test"))
        print(f"  {kind:8s} {b / args.n / 1024:6.1f} KB per sample")

    train, test = SynthDataset(out, "train"), SynthDataset(out, "test")
    import pandas as pd

    m = pd.concat([train.manifest, test.manifest])
    vf = m["visible_fraction"].to_numpy()
    print(f"\n== occlusion: {np.mean(vf < 0.5) * 100:.1f}% of samples have under 50% of the object visible "
          f"(target >= 25%); mean visible fraction {vf.mean():.2f}")
    edges = np.linspace(0, 1, 11)
    print(f"{'class':10s} {'n':>5s}  " + " ".join(f"{e:.1f}" for e in edges[:-1]) + "   <50%")
    for cls in CLASSES:
        v = m.loc[m["class"] == cls, "visible_fraction"].to_numpy()
        hist = np.histogram(v, bins=edges)[0]
        print(f"{cls:10s} {len(v):5d}  " + " ".join(f"{h:3d}" for h in hist) + f"   {np.mean(v < 0.5) * 100:4.0f}%")
    print(f"clear (>= 0.5 visible): {m['clear'].mean() * 100:.1f}%")

    print("\n== classifier: HOG (128 px grey, 16 px cells) + logistic regression, train split -> test split")
    t = time.time()
    xtr, xte = hog_features(train), hog_features(test)
    ytr = np.array([CLASSES.index(c) for c in train.manifest["class"]])
    yte = np.array([CLASSES.index(c) for c in test.manifest["class"]])
    predict = logistic_regression(xtr, ytr, len(CLASSES))
    right = predict(xte) == yte
    print(f"train {len(ytr)}, test {len(yte)}; test accuracy {right.mean() * 100:.1f}% "
          f"(chance {100 / len(CLASSES):.1f}%), train accuracy {(predict(xtr) == ytr).mean() * 100:.1f}% "
          f"({time.time() - t:.0f} s)")
    tvf = test.manifest["visible_fraction"].to_numpy()
    for lo, hi in BUCKETS:
        sel = (tvf >= lo) & (tvf < hi)
        acc = right[sel].mean() * 100 if sel.any() else float("nan")
        print(f"  visible {lo:.1f}-{min(hi, 1.0):.1f}: {sel.sum():4d} test images, accuracy {acc:5.1f}%")
    if not args.keep and args.out is None:
        shutil.rmtree(out.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
