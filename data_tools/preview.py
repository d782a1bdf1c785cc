"""Contact sheet of a synthetic dataset: a grid of photos with class, visible fraction and clarity label.

    python -m data_tools.preview data/synth                       # writes data/synth/preview.png
    python -m data_tools.preview data/synth --split test --n 48 --cols 8 --out sheet.png
    python -m data_tools.preview data/synth --with-render          # photo | object render | masks per sample

Samples are drawn with a fixed seed (``--seed``), sorted by visible fraction so the sheet reads from hidden to clear.
In the mask view red is the amodal object mask, yellow the visible part of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from occmllm.dataset import SynthDataset

LABEL_H = 16


def tile(ds: SynthDataset, sid: str, with_render: bool) -> Image.Image:
    row = ds.row(sid)
    panels = [ds.load_image(sid)]
    if with_render:
        amodal, visible = ds.load_masks(sid)
        masks = np.zeros((*amodal.shape, 3), np.uint8)
        masks[..., 0] = amodal * 255
        masks[..., 1] = visible * 255
        panels += [ds.load_render(sid), masks]
    body = np.concatenate(panels, axis=1)
    img = Image.new("RGB", (body.shape[1], body.shape[0] + LABEL_H), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, LABEL_H))
    text = f"{sid} {row['class']}  vis {row['visible_fraction']:.2f}  clear: {'Yes' if row['clear'] else 'No'}"
    ImageDraw.Draw(img).text((3, 2), text, fill=(0, 0, 0) if row["clear"] else (200, 0, 0))
    return img


def contact_sheet(ds: SynthDataset, n: int, cols: int, seed: int, with_render: bool) -> Image.Image:
    if len(ds) == 0:
        raise ValueError(f"{ds.folder}: the manifest lists no samples")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
    m = ds.manifest.iloc[picks].sort_values("visible_fraction")
    tiles = [tile(ds, sid, with_render) for sid in m["id"]]
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w + (cols - 1) * 4, rows * h + (rows - 1) * 4), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (w + 4), (i // cols) * (h + 4)))
    return sheet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="dataset folder written by data_tools.synth")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--n", type=int, default=24, help="number of samples on the sheet")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-render", action="store_true", help="also show the object render and the masks")
    p.add_argument("--out", type=Path, help="PNG to write (default DATA/preview[_split].png)")
    args = p.parse_args(argv)
    if args.n < 1 or args.cols < 1:
        p.error("--n and --cols must be at least 1")
    try:
        ds = SynthDataset(args.data, args.split)
        sheet = contact_sheet(ds, args.n, args.cols, args.seed, args.with_render)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.data / ("preview.png" if args.split == "train" else f"preview_{args.split}.png")
    sheet.save(out)
    print(f"wrote {out} ({sheet.size[0]}x{sheet.size[1]}, {min(args.n, len(ds))} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
