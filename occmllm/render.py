"""Offscreen rendering of meshes seen from an OpenCV camera: the seed's "enhanced image" (grey object on black).

    from occmllm.render import render_object
    image = render_object(vertices, faces, K)          # uint8 256x256x3, grey object on black

Conventions: ``vertices`` are in the camera frame with OpenCV axes (x right, y down, z forward, metres); ``K`` is
the 3x3 pinhole intrinsics in pixels of the output image (pass ``k_size`` when K belongs to another image size,
e.g. K of the 256x256 photo and a 448 px render). The camera sits at the origin looking down +z.

Backend: pyrender offscreen. ``PYOPENGL_PLATFORM`` defaults to ``osmesa`` (set here when unset, before OpenGL is
imported); ``egl`` works too. One ``OffscreenRenderer`` per (process, size) is created lazily and reused, so a
worker process pays the context set-up once (about 10-20 ms a frame afterwards on this CPU).

``render_scene`` is the general form (several coloured parts, an RGBA result and the depth map); the dataset
generator (``data_tools.synth``) draws its photos with it, so there is one renderer in the project.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

GREY = (0.72, 0.72, 0.72)
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
_renderers: dict[tuple[int, int], object] = {}


@dataclass
class Part:
    """One mesh to draw: camera-frame vertices (N,3), triangle faces (M,3), base colour (RGB in 0..1)."""

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float] = GREY
    roughness: float = 0.8
    smooth: bool = True


@dataclass
class Light:
    """A directional light shining along ``direction`` (camera frame, OpenCV axes), with an intensity."""

    direction: tuple[float, float, float] = (0.3, 0.4, 1.0)
    intensity: float = 0.8
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _renderer(width: int, height: int):
    import pyrender

    key = (width, height)
    if key not in _renderers:
        if not _renderers:
            atexit.register(close)
        renderer = pyrender.OffscreenRenderer(width, height)
        renderer._renderer._program_cache = _stable_program_cache()
        _renderers[key] = renderer
    return _renderers[key]


def _stable_program_cache():
    """pyrender keys its shader cache on the current GL context object, which OSMesa hands out anew on every call,
    so every draw recompiled its shaders (about 13 ms a frame here). This cache keys on the shaders alone."""
    from pyrender.shader_program import ShaderProgramCache

    class StableProgramCache(ShaderProgramCache):
        def __init__(self):
            super().__init__()
            self._stable = {}

        def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
            key = (vertex_shader, fragment_shader, geometry_shader, tuple(sorted((defines or {}).items())))
            if key not in self._stable:
                self._stable[key] = super().get_program(vertex_shader, fragment_shader, geometry_shader, defines)
            return self._stable[key]

        def clear(self):
            self._stable = {}
            super().clear()

    return StableProgramCache()


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (what trimesh computes, without building a Trimesh)."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    idx = f.ravel()
    for c in range(3):
        n[:, c] = np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=len(v))
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
    return n


def close() -> None:
    """Free this process's renderers (also run at exit, so OpenGL is not torn down during interpreter shutdown)."""
    while _renderers:
        _, renderer = _renderers.popitem()
        try:
            renderer.delete()
        except Exception:  # noqa: BLE001 - a context that is already gone needs no freeing
            pass


