"""How close a reconstructed mesh is to the true one (both camera frame, metres).

    compare_meshes(pred, truth) -> {"iou", "chamfer", "chamfer_rel", "fscore"}

iou: volumetric IoU of the two solids on a 64^3 grid spanning both. chamfer: symmetric mean surface distance
((pred->truth + truth->pred) / 2, metres, 5,000 surface samples each); chamfer_rel: the same over the true
object's size (longest side of its bounding box). fscore: F-score of surface points within 5% of the object size.
A missing prediction scores iou 0, fscore 0, chamfer inf.
"""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from occmllm.recon.geometry import voxelize


def object_size(mesh: trimesh.Trimesh) -> float:
    lo, hi = mesh.bounds
    return float((hi - lo).max())


def volumetric_iou(pred: trimesh.Trimesh, truth: trimesh.Trimesh, res: int = 64) -> float:
    lo = np.minimum(pred.bounds[0], truth.bounds[0])
    hi = np.maximum(pred.bounds[1], truth.bounds[1])
    pitch = max(float((hi - lo).max()) * 1.02 / res, 1e-6)  # cubic cells: thin parts stay thin
    lo = lo - 0.01 * (hi - lo)
    a = voxelize(pred.vertices, pred.faces, lo, pitch, res)
    b = voxelize(truth.vertices, truth.faces, lo, pitch, res)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def depth_aligned(pred: trimesh.Trimesh, truth: trimesh.Trimesh) -> trimesh.Trimesh:
    """pred scaled about the camera centre so that its bounding-box depth centre matches the truth's (the scale that
    one photo cannot tell: what the benchmark's "depth-aligned" scores use)."""
    scale = truth.bounds[:, 2].mean() / pred.bounds[:, 2].mean()
    return trimesh.Trimesh(pred.vertices * scale, pred.faces, process=False)


def compare_meshes(pred: trimesh.Trimesh | None, truth: trimesh.Trimesh, fraction: float = 0.05,
                   samples: int = 5000, seed: int = 0) -> dict[str, float]:
    if pred is None or len(pred.faces) == 0:
        return {"iou": 0.0, "chamfer": float("inf"), "chamfer_rel": float("inf"), "fscore": 0.0}
    size = object_size(truth)
    p, _ = trimesh.sample.sample_surface(pred, samples, seed=seed)
    t, _ = trimesh.sample.sample_surface(truth, samples, seed=seed + 1)
    d_pt = cKDTree(t).query(p)[0]
    d_tp = cKDTree(p).query(t)[0]
    chamfer = float((d_pt.mean() + d_tp.mean()) / 2)
    tau = fraction * size
    precision, recall = float((d_pt < tau).mean()), float((d_tp < tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"iou": volumetric_iou(pred, truth), "chamfer": chamfer, "chamfer_rel": chamfer / size, "fscore": fscore}
