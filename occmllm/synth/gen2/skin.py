"""The generation-2 hand dressed: skin with tone variation, darker creases and redder knuckles, nails on every
finger and the thumb, and sleeve variety (a long sleeve in many colours, or a bare forearm)."""

from __future__ import annotations

import numpy as np

from occmllm.render import Part

from ..geometry import unit_sphere
from .textures import hsv


def dress(rng, hand, to_cam, grasp_axis_origin, grasp_axis) -> tuple[list[Part], dict]:
    """Parts (camera frame, via ``to_cam``) for the hand of ``hand.HandMesh`` and what was chosen."""
    v, f = hand.skin
    tone = np.asarray(hand.skin_color) * rng.uniform(0.9, 1.08)
    chains = hand.params["chains"]
    joints = np.concatenate([j for j, _ in chains])
    d2 = ((v[:, None, :] - joints[None]) ** 2).sum(-1).min(1)
    near = np.exp(-d2 / (0.007 ** 2))  # 1 at a joint
    noise = rng.normal(0, 0.025, (len(v), 1))
    red = np.array([1.0, 0.82, 0.8])  # knuckles and fingertips are redder and a little darker
    colours = tone * (1 + noise) * (1 - 0.18 * near[:, None] * (1 - red))
    colours *= (1 - 0.1 * near)[:, None]
    parts = [Part(to_cam(v), f, tuple(tone), 0.65, vertex_colors=np.clip(colours, 0, 1), specular=0.06,
                  shininess=12)]
    # nails: a flattened ellipsoid on the back of each distal phalanx
    sv, sf = unit_sphere(5, 10)
    nail_colour = np.clip(tone * np.array([1.05, 0.92, 0.92]) + 0.12, 0, 1)
    nv, nf = [], []
    for k, (j, r) in enumerate(chains):
        tip, prev = j[-1], j[-2]
        d = tip - prev
        d /= np.linalg.norm(d) + 1e-9
        radial = (tip - grasp_axis_origin) - ((tip - grasp_axis_origin) @ grasp_axis) * grasp_axis
        radial -= (radial @ d) * d
        radial /= np.linalg.norm(radial) + 1e-9
        across = np.cross(d, radial)
        rot = np.stack([across, d, radial], axis=1)
        centre = tip - d * r * 0.5 + radial * r * 0.72
        nv.append((sv * [r * 0.72, r * 1.0, r * 0.32]) @ rot.T + centre)
        nf.append(sf + 0 if not nv[:-1] else sf + sum(len(x) for x in nv[:-1]))
    parts.append(Part(to_cam(np.concatenate(nv)), np.concatenate(nf), tuple(nail_colour), 0.3, specular=0.35,
                      shininess=40))
    sleeve = "bare" if rng.random() < 0.3 else "long"
    if sleeve == "long":
        sv_, sf_ = hand.sleeve
        c = hsv(rng.uniform(0, 1), rng.uniform(0, 0.8) ** 2, rng.uniform(0.08, 0.95))
        shade = np.clip(c * (1 + rng.normal(0, 0.06, (len(sv_), 1))), 0, 1)
        parts.append(Part(to_cam(sv_), sf_, tuple(c), 0.95, vertex_colors=shade, specular=0.02))
    return parts, {"sleeve": sleeve}
