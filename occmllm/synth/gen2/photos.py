"""Real photographs as generation-2 backgrounds: Debian's ``mate-backgrounds`` nature photos (installed by the
Makefile; read from their installed path) and scikit-image's sample photos of real scenes, with random crops, scales,
flips and tints.

Only photos of real scenes are used (the packages' abstract wallpapers are not). Without any Debian photo package
``available()`` is False: the caller warns once and uses procedural rooms only.
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
from PIL import Image

from ..backgrounds import square_crop

# Debian package -> glob of its real photographs (looked at: all photos of real scenes)
DEBIAN_PHOTOS = {"mate-backgrounds": "/usr/share/backgrounds/mate/nature/*.jpg"}
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel", "rocket")
# An os.pathsep-separated list of globs that replaces DEBIAN_PHOTOS: a copy of the photos on a machine that cannot
# install the package (e.g. OCCMLLM_BACKGROUND_DIRS='data/backgrounds/*.jpg' after copying the nature folder there),
# or none at all (tests).
ENV = "OCCMLLM_BACKGROUND_DIRS"
_bank: list[tuple[str, Image.Image]] | None = None


def debian_files() -> list[str]:
    """The real photographs: DEBIAN_PHOTOS' files, or those of $OCCMLLM_BACKGROUND_DIRS (looked up once per value:
    generation asks for every sample)."""
    return list(_files(os.environ.get(ENV)))


@functools.lru_cache(maxsize=8)
def _files(patterns: str | None) -> tuple[str, ...]:
    globs = patterns.split(os.pathsep) if patterns is not None else list(DEBIAN_PHOTOS.values())
    return tuple(sorted(f for p in globs if p for f in glob.glob(p)))


def available() -> bool:
    return bool(debian_files())


def missing_message() -> str:
    return ("warning: no real background photos found (Debian package mate-backgrounds: "
            f"{DEBIAN_PHOTOS['mate-backgrounds']}); generation 2 uses procedural rooms only. Install it with "
            "`sudo apt-get install mate-backgrounds` (`make setup` does) for photo backgrounds, or point "
            f"{ENV} at a copy of its photos (a glob, e.g. 'data/backgrounds/*.jpg').")


def bank() -> list[tuple[str, Image.Image]]:
    """The photos, each scaled to 480 px on its short side, loaded once per process (in name order)."""
    global _bank
    if _bank is None:
        out = []
        for path in debian_files():
            img = Image.open(path)
            img.draft("RGB", (img.size[0] // 4, img.size[1] // 4))  # JPEG: decode at reduced size, much faster
            out.append((f"photo:{os.path.splitext(os.path.basename(path))[0]}", _short_side(img.convert("RGB"))))
        if out:
            import skimage.data

            for name in SKIMAGE_PHOTOS:
                try:
                    arr = np.asarray(getattr(skimage.data, name)())
                except Exception:  # noqa: BLE001 - a sample missing from this scikit-image build is skipped
                    continue
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                out.append((f"photo:skimage-{name}", _short_side(Image.fromarray(arr[..., :3].astype(np.uint8)))))
        _bank = out
    return _bank


def _short_side(img: Image.Image, side: int = 480) -> Image.Image:
    s = side / min(img.size)
    return img.resize((max(side, round(img.size[0] * s)), max(side, round(img.size[1] * s))), Image.BILINEAR) \
        if s < 1 else img


def photo(rng, size: int, index: int | None = None) -> tuple[np.ndarray, str]:
    """A random square crop (30-100% of the short side), mirrored half the time, upside down a fifth of the time,
    with a random tint and exposure."""
    photos = bank()
    name, img = photos[int(rng.integers(len(photos)))] if index is None else photos[index]
    crop = square_crop(rng, img, size, 0.3)
    if rng.random() < 0.2:
        crop = crop.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    gain = rng.uniform(0.85, 1.1, 3) * rng.uniform(0.6, 1.1)
    lut = np.concatenate([np.clip(np.arange(256) * g, 0, 255) for g in gain]).astype(np.uint8)
    return np.asarray(crop.point(lut.tolist())), name