def _look_along(direction) -> np.ndarray:
    """A 4x4 OpenGL pose (camera frame) whose -z axis points along ``direction`` given in OpenCV axes."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / (np.linalg.norm(d) + 1e-12)
    d_gl = np.array([d[0], -d[1], -d[2]])  # OpenCV -> OpenGL camera axes
    z = -d_gl
    up = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.95 else np.array([1.0, 0.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x, y, z
    return pose


def _scaled_k(K, size: int, k_size: int | None) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be a 3x3 intrinsics matrix, got shape {K.shape}")
    if k_size is not None and k_size != size:
        K = K.copy()
        K[:2] *= size / float(k_size)
    return K


def shade_vertices(positions: np.ndarray, normals: np.ndarray, color, roughness: float, lights: list[Light],
                   ambient: float) -> np.ndarray:
    """Per-vertex colour (N,3) in 0..1: ambient + Lambert per light + a small Blinn-Phong highlight.

    Normals are turned towards the camera (at the origin), so thin double-sided parts are lit on both sides.
    """
    n = normals.copy()
    n[np.einsum("ij,ij->i", n, positions) > 0] *= -1
    view = -positions / (np.linalg.norm(positions, axis=1, keepdims=True) + 1e-12)
    base = np.asarray(color, dtype=np.float64)
    out = np.full((len(n), 3), ambient) * base
    for light in lights:
        d = np.asarray(light.direction, dtype=np.float64)
        to_light = -d / (np.linalg.norm(d) + 1e-12)
        lam = np.clip(n @ to_light, 0.0, None)[:, None]
        half = view + to_light
        half /= np.linalg.norm(half, axis=1, keepdims=True) + 1e-12
        spec = np.clip(np.einsum("ij,ij->i", n, half), 0.0, None)[:, None] ** 24 * (0.35 * (1.0 - roughness))
        out += light.intensity * np.asarray(light.color) * (lam * base + spec * (lam > 0))
    return np.clip(out, 0.0, 1.0)


def render_scene(
    parts: list[Part],
    K,
    size: int = 256,
    *,
    lights: list[Light] | None = None,
    ambient: float = 0.2,
    k_size: int | None = None,
    znear: float = 0.01,
    zfar: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``parts`` from the OpenCV camera ``K`` at the origin.

    Returns ``(rgba, depth)``: uint8 (size, size, 4) with alpha 0 where nothing was drawn, and float32 (size, size)
    camera-z depth in metres (0 for background). Shading is Gouraud: vertex colours lit in numpy
    (``shade_vertices``) and drawn unlit by OpenGL, about 4x cheaper than pyrender's PBR shader on a software GL.
    A light's ``intensity`` scales its Lambert term (1.0 = full base colour when facing the light).
    """
    import pyrender

    K = _scaled_k(K, size, k_size)
    lights = lights if lights is not None else [Light()]
    scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
    for part in parts:
        v = np.asarray(part.vertices, dtype=np.float64)
        f = np.asarray(part.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"vertices must be (N,3) and faces (M,3), got {v.shape} and {f.shape}")
        if len(f) == 0:
            continue
        if part.smooth:
            positions, normals, indices = v, vertex_normals(v, f), f
        else:  # one vertex per face corner, with the face normal
            positions = v[f].reshape(-1, 3)
            fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            fn /= np.linalg.norm(fn, axis=1, keepdims=True) + 1e-20
            normals, indices = np.repeat(fn, 3, axis=0), np.arange(len(positions)).reshape(-1, 3)
        colors = np.ones((len(positions), 4), dtype=np.float32)
        colors[:, :3] = shade_vertices(positions, normals, part.color, part.roughness, lights, ambient)
        primitive = pyrender.Primitive(positions=positions.astype(np.float32), normals=normals.astype(np.float32),
                                       indices=indices.astype(np.uint32), color_0=colors)
        scene.add(pyrender.Mesh([primitive]), pose=_OPENCV_TO_OPENGL)
    camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], znear=znear, zfar=zfar)
    scene.add(camera, pose=np.eye(4))  # the scene is already in OpenGL camera axes (see the mesh pose)
    # OSMesa has no framebuffer objects, so pyrender gives RGB only there: the alpha is "depth > 0" instead.
    color, depth = _renderer(size, size).render(scene, flags=pyrender.RenderFlags.FLAT)
    depth = np.asarray(depth, dtype=np.float32)
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = color[..., :3]
    rgba[..., 3] = np.where(depth > 0, 255, 0)
    return rgba, depth


def render_object(vertices, faces, K, size: int = 256, *, k_size: int | None = None, smooth: bool = True,
                  return_depth: bool = False):
    """The object alone, grey on black, from the input camera: uint8 (size, size, 3).

    ``vertices`` (N,3) camera frame, OpenCV axes; ``faces`` (M,3); ``K`` 3x3 intrinsics of a ``size`` px image (or
    of a ``k_size`` px image, rescaled). An empty mesh gives a black image. With ``return_depth`` the result is
    ``(rgb, depth)``, depth float32 metres (0 where the object is absent).
    """
    parts = [Part(np.asarray(vertices), np.asarray(faces), GREY, smooth=smooth)]
    lights = [Light(direction=(0.3, 0.45, 1.0), intensity=0.75), Light(direction=(-0.6, -0.3, 0.5), intensity=0.25)]
    rgba, depth = render_scene(parts, K, size, lights=lights, ambient=0.15, k_size=k_size)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 0
    return (rgb, depth) if return_depth else rgb


def project(vertices, K) -> np.ndarray:
    """Pixel coordinates (N,2) of camera-frame points (OpenCV axes) under intrinsics K."""
    v = np.asarray(vertices, dtype=np.float64)
    uvw = v @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]
