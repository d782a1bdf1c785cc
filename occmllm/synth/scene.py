"""One synthetic sample: object + grasping hand + camera + lights + background, rendered with its ground truth.

``make_sample(seed, index)`` is a pure function of its arguments (its generator is seeded from ``(seed, index)``), so
a sample can be made in any process, in any order, and again after a crash, with the same bytes.

Labels (all computed from the geometry and the rendered masks):
- ``visible_fraction`` = visible object pixels / amodal object pixels, where amodal = the object rendered alone
  (depth > 0) and visible = amodal pixels where the full scene's depth equals the object's depth (nothing in front).
- attributes, from the extents L >= W >= T of the object's axis-aligned box in its own frame (the frame its family
  builds it in) and from the convex hull of its vertices projected along each of the three frame axes:
  ``round``: some projection's hull has circularity 4*pi*area/perimeter^2 >= 0.9 (a circle is 1, a square 0.785);
  ``thin``: T <= 0.2 * L;  ``long``: L >= 2 * W.
- views where the hand hides more than 95% of the object (MIN_VISIBLE) are shot again from the opposite azimuth
  (at most RETRIES times), so nearly every photo shows some of the object.
- ``clear``: visible_fraction >= clear_threshold (default 0.5): the geometric stand-in for the seed's rule (an
  earlier model answered Q1 right), which ``data_tools.relabel`` can apply once a model exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from occmllm.prompts import CLASSES
from occmllm.render import Light, Part, render_object, render_scene

from .backgrounds import background
from .geometry import merge
from .hand import make_hand
from .objects import make_object

SIZE = 256
GRID = 32  # occupancy grid resolution
ROUND_CIRCULARITY, THIN_RATIO, LONG_RATIO = 0.9, 0.2, 2.0
VIEW_FROM_HAND_SHARE = 0.25
MIN_VISIBLE, RETRIES = 0.05, 2


@dataclass
class Sample:
    index: int
    cls: str
    photo: np.ndarray  # uint8 (256,256,3)
    render: np.ndarray  # uint8 (256,256,3) grey object on black
    amodal: np.ndarray  # bool (256,256)
    visible: np.ndarray  # bool (256,256)
    vertices: np.ndarray  # float32 (N,3) camera frame
    faces: np.ndarray  # int32 (M,3)
    K: np.ndarray  # float32 (3,3)
    occupancy: np.ndarray  # bool (GRID,GRID,GRID), indexed [x, y, z] over ``bounds``
    bounds: np.ndarray  # float32 (2,3): min and max corner of the grid box, camera frame
    object_to_camera: np.ndarray  # float32 (4,4)
    labels: dict


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x0CC])


def is_test(seed: int, index: int, test_fraction: float) -> bool:
    """Split membership, fixed per (seed, index): growing --n later never moves a sample between splits."""
    return bool(np.random.default_rng([int(seed), int(index), 0x5B1]).random() < test_fraction)


def attributes(vertices: np.ndarray) -> tuple[dict, dict]:
    """round / thin / long of a mesh given in its own frame (rule in the module docstring) and the measurements."""
    extents = vertices.max(0) - vertices.min(0)
    T, W, L = np.sort(extents)
    circ = []
    for drop in range(3):
        pts = np.delete(vertices, drop, axis=1)
        hull = ConvexHull(pts)
        circ.append(4 * np.pi * hull.volume / hull.area ** 2)  # in 2-D: volume = area, area = perimeter
    attrs = {"round": bool(max(circ) >= ROUND_CIRCULARITY), "thin": bool(T <= THIN_RATIO * L),
             "long": bool(L >= LONG_RATIO * W)}
    return attrs, {"length": float(L), "width": float(W), "thickness": float(T), "circularity": float(max(circ))}


def _occupancy(solids, obj_to_cam_R, cam_centre, bounds):
    """Occupancy of the union of ``solids`` at the GRID^3 cell centres of the camera-frame box ``bounds``; each
    solid is only tested on the block of cells its own (camera-frame) bounding box covers."""
    lo, hi = bounds
    step = (hi - lo) / GRID
    axis = [lo[d] + (np.arange(GRID) + 0.5) * step[d] for d in range(3)]
    gx, gy, gz = np.meshgrid(*axis, indexing="ij")
    p_obj = np.stack([gx, gy, gz], -1) @ obj_to_cam_R + cam_centre  # camera -> object frame, (G,G,G,3)
    occ = np.zeros((GRID, GRID, GRID), dtype=bool)
    for s in solids:
        cam = (s.vertices - cam_centre) @ obj_to_cam_R.T
        i0 = np.clip(np.floor((cam.min(0) - lo) / step - 0.5).astype(int), 0, GRID)
        i1 = np.clip(np.ceil((cam.max(0) - lo) / step + 0.5).astype(int) + 1, 0, GRID)
        if np.any(i1 <= i0):
            continue
        block = p_obj[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]]
        occ[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] |= s.inside(block.reshape(-1, 3)).reshape(block.shape[:3])
    return occ


def view_direction(grasp_rotation: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """The unit direction from the object towards the camera, given in the grasp frame (azimuth 0 = the back of the
    hand)."""
    return grasp_rotation @ np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                      np.sin(elevation)])


def choose_view(rng, grasp_rotation: np.ndarray, arm_direction: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(azimuth, elevation, view direction) of the camera: VIEW_FROM_HAND_SHARE of the views from the back-of-hand
    side (azimuth near 0), where the hand hides most, the rest from anywhere; never from along the forearm (the
    camera would sit in the sleeve)."""
    for _ in range(50):
        azimuth = rng.normal(0, 0.7) if rng.random() < VIEW_FROM_HAND_SHARE else rng.uniform(0, 2 * np.pi)
        elevation = np.clip(rng.normal(0, 0.6), -1.3, 1.3)
        view = view_direction(grasp_rotation, azimuth, elevation)
        if view @ arm_direction < np.cos(np.radians(40)):
            break
    return azimuth, elevation, view


