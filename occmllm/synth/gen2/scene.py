"""One generation-2 sample: a product held by a dressed hand, lit, framed like ObMan or wider, over a real photo or
a rendered room, through a randomised camera. Same ``Sample`` and the same label rules as generation 1
(``occmllm/synth/scene.py``), plus a few generation-2 labels (variant, framing, sleeve, camera settings).

``make_sample(seed, index)`` is a pure function of its arguments, like generation 1's, but draws from its own
stream (a different generator key), so the two generations never share a sample.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from occmllm.prompts import CLASSES
from occmllm.render import Light, Part, render_object, render_scene, vertex_normals

from ..geometry import merge
from ..hand import make_hand
from ..scene import (MIN_VISIBLE, RETRIES, SIZE, Sample, _soften_edges, attributes, choose_view, ground_truth,
                     look_at, sample_labels, view_direction, visibility)
from . import photometric, photos, rooms
from .products import make_product
from .skin import dress
from .textures import Atlas

CLOSE_SHARE = 0.6  # ObMan's hand-centred framing; the rest are wider shots
PHOTO_SHARE = 0.45  # real photographs (when installed); the rest are rendered rooms


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x0CC2])


def _uv(material, p: np.ndarray) -> np.ndarray:
    """Texture coordinates of build-frame points ``p`` (N,3) under ``material``'s mapping."""
    if material.mapping == "cyl":
        z0, z1 = material.band
        theta = np.arctan2(p[:, 1], p[:, 0])
        u = ((theta - material.start) % (2 * np.pi)) / (2 * np.pi * material.wrap)
        v = (z1 - p[:, 2]) / (z1 - z0)
    else:
        x0, x1, y0, y1 = material.band
        u, v = (p[:, 0] - x0) / (x1 - x0), (y1 - p[:, 1]) / (y1 - y0)
        if material.repeat:
            u, v = u * 4, v * 4
    return np.column_stack([u, v])


def _env(rng):
    """A random environment for metallic surfaces: brightness as a smooth function of the normal (camera frame)."""
    a, b = rng.normal(size=(2, 3))
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)
    k = rng.uniform(0.3, 0.8)
    return lambda n: np.clip(0.45 + 0.35 * (n @ [0, -1.0, 0]) + k * np.clip(n @ a, 0, 1) ** 3
                             - 0.3 * np.clip(n @ b, 0, 1) ** 2, 0.15, 1.6)


def object_parts(model, to_cam, rot, atlas, env) -> list[Part]:
    """The product's parts: one per (shade, solid group); textured solids unrolled per face corner (so a label's
    seam is cut exactly) with their smooth normals kept."""
    mats = model.params["materials"]
    built_at = model.params["built_at"]
    parts = []
    for k, mat in enumerate(mats):
        solids = [s for s in model.solids if s.shade == k]
        if not solids:
            continue
        v, f = merge([(s.vertices, s.faces) for s in solids])
        n = vertex_normals(v, f)
        base = np.asarray(mat.color, dtype=np.float64)
        if mat.texture is not None:
            rect = atlas.add(mat.texture)
            pos, nrm = v[f].reshape(-1, 3), n[f].reshape(-1, 3)
            uv = _uv(mat, pos - built_at).reshape(-1, 3, 2)
            if mat.mapping == "cyl":  # faces across the label's seam: continue past 1 (clamped to the border)
                span = uv[..., 0].max(1) - uv[..., 0].min(1)
                cross = span > 0.5 / mat.wrap
                low = uv[..., 0] < 0.5 / mat.wrap
                uv[..., 0] += (cross[:, None] & low) / mat.wrap
            uv = uv.reshape(-1, 2)
            faces = np.arange(len(pos)).reshape(-1, 3)
        else:
            rect, pos, nrm, uv, faces = None, v, n, None, f
        ncam = nrm @ rot.T
        colours = None
        if mat.metallic:
            colours = np.clip(base[None] * env(ncam)[:, None], 0, 1)
        parts.append(Part(to_cam(pos), faces, tuple(base), mat.roughness, uv=uv, texture_rect=rect,
                          texture_repeat=mat.repeat, vertex_colors=colours, normals=ncam, specular=mat.specular,
                          shininess=mat.shininess))
    return parts


