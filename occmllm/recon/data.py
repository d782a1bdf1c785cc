"""Training data for the learned 3D expert, read from the synthetic dataset layout (see data_tools.synth):

    DIR/{split}/images/{id}.jpg     the 256 px photo
    DIR/{split}/shapes/{id}.npz     vertices (camera frame, OpenCV axes, metres), faces, K

Ground truth, prepared once (`prepare_cache`, parallel over CPU cores, resumable): each object's mesh voxelized on a
64^3 cube around it, kept as two bit planes, the solid (every cell inside or touched by the surface) and the surface
cells alone, plus its projected 2D extent and depth. Written to OUT/gt_{split}/shard_{k}.npz, one shard per 1,024
sample ids (id // 1024), each written as soon as its samples are done; a rerun (or a grown dataset) only computes
the samples no shard has yet.

    python -m occmllm.recon.data --data data/synth --out runs/recon --workers 16    # prepare both splits

Training target at a cell = trilinear sample of (solid - surface / 2) at the cell centre: 1 inside, 1/2 on the
surface cells (where the true surface lies somewhere inside the cell), 0 outside; marching cubes at 0.5 then lands
the surface in the middle of the surface cells instead of half a cell outside. `DeviceDataset` holds a whole split
(photos + bit-packed ground truth) as tensors on one device and cuts training batches there (jittered windows, flips,
colour); the photos are decoded once, in parallel, into OUT/images_{split}.npy, which further processes only map.
"""
from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from occmllm.dataset import kind_folder, load_shape, sample_path
from occmllm.images import as_rgb_array
from occmllm.recon.geometry import cube_around, voxelize_parts
from occmllm.recon.model import OccupancyNetConfig

GT_RES = 64
SHARD = 1024


def list_ids(data_dir: str | Path, split: str) -> list[str]:
    """Ids that have both a photo and a shape file, sorted."""
    shapes = kind_folder(data_dir, split, "shapes")
    if not shapes.is_dir():
        raise FileNotFoundError(f"{shapes}: no such folder (expected the synthetic dataset layout: "
                                f"DIR/{{split}}/shapes/{{id}}.npz; make one with `python -m data_tools.synth`)")
    return sorted(p.stem for p in shapes.glob("*.npz") if sample_path(data_dir, split, "images", p.stem).is_file())


def gt_occupancy(vertices: np.ndarray, faces: np.ndarray, res: int = GT_RES):
    """A mesh voxelized in a cube around it: (solid, surface) bool grids indexed [iz, iy, ix], cube corner lo, side."""
    lo, side = cube_around(vertices)
    solid, surface = voxelize_parts(vertices, faces, lo, side / res, res)
    return solid.transpose(2, 1, 0), surface.transpose(2, 1, 0), lo, side


