"""Reader of the synthetic dataset layout that ``python -m data_tools.synth`` writes.

    from occmllm.dataset import SynthDataset
    ds = SynthDataset("data/synth", "test")
    ds.manifest                      # pandas DataFrame: id, class, visible_fraction, round, thin, long, clear, ...
    photo = ds.load_image("00000042")            # uint8 256x256x3
    shape = ds.load_shape("00000042")            # Shape: vertices, faces, K, occupancy, bounds, object_to_camera
    amodal, visible = ds.load_masks("00000042")  # bool 256x256 each

Layout (the one place it is written down; the generator, training, the evaluation and the tools go through
`sample_path`, `kind_folder`, `manifest_path` and `manifest_rows`): DIR/{split}/images/{id}.jpg, renders/{id}.png,
masks/{id}.png (R amodal, G visible), shapes/{id}.npz (written last: a sample is complete once it is there),
manifest.parquet, and expert_renders/{id}.png once a 3D expert has rendered the split (occmllm.expert_renders).
Only ids in the manifest are trusted (a killed generator run may leave unlisted files).
Shape frame: camera frame, OpenCV axes (x right, y down, z forward), metres; ``occupancy`` is a bool grid
indexed ``[ix, iy, iz]`` whose cell centres are ``bounds[0] + (i + 0.5) * (bounds[1] - bounds[0]) / n``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from occmllm.images import as_rgb_array

SPLITS = ("train", "test")
FILE_TYPES = {"images": ".jpg", "renders": ".png", "masks": ".png", "shapes": ".npz", "expert_renders": ".png"}
GENERATED_KINDS = ("images", "renders", "masks", "shapes")  # what the generator writes for each sample, shapes last
EXPERT_RENDERS = "expert_renders"  # the 3D expert's render of each photo, as the 3D route shows it to the model
MANIFEST = "manifest.parquet"


def kind_folder(root: str | Path, split: str, kind: str) -> Path:
    """DIR/{split}/{kind}: the folder of one kind of file (images, renders, masks, shapes, expert_renders)."""
    return Path(root) / split / kind


def sample_path(root: str | Path, split: str, kind: str, sid: str) -> Path:
    """DIR/{split}/{kind}/{id}.{jpg|png|npz}."""
    return kind_folder(root, split, kind) / f"{sid}{FILE_TYPES[kind]}"


def manifest_path(root: str | Path, split: str) -> Path:
    return Path(root) / split / MANIFEST


def manifest_rows(split_folder: str | Path, from_shapes: bool = False) -> dict[str, dict]:
    """{id: manifest row} of DIR/{split} (`split_folder`); with no manifest, {} or (from_shapes) the labels each
    complete sample's shape file holds."""
    path = Path(split_folder) / MANIFEST
    if path.is_file():
        frame = pd.read_parquet(path)
        frame["id"] = frame["id"].astype(str)
        return {row["id"]: row for row in frame.to_dict("records")}
    rows = {}
    if from_shapes:
        for shape in sorted((Path(split_folder) / "shapes").glob("*.npz")):
            with np.load(shape, allow_pickle=False) as data:
                if "labels" in data:
                    rows[shape.stem] = {"id": shape.stem, **json.loads(str(data["labels"]))}
    return rows


@dataclass
class Shape:
    vertices: np.ndarray  # float32 (N,3) camera frame
    faces: np.ndarray  # int32 (M,3)
    K: np.ndarray  # float32 (3,3), pixels of the 256x256 image
    occupancy: np.ndarray | None  # bool (n,n,n) indexed [ix, iy, iz], or None when the file has none
    bounds: np.ndarray | None  # float32 (2,3): min and max corner of the occupancy box
    object_to_camera: np.ndarray | None  # float32 (4,4)
    labels: dict

    def cell_centres(self) -> np.ndarray:
        """Camera-frame centres (n,n,n,3) of the occupancy cells."""
        n = self.occupancy.shape[0]
        lo, hi = self.bounds
        axis = [lo[d] + (np.arange(n) + 0.5) * (hi[d] - lo[d]) / n for d in range(3)]
        return np.stack(np.meshgrid(*axis, indexing="ij"), -1)


def load_shape(path: str | Path) -> Shape:
    """One shapes/{id}.npz file (occupancy unpacked to bool); ValueError naming the file when it cannot be read."""
    try:
        return _read_shape(path)
    except KeyError as err:
        raise ValueError(f"{path}: missing array {err} (need vertices, faces, K)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable shape file ({err})") from None


def _read_shape(path: str | Path) -> Shape:
    with np.load(path, allow_pickle=False) as z:
        occupancy = bounds = obj_to_cam = None
        if "occupancy" in z:
            occ = z["occupancy"]
            if "occupancy_shape" in z:
                shape = tuple(int(s) for s in z["occupancy_shape"])
                occ = np.unpackbits(occ)[: int(np.prod(shape))].reshape(shape)
            occupancy = occ.astype(bool)
            bounds = z["bounds"].astype(np.float32)
        if "object_to_camera" in z:
            obj_to_cam = z["object_to_camera"]
        labels = json.loads(str(z["labels"])) if "labels" in z else {}
        return Shape(z["vertices"].astype(np.float32), z["faces"].astype(np.int32), z["K"].astype(np.float32),
                     occupancy, bounds, obj_to_cam, labels)


class SynthDataset:
    """One split of a synthetic dataset folder."""

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        self.folder = self.root / split
        manifest = manifest_path(self.root, split)
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no manifest (make the dataset with `python -m data_tools.synth "
                                    f"--out {self.root} --n N`, and let it finish or re-run it to finish)")
        self.manifest = pd.read_parquet(manifest)
        self.ids: list[str] = list(self.manifest["id"])

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, sid: str) -> dict:
        return self.manifest.loc[self.manifest["id"] == sid].iloc[0].to_dict()

    def image_path(self, sid: str) -> Path:
        return sample_path(self.root, self.split, "images", sid)

    def render_path(self, sid: str) -> Path:
        return sample_path(self.root, self.split, "renders", sid)

    def mask_path(self, sid: str) -> Path:
        return sample_path(self.root, self.split, "masks", sid)

    def shape_path(self, sid: str) -> Path:
        return sample_path(self.root, self.split, "shapes", sid)

    def load_image(self, sid: str) -> np.ndarray:
        return as_rgb_array(self.image_path(sid))

    def load_render(self, sid: str) -> np.ndarray:
        return as_rgb_array(self.render_path(sid))

    def load_masks(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        """(amodal, visible) bool masks of the object."""
        m = np.asarray(Image.open(self.mask_path(sid)).convert("RGB"))
        return m[..., 0] > 127, m[..., 1] > 127

    def load_shape(self, sid: str) -> Shape:
        return load_shape(self.shape_path(sid))
