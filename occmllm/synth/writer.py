"""Writing the synthetic dataset: one sample's files (atomically, shape last) and the split-level files.

A sample is complete when ``{split}/shapes/{id}.npz`` exists: it is written last, by rename, and carries the
sample's labels too, so a killed run leaves at worst image/render/mask files without a shape, which a resumed run
overwrites and which no manifest lists. Manifests, JSONL files and meta.json are written at the end of a run, each
atomically, from the labels of complete samples only.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from occmllm import formats
from occmllm.dataset import GENERATED_KINDS as KINDS
from occmllm.dataset import SPLITS, kind_folder, manifest_path, sample_path

JPEG_QUALITY = 90
PNG_LEVEL = 1  # zlib level: 1 writes 2x faster than 6 for ~1 KB more per sample (measured)
PLAN_SHARE = 0.3  # share of the balanced CoT mix asked the Q0 plan question (18 of the seed's 60 sample lines)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sample_id(index: int) -> str:
    return f"{index:08d}"


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz (np.load reads it) with fixed zip timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_sample(root: Path, split: str, sample) -> dict:
    """Write one ``scene.Sample``; returns its manifest row (labels + id + split)."""
    sid = sample_id(sample.index)
    row = {"id": sid, "split": split, **sample.labels}
    masks = np.zeros((*sample.amodal.shape, 3), dtype=np.uint8)
    masks[..., 0] = sample.amodal * 255
    masks[..., 1] = sample.visible * 255
    _atomic_bytes(sample_path(root, split, "images", sid), _jpeg(sample.photo))
    _atomic_bytes(sample_path(root, split, "renders", sid), _png(sample.render))
    _atomic_bytes(sample_path(root, split, "masks", sid), _png(masks))
    shape = {
        "vertices": sample.vertices, "faces": sample.faces, "K": sample.K,
        "occupancy": np.packbits(sample.occupancy.ravel()), "occupancy_shape": np.array(sample.occupancy.shape),
        "bounds": sample.bounds, "object_to_camera": sample.object_to_camera,
        "labels": np.array(json.dumps(row, sort_keys=True)),
    }
    _atomic_bytes(sample_path(root, split, "shapes", sid), npz_bytes(shape))  # last: marks the sample complete
    return row


def read_row(root: Path, split: str, sid: str) -> dict:
    """The manifest row stored inside a complete sample's shape file."""
    with np.load(sample_path(root, split, "shapes", sid), allow_pickle=False) as z:
        return json.loads(str(z["labels"]))


def make_dirs(root: Path) -> None:
    for split in SPLITS:
        for kind in KINDS:
            kind_folder(root, split, kind).mkdir(parents=True, exist_ok=True)


def remove_partial(root: Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    removed = 0
    for split in SPLITS:
        for kind in KINDS:
            folder = kind_folder(root, split, kind)
            if not folder.is_dir():
                continue
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.endswith(".tmp"):
                        os.unlink(entry.path)
                        removed += 1
    return removed


def complete_ids(root: Path, split: str) -> set[str]:
    folder = kind_folder(root, split, "shapes")
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name[:-4] for e in it if e.name.endswith(".npz") and not e.name.startswith(".")}


def balanced_ids(manifest: pd.DataFrame, seed: int) -> list[str]:
    """Ids with as many clear as unclear images (all of the smaller group, a seeded draw of the larger), in a
    seeded random order, as the seed's balanced files are."""
    rng = np.random.default_rng([int(seed), 0xBA1])
    clear = manifest.loc[manifest["clear"], "id"].sort_values().tolist()
    unclear = manifest.loc[~manifest["clear"], "id"].sort_values().tolist()
    k = min(len(clear), len(unclear))
    chosen = [clear[i] for i in sorted(rng.choice(len(clear), k, replace=False))] + \
             [unclear[i] for i in sorted(rng.choice(len(unclear), k, replace=False))]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def write_label_files(root: Path, split: str, manifest: pd.DataFrame, seed: int) -> dict[str, int]:
    """Every seed-format JSONL of one split from its manifest; returns {file name: records}."""
    root = Path(root)
    m = manifest.sort_values("id").reset_index(drop=True)
    image = {sid: f"{sid}.jpg" for sid in m["id"]}
    by_id = m.set_index("id")
    counts = {}
    counts[f"{split}_Q1.jsonl"] = formats.write_jsonl(
        root / f"{split}_Q1.jsonl", (formats.q1_conversation(sid, image[sid], cls) for sid, cls in
                                     zip(m["id"], m["class"])))
    counts[f"{split}_Q1_Q6.jsonl"] = formats.write_jsonl(
        root / f"{split}_Q1_Q6.jsonl", (formats.q1_q6_conversation(sid, image[sid], cls, bool(clear))
                                        for sid, cls, clear in zip(m["id"], m["class"], m["clear"])))
    balanced = balanced_ids(m, seed)
    counts[f"{split}_Q1_Q6_balanced_dpo.jsonl"] = formats.write_jsonl(
        root / f"{split}_Q1_Q6_balanced_dpo.jsonl",
        (formats.clarity_pair(image[sid], bool(by_id.at[sid, "clear"])) for sid in balanced))
    plan_rng = np.random.default_rng([int(seed), 0x0B0])
    plan = plan_rng.random(len(balanced)) < PLAN_SHARE
    counts[f"{split}_Q1_Q6_Q0_balanced.jsonl"] = formats.write_jsonl(
        root / f"{split}_Q1_Q6_Q0_balanced.jsonl",
        (formats.plan_conversation(sid, image[sid]) if p else
         formats.q1_q6_conversation(sid, image[sid], by_id.at[sid, "class"], bool(by_id.at[sid, "clear"]))
         for sid, p in zip(balanced, plan)))
    counts[f"{split}_attributes.jsonl"] = formats.write_jsonl(
        root / f"{split}_attributes.jsonl",
        (formats.attribute_conversation(sid, image[sid], {"round": bool(a), "thin": bool(b), "long": bool(c)})
         for sid, a, b, c in zip(m["id"], m["round"], m["thin"], m["long"])))
    return counts


def write_meta(root: Path, counts: dict[str, dict[str, int]], generation: int | None = None) -> None:
    """meta.json: one InternVL entry per JSONL, paths relative to the meta file's folder; each entry also records
    the generator ``generation`` (an extra key InternVL ignores)."""
    meta = {}
    extra = {} if generation is None else {"generation": int(generation)}
    for split, files in counts.items():
        for name, length in files.items():
            meta[name[: -len(".jsonl")]] = formats.MetaEntry(root=f"{split}/images", annotation=name, length=length,
                                                             extra=dict(extra))
    formats.write_meta(Path(root) / "meta.json", meta)


MANIFEST_FIRST = ["id", "split", "class", "visible_fraction", "round", "thin", "long", "clear"]


def write_manifest(root: Path, split: str, rows: list[dict]) -> pd.DataFrame:
    """manifest.parquet: one row per complete sample, the main labels first, then everything else in name order."""
    m = pd.DataFrame(rows) if rows else pd.DataFrame(columns=MANIFEST_FIRST)
    m = m[MANIFEST_FIRST + sorted(c for c in m.columns if c not in MANIFEST_FIRST)]
    m = m.sort_values("id").reset_index(drop=True)
    path = manifest_path(root, split)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    m.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return m
