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

Textured drawing (``render_scene(..., texture=atlas)``, used by the second-generation generator): one RGB atlas per
frame; a part with ``uv`` and a ``texture_rect`` (x, y, w, h of its tile, in atlas fractions) multiplies its lit
colour by the tile's texels (``texture_repeat``: the tile repeats, u and v counted in tiles), per-vertex base colours
(``vertex_colors``), given ``normals`` (a mesh unrolled per face corner keeps its smooth normals) and its own
highlight (``specular`` strength, ``shininess`` exponent) are honoured, and the highlight is added after the texture
(a glossy label shines white). Without ``texture`` a frame is drawn exactly as before.
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
    # the fields below are read only by a textured draw (render_scene(..., texture=...))
    uv: np.ndarray | None = None  # (N,2) texture coordinates inside texture_rect (0..1, or tiles when repeating)
    texture_rect: tuple[float, float, float, float] | None = None  # x, y, w, h of the tile, in atlas fractions
    texture_repeat: bool = False
    vertex_colors: np.ndarray | None = None  # (N,3) base colour per vertex, 0..1 (replaces ``color``)
    normals: np.ndarray | None = None  # (N,3) unit normals (default: area-weighted from the faces)
    specular: float | None = None  # highlight strength (default 0.35 * (1 - roughness))
    shininess: float = 24.0


@dataclass
class Light:
    """A directional light shining along ``direction`` (camera frame, OpenCV axes), with an intensity."""

    direction: tuple[float, float, float] = (0.3, 0.4, 1.0)
    intensity: float = 0.8
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def import_pyrender():
    """pyrender, imported so that it works on a headless GPU server: pyrender imports its pyglet viewer even offscreen,
    and pyglet 2 then loads X11 libraries such a server lacks ('NoneType' object has no attribute
    'XRenderFindVisualFormat'); with EGL, pyglet is told to be headless (it then uses EGL too)."""
    if os.environ.get("PYOPENGL_PLATFORM") == "egl":
        os.environ.setdefault("PYGLET_HEADLESS", "true")
    import pyrender

    return pyrender


def _renderer(width: int, height: int):
    pyrender = import_pyrender()
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
    _raw.clear()
    while _renderers:
        _, renderer = _renderers.popitem()
        try:
            renderer.delete()
        except Exception:  # noqa: BLE001 - a context that is already gone needs no freeing
            pass


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


