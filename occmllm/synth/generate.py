"""One run of the generator: samples made by worker processes, resumable, then the manifests, JSONL files and meta.

    from occmllm.synth.generate import generate
    generate("data/synth", n=1000, seed=0, workers=2)        # what `python -m data_tools.synth` runs

Deterministic: sample i is made from (seed, i) alone (same machine and Mesa build -> same bytes, any worker count).
Resumable: generating into the same folder with the same settings skips complete samples (those whose shape file
exists, written last) and only rewrites the split files; other settings raise SynthError. The layout of the folder is
described by ``python -m data_tools.synth --help``.
"""

from __future__ import annotations

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


def _prepare(out: Path, seed: int, split_test: float, clear_threshold: float, classes: str,
             generation: int) -> None:
    """Create the folder tree, check it is writable and that a resumed folder was made with the same settings."""
    try:
        writer.make_dirs(out)
        probe = out / STATE / ".write-test"
        probe.parent.mkdir(exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise SynthError(f"{out}: cannot write here ({e.strerror or e})") from e
    settings = {"seed": seed, "split_test": split_test, "clear_threshold": clear_threshold, "classes": classes,
                "generation": generation}
    if generation == 2:  # the photo bank decides the bytes: a resumed folder must see the same photos
        from .gen2 import photos

        settings["background_photos"] = len(photos.debian_files())
    saved = out / STATE / "settings.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        old.setdefault("generation", 1)  # folders made before generation 2 existed
        if generation != 2:
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




def check_settings(n: int, seed: int, workers: int, split_test: float, clear_threshold: float) -> None:
    """Raise SynthError naming the first setting out of range (the command line prints it as a usage error)."""
    problems = [(n < 1, f"--n must be at least 1, got {n}"),
                (n > 10**8, f"--n must be below 100,000,000 (ids have 8 digits), got {n}"),
                (workers < 1, f"--workers must be at least 1, got {workers}"),
                (not 0.0 <= split_test < 1.0, f"--split-test must be in [0, 1), got {split_test}"),
                (not 0.0 < clear_threshold <= 1.0, f"--clear-threshold must be in (0, 1], got {clear_threshold}"),
                (seed < 0, f"--seed must be >= 0, got {seed}")]
    for wrong, message in problems:
        if wrong:
            raise SynthError(message)


def generate(out: str | Path, n: int, seed: int = 0, workers: int | None = None, split_test: float = 0.1,
             clear_threshold: float = 0.5, classes: str = "uniform", generation: int = 2) -> dict[str, int]:
    """Make samples 0 .. n-1 into OUT (resuming what is there), then the split files. Returns samples per split.
    workers: processes (default: one per core).

    Raises SynthError for settings out of range, a folder that cannot be written or one made with other settings;
    KeyboardInterrupt and OSError (a full disk) leave the complete samples in place, so the same call resumes."""
    out = Path(out)
    workers = workers or max(1, os.cpu_count() or 1)
    check_settings(n, seed, workers, split_test, clear_threshold)
    if classes not in ("uniform", "seed") or generation not in (1, 2):
        raise SynthError(f"classes must be uniform or seed (got {classes!r}), generation 1 or 2 (got {generation!r})")
    _prepare(out, seed, split_test, clear_threshold, classes, generation)
    removed = writer.remove_partial(out)
    done = {int(i) for split in writer.SPLITS for i in writer.complete_ids(out, split) if i.isdigit()}
    todo = [i for i in range(n) if i not in done]
    if removed:
        print(f"removed {removed} partial files left by an interrupted run")
    if done:
        print(f"resuming: {n - len(todo)} of {n} samples already complete")
    config = {"out": str(out), "seed": seed, "split_test": split_test, "clear_threshold": clear_threshold,
              "weights": class_weights(classes), "generation": generation}
    if generation == 2 and todo:
        from .gen2 import photos

        if not photos.available():
            print(photos.missing_message(), file=sys.stderr)
    start = time.time()
    bar = tqdm(total=len(todo), desc="synth", unit="sample", smoothing=0.05)
    with open(out / STATE / "rows.jsonl", "a", encoding="utf-8") as log:
        def done_one(row):
            log.write(json.dumps(row, sort_keys=True) + "\n")
            bar.update()

        if workers == 1 or len(todo) < 2:
            _init_worker(config)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for i in todo:
                done_one(_make_one(i))
        else:
            ctx = mp.get_context("fork")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
                try:
                    for row in pool.imap_unordered(_make_one, todo, chunksize=4):
                        done_one(row)
                except BaseException:
                    pool.terminate()
                    raise
    bar.close()
    elapsed = time.time() - start
    sizes = finish(out, n, seed, generation)
    rate = len(todo) / elapsed if elapsed > 0 and todo else float("nan")
    print(f"{out}: {sizes['train']} train + {sizes['test']} test samples "
          f"({len(todo)} made in {elapsed:.1f} s, {rate:.1f} samples/s)")
    return sizes
