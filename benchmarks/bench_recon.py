"""Benchmark of the 3D expert on the synthetic test split: shape quality, speed, and (with --model) what the VLM gains
from reading the expert's renders instead of the photos of heavily hidden objects.

    python -m benchmarks.bench_recon --data data/synth                       # shipped weights, 300 photos
    python -m benchmarks.bench_recon --data data/synth --expert learned:runs/recon --limit 0 --workers 16  # all
    python -m benchmarks.bench_recon --data data/synth --model runs/vlm/final          # + VLM accuracy

Prints, overall and per visible-fraction bucket (from DIR/test/manifest.parquet): mean volumetric IoU, Chamfer
distance (mm, and relative to the object size) and F-score at 5% of the object size, both in the camera frame as
predicted ("absolute") and after scaling the prediction about the camera centre so its depth matches the truth
("depth-aligned": removes the one-photo scale ambiguity, the render is unchanged). Then the median time of
reconstruct() (network + marching cubes + render). The photo's true K is passed to the expert, which reads
the photo and its mirror image and averages both (LearnedExpert's default flip_average=True). With --model: Q1 accuracy on the photo, on the learned expert's
render and on the oracle's (ground-truth) render, for photos with visible fraction < 0.4. With --ceiling N: the IoU
that the expert's output grid allows at best, i.e. the ground truth sampled at the frustum cells of the true window,
meshed by the same marching cubes, against the true mesh (first N test photos). Last, the depth-aligned IoU and F-score
per object class (and the ceiling per class with --ceiling).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from occmllm.dataset import load_shape, manifest_rows, sample_path
from occmllm.recon import LearnedExpert, OracleExpert
from occmllm.recon.data import list_ids
from occmllm.recon.experts import learned_weights
from occmllm.recon.scores import compare_meshes, depth_aligned
from occmllm.shipped import LEARNED_HELP

BUCKETS = [("visible < 0.4", 0.0, 0.4), ("0.4 - 0.7", 0.4, 0.7), ("visible >= 0.7", 0.7, 1.01)]


def bucket_of(fraction: float | None) -> str | None:
    if fraction is None:
        return None
    return next(name for name, lo, hi in BUCKETS if lo <= fraction < hi)


def table(rows: list[dict], key: str, title: str) -> None:
    print(f"\n{title}")
    print(f"{'bucket':<16}{'n':>6}{'IoU':>8}{'Chamfer mm':>12}{'Chamfer/size':>14}{'F@5%':>8}{'ok':>7}")
    groups = [("all", rows)] + [(name, [r for r in rows if r["bucket"] == name]) for name, _, _ in BUCKETS]
    for name, group in groups:
        if not group:
            continue
        finite = [r[key]["chamfer"] for r in group if np.isfinite(r[key]["chamfer"])]
        finite_rel = [r[key]["chamfer_rel"] for r in group if np.isfinite(r[key]["chamfer_rel"])]
        print(f"{name:<16}{len(group):>6}{np.mean([r[key]['iou'] for r in group]):>8.3f}"
              f"{1000 * np.mean(finite) if finite else float('nan'):>12.2f}"
              f"{np.mean(finite_rel) if finite_rel else float('nan'):>14.3f}"
              f"{np.mean([r[key]['fscore'] for r in group]):>8.3f}{np.mean([r['ok'] for r in group]):>7.2f}")


def class_table(rows: list[dict], manifest: dict, bounds: dict[str, float]) -> None:
    """Depth-aligned IoU and F-score per object class; with `bounds` ({id: ceiling IoU}) the ceiling of the same
    photos beside it."""
    classes = sorted({manifest.get(r["id"], {}).get("class") for r in rows} - {None})
    if not classes:
        return
    print(f"\nper class, depth-aligned{' (ceiling: its photos among the first --ceiling)' if bounds else ''}")
    print(f"{'class':<12}{'n':>6}{'IoU':>8}{'F@5%':>8}" + (f"{'ceiling':>9}{'n':>6}" if bounds else ""))
    for name in classes:
        group = [r for r in rows if manifest.get(r["id"], {}).get("class") == name]
        line = (f"{name:<12}{len(group):>6}{np.mean([r['aligned']['iou'] for r in group]):>8.3f}"
                f"{np.mean([r['aligned']['fscore'] for r in group]):>8.3f}")
        if bounds:
            top = [bounds[r["id"]] for r in group if r["id"] in bounds]
            line += f"{np.mean(top) if top else float('nan'):>9.3f}{len(top):>6}"
        print(line)


def vlm_accuracy(model_path: str, data: Path, split: str, ids: list[str], manifest: dict, expert) -> None:
    from occmllm import metrics, prompts
    from occmllm.vlm import VLM

    hidden = [i for i in ids if manifest.get(i, {}).get("visible_fraction", 1.0) < metrics.HIDDEN_BELOW]
    print(f"\nVLM {model_path}: Q1 accuracy on {len(hidden)} test photos with visible fraction < 0.4")
    vlm = VLM.load(model_path)
    oracle = OracleExpert(data, split)
    correct = {"photo": 0, "learned render": 0, "oracle render": 0}
    for sid in tqdm(hidden, desc="VLM", leave=False):
        truth = manifest[sid]["class"]
        photo = sample_path(data, split, "images", sid)
        K = load_shape(sample_path(data, split, "shapes", sid)).K
        images = {"photo": photo, "learned render": expert.reconstruct(photo, K=K).render,
                  "oracle render": oracle.reconstruct(sid).render}
        for name, image in images.items():
            from PIL import Image

            image = Image.open(image).convert("RGB") if isinstance(image, Path) else Image.fromarray(image)
            answer = prompts.parse_object(vlm.chat(image, prompts.Q1))
            correct[name] += int(answer == truth)
    for name, n in correct.items():
        print(f"  {name:<16}{n / max(len(hidden), 1):.3f}  ({n}/{len(hidden)})")


_EXPERT = None


def _init_worker(expert_path, threshold: float = 0.5, flip_average: bool = True) -> None:
    global _EXPERT
    import torch

    torch.set_num_threads(1)
    _EXPERT = LearnedExpert(expert_path, threshold=threshold, flip_average=flip_average)


def score_one(task: tuple) -> dict:
    """Reconstruct one test photo (with its true K) and score it against the true mesh, absolute and depth-aligned."""
    data, split, sid, fraction = task
    shape = load_shape(sample_path(data, split, "shapes", sid))
    vertices, faces, K = shape.vertices, shape.faces.astype(np.int64), shape.K
    truth = trimesh.Trimesh(vertices, faces, process=False)
    start = time.perf_counter()
    rec = _EXPERT.reconstruct(sample_path(data, split, "images", sid), K=K)
    seconds = time.perf_counter() - start
    absolute = compare_meshes(rec.mesh if rec.ok else None, truth)
    aligned = compare_meshes(depth_aligned(rec.mesh, truth) if rec.ok else None, truth)
    return {"id": sid, "ok": rec.ok, "absolute": absolute, "aligned": aligned, "bucket": bucket_of(fraction),
            "seconds": seconds}


def ceiling(data: Path, split: str, ids: list[str], config, targets: str = "soft") -> dict[str, float]:
    """IoU of the ground-truth occupancy sampled on the expert's frustum grid (`config`: an OccupancyNetConfig) in the
    true window at the true depth, meshed as reconstruct() meshes, against the true mesh: the best the output
    representation can score. {id: IoU}. targets: "soft" (the surface cells 0.5, as trained by default), "solid"
    (every surface cell inside) or "thin" (the surface cells of thin parts inside: occmllm.recon.data.thin_as_inside),
    to see what training on other targets would allow at best."""
    import tempfile

    import torch

    from occmllm.recon.data import DeviceDataset
    from occmllm.recon.geometry import FrustumBox, frustum_to_camera, half_depth, mesh_from_grid

    with tempfile.TemporaryDirectory() as cache:
        ds = DeviceDataset(data, split, config, cache, "cpu", len(ids), 1, False, thin_targets=targets == "thin")
    if targets == "solid":
        ds.surface = torch.zeros_like(ds.surface)  # every solid cell 2 (inside), the surface cells too
    ious = {}
    for i, sid in enumerate(ds.ids):
        shape = load_shape(sample_path(data, split, "shapes", sid))
        vertices, faces, K = shape.vertices, shape.faces.astype(np.int64), shape.K
        target = ds.targets_at(torch.tensor([i]), ds.windows[i:i + 1], ds.K[i:i + 1])[0].numpy()
        u0, v0, r, z = (float(x) for x in ds.windows[i])
        box = FrustumBox(u0, v0, r, z, half_depth(r, z, K, config.depth_ratio))
        mesh = mesh_from_grid(target, lambda abc: frustum_to_camera(abc, box, K), 0.5)
        ious[sid] = compare_meshes(mesh, trimesh.Trimesh(vertices, faces, process=False))["iou"]
    return ious


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synth", help="synthetic dataset folder (made by data_tools.synth)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--expert", default="learned", help=f"the learned 3D expert: {LEARNED_HELP} (a bare NAME or "
                        "FOLDER is still read)")
    parser.add_argument("--limit", type=int, default=300, help="first N test photos (0: all)")
    parser.add_argument("--timing", type=int, default=50, help="photos timed for the speed figure (one process, "
                        "after the scoring)")
    parser.add_argument("--workers", type=int, default=1, help="processes scoring photos in parallel (1 thread "
                        "each); the timing always runs in this process alone")
    parser.add_argument("--model", default=None, help="a trained VLM folder: also report photo vs render accuracy")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="occupancy probability of the surface (LearnedExpert's threshold; default 0.5)")
    parser.add_argument("--no-flip", action="store_true", help="read the photo only, not also its mirror image "
                        "(LearnedExpert(flip_average=False): half the network time)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the timing")
    parser.add_argument("--vlm-only", action="store_true", help="with --model: only the VLM's photo / render "
                        "accuracy (no shape scores, no timing)")
    parser.add_argument("--ceiling", type=int, default=0, help="also print the IoU of the ground truth on the "
                        "expert's output grid for the first N photos (the representation's upper bound)")
    parser.add_argument("--ceiling-targets", choices=["soft", "solid", "thin"], default="soft", help="with --ceiling: "
                        "the training targets sampled (soft: surface cells 0.5, the default; solid: every surface cell "
                        "inside; thin: the surface cells of thin parts inside, as `train --thin-targets`)")
    parser.add_argument("--json", default=None, help="also write the per-photo scores and the summary to this file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.expert = str(learned_weights(args.expert, older_spelling_ok=True))  # a weights folder, for the workers too
    flip = not args.no_flip
    data = Path(args.data)
    ids = list_ids(data, args.split)
    ids = ids[: args.limit] if args.limit else ids
    manifest = manifest_rows(data / args.split, from_shapes=True)
    print(f"3D expert {args.expert} on {len(ids)} photos of {data / args.split}")
    if args.vlm_only:
        if not args.model:
            parser.error("--vlm-only needs --model")
        vlm_accuracy(args.model, data, args.split, ids, manifest,
                     LearnedExpert(args.expert, threshold=args.threshold, flip_average=flip))
        return
    tasks = [(str(data), args.split, sid, manifest.get(sid, {}).get("visible_fraction")) for sid in ids]
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, initializer=_init_worker,
                                 initargs=(args.expert, args.threshold, flip)) as pool:
            rows = list(tqdm(pool.map(score_one, tasks, chunksize=4), total=len(tasks), desc="reconstruct + score",
                             leave=False))
    else:
        _init_worker(args.expert, args.threshold, flip)
        torch.set_num_threads(args.threads)
        rows = [score_one(t) for t in tqdm(tasks, desc="reconstruct + score", leave=False)]

    table(rows, "aligned", "learned expert vs ground truth, depth-aligned (target: mean IoU >= 0.70)")
    table(rows, "absolute", "learned expert vs ground truth, absolute camera frame")
    expert = LearnedExpert(args.expert, threshold=args.threshold, flip_average=flip)
    times = []
    for sid in ids[: args.timing]:
        K = load_shape(sample_path(data, args.split, "shapes", sid)).K
        start = time.perf_counter()
        expert.reconstruct(sample_path(data, args.split, "images", sid), K=K)
        times.append(time.perf_counter() - start)
    if times:
        print(f"\nreconstruct() time per photo (network + marching cubes + render, {args.threads} thread, "
              f"{len(times)} photos, one process): median {1000 * statistics.median(times):.0f} ms, "
              f"p90 {1000 * np.percentile(times, 90):.0f} ms (target <= 150 ms)")
    bounds = {}
    if args.ceiling:
        config = expert.config
        bounds = ceiling(data, args.split, ids[: args.ceiling], config, args.ceiling_targets)
        ious = list(bounds.values())
        print(f"\nceiling: ground truth on the expert's {config.n_xy}^2 x {config.n_depth} frustum grid, meshed, vs "
              f"the true mesh ({len(ious)} "
              f"photos): mean IoU {np.mean(ious):.3f}, p10 {np.percentile(ious, 10):.3f}, median "
              f"{np.median(ious):.3f}")
    class_table(rows, manifest, bounds)
    if args.json:
        import json

        summary = {key: {name: float(np.mean([r[key]["iou"] for r in rows if name == "all" or r["bucket"] == name]
                                             or [float("nan")])) for name in ["all"] + [b[0] for b in BUCKETS]}
                   for key in ("aligned", "absolute")}
        Path(args.json).write_text(json.dumps({"summary_iou": summary, "n": len(rows),
                                               "median_ms": 1000 * statistics.median(times) if times else None,
                                               "rows": rows}, indent=1, default=float))
    if args.model:
        vlm_accuracy(args.model, data, args.split, ids, manifest, expert)


if __name__ == "__main__":
    main()
