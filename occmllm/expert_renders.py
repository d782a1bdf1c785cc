"""Render every photo of a dataset split through a 3D expert, so that a VLM can be trained on the renders the 3D route
will really show it (the learned expert's, not the ground-truth ones the generator writes to `{split}/renders/`).

    python -m data_tools.expert_renders --data data/synth --split train                  # the shipped learned expert
    python -m data_tools.expert_renders --data data/synth --split train --expert learned:runs/recon --workers 16 --limit 10000
    python -m data_tools.expert_renders --data data/synth --split test --workers 16 --device cuda  # network on the GPU

Writes `{split}/expert_renders/{id}.png` (the expert's render of the object alone from the photo's camera, as
`occmllm.pipeline` shows it to the model) for the first --limit photos of `{split}_Q1.jsonl`; photos already rendered
are skipped (a killed run continues), photos where the expert reconstructs nothing get no file (counted in the
summary). `{split}/expert_renders/expert.json` records which expert made them (its weights' SHA-256): a rerun with
another expert stops with a message instead of mixing renders of two experts (--overwrite renders every photo again). Training reads them with `renders: expert` in a stage's settings (train/run_all.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from pathlib import Path

from PIL import Image

from occmllm.dataset import EXPERT_RENDERS, kind_folder, sample_path

_expert = None


def _start(expert: str | None, device: str = "cpu") -> None:
    global _expert
    import torch

    from occmllm.recon import LearnedExpert

    torch.set_num_threads(1)
    _expert = LearnedExpert(expert, device=device) if expert else LearnedExpert(device=device)


def _forget_expert() -> None:
    global _expert
    _expert = None


def _render(job: tuple[str, str]) -> str | None:
    """(photo, render path) -> None when written, else the expert's message."""
    photo, out = job
    return _write(_expert.reconstruct(photo), out)


def _finish(job: tuple) -> str | None:
    """(network prediction or the photo's error message, render path) -> _write (meshing and rendering here)."""
    prediction, out = job
    if isinstance(prediction, str):
        return prediction
    return _write(_expert.from_prediction(prediction), out)


def _write(reconstruction, out: str) -> str | None:
    if not reconstruction.ok:
        return reconstruction.message
    tmp = f"{out}.{os.getpid()}.tmp.png"
    Image.fromarray(reconstruction.render).save(tmp)
    os.replace(tmp, out)
    return None


def _batched_predictions(jobs: list[tuple[str, str]], expert: str | None, device: str, batch_size: int,
                         slots: threading.Semaphore):
    """(prediction, render path) for each job, the network run in batches of `batch_size` on `device` in this
    process (the photos decoded in threads); a photo that cannot be read gives its message instead. Waits for a
    free `slot` before each item so that the predictions (a 64^3 grid each) never pile up ahead of the meshing."""
    from concurrent.futures import ThreadPoolExecutor

    from occmllm.recon import LearnedExpert

    network = LearnedExpert(expert, device=device) if expert else LearnedExpert(device=device)

    def read(job):
        try:
            return network.checked_photo(job[0])
        except ValueError as err:
            return str(err)

    with ThreadPoolExecutor(8) as threads:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start: start + batch_size]
            photos = list(threads.map(read, batch))
            good = [photo for photo in photos if not isinstance(photo, str)]
            predictions = iter(network.predict_batch(good) if good else ())
            for job, photo in zip(batch, photos):
                slots.acquire()
                if isinstance(photo, str):
                    yield photo, job[1]
                else:
                    yield next(predictions), job[1]


@contextlib.contextmanager
def _one_thread_children():
    """Worker processes started inside keep numpy's BLAS / OpenMP to one thread each (they fill the cores already;
    a BLAS pool per worker as wide as the machine oversubscribes it). The caller's own settings are put back."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def expert_identity(expert: str | None) -> dict[str, str]:
    """The expert folder and the SHA-256 of its weights (what expert.json records)."""
    from occmllm.recon.experts import weights_folder

    folder = weights_folder(expert)
    digest = weights_sha256(folder)
    if digest is None:
        raise ValueError(f"{folder / 'model.safetensors'}: not found (a learned expert folder holds config.json + "
                         "model.safetensors)")
    return {"expert": str(folder), "weights_sha256": digest}


def weights_sha256(folder: str | Path) -> str | None:
    """The SHA-256 of a learned expert folder's model.safetensors, or None when there is none."""
    weights = Path(folder) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


@functools.lru_cache(maxsize=1)
def _shipped_by_digest() -> dict[str, str]:
    """{weights SHA-256: shipped expert's name}, hashed once per process (the shipped files do not change)."""
    from occmllm.shipped import EXPERTS

    return {digest: name for name, folder in EXPERTS.items() if (digest := weights_sha256(folder))}


def shipped_expert_name(digest: str | None) -> str | None:
    """The name of the shipped expert whose weights have this SHA-256 (v4, v5, g2), or None."""
    return _shipped_by_digest().get(digest)


MODEL_EXPERT = "occmllm_expert.json"  # in a trained model's folder: the expert whose renders it was trained on


def record_model_expert(model: Path, expert: str | None) -> None:
    """Write MODEL/occmllm_expert.json: which 3D expert's renders the model was trained on (expert_identity), so
    that the app and the command lines use the same expert with it (expert_for_model). `expert`: a
    `learned[:NAME|FOLDER]` spec."""
    if expert:
        from occmllm.recon.experts import learned_weights

        identity = expert_identity(str(learned_weights(expert)))
        identity["expert"] = str(Path(identity["expert"]).resolve())  # found again from any working directory
        (Path(model) / MODEL_EXPERT).write_text(json.dumps(identity, indent=1) + "\n")


