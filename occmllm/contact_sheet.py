"""Contact sheet of a synthetic dataset: a grid of photos with class, visible fraction and clarity label.

    python -m data_tools.preview data/synth                       # writes data/synth/preview.png
    python -m data_tools.preview data/synth --split test --n 48 --cols 8 --out sheet.png
    python -m data_tools.preview data/synth --with-render          # photo | object render | masks per sample
    python -m data_tools.preview data/synth --split test --with-render --experts learned learned:v5 --object-class knife
                                            # ... | each learned expert's render

Samples are drawn with a fixed seed (``--seed``), sorted by visible fraction so the sheet reads from hidden to clear.
In the mask view red is the amodal object mask, yellow the visible part of it. With --experts, each expert's render
of the photo follows (the object alone as the VLM re-reads it, reconstructed with the sample's camera), its name and
its IoU against the ground truth written on it (depth-aligned, as benchmarks/bench_recon scores it).
"""

from __future__ import annotations


import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from occmllm.dataset import SynthDataset

LABEL_H = 16


def expert_panel(ds: SynthDataset, sid: str, photo: np.ndarray, name: str, expert) -> Image.Image:
    """The expert's render of the sample's photo, labelled with the expert's name and its IoU."""
    import trimesh

    from occmllm.recon.scores import compare_meshes, depth_aligned

    shape = ds.load_shape(sid)
    rec = expert.reconstruct(photo, K=shape.K)
    panel = Image.fromarray(rec.render)
    if rec.ok:
        gt = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
        label = f"{name}  IoU {compare_meshes(depth_aligned(rec.mesh, gt), gt)['iou']:.2f}"
    else:
        label = f"{name}  nothing reconstructed"
    ImageDraw.Draw(panel).text((4, 4), label, fill=(255, 255, 0))
    return panel


def tile(ds: SynthDataset, sid: str, with_render: bool, experts: dict | None = None) -> Image.Image:
    row = ds.row(sid)
    panels = [ds.load_image(sid)]
    if with_render:
        amodal, visible = ds.load_masks(sid)
        masks = np.zeros((*amodal.shape, 3), np.uint8)
        masks[..., 0] = amodal * 255
        masks[..., 1] = visible * 255
        panels += [ds.load_render(sid), masks]
    panels += [np.asarray(expert_panel(ds, sid, panels[0], name, expert)) for name, expert in (experts or {}).items()]
    body = np.concatenate(panels, axis=1)
    img = Image.new("RGB", (body.shape[1], body.shape[0] + LABEL_H), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, LABEL_H))
    text = f"{sid} {row['class']}  vis {row['visible_fraction']:.2f}  clear: {'Yes' if row['clear'] else 'No'}"
    ImageDraw.Draw(img).text((3, 2), text, fill=(0, 0, 0) if row["clear"] else (200, 0, 0))
    return img


def contact_sheet(ds: SynthDataset, n: int, cols: int, seed: int, with_render: bool, experts: dict | None = None,
                  object_class: str | None = None) -> Image.Image:
    manifest = ds.manifest
    if object_class is not None:
        manifest = manifest[manifest["class"] == object_class]
    if len(manifest) == 0:
        raise ValueError(f"{ds.folder}: the manifest lists no samples"
                         + (f" of class {object_class!r}" if object_class is not None else ""))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(manifest), size=min(n, len(manifest)), replace=False)
    m = manifest.iloc[picks].sort_values("visible_fraction")
    tiles = [tile(ds, sid, with_render, experts) for sid in tqdm(m["id"], desc="contact sheet", unit="sample",
                                                                 leave=False, disable=not experts)]
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w + (cols - 1) * 4, rows * h + (rows - 1) * 4), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (w + 4), (i // cols) * (h + 4)))
    return sheet
