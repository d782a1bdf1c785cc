"""Time of `occmllm.evaluate` (batched Q1 + Q6 + render phase) on 2,000 test images with the default model.

    python -m benchmarks.bench_evaluate                       # 2,000 synthetic images written to a temp folder
    python -m benchmarks.bench_evaluate --data DIR/test_Q1.jsonl --images DIR/test/images --limit 2000
    python -m benchmarks.bench_evaluate --n 200 --batch-size 64 --threads 1

Target (issue 4): <= 3 minutes for 2,000 images on this 2-core CPU. With the untrained default model every answer is
garbage of max_new_tokens (16) tokens and every Q1 is wrong, so every image also takes the render phase when an
expert is given: an upper bound of a trained model's time. Prints images/second per phase.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch


def synthetic_test_set(n: int, folder: Path):
    from occmllm import prompts
    from occmllm.evaluate import TestItem
    from benchmarks.bench_cot import photos

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index, image in enumerate(photos(n, seed=1)):
        path = folder / f"{index:08d}.jpg"
        image.save(path, quality=90)
        items.append(TestItem(f"{index:08d}", path, prompts.CLASSES[index % len(prompts.CLASSES)]))
    return items


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--data", help="test JSONL (default: synthetic images made on the fly)")
    parser.add_argument("--images", help="image folder of --data")
    parser.add_argument("--n", "--limit", dest="n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--expert", default="none", help="3D expert for the render phase (default: none)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from occmllm.evaluate import evaluate, read_test_set
    from occmllm.recon import expert_from_spec
    from occmllm.vlm import VLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load_named(args.model)
    if args.data:
        items = read_test_set(args.data, args.images)[: args.n]
    else:
        items = synthetic_test_set(args.n, Path(tempfile.mkdtemp()) / "images")
    print(f"model: {vlm.describe()}  threads: {torch.get_num_threads()}  images: {len(items)}  "
          f"batch: {args.batch_size}  expert: {args.expert}")
    start = time.perf_counter()
    results, _ = evaluate(vlm, items, expert=expert_from_spec(args.expert), batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(f"evaluated {len(results)} images in {seconds:.1f} s ({len(results) / seconds:.1f} images/s); "
          f"target <= 180 s for 2,000")


if __name__ == "__main__":
    main()
