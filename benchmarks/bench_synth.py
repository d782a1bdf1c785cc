"""Benchmark of data_tools.synth: speed, disk, occlusion distribution, and how hard hidden objects are to classify.

    python benchmarks/bench_synth.py                       # 2,000 samples, 2 workers, in a temp folder
    python benchmarks/bench_synth.py --n 4000 --out /tmp/synth_bench --keep
    python benchmarks/bench_synth.py --n 3000 --generation 1 --classifier none   # generation 1, speed only

Prints samples/s (wall clock, and CPU seconds per sample of the workers), bytes per sample, the projection to the
paper's 110,000 samples, the per-class histogram of visible fraction, the share under 50% visible, and the test
accuracy per occlusion bucket of a simple classifier trained on the train split (by default a small CNN on the crop
around the object; HOG + logistic regression, and the whole photo, on request). Heavily hidden objects must come out
clearly harder than lightly hidden ones. Re-run only the classifier on a kept folder with --out DIR --reuse.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occmllm.dataset import SynthDataset  # noqa: E402
from occmllm.prompts import CLASSES  # noqa: E402

BUCKETS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01))
TARGET_N, TARGET_S, TARGET_BYTES = 110_000, 3600, 10e9


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def photo(ds: SynthDataset, sid: str, view: str, size: int):
    """The photo ("full") or a square crop around the object's amodal box, 15% margin ("crop": what a detector
    would hand a classifier; the box comes from the ground truth, the pixels inside are the photo's)."""
    from PIL import Image

    img = Image.open(ds.image_path(sid)).convert("RGB")
    if view == "crop":
        amodal, _ = ds.load_masks(sid)
        ys, xs = np.nonzero(amodal)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * 1.15 + 4
        img = img.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    return img.resize((size, size), Image.BILINEAR)


def hog_features(ds: SynthDataset, view: str) -> np.ndarray:
    from skimage.feature import hog

    feats = []
    for sid in ds.ids:
        grey = np.asarray(photo(ds, sid, view, 128).convert("L"))
        feats.append(hog(grey, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2)))
    return np.asarray(feats, dtype=np.float32)


def logistic_regression(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-2, epochs: int = 300):
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


def small_cnn(train: SynthDataset, test: SynthDataset, ytr: np.ndarray, view: str, epochs: int = 25, size: int = 64):
    """A 4-layer CNN on size x size RGB photos with flips as augmentation; returns test and train predictions."""
    import torch
    from PIL import Image

    torch.manual_seed(0)
    torch.set_num_threads(2)

    def load(ds):
        return torch.tensor(np.stack([np.asarray(photo(ds, sid, view, size)) for sid in ds.ids]),
                            dtype=torch.float32).permute(0, 3, 1, 2) / 255.0

    xtr, xte = load(train), load(test)
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    yt = torch.tensor(ytr)

    def block(i, o):
        return [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]

    net = torch.nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 96), *block(96, 128),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(128, len(CLASSES)))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(xtr) + 63) // 64))
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xtr)).split(64):
            xb = xtr[idx]
            flip = torch.rand(len(xb)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = torch.nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        return net(xte).argmax(1).numpy(), net(xtr).argmax(1).numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-test", type=float, default=0.3)
    p.add_argument("--out", type=Path, help="dataset folder (default: a temp folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the generated folder")
    p.add_argument("--reuse", action="store_true", help="skip generation when --out already holds the dataset")
    p.add_argument("--generation", type=int, choices=(1, 2), default=2, help="data_tools.synth --generation")
    p.add_argument("--classifier", choices=("hog", "cnn", "both", "none"), default="cnn",
                   help="HOG + logistic regression (fast), a small CNN (slow on 2 cores), both, or none (speed only)")
    p.add_argument("--view", choices=("full", "crop", "both"), default="crop",
                   help="classify the whole photo, the crop around the object, or report both")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_")) / "data"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "data_tools.synth", "--out", str(out), "--n", str(args.n), "--seed", str(args.seed),
           "--workers", str(args.workers), "--split-test", str(args.split_test), "--generation", str(args.generation)]
    if not (args.reuse and (out / "meta.json").is_file()):
        print("$", " ".join(cmd), flush=True)
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        subprocess.run(cmd, check=True, env=env)
        wall = time.time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        report_speed(out, args, wall, cpu)
    report_quality(out, args)
    if not args.keep and args.out is None:
        shutil.rmtree(out.parent)
    return 0


def report_speed(out: Path, args, wall: float, cpu: float) -> None:
    total = folder_bytes(out)
    load = os.getloadavg()
    print(f"\n== speed and disk (generation {args.generation}, {args.n} samples, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, "
          f"load average now {load[0]:.1f}: other agents share this CPU)")
    print(f"wall {wall:.1f} s -> {args.n / wall:.1f} samples/s (start-up, manifest and JSONL writing included)")
    print(f"CPU {cpu / args.n * 1000:.1f} ms per sample -> {2 / (cpu / args.n):.1f} samples/s "
          "on 2 otherwise idle cores")
    print(f"disk {total / args.n / 1024:.1f} KB per sample ({total / 1e6:.1f} MB in all)")
    print(f"projected for {TARGET_N:,}: {TARGET_N / (args.n / wall) / 60:.0f} min at the measured wall rate, "
          f"{TARGET_N * cpu / args.n / 2 / 60:.0f} min on 2 idle cores (target <= {TARGET_S // 60} min); "
          f"{TARGET_N * total / args.n / 1e9:.1f} GB (target <= {TARGET_BYTES / 1e9:.0f} GB)")
    for kind in ("images", "renders", "masks", "shapes"):
        b = sum(folder_bytes(out / s / kind) for s in ("train", "test"))
        print(f"  {kind:8s} {b / args.n / 1024:6.1f} KB per sample")


def report_quality(out: Path, args) -> None:
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

    ytr = np.array([CLASSES.index(c) for c in train.manifest["class"]])
    yte = np.array([CLASSES.index(c) for c in test.manifest["class"]])
    tvf = test.manifest["visible_fraction"].to_numpy()
    runs = []
    for view in () if args.classifier == "none" else ("full", "crop") if args.view == "both" else (args.view,):
        if args.classifier in ("hog", "both"):
            runs.append((f"HOG (128 px grey, 16 px cells) + logistic regression on the {view} photo", "hog", view))
        if args.classifier in ("cnn", "both"):
            runs.append((f"small CNN (4 conv layers, 64 px RGB, 25 epochs, flips) on the {view} photo", "cnn", view))
    for title, kind, view in runs:
        print(f"\n== classifier: {title}, train split -> test split")
        t = time.time()
        if kind == "hog":
            xtr, xte = hog_features(train, view), hog_features(test, view)
            predict = logistic_regression(xtr, ytr, len(CLASSES))
            pte, ptr = predict(xte), predict(xtr)
        else:
            pte, ptr = small_cnn(train, test, ytr, view)
        right = pte == yte
        print(f"train {len(ytr)}, test {len(yte)}; test accuracy {right.mean() * 100:.1f}% "
              f"(chance {100 / len(CLASSES):.1f}%), train accuracy {(ptr == ytr).mean() * 100:.1f}% "
              f"({time.time() - t:.0f} s)")
        for lo, hi in BUCKETS:
            sel = (tvf >= lo) & (tvf < hi)
            acc = right[sel].mean() * 100 if sel.any() else float("nan")
            print(f"  visible {lo:.1f}-{min(hi, 1.0):.1f}: {sel.sum():4d} test images, accuracy {acc:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())
