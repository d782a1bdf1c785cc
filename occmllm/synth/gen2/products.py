"""Generation-2 objects that look like products: several shape variants per class, each with its materials.

Variants (``VARIANTS``): bottles of wine, water, mustard (a squeeze bottle) and bleach (a jug with a handle); soda,
food, spray and rectangular (luncheon-meat) cans; slab and flip phones; compact and reflex cameras; TV and slim
remotes; kitchen, pocket and table knives; ceramic and wooden bowls; glass and plastic jars with lids. Shapes are
unions of ``geometry`` solids (so the occupancy ground truth stays exact); every solid's ``shade`` indexes the
model's ``materials``: a colour, a gloss, a metallic look, and optionally a printed texture (a label wrapped around
the object's z axis, or a print on a flat face, such as a phone screen). Units are metres in the object's own frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Solid, cylinder, extrude, revolve, rotation_x, rotation_y, rounded_rectangle, slab, transform
from ..objects import FAMILIES, Grasp, ObjectModel, _signed_area, _smoothstep, _u
from . import textures as tx


@dataclass
class Material:
    """How a solid looks. ``mapping``: None, "cyl" (the texture wraps around z between heights ``band`` = (z0, z1),
    over ``wrap`` of the circumference from angle ``start``) or "planar" (the texture lies on the xy rectangle
    ``band`` = (x0, x1, y0, y1), seen from +z)."""

    color: tuple
    roughness: float = 0.6
    specular: float | None = None
    shininess: float = 24.0
    metallic: bool = False
    texture: np.ndarray | None = None
    mapping: str | None = None
    band: tuple = ()
    wrap: float = 1.0
    start: float = 0.0
    repeat: bool = False
    tiles: float = 1.0  # repeats per unit when ``repeat``


def _choice(rng, items):
    return items[int(rng.integers(len(items)))]


def scaled(solid: Solid, sx: float, sy: float, sz: float = 1.0) -> Solid:
    s = np.array([sx, sy, sz])
    inner = solid.inside
    return Solid(solid.vertices * s, solid.faces, lambda p: inner(p / s), solid.shade)


def capsule(p0, p1, r: float, shade: int = 0, segments: int = 10) -> Solid:
    """A capsule (cylinder with round ends) from p0 to p1; its inside test is the distance to the segment."""
    from ..geometry import frame_from_z, unit_sphere

    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.linalg.norm(d))
    R = frame_from_z(d / max(length, 1e-9))
    cyl = cylinder(r, 0.0, length, segments)
    sv, sf = unit_sphere(5, segments)
    v = np.concatenate([cyl.vertices, sv * r, sv * r + [0, 0, length]])
    f = np.concatenate([cyl.faces, sf + len(cyl.vertices), sf + len(cyl.vertices) + len(sv)])

    def inside(p):
        t = np.clip((p - p0) @ d / max(length ** 2, 1e-12), 0, 1)
        return np.linalg.norm(p - (p0 + t[:, None] * d), axis=1) <= r

    return Solid(v @ R.T + p0, f, inside, shade)


def _profile_bottle(rng, R, body_h, shoulder_h, neck_r, neck_h, base_round=0.006, waist=1.0, round_shoulder=True):
    zs = np.linspace(base_round, body_h, 10)
    rs = R * (1 - (1 - waist) * np.sin(np.pi * zs / body_h) ** 2)
    t = np.linspace(0, 1, 8)[1:]
    sz = body_h + shoulder_h * t
    sr = R + (neck_r - R) * (_smoothstep(t) if round_shoulder else t)
    top = body_h + shoulder_h + neck_h
    outer = np.concatenate([np.column_stack([rs, zs]), np.column_stack([sr, sz]), [[neck_r, top]]])
    strokes = [np.array([[0, 0], [R * 0.85, 0], [R * 0.97, base_round * 0.5], [R, base_round]]), outer,
               np.array([[neck_r, top], [0, top]])]
    return strokes, top


def _glass(rng, tint=None):
    tint = tint if tint is not None else _choice(rng, [(0.12, 0.25, 0.12), (0.25, 0.14, 0.06), (0.55, 0.62, 0.55),
                                                       (0.08, 0.08, 0.1)])
    return Material(tuple(np.asarray(tint) * rng.uniform(0.8, 1.2)), 0.1, specular=0.9, shininess=60)


def _label(rng, w, h, body, paper=None):
    paper = paper if paper is not None else tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.9), rng.uniform(0.5, 1.0))
    return tx.product_label(rng, w, h, paper, border=body)


def _plastic(rng, color=None, gloss=None):
    color = color if color is not None else tx.hsv(rng.uniform(0, 1), rng.uniform(0.3, 1), rng.uniform(0.3, 1))
    gloss = gloss if gloss is not None else rng.uniform(0.2, 0.7)
    return Material(tuple(color), 1 - gloss, specular=0.15 + 0.5 * gloss, shininess=16 + 40 * gloss)


def _metal(rng, color=None):
    color = color if color is not None else _choice(rng, [(0.75, 0.75, 0.78), (0.8, 0.68, 0.4), (0.6, 0.6, 0.62),
                                                          (0.85, 0.85, 0.88)])
    return Material(tuple(color), 0.2, specular=0.8, shininess=40, metallic=True)


# --- bottles -----------------------------------------------------------------------------------------------------
def bottle(rng) -> ObjectModel:
    variant = _choice(rng, ["wine", "water", "mustard", "bleach", "generic"])
    sx = sy = 1.0
    handle = None
    if variant == "wine":
        R, body_h, sh, neck_r, neck_h = _u(rng, 0.034, 0.041), _u(rng, 0.16, 0.21), _u(rng, 0.035, 0.06), \
            _u(rng, 0.012, 0.015), _u(rng, 0.07, 0.095)
        body = _glass(rng)
        cap = _metal(rng, tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.9), rng.uniform(0.2, 0.9))) \
            if rng.random() < 0.7 else _plastic(rng, (0.1, 0.1, 0.1))
        cap_h, cap_r = _u(rng, 0.03, 0.055), neck_r * 1.08
        label = (0.25, 0.65, _u(rng, 0.35, 0.7))
    elif variant == "water":
        R, body_h, sh, neck_r, neck_h = _u(rng, 0.029, 0.036), _u(rng, 0.13, 0.2), _u(rng, 0.03, 0.05), \
            _u(rng, 0.011, 0.014), _u(rng, 0.01, 0.02)
        body = Material(tuple(np.array([0.7, 0.8, 0.9]) * rng.uniform(0.75, 1.05)), 0.1, specular=0.9, shininess=70)
        cap = _plastic(rng, _choice(rng, [(0.1, 0.3, 0.8), (0.95, 0.95, 0.95), (0.1, 0.6, 0.2), (0.8, 0.1, 0.1)]))
        cap_h, cap_r = _u(rng, 0.012, 0.02), neck_r * _u(rng, 1.15, 1.35)
        label = (_u(rng, 0.35, 0.5), _u(rng, 0.6, 0.8), 1.0)
    elif variant == "mustard":
        R, body_h, sh, neck_r, neck_h = _u(rng, 0.03, 0.04), _u(rng, 0.11, 0.16), _u(rng, 0.015, 0.03), \
            _u(rng, 0.013, 0.017), _u(rng, 0.005, 0.012)
        sy = _u(rng, 0.6, 0.8)
        body = _plastic(rng, _choice(rng, [(0.95, 0.8, 0.1), (0.85, 0.15, 0.1), (0.55, 0.35, 0.12),
                                           (0.95, 0.95, 0.9), (0.2, 0.6, 0.2)]), gloss=_u(rng, 0.4, 0.8))
        cap = _plastic(rng, _choice(rng, [(0.85, 0.15, 0.1), (0.95, 0.95, 0.95), (0.95, 0.8, 0.1), (0.1, 0.2, 0.7)]))
        cap_h, cap_r = _u(rng, 0.025, 0.04), neck_r * _u(rng, 1.2, 1.5)
        label = (0.15, 0.85, _u(rng, 0.4, 0.6))
    elif variant == "bleach":
        R, body_h, sh, neck_r, neck_h = _u(rng, 0.045, 0.058), _u(rng, 0.15, 0.22), _u(rng, 0.03, 0.05), \
            _u(rng, 0.014, 0.018), _u(rng, 0.01, 0.02)
        sy = _u(rng, 0.55, 0.75)
        body = _plastic(rng, _choice(rng, [(0.95, 0.95, 0.95), (0.92, 0.92, 0.88), (0.2, 0.4, 0.85),
                                           (0.95, 0.55, 0.1), (0.6, 0.8, 0.95)]), gloss=_u(rng, 0.2, 0.6))
        cap = _plastic(rng)
        cap_h, cap_r = _u(rng, 0.015, 0.025), neck_r * _u(rng, 1.2, 1.4)
        label = (0.12, 0.7, _u(rng, 0.35, 0.5))
        handle = True
    else:
        R, body_h, sh, neck_r, neck_h = _u(rng, 0.022, 0.04), _u(rng, 0.09, 0.17), _u(rng, 0.015, 0.05), \
            _u(rng, 0.009, 0.02), _u(rng, 0.012, 0.04)
        body = _plastic(rng)
        cap = _plastic(rng)
        cap_h, cap_r = _u(rng, 0.01, 0.025), neck_r * _u(rng, 1.05, 1.3)
        label = (0.2, 0.8, _u(rng, 0.4, 1.0))
    waist = _u(rng, 0.85, 0.97) if variant in ("water", "generic") and rng.random() < 0.5 else 1.0
    strokes, top = _profile_bottle(rng, R, body_h, sh, neck_r, neck_h, waist=waist,
                                   round_shoulder=variant != "bleach" or rng.random() < 0.5)
    main = revolve(strokes, 28)
    if sy != 1.0:
        main = scaled(main, sx, sy)
    solids = [main, cylinder(cap_r, top - 0.002, top + cap_h * (0.5 if variant == "mustard" else 1.0), 20, shade=1)]
    if variant == "mustard":  # a conical nozzle on the cap
        solids.append(revolve([np.array([[0, top + cap_h * 0.5 - 0.001], [cap_r * 0.9, top + cap_h * 0.5 - 0.001]]),
                               np.array([[cap_r * 0.9, top + cap_h * 0.5 - 0.001], [cap_r * 0.25, top + cap_h]]),
                               np.array([[cap_r * 0.25, top + cap_h], [0, top + cap_h]])], 16, shade=1))
    if handle:  # a jug handle on the -x side, from the shoulder down the body
        hx = -R * 0.75
        r = _u(rng, 0.007, 0.011)
        p = [(hx, 0, body_h + sh * 0.6), (hx - R * 0.45, 0, body_h + sh * 0.2), (hx - R * 0.45, 0, body_h * 0.55),
             (hx + 0.004, 0, body_h * 0.45)]
        solids += [capsule(p[k], p[k + 1], r) for k in range(3)]
    z0, z1, wrap = body_h * label[0], body_h * label[1], label[2]
    tex = _label(rng, 256, max(48, int(256 * (z1 - z0) / (2 * np.pi * R * wrap))), body.color)
    body.texture, body.mapping, body.band, body.wrap, body.start = tex, "cyl", (z0, z1), wrap, _u(rng, 0, 2 * np.pi)
    if variant == "wine" and rng.random() < 0.5:
        body.roughness = 0.15
    grasp = Grasp(np.array([0, 0, body_h * _u(rng, 0.35, 0.6)]), np.eye(3), R * sx, R * sy, 2.0, slide=body_h * 0.12)
    return ObjectModel("bottle", solids, grasp, dict(variant=f"bottle:{variant}", materials=[body, cap, cap]))


# --- cans --------------------------------------------------------------------------------------------------------
def can(rng) -> ObjectModel:
    variant = _choice(rng, ["soda", "food", "spray", "tin"])
    metal = _metal(rng, (0.78, 0.78, 0.8))
    if variant == "tin":  # a rounded-rectangle tin (luncheon meat, sardines), label all round
        W, D, H = _u(rng, 0.085, 0.11), _u(rng, 0.045, 0.06), _u(rng, 0.06, 0.09)
        r = _u(rng, 0.008, 0.016)
        outline = rounded_rectangle(W, D, r, 4)
        body_solid = extrude(outline, 0.004, H - 0.004)
        solids = [body_solid, extrude(rounded_rectangle(W + 0.002, D + 0.002, r, 4), 0.0, 0.005, shade=1),
                  extrude(rounded_rectangle(W + 0.002, D + 0.002, r, 4), H - 0.005, H, shade=1)]
        paper = tx.hsv(rng.uniform(0, 1), rng.uniform(0.4, 1), rng.uniform(0.3, 0.9))
        body = Material(tuple(paper), 0.4, specular=0.5, shininess=30,
                        texture=_label(rng, 320, 96, paper, paper=paper), mapping="cyl", band=(0.005, H - 0.005),
                        wrap=1.0, start=_u(rng, 0, 2 * np.pi))
        grasp = Grasp(np.array([0, 0, H / 2]), np.eye(3), W / 2, D / 2, 5.0, slide=H * 0.1)
        return ObjectModel("can", solids, grasp, dict(variant="can:tin", materials=[body, metal, metal]))
    if variant == "soda":
        R, H = (_u(rng, 0.031, 0.034), _u(rng, 0.11, 0.125)) if rng.random() < 0.7 else \
            (_u(rng, 0.027, 0.03), _u(rng, 0.14, 0.16))
        neck = _u(rng, 0.8, 0.88)
        strokes = [np.array([[0, 0.008], [R * 0.75, 0], [R * 0.85, 0.001], [R, 0.012]]),
                   np.array([[R, 0.012], [R, H - 0.016]]),
                   np.array([[R, H - 0.016], [R * neck, H - 0.003]]),
                   np.array([[R * neck, H - 0.003], [R * neck + 0.001, H], [R * neck - 0.002, H],
                             [R * neck - 0.002, H - 0.004], [0, H - 0.004]])]
        band, paper = (0.012, H - 0.016), tx.hsv(rng.uniform(0, 1), rng.uniform(0.3, 1), rng.uniform(0.2, 1))
        body = Material(tuple(paper), 0.2, specular=0.7, shininess=40)
    elif variant == "spray":
        R, H = _u(rng, 0.025, 0.033), _u(rng, 0.14, 0.19)
        dome = R * _u(rng, 0.5, 0.8)
        t = np.linspace(0, 1, 6)[1:]
        strokes = [np.array([[0, 0.006], [R * 0.8, 0], [R, 0.006]]), np.array([[R, 0.006], [R, H]]),
                   np.column_stack([R * np.cos(t * np.pi / 2) * 0.85 + R * 0.15 * (1 - t),
                                    H + dome * np.sin(t * np.pi / 2)]),
                   np.array([[R * 0.15, H + dome], [0, H + dome]])]
        band, paper = (0.01, H - 0.005), tx.hsv(rng.uniform(0, 1), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
        body = Material(tuple(paper), 0.25, specular=0.7, shininess=40)
    else:  # food
        R, H = _u(rng, 0.035, 0.05), _u(rng, 0.07, 0.12)
        ribs = rng.random() < 0.5
        side_z = np.linspace(0.008, H - 0.008, 24 if ribs else 2)
        side_r = np.full_like(side_z, R)
        if ribs:
            side_r = side_r - 0.0012 * (np.sin(side_z * 2 * np.pi / _u(rng, 0.008, 0.014)) > 0.3)
        strokes = [np.array([[0, 0.003], [R * 0.95, 0.003], [R + 0.001, 0], [R + 0.001, 0.005], [R, 0.008]]),
                   np.column_stack([side_r, side_z]),
                   np.array([[R, H - 0.008], [R + 0.001, H - 0.005], [R + 0.001, H], [R * 0.95, H - 0.003],
                             [0, H - 0.003]])]
        band, paper = (_u(rng, 0.008, 0.012), H - _u(rng, 0.008, 0.012)), \
            tx.hsv(rng.uniform(0, 1), rng.uniform(0.2, 1), rng.uniform(0.4, 1))
        body = Material(tuple(paper), 0.7, specular=0.15, shininess=16)
    solids = [revolve(strokes, 28)]
    if variant == "spray":
        cap_h = _u(rng, 0.025, 0.04)
        solids.append(cylinder(R * _u(rng, 0.85, 1.0), H + 0.004, H + 0.004 + cap_h, 20, shade=1))
        metal_cap = _plastic(rng)
    else:
        metal_cap = metal
        if variant == "soda" and rng.random() < 0.7:
            tab = slab(0.012, 0.02, 0.0015, 0.005, shade=2)
            solids.append(transform(tab, None, (0, 0, H - 0.003)))
    height = band[1] - band[0]
    body.texture = _label(rng, 320, max(64, int(320 * height / (2 * np.pi * R))), (0.75, 0.75, 0.78), paper=paper)
    body.mapping, body.band, body.wrap, body.start = "cyl", band, 1.0, _u(rng, 0, 2 * np.pi)
    # metal where the label does not reach: the solid's body material is the label, rims are drawn by the clamp
    grasp = Grasp(np.array([0, 0, H * _u(rng, 0.4, 0.6)]), np.eye(3), R, R, 2.0, slide=H * 0.1)
    return ObjectModel("can", solids, grasp, dict(variant=f"can:{variant}", materials=[body, metal_cap, metal]))


# --- jars and bowls (generation-1 shapes, new materials) ----------------------------------------------------------
def jar(rng) -> ObjectModel:
    model = FAMILIES["jar"](rng)
    verts = np.concatenate([s.vertices for s in model.solids if s.shade == 0])
    R, H = float(np.abs(verts[:, :2]).max()), float(verts[:, 2].max())
    glass = rng.random() < 0.6
    if glass:  # the contents seen through the glass
        content = _choice(rng, [(0.45, 0.05, 0.1), (0.75, 0.45, 0.05), (0.3, 0.4, 0.1), (0.85, 0.3, 0.1),
                                (0.3, 0.1, 0.3), (0.9, 0.85, 0.7)])
        body = Material(tuple(np.asarray(content) * rng.uniform(0.7, 1.1)), 0.1, specular=0.9, shininess=60)
    else:
        body = _plastic(rng)
    lid = _metal(rng, tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.9), rng.uniform(0.5, 0.95))) if rng.random() < 0.6 \
        else _plastic(rng)
    z0, z1 = H * _u(rng, 0.15, 0.3), H * _u(rng, 0.55, 0.8)
    wrap = _u(rng, 0.4, 1.0)
    body.texture = _label(rng, 256, max(48, int(256 * (z1 - z0) / (2 * np.pi * R * wrap))), body.color)
    body.mapping, body.band, body.wrap, body.start = "cyl", (z0, z1), wrap, _u(rng, 0, 2 * np.pi)
    model.params.update(variant=f"jar:{'glass' if glass else 'plastic'}", materials=[body, lid, lid])
    return model


def bowl(rng) -> ObjectModel:
    model = FAMILIES["bowl"](rng)
    verts = np.concatenate([s.vertices for s in model.solids])
    h = float(verts[:, 2].max())
    wooden = rng.random() < 0.25
    if wooden:
        body = Material((1, 1, 1), 0.6, specular=0.2, shininess=20, texture=tx.surface(rng, "wood", 128),
                        mapping="cyl", band=(0.0, h), wrap=1.0)
    else:
        glaze = tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.5, 1.0))
        body = Material(tuple(glaze), 0.15, specular=0.7, shininess=50)
        if rng.random() < 0.6:  # a painted pattern: rim bands, dots or a print round the outside
            body.texture = _pattern(rng, glaze)
            body.mapping, body.band, body.wrap = "cyl", (0.0, h * 1.02), 1.0
    model.params.update(variant=f"bowl:{'wood' if wooden else 'ceramic'}", materials=[body, body, body])
    return model


def _pattern(rng, glaze) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 64), tx.rgb255(glaze))
    d = ImageDraw.Draw(img)
    ink = tx.rgb255(tx.hsv(rng.uniform(0, 1), rng.uniform(0.4, 1), rng.uniform(0.2, 0.8)))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            y = rng.uniform(0, 60)
            d.rectangle([0, y, 256, y + rng.uniform(2, 6)], fill=ink)
    else:
        step = rng.uniform(12, 30)
        for x in np.arange(0, 256, step):
            y = rng.uniform(10, 54)
            r = rng.uniform(2, 6)
            d.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return np.asarray(img)


# --- phones, remotes, cameras, knives -------------------------------------------------------------------------------
def cellphone(rng) -> ObjectModel:
    if rng.random() < 0.25:
        return _flip_phone(rng)
    model = FAMILIES["cellphone"](rng)
    W, L = model.params["width"], model.params["length"]
    body = _plastic(rng, _choice(rng, [(0.08, 0.08, 0.09), (0.9, 0.9, 0.92), (0.75, 0.75, 0.78), (0.2, 0.3, 0.6),
                                       (0.7, 0.55, 0.45), tx.hsv(rng.uniform(0, 1), 0.6, 0.7)]),
                    gloss=_u(rng, 0.3, 0.8))
    if rng.random() < 0.3:
        body.metallic = True
    scr = Material((1, 1, 1), 0.05, specular=0.9, shininess=80, texture=tx.screen(rng, 96, 192), mapping="planar",
                   band=(-W / 2, W / 2, -L / 2, L / 2))
    model.params.update(variant="cellphone:slab", materials=[body, _plastic(rng, (0.1, 0.1, 0.1)), scr])
    return model


def _flip_phone(rng) -> ObjectModel:
    W, L, T = _u(rng, 0.045, 0.055), _u(rng, 0.085, 0.1), _u(rng, 0.009, 0.012)
    r = _u(rng, 0.004, 0.01)
    base = slab(W, L, T, r, corner_points=4)
    keypad = transform(slab(W * 0.8, L * 0.6, 0.001, 0.002, corner_points=3, shade=3), None, (0, -L * 0.1, T / 2))
    solids = [transform(base, None, (0, -L / 2, 0)), transform(keypad, None, (0, -L / 2, 0))]
    opened = rng.random() < 0.7
    angle = np.radians(_u(rng, 150, 170)) if opened else np.pi  # the lid turns about the hinge line (x axis)
    lid = slab(W, L, T * 0.8, r, corner_points=4)
    small = transform(slab(W * 0.75, L * 0.55, 0.001, 0.002, corner_points=3, shade=2), None, (0, 0, -T * 0.4))
    rot = rotation_x(np.pi - angle)
    for s in (lid, small):
        moved = transform(transform(s, None, (0, L / 2, 0)), rot, (0, 0, T / 2 if not opened else 0))
        solids.append(moved if opened else transform(s, None, (0, -L / 2, T * 0.9)))
    solids.append(transform(cylinder(0.006, -W / 2, W / 2, 12, shade=1), rotation_y(np.pi / 2), (0, 0, 0)))
    color = _choice(rng, [(0.1, 0.1, 0.12), (0.7, 0.7, 0.74), (0.6, 0.1, 0.15), (0.15, 0.25, 0.55)])
    body = _plastic(rng, color, gloss=_u(rng, 0.4, 0.8))
    scr = Material((1, 1, 1), 0.05, specular=0.8, shininess=60, texture=tx.screen(rng, 64, 96), mapping="planar",
                   band=(-W * 0.375, W * 0.375, -L * 0.275 + L / 2, L * 0.275 + L / 2))
    keys = Material((1, 1, 1), 0.5, specular=0.3, texture=_keypad(rng), mapping="planar",
                    band=(-W * 0.4, W * 0.4, -L * 0.4 - L / 2, L * 0.2 - L / 2))
    rot_g = np.stack([[0, 0, -1.0], [-1.0, 0, 0], [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([0, -L * _u(rng, 0.4, 0.6), 0]), rot_g, T / 2, W / 2, 6.0, slide=L * 0.08)
    return ObjectModel("cellphone", solids, grasp, dict(variant="cellphone:flip",
                                                        materials=[body, _plastic(rng, (0.15, 0.15, 0.15)), scr, keys]))


def _keypad(rng) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (60, 90), (30, 30, 32))
    d = ImageDraw.Draw(img)
    key = tx.rgb255(_choice(rng, [(0.8, 0.8, 0.82), (0.25, 0.25, 0.28), (0.6, 0.6, 0.9)]))
    for i in range(3):
        for j in range(5):
            d.rounded_rectangle([4 + i * 18, 4 + j * 17, 18 + i * 18, 17 + j * 17], radius=3, fill=key)
    return np.asarray(img)


def remote(rng) -> ObjectModel:
    model = FAMILIES["remote"](rng)
    slim = rng.random() < 0.3
    body = _plastic(rng, _choice(rng, [(0.06, 0.06, 0.07), (0.2, 0.2, 0.22), (0.75, 0.75, 0.78), (0.92, 0.92, 0.9)]),
                    gloss=_u(rng, 0.1, 0.6))
    buttons = _plastic(rng, _choice(rng, [(0.3, 0.3, 0.32), (0.85, 0.85, 0.85), (0.1, 0.1, 0.1),
                                          tx.hsv(rng.uniform(0, 1), 0.5, 0.7)]))
    power = _plastic(rng, _choice(rng, [(0.8, 0.1, 0.1), (0.1, 0.5, 0.2), (0.2, 0.2, 0.7)]))
    if slim:  # a slim media remote: fewer buttons, a d-pad
        model.solids = [s for i, s in enumerate(model.solids) if s.shade != 1 or i % 3 == 0]
    model.params.update(variant=f"remote:{'slim' if slim else 'tv'}", materials=[body, buttons, power])
    return model


def camera(rng) -> ObjectModel:
    if rng.random() < 0.5:
        model = FAMILIES["camera"](rng)
        variant = "compact"
    else:
        model = _reflex(rng)
        variant = "reflex"
    skin = _choice(rng, [(0.07, 0.07, 0.08), (0.75, 0.75, 0.78), (0.12, 0.12, 0.13), (0.55, 0.45, 0.35)])
    body = Material((1, 1, 1), 0.6, specular=0.2, shininess=20, texture=tx.surface(rng, "leather", 64, skin),
                    mapping="planar", band=(-0.08, 0.08, -0.06, 0.06), repeat=True, tiles=1.0)
    if variant == "compact" and rng.random() < 0.5:
        body = _metal(rng, _choice(rng, [(0.75, 0.75, 0.78), (0.8, 0.7, 0.6), (0.3, 0.3, 0.35)]))
    trim = _metal(rng, (0.25, 0.25, 0.27)) if rng.random() < 0.5 else _plastic(rng, (0.1, 0.1, 0.1))
    glass = Material((0.05, 0.05, 0.12), 0.05, specular=1.0, shininess=90)
    model.params.update(variant=f"camera:{variant}", materials=[body, trim, glass])
    return model


def _reflex(rng) -> ObjectModel:
    W, H, D = _u(rng, 0.125, 0.15), _u(rng, 0.085, 0.105), _u(rng, 0.06, 0.08)
    solids = [extrude(rounded_rectangle(W, H, _u(rng, 0.008, 0.015), 4), -D / 2, D / 2)]
    lx = _u(rng, -0.012, 0.0)
    lr = _u(rng, 0.028, 0.036)
    z = D / 2
    for k in range(int(rng.integers(2, 4))):
        seg = _u(rng, 0.015, 0.035)
        solids.append(transform(cylinder(lr * (1 - 0.05 * k), z - 0.001, z + seg, 24, shade=1 if k % 2 else 0), None,
                                (lx, -H * 0.05, 0)))
        z += seg
    solids.append(transform(cylinder(lr * 0.8, z - 0.001, z + 0.0015, 24, shade=2), None, (lx, -H * 0.05, 0)))
    grip = _u(rng, 0.03, 0.04)
    solids.append(transform(slab(grip, H * 0.95, _u(rng, 0.02, 0.03), 0.01), None, (W / 2 - grip / 2, 0, D / 2 + 0.01)))
    hw = _u(rng, 0.045, 0.06)  # pentaprism hump
    solids.append(transform(slab(hw, D * 0.7, _u(rng, 0.02, 0.03), 0.006), rotation_x(np.pi / 2),
                            (lx, H / 2 + 0.01, 0)))
    solids.append(transform(cylinder(0.006, 0, 0.005, 14, shade=1), rotation_x(-np.pi / 2), (W / 2 - 0.02, H / 2, 0)))
    rot = np.stack([[0, 0, -1.0], np.cross([0, 1.0, 0], [0, 0, -1.0]), [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([W / 2 - 0.03, 0, 0]), rot, D / 2 + 0.01, 0.03, 6.0, slide=H * 0.1, max_wrap=0.07)
    return ObjectModel("camera", solids, grasp, dict(width=W, height=H, depth=D))


def knife(rng) -> ObjectModel:
    variant = _choice(rng, ["kitchen", "kitchen", "pocket", "table"])
    steel = _metal(rng, (0.8, 0.8, 0.83))
    steel.texture, steel.mapping, steel.band = tx.surface(rng, "metal", 64, (0.85, 0.85, 0.88)), "planar", \
        (-0.03, 0.03, -0.1, 0.25)
    if variant == "kitchen":
        model = FAMILIES["knife"](rng)
        handle = Material((1, 1, 1), 0.5, specular=0.3, texture=tx.surface(rng, "wood", 64), mapping="planar",
                          band=(-0.02, 0.02, -0.13, 0.0)) if rng.random() < 0.4 else \
            _plastic(rng, _choice(rng, [(0.05, 0.05, 0.05), (0.15, 0.15, 0.15), (0.6, 0.1, 0.1), (0.95, 0.95, 0.95)]))
        model.params.update(variant="knife:kitchen", materials=[handle, steel, _metal(rng)])
        return model
    if variant == "table":  # a table knife: all steel, rounded tip
        Lb, wb = _u(rng, 0.09, 0.11), _u(rng, 0.014, 0.02)
        Lh, wh, th = _u(rng, 0.09, 0.11), _u(rng, 0.012, 0.018), _u(rng, 0.004, 0.007)
        x_tip = wb / 2
    else:  # pocket knife: short blade, rounded handle
        Lb, wb = _u(rng, 0.055, 0.085), _u(rng, 0.014, 0.022)
        Lh, wh, th = _u(rng, 0.08, 0.105), _u(rng, 0.018, 0.026), _u(rng, 0.012, 0.018)
        x_tip = wb / 2 * _u(rng, 0.0, 0.6)
    ang = np.linspace(np.pi, np.pi / 2, 8)
    y_edge = Lb * _u(rng, 0.4, 0.7)
    edge = np.column_stack([x_tip + (x_tip + wb / 2) * np.cos(ang) * (1 if variant == "pocket" else 0.999),
                            y_edge + (Lb - y_edge) * np.sin(ang)])
    poly = np.concatenate([[[-wb / 2, 0.0], [wb / 2, 0.0], [wb / 2, Lb * 0.8]], edge[::-1][:-1]])
    if _signed_area(poly) < 0:
        poly = poly[::-1]
    solids = [extrude(poly, -0.001, 0.001, shade=1)]
    solids.append(transform(slab(wh, Lh, th, min(wh, th) * 0.49, corner_points=5), None, (0, -Lh / 2, 0)))
    if variant == "pocket":
        solids += [transform(cylinder(0.003, -th / 2 - 0.0006, th / 2 + 0.0006, 10, shade=2), None, (0, -y0, 0))
                   for y0 in (0.006, Lh - 0.008)]
        handle = _plastic(rng, _choice(rng, [(0.75, 0.08, 0.08), (0.1, 0.1, 0.1), (0.4, 0.3, 0.2),
                                             (0.2, 0.3, 0.2)]), gloss=0.6)
    else:
        handle = steel
    rot = np.stack([[1.0, 0, 0], np.cross([0, 1.0, 0], [1.0, 0, 0]), [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([0, -Lh * _u(rng, 0.4, 0.6), 0]), rot, wh / 2, th / 2, 3.0, slide=Lh * 0.1)
    return ObjectModel("knife", solids, grasp, dict(variant=f"knife:{variant}", materials=[handle, steel, _metal(rng)],
                                                    length=Lb + Lh))


PRODUCTS = {"bottle": bottle, "bowl": bowl, "camera": camera, "can": can, "cellphone": cellphone, "jar": jar,
            "knife": knife, "remote": remote}


def make_product(cls: str, rng) -> ObjectModel:
    """One random product of ``cls``, re-centred on its bounding box; ``params['materials']`` per shade index.
    Texture bands stay in the frame the product was built in: ``params['built_at']`` is that frame's origin."""
    model = PRODUCTS[cls](rng)
    verts = np.concatenate([s.vertices for s in model.solids])
    centre = (verts.min(0) + verts.max(0)) / 2
    model.solids = [transform(s, None, -centre) for s in model.solids]
    model.grasp.origin = np.asarray(model.grasp.origin, dtype=np.float64) - centre
    model.params["built_at"] = -centre
    return model