def expert_for_model(model: str | Path | None) -> tuple[str, str | None]:
    """(spec, note): the 3D expert to use with a model when none is asked for: the one whose renders it was trained
    on (its occmllm_expert.json, matched by the weights' SHA-256 to a shipped expert, else its folder while that
    still holds the same weights), else `learned`. The note says why when it is not `learned`, or why the recorded
    expert could not be used; None otherwise. `model` None or DEFAULT_MODEL: the embedded default model's folder."""
    from occmllm.default_model import DEFAULT_MODEL, WEIGHTS_DIR
    from occmllm.shipped import DEFAULT_EXPERT

    if model in (None, "", DEFAULT_MODEL):
        model = WEIGHTS_DIR
    record_file = Path(model) / MODEL_EXPERT
    if not record_file.is_file():
        return "learned", None
    try:
        record = json.loads(record_file.read_text())
        digest, folder = record["weights_sha256"], record.get("expert")
    except (ValueError, KeyError, TypeError):
        return "learned", f"{record_file}: unreadable, so the default expert (learned) is used"
    because = f"the expert this model was trained with ({record_file.name})"
    name = shipped_expert_name(digest)
    if name is not None:
        return ("learned", None) if name == DEFAULT_EXPERT else (f"learned:{name}", because)
    if folder and weights_sha256(folder) == digest:
        return f"learned:{folder}", because
    return "learned", (f"this model was trained with the expert {folder} (weights {digest[:12]}...), which is no "
                       "longer there: the default expert (learned) is used; --expert names another")


def other_expert(data: Path, split: str, expert: str | None) -> str | None:
    """What made the renders in DIR/{split}/expert_renders when it was not `expert` ("another expert (FOLDER,
    weights ...)", or "an unknown expert" for renders without expert.json); None when they are `expert`'s or none."""
    out = kind_folder(data, split, EXPERT_RENDERS)
    record = out / "expert.json"
    if record.is_file():
        made_by = json.loads(record.read_text())
        if made_by.get("weights_sha256") != expert_identity(expert)["weights_sha256"]:
            return (f"another expert ({made_by.get('expert')}, weights "
                    f"{str(made_by.get('weights_sha256'))[:12]}...)")
        return None
    return "an unknown expert (no expert.json)" if out.is_dir() and any(out.glob("*.png")) else None


def render_split(data: Path, split: str, expert: str | None = None, workers: int = 1, limit: int | None = None,
                 progress: bool = True, overwrite: bool = False, device: str = "cpu",
                 batched: bool = False, batch_size: int = 64) -> dict[str, int]:
    """Write the expert's renders of a split's photos; returns {"rendered", "skipped", "nothing"} counts.
    device: where the network runs. Every worker reconstructs its photos whole (the network on `device`, one photo at
    a time), unless `batched`: then this process runs the network on `batch_size` photos at a time and the workers
    only mesh and render (the slower of the two where it was measured: marching cubes and the render cost more than
    the network; README, `benchmarks/bench_expert_renders.py`).
    Raises ValueError when the folder holds renders of another expert (unless overwrite: then all are redone)."""
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    from occmllm import formats

    annotation = Path(data) / f"{split}_Q1.jsonl"
    if not annotation.is_file():
        raise ValueError(f"{annotation}: not found (a dataset folder from data_tools.synth has one per split)")
    images = kind_folder(data, split, "images")
    out = kind_folder(data, split, EXPERT_RENDERS)
    out.mkdir(parents=True, exist_ok=True)
    identity, record = expert_identity(expert), out / "expert.json"
    other = other_expert(data, split, expert)
    if other and not overwrite:
        raise ValueError(f"{out}: holds renders of {other}, not of {identity['expert']} (weights "
                         f"{identity['weights_sha256'][:12]}...); pass --overwrite to render every photo again")
    record.write_text(json.dumps(identity, indent=1) + "\n")
    jobs, skipped = [], 0
    for conv in formats.read_conversations(annotation)[:limit]:
        target = sample_path(data, split, EXPERT_RENDERS, Path(conv.images[0]).stem)
        if target.is_file() and not overwrite:
            skipped += 1
        else:
            jobs.append((str(images / conv.images[0]), str(target)))
    nothing, slots, pool = 0, None, None
    with tqdm(total=len(jobs), desc=f"{split}: expert renders", unit="photo", disable=not progress) as bar:
        if not jobs:  # everything rendered already: no expert to load, no processes to start
            results = iter(())
        elif batched:
            slots = threading.Semaphore(max(4 * batch_size, 16 * workers))
            with _one_thread_children():
                pool = get_context("spawn").Pool(max(1, workers), initializer=_start, initargs=(expert, "cpu"))
            results = pool.imap(_finish, _batched_predictions(jobs, expert, device, batch_size, slots), chunksize=4)
        elif workers <= 1:
            _start(expert, device)
            results = map(_render, jobs)
        else:
            with _one_thread_children():
                pool = get_context("spawn").Pool(workers, initializer=_start, initargs=(expert, device))
            results = pool.imap(_render, jobs, chunksize=8)
        try:
            for message in results:
                nothing += message is not None
                bar.update(1)
                if slots is not None:
                    slots.release()
            if pool is not None:
                pool.close()
                pool.join()
        finally:  # an error or Ctrl-C: no worker process, and no expert in this process, outlives the call
            if pool is not None:
                pool.terminate()
            _forget_expert()
    return {"rendered": len(jobs) - nothing, "skipped": skipped, "nothing": nothing}
