"""occmllm.render: the grey-on-black object render lands where the camera puts the object."""

import numpy as np
import trimesh

from occmllm.render import Part, project, render_object, render_scene

K = np.array([[400.0, 0, 128], [0, 400.0, 128], [0, 0, 1]])


def _box(center, extents=(0.06, 0.1, 0.04)):
    box = trimesh.creation.box(extents)
    return box.vertices + np.asarray(center), box.faces


def test_object_is_grey_on_black_where_projected():
    v, f = _box((0.05, -0.03, 0.5))  # right of centre and up (OpenCV: y down)
    img = render_object(v, f, K)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    drawn = img.max(-1) > 0
    assert 0.02 < drawn.mean() < 0.5
    # grey: the three channels agree, and the background is exactly black
    assert np.abs(img[drawn].astype(int) - img[drawn].mean(-1, keepdims=True)).max() <= 2
    assert img[~drawn].max() == 0
    # the drawn pixels fill the projected bounding box of the box corners
    uv = project(v, K)
    ys, xs = np.nonzero(drawn)
    assert abs(xs.min() - uv[:, 0].min()) <= 2 and abs(xs.max() - uv[:, 0].max()) <= 2
    assert abs(ys.min() - uv[:, 1].min()) <= 2 and abs(ys.max() - uv[:, 1].max()) <= 2
    assert xs.mean() > 128 and ys.mean() < 128


def test_k_size_rescales_intrinsics():
    v, f = _box((0.0, 0.0, 0.5))
    small = render_object(v, f, K, size=128, k_size=256).max(-1) > 0
    big = render_object(v, f, K).max(-1) > 0
    assert abs(small.mean() - big.mean()) < 0.01


def test_render_scene_depth_and_occlusion():
    back_v, back_f = _box((0.0, 0.0, 0.6), (0.2, 0.2, 0.02))
    front_v, front_f = _box((0.0, 0.0, 0.4), (0.04, 0.04, 0.04))
    rgba, depth = render_scene([Part(back_v, back_f, (0.2, 0.2, 0.9)), Part(front_v, front_f, (0.9, 0.2, 0.2))], K)
    assert rgba.shape == (256, 256, 4) and depth.shape == (256, 256)
    assert abs(depth[128, 128] - 0.38) < 0.005  # front face of the near box
    assert abs(depth[128, 78] - 0.59) < 0.005
    assert rgba[128, 128, 0] > rgba[128, 128, 2] and rgba[128, 78, 2] > rgba[128, 78, 0]
    assert depth[0, 0] == 0 and rgba[0, 0, 3] == 0


def test_empty_mesh_is_black():
    img = render_object(np.zeros((0, 3)), np.zeros((0, 3), dtype=int), K)
    assert img.max() == 0


def test_raw_gl_and_pyrender_paths_draw_the_same_pixels(monkeypatch):
    import os

    v, f = _box((0.02, 0.01, 0.45))
    first, depth = render_object(v, f, K, return_depth=True)
    if os.environ.get("PYOPENGL_PLATFORM") == "osmesa":  # the raw path ran: now force pyrender's
        monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa (pyrender path)")
    second, depth2 = render_object(v, f, K, return_depth=True)
    assert np.array_equal(first, second) and np.allclose(depth, depth2)