def shade_split(positions: np.ndarray, normals: np.ndarray, base: np.ndarray, specular: float, shininess: float,
                lights: list[Light], ambient: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex (diffuse, highlight) (N,3) each: the lit base colour, to be multiplied by a texture, and the
    highlight added after it. The same light model as ``shade_vertices`` (normals turned towards the camera)."""
    n = normals.copy()
    n[np.einsum("ij,ij->i", n, positions) > 0] *= -1
    view = -positions / (np.linalg.norm(positions, axis=1, keepdims=True) + 1e-12)
    base = np.broadcast_to(np.asarray(base, dtype=np.float64), (len(n), 3))
    diffuse = np.full((len(n), 3), ambient) * base
    spec_out = np.zeros((len(n), 3))
    for light in lights:
        d = np.asarray(light.direction, dtype=np.float64)
        to_light = -d / (np.linalg.norm(d) + 1e-12)
        lam = np.clip(n @ to_light, 0.0, None)[:, None]
        half = view + to_light
        half /= np.linalg.norm(half, axis=1, keepdims=True) + 1e-12
        spec = np.clip(np.einsum("ij,ij->i", n, half), 0.0, None)[:, None] ** shininess * specular
        lc = light.intensity * np.asarray(light.color)
        diffuse += lc * lam * base
        spec_out += lc * spec * (lam > 0)
    return diffuse, spec_out


def _textured_arrays(parts: list[Part], lights: list[Light], ambient: float):
    """Vertex rows (position 3, diffuse 3, highlight 3, uv 2, tile rect 4) and indices for the textured shader."""
    rows, indices, offset = [], [], 0
    for part in parts:
        v = np.asarray(part.vertices, dtype=np.float64)
        f = np.asarray(part.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"vertices must be (N,3) and faces (M,3), got {v.shape} and {f.shape}")
        if len(f) == 0:
            continue
        base = part.vertex_colors if part.vertex_colors is not None else np.asarray(part.color, dtype=np.float64)
        uv = part.uv
        if part.normals is not None:
            pos, normals, idx = v, np.asarray(part.normals, dtype=np.float64), f
        elif part.smooth:
            pos, normals, idx = v, vertex_normals(v, f), f
        else:
            pos = v[f].reshape(-1, 3)
            fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            fn /= np.linalg.norm(fn, axis=1, keepdims=True) + 1e-20
            normals, idx = np.repeat(fn, 3, axis=0), np.arange(len(pos)).reshape(-1, 3)
            if part.vertex_colors is not None:
                base = np.asarray(base)[f].reshape(-1, 3)
            if uv is not None:
                uv = np.asarray(uv)[f].reshape(-1, 2)
        specular = 0.35 * (1.0 - part.roughness) if part.specular is None else part.specular
        diffuse, spec = shade_split(pos, normals, base, specular, part.shininess, lights, ambient)
        row = np.zeros((len(pos), 15), dtype=np.float32)
        row[:, 0:3], row[:, 3:6], row[:, 6:9] = pos, diffuse, spec
        if uv is not None and part.texture_rect is not None:
            x, y, w, h = part.texture_rect
            row[:, 9:11] = uv
            row[:, 11:15] = (x, y, w, h if part.texture_repeat else -h)
        rows.append(row)
        indices.append(idx + offset)
        offset += len(pos)
    if not rows:
        return None, None
    return np.concatenate(rows), np.concatenate(indices).astype(np.uint32)


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
    texture: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``parts`` from the OpenCV camera ``K`` at the origin.

    Returns ``(rgba, depth)``: uint8 (size, size, 4) with alpha 0 where nothing was drawn, and float32 (size, size)
    camera-z depth in metres (0 for background). Shading is Gouraud: vertex colours lit in numpy
    (``shade_vertices``) and drawn unlit by OpenGL, about 4x cheaper than pyrender's PBR shader on a software GL.
    A light's ``intensity`` scales its Lambert term (1.0 = full base colour when facing the light).
    Under OSMesa the draw is one raw OpenGL call on one vertex buffer (``_RawGL``); otherwise pyrender draws it.
    ``texture``: a uint8 (H, W, 3) atlas; the frame is then drawn by the textured shader (module docstring), always
    through raw OpenGL on the current platform's context (OSMesa or EGL).
    """
    K = _scaled_k(K, size, k_size)
    lights = lights if lights is not None else [Light()]
    if texture is not None:
        rows, indices = _textured_arrays(parts, lights, ambient)
        if rows is None:
            return np.zeros((size, size, 4), np.uint8), np.zeros((size, size), np.float32)
        color, depth = _raw_gl(size).draw_textured(rows, indices, np.ascontiguousarray(texture, dtype=np.uint8),
                                                   _projection(K, size, znear, zfar), znear, zfar)
        rgba = np.empty((size, size, 4), dtype=np.uint8)
        rgba[..., :3] = color[..., :3]
        rgba[..., 3] = np.where(depth > 0, 255, 0)
        return rgba, depth
    positions, colors, indices, offset = [], [], [], 0
    for part in parts:
        v = np.asarray(part.vertices, dtype=np.float64)
        f = np.asarray(part.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"vertices must be (N,3) and faces (M,3), got {v.shape} and {f.shape}")
        if len(f) == 0:
            continue
        if part.smooth:
            pos, normals, idx = v, vertex_normals(v, f), f
        else:  # one vertex per face corner, with the face normal
            pos = v[f].reshape(-1, 3)
            fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            fn /= np.linalg.norm(fn, axis=1, keepdims=True) + 1e-20
            normals, idx = np.repeat(fn, 3, axis=0), np.arange(len(pos)).reshape(-1, 3)
        positions.append(pos)
        colors.append(shade_vertices(pos, normals, part.color, part.roughness, lights, ambient))
        indices.append(idx + offset)
        offset += len(pos)
    if not positions:
        return np.zeros((size, size, 4), np.uint8), np.zeros((size, size), np.float32)
    positions = np.concatenate(positions).astype(np.float32)
    colors = np.concatenate(colors).astype(np.float32)
    indices = np.concatenate(indices).astype(np.uint32)
    if os.environ.get("PYOPENGL_PLATFORM") == "osmesa":
        color, depth = _raw_gl(size).draw(positions, colors, indices, _projection(K, size, znear, zfar), znear, zfar)
    else:
        color, depth = _draw_pyrender(positions, colors, indices, K, size, znear, zfar)
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = color[..., :3]
    rgba[..., 3] = np.where(depth > 0, 255, 0)  # OSMesa's buffer has no useful alpha: "drawn" is "depth > 0"
    return rgba, depth


def _projection(K: np.ndarray, size: int, znear: float, zfar: float) -> np.ndarray:
    """The OpenGL projection of pinhole K for a size x size viewport (pyrender's IntrinsicsCamera matrix)."""
    P = np.zeros((4, 4))
    P[0, 0], P[1, 1] = 2.0 * K[0, 0] / size, 2.0 * K[1, 1] / size
    P[0, 2], P[1, 2] = 1.0 - 2.0 * K[0, 2] / size, 2.0 * K[1, 2] / size - 1.0
    P[2, 2], P[2, 3] = (zfar + znear) / (znear - zfar), 2.0 * zfar * znear / (znear - zfar)
    P[3, 2] = -1.0
    return P


def _draw_pyrender(positions, colors, indices, K, size, znear, zfar):
    pyrender = import_pyrender()

    scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
    rgba = np.concatenate([colors, np.ones((len(colors), 1), np.float32)], axis=1)
    primitive = pyrender.Primitive(positions=positions, indices=indices.reshape(-1, 3), color_0=rgba)
    scene.add(pyrender.Mesh([primitive]), pose=_OPENCV_TO_OPENGL)
    camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], znear=znear, zfar=zfar)
    scene.add(camera, pose=np.eye(4))  # the scene is already in OpenGL camera axes (see the mesh pose)
    color, depth = _renderer(size, size).render(scene, flags=pyrender.RenderFlags.FLAT)
    return color, np.asarray(depth, dtype=np.float32)


