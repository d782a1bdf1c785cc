"""A tiny dataset in the synthetic layout (COMMON.md), made in a fraction of a second without rendering: each class
is a colour in the photo (so a tiny model can learn it) and a grey shape in the render. Used by the train tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from occmllm import formats, prompts

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (200, 40, 200), (40, 200, 200),
           (250, 140, 0), (120, 120, 120)]


def make_toy_dataset(root: str | Path, n_train: int = 32, n_test: int = 16, seed: int = 0, n_classes: int = 4,
                     size: int = 64) -> Path:
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed)
    meta = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for folder in ("images", "renders"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        rows, q1, q1q6, dpo, cot, attributes = [], [], [], [], [], []
        for i in range(n):
            sid = f"{(0 if split == 'train' else 50000) + i:08d}"
            k = int(rng.integers(n_classes))
            cls = prompts.CLASSES[k]
            visible = float(rng.uniform(0.1, 1.0))
            clear = visible >= 0.4
            photo = np.clip(np.array(COLOURS[k], np.float32) + rng.normal(0, 12, (size, size, 3)), 0, 255)
            Image.fromarray(photo.astype(np.uint8)).save(root / split / "images" / f"{sid}.jpg", quality=95)
            render = Image.new("RGB", (size, size))
            ImageDraw.Draw(render).rectangle([8 + 4 * k, 8, size - 8 - 4 * k, size - 8 - 2 * k], fill=(160, 160, 160))
            render.save(root / split / "renders" / f"{sid}.png")
            image = f"{sid}.jpg"
            rows.append({"id": sid, "class": cls, "visible_fraction": visible, "round": k % 2 == 0,
                         "thin": k % 3 == 0, "long": k % 4 == 1, "clear": clear})
            q1.append(formats.q1_conversation(sid, image, cls))
            q1q6.append(formats.q1_q6_conversation(sid, image, cls, clear))
            dpo.append(formats.clarity_pair(image, clear))
            cot.append(formats.plan_conversation(sid, image) if i % 4 == 0 else formats.q1_q6_conversation(sid, image, cls, clear))
            attributes.append(formats.attribute_conversation(sid, image, {a: rows[-1][a] for a in prompts.ATTRIBUTES}))
        pd.DataFrame(rows).to_parquet(root / split / "manifest.parquet")
        for kind, records in (("Q1", q1), ("Q1_Q6", q1q6), ("Q1_Q6_balanced_dpo", dpo), ("Q1_Q6_Q0_balanced", cot),
                              ("attributes", attributes)):
            name = f"{split}_{kind}"
            formats.write_jsonl(root / f"{name}.jsonl", records)
            meta[name] = formats.MetaEntry(f"{split}/images", f"{name}.jsonl", False, 1, len(records))
    formats.write_meta(root / "meta.json", meta)
    return root