def _contact_shade(obj_parts, hand_parts, strength: float):
    """Darken object vertices near the hand and hand vertices near the object (contact shadows, ambient occlusion)."""
    hand_v = np.concatenate([p.vertices for p in hand_parts])
    obj_v = np.concatenate([p.vertices for p in obj_parts])
    for parts, other in ((obj_parts, cKDTree(hand_v[::3])), (hand_parts, cKDTree(obj_v[::2]))):  # every few: enough
        for p in parts:
            d, _ = other.query(p.vertices, distance_upper_bound=0.03)
            d = np.minimum(d, 0.03)
            occl = 1 - strength * np.exp(-(d / 0.012) ** 2)
            base = p.vertex_colors if p.vertex_colors is not None else np.broadcast_to(np.asarray(p.color),
                                                                                      (len(p.vertices), 3))
            p.vertex_colors = np.clip(base * occl[:, None], 0, 1)


def _cast_shadows(parts, direction, strength: float, size: int = 128) -> float:
    """Shadows of the key light (shining along ``direction``): the parts are drawn from the light into a depth map,
    and vertices farther from the light than what it sees there are darkened (per vertex, so a finger's shadow on
    the object is soft). Returns the share of vertices in shadow."""
    allv = np.concatenate([p.vertices for p in parts])
    centre = (allv.min(0) + allv.max(0)) / 2
    extent = float(np.linalg.norm(allv.max(0) - allv.min(0))) / 2 + 1e-3
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    helper = np.array([0, 1.0, 0]) if abs(d[1]) < 0.9 else np.array([1.0, 0, 0])
    x = np.cross(helper, d)
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(d, x), d])  # rows: light camera axes (x, y, forward)
    eye = centre - d * (extent * 4)
    f = size / 2 * 4 / 1.05  # the bounding sphere fills the light's view
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    lparts = [Part((p.vertices - eye) @ rot.T, p.faces) for p in parts]
    _, depth = render_scene(lparts, K, size, lights=[], ambient=1.0, znear=extent, zfar=extent * 8)
    shadowed = 0
    for p, lp in zip(parts, lparts):
        z = lp.vertices[:, 2]
        px = np.clip((lp.vertices[:, :2] / z[:, None] * f + size / 2).astype(int), 0, size - 1)
        seen = depth[px[:, 1], px[:, 0]]
        normals = p.normals if p.normals is not None else vertex_normals(p.vertices, p.faces)
        facing = normals @ d < 0  # turned towards the light: the side facing away is dark already
        lit = (seen <= 0) | (z <= seen + 0.008) | ~facing
        shadowed += int((~lit).sum())
        base = p.vertex_colors if p.vertex_colors is not None else np.broadcast_to(np.asarray(p.color),
                                                                                  (len(p.vertices), 3))
        p.vertex_colors = np.clip(base * np.where(lit, 1.0, 1.0 - strength)[:, None], 0, 1)
    return shadowed / len(allv)