_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;  // camera frame, OpenCV axes
layout(location = 1) in vec3 color;
uniform mat4 projection;
out vec3 v_color;
void main() {
    v_color = color;
    gl_Position = projection * vec4(position.x, -position.y, -position.z, 1.0);
}
"""
_FRAGMENT_SHADER = """#version 330 core
in vec3 v_color;
out vec4 frag_color;
void main() { frag_color = vec4(v_color, 1.0); }
"""
_TEX_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 diffuse;
layout(location = 2) in vec3 highlight;
layout(location = 3) in vec2 uv;
layout(location = 4) in vec4 rect;
uniform mat4 projection;
out vec3 v_diffuse;
out vec3 v_highlight;
out vec2 v_uv;
flat out vec4 v_rect;
void main() {
    v_diffuse = diffuse;
    v_highlight = highlight;
    v_uv = uv;
    v_rect = rect;
    gl_Position = projection * vec4(position.x, -position.y, -position.z, 1.0);
}
"""
_TEX_FRAGMENT_SHADER = """#version 330 core
in vec3 v_diffuse;
in vec3 v_highlight;
in vec2 v_uv;
flat in vec4 v_rect;
uniform sampler2D atlas;
out vec4 frag_color;
void main() {
    vec3 t = vec3(1.0);
    if (v_rect.z > 0.0) {
        vec2 local = v_rect.w > 0.0 ? fract(v_uv) : clamp(v_uv, 0.0, 1.0);
        t = texture(atlas, v_rect.xy + local * abs(v_rect.zw)).rgb;
    }
    frag_color = vec4(min(v_diffuse * t + v_highlight, vec3(1.0)), 1.0);
}
"""
_raw: dict[int, "_RawGL"] = {}


