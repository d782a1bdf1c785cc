"""Contact sheet: generation-1 and generation-2 synthetic photos (one of each class per row) beside real photos.

    python benchmarks/sheet_synth_generations.py --out docs/synth_gen1_gen2_outside.png \\
        --outside ../shared/outside-dev

Rows: generation 1 (seed 0), then ``--gen2-rows`` rows of generation 2 (seeds 0, 1, ...), then the real photos of
``--outside`` (if given; only shown, never used by the generator). Each tile is labelled with its class (and, for
generation 2, the variant, framing and background).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occmllm.synth.gen2.scene import make_sample as make_gen2  # noqa: E402
from occmllm.synth.scene import make_sample as make_gen1  # noqa: E402
from occmllm.prompts import CLASSES  # noqa: E402

CELL, LABEL_H, GAP = 224, 14, 4


def tile(photo: np.ndarray, label: str) -> Image.Image:
    img = Image.new("RGB", (CELL, CELL + LABEL_H), (255, 255, 255))
    img.paste(Image.fromarray(photo).convert("RGB").resize((CELL, CELL), Image.BILINEAR), (0, LABEL_H))
    ImageDraw.Draw(img).text((2, 1), label, fill=(0, 0, 0))
    return img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--outside", type=Path, help="a folder of real photos (*.png, *.jpg) for the last row")
    p.add_argument("--gen2-rows", type=int, default=3)
    args = p.parse_args(argv)
    rows = [("generation 1", [tile(make_gen1(0, i, cls=c).photo, c) for i, c in enumerate(CLASSES)])]
    for r in range(args.gen2_rows):
        tiles = []
        for i, c in enumerate(CLASSES):
            s = make_gen2(r, i, cls=c)
            lab = s.labels
            tiles.append(tile(s.photo, f"{lab['variant']} {lab['framing']} {lab['background'].split(':')[0]}"))
        rows.append((f"generation 2, seed {r}", tiles))
    if args.outside:
        files = sorted(list(args.outside.glob("*.png")) + list(args.outside.glob("*.jpg")))
        if not files:
            print(f"error: no *.png or *.jpg in {args.outside}", file=sys.stderr)
            return 2
        rows.append(("real photos", [tile(np.asarray(Image.open(f).convert("RGB")), f"real: {f.stem[:28]}")
                                     for f in files]))
    cols = max(len(t) for _, t in rows)
    head = 18
    sheet = Image.new("RGB", (cols * (CELL + GAP), len(rows) * (CELL + LABEL_H + head + GAP)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for r, (title, tiles) in enumerate(rows):
        y = r * (CELL + LABEL_H + head + GAP)
        d.text((4, y + 3), title, fill=(0, 0, 160))
        for c, t in enumerate(tiles):
            sheet.paste(t, (c * (CELL + GAP), y + head))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(rows)} rows x {cols} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
