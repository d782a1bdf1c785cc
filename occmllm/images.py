"""Robust image input: `load_image(path | bytes | PIL.Image | numpy array) -> RGB PIL.Image` or a clear `ImageError`.

Handles what users actually drop into the app: EXIF-rotated JPEGs (rotation applied), grayscale / RGBA / CMYK /
palette / 16-bit PNGs (converted to 8-bit RGB, transparency composited on black), animated GIFs (first frame), huge
images (downscaled so that the longest side is at most `max_side`), and refuses with one readable sentence: missing
files, non-image files, corrupt or truncated files, images smaller than `min_side`, decompression bombs.

    >>> from occmllm.images import load_image
    >>> image = load_image("photo.jpg")          # PIL.Image, mode "RGB"
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 2048  # larger images are downscaled (the models see 224-448 px anyway)
MIN_SIDE = 8  # smaller images carry nothing to identify
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # ~179 MP: refused before decoding (decompression-bomb guard); 12000x12000 passes


class ImageError(ValueError):
    """An input that is not a usable image; the message says which input and why."""


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size else 0
        scale = 255.0 / (65535.0 if top > 255 else max(top, 1.0) if image.mode == "F" else 255.0)
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, YCbCr, LAB, 1


def load_image(source, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> Image.Image:
    """An 8-bit RGB PIL image from a path, raw bytes, a file object, a PIL image or an HxW(x3/4) uint8 array."""
    name = _name(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ImageError(f"{name}: array of shape {source.shape} is not an HxW, HxWx3 or HxWx4 image")
        array = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        source = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: file not found")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file")
        source = path.read_bytes()
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name}: empty file")
        source = io.BytesIO(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
                image = Image.open(source)
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image file (or a format PIL cannot read)") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: too many pixels (decompression-bomb guard, limit {MAX_PIXELS:,})") from None
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input, not a crash
            raise ImageError(f"{name}: cannot read image ({error})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} has too many pixels (limit {MAX_PIXELS:,})")
    if min(width, height) < min_side:
        raise ImageError(f"{name}: {width}x{height} is too small to identify anything (need at least {min_side} px a side)")
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)  # animated GIF / APNG / WebP: the first frame
        if image.format == "JPEG" or image.format == "WEBP":
            image.draft("RGB", (max_side, max_side))  # fast JPEG downscale while decoding
        image.load()
        image = ImageOps.exif_transpose(image)  # applies and drops the EXIF orientation
        image = _to_rgb(image)
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - truncated / corrupt data surfaces here
        raise ImageError(f"{name}: corrupt or truncated image ({error})") from None
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def as_rgb_array(image, size: int | None = None) -> np.ndarray:
    """A path, PIL image or HxWx3/HxW array -> uint8 HxWx3 (resized to size x size when given)."""
    if isinstance(image, (str, Path)):
        try:
            image = Image.open(image)
        except (OSError, ValueError) as err:
            raise ValueError(f"{image}: not a readable image ({err})") from None
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if size and image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    array = array[..., :3]
    if size and array.shape[:2] != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return array