class _RawGL:
    """One OSMesa context (made by pyrender's OffscreenRenderer), one shader, one vertex array: a frame is one
    buffer upload, one glDrawElements and two reads. About 2x cheaper than a pyrender frame on this CPU."""

    def __init__(self, size: int):
        from OpenGL import GL as gl
        from OpenGL.GL import shaders

        self.size = size
        self.platform = _renderer(size, size)._platform
        self.platform.make_current()
        self.program = shaders.compileProgram(shaders.compileShader(_VERTEX_SHADER, gl.GL_VERTEX_SHADER),
                                              shaders.compileShader(_FRAGMENT_SHADER, gl.GL_FRAGMENT_SHADER))
        self.projection = gl.glGetUniformLocation(self.program, "projection")
        self.vao = gl.glGenVertexArrays(1)
        self.vbo, self.ebo = gl.glGenBuffers(2)
        self.tex_program = None

    def _setup_textured(self):
        from OpenGL import GL as gl
        from OpenGL.GL import shaders

        self.tex_program = shaders.compileProgram(
            shaders.compileShader(_TEX_VERTEX_SHADER, gl.GL_VERTEX_SHADER),
            shaders.compileShader(_TEX_FRAGMENT_SHADER, gl.GL_FRAGMENT_SHADER))
        self.tex_projection = gl.glGetUniformLocation(self.tex_program, "projection")
        self.tex_sampler = gl.glGetUniformLocation(self.tex_program, "atlas")
        self.tex_vao = gl.glGenVertexArrays(1)
        self.tex_vbo, self.tex_ebo = gl.glGenBuffers(2)
        self.texture = gl.glGenTextures(1)

    def draw_textured(self, rows, indices, atlas, projection, znear, zfar):
        """One frame with the textured shader: rows (N,15) float32 from ``_textured_arrays``, atlas (H,W,3)."""
        from OpenGL import GL as gl

        self.platform.make_current()
        if self.tex_program is None:
            self._setup_textured()
        n = self.size
        if os.environ.get("PYOPENGL_PLATFORM") != "osmesa":  # EGL has no default framebuffer: pyrender's own
            renderer = _renderer(n, n)._renderer
            renderer._configure_main_framebuffer()
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, renderer._main_fb)
        self._clear(self.tex_program, self.tex_projection, projection)
        gl.glActiveTexture(gl.GL_TEXTURE0)
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.texture)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        h, w = atlas.shape[:2]
        gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGB8, w, h, 0, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, atlas)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
        gl.glUniform1i(self.tex_sampler, 0)
        # position, diffuse, highlight, uv, tile rect (see _textured_arrays)
        self._draw_triangles(self.tex_vao, self.tex_vbo, self.tex_ebo, rows, ((0, 3), (3, 3), (6, 3), (9, 2), (11, 4)),
                             indices)
        return self._read(znear, zfar)

    def _clear(self, program, projection_location, projection):
        """Start a frame: viewport, depth test, cleared to transparent black, `program` with its projection."""
        from OpenGL import GL as gl

        n = self.size
        gl.glViewport(0, 0, n, n)
        gl.glEnable(gl.GL_DEPTH_TEST)
        gl.glDepthFunc(gl.GL_LESS)
        gl.glDisable(gl.GL_CULL_FACE)
        gl.glClearColor(0.0, 0.0, 0.0, 0.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT | gl.GL_DEPTH_BUFFER_BIT)
        gl.glUseProgram(program)
        gl.glUniformMatrix4fv(projection_location, 1, gl.GL_TRUE, projection.astype(np.float32))

    def _draw_triangles(self, vao, vbo, ebo, rows, columns, indices):
        """Upload float rows (one per vertex; `columns` = (first column, count) of each shader input, in order) and
        the triangle indices, and draw them."""
        import ctypes

        from OpenGL import GL as gl

        gl.glBindVertexArray(vao)
        data = np.ascontiguousarray(rows, dtype=np.float32)
        gl.glBindBuffer(gl.GL_ARRAY_BUFFER, vbo)
        gl.glBufferData(gl.GL_ARRAY_BUFFER, data.nbytes, data, gl.GL_STREAM_DRAW)
        stride = data.shape[1] * 4
        for loc, (start, count) in enumerate(columns):
            gl.glVertexAttribPointer(loc, count, gl.GL_FLOAT, gl.GL_FALSE, stride, ctypes.c_void_p(start * 4))
            gl.glEnableVertexAttribArray(loc)
        idx = np.ascontiguousarray(indices, dtype=np.uint32)
        gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, ebo)
        gl.glBufferData(gl.GL_ELEMENT_ARRAY_BUFFER, idx.nbytes, idx, gl.GL_STREAM_DRAW)
        gl.glDrawElements(gl.GL_TRIANGLES, idx.size, gl.GL_UNSIGNED_INT, None)

    def _read(self, znear, zfar):
        """The frame's colour (uint8 HxWx3) and metric depth (float32, 0 where nothing was drawn)."""
        from OpenGL import GL as gl

        n = self.size
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        color = np.frombuffer(gl.glReadPixels(0, 0, n, n, gl.GL_RGB, gl.GL_UNSIGNED_BYTE), np.uint8)
        d = np.frombuffer(gl.glReadPixels(0, 0, n, n, gl.GL_DEPTH_COMPONENT, gl.GL_FLOAT), np.float32)
        gl.glBindVertexArray(0)
        color = color.reshape(n, n, 3)[::-1]
        d = d.reshape(n, n)[::-1]
        drawn = d < 1.0
        z_ndc = 2.0 * d - 1.0
        depth = np.where(drawn, 2.0 * znear * zfar / (zfar + znear - z_ndc * (zfar - znear)), 0.0).astype(np.float32)
        return np.ascontiguousarray(color), np.ascontiguousarray(depth)

    def draw(self, positions, colors, indices, projection, znear, zfar):
        self.platform.make_current()
        self._clear(self.program, self.projection, projection)
        self._draw_triangles(self.vao, self.vbo, self.ebo, np.concatenate([positions, colors], axis=1),
                             ((0, 3), (3, 3)), indices)  # position, colour
        return self._read(znear, zfar)


def _raw_gl(size: int) -> _RawGL:
    if size not in _raw:
        _raw[size] = _RawGL(size)
    return _raw[size]


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
