"""The eight class probabilities of a photo (`VLM.class_posterior`, shown beside every identify step in the app and
used by --fuse): scored from the prompt's KV cache against a full pass over photo, prompt and answer for each class.

    python -m benchmarks.bench_scoring                                  # default model, 7 outside photos, one at a time
    python -m benchmarks.bench_scoring --photos DIR --model PATH --device cuda --batch 64

Prints the median and p95 milliseconds of one call each way (the same photos, alternating, after one warm-up call
each), the speed-up, whether the cached path was taken, and the largest difference of the log-probabilities between
the two ways (they must agree to float rounding). Photos: every image of --photos (default ../shared/outside-dev, the
real photos, measured only), or synthetic ones made in memory when that folder is missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "outside-dev"


def read_photos(folder: Path | None, n: int) -> tuple[list, str]:
    from PIL import Image

    if folder is not None and folder.is_dir():
        from occmllm.store import IMAGE_SUFFIXES

        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return [Image.open(p).convert("RGB") for p in files], f"{len(files)} photos of {folder}"
    from benchmarks.bench_cot import photos

    return photos(n), f"{n} synthetic photos made in memory"


def timed(call) -> float:
    """Milliseconds of one call, the GPU's queue drained before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos (default: %(default)s)")
    parser.add_argument("--n", type=int, default=8, help="synthetic photos when --photos is missing (default 8)")
    parser.add_argument("--batch", type=int, default=1, help="photos per call (default 1, as the app asks)")
    parser.add_argument("--runs", type=int, default=21, help="timed calls each way (default 21)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda where there is one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from occmllm.vlm import VLM

    images, where = read_photos(args.photos, args.n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load_named(args.model, device=args.device)
    print(f"model: {vlm.name} ({vlm.model_type}, {vlm.device}, {vlm.model.dtype}); transformers "
          f"{transformers.__version__}, torch {torch.__version__}; {where}; {args.batch} per call")
    batches = [images[i:i + args.batch] for i in range(0, len(images), args.batch)]
    reuse = vlm.prefix_reuse
    took = {"cached": [], "full": []}
    worst = 0.0
    for flag in (True, False):  # one warm-up call each way
        vlm.prefix_reuse = flag and reuse
        vlm.class_posterior(batches[0])
    for run in range(args.runs):
        batch = batches[run % len(batches)]
        readings = {}
        for name, flag in (("cached", True), ("full", False)):
            vlm.prefix_reuse = flag and reuse
            took[name].append(timed(lambda: vlm.class_posterior(batch)))
            if run < len(batches):  # every photo compared once
                readings[name] = vlm.answer_logprobs(batch, *posterior_question())
        if readings:
            worst = max(worst, float(np.abs(readings["cached"] - readings["full"]).max()))
    vlm.prefix_reuse = reuse
    if reuse:  # the cached path really runs (it returns None where it would not be exact)
        from occmllm import prompts

        probe = vlm._cached_answer_logprobs(batches[0], [vlm._prompt(prompts.Q1, None)] * len(batches[0]),
                                            list(posterior_question()[1]))
        cached_taken = probe is not None
    else:
        cached_taken = False
    for name in ("cached", "full"):
        values = sorted(took[name])
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        print(f"{name:>6}: median {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms  ({len(values)} calls)")
    print(f"speed-up {statistics.median(took['full']) / statistics.median(took['cached']):.2f}x; cached path taken: "
          f"{'yes' if cached_taken else 'no (this model scores with full passes)'}; largest log-probability "
          f"difference {worst:.2e}")
    return 0


def posterior_question() -> tuple[str, tuple[str, ...]]:
    """The question and the eight answers class_posterior scores."""
    from occmllm import prompts

    return prompts.Q1, tuple(prompts.identify_answer(c) for c in prompts.CLASSES)


if __name__ == "__main__":
    raise SystemExit(main())