def look_at(rng, view: np.ndarray, target: np.ndarray, dist: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, C): the world -> camera rotation (rows, OpenCV axes: x right, y down, z forward) of a camera `dist` from
    `target` along `view`, rolled at random about its axis; C the camera centre."""
    forward = -view
    up = np.cross(forward, rng.normal(size=3))
    up /= np.linalg.norm(up)
    right = np.cross(up, forward)  # y = z cross x
    return np.stack([right, np.cross(forward, right), forward]), target + view * dist


def visibility(depth: np.ndarray, obj_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(amodal mask, visible mask, visible fraction): the object's pixels in its own render, those of them the scene
    shows (same depth), and their share."""
    amodal = obj_depth > 0
    visible = amodal & (np.abs(depth - obj_depth) < 5e-4)
    n_amodal = int(amodal.sum())
    return amodal, visible, float(visible.sum() / n_amodal) if n_amodal else 0.0


def ground_truth(solids, R: np.ndarray, C: np.ndarray, cam_v: np.ndarray):
    """(occupancy, bounds, object_to_camera) of a sample: the object's occupancy in a cube around it, camera frame."""
    lo, hi = cam_v.min(0), cam_v.max(0)
    half = (hi - lo).max() * 0.55
    centre = (lo + hi) / 2
    bounds = np.stack([centre - half, centre + half])
    occupancy = _occupancy(solids, R, C, bounds)
    obj_to_cam = np.eye(4)
    obj_to_cam[:3, :3], obj_to_cam[:3, 3] = R, -R @ C
    return occupancy, bounds, obj_to_cam


def sample_labels(cls: str, attrs: dict, measures: dict, clear_threshold: float, amodal, visible, depth,
                  visible_fraction: float, camera: dict, background_name: str, view_attempts: int, hand) -> dict:
    """The labels every generation writes (the label rules: clear = visible fraction >= clear_threshold, ...).
    camera: distance, focal, azimuth, elevation."""
    return {
        "class": cls, "visible_fraction": round(visible_fraction, 6), **attrs,
        "clear": bool(visible_fraction >= clear_threshold),
        "amodal_pixels": int(amodal.sum()), "visible_pixels": int(visible.sum()),
        "hand_pixels": int(((depth > 0) & ~visible).sum()),
        "touches_border": bool(amodal[0].any() or amodal[-1].any() or amodal[:, 0].any() or amodal[:, -1].any()),
        "camera_distance": round(float(camera["distance"]), 5), "focal": round(float(camera["focal"]), 3),
        "azimuth": round(float(camera["azimuth"]), 4), "elevation": round(float(camera["elevation"]), 4),
        "background": background_name, "view_attempts": view_attempts, "left_hand": hand.params["left"],
        "hand_scale": round(hand.params["scale"], 4),
        **{k: round(v, 5) for k, v in measures.items()},
    }