def object_extent(vertices: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(u_min, v_min, u_max, v_max, z_centre): the object's 2D extent in pixels and its depth centre (metres)."""
    uvw = vertices.astype(np.float64) @ K.T.astype(np.float64)
    uv = uvw[:, :2] / uvw[:, 2:3]
    z = (vertices[:, 2].min() + vertices[:, 2].max()) / 2
    return np.array([*uv.min(0), *uv.max(0), z], np.float32)


def window_of(extent: np.ndarray, pad: float) -> np.ndarray:
    """(N, 5) extents -> (N, 4) ground-truth windows (u0, v0, r, z): the padded square around the 2D extent."""
    extent = np.asarray(extent, np.float32).reshape(-1, 5)
    centre = (extent[:, :2] + extent[:, 2:4]) / 2
    r = (extent[:, 2:4] - extent[:, :2]).max(1) / 2 * pad
    return np.concatenate([centre, r[:, None], extent[:, 4:5]], 1).astype(np.float32)


def _prepare_one(path: str) -> tuple:
    shape = load_shape(path)
    vertices, faces, K = shape.vertices, shape.faces.astype(np.int64), shape.K
    solid, surface, lo, side = gt_occupancy(vertices, faces)
    return (object_extent(vertices, K), K, lo.astype(np.float32), np.float32(side), np.packbits(solid.ravel()),
            np.packbits(surface.ravel()))


def _prepare_chunk(paths: list[str]) -> list[tuple]:
    return [_prepare_one(p) for p in paths]


FIELDS = ("extent", "K", "lo", "side", "solid", "surface")


def _shard_path(cache_dir: Path, split: str, shard: int) -> Path:
    return cache_dir / f"gt_{split}" / f"shard_{shard:05d}.npz"


def _read_shard(path: Path) -> dict[str, tuple]:
    if not path.is_file():
        return {}
    try:
        with np.load(path) as data:
            columns = [data[name] for name in FIELDS]
            return {str(sid): tuple(column[n] for column in columns) for n, sid in enumerate(data["ids"])}
    except (OSError, ValueError, KeyError):  # a broken shard (killed mid-write cannot happen: writes are atomic)
        return {}


def _write_shard(path: Path, rows: dict[str, tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(rows)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(keys), **{name: np.stack([rows[k][n] for k in keys]) for n, name in enumerate(FIELDS)})
    os.replace(tmp, path)


def prepare_cache(data_dir: str | Path, split: str, cache_dir: str | Path, workers: int | None = None,
                  limit: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Voxelize every shape of a split that the cache lacks (in `workers` processes), write the shards, and return
    the split's ground truth as arrays: ids, extent (N,5), K (N,3,3), lo (N,3), side (N,), solid/surface (N, 64^3/8)
    bit-packed, in list_ids order."""
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    ids = list_ids(data_dir, split)[:limit]
    if not ids:
        raise FileNotFoundError(f"{data_dir / split}: no samples (images/{{id}}.jpg + shapes/{{id}}.npz)")
    by_shard: dict[int, list[str]] = {}
    for sid in ids:
        by_shard.setdefault(int(sid) // SHARD if sid.isdigit() else 0, []).append(sid)
    shards = {k: _read_shard(_shard_path(cache_dir, split, k)) for k in by_shard}
    missing = [sid for k, group in by_shard.items() for sid in group if sid not in shards[k]]
    if missing:
        workers = workers or os.cpu_count() or 1
        chunk = max(1, min(64, math.ceil(len(missing) / (4 * workers))))
        chunks = [missing[i:i + chunk] for i in range(0, len(missing), chunk)]
        left = {k: sum(sid not in shards[k] for sid in group) for k, group in by_shard.items()}
        paths = lambda group: [str(sample_path(data_dir, split, "shapes", sid)) for sid in group]  # noqa: E731
        bar = tqdm(total=len(missing), desc=f"voxelizing {split} shapes ({workers} workers)", disable=not progress)

        def take(group, results):
            for sid, row in zip(group, results):
                k = int(sid) // SHARD if sid.isdigit() else 0
                shards[k][sid] = row
                left[k] -= 1
                if left[k] == 0:  # this shard is complete: write it now (a crash later keeps it)
                    _write_shard(_shard_path(cache_dir, split, k), shards[k])
            bar.update(len(group))

        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for group, results in zip(chunks, pool.map(_prepare_chunk, [paths(g) for g in chunks])):
                    take(group, results)
        else:
            for group in chunks:
                take(group, _prepare_chunk(paths(group)))
        bar.close()
    rows = [shards[int(sid) // SHARD if sid.isdigit() else 0][sid] for sid in ids]
    out = {name: np.stack([row[n] for row in rows]) for n, name in enumerate(FIELDS)}
    out["ids"] = np.array(ids)
    return out


def _decode_into(task: tuple[str, int, list[str]]) -> int:
    """Decode photos into rows [offset, offset + len(paths)) of the .npy file at `path` (opened here, in the worker:
    the pixels never travel back through a pipe)."""
    path, offset, paths = task
    out = np.load(path, mmap_mode="r+")
    for n, photo in enumerate(paths):
        out[offset + n] = as_rgb_array(photo, 256)
    out.flush()
    return len(paths)


def image_cache(cache_dir: str | Path, split: str) -> tuple[Path, Path]:
    """The decoded-photo cache of a split in cache_dir: (images_{split}.npy, images_{split}.ids)."""
    return Path(cache_dir) / f"images_{split}.npy", Path(cache_dir) / f"images_{split}.ids"


def load_images(data_dir: str | Path, split: str, ids: list[str], cache_dir: str | Path, workers: int | None = None,
                progress: bool = True) -> np.ndarray:
    """All photos of `ids` as uint8 (N, 256, 256, 3), decoded in `workers` processes straight into a memory-mapped
    file, CACHE_DIR/images_{split}.npy (with its ids beside it: a later call with the same ids, e.g. another process of
    a torchrun launch, only maps it). Returned memory-mapped (read-only)."""
    paths = [str(sample_path(data_dir, split, "images", sid)) for sid in ids]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path, id_file = image_cache(cache_dir, split)
    if path.is_file() and id_file.is_file() and id_file.read_text().split() == list(ids):
        return np.load(path, mmap_mode="r")
    partial = path.with_suffix(".partial.npy")
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(ids), 256, 256, 3)).flush()
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) // 64 or 1))
    step = 256
    tasks = [(str(partial), i, paths[i:i + step]) for i in range(0, len(paths), step)]
    with tqdm(total=len(paths), desc=f"loading {split} photos", disable=not progress, leave=False) as bar:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for done in pool.map(_decode_into, tasks):
                    bar.update(done)
        else:
            for task in tasks:
                bar.update(_decode_into(task))
    os.replace(partial, path)  # complete: only now under its name (a crash leaves no half-written cache)
    id_file.write_text("\n".join(ids) + "\n")
    return np.load(path, mmap_mode="r")


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """uint8 (..., n) bit-packed (numpy's big-endian bit order) -> uint8 (..., count) of 0/1, on packed's device."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :count]


class DeviceDataset:
    """One split on one device: photos uint8 (N, 3, 256, 256), the ground truth's solid and surface planes bit-packed
    (N, 64^3 / 8) each (volumes() unpacks samples to uint8 (B, 64, 64, 64) in halves: 2 = inside, 1 = surface cell,
    0 = outside), windows (N, 4) = (u0, v0, r, z), K, cube corners and sides.

    batch() cuts a training batch on the device: jittered windows, horizontal flips (for centred K), colour
    jitter, object-free negatives, and the occupancy targets sampled at the frustum cells of each window."""

    def __init__(self, data_dir: str | Path, split: str, config: OccupancyNetConfig, cache_dir: str | Path,
                 device: str = "cpu", limit: int | None = None, workers: int | None = None, progress: bool = True,
                 thin_targets: bool = False):
        self.config, self.device, self.thin_targets = config, torch.device(device), thin_targets
        gt = prepare_cache(data_dir, split, cache_dir, workers, limit, progress)
        self.ids = [str(i) for i in gt["ids"]]
        n = len(self.ids)
        # the ground truth stays bit-packed on the device (64 KB a sample instead of 512 KB unpacked: a 150,000-photo
        # split fits one GPU); targets_at unpacks only the batch's samples
        self.solid = torch.from_numpy(np.ascontiguousarray(gt["solid"])).to(self.device)
        self.surface = torch.from_numpy(np.ascontiguousarray(gt["surface"])).to(self.device)
        self.windows = torch.from_numpy(window_of(gt["extent"], config.pad)).to(self.device)
        self.K = torch.from_numpy(gt["K"].astype(np.float32)).to(self.device)
        self.lo = torch.from_numpy(gt["lo"].astype(np.float32)).to(self.device)
        self.side = torch.from_numpy(gt["side"].astype(np.float32)).to(self.device)
        images = load_images(data_dir, split, self.ids, cache_dir, workers, progress)
        self.images = torch.empty((n, 3, *images.shape[1:3]), dtype=torch.uint8, device=self.device)
        for i in range(0, n, 4096):  # in blocks: no second whole copy of the photos on the device
            block = torch.from_numpy(np.array(images[i:i + 4096]))  # a copy in memory (the cache is read-only)
            self.images[i:i + 4096] = block.to(self.device).permute(0, 3, 1, 2)
        del images
        self.median_K = np.median(gt["K"], axis=0)

    def __len__(self) -> int:
        return len(self.ids)

    def volumes(self, index: torch.Tensor) -> torch.Tensor:
        """The ground truth of samples `index` on their 64^3 cubes, uint8 (B, 64, 64, 64) in halves: 2 inside, 1 on a
        surface cell, 0 outside (thin_targets: thin parts' surface cells 2, see thin_as_inside)."""
        cells = GT_RES ** 3
        solid, surface = unpack_bits(self.solid[index], cells), unpack_bits(self.surface[index], cells)
        volumes = (2 * solid - surface).view(-1, GT_RES, GT_RES, GT_RES)
        return thin_as_inside(volumes) if self.thin_targets else volumes

    def targets_at(self, index: torch.Tensor, window: torch.Tensor, K: torch.Tensor,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
        """Occupancy targets in [0, 1] at the frustum cells of `window` (B, 4): (B, n_depth, n_xy, n_xy)."""
        c = self.config
        points = frustum_points_torch(window, K, c.n_xy, c.n_depth, c.depth_ratio)
        if flip is not None:
            points[..., 0] = torch.where(flip.view(-1, 1, 1, 1), -points[..., 0], points[..., 0])
        grid = (points - self.lo[index].view(-1, 1, 1, 1, 3)) / self.side[index].view(-1, 1, 1, 1, 1) * 2 - 1
        volume = self.volumes(index).unsqueeze(1).to(grid.dtype) / 2
        return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None, augment: bool = True,
              negative_fraction: float = 0.0, jitter: float = 0.08, zoom: float = 0.2,
              shift: float = 0.08) -> dict[str, torch.Tensor]:
        """A batch as tensors on the device: images uint8 (B, 3, H, W); u0, v0, r, z of the window the shape net
        reads; box (the true window; its z is the box net's depth target, see depth_target); K; occupancy targets;
        has_object.

        augment: flips; the whole photo zoomed by exp(+-zoom) about its centre and shifted by up to +-shift of its
        size (for 3 photos in 4; exact: only the intrinsics change, K follows); the shape net's window jittered by
        `jitter` (centre, in units of r; size, in log units * 1.2) around the true one; colour gain and bias."""
        c, dev = self.config, self.device
        index = index.to(dev)
        n = len(index)
        rand = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        randn = lambda *shape: torch.randn(*shape, generator=generator, device=dev)  # noqa: E731
        images = self.images[index]
        boxes = self.windows[index].clone()
        K = self.K[index]
        flip = torch.zeros(n, dtype=torch.bool, device=dev)
        window = boxes.clone()
        if augment:
            centred = (K[:, 0, 2] - c.image_size / 2).abs() < 1.0
            flip = (rand(n) < 0.5) & centred
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
            boxes[:, 0] = torch.where(flip, c.image_size - boxes[:, 0], boxes[:, 0])
            if zoom > 0 or shift > 0:
                images, boxes, K = zoom_photos(images, boxes, K, rand, zoom, shift)
            window = boxes.clone()
            window[:, 0] += randn(n) * jitter * boxes[:, 2]
            window[:, 1] += randn(n) * jitter * boxes[:, 2]
            window[:, 2] *= torch.exp(randn(n) * jitter * 1.2)
        target = self.targets_at(index, window, K, flip)
        has_object = torch.ones(n, device=dev)
        if negative_fraction > 0:
            negative = rand(n) < negative_fraction
            if negative.any():
                images = images.clone()
                images[negative] = object_free_images(images[negative], boxes[negative], generator)
                has_object[negative] = 0
        if augment:
            gain = 0.75 + 0.5 * rand(n, 3, 1, 1)
            bias = 40 * rand(n, 1, 1, 1) - 20
            images = (images.float() * gain + bias).clamp(0, 255).to(torch.uint8)
        box = boxes.clone()
        box[:, 3] = depth_target(boxes[:, 3], K[:, 0, 0], c)
        return {"images": images, "u0": window[:, 0], "v0": window[:, 1], "r": window[:, 2], "z": window[:, 3],
                "box": box, "K": K, "occupancy": target, "has_object": has_object}


def thin_as_inside(volumes: torch.Tensor) -> torch.Tensor:
    """Ground-truth volumes (B, 64, 64, 64) in halves with the surface cells that touch no inside cell (26
    neighbours) counted as inside: parts thinner than about two cells (a knife's blade, a bowl's wall) are all surface
    cells, whose target of 1/2 the 0.5 threshold drops; as 1 they stay in the mesh, while thick parts keep their
    surface in the middle of the surface cells. On the first 240 seed-1 test photos this raises the grid's ceiling from
    0.917 to 0.930, for knives from 0.622 to 0.741 and for bowls from 0.823 to 0.875, the other classes unchanged
    (`python -m benchmarks.bench_recon --data /tmp/loc --limit 240 --timing 0 --ceiling 240 --ceiling-targets
    thin`)."""
    inside = (volumes == 2).unsqueeze(1).float()
    near_inside = F.max_pool3d(inside, 3, stride=1, padding=1)[:, 0] > 0
    return torch.where((volumes == 1) & ~near_inside, torch.full_like(volumes, 2), volumes)


def depth_target(z: torch.Tensor, fx: torch.Tensor, config: OccupancyNetConfig) -> torch.Tensor:
    """What the box net learns for the object's depth: with config.z_per_focal, the depth at which the object would
    look the same size through the reference focal length config.fx (z * config.fx / fx; the photo's own K turns it
    back, see OccupancyNet.depth_of), else z itself (older weights)."""
    return z * config.fx / fx if config.z_per_focal else z


def zoom_photos(images: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor, rand, zoom: float, shift: float,
                share: float = 0.75):
    """Zoom photos (B, 3, S, S) uint8 by s = exp(U(-zoom, zoom)) about their centre and shift them by
    U(-shift, shift) * S pixels (a `share` of them; the others stay): pixel p -> s (p - S/2) + S/2 + t. That is
    exactly a change of intrinsics (fx, fy scale by s, the principal point moves the same way as the pixels), so the
    3D ground truth stays right with the new K. Returns the photos, windows (u0, v0, r, z) and K after the zoom."""
    n, _, size, _ = images.shape
    on = (rand(n) < share).float()
    s = torch.exp((rand(n) * 2 - 1) * zoom * on)
    t = (rand(n, 2) * 2 - 1) * shift * size * on.unsqueeze(1)
    half = size / 2
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = -t / (s.unsqueeze(1) * half)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    zoomed = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    images = torch.where(on.view(-1, 1, 1, 1) > 0, zoomed.round().clamp(0, 255).to(torch.uint8), images)
    boxes = boxes.clone()
    boxes[:, 0] = s * (boxes[:, 0] - half) + half + t[:, 0]
    boxes[:, 1] = s * (boxes[:, 1] - half) + half + t[:, 1]
    boxes[:, 2] = s * boxes[:, 2]
    K = K.clone()
    K[:, 0, 0] *= s
    K[:, 1, 1] *= s
    K[:, 0, 2] = s * (K[:, 0, 2] - half) + half + t[:, 0]
    K[:, 1, 2] = s * (K[:, 1, 2] - half) + half + t[:, 1]
    return images, boxes, K


def frustum_points_torch(window: torch.Tensor, K: torch.Tensor, n_xy: int, n_depth: int,
                         depth_ratio: float) -> torch.Tensor:
    """Camera-frame centres of the frustum cells of windows (B, 4) = (u0, v0, r, z): (B, n_depth, n_xy, n_xy, 3)."""
    u0, v0, r, z = (window[:, i].view(-1, 1, 1, 1) for i in range(4))
    fx, fy = K[:, 0, 0].view(-1, 1, 1, 1), K[:, 1, 1].view(-1, 1, 1, 1)
    cx, cy = K[:, 0, 2].view(-1, 1, 1, 1), K[:, 1, 2].view(-1, 1, 1, 1)
    cells = lambda m: (torch.arange(m, dtype=torch.float32, device=window.device) + 0.5) / m * 2 - 1  # noqa: E731
    c, b, a = torch.meshgrid(cells(n_depth), cells(n_xy), cells(n_xy), indexing="ij")
    depth = z + depth_ratio * r * z / fx * c
    x = (u0 + r * a - cx) / fx * depth
    y = (v0 + r * b - cy) / fy * depth
    return torch.stack([x, y, depth], -1)


def object_free_images(images: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Photos without the object (B, 3, H, W) uint8: a square of the photo away from the object's window, blown
    up (it may show the hand or the background) when one is found in 8 tries, else a flat or gradient image."""
    n, _, size, _ = images.shape
    dev = images.device
    rand = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    chosen = torch.zeros(n, 3, device=dev)
    for _ in range(8):
        s = size * (0.25 + 0.25 * rand(n))
        x, y = rand(n) * (size - s), rand(n) * (size - s)
        u0, v0, r = boxes[:, 0], boxes[:, 1], boxes[:, 2]
        clear = (x > u0 + r) | (x + s < u0 - r) | (y > v0 + r) | (y + s < v0 - r)
        take = clear & ~found & (rand(n) < 0.7)
        chosen[take] = torch.stack([x, y, s], 1)[take]
        found |= take
    theta = torch.zeros(n, 2, 3, device=dev)
    half = size / 2
    theta[:, 0, 0] = theta[:, 1, 1] = chosen[:, 2] / size
    theta[:, 0, 2] = (chosen[:, 0] + chosen[:, 2] / 2) / half - 1
    theta[:, 1, 2] = (chosen[:, 1] + chosen[:, 2] / 2) / half - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    patches = F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
    a, b = 255 * rand(n, 3, 1, 1), 255 * rand(n, 3, 1, 1)
    t = torch.linspace(0, 1, size, device=dev)
    horizontal = rand(n, 1, 1, 1) < 0.5
    ramp = torch.where(horizontal, t.view(1, 1, 1, -1), t.view(1, 1, -1, 1))
    flat = a * (1 - ramp) + b * ramp + 3 * torch.randn(n, 3, size, size, generator=generator, device=dev)
    return torch.where(found.view(-1, 1, 1, 1), patches, flat).clamp(0, 255).to(torch.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the 3D expert's ground truth (voxelized shapes) for the "
                                     "splits of a synthetic dataset, in parallel; resumable.")
    parser.add_argument("--data", required=True, help="dataset folder made by `python -m data_tools.synth`")
    parser.add_argument("--out", required=True, help="cache folder (the training output folder): OUT/gt_{split}/")
    parser.add_argument("--splits", nargs="+", default=["train", "test"])
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples of each split")
    args = parser.parse_args(argv)
    import time

    for split in args.splits:
        start = time.time()
        gt = prepare_cache(args.data, split, args.out, args.workers, args.limit)
        print(f"{split}: ground truth of {len(gt['ids'])} shapes ready in {args.out}/gt_{split} "
              f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
