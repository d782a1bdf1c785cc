"""Training data for the learned 3D expert, read from the synthetic dataset layout (see data_tools.synth):

    DIR/{split}/images/{id}.jpg     the 256 px photo
    DIR/{split}/shapes/{id}.npz     vertices (camera frame, OpenCV axes, metres), faces, K

Each object's solid occupancy grid in a cube around it (the mesh voxelized at 64^3; or, with use_stored_occupancy,
the generator's own coarser `occupancy` + `bounds`) is cached bit-packed in OUT/cache_{split}.npz; training targets are read from that grid at the frustum cells of the (jittered) window.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from occmllm.recon.geometry import box_around_mesh, cube_around, voxelize
from occmllm.recon.model import OccupancyNetConfig

GT_RES = 64


def list_ids(data_dir: str | Path, split: str) -> list[str]:
    """Ids that have both a photo and a shape file, sorted."""
    root = Path(data_dir) / split
    if not (root / "shapes").is_dir():
        raise FileNotFoundError(f"{root / 'shapes'}: no such folder (expected the synthetic dataset layout: "
                                f"DIR/{{split}}/shapes/{{id}}.npz; make one with `python -m data_tools.synth`)")
    return sorted(p.stem for p in (root / "shapes").glob("*.npz") if (root / "images" / f"{p.stem}.jpg").is_file())


def stored_occupancy(path: str | Path) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The generator's own occupancy grid (exact inside tests) when the shape file has one: (grid [iz, iy, ix],
    cube corner lo, side), else None."""
    with np.load(path) as data:
        if "occupancy" not in data or "bounds" not in data:
            return None
        grid, bounds = np.asarray(data["occupancy"]), np.asarray(data["bounds"], np.float32)
        if "occupancy_shape" in data:  # bit-packed
            shape = tuple(int(s) for s in data["occupancy_shape"])
            grid = np.unpackbits(grid)[: int(np.prod(shape))].reshape(shape)
    grid = grid.astype(bool)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        return None
    return grid.transpose(2, 1, 0), bounds[0], float((bounds[1] - bounds[0]).max())