def make_sample(seed: int, index: int, clear_threshold: float = 0.5, cls: str | None = None,
                class_weights: np.ndarray | None = None) -> Sample:
    rng = sample_rng(seed, index)
    if cls is None:
        cls = CLASSES[int(rng.choice(len(CLASSES), p=class_weights))]
    model = make_product(cls, rng)
    hand = make_hand(model.grasp, rng)
    obj_v, obj_f = merge([(s.vertices, s.faces) for s in model.solids])
    attrs, measures = attributes(obj_v)

    fx = rng.uniform(300, 600)
    K = np.array([[fx, 0, SIZE / 2], [0, fx, SIZE / 2], [0, 0, 1.0]])
    g = model.grasp.rotation
    azimuth, elevation, view = choose_view(rng, g, hand.arm_direction)
    radius = max(float(np.linalg.norm(obj_v, axis=1).max()), 0.07)
    close = rng.random() < CLOSE_SHARE
    key = Light(tuple(rng.uniform([-1, -1, 0.2], [1, 1, 1.5])), float(rng.uniform(0.6, 1.0)),
                tuple(np.clip(rng.uniform(0.8, 1.0, 3) * rng.uniform([0.9, 0.9, 0.8], [1.05, 1.0, 1.1]), 0, 1)))
    lights = [key]
    for _ in range(int(rng.integers(0, 3))):
        lights.append(Light(tuple(rng.uniform([-1, -1, -0.5], [1, 1, 1.0])), float(rng.uniform(0.1, 0.4)),
                            tuple(rng.uniform(0.7, 1.0, 3))))
    ambient = float(rng.uniform(0.25, 0.5))
    env = _env(rng)
    grasp_origin, grasp_axis = model.grasp.origin, g[:, 2]

    for attempt in range(1 + RETRIES):
        fill = rng.uniform(0.3, 0.44) if close else rng.uniform(0.15, 0.3)
        dist = fx * radius / (fill * SIZE)
        target = rng.uniform(-0.15, 0.15, 3) * radius
        if not close:  # wider shots: towards the wrist, more of the arm in frame
            target = target + (hand.wrist - grasp_origin) * rng.uniform(0, 0.5)
        R, C = look_at(rng, view, target, dist)

        def to_cam(v):
            return ((v - C) @ R.T).astype(np.float64)

        atlas = Atlas(512)
        obj_parts = object_parts(model, to_cam, R, atlas, env)
        hand_parts, dressing = dress(rng, hand, to_cam, grasp_origin, grasp_axis)
        _contact_shade(obj_parts, hand_parts, float(rng.uniform(0.3, 0.6)))
        _cast_shadows(obj_parts + hand_parts, key.direction, float(rng.uniform(0.25, 0.5)) * key.intensity)
        cam_v = to_cam(obj_v)
        rgba, depth = render_scene(obj_parts + hand_parts, K, SIZE, lights=lights, ambient=ambient,
                                   texture=atlas.image)
        render, obj_depth = render_object(cam_v, obj_f, K, SIZE, return_depth=True)
        amodal, visible, visible_fraction = visibility(depth, obj_depth)
        if visible_fraction >= MIN_VISIBLE:
            break
        azimuth += np.pi
        view = view_direction(g, azimuth, elevation)

    if photos.available() and rng.random() < PHOTO_SHARE:
        bg, bg_name = photos.photo(rng, SIZE)
        from PIL import Image, ImageFilter

        bg = np.asarray(Image.fromarray(bg).filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2.0)))))
    else:
        bg, bg_name = rooms.room(rng, SIZE, fx * rng.uniform(0.5, 1.0))
    alpha = depth > 0
    photo = _soften_edges(np.where(alpha[..., None], rgba[..., :3], bg), alpha)
    photo, cam_info = photometric.camera(rng, photo)
    photo, border = photometric.crop_border(rng, photo, amodal)

    occupancy, bounds, obj_to_cam = ground_truth(model.solids, R, C, cam_v)
    camera = {"distance": dist, "focal": fx, "azimuth": azimuth, "elevation": elevation}
    labels = {**sample_labels(cls, attrs, measures, clear_threshold, amodal, visible, depth, visible_fraction,
                              camera, bg_name, attempt + 1, hand),
              "generation": 2, "variant": model.params["variant"], "framing": "close" if close else "wide",
              "sleeve": dressing["sleeve"], "border_px": border, **cam_info}
    return Sample(index, cls, photo, render, amodal, visible, cam_v.astype(np.float32),
                  obj_f.astype(np.int32), K.astype(np.float32), occupancy, bounds.astype(np.float32),
                  obj_to_cam.astype(np.float32), labels)
