"""Benchmark of data_tools.expert_renders: photos per second for each way of spreading the work, and where one
photo's time goes.

    python -m benchmarks.bench_expert_renders --data DIR --split train --limit 4000 --workers 16 --device cuda

For each mode it renders the first --limit photos of the split into a fresh copy of `{split}/expert_renders` (the
folder is emptied before each mode) and prints photos/s:
- `per-worker`: every worker process reconstructs its photos whole (the network on --device, one photo at a time);
- `batched`: this process runs the network on batches of --batch-size photos on --device, the workers mesh and
  render;
- `per-worker-cpu`: as per-worker with the network on the CPU.
Then, in this process with one thread, the median time per photo of each part: photo decode, network (on --device,
one photo), marching cubes, render, PNG encoding.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from occmllm.shipped import LEARNED_HELP

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder from data_tools.synth")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=2000, help="photos rendered per mode (default 2000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--expert", default="learned", help=f"the learned 3D expert: {LEARNED_HELP} (a bare NAME or "
                        "FOLDER is still read)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["per-worker", "batched", "per-worker-cpu"])
    parser.add_argument("--parts", type=int, default=50, help="photos timed part by part (0: skip)")
    args = parser.parse_args(argv)
    from occmllm.recon.experts import learned_weights

    args.expert = str(learned_weights(args.expert, older_spelling_ok=True))

    from occmllm.dataset import EXPERT_RENDERS, kind_folder
    from occmllm.expert_renders import render_split

    folder = kind_folder(args.data, args.split, EXPERT_RENDERS)
    for mode in args.modes:
        shutil.rmtree(folder, ignore_errors=True)
        device = "cpu" if mode == "per-worker-cpu" else args.device
        t0 = time.perf_counter()
        counts = render_split(args.data, args.split, args.expert, args.workers, args.limit, progress=False,
                              device=device, batched=mode == "batched", batch_size=args.batch_size)
        seconds = time.perf_counter() - t0
        done = counts["rendered"] + counts["nothing"]
        print(f"{mode:<15} {args.workers} workers, network on {device}: {done} photos in {seconds:.1f} s = "
              f"{done / seconds:.1f} photos/s  {counts}", flush=True)

    if args.parts:
        import torch
        from PIL import Image

        from occmllm import formats
        from occmllm.recon import LearnedExpert

        torch.set_num_threads(1)
        expert = LearnedExpert(args.expert, device=args.device)
        photos = [kind_folder(args.data, args.split, "images") / c.images[0]
                  for c in formats.read_conversations(args.data / f"{args.split}_Q1.jsonl")[: args.parts]]
        times: dict[str, list[float]] = {}
        for photo in photos:
            t = time.perf_counter()
            array = expert.checked_photo(str(photo))
            times.setdefault("decode", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            prediction = expert.predict(array)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.setdefault("network", []).append(time.perf_counter() - t)
            reconstruction = expert.from_prediction(prediction)
            for key in ("mesh", "render"):
                if key in reconstruction.timings:
                    times.setdefault(key, []).append(reconstruction.timings[key])
            if reconstruction.ok:
                t = time.perf_counter()
                Image.fromarray(reconstruction.render).save(io.BytesIO(), format="png")
                times.setdefault("png", []).append(time.perf_counter() - t)
        print(f"one photo, one thread ({len(photos)} photos, network on {args.device}): " + ", ".join(
            f"{key} {np.median(value) * 1e3:.1f} ms" for key, value in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
