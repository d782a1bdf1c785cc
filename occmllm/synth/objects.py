"""The eight procedural object families of the synthetic dataset (the seed's ObMan classes).

Each ``make_<class>(rng)`` draws one instance: proportions, profiles and details (a bottle's shoulder, neck and cap;
a jar's lid; a can's rim, ribs and tab; a bowl's foot and wall; a phone's screen and camera bump; a remote's button
grid; a knife's blade shape, bolster and rivets; a camera's stepped lens, grip, hump and shutter button). Units are
metres in the object's own frame. Every instance also says where a hand can hold it (``Grasp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import (Solid, cylinder, extrude, revolve, rotation_x, rotation_z, rounded_rectangle,
                       slab, transform)


@dataclass
class Grasp:
    """Where the fingers wrap: a superellipse cross-section (half sizes a along x_g, b along y_g, exponent n) around
    the axis z_g through ``origin``; the palm sits on the +x_g side. ``slide`` is how far (m) the finger block may
    move along the axis; ``max_wrap`` caps how far (m, along the surface) a finger follows the object."""

    origin: np.ndarray
    rotation: np.ndarray  # columns x_g, y_g, z_g in the object frame
    a: float
    b: float
    n: float = 2.0
    slide: float = 0.0
    max_wrap: float = 1.0


@dataclass
class ObjectModel:
    cls: str
    solids: list[Solid]
    grasp: Grasp
    params: dict = field(default_factory=dict)


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _smoothstep(t):
    return t * t * (3 - 2 * t)


def make_bottle(rng) -> ObjectModel:
    R = _u(rng, 0.022, 0.04)
    body_h = _u(rng, 0.09, 0.17)
    shoulder_h = _u(rng, 0.015, 0.055)
    neck_r = max(0.009, R * _u(rng, 0.3, 0.55))
    neck_h = _u(rng, 0.012, 0.05)
    cap_h = _u(rng, 0.01, 0.025)
    cap_r = neck_r * _u(rng, 1.05, 1.3)
    waist = _u(rng, 0.82, 1.0) if rng.random() < 0.4 else 1.0
    base_r = R * _u(rng, 0.88, 1.0)
    zs = np.linspace(0.006, body_h, 8)
    rs = base_r + (R - base_r) * zs / body_h
    rs = rs * (1 - (1 - waist) * np.sin(np.pi * zs / body_h) ** 2)
    t = np.linspace(0, 1, 7)[1:]
    sz = body_h + shoulder_h * t
    sr = R + (neck_r - R) * (_smoothstep(t) if rng.random() < 0.6 else t)
    neck_top = body_h + shoulder_h + neck_h
    outer = np.concatenate([np.column_stack([rs, zs]), np.column_stack([sr, sz]), [[neck_r, neck_top]]])
    strokes = [np.array([[0, 0], [base_r * 0.9, 0], [base_r, 0.006]]), outer]
    solids = [revolve(strokes + [np.array([[neck_r, neck_top], [0, neck_top]])], 24)]
    solids.append(cylinder(cap_r, neck_top - 0.002, neck_top + cap_h, 20, shade=1))
    grasp_z = body_h * _u(rng, 0.35, 0.6)
    grasp = Grasp(np.array([0, 0, grasp_z]), np.eye(3), R, R, 2.0, slide=body_h * 0.15)
    return ObjectModel("bottle", solids, grasp, dict(radius=R, height=neck_top + cap_h))


def make_can(rng) -> ObjectModel:
    R = _u(rng, 0.024, 0.037)
    H = _u(rng, 0.07, 0.135)
    neck = _u(rng, 0.84, 0.93)
    ribs = rng.random() < 0.35
    side_z = np.linspace(0.008, H - 0.012, 24 if ribs else 2)
    side_r = np.full_like(side_z, R)
    if ribs:
        side_r = side_r - 0.0012 * (np.sin(side_z * 2 * np.pi / _u(rng, 0.008, 0.014)) > 0.3)
    strokes = [
        np.array([[0, 0.004], [R * 0.8, 0], [R * 0.95, 0], [R, 0.008]]),
        np.column_stack([side_r, side_z]),
        np.array([[R, H - 0.012], [R * neck, H - 0.003]]),
        np.array([[R * neck, H - 0.003], [R * neck + 0.001, H], [R * neck - 0.002, H], [R * neck - 0.002, H - 0.004],
                  [0, H - 0.004]]),
    ]
    solids = [revolve(strokes, 28)]
    if rng.random() < 0.6:  # pull tab
        tab = slab(0.012, 0.02, 0.0015, 0.005, shade=1)
        solids.append(transform(tab, rotation_z(_u(rng, 0, 2 * np.pi)), (0, 0, H - 0.003)))
    grasp = Grasp(np.array([0, 0, H * _u(rng, 0.4, 0.6)]), np.eye(3), R, R, 2.0, slide=H * 0.1)
    return ObjectModel("can", solids, grasp, dict(radius=R, height=H))


def make_jar(rng) -> ObjectModel:
    R = _u(rng, 0.035, 0.06)
    H = R * _u(rng, 1.1, 2.6)
    neck_r = R * _u(rng, 0.72, 0.92)
    shoulder = _u(rng, 0.01, 0.03)
    bulge = _u(rng, 0.0, 0.08)
    lid_r = neck_r * _u(rng, 1.03, 1.1)
    lid_h = _u(rng, 0.012, 0.03)
    zs = np.linspace(0.006, H - shoulder, 7)
    rs = R * (1 + bulge * np.sin(np.pi * zs / (H - shoulder)))
    t = np.linspace(0, 1, 5)[1:]
    outer = np.concatenate([np.column_stack([rs, zs]),
                            np.column_stack([R + (neck_r - R) * _smoothstep(t), H - shoulder + shoulder * t])])
    strokes = [np.array([[0, 0], [R * 0.92, 0], [R, 0.006]]), outer, np.array([[neck_r, H], [0, H]])]
    solids = [revolve(strokes, 28)]
    ridges = rng.random() < 0.5
    lid_z = np.linspace(H - 0.002, H + lid_h - 0.003, 12 if ridges else 2)
    lid_side = np.full_like(lid_z, lid_r)
    if ridges:
        lid_side = lid_side + 0.0012 * (np.arange(len(lid_z)) % 2)
    lid = [np.array([[0, H - 0.002], [lid_r, H - 0.002]]), np.column_stack([lid_side, lid_z]),
           np.array([[lid_r, H + lid_h - 0.003], [lid_r - 0.003, H + lid_h], [0, H + lid_h]])]
    solids.append(revolve(lid, 28, shade=1))
    grasp = Grasp(np.array([0, 0, H * _u(rng, 0.35, 0.55)]), np.eye(3), R * (1 + bulge), R * (1 + bulge), 2.0,
                  slide=H * 0.1)
    return ObjectModel("jar", solids, grasp, dict(radius=R, height=H + lid_h))


def make_bowl(rng) -> ObjectModel:
    R = _u(rng, 0.055, 0.095)
    h = _u(rng, 0.035, 0.075)
    foot_r = R * _u(rng, 0.35, 0.55)
    foot_h = _u(rng, 0.004, 0.01)
    wall = _u(rng, 0.004, 0.008)
    power = _u(rng, 0.45, 0.9)
    t = np.linspace(0, 1, 9)
    outer_r = foot_r + (R - foot_r) * t ** power
    outer_z = foot_h + (h - foot_h) * t
    inner_r = np.maximum(outer_r[::-1] - wall, 0.0)
    inner_z = outer_z[::-1].copy()  # the inner wall: the outer one moved in by the wall thickness, walked down
    inner_z[-1] = foot_h + wall
    strokes = [
        np.array([[0, foot_h * 0.5], [foot_r * 0.9, 0], [foot_r, 0], [foot_r, foot_h]]),
        np.column_stack([outer_r, outer_z]),
        np.array([[R, h], [R - wall * 0.5, h + wall * 0.3], [R - wall, h]]),
        np.concatenate([np.column_stack([inner_r, inner_z])[:-1], [[0, foot_h + wall]]]),
    ]
    solids = [revolve(strokes, 32)]
    if rng.random() < 0.3:  # held from below: palm under the foot, fingers up the outer wall
        rot = np.stack([[0, 0, -1.0], [-1.0, 0, 0], [0, 1.0, 0]], axis=1)
        grasp = Grasp(np.array([0, 0, h * 0.5]), rot, h * 0.5, R, 2.5, slide=R * 0.3, max_wrap=h * 1.2)
    else:  # held from the side: palm on the outer wall, fingers round it (axis tilted with the wall)
        grasp = Grasp(np.array([0, 0, h * 0.6]), np.eye(3), (R + foot_r) / 2 + 0.004, (R + foot_r) / 2 + 0.004, 2.0,
                      slide=0.0, max_wrap=_u(rng, 0.05, 0.1))
    return ObjectModel("bowl", solids, grasp, dict(radius=R, height=h))


def make_cellphone(rng) -> ObjectModel:
    W, L, T = _u(rng, 0.062, 0.08), _u(rng, 0.12, 0.165), _u(rng, 0.007, 0.011)
    r = _u(rng, 0.004, 0.012)
    solids = [slab(W, L, T, r, corner_points=4)]
    bezel = _u(rng, 0.002, 0.005)
    screen = slab(W - 2 * bezel, L - 2 * bezel - _u(rng, 0.0, 0.02), 0.0008, max(r - bezel, 0.001), shade=2,
                  corner_points=4)
    solids.append(transform(screen, None, (0, 0, T / 2)))
    bump_w = _u(rng, 0.015, 0.035)
    bx, by = -W / 2 + bump_w / 2 + _u(rng, 0.005, 0.012), L / 2 - bump_w / 2 - _u(rng, 0.005, 0.012)
    if rng.random() < 0.6:
        solids.append(transform(slab(bump_w, bump_w * _u(rng, 1.0, 1.6), 0.002, 0.004, shade=1), None,
                                (bx, by - bump_w * 0.2, -T / 2 - 0.001)))
    for k in range(int(rng.integers(1, 4))):
        lens = cylinder(_u(rng, 0.003, 0.006), -0.003, 0.0, 12, shade=2)
        solids.append(transform(lens, None, (bx + (k % 2) * bump_w * 0.45, by - (k // 2 + k % 2) * bump_w * 0.4,
                                             -T / 2 - 0.001)))
    if rng.random() < 0.7:  # side button
        solids.append(transform(slab(0.002, _u(rng, 0.01, 0.025), T * 0.5, 0.0008, shade=1), None,
                                (W / 2 + 0.0008, L * _u(rng, 0.05, 0.3), 0)))
    # fingers around the width, palm on the back, axis along the length
    rot = np.stack([[0, 0, -1.0], [-1.0, 0, 0], [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([0, -L * _u(rng, 0.0, 0.25), 0]), rot, T / 2, W / 2, 6.0, slide=L * 0.1)
    return ObjectModel("cellphone", solids, grasp, dict(width=W, length=L, thickness=T))


def make_remote(rng) -> ObjectModel:
    W, L, T = _u(rng, 0.036, 0.055), _u(rng, 0.15, 0.22), _u(rng, 0.014, 0.026)
    solids = [slab(W, L, T, _u(rng, 0.008, W * 0.45), corner_points=5)]
    cols = int(rng.integers(2, 4))
    rows = int(rng.integers(4, 9))
    br = _u(rng, 0.0028, 0.0045)
    xs = (np.arange(cols) - (cols - 1) / 2) * (W * 0.7 / max(cols, 1))
    y0 = L / 2 - _u(rng, 0.03, 0.05)
    ys = y0 - np.arange(rows) * _u(rng, 0.011, 0.016)
    for x in xs:
        for y in ys:
            solids.append(transform(cylinder(br, 0, 0.002, 10, shade=1), None, (x, y, T / 2)))
    if rng.random() < 0.7:  # power button / d-pad
        solids.append(transform(cylinder(_u(rng, 0.006, 0.012), 0, 0.0025, 16, shade=2), None,
                                (0, L / 2 - 0.015, T / 2)))
    rot = np.stack([[0, 0, -1.0], [-1.0, 0, 0], [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([0, -L * _u(rng, 0.1, 0.3), 0]), rot, T / 2, W / 2, 4.0, slide=L * 0.08)
    return ObjectModel("remote", solids, grasp, dict(width=W, length=L, thickness=T))


def make_knife(rng) -> ObjectModel:
    Lb, wb = _u(rng, 0.09, 0.19), _u(rng, 0.015, 0.04)
    Lh, wh, th = _u(rng, 0.08, 0.12), _u(rng, 0.016, 0.025), _u(rng, 0.011, 0.02)
    x_tip = wb / 2 * _u(rng, 0.2, 1.0)
    y_edge = Lb * _u(rng, 0.3, 0.7)
    ang = np.linspace(np.pi, np.pi / 2, 8)
    edge = np.column_stack([x_tip + (x_tip + wb / 2) * np.cos(ang), y_edge + (Lb - y_edge) * np.sin(ang)])
    spine_drop = Lb * _u(rng, 0.6, 0.9)
    blade_poly = np.concatenate([[[-wb / 2, 0.0], [wb / 2, 0.0], [wb / 2, spine_drop]], edge[::-1][:-1]])
    blade_poly = blade_poly[::-1] if _signed_area(blade_poly) < 0 else blade_poly
    solids = [extrude(blade_poly, -0.001, 0.001, shade=1)]
    handle = slab(wh, Lh, th, min(wh, th) * 0.45, corner_points=4)
    solids.append(transform(handle, None, (wb / 2 - wh / 2 if wb > wh else 0.0, -Lh / 2, 0)))
    if rng.random() < 0.6:
        solids.append(transform(slab(wh * 1.1, 0.008, th * 1.05, 0.002, shade=1), None, (0, 0.002, 0)))
    if rng.random() < 0.6:
        for k in range(int(rng.integers(2, 4))):
            solids.append(transform(cylinder(0.0025, -th / 2 - 0.0005, th / 2 + 0.0005, 8, shade=2), None,
                                    (0, -Lh * (0.2 + 0.3 * k), 0)))
    rot = np.stack([[1.0, 0, 0], np.cross([0, 1.0, 0], [1.0, 0, 0]), [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([0, -Lh * _u(rng, 0.4, 0.6), 0]), rot, wh / 2, th / 2, 3.0, slide=Lh * 0.1)
    return ObjectModel("knife", solids, grasp, dict(length=Lb + Lh, blade_width=wb))


def _signed_area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def make_camera(rng) -> ObjectModel:
    W, H, D = _u(rng, 0.1, 0.14), _u(rng, 0.06, 0.09), _u(rng, 0.03, 0.05)
    body = extrude(rounded_rectangle(W, H, _u(rng, 0.004, 0.015), 4), -D / 2, D / 2)
    solids = [body]
    lx = _u(rng, -0.025, 0.005)
    lr = min(_u(rng, 0.016, 0.03), H * 0.42)
    steps = int(rng.integers(1, 4))
    z = D / 2
    for k in range(steps):
        seg = _u(rng, 0.008, 0.02)
        r = lr * (1 - 0.1 * k)
        solids.append(transform(cylinder(r, z - 0.001, z + seg, 24, shade=1 if k % 2 == 0 else 0), None, (lx, 0, 0)))
        z += seg
    solids.append(transform(cylinder(lr * 0.75, z - 0.001, z + 0.0015, 24, shade=2), None, (lx, 0, 0)))
    grip_w = _u(rng, 0.018, 0.03)
    solids.append(transform(slab(grip_w, H * 0.9, _u(rng, 0.008, 0.02), 0.006, shade=1), None,
                            (W / 2 - grip_w / 2 - 0.003, 0, D / 2 + 0.005)))
    if rng.random() < 0.6:  # viewfinder hump
        hw = _u(rng, 0.03, 0.05)
        solids.append(transform(slab(hw, D * 0.8, _u(rng, 0.012, 0.022), 0.004), rotation_x(np.pi / 2),
                                (lx, H / 2 + 0.005, 0)))
    solids.append(transform(cylinder(_u(rng, 0.004, 0.007), 0, _u(rng, 0.003, 0.006), 14, shade=2),
                            rotation_x(-np.pi / 2), (W / 2 - 0.015, H / 2, 0.0)))
    # held by the right end: palm on the back (-z), axis vertical (+y)
    rot = np.stack([[0, 0, -1.0], np.cross([0, 1.0, 0], [0, 0, -1.0]), [0, 1.0, 0]], axis=1)
    grasp = Grasp(np.array([W / 2 - 0.028, 0, 0]), rot, D / 2 + 0.005, 0.028, 6.0, slide=H * 0.1, max_wrap=0.06)
    return ObjectModel("camera", solids, grasp, dict(width=W, height=H, depth=D))


FAMILIES = {
    "bottle": make_bottle, "bowl": make_bowl, "camera": make_camera, "can": make_can,
    "cellphone": make_cellphone, "jar": make_jar, "knife": make_knife, "remote": make_remote,
}


def make_object(cls: str, rng) -> ObjectModel:
    """One random instance of ``cls``, re-centred so its bounding box centre is the origin."""
    model = FAMILIES[cls](rng)
    verts = np.concatenate([s.vertices for s in model.solids])
    centre = (verts.min(0) + verts.max(0)) / 2
    model.solids = [transform(s, None, -centre) for s in model.solids]
    model.grasp.origin = np.asarray(model.grasp.origin, dtype=np.float64) - centre
    return model
