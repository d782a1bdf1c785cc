"""Generation 2's camera: what a real camera does to a frame after the scene is drawn. White balance, exposure and
gamma, vignetting, defocus and motion blur, a lower sensor resolution, sensor noise, JPEG compression, and
sometimes the black border of a hand-centred crop that ran off the original frame. Randomness from the caller."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


_R2: dict[tuple[int, int], np.ndarray] = {}


def _radius2(h: int, w: int) -> np.ndarray:
    """Squared distance from the centre, 1 at the corners (cached per size)."""
    if (h, w) not in _R2:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        _R2[(h, w)] = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / np.float32(h * h / 2)
    return _R2[(h, w)]


def camera(rng, photo: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 (H,W,3) in and out; the second value names what was applied (for the manifest)."""
    h, w = photo.shape[:2]
    wb = rng.uniform(0.85, 1.15, 3)  # white balance
    wb /= wb.mean()
    exposure = 2 ** rng.normal(0.1, 0.25)
    gamma = rng.uniform(0.8, 1.25)
    ramp = np.arange(256) / 255.0
    lut = np.concatenate([np.clip(np.clip(ramp * g * exposure, 0, 1) ** gamma * 255 + 0.5, 0, 255) for g in wb])
    img = Image.fromarray(photo).point(lut.astype(np.uint8).tolist())
    img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.7, 1.2)))  # saturation
    info = {"exposure": round(float(exposure), 3)}
    if rng.random() < 0.35:  # a lower-resolution sensor, scaled up (soft)
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
    gain = np.float32(1.0)
    if rng.random() < 0.6:  # vignetting
        gain = 1 - np.float32(rng.uniform(0.1, 0.45)) * _radius2(h, w)[..., None]
    sigma = np.float32(rng.uniform(1.0, 6.0))
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * sigma  # luminance noise, and coarser colour noise
    chroma = rng.standard_normal((h // 2, w // 2, 3), dtype=np.float32) * (sigma * np.float32(rng.uniform(0.2, 0.6)))
    noise = noise + np.repeat(np.repeat(chroma, 2, 0), 2, 1)[:h, :w]
    out = np.clip(x * gain + noise + 0.5, 0, 255).astype(np.uint8)
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
