"""Re-label clarity with the seed's own rule: an image is clear ("Yes.") when a model answered Q1 right on it.

    python -m data_tools.relabel --data data/synth --split test --predictions preds.json

``preds.json`` is a predictions file ``{id: answer}`` (occmllm.formats.read_predictions; e.g. what the step-1 model
answered to Q1). Each answer is parsed with occmllm.prompts.parse_object and compared with the manifest's class.
Rewrites, for that split: manifest.parquet's ``clear`` column (the generator's visibility label is kept as
``clear_visibility``; ``clear_source`` says where the label came from), {split}_Q1_Q6.jsonl,
{split}_Q1_Q6_balanced_dpo.jsonl, {split}_Q1_Q6_Q0_balanced.jsonl, and meta.json's lengths.
Ids without a prediction are an error unless ``--missing`` says what to do with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from occmllm import formats
from occmllm.prompts import parse_object

from .synth import writer


def relabel(manifest: pd.DataFrame, predictions: dict[str, str], missing: str, source: str) -> pd.DataFrame:
    m = manifest.copy()
    if "clear_visibility" not in m.columns:
        m["clear_visibility"] = m["clear"].astype(bool)
    absent = [sid for sid in m["id"] if sid not in predictions]
    if absent and missing == "error":
        raise ValueError(f"{len(absent)} of {len(m)} images have no prediction (first: {absent[0]}); "
                         "pass --missing keep (keep their label) or --missing unclear")
    right = [parse_object(predictions[sid]) == cls if sid in predictions else None
             for sid, cls in zip(m["id"], m["class"])]
    if missing == "keep":
        right = [bool(c) if r is None else r for r, c in zip(right, m["clear"])]
    else:
        right = [bool(r) for r in right]
    m["clear"] = right
    m["clear_source"] = [source if sid in predictions else f"{missing}:no prediction" for sid in m["id"]]
    return m


def write_relabelled(data: Path, split: str, m: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Write a relabelled manifest of `split` and every label file made from it, and update meta.json's lengths.
    Returns (manifest, {file name: records})."""
    data = Path(data)
    manifest_path = data / split / "manifest.parquet"
    settings = data / ".synth" / "settings.json"
    seed = json.loads(settings.read_text()).get("seed", 0) if settings.is_file() else 0
    tmp = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
    m.to_parquet(tmp, index=False)
    os.replace(tmp, manifest_path)
    counts = writer.write_label_files(data, split, m, seed)
    meta_path = data / "meta.json"
    meta = formats.read_meta(meta_path) if meta_path.is_file() else {}
    for name, length in counts.items():
        meta[name[: -len(".jsonl")]] = formats.MetaEntry(root=f"{split}/images", annotation=name, length=length)
    formats.write_meta(meta_path, meta)
    return m, counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.relabel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder written by data_tools.synth")
    p.add_argument("--split", choices=writer.SPLITS, required=True)
    p.add_argument("--predictions", type=Path, required=True, help="JSON {id: answer to Q1}")
    p.add_argument("--missing", choices=("error", "keep", "unclear"), default="error",
                   help="images without a prediction: stop (default), keep their label, or mark them unclear")
    args = p.parse_args(argv)
    manifest_path = args.data / args.split / "manifest.parquet"
    try:
        if not manifest_path.is_file():
            raise ValueError(f"{manifest_path}: no manifest (is {args.data} a data_tools.synth folder?)")
        predictions = formats.read_predictions(args.predictions)
        m = relabel(pd.read_parquet(manifest_path), predictions, args.missing, f"predictions:{args.predictions.name}")
    except (ValueError, OSError) as e:  # FormatError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    m, counts = write_relabelled(args.data, args.split, m)
    changed = int((m["clear"] != m["clear_visibility"]).sum())
    print(f"{args.split}: {int(m['clear'].sum())} clear, {int((~m['clear']).sum())} unclear "
          f"({changed} changed from the visibility label); rewrote {', '.join(counts)} and meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
