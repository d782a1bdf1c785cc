"""Generation 2's camera: what a real camera does to a frame after the scene is drawn. White balance, exposure and
gamma, vignetting, defocus and motion blur, a lower sensor resolution, sensor noise, JPEG compression, and
sometimes the black border of a hand-centred crop that ran off the original frame. Randomness from the caller."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def camera(rng, photo: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 (H,W,3) in and out; the second value names what was applied (for the manifest)."""
    h, w = photo.shape[:2]
    x = photo.astype(np.float32) / 255.0
    wb = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # white balance
    wb /= wb.mean()
    exposure = np.float32(2 ** rng.normal(0.1, 0.25))
    gamma = np.float32(rng.uniform(0.8, 1.25))
    x = np.clip(x * wb * exposure, 0, 1) ** gamma
    sat = np.float32(rng.uniform(0.7, 1.2))
    grey = x.mean(2, keepdims=True)
    x = np.clip(grey + (x - grey) * sat, 0, 1)
    if rng.random() < 0.6:  # vignetting
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 2)
        x = x * (1 - np.float32(rng.uniform(0.1, 0.45)) * r2)[..., None]
    img = Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))
    info = {"exposure": round(float(exposure), 3)}
    r = rng.random()
    if r < 0.35:  # a lower-resolution sensor, scaled up (soft)
        s = rng.uniform(0.45, 0.8)
        img = img.resize((int(w * s), int(h * s)), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    blur = rng.uniform(0, 1.3) if rng.random() < 0.6 else 0.0
    if blur > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    if rng.random() < 0.15:  # motion blur along x or y
        k = int(rng.integers(3, 6))
        kernel = np.zeros((5, 5), np.float32)
        if rng.random() < 0.5:
            kernel[2, :k] = 1
        else:
            kernel[:k, 2] = 1
        img = img.filter(ImageFilter.Kernel((5, 5), kernel.ravel().tolist(), scale=float(k)))
    x = np.asarray(img, np.float32)
    sigma = rng.uniform(1.0, 7.0)
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma)
    noise = noise + rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(sigma * rng.uniform(0.2, 0.6))
    x = np.clip(x + noise * np.sqrt(np.maximum(x, 16.0) / 128.0), 0, 255)
    out = (x + 0.5).astype(np.uint8)
    quality = int(rng.integers(30, 90)) if rng.random() < 0.7 else None
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    info["jpeg"] = quality or 0
    info["blur"] = round(float(blur), 3)
    return out, info


def crop_border(rng, photo: np.ndarray, amodal: np.ndarray) -> tuple[np.ndarray, int]:
    """A hand-centred crop that ran off its frame: a black band on one or two sides (10% of photos), only on sides
    where the band hides none of the object (the masks stay true). Returns the photo and the band width (0: none)."""
    if rng.random() >= 0.1:
        return photo, 0
    h, w = photo.shape[:2]
    band = int(rng.integers(12, 60))
    sides = [int(rng.integers(4))] + ([int(rng.integers(4))] if rng.random() < 0.4 else [])
    keep = np.ones((h, w), bool)
    for side in sides:
        region = (np.s_[-band:, :], np.s_[:, -band:], np.s_[:band, :], np.s_[:, :band])[side]
        if not amodal[region].any():
            keep[region] = False
    if keep.all():
        return photo, 0
    return np.where(keep[..., None], photo, 0).astype(np.uint8), band
