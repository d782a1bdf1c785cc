"""Generate an ObMan-style dataset: a hand with forearm and sleeve holding an object over a background, 256x256.

    python -m data_tools.synth --out data/synth --n 110000 --seed 0 --workers 2 --split-test 0.1
    python -m data_tools.synth --out data/synth_g1 --n 1000 --generation 1     # the first generation, unchanged

--generation 2 (the default; occmllm/synth/gen2/): products with printed labels, glossy and metallic materials
and several shape variants per class, a dressed hand (skin tones, knuckles, nails, sleeves), ObMan's hand-centred
framing mixed with wider shots, real background photos (Debian's mate-backgrounds, installed by the Makefile; a
warning where missing) and rendered rooms (structured domain randomisation), and a randomised camera (white
balance, exposure, blur, noise, JPEG). --generation 1: grey objects over scikit-image photos, as first shipped.

Writes (layout in .notes/COMMON.md): {split}/images/{id}.jpg, renders/{id}.png (object alone, grey on black),
masks/{id}.png (R = amodal, G = visible object mask), shapes/{id}.npz (camera-frame mesh, K, bit-packed 32^3
occupancy + bounds, labels), {split}/manifest.parquet, the seed-format JSONL files and meta.json.
JSONL (seed formats, via occmllm.formats): {split}_Q1, {split}_Q1_Q6, {split}_Q1_Q6_balanced_dpo (as many "Yes." as
"No." pairs), {split}_Q1_Q6_Q0_balanced (the same balanced images, 30% asked the Q0 plan), {split}_attributes.
Labels and the rules behind them (visible fraction, round/thin/long, clear = visible fraction >= --clear-threshold):
occmllm/synth/scene.py. `python -m data_tools.relabel` applies the seed's rule (clear = a model got Q1 right).
Deterministic: sample i is made from (seed, i) alone (same machine and Mesa build -> same bytes, any --workers).
Resumable: re-running the same command into the same folder skips complete samples (those whose shape file exists,
written last) and only rewrites the split files. Ctrl-C stops cleanly; so does a full disk.
Speed and disk per sample: the README's results table (`python -m benchmarks.bench_synth`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from occmllm.synth.generate import SynthError, check_settings, generate

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_tools.synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (created; an existing one is resumed)")
    p.add_argument("--n", type=int, required=True, help="number of samples (ids 00000000 .. n-1, both splits)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; the same seed gives the same bytes")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="worker processes")
    p.add_argument("--split-test", type=float, default=0.1, help="share of samples in the test split, in [0, 1)")
    p.add_argument("--clear-threshold", type=float, default=0.5,
                   help="clarity label: 'No.' when the visible fraction of the object is below this (0..1)")
    p.add_argument("--classes", choices=("uniform", "seed"), default="uniform",
                   help="class frequencies: uniform, or the seed's ObMan training-set proportions")
    p.add_argument("--generation", type=int, choices=(1, 2), default=2,
                   help="2 (default): product-like objects, dressed hands, real photos and rendered rooms behind, "
                        "a randomised camera; 1: the first generation's grey objects, byte for byte as before")
    args = p.parse_args(argv)
    try:
        check_settings(args.n, args.seed, args.workers, args.split_test, args.clear_threshold)
    except SynthError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    try:
        generate(out, args.n, seed=args.seed, workers=args.workers, split_test=args.split_test,
                 clear_threshold=args.clear_threshold, classes=args.classes, generation=args.generation)
        return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted: complete samples are kept; re-run the same command to resume into {out}",
              file=sys.stderr)
        return 130
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"error: disk full while writing to {out}; free some space and re-run the same command to resume "
                  "(complete samples are kept, the unfinished ones are redone)", file=sys.stderr)
            return 1
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            print(f"error: cannot write {e.filename or out}: {e.strerror}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
