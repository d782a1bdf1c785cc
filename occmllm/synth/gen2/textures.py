"""Printed and surface textures for generation 2: product labels (procedural words, logos, stripes, barcodes), phone
screens, and surface patterns (wood, fabric, knit, plaster, tiles, leather, brushed metal), plus the atlas that packs a
frame's textures into one image for ``occmllm.render.render_scene(..., texture=...)``.

Every function takes its randomness from the caller's generator. Fonts are DejaVu (Debian's ``fonts-dejavu-core``,
installed by the Makefile); without them PIL's built-in bitmap font is used.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed-Bold.ttf",
         "DejaVuSerif.ttf", "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerifCondensed-Bold.ttf")
SYLLABLES = ("ka", "lo", "mi", "ro", "ta", "ve", "no", "sa", "ri", "po", "lu", "xa", "de", "fi", "gor", "tum", "bel",
             "zen", "qua", "mar", "vin", "sol", "pra", "kel", "dor", "ly", "ex", "on", "ar", "is")
SMALL = ("NET WT", "500 ml", "1 L", "750 ml", "12 OZ", "330 ml", "ORIGINAL", "CLASSIC", "NEW", "FRESH", "EXTRA",
         "PREMIUM", "100%", "LIGHT", "ZERO", "FAMILY SIZE", "No. 5", "EST. 1921", "NATURAL", "ULTRA")


@lru_cache(maxsize=64)
def font(index: int, size: int):
    try:
        return ImageFont.truetype(str(FONT_DIR / FONTS[index % len(FONTS)]), size)
    except OSError:
        return ImageFont.load_default()


def word(rng, syllables=(1, 4)) -> str:
    n = int(rng.integers(*syllables))
    return "".join(SYLLABLES[int(rng.integers(len(SYLLABLES)))] for _ in range(n))


def rgb255(c) -> tuple[int, int, int]:
    return tuple(int(np.clip(x * 255, 0, 255)) for x in c)


def contrast_colour(rng, c) -> np.ndarray:
    """A colour that reads on ``c``: dark on light, light on dark, sometimes a saturated accent."""
    lum = 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]
    if rng.random() < 0.35:
        return hsv(rng.uniform(0, 1), rng.uniform(0.6, 1), 0.9 if lum < 0.5 else 0.35)
    return np.full(3, rng.uniform(0.0, 0.2) if lum > 0.5 else rng.uniform(0.85, 1.0))


def hsv(h, s, v) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float64)


def product_label(rng, width: int, height: int, body, border=None) -> np.ndarray:
    """A printed label (height, width, 3) on background ``body`` (RGB 0..1): stripes or bands, a logo (circle,
    star, shield or lettered badge), a brand word, small print and sometimes a barcode. ``border`` (RGB 0..1): a
    one-pixel frame of this colour, so that a clamped texture continues as that colour outside the label."""
    bg = np.asarray(body, dtype=np.float64)
    img = Image.new("RGB", (width, height), rgb255(bg))
    d = ImageDraw.Draw(img)
    ink, accent = contrast_colour(rng, bg), hsv(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    style = int(rng.integers(4))
    if style == 0:  # horizontal bands
        for _ in range(int(rng.integers(1, 4))):
            y = rng.uniform(0, 1) * height
            h = rng.uniform(0.04, 0.25) * height
            band = hsv(rng.uniform(0, 1), rng.uniform(0.3, 1), rng.uniform(0.3, 1))
            d.rectangle([0, y, width, y + h], fill=rgb255(band))
    elif style == 1:  # diagonal or vertical stripes
        step = rng.uniform(0.04, 0.2) * width
        slant = rng.uniform(-0.6, 0.6) * height
        col = rgb255(accent)
        for x in np.arange(-height, width + height, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + slant, height), (x + slant, height)], fill=col)
    elif style == 2:  # a big coloured panel
        x0 = rng.uniform(0.0, 0.4) * width
        d.rounded_rectangle([x0, height * 0.1, x0 + width * rng.uniform(0.3, 0.6), height * 0.9],
                            radius=int(height * 0.1), fill=rgb255(accent))
    # logo
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.3, 0.7) * height
    r = rng.uniform(0.12, 0.3) * height
    kind = int(rng.integers(4))
    logo = rgb255(hsv(rng.uniform(0, 1), rng.uniform(0.5, 1), rng.uniform(0.6, 1)))
    if kind == 0:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=logo, outline=rgb255(ink), width=max(1, int(r / 8)))
    elif kind == 1:
        ang = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        d.polygon([(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)], fill=logo)
    elif kind == 2:
        d.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r * 0.2), (cx, cy + r), (cx - r, cy + r * 0.2)],
                  fill=logo)
    else:
        d.rounded_rectangle([cx - r * 1.4, cy - r, cx + r * 1.4, cy + r], radius=int(r * 0.4), fill=logo)
    # brand word and small print
    brand = word(rng).upper() if rng.random() < 0.6 else word(rng).capitalize()
    f = font(int(rng.integers(len(FONTS))), max(8, int(height * rng.uniform(0.16, 0.32))))
    tx, ty = rng.uniform(0.05, 0.45) * width, rng.uniform(0.15, 0.55) * height
    d.text((tx, ty), brand, fill=rgb255(ink), font=f)
    small = font(int(rng.integers(len(FONTS))), max(6, int(height * rng.uniform(0.06, 0.11))))
    for _ in range(int(rng.integers(1, 4))):
        text = SMALL[int(rng.integers(len(SMALL)))] if rng.random() < 0.6 else word(rng, (2, 5))
        d.text((rng.uniform(0.02, 0.7) * width, rng.uniform(0.05, 0.9) * height), text, fill=rgb255(ink), font=small)
    if rng.random() < 0.4:  # barcode on a white patch
        bw, bh = width * rng.uniform(0.1, 0.18), height * rng.uniform(0.2, 0.35)
        bx, by = rng.uniform(0.0, 1.0) * (width - bw), rng.uniform(0.5, 0.95) * (height - bh)
        d.rectangle([bx, by, bx + bw, by + bh], fill=(250, 250, 250))
        x = bx + 2
        while x < bx + bw - 2:
            w = int(rng.integers(1, 3))
            if rng.random() < 0.55:
                d.rectangle([x, by + 2, max(x, x + w - 1), by + max(3.0, bh * 0.8)], fill=(10, 10, 10))
            x += w
    out = np.asarray(img).copy()
    if border is not None:
        b = np.array(rgb255(border), np.uint8)
        out[0], out[-1], out[:, 0], out[:, -1] = b, b, b, b
    return out


def screen(rng, width: int, height: int) -> np.ndarray:
    """A phone screen: off (near black with a reflection), a wallpaper gradient with an icon grid, or an app."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    mode = rng.random()
    if mode < 0.3:
        base = np.full((height, width, 3), rng.uniform(0.02, 0.08), np.float32)
        refl = np.clip(1 - np.abs((xx / width + yy / height) - rng.uniform(0.4, 1.4)) * 4, 0, 1)[..., None]
        return (np.clip(base + refl * rng.uniform(0.05, 0.25), 0, 1) * 255).astype(np.uint8)
    c1, c2 = hsv(rng.uniform(0, 1), rng.uniform(0.3, 1), rng.uniform(0.3, 1)), hsv(rng.uniform(0, 1), 0.8, 0.5)
    t = (yy / height)[..., None]
    img = Image.fromarray(((c1 * (1 - t) + c2 * t) * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if mode < 0.75:  # icon grid
        cols, rows = 4, 6
        s = width / cols
        for i in range(cols):
            for j in range(1, rows):
                if rng.random() < 0.85:
                    col = rgb255(hsv(rng.uniform(0, 1), rng.uniform(0.4, 1), rng.uniform(0.5, 1)))
                    d.rounded_rectangle([i * s + s * 0.18, j * s * 0.9, i * s + s * 0.82, j * s * 0.9 + s * 0.64],
                                        radius=int(s * 0.15), fill=col)
    else:  # an app: white page with text lines
        d.rectangle([0, 0, width, height], fill=(245, 245, 245))
        d.rectangle([0, 0, width, height * 0.1], fill=rgb255(c1))
        for j in range(12):
            y = height * (0.15 + 0.07 * j)
            d.rectangle([width * 0.08, y, width * rng.uniform(0.4, 0.92), y + height * 0.02], fill=(90, 90, 90))
    return np.asarray(img)


def _smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    grid = (rng.uniform(0, 1, (cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32) / 255.0


def surface(rng, kind: str, size: int = 128, colour=None) -> np.ndarray:
    """A (size, size, 3) uint8 surface pattern that tiles roughly: wood, fabric, knit, plaster, tiles, leather,
    metal (brushed), carpet, paper."""
    c = np.asarray(colour if colour is not None else hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.6),
                                                          rng.uniform(0.3, 0.95)), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "wood":
        n = _smooth_noise(rng, size, size, 5)
        rings = np.sin((xx * rng.uniform(10, 30) + n * 3) * np.pi * 2) * 0.5 + 0.5
        grain = rng.uniform(0, 1, (size, 1)).astype(np.float32) * np.ones((1, size), np.float32)
        g = 0.75 + 0.15 * rings + 0.1 * np.asarray(Image.fromarray((grain * 255).astype(np.uint8)).resize(
            (size, size)), np.float32) / 255
        wood = np.array([0.55, 0.36, 0.2], np.float32) * rng.uniform(0.6, 1.4)
        out = wood * g[..., None]
        if rng.random() < 0.5:  # planks
            out = out * (1 - 0.35 * ((yy * rng.integers(2, 6)) % 1 < 0.03))[..., None]
    elif kind in ("fabric", "knit", "carpet"):
        f = rng.uniform(20, 60)
        weave = (np.sin(xx * f * np.pi) * np.sin(yy * f * np.pi)) * 0.5 + 0.5
        if kind == "knit":
            weave = np.abs(np.sin((xx * f / 2 + np.abs(np.sin(yy * f * np.pi)) * 0.3) * np.pi))
        noise = rng.uniform(0, 1, (size, size)).astype(np.float32)
        out = c * (0.75 + 0.15 * weave + 0.1 * noise)[..., None]
        if kind == "fabric" and rng.random() < 0.4:  # stripes or checks
            c2 = hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9)).astype(np.float32)
            period = rng.uniform(0.1, 0.3)
            m = ((xx % period) < period / 2) if rng.random() < 0.5 else \
                (((xx % period) < period / 2) ^ ((yy % period) < period / 2))
            out = np.where(m[..., None], out, c2 * (0.75 + 0.15 * weave)[..., None])
    elif kind == "tiles":
        n = int(rng.integers(2, 6))
        grout = ((xx * n) % 1 < 0.05) | ((yy * n) % 1 < 0.05)
        out = np.where(grout[..., None], c * 0.6, c * (0.9 + 0.1 * _smooth_noise(rng, size, size, 8))[..., None])
    elif kind == "leather":
        n = rng.uniform(0, 1, (size, size)).astype(np.float32)
        out = c * (0.85 + 0.15 * n)[..., None] * 0.5
    elif kind == "metal":
        streak = rng.uniform(0, 1, (1, size)).astype(np.float32) * np.ones((size, 1), np.float32)
        out = c * (0.85 + 0.15 * streak)[..., None]
    else:  # plaster / paper / painted wall
        out = c * (0.88 + 0.12 * _smooth_noise(rng, size, size, int(rng.integers(4, 16))))[..., None]
        out = out + rng.uniform(-0.03, 0.03, (size, size, 1)).astype(np.float32)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


class Atlas:
    """Packs images into one square texture, row by row; ``add`` returns the tile's (x, y, w, h) in fractions."""

    def __init__(self, size: int = 512):
        self.size = size
        self.image = np.full((size, size, 3), 255, np.uint8)
        self.x = self.y = self.row_h = 0

    def add(self, img: np.ndarray) -> tuple[float, float, float, float]:
        h, w = img.shape[:2]
        if w > self.size:
            img = np.asarray(Image.fromarray(img).resize((self.size, max(1, h * self.size // w))))
            h, w = img.shape[:2]
        if self.x + w > self.size:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        if self.y + h > self.size:  # full: shrink into what is left (rare; keeps the frame drawable)
            h = max(1, self.size - self.y)
            img = np.asarray(Image.fromarray(img).resize((w, h)))
            if h <= 1:
                return (0.0, 0.0, 1.0 / self.size, 1.0 / self.size)
        self.image[self.y:self.y + h, self.x:self.x + w] = img[..., :3]
        # half a texel inside the tile, so that linear filtering never reads the neighbour
        rect = ((self.x + 0.5) / self.size, (self.y + 0.5) / self.size, (w - 1) / self.size, (h - 1) / self.size)
        self.x += w
        self.row_h = max(self.row_h, h)
        return rect
