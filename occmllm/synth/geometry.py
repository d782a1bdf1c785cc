"""Mesh primitives that also know their inside: every synthetic object is a union of these.

A ``Solid`` is a triangle mesh (in the object frame, metres) plus an exact point-inside test, so the occupancy grid
of a whole object is the OR of its solids' tests; no mesh voxelisation is needed. Three builders cover everything:
``revolve`` (a closed profile in the (radius, z) half-plane turned around z: bottles, cans, bowls, lenses),
``extrude`` (a convex polygon in xy pushed along z: phones, blades, boxes) and ``ellipsoid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Solid:
    vertices: np.ndarray  # (N,3) float64, object frame
    faces: np.ndarray  # (M,3) int64
    inside: Callable[[np.ndarray], np.ndarray]  # (P,3) object-frame points -> (P,) bool
    shade: int = 0  # which of the object's material shades it uses (0 = body)


def point_in_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points: is (px, py) inside the closed polygon ``poly`` (K,2)?"""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        crosses = (b > py) != (d > py)
        if not crosses.any():
            continue
        xcross = a + (py - b) * (c - a) / (d - b + 1e-300)
        inside ^= crosses & (px < xcross)
    return inside


def transform(solid: Solid, rotation: np.ndarray | None = None, translation=(0.0, 0.0, 0.0)) -> Solid:
    """The solid moved by x -> R x + t (both its mesh and its inside test)."""
    R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    inner = solid.inside
    return Solid(solid.vertices @ R.T + t, solid.faces, lambda p: inner((p - t) @ R), solid.shade)


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def frame_from_z(z_axis) -> np.ndarray:
    """A rotation whose third column is ``z_axis`` (normalised)."""
    z = np.asarray(z_axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def revolve(strokes: list[np.ndarray], segments: int = 24, shade: int = 0) -> Solid:
    """Turn a closed (r, z) profile around the z axis.

    ``strokes`` are polylines (K,2) of (radius, z) that together walk once counter-clockwise around the closed profile
    (outer wall upwards; radius to the right, z up) so that normals face out; normals are smooth inside a stroke and
    sharp between strokes (a can's rim stays crisp, a bottle's shoulder stays round).
    """
    ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    cos, sin = np.cos(ang), np.sin(ang)
    verts, faces, offset = [], [], 0
    for stroke in strokes:
        s = np.asarray(stroke, dtype=np.float64)
        k = len(s)
        ring = np.stack([s[:, :1] * cos, s[:, :1] * sin, np.repeat(s[:, 1:2], segments, axis=1)], axis=-1)
        verts.append(ring.reshape(-1, 3))
        i = np.arange(k - 1)[:, None] * segments
        j = np.arange(segments)[None, :]
        a = offset + i + j
        b = offset + i + (j + 1) % segments
        c, d = a + segments, b + segments
        faces.append(np.stack([a, b, c], -1).reshape(-1, 3))  # outward normals for a counter-clockwise profile
        faces.append(np.stack([b, d, c], -1).reshape(-1, 3))
        offset += k * segments
    profile = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])

    def inside(p: np.ndarray) -> np.ndarray:
        rho = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        return point_in_polygon(rho, p[:, 2], profile)

    return Solid(np.concatenate(verts), np.concatenate(faces).astype(np.int64), inside, shade)


def extrude(polygon: np.ndarray, z0: float, z1: float, shade: int = 0) -> Solid:
    """A convex polygon (K,2, counter-clockwise) in the xy plane, pushed from z0 to z1, with flat caps."""
    poly = np.asarray(polygon, dtype=np.float64)
    k = len(poly)
    bottom = np.column_stack([poly, np.full(k, z0)])
    top = np.column_stack([poly, np.full(k, z1)])
    centre = poly.mean(0)
    verts = np.concatenate([bottom, top, bottom, top, [[*centre, z0], [*centre, z1]]])
    i = np.arange(k)
    n = (i + 1) % k
    sides = np.concatenate([np.stack([i, n, k + i], -1), np.stack([n, k + n, k + i], -1)])
    cb, ct = 4 * k, 4 * k + 1
    caps = np.concatenate([np.stack([np.full(k, cb), 2 * k + n, 2 * k + i], -1),
                           np.stack([np.full(k, ct), 3 * k + i, 3 * k + n], -1)])
    lo, hi = min(z0, z1), max(z0, z1)

    def inside(p: np.ndarray) -> np.ndarray:
        return (p[:, 2] >= lo) & (p[:, 2] <= hi) & point_in_polygon(p[:, 0], p[:, 1], poly)

    return Solid(verts, np.concatenate([sides, caps]).astype(np.int64), inside, shade)


def rounded_rectangle(width: float, height: float, radius: float, corner_points: int = 5) -> np.ndarray:
    """Counter-clockwise outline (K,2) of a width x height rectangle centred at 0 with rounded corners."""
    r = min(radius, width / 2 * 0.999, height / 2 * 0.999)
    cx, cy = width / 2 - r, height / 2 - r
    pts = []
    for qx, qy, start in ((cx, cy, 0.0), (-cx, cy, 0.5 * np.pi), (-cx, -cy, np.pi), (cx, -cy, 1.5 * np.pi)):
        a = start + np.linspace(0, 0.5 * np.pi, corner_points)
        pts.append(np.column_stack([qx + r * np.cos(a), qy + r * np.sin(a)]))
    return np.concatenate(pts)


def slab(width: float, length: float, thickness: float, radius: float, shade: int = 0, corner_points: int = 5) -> Solid:
    """A rounded-corner slab: width along x, length along y, thickness along z, centred at the origin."""
    return extrude(rounded_rectangle(width, length, radius, corner_points), -thickness / 2, thickness / 2, shade)


def cylinder(radius: float, z0: float, z1: float, segments: int = 16, shade: int = 0) -> Solid:
    """A closed cylinder around z from z0 to z1."""
    return revolve([np.array([[0, z0], [radius, z0]]), np.array([[radius, z0], [radius, z1]]),
                    np.array([[radius, z1], [0, z1]])], segments, shade)


_SPHERE_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def unit_sphere(rings: int = 7, segments: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere of radius 1 (vertices, faces), cached."""
    key = (rings, segments)
    if key not in _SPHERE_CACHE:
        theta = np.linspace(0, np.pi, rings + 1)
        profile = np.column_stack([np.sin(theta), -np.cos(theta)])
        s = revolve([profile], segments)
        _SPHERE_CACHE[key] = (s.vertices, s.faces)
    return _SPHERE_CACHE[key]


def ellipsoid(radii, centre=(0.0, 0.0, 0.0), rotation=None, shade: int = 0) -> Solid:
    radii = np.asarray(radii, dtype=np.float64)
    v, f = unit_sphere()
    base = Solid(v * radii, f, lambda p: ((p / radii) ** 2).sum(1) <= 1.0, shade)
    return transform(base, rotation, centre)


def merge(meshes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (vertices, faces) from several."""
    verts, faces, offset = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)
