"""A procedural hand with forearm and sleeve that wraps its fingers around an object's grasp cross-section.

Built in the grasp frame (see ``objects.Grasp``): the palm lies on the +x side of the cross-section, the four fingers
start at the knuckle line and follow the (offset) superellipse cross-section in the -angle direction, the thumb
follows it the other way from the thenar side. Each finger's curl, tilt and length vary, so poses vary; the forearm
leaves the wrist at a random flexion and deviation and ends in a sleeve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import frame_from_z, merge, unit_sphere
from .objects import Grasp

# (proximal, middle, distal) phalanx lengths in metres and radius, for index, middle, ring, little finger
FINGERS = (((0.041, 0.025, 0.021), 0.0092), ((0.046, 0.028, 0.022), 0.0095), ((0.043, 0.027, 0.021), 0.009),
           ((0.034, 0.02, 0.019), 0.0078))
THUMB = ((0.034, 0.03), 0.0105)
SKIN_TONES = np.array([[0.95, 0.80, 0.69], [0.92, 0.72, 0.58], [0.82, 0.62, 0.47], [0.70, 0.50, 0.36],
                       [0.55, 0.38, 0.26], [0.40, 0.27, 0.19]])


@dataclass
class HandMesh:
    skin: tuple[np.ndarray, np.ndarray]  # hand + forearm
    sleeve: tuple[np.ndarray, np.ndarray]
    skin_color: tuple[float, float, float]
    sleeve_color: tuple[float, float, float]
    wrist: np.ndarray  # object-frame point where the forearm starts
    arm_direction: np.ndarray  # object-frame unit vector from the wrist along the forearm
    params: dict


def _cylinder_template(segments: int = 10):
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.column_stack([np.cos(ang), np.sin(ang)])
    v = np.concatenate([np.column_stack([ring, np.zeros(segments)]), np.column_stack([ring, np.ones(segments)])])
    i = np.arange(segments)
    n = (i + 1) % segments
    f = np.concatenate([np.stack([i, n, segments + i], -1), np.stack([n, segments + n, segments + i], -1)])
    return v, f


_CYL = _cylinder_template()


def _tube(p0, p1, r0, r1, squash=1.0, squash_axis=None):
    """A cone frustum from p0 (radius r0) to p1 (radius r1); optionally squashed across ``squash_axis``."""
    d = np.asarray(p1) - np.asarray(p0)
    length = float(np.linalg.norm(d))
    R = frame_from_z(d / max(length, 1e-9))
    if squash_axis is not None:  # align local x with the squash axis
        x = np.asarray(squash_axis, dtype=np.float64) - R[:, 2] * (np.asarray(squash_axis) @ R[:, 2])
        if np.linalg.norm(x) > 1e-6:
            x /= np.linalg.norm(x)
            R = np.stack([x, np.cross(R[:, 2], x), R[:, 2]], axis=1)
    v, f = _CYL
    z = v[:, 2:3]
    radius = r0 + (r1 - r0) * z
    local = np.column_stack([v[:, 0:1] * radius * squash, v[:, 1:2] * radius, z * length])
    return local @ R.T + p0, f


def _ball(centre, r, radii_scale=(1.0, 1.0, 1.0), rotation=None):
    v, f = unit_sphere(5, 10)
    v = v * r * np.asarray(radii_scale)
    if rotation is not None:
        v = v @ np.asarray(rotation).T
    return v + np.asarray(centre), f


def _outline(grasp: Grasp, margin: float, theta0: float, direction: float, count: int = 400):
    """Dense points (count,2) and arc lengths along the offset superellipse from theta0 in ``direction`` (+1/-1)."""
    A, B, e = grasp.a + margin, grasp.b + margin, 2.0 / grasp.n
    th = theta0 + direction * np.linspace(0, 2 * np.pi, count)
    c, s = np.cos(th), np.sin(th)
    pts = np.column_stack([A * np.sign(c) * np.abs(c) ** e, B * np.sign(s) * np.abs(s) ** e])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return pts, arc


def _follow(pts, arc, lengths, wrap, z0, tilt):
    """Joint positions (k+1,3) of a chain of ``lengths`` that follows the outline up to arc length ``wrap``, then
    goes straight on along the tangent."""
    joints = [np.array([*pts[0], z0])]
    s = 0.0
    for length in lengths:
        s += length
        if s <= wrap:
            xy = np.array([np.interp(s, arc, pts[:, 0]), np.interp(s, arc, pts[:, 1])])
        else:
            end = np.array([np.interp(wrap, arc, pts[:, 0]), np.interp(wrap, arc, pts[:, 1])])
            before = np.array([np.interp(wrap - 0.004, arc, pts[:, 0]), np.interp(wrap - 0.004, arc, pts[:, 1])])
            tangent = (end - before) / (np.linalg.norm(end - before) + 1e-9)
            xy = end + tangent * (s - wrap)
        joints.append(np.array([*xy, z0 + tilt * s]))
    return np.array(joints)


def _chain(joints, radius, taper=0.85):
    parts = []
    k = len(joints) - 1
    for i in range(k):
        r0 = radius * (1 - (1 - taper) * i / k)
        r1 = radius * (1 - (1 - taper) * (i + 1) / k)
        parts.append(_tube(joints[i], joints[i + 1], r0, r1))
        parts.append(_ball(joints[i], r0 * 1.04))
    parts.append(_ball(joints[-1], radius * taper))
    return parts


def make_hand(grasp: Grasp, rng) -> HandMesh:
    """A right hand (mirrored to a left one half the time) holding ``grasp``; meshes in the object frame."""
    scale = rng.uniform(0.88, 1.12)
    spacing = 0.021 * scale
    z_centre = rng.uniform(-grasp.slide, grasp.slide)
    theta_k = rng.uniform(-0.85, -0.3)
    parts = []
    knuckles = []
    finger_params = []
    chains = []  # joint positions of each finger and the thumb (grasp frame), for dressing the hand (nails)
    for i, (lengths, radius) in enumerate(FINGERS):
        r = radius * scale
        z0 = z_centre + (1.5 - i) * spacing
        pts, arc = _outline(grasp, r + 0.001, theta_k + rng.normal(0, 0.05), -1.0)
        curl = rng.uniform(0.55, 1.0) if rng.random() < 0.3 else rng.uniform(0.85, 1.0)
        total = sum(lengths) * scale
        wrap = min(total * curl, grasp.max_wrap, arc[-1] * 0.9)
        tilt = rng.normal(0, 0.12) + (1.5 - i) * 0.06
        joints = _follow(pts, arc, [length * scale for length in lengths], wrap, z0, tilt)
        knuckles.append(joints[0])
        chains.append((joints, r))
        parts += _chain(joints, r)
        finger_params.append(dict(curl=float(curl), tilt=float(tilt)))
    knuckles = np.array(knuckles)
    k_mid = knuckles.mean(0)
    # palm: from the knuckle line towards the wrist, tangent-ish to the cross-section on the +x side
    palm_len, palm_th = 0.095 * scale, 0.028 * scale
    palm_w = 4 * spacing + 0.012
    A = grasp.a + palm_th * 0.5
    wrist2d = np.array([A + rng.uniform(0.0, 0.02), k_mid[1] + palm_len])
    u2 = wrist2d - k_mid[:2]
    u2 /= np.linalg.norm(u2)
    u = np.array([u2[0], u2[1], 0.0])
    n_out = np.array([u2[1], -u2[0], 0.0])
    zg = np.array([0.0, 0.0, 1.0])
    palm_rot = np.stack([-zg, u, n_out], axis=1)
    palm_centre = np.array([*((k_mid[:2] + wrist2d) / 2), z_centre]) + n_out * (palm_th / 2 - 0.009 * scale)
    sv, sf = unit_sphere(8, 14)  # a rounded box ("pillow"): sphere coordinates pushed towards the faces
    pillow = np.sign(sv) * np.abs(sv) ** 0.45 * np.array([palm_w / 2, (palm_len + 0.012) / 2, palm_th / 2])
    parts.append((pillow @ palm_rot.T + palm_centre, sf))
    thenar_c = palm_centre + u * palm_len * 0.22 + zg * (palm_w / 2 - 0.008) - n_out * 0.004
    parts.append(_ball(thenar_c, 1.0, (0.024 * scale, 0.032 * scale, 0.013 * scale), palm_rot))
    # thumb: from the thenar side round the other way
    t_lengths, t_radius = THUMB
    theta_t = rng.uniform(0.5, 1.3)
    pts, arc = _outline(grasp, t_radius * scale + 0.001, theta_t, +1.0)
    z_thumb = z_centre + 1.5 * spacing + rng.uniform(-0.01, 0.02)
    t_wrap = min(sum(t_lengths) * scale * rng.uniform(0.6, 1.0), grasp.max_wrap, arc[-1] * 0.9)
    t_joints = _follow(pts, arc, [x * scale for x in t_lengths], t_wrap, z_thumb, rng.normal(0, 0.15))
    cmc = thenar_c + u * 0.01
    parts.append(_tube(cmc, t_joints[0], 0.014 * scale, t_radius * scale))
    parts += _chain(t_joints, t_radius * scale)
    chains.append((t_joints, t_radius * scale))
    # forearm and sleeve
    wrist = np.array([*wrist2d, z_centre]) + n_out * (palm_th / 2 - 0.009 * scale)
    flex, dev = rng.uniform(-0.5, 0.45), rng.uniform(-0.45, 0.45)
    d = u * np.cos(flex) + n_out * np.sin(flex)
    d = d * np.cos(dev) + zg * np.sin(dev)
    d /= np.linalg.norm(d)
    start = wrist - u * 0.015
    arm_len = 0.3
    parts.append(_tube(start, start + d * arm_len, 0.027 * scale, 0.037 * scale, squash=0.72, squash_axis=n_out))
    sleeve_start = rng.uniform(0.05, 0.15)
    sleeve_r = rng.uniform(0.043, 0.058) * scale
    sleeve = [_tube(start + d * sleeve_start, start + d * (arm_len + 0.05), sleeve_r, sleeve_r * 1.1, squash=0.85,
                    squash_axis=n_out)]
    sleeve.append(_tube(start + d * (sleeve_start - 0.002), start + d * (sleeve_start + 0.012), sleeve_r * 0.7,
                        sleeve_r * 1.04, squash=0.85, squash_axis=n_out))
    skin_v, skin_f = merge(parts)
    sleeve_v, sleeve_f = merge(sleeve)
    R, o = grasp.rotation, grasp.origin
    mirror = rng.random() < 0.5
    if mirror:  # a left hand: mirror across the cross-section plane
        skin_v, sleeve_v = skin_v * [1, 1, -1], sleeve_v * [1, 1, -1]
        skin_f, sleeve_f = skin_f[:, ::-1], sleeve_f[:, ::-1]
    flip = np.array([1, 1, -1]) if mirror else np.ones(3)
    chains = [((j * flip) @ R.T + o, r) for j, r in chains]
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.05, 3)
    hsv_sleeve = rng.uniform(0, 1, 3)
    sleeve_color = _hsv_to_rgb(hsv_sleeve[0], hsv_sleeve[1] * 0.7, 0.15 + 0.75 * hsv_sleeve[2])
    return HandMesh(
        skin=(skin_v @ R.T + o, skin_f),
        sleeve=(sleeve_v @ R.T + o, sleeve_f),
        skin_color=tuple(float(c) for c in np.clip(tone, 0, 1)),
        sleeve_color=sleeve_color,
        wrist=wrist @ R.T + o,
        arm_direction=(d * ([1, 1, -1] if mirror else 1)) @ R.T,
        params=dict(scale=float(scale), left=bool(mirror), flex=float(flex), deviation=float(dev),
                    fingers=finger_params, chains=chains),
    )


def _hsv_to_rgb(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return tuple(float(x) for x in [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])
