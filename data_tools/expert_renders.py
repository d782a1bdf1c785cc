"""Render every photo of a dataset split through a 3D expert, so that a VLM can be trained on the renders the 3D route
will really show it (the learned expert's, not the ground-truth ones the generator writes to `{split}/renders/`).

    python -m data_tools.expert_renders --data data/synth --split train                  # the shipped learned expert
    python -m data_tools.expert_renders --data data/synth --split train --expert runs/recon --workers 16 --limit 10000

Writes `{split}/expert_renders/{id}.png` (the expert's render of the object alone from the photo's camera, as
`occmllm.pipeline` shows it to the model) for the first --limit photos of `{split}_Q1.jsonl`; photos already rendered
are skipped (a killed run continues), photos where the expert reconstructs nothing get no file (counted in the
summary). Training reads them with `renders: expert` in a stage's settings (train/run_all.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image

FOLDER = "expert_renders"
_expert = None


def _start(expert: str | None) -> None:
    global _expert
    import torch

    from occmllm.recon import LearnedExpert

    torch.set_num_threads(1)
    _expert = LearnedExpert(expert) if expert else LearnedExpert()


def _render(job: tuple[str, str]) -> str | None:
    """(photo, render path) -> None when written, else the expert's message."""
    photo, out = job
    reconstruction = _expert.reconstruct(photo)
    if not reconstruction.ok:
        return reconstruction.message
    tmp = f"{out}.{os.getpid()}.tmp.png"
    Image.fromarray(reconstruction.render).save(tmp)
    os.replace(tmp, out)
    return None


def render_split(data: Path, split: str, expert: str | None = None, workers: int = 1, limit: int | None = None,
                 progress: bool = True) -> dict[str, int]:
    """Write the expert's renders of a split's photos; returns {"rendered", "skipped", "nothing"} counts."""
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    from occmllm import formats

    annotation = Path(data) / f"{split}_Q1.jsonl"
    if not annotation.is_file():
        raise ValueError(f"{annotation}: not found (a dataset folder from data_tools.synth has one per split)")
    images = Path(data) / split / "images"
    out = Path(data) / split / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    jobs, skipped = [], 0
    for conv in formats.read_conversations(annotation)[:limit]:
        target = out / f"{Path(conv.images[0]).stem}.png"
        if target.is_file():
            skipped += 1
        else:
            jobs.append((str(images / conv.images[0]), str(target)))
    nothing = 0
    with tqdm(total=len(jobs), desc=f"{split}: expert renders", unit="photo", disable=not progress) as bar:
        if workers <= 1:
            _start(expert)
            results = map(_render, jobs)
        else:
            pool = get_context("spawn").Pool(workers, initializer=_start, initargs=(expert,))
            results = pool.imap(_render, jobs, chunksize=8)
        for message in results:
            nothing += message is not None
            bar.update(1)
        if workers > 1:
            pool.close()
            pool.join()
    return {"rendered": len(jobs) - nothing, "skipped": skipped, "nothing": nothing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.expert_renders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (data_tools.synth or the same layout)")
    parser.add_argument("--split", default="train", help="split whose photos are rendered (default train)")
    parser.add_argument("--expert", default=None, help="learned expert folder (default: occmllm/recon/weights)")
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos of the split")
    args = parser.parse_args(argv)
    try:
        counts = render_split(args.data, args.split, args.expert, args.workers, args.limit)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.data / args.split / FOLDER}: {counts['rendered']} rendered, {counts['skipped']} already there, "
          f"{counts['nothing']} with nothing reconstructed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
