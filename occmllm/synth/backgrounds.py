"""256x256 backgrounds: crops of scikit-image's bundled sample photographs, and procedural textures.

The photo bank is loaded once per process (``skimage.data`` ships these files; nothing is downloaded). Every draw
takes its randomness from the caller's generator, so a sample's background is reproducible.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
          "immunohistochemistry", "rocket", "retina", "moon", "clock", "page", "text", "colorwheel")
_bank: list[tuple[str, Image.Image]] | None = None
GREY_PHOTOS = ("brick", "camera", "coins", "grass", "gravel", "moon", "clock", "page", "text")


def photo_bank() -> list[tuple[str, Image.Image]]:
    global _bank
    if _bank is None:
        import skimage.data

        bank = []
        for name in PHOTOS:
            try:
                img = np.asarray(getattr(skimage.data, name)())
            except Exception:  # noqa: BLE001 - a sample image missing from this scikit-image build is skipped
                continue
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            pil = Image.fromarray(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
            if min(pil.size) > 400:  # crops are resized to 256 px anyway; smaller sources resize faster
                scale = 400 / min(pil.size)
                pil = pil.resize((round(pil.size[0] * scale), round(pil.size[1] * scale)), Image.BILINEAR)
            bank.append((name, pil))
        if not bank:
            raise RuntimeError("no scikit-image sample photographs could be loaded (is scikit-image installed?)")
        _bank = bank
    return _bank


def square_crop(rng, img: Image.Image, size: int, smallest: float) -> Image.Image:
    """A random square crop of `img` (its side `smallest`..1 of the short side) resized to size x size, mirrored
    left-right half the time."""
    w, h = img.size
    side = int(min(h, w) * rng.uniform(smallest, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _photo(rng, size: int) -> tuple[np.ndarray, str]:
    bank = photo_bank()
    name, img = bank[int(rng.integers(len(bank)))]
    crop = square_crop(rng, img, size, 0.35)
    gain = rng.uniform(0.75, 1.15, 3) if name in GREY_PHOTOS else np.ones(3)  # grey photos get a tint
    gain = gain * rng.uniform(0.7, 1.15)
    offset = rng.uniform(-15, 15)
    ramp = np.arange(256, dtype=np.float32)
    lut = np.concatenate([np.clip(ramp * g + offset, 0, 255) for g in gain]).astype(np.uint8)
    return np.asarray(crop.point(lut.tolist())), f"photo:{name}"


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
    return np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)


def _texture(rng, size: int) -> tuple[np.ndarray, str]:
    kind = ("noise", "stripes", "checker", "gradient", "wood")[int(rng.integers(5))]
    c1, c2 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == "noise":
        out = _smooth_noise(rng, size, int(rng.integers(3, 24)))
        out = 0.6 * out + 0.4 * (c1 * 0.5 + out.mean() * 0.5)
    elif kind == "stripes":
        w = (np.sin(t * 2 * np.pi * rng.uniform(3, 18)) > rng.uniform(-0.5, 0.5)).astype(np.float32)[..., None]
        out = c1 * w + c2 * (1 - w)
    elif kind == "checker":
        n = rng.uniform(3, 14)
        u = xx * np.cos(angle) - yy * np.sin(angle)
        w = ((np.floor(t * n) + np.floor(u * n)) % 2)[..., None]
        out = c1 * w + c2 * (1 - w)
    elif kind == "gradient":
        out = c1 * t[..., None] + c2 * (1 - t[..., None])
    else:
        rings = np.sin((t * rng.uniform(8, 30) + _smooth_noise(rng, size, 6)[..., 0] / 40.0) * 2 * np.pi)
        base = np.array([150, 105, 65], np.float32) * rng.uniform(0.6, 1.3)
        out = base * (0.8 + 0.2 * rings[..., None])
    out = out + rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(rng.uniform(0, 8))
    return np.clip(out, 0, 255).astype(np.uint8), f"texture:{kind}"


def background(rng, size: int = 256, photo_share: float = 0.65) -> tuple[np.ndarray, str]:
    """A uint8 (size, size, 3) background and a short name of where it came from."""
    return _photo(rng, size) if rng.random() < photo_share else _texture(rng, size)