def load_shape(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices float32 (N,3), faces int64 (M,3), K float32 (3,3)) from a shapes/{id}.npz file."""
    try:
        with np.load(path) as data:
            return (np.asarray(data["vertices"], np.float32), np.asarray(data["faces"], np.int64),
                    np.asarray(data["K"], np.float32))
    except KeyError as err:
        raise ValueError(f"{path}: missing array {err} (need vertices, faces, K)") from None


def load_image(path: str | Path, size: int = 256) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def gt_occupancy(vertices: np.ndarray, faces: np.ndarray, res: int = GT_RES) -> tuple[np.ndarray, np.ndarray, float]:
    """Solid occupancy of a mesh in a cube around it: (bool grid indexed [iz, iy, ix], cube corner lo, side)."""
    lo, side = cube_around(vertices)
    grid = voxelize(vertices, faces, lo, side / res, res)
    return grid.transpose(2, 1, 0), lo, side


class ReconTrainingSet:
    """All samples of one split in memory: photos, ground-truth windows, K, and bit-packed 64^3 occupancy."""

    def __init__(self, data_dir: str | Path, split: str, config: OccupancyNetConfig, cache_dir: str | Path | None = None,
                 limit: int | None = None, use_stored_occupancy: bool = False):
        self.config = config
        ids = list_ids(data_dir, split)[:limit]
        if not ids:
            raise FileNotFoundError(f"{Path(data_dir) / split}: no samples (images/{{id}}.jpg + shapes/{{id}}.npz)")
        root = Path(data_dir) / split
        cache = Path(cache_dir) / f"cache_{split}.npz" if cache_dir else None
        cached = {}
        if cache and cache.is_file():  # reuse every sample voxelized before (the dataset may have grown since)
            with np.load(cache) as data:
                for n, sid in enumerate(data["ids"]):
                    cached[str(sid)] = (data["boxes"][n], data["K"][n], data["lo"][n], data["side"][n], data["occ"][n])
        rows, new = [], False
        for sid in tqdm(ids, desc=f"voxelizing {split} shapes", leave=False):
            if sid not in cached:
                vertices, faces, K = load_shape(root / "shapes" / f"{sid}.npz")
                box = box_around_mesh(vertices, K, config.pad, config.depth_ratio)
                stored = stored_occupancy(root / "shapes" / f"{sid}.npz") if use_stored_occupancy else None
                grid, lo, side = stored if stored is not None else gt_occupancy(vertices, faces)
                cached[sid] = (box.as_array()[:4], K, lo, np.float32(side), np.packbits(grid.ravel()))
                new = True
            rows.append(cached[sid])
        boxes, Ks, los, sides, occs = (np.stack(column) for column in zip(*rows))
        self._set(ids, boxes, Ks, los, sides.astype(np.float32), occs)
        if cache and new:
            cache.parent.mkdir(parents=True, exist_ok=True)
            keys = sorted(cached)
            np.savez(cache, ids=np.array(keys), **{name: np.stack([cached[k][n] for k in keys]) for n, name in
                                                   enumerate(("boxes", "K", "lo", "side", "occ"))})
        self.images = np.stack([load_image(root / "images" / f"{sid}.jpg", config.image_size)
                                for sid in tqdm(ids, desc=f"loading {split} photos", leave=False)])

    def _set(self, ids, boxes, K, lo, side, occ):
        self.res = round((occ.shape[1] * 8) ** (1 / 3))
        while self.res ** 3 > occ.shape[1] * 8:
            self.res -= 1
        self.ids, self.boxes, self.K, self.lo, self.side, self.occ = list(ids), boxes, K, lo, side, occ

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: np.ndarray, rng: np.random.Generator, augment: bool = True,
              negative_fraction: float = 0.0) -> dict[str, torch.Tensor]:
        """Photos (uint8 B,H,W,3), windows (jittered when augment), occupancy targets in those windows, box
        targets, has_object flags. With negative_fraction, some photos are swapped for object-free images."""
        c = self.config
        images = torch.from_numpy(self.images[index].copy())
        boxes = torch.from_numpy(self.boxes[index].astype(np.float32))
        K = torch.from_numpy(self.K[index].astype(np.float32))
        n = len(index)
        flip = torch.zeros(n, dtype=torch.bool)
        if augment:
            centred = (K[:, 0, 2] - c.image_size / 2).abs() < 1.0
            flip = torch.from_numpy(rng.random(n) < 0.5) & centred
            images[flip] = images[flip].flip(2)
            boxes[flip, 0] = c.image_size - boxes[flip, 0]
        window = boxes.clone()
        if augment:
            window[:, 0] += torch.from_numpy(rng.normal(0, 0.06, n).astype(np.float32)) * boxes[:, 2]
            window[:, 1] += torch.from_numpy(rng.normal(0, 0.06, n).astype(np.float32)) * boxes[:, 2]
            window[:, 2] *= torch.from_numpy(np.exp(rng.normal(0, 0.07, n)).astype(np.float32))
        res = self.res
        occ = np.unpackbits(self.occ[index], axis=1)[:, : res ** 3].reshape(n, 1, res, res, res)
        points = frustum_points_torch(window, K, c.n_xy, c.n_depth, c.depth_ratio)  # (B, nd, n, n, 3)
        points[..., 0] = torch.where(flip.view(-1, 1, 1, 1), -points[..., 0], points[..., 0])
        lo = torch.from_numpy(self.lo[index].astype(np.float32)).view(n, 1, 1, 1, 3)
        side = torch.from_numpy(self.side[index].astype(np.float32)).view(n, 1, 1, 1, 1)
        grid = (points - lo) / side * 2 - 1
        target = F.grid_sample(torch.from_numpy(occ).float(), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)[:, 0]
        has_object = torch.ones(n)
        if negative_fraction > 0:
            for b in np.nonzero(rng.random(n) < negative_fraction)[0]:
                images[b] = torch.from_numpy(object_free_image(self.images[index[b]], self.boxes[index[b]], rng).copy())
                has_object[b] = 0
        if augment:
            gain = torch.from_numpy(rng.uniform(0.75, 1.25, (n, 1, 1, 3)).astype(np.float32))
            images = (images.float() * gain + torch.from_numpy(rng.uniform(-20, 20, (n, 1, 1, 1)).astype(np.float32)))
            images = images.clamp(0, 255).to(torch.uint8)
        return {"images": images, "u0": window[:, 0], "v0": window[:, 1], "r": window[:, 2], "z": window[:, 3],
                "box": boxes, "K": K, "occupancy": target, "has_object": has_object}


def frustum_points_torch(window: torch.Tensor, K: torch.Tensor, n_xy: int, n_depth: int,
                         depth_ratio: float) -> torch.Tensor:
    """Camera-frame centres of the frustum cells of windows (B, 4) = (u0, v0, r, z): (B, n_depth, n_xy, n_xy, 3)."""
    u0, v0, r, z = (window[:, i].view(-1, 1, 1, 1) for i in range(4))
    fx, fy = K[:, 0, 0].view(-1, 1, 1, 1), K[:, 1, 1].view(-1, 1, 1, 1)
    cx, cy = K[:, 0, 2].view(-1, 1, 1, 1), K[:, 1, 2].view(-1, 1, 1, 1)
    cells = lambda m: (torch.arange(m, dtype=torch.float32) + 0.5) / m * 2 - 1  # noqa: E731
    c, b, a = torch.meshgrid(cells(n_depth), cells(n_xy), cells(n_xy), indexing="ij")
    depth = z + depth_ratio * r * z / fx * c
    x = (u0 + r * a - cx) / fx * depth
    y = (v0 + r * b - cy) / fy * depth
    return torch.stack([x, y, depth], -1)


def object_free_image(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo without the object: a corner of the photo away from the object's window, blown up (it may show the
    hand or the background), or a flat / gradient image."""
    size = image.shape[0]
    u0, v0, r = box[:3]
    if rng.random() < 0.7:
        for _ in range(8):
            s = int(rng.integers(size // 4, size // 2))
            x, y = int(rng.integers(0, size - s)), int(rng.integers(0, size - s))
            if x > u0 + r or x + s < u0 - r or y > v0 + r or y + s < v0 - r:
                patch = Image.fromarray(image[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
                return np.asarray(patch, dtype=np.uint8)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[:, None, None]
    return np.broadcast_to(a * (1 - t) + b * t, (size, size, 3)).astype(np.uint8)
