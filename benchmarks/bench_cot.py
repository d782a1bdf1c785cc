"""Latency of one photo through the whole CoT on this CPU, with the default model (or --model).

    python -m benchmarks.bench_cot                    # 20 photos, median ms without and with the 3D step
    python -m benchmarks.bench_cot --model PATH --runs 50 --expert learned

"As decided": describe off, Q1 + Q6 (second turn reuses the image's KV cache), decide, and the 3D step only where
the model's clarity answer is "No." (the count is printed). "With 3D forced": the same plus the 3D expert
(reconstruction, mesh, render) and Q1 on the render on every photo. Photos are synthetic 256x256
images made in memory. An untrained default model answers garbage until its max_new_tokens (16) runs out, so its
timings are an upper bound of a trained one's (whose answers are 2-6 tokens); the script prints the tokens generated.
Targets (issue 4): median <= 300 ms without 3D, <= 600 ms with 3D.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import numpy as np
import torch
from PIL import Image


def photos(n: int, size: int = 256, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = np.full((size, size, 3), rng.integers(40, 200, 3), np.uint8)
        y, x = rng.integers(40, 140, 2)
        image[y:y + 80, x:x + 60] = 170  # a grey "object"
        image[y + 40:y + 120, x + 30:x + 110] = (210, 160, 130)  # a skin-coloured "hand" over it
        out.append(Image.fromarray(image))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--expert", default=None, help="3D expert for the with-3D runs (default: as in the app, the "
                        "one the model was trained with, else learned)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from occmllm.expert_renders import expert_for_model
    from occmllm.pipeline import cot
    from occmllm.recon import expert_from_spec
    from occmllm.vlm import VLM

    if args.expert is None:
        args.expert = expert_for_model(args.model)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load_named(args.model)
    try:
        expert = expert_from_spec(args.expert)
    except FileNotFoundError as error:  # no shipped 3D weights yet: time an untrained expert of the same shape
        import tempfile

        from occmllm.recon.model import OccupancyNet

        print(f"note: {error}\nnote: timing an UNTRAINED LearnedExpert of the shipped shape instead")
        folder = OccupancyNet().save_pretrained(tempfile.mkdtemp())
        expert = expert_from_spec(f"learned:{folder}")
    print(f"model: {vlm.describe()}  threads: {torch.get_num_threads()}  expert: {args.expert}")
    images = photos(args.runs + 2)
    for image in images[:2]:  # warm-up (first calls allocate)
        cot(vlm, image, expert=expert, force_3d=True)
    for force_3d in (False, True):
        times, tokens, reused, recon, routed = [], [], [], [], 0
        for image in images[2:]:
            trace = cot(vlm, image, expert=expert, force_3d=force_3d)
            times.append(trace.seconds * 1000)
            tokens.append(sum(len(vlm.tokenizer.tokenize(s.raw)) + 1 for s in trace.steps
                              if s.raw is not None and s.name != "decide"))
            reused.append(trace.step("reflect").info.get("reused_tokens", 0))
            routed += any(s.name == "reconstruct" for s in trace.steps)
            if force_3d:
                recon.append(trace.step("reconstruct").seconds * 1000)
        label = "with 3D forced" if force_3d else "as decided    "
        extra = (f", of which reconstruction median {statistics.median(recon):.0f} ms" if recon
                 else f"; the 3D step ran on {routed} of them (the model's clarity answer)")
        print(f"CoT {label}: median {statistics.median(times):.0f} ms, p90 {np.percentile(times, 90):.0f} ms "
              f"over {len(times)} photos (about {statistics.mean(tokens):.0f} generated tokens a photo, "
              f"Q6 reused {statistics.mean(reused):.0f} cached tokens{extra})")


if __name__ == "__main__":
    main()
