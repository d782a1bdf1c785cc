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

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from occmllm import formats
from occmllm.dataset import manifest_path
from occmllm.prompts import parse_object

from .synth import writer
from .synth.generate import STATE


def relabel(manifest: pd.DataFrame, predictions: dict[str, str], missing: str, source: str) -> pd.DataFrame:
    """The seed's rule: `clear` is whether the prediction for each id names the manifest's class."""
    absent = [sid for sid in manifest["id"] if sid not in predictions]
    if absent and missing == "error":
        raise ValueError(f"{len(absent)} of {len(manifest)} images have no prediction (first: {absent[0]}); "
                         "pass --missing keep (keep their label) or --missing unclear")
    right = {sid: parse_object(predictions[sid]) == cls
             for sid, cls in zip(manifest["id"], manifest["class"]) if sid in predictions}
    return set_clear(manifest, right, missing, source)


def set_clear(manifest: pd.DataFrame, clear: dict[str, bool], missing: str, source: str) -> pd.DataFrame:
    """A copy of `manifest` whose `clear` column is `clear[id]` (ids without one: `missing` = keep their label, else
    unclear); the generator's visibility label is kept as `clear_visibility`, where each label came from as
    `clear_source`."""
    m = manifest.copy()
    if "clear_visibility" not in m.columns:
        m["clear_visibility"] = m["clear"].astype(bool)
    if missing == "keep":
        m["clear"] = [bool(clear[sid]) if sid in clear else bool(c) for sid, c in zip(m["id"], m["clear"])]
    else:
        m["clear"] = [bool(clear.get(sid, False)) for sid in m["id"]]
    m["clear_source"] = [source if sid in clear else f"{missing}:no prediction" for sid in m["id"]]
    return m


MAX_UNCLEAR = 0.5  # routing_threshold's cap when none is given (train/run_all.py's `clarity.max_unclear` default)


def routing_threshold(confidence, photo_right, render_right,
                      max_unclear: float = MAX_UNCLEAR) -> tuple[float, int, float]:
    """The routing rule that the clarity answer should follow when the 3D route helps: "No." (read the render) for
    the photos whose Q1 answer the model is least sure of. Picks how many of the least sure photos to route (at most
    `max_unclear` of them; the fewest among equals) so that the most answers come out right, reading the render's
    answer for those and the photo's for the rest. Returns (threshold, routed, accuracy): a photo is unclear when
    its confidence < threshold (inf: all routed; -inf: none)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    photo_right, render_right = np.asarray(photo_right, bool), np.asarray(render_right, bool)
    if not len(confidence):
        raise ValueError("routing_threshold: no photos")
    order = np.argsort(confidence, kind="stable")
    conf, photo, render = confidence[order], photo_right[order], render_right[order]
    # k routed (the k least sure): right = render[:k].sum() + photo[k:].sum(), for k = 0 .. n
    right = np.concatenate([[0], np.cumsum(render)]) + np.concatenate([np.cumsum(photo[::-1])[::-1], [0]])
    allowed = np.arange(len(conf) + 1) <= max_unclear * len(conf)
    k = int(np.argmax(np.where(allowed, right, -1)))
    while 0 < k < len(conf) and conf[k - 1] == conf[k]:  # ties in confidence: route all of them or none
        k -= 1
    threshold = -np.inf if k == 0 else (np.inf if k == len(conf) else float(conf[k]))
    return threshold, k, float(right[k] / len(conf))


def write_relabelled(data: Path, split: str, m: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Write a relabelled manifest of `split` and every label file made from it, and update meta.json's lengths.
    Returns (manifest, {file name: records})."""
    data = Path(data)
    manifest = manifest_path(data, split)
    settings = data / STATE / "settings.json"
    seed = json.loads(settings.read_text()).get("seed", 0) if settings.is_file() else 0
    tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    m.to_parquet(tmp, index=False)
    os.replace(tmp, manifest)
    counts = writer.write_label_files(data, split, m, seed)
    meta_path = data / "meta.json"
    meta = formats.read_meta(meta_path) if meta_path.is_file() else {}
    for name, length in counts.items():  # only the lengths change: an entry keeps its other keys (e.g. generation)
        key = name[: -len(".jsonl")]
        meta[key] = (dataclasses.replace(meta[key], length=length) if key in meta else
                     formats.MetaEntry(root=f"{split}/images", annotation=name, length=length))
    formats.write_meta(meta_path, meta)
    return m, counts
