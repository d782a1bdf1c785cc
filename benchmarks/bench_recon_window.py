"""Is it where the 3D expert crops (the box net's window) or the shape it predicts there that limits its IoU?

    python -m benchmarks.bench_recon_window --data /tmp/loc --split test --limit 60

For each photo: depth-aligned volumetric IoU against the true mesh (as bench_recon) of the learned expert as shipped,
of its shape network run on the true window (the padded square around the object's true 2D extent, the window the
network was trained on), and after one and two refinements of the window from the predicted silhouette. Also the mean
window-centre and window-size errors (relative to the true window's half-size).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occmllm.dataset import kind_folder, load_shape, manifest_rows, sample_path  # noqa: E402
from occmllm.images import as_rgb_array  # noqa: E402
from occmllm.recon import LearnedExpert  # noqa: E402
from occmllm.recon.data import object_extent, window_of  # noqa: E402
from occmllm.recon.experts import learned_weights  # noqa: E402
from occmllm.recon.geometry import FrustumBox, frustum_to_camera, half_depth, mesh_from_grid  # noqa: E402
from occmllm.recon.scores import compare_meshes, depth_aligned  # noqa: E402
from occmllm.shipped import LEARNED_HELP  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder from data_tools.synth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--start", type=int, default=0, help="first photo (sorted ids)")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--expert", default="learned", help=f"the learned 3D expert: {LEARNED_HELP} (a bare NAME or "
                        "FOLDER is still read)")
    parser.add_argument("--object-class", default=None, help="only the photos of this class (from the manifest), "
                        "e.g. knife")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    e = LearnedExpert(learned_weights(args.expert, older_spelling_ok=True))
    c, m = e.config, e.model
    data = args.data / args.split
    ids = sorted(p.stem for p in kind_folder(args.data, args.split, "shapes").glob("*.npz"))
    if args.object_class:
        manifest = manifest_rows(data, from_shapes=True)
        ids = [i for i in ids if manifest.get(i, {}).get("class") == args.object_class]
    ids = ids[args.start: args.start + args.limit]
    if not ids:
        parser.error(f"no photos in {data}" + (f" of class {args.object_class!r}" if args.object_class else ""))

    @torch.no_grad()
    def shape_in(photo, u0, v0, r, z, K):
        x = m.normalize(torch.from_numpy(photo.copy()).unsqueeze(0))
        xx = torch.cat([x, x.flip(3)])
        win = torch.tensor([[u0, v0, r], [c.image_size - u0, v0, r]], dtype=x.dtype)
        both = m.shape_net(m.crop(xx, *win.unbind(1)))
        prob = ((both[0] + both[1].flip(-1)) / 2).sigmoid().numpy()
        return FrustumBox(u0, v0, r, z, half_depth(r, z, K, c.depth_ratio)), prob

    def mesh_of(box, prob, K):
        return mesh_from_grid(prob, lambda abc: frustum_to_camera(abc, box, K), e.threshold)

    def refine(box, prob):
        """The window around the predicted silhouette (columns with any occupied cell), padded as in training."""
        cols = (prob > e.threshold).any(0)
        if not cols.any():
            return None
        ys, xs = np.nonzero(cols)
        n = prob.shape[-1]
        to_px = lambda i, c0: c0 - box.r + (i + 0.5) / n * 2 * box.r  # noqa: E731
        u_lo, u_hi = to_px(xs.min() - 0.5, box.u0), to_px(xs.max() + 0.5, box.u0)
        v_lo, v_hi = to_px(ys.min() - 0.5, box.v0), to_px(ys.max() + 0.5, box.v0)
        return (u_lo + u_hi) / 2, (v_lo + v_hi) / 2, max(u_hi - u_lo, v_hi - v_lo) / 2 * c.pad

    rows = []
    for sid in ids:
        shape = load_shape(sample_path(args.data, args.split, "shapes", sid))
        vertices, faces, K = shape.vertices, shape.faces, shape.K
        truth = trimesh.Trimesh(vertices, faces, process=False)
        photo = as_rgb_array(sample_path(args.data, args.split, "images", sid), c.image_size)
        box, prob, _, _ = e.predict(photo, K)
        u0, v0, r, _ = (float(t) for t in window_of(object_extent(vertices, K), c.pad)[0])
        meshes = {"predicted window": mesh_of(box, prob, K),
                  "true window": mesh_of(*shape_in(photo, u0, v0, r, box.z, K), K)}
        current, prediction = box, prob
        for name in ("refined once", "refined twice"):
            window = refine(current, prediction)
            if window is not None:
                current, prediction = shape_in(photo, *window, box.z, K)
            meshes[name] = mesh_of(current, prediction, K)
        row = {name: compare_meshes(depth_aligned(mesh, truth) if mesh is not None else None, truth)["iou"]
               for name, mesh in meshes.items()}
        row["size error"] = abs(box.r / r - 1)
        row["size ratio (predicted / true)"] = box.r / r
        row["centre error"] = float(np.hypot(box.u0 - u0, box.v0 - v0) / r)
        rows.append(row)
    print(f"{len(rows)} photos of {data}, depth-aligned IoU against the true mesh:")
    for name in rows[0]:
        print(f"  {name:<18} mean {np.mean([row[name] for row in rows]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
