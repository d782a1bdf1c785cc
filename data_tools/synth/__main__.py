"""Generate an ObMan-style dataset: a hand with forearm and sleeve holding an object over a background, 256x256.

    python -m data_tools.synth --out data/synth --n 110000 --seed 0 --workers 2 --split-test 0.1
    python -m data_tools.synth --out data/synth_g1 --n 1000 --generation 1     # the first generation, unchanged

--generation 2 (the default; data_tools/synth/gen2/): products with printed labels, glossy and metallic materials
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
data_tools/synth/scene.py. `python -m data_tools.relabel` applies the seed's rule (clear = a model got Q1 right).
Deterministic: sample i is made from (seed, i) alone (same machine and Mesa build -> same bytes, any --workers).
Resumable: re-running the same command into the same folder skips complete samples (those whose shape file exists,
written last) and only rewrites the split files. Ctrl-C stops cleanly; so does a full disk.
Speed (benchmarks/bench_synth.py, 2 workers on this project's 2 cores, nearly idle): generation 2 about 44 ms of
CPU and 31 KB of disk per sample, 45 samples/s wall; generation 1 about 27 ms, 36 KB, 76 samples/s.
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from occmllm.prompts import CLASSES

from . import writer

# The seed's training-set class counts (NOTES.md), for --classes seed.
SEED_COUNTS = {"jar": 2720, "bottle": 2390, "cellphone": 2371, "bowl": 734, "knife": 720, "camera": 513, "can": 416,
               "remote": 276}
STATE = ".synth"  # folder inside --out with the run's arguments


class SynthError(Exception):
    """A problem the user can fix; printed without a traceback."""


def class_weights(name: str) -> np.ndarray | None:
    if name == "uniform":
        return None
    w = np.array([SEED_COUNTS[c] for c in CLASSES], dtype=np.float64)
    return w / w.sum()


_config: dict = {}


def _init_worker(config: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _config.update(config)


def _make_one(index: int) -> dict:
    from .scene import is_test, make_sample

    c = _config
    split = "test" if is_test(c["seed"], index, c["split_test"]) else "train"
    if c.get("generation", 2) == 2:
        from .gen2.scene import make_sample as make_sample_gen2

        sample = make_sample_gen2(c["seed"], index, c["clear_threshold"], class_weights=c["weights"])
    else:
        sample = make_sample(c["seed"], index, c["clear_threshold"], class_weights=c["weights"])
    return writer.write_sample(Path(c["out"]), split, sample)


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
    if args.n < 1:
        p.error(f"--n must be at least 1, got {args.n}")
    if args.n > 10**8:
        p.error(f"--n must be below 100,000,000 (ids have 8 digits), got {args.n}")
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    if not 0.0 <= args.split_test < 1.0:
        p.error(f"--split-test must be in [0, 1), got {args.split_test}")
    if not 0.0 < args.clear_threshold <= 1.0:
        p.error(f"--clear-threshold must be in (0, 1], got {args.clear_threshold}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    return args


def _prepare(out: Path, args) -> None:
    """Create the folder tree, check it is writable and that a resumed folder was made with the same settings."""
    try:
        writer.make_dirs(out)
        probe = out / STATE / ".write-test"
        probe.parent.mkdir(exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise SynthError(f"{out}: cannot write here ({e.strerror or e})") from e
    settings = {"seed": args.seed, "split_test": args.split_test, "clear_threshold": args.clear_threshold,
                "classes": args.classes, "generation": args.generation}
    if args.generation == 2:  # the photo bank decides the bytes: a resumed folder must see the same photos
        from .gen2 import photos

        settings["background_photos"] = len(photos.debian_files())
    saved = out / STATE / "settings.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        old.setdefault("generation", 1)  # folders made before generation 2 existed
        if args.generation != 2:
            old.pop("background_photos", None)
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if "generation" in diff:
            diff.pop("background_photos", None)
        if diff:
            desc = ", ".join(f"{a} background photos (now {b}: install mate-backgrounds or set "
                             "OCCMLLM_BACKGROUND_DIRS as before)" if k == "background_photos" else
                             f"--{k.replace('_', '-')} {a} (now {b})" for k, (a, b) in diff.items())
            raise SynthError(f"{out} was generated with {desc}; use the same settings to resume, or a new folder")
    else:
        saved.write_text(json.dumps(settings, indent=2) + "\n")


def _cached_rows(out: Path) -> dict[str, dict]:
    """Manifest rows logged by earlier runs (.synth/rows.jsonl); a torn last line from a killed run is skipped."""
    rows = {}
    path = out / STATE / "rows.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows[row["id"]] = row
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def finish(out: Path, n: int, seed: int, generation: int = 2) -> dict[str, int]:
    """Manifests, JSONL files and meta.json from the complete samples with index < n. Returns rows per split.

    Rows come from the run's log (.synth/rows.jsonl) and, for a complete sample the log lacks, from the labels stored
    in its shape file; the shape file decides what is complete."""
    cached = _cached_rows(out)
    counts, sizes = {}, {}
    for split in writer.SPLITS:
        ids = sorted(i for i in writer.complete_ids(out, split) if i.isdigit() and int(i) < n)
        rows = []
        for sid in tqdm(ids, desc=f"manifest {split}", leave=False, disable=len(ids) < 5000):
            row = cached.get(sid)
            rows.append(row if row is not None and row.get("split") == split else writer.read_row(out, split, sid))
        manifest = writer.write_manifest(out, split, rows)
        counts[split] = writer.write_label_files(out, split, manifest, seed)
        sizes[split] = len(rows)
    writer.write_meta(out, counts, generation)
    return sizes


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    try:
        _prepare(out, args)
        removed = writer.remove_partial(out)
        done = {int(i) for split in writer.SPLITS for i in writer.complete_ids(out, split) if i.isdigit()}
        todo = [i for i in range(args.n) if i not in done]
        if removed:
            print(f"removed {removed} partial files left by an interrupted run")
        if done:
            print(f"resuming: {args.n - len(todo)} of {args.n} samples already complete")
        config = {"out": str(out), "seed": args.seed, "split_test": args.split_test,
                  "clear_threshold": args.clear_threshold, "weights": class_weights(args.classes),
                  "generation": args.generation}
        if args.generation == 2 and todo:
            from .gen2 import photos

            if not photos.available():
                print(photos.missing_message(), file=sys.stderr)
        start = time.time()
        bar = tqdm(total=len(todo), desc="synth", unit="sample", smoothing=0.05)
        with open(out / STATE / "rows.jsonl", "a", encoding="utf-8") as log:
            def done_one(row):
                log.write(json.dumps(row, sort_keys=True) + "\n")
                bar.update()

            if args.workers == 1 or len(todo) < 2:
                _init_worker(config)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for i in todo:
                    done_one(_make_one(i))
            else:
                ctx = mp.get_context("fork")
                with ctx.Pool(args.workers, initializer=_init_worker, initargs=(config,)) as pool:
                    try:
                        for row in pool.imap_unordered(_make_one, todo, chunksize=4):
                            done_one(row)
                    except BaseException:
                        pool.terminate()
                        raise
        bar.close()
        elapsed = time.time() - start
        sizes = finish(out, args.n, args.seed, args.generation)
        rate = len(todo) / elapsed if elapsed > 0 and todo else float("nan")
        print(f"{out}: {sizes['train']} train + {sizes['test']} test samples "
              f"({len(todo)} made in {elapsed:.1f} s, {rate:.1f} samples/s)")
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
