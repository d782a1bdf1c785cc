"""Structured domain randomisation backgrounds (Tobin et al. 2017, Prakash et al. 2019): a room drawn behind the
hand. Floor and walls, a table or desk top, furniture-like boxes (shelves, cabinets, a monitor), distractor objects
(boxes, cylinders, balls; never one of the eight classes), sometimes a person-like shape (torso, head, arms),
textured surfaces (wood, tiles, carpet, plaster, fabric, metal, real photo crops as posters or windows) and random
lights. Drawn at a low resolution and scaled up (the background of a close-up is out of focus), so it costs a few
milliseconds. Randomness from the caller; geometry in the camera frame (OpenCV axes)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from occmllm.render import Light, Part, render_scene

from ..geometry import rotation_x, rotation_y, unit_sphere
from . import photos, textures as tx

RES = 128

_BOX_FACES = [  # +x, -x, +y, -y, +z, -z: the face's 4 corners in unit-cube coordinates
    np.array([[1, -1, -1], [1, 1, -1], [1, 1, 1], [1, -1, 1]]),
    np.array([[-1, -1, -1], [-1, -1, 1], [-1, 1, 1], [-1, 1, -1]]),
    np.array([[-1, 1, -1], [-1, 1, 1], [1, 1, 1], [1, 1, -1]]),
    np.array([[-1, -1, -1], [1, -1, -1], [1, -1, 1], [-1, -1, 1]]),
    np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]]),
    np.array([[-1, -1, -1], [-1, 1, -1], [1, 1, -1], [1, -1, -1]]),
]


def box(centre, half, rot, colour, rect, tile_m: float = 0.5) -> Part:
    """A box (flat-shaded, every face textured with the tile at ``rect``, repeating every ``tile_m`` metres)."""
    verts, uvs, normals = [], [], []
    half = np.asarray(half, float)
    for k, corners in enumerate(_BOX_FACES):
        p = corners * half
        axis = k // 2
        a, b = [d for d in range(3) if d != axis]
        uvs.append(np.column_stack([p[:, a], p[:, b]]) / tile_m)
        verts.append(p)
        n = np.zeros(3)
        n[axis] = 1 if k % 2 == 0 else -1
        normals.append(np.repeat(n[None], 4, 0))
    v = np.concatenate(verts) @ rot.T + centre
    f = np.concatenate([[[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]] for k in range(6)])
    return Part(v, f, tuple(colour), 0.8, uv=np.concatenate(uvs), texture_rect=rect, texture_repeat=True,
                normals=np.concatenate(normals) @ rot.T, specular=0.05)


def ball(centre, radii, colour, rot=None) -> Part:
    v, f = unit_sphere(6, 12)
    v = v * np.asarray(radii)
    if rot is not None:
        v = v @ rot.T
    return Part(v + centre, f, tuple(colour), 0.6)


def room(rng, size: int, fx: float) -> tuple[np.ndarray, str]:
    """A (size, size, 3) uint8 background: a random room or table-top scene seen by a camera of focal ``fx``."""
    atlas = tx.Atlas(512)
    use_photos = photos.available() and len(photos.bank()) > 0
    kinds = ["wood", "tiles", "carpet", "plaster", "fabric", "metal", "paper", "knit", "leather"]

    def tile(kind=None):
        return atlas.add(tx.surface(rng, kind or kinds[int(rng.integers(len(kinds)))], 64))

    parts = []
    width, depth, height = rng.uniform(3, 7), rng.uniform(1.2, 4.5), rng.uniform(2.4, 3.2)
    eye = rng.uniform(0.9, 1.7)  # camera height above the floor; y is down, the floor at y = +eye
    white = (1.0, 1.0, 1.0)
    floor = tile(["wood", "tiles", "carpet"][int(rng.integers(3))])
    def neutral():  # offices and homes: mostly white, beige or grey walls
        return tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.25) ** 1.5, rng.uniform(0.55, 0.97))

    wall = atlas.add(tx.surface(rng, "plaster", 64, neutral()))
    wall2 = atlas.add(tx.surface(rng, ["plaster", "paper", "tiles"][int(rng.integers(3))], 64, neutral()))
    eye3 = np.eye(3)
    parts.append(box((0, eye + 0.05, depth / 2), (width, 0.05, depth + 2), eye3, white, floor, 0.6))
    parts.append(box((0, eye - height / 2, depth + 0.05), (width, height / 2, 0.05), eye3, white, wall, 1.0))
    side = rng.choice([-1, 1])
    parts.append(box((side * width / 2, eye - height / 2, depth / 2), (0.05, height / 2, depth + 2), eye3, white, wall2,
                     1.0))
    parts.append(box((0, eye - height - 0.05, depth / 2), (width, 0.05, depth + 2), eye3, white, wall, 1.0))
    # posters or windows with real photographs
    for _ in range(int(rng.integers(0, 3)) if use_photos else 0):
        img, _ = photos.photo(rng, 96)
        w_, h_ = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0)
        parts.append(box((rng.uniform(-width / 3, width / 3), eye - rng.uniform(1.0, 2.0), depth - 0.01),
                         (w_ / 2, h_ / 2, 0.01), eye3, white, atlas.add(img), max(w_, h_) * 2.1))
    # furniture along the back wall
    for _ in range(int(rng.integers(2, 7))):
        w_, h_, d_ = rng.uniform(0.3, 1.5), rng.uniform(0.3, 2.0), rng.uniform(0.2, 0.6)
        x = rng.uniform(-width / 2, width / 2)
        z = depth - d_ / 2 - rng.uniform(0, 0.8)
        col = tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.2, 1))
        parts.append(box((x, eye - h_ / 2, z), (w_ / 2, h_ / 2, d_ / 2), rotation_y(rng.normal(0, 0.2)), col, tile(),
                         0.5))
    # a table or desk between the camera and the wall
    if rng.random() < 0.75:
        top_y = eye - rng.uniform(0.7, 0.8)
        z = rng.uniform(0.6, max(0.7, depth - 0.4))
        tw, td = rng.uniform(0.8, 2.0), rng.uniform(0.5, 1.0)
        col = tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.4, 1))
        parts.append(box((rng.uniform(-0.5, 0.5), top_y + 0.02, z), (tw / 2, 0.02, td / 2), eye3, col,
                         tile(["wood", "plaster", "metal"][int(rng.integers(3))]), 0.6))
        for _ in range(int(rng.integers(1, 6))):  # distractors on it
            s = rng.uniform(0.05, 0.25)
            c = tx.hsv(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 1))
            p = np.array([rng.uniform(-tw / 2, tw / 2), top_y - s / 2, z + rng.uniform(-td / 3, td / 3)])
            if rng.random() < 0.5:
                parts.append(box(p, (s / 2, s / 2 * rng.uniform(0.3, 2), s / 2 * rng.uniform(0.5, 1.5)),
                                 rotation_y(rng.uniform(0, 3)), c, tile(), 0.3))
            else:
                parts.append(ball(p, (s / 2, s / 2 * rng.uniform(0.5, 1.5), s / 2), c))
    if rng.random() < 0.4:  # a person-like shape
        px, pz = rng.uniform(-1.0, 1.0), rng.uniform(0.9, max(1.0, depth - 0.3))
        c = tx.hsv(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.1, 0.9))
        skin = tx.hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.95))
        parts.append(ball((px, eye - 1.25, pz), (0.22, 0.35, 0.13), c))
        parts.append(ball((px, eye - 1.72, pz), (0.09, 0.12, 0.1), skin))
        legs = tx.hsv(rng.uniform(0, 1), 0.3, rng.uniform(0.1, 0.5))
        parts.append(ball((px, eye - 0.5, pz), (0.2, 0.45, 0.12), legs))
        for s in (-1, 1):
            parts.append(ball((px + s * 0.27, eye - 1.15, pz), (0.06, 0.32, 0.06), c, rotation_x(0.0)))
    # camera orientation: look ahead, a little down or up, a little to the side
    rot = rotation_x(rng.uniform(-0.5, 0.3)) @ rotation_y(rng.uniform(-0.6, 0.6))
    parts = [Part(p.vertices @ rot.T, p.faces, p.color, p.roughness, uv=p.uv, texture_rect=p.texture_rect,
                  texture_repeat=p.texture_repeat, normals=None if p.normals is None else p.normals @ rot.T,
                  specular=p.specular) for p in parts]
    lights = [Light(tuple(rng.uniform([-1, -0.5, -0.2], [1, 1.0, 1.0])), float(rng.uniform(0.4, 0.9)),
                    tuple(rng.uniform(0.8, 1.0, 3)))]
    K = np.array([[fx * RES / size, 0, RES / 2], [0, fx * RES / size, RES / 2], [0, 0, 1.0]])
    rgba, _ = render_scene(parts, K, RES, lights=lights, ambient=float(rng.uniform(0.4, 0.75)), texture=atlas.image,
                           znear=0.05, zfar=30.0)
    img = Image.fromarray(rgba[..., :3]).resize((size, size), Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 2.0))))
    return np.asarray(img), "room"