def _soften_edges(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A cheap anti-aliasing: pixels on a silhouette edge get the 3x3 mean of their neighbours (uint8 in and out)."""
    a = np.pad(alpha, 1, mode="edge")
    h, w = alpha.shape
    edge = np.zeros_like(alpha)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= a[dy:dy + h, dx:dx + w] != alpha
    ys, xs = np.nonzero(edge)
    p = np.pad(photo, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.uint16)
    total = sum(p[ys + dy, xs + dx] for dy in range(3) for dx in range(3))
    out = photo.copy()
    out[ys, xs] = (total // 9).astype(np.uint8)
    return out


def _shade(rng, grey):
    tint = rng.uniform(-0.05, 0.05, 3)
    return tuple(float(x) for x in np.clip(grey * (1 + tint), 0.05, 1.0))


def make_sample(seed: int, index: int, clear_threshold: float = 0.5, cls: str | None = None,
                class_weights: np.ndarray | None = None) -> Sample:
    rng = sample_rng(seed, index)
    if cls is None:
        cls = CLASSES[int(rng.choice(len(CLASSES), p=class_weights))]
    model = make_object(cls, rng)
    hand = make_hand(model.grasp, rng)
    obj_v, _ = merge([(s.vertices, s.faces) for s in model.solids])
    attrs, measures = attributes(obj_v)

    # camera: looks at the object from a direction drawn in the grasp frame (azimuth 0 = the back of the hand)
    fx = rng.uniform(380, 560)
    K = np.array([[fx, 0, SIZE / 2], [0, fx, SIZE / 2], [0, 0, 1.0]])
    g = model.grasp.rotation
    azimuth, elevation, view = choose_view(rng, g, hand.arm_direction)
    radius = max(float(np.linalg.norm(obj_v, axis=1).max()), 0.07)  # small objects: keep the hand in frame too
    grey = rng.uniform(0.3, 0.85)
    shades = [_shade(rng, grey), _shade(rng, np.clip(grey * rng.uniform(0.45, 1.35), 0.1, 0.95)),
              _shade(rng, rng.uniform(0.08, 0.35))]
    roughness = float(rng.uniform(0.35, 0.9))
    lights = [Light(tuple(rng.uniform([-1, -1, 0.2], [1, 1, 1.5])), float(rng.uniform(0.5, 0.95)),
                    tuple(rng.uniform(0.85, 1.0, 3)))]
    if rng.random() < 0.5:
        lights.append(Light(tuple(rng.uniform([-1, -1, -0.3], [1, 1, 1.0])), float(rng.uniform(0.1, 0.4))))
    ambient = float(rng.uniform(0.12, 0.35))
    obj_all_v, obj_all_f = merge([(s.vertices, s.faces) for s in model.solids])
    groups = [merge([(s.vertices, s.faces) for s in model.solids if s.shade == k]) for k in range(3)]

    for attempt in range(1 + RETRIES):
        fill = rng.uniform(0.22, 0.4)
        dist = fx * radius / (fill * SIZE)
        target = rng.uniform(-0.15, 0.15, 3) * radius
        R, C = look_at(rng, view, target, dist)

        def to_cam(v):
            return ((v - C) @ R.T).astype(np.float64)

        obj_parts = [Part(to_cam(v), f, shades[k], roughness) for k, (v, f) in enumerate(groups) if len(f)]
        cam_v = to_cam(obj_all_v)
        hand_parts = [Part(to_cam(hand.skin[0]), hand.skin[1], hand.skin_color, 0.7),
                      Part(to_cam(hand.sleeve[0]), hand.sleeve[1], hand.sleeve_color, 0.95)]
        rgba, depth = render_scene(obj_parts + hand_parts, K, SIZE, lights=lights, ambient=ambient)
        render, obj_depth = render_object(cam_v, obj_all_f, K, SIZE, return_depth=True)
        amodal, visible, visible_fraction = visibility(depth, obj_depth)
        if visible_fraction >= MIN_VISIBLE:
            break
        # the hand hides (nearly) all of the object: look from the other side instead
        azimuth += np.pi
        view = view_direction(g, azimuth, elevation)

    bg, bg_name = background(rng, SIZE)
    alpha = depth > 0
    photo = _soften_edges(np.where(alpha[..., None], rgba[..., :3], bg), alpha)
    noise = rng.standard_normal((SIZE, SIZE, 1), dtype=np.float32) * np.float32(rng.uniform(0.5, 3.0))
    photo = np.clip(photo + noise + 0.5, 0, 255).astype(np.uint8)  # sensor noise, the same in all channels

    occupancy, bounds, obj_to_cam = ground_truth(model.solids, R, C, cam_v)
    camera = {"distance": dist, "focal": fx, "azimuth": azimuth, "elevation": elevation}
    labels = sample_labels(cls, attrs, measures, clear_threshold, amodal, visible, depth, visible_fraction, camera,
                           bg_name, attempt + 1, hand)
    return Sample(index, cls, photo, render, amodal, visible, cam_v.astype(np.float32),
                  obj_all_f.astype(np.int32), K.astype(np.float32), occupancy, bounds.astype(np.float32),
                  obj_to_cam.astype(np.float32), labels)
