"""What every 3D expert returns: `Reconstruction` (mesh, the render from the input camera, extra views, GLB).

    rec = expert.reconstruct(image)          # any expert in occmllm.recon
    if rec.ok:
        rec.save_glb("object.glb")           # Y-up, centred, about 1 unit across: what gradio Model3D / three.js want
        Image.fromarray(rec.render)          # grey on black, from the input camera: the "enhanced image"
    else:
        print(rec.message)                   # "nothing reconstructed: ..."
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

NOTHING = "nothing reconstructed"
# OpenCV camera frame (x right, y down, z forward) -> glTF (x right, y up, z towards the viewer): 180 deg about x.
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])


@dataclass
class Reconstruction:
    """One expert's answer for one photo.

    ok: whether an object was reconstructed. message: what happened, in words ("nothing reconstructed: ..." when
    not ok). mesh: camera-frame mesh (OpenCV axes, metres) or None. render: uint8 HxWx3, the object alone, grey on
    black, seen from the input camera (black when not ok). views: uint8 strip of the object turned 0/90/180/270 deg
    about the camera's vertical axis (None unless asked for). K: the intrinsics the render used. timings: seconds
    per phase.
    """

    ok: bool
    message: str
    mesh: trimesh.Trimesh | None = None
    render: np.ndarray | None = None
    views: np.ndarray | None = None
    K: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def glb(self) -> bytes | None:
        """The mesh as GLB bytes for a web viewer (Y-up, centred, ~1 unit across), or None when not ok."""
        if not self.ok or self.mesh is None:
            return None
        return mesh_to_glb(self.mesh)

    def save_glb(self, path: str | Path) -> Path:
        """Write the GLB; raises ValueError when there is nothing to write (never writes an empty GLB)."""
        data = self.glb
        if data is None:
            raise ValueError(f"{path}: {self.message}; no GLB written")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def nothing_reconstructed(reason: str, size: int = 256, timings: dict | None = None) -> Reconstruction:
    """The not-ok result: a black render, no mesh, no GLB."""
    return Reconstruction(False, f"{NOTHING}: {reason}", None, np.zeros((size, size, 3), np.uint8),
                          timings=dict(timings or {}))


def viewer_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Copy of a camera-frame mesh turned Y-up (glTF), centred on its bounding box, scaled to 1 unit across."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64) @ OPENCV_TO_GLTF.T
    lo, hi = vertices.min(0), vertices.max(0)
    vertices = (vertices - (lo + hi) / 2) / max(float((hi - lo).max()), 1e-9)
    out = trimesh.Trimesh(vertices, np.asarray(mesh.faces), process=False)  # a rotation keeps the face winding
    out.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        baseColorFactor=[184, 184, 184, 255], metallicFactor=0.0, roughnessFactor=0.8, doubleSided=True))
    return out


def mesh_to_glb(mesh: trimesh.Trimesh) -> bytes:
    """GLB bytes of viewer_mesh(mesh)."""
    buffer = io.BytesIO()
    viewer_mesh(mesh).export(buffer, file_type="glb")
    return buffer.getvalue()


def render_views(mesh: trimesh.Trimesh, K: np.ndarray, size: int = 256, angles=(0, 90, 180, 270),
                 tile: int = 128) -> np.ndarray:
    """A strip of renders (tile px high, len(angles) tiles wide): the object turned about the camera's vertical
    axis through its centre, each framed to fill its tile (the first tile is the input camera's viewpoint)."""
    from occmllm.render import render_object

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    radius = float(np.linalg.norm(vertices - centre, axis=1).max()) + 1e-9
    distance = 3.0 * radius
    focal = tile * distance / (2.4 * radius)
    K_tile = np.array([[focal, 0, tile / 2], [0, focal, tile / 2], [0, 0, 1]])
    tiles = []
    for angle in angles:
        t = np.deg2rad(angle)
        # turn about the camera's y axis (down in OpenCV), then place the object straight ahead
        R = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
        turned = (vertices - centre) @ R.T + np.array([0, 0, distance])
        tiles.append(render_object(turned, mesh.faces, K_tile, size=tile))
    return np.concatenate(tiles, axis=1)
