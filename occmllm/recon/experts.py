"""The three 3D experts. Each has `reconstruct(image, ...) -> Reconstruction`.

    from occmllm.recon import LearnedExpert, FolderExpert, OracleExpert
    rec = LearnedExpert().reconstruct("photo.jpg")            # the trained weights shipped in occmllm/recon/weights
    rec = LearnedExpert("v5").reconstruct("photo.jpg")        # the better-shaped, wider expert (weights_v5)
    rec = LearnedExpert("runs/recon").reconstruct(image)      # a model trained with `python -m occmllm.recon.train`
    rec = FolderExpert("moho_renders/").reconstruct("00000042")   # precomputed renders, the seed's MOHO naming
    rec = OracleExpert("data/synth", "test").reconstruct("00000042")  # the synthetic ground truth: upper bound
"""
from __future__ import annotations

import bisect
import fnmatch
import itertools
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import trimesh

from occmllm.images import as_rgb_array
from occmllm.recon.geometry import FrustumBox, checked_mesh, frustum_to_camera, half_depth, mesh_from_grid
from occmllm.recon.reconstruction import Reconstruction, nothing_reconstructed, render_views
from occmllm.shipped import DEFAULT_EXPERT as DEFAULT, EXPERTS as SHIPPED

WEIGHTS = SHIPPED[DEFAULT]  # the folder `learned` reads


def weights_folder(path: str | Path | None = None) -> Path:
    """The folder of a learned expert: a path, a shipped expert's name (SHIPPED), or None for the default."""
    if path is None or str(path) == "":
        return WEIGHTS
    if str(path) in SHIPPED and not Path(path).exists():
        return SHIPPED[str(path)]
    if not Path(path).exists() and "/" not in str(path) and "\\" not in str(path):
        raise FileNotFoundError(f"{path}: no such expert folder, and no shipped expert of that name (shipped: "
                                f"{', '.join(SHIPPED)})")
    return Path(path)


SPEC_HELP = f"none | learned[:{'|'.join(SHIPPED)}|FOLDER] | oracle:DATA_DIR[:SPLIT] | folder:DIR"


def expert_from_spec(spec: str | None):
    """The 3D expert a spec names, the one spelling used everywhere (the app, infer, evaluate, the recipe's presets):
    "none" (or None), "learned" (the default shipped expert, DEFAULT) or "learned:NAME|FOLDER" (a shipped expert's name,
    see SHIPPED, or a trained expert's folder), "oracle:DATA_DIR[:SPLIT]" (the synthetic ground truth),
    "folder:DIR" (precomputed renders named `{id}_0_obman_test_rgb_{id}.jpg.png`)."""
    if not spec or spec == "none":
        return None
    kind, _, arg = str(spec).partition(":")
    if kind == "learned":
        return LearnedExpert(arg or None)
    if kind == "oracle":
        data_dir, _, split = arg.partition(":")
        return OracleExpert(data_dir, split or "test")
    if kind == "folder":
        return FolderExpert(arg)
    raise ValueError(f"expert {spec!r}: expected {SPEC_HELP}")


def learned_weights(spec: str, older_spelling_ok: bool = False) -> Path:
    """The weights folder of a "learned[:NAME|FOLDER]" spec (for what can only take a learned expert, like training
    on its renders); other specs raise ValueError. With older_spelling_ok a bare NAME or FOLDER (what the tools took
    before) is read too, with a FutureWarning naming the spec to write instead."""
    kind, _, arg = str(spec).partition(":")
    if kind != "learned":
        if older_spelling_ok and ":" not in str(spec):
            warnings.warn(f"expert {spec!r}: write 'learned:{spec}' (the spelling of every --expert)", FutureWarning,
                          stacklevel=2)
            return weights_folder(spec)
        raise ValueError(f"expert {spec!r}: expected learned, learned:NAME (shipped: {', '.join(SHIPPED)}) or "
                         "learned:FOLDER")
    return weights_folder(arg or None)


def finish(mesh: trimesh.Trimesh | None, K: np.ndarray, size: int, views: bool, timings: dict, t0: float,
           message: str = "reconstructed", orient: bool = True) -> Reconstruction:
    """Render a mesh from the input camera (+ the 4-view strip) into a Reconstruction, or the not-ok result.
    orient=False: the mesh is known to face outward (mesh_from_grid's)."""
    from occmllm.render import render_object

    mesh = checked_mesh(mesh, orient)
    if mesh is None:
        return nothing_reconstructed("the reconstruction is empty or degenerate", size, timings)
    t = time.perf_counter()
    render = render_object(mesh.vertices, mesh.faces, K, size=size)
    timings["render"] = time.perf_counter() - t
    if not render.any():
        return nothing_reconstructed("the object is outside the camera's view", size, timings)
    strip = None
    if views:
        t = time.perf_counter()
        strip = render_views(mesh, K)
        timings["views"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return Reconstruction(True, message, mesh, render, strip, np.asarray(K, np.float32), timings)


class LearnedExpert:
    """The trained occupancy network (occmllm.recon.model): photo -> amodal mesh in the camera frame -> render.

    path: a folder with config.json + model.safetensors, or a shipped expert's name (see SHIPPED;
    None: DEFAULT).
    threshold: occupancy probability of the surface. min_objectness: below it, "no object found".
    flip_average: also read the mirror image and average both predictions (twice the network time, +0.02 IoU;
    only for photos whose principal point is centred, like the synthetic data and the default K).
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", threshold: float = 0.5,
                 min_objectness: float = 0.5, flip_average: bool = True):
        from occmllm.recon.model import OccupancyNet

        self.model = OccupancyNet.from_pretrained(weights_folder(path), device=device)
        if torch.device(device).type == "cpu":
            # oneDNN's convolutions are faster on channels-last weights: the g2 network on one photo and its mirror
            # image 95 -> 66 ms on this 2-core CPU, the probabilities the same to 1e-5 (benchmarks/bench_recon.py)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.config = self.model.config
        self.device, self.threshold, self.min_objectness = device, threshold, min_objectness
        self.flip_average = flip_average

    def default_K(self) -> np.ndarray:
        c = self.config
        return np.array([[c.fx, 0, c.cx], [0, c.fy, c.cy], [0, 0, 1]], dtype=np.float32)

    @torch.no_grad()
    def predict(self, image, K: np.ndarray | None = None) -> tuple[FrustumBox, np.ndarray, float, np.ndarray]:
        """Photo -> (predicted window, occupancy probabilities [depth, y, x], objectness, K of the 256 px photo)."""
        return self.predict_batch([image], K)[0]

    @torch.no_grad()
    def predict_batch(self, images: list, K: np.ndarray | None = None
                      ) -> list[tuple[FrustumBox, np.ndarray, float, np.ndarray]]:
        """predict() for several photos (one K for all) in one pass of the network: what a GPU wants."""
        c = self.config
        photos = np.stack([as_rgb_array(image, c.image_size) for image in images])
        K = self.default_K() if K is None else np.asarray(K, np.float32)
        x = self.model.normalize(torch.from_numpy(photos).to(self.device))
        n = len(photos)
        if not (self.flip_average and abs(float(K[0, 2]) - c.image_size / 2) < 1.0):
            pred = self.model(x)
            u0, v0, r, z = (pred[k].float() for k in ("u0", "v0", "r", "z"))
            logits, objectness = pred["occupancy"], pred["objectness"]
        else:  # each photo and its mirror image (a centred camera sees the mirrored object), averaged
            x = torch.cat([x, x.flip(3)])
            pred = self.model.predict_box(x)
            u0 = (pred["u0"][:n] + c.image_size - pred["u0"][n:]) / 2
            v0 = (pred["v0"][:n] + pred["v0"][n:]) / 2
            r, z = ((pred[k][:n].log() + pred[k][n:].log()).div(2).exp() for k in ("r", "z"))
            window = torch.cat([torch.stack([u0, v0, r], 1), torch.stack([c.image_size - u0, v0, r], 1)])
            both = self.model.shape_net(self.model.crop(x, *window.unbind(1)))
            logits = (both[:n] + both[n:].flip(-1)) / 2
            objectness = (pred["objectness"][:n] + pred["objectness"][n:]) / 2
        prob = logits.float().sigmoid().cpu().numpy()
        objectness = torch.sigmoid(objectness.float()).cpu().numpy()
        u0, v0, r, z = (t.float().cpu().numpy() for t in (u0, v0, r, z))
        results = []
        for i in range(n):
            depth = self.model.depth_of(float(z[i]), float(K[0, 0]))
            box = FrustumBox(float(u0[i]), float(v0[i]), float(r[i]), depth,
                             half_depth(float(r[i]), depth, K, c.depth_ratio))
            results.append((box, prob[i], float(objectness[i]), K))
        return results

    def reconstruct(self, image, K: np.ndarray | None = None, views: bool = False) -> Reconstruction:
        """Photo (path / PIL / array; resized to 256 px) -> Reconstruction. K: intrinsics of the 256 px photo
        (default: the training data's). views: also render the 4-view strip (about 4 renders more)."""
        t0 = time.perf_counter()
        try:
            photo = self.checked_photo(image)
        except ValueError as err:
            return nothing_reconstructed(str(err), self.config.image_size)
        prediction = self.predict(photo, K)
        return self.from_prediction(prediction, views, {"network": time.perf_counter() - t0}, t0)

    def checked_photo(self, image) -> np.ndarray:
        """The photo as a 256 px uint8 array; ValueError (the message to show) for unreadable or blank images."""
        photo = as_rgb_array(image, self.config.image_size)
        if photo.astype(np.float32).std() < 2.0:
            raise ValueError("the image is blank")
        return photo

    def from_prediction(self, prediction: tuple, views: bool = False, timings: dict | None = None,
                        t0: float | None = None) -> Reconstruction:
        """The rest of reconstruct() after the network: objectness check, marching cubes, render (CPU work, so that
        the network can run batched elsewhere: data_tools.expert_renders on a GPU)."""
        box, prob, objectness, K = prediction
        timings, t0 = timings if timings is not None else {}, t0 if t0 is not None else time.perf_counter()
        size = self.config.image_size
        if objectness < self.min_objectness:
            return nothing_reconstructed(f"no object found (objectness {objectness:.2f})", size, timings)
        t = time.perf_counter()
        mesh = mesh_from_grid(prob, lambda abc: frustum_to_camera(abc, box, K), self.threshold)
        timings["mesh"] = time.perf_counter() - t
        return finish(mesh, K, size, views, timings, t0, f"reconstructed (objectness {objectness:.2f})", orient=False)


class OracleExpert:
    """The synthetic ground truth as an expert: the true object mesh, rendered from the true camera (upper bound
    of the 3D route). reconstruct() takes a sample id (or a photo path DIR/{split}/images/{id}.jpg)."""

    def __init__(self, data_dir: str | Path, split: str = "test", size: int = 256):
        self.data_dir, self.split, self.size = Path(data_dir), split, size

    def reconstruct(self, image_or_id, K=None, views: bool = False) -> Reconstruction:
        from occmllm.dataset import load_shape, sample_path

        t0 = time.perf_counter()
        sid = Path(str(image_or_id)).stem
        path = sample_path(self.data_dir, self.split, "shapes", sid)
        if not path.is_file():
            return nothing_reconstructed(f"{path}: no ground-truth shape", self.size)
        shape = load_shape(path)
        K_true = shape.K
        mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
        return finish(mesh, K_true, self.size, views, {"load": time.perf_counter() - t0}, t0, "ground truth")


class FolderExpert:
    """Precomputed reconstructions in a folder, the seed's MOHO naming: renders `{id}_0_obman_test_rgb_{id}.jpg.png`
    (or `{id}.png`), meshes `{id}.glb|.obj|.ply|.off` (camera frame) when present. reconstruct() takes a sample id
    or a photo path whose file stem is the id."""

    RENDER_PATTERNS = ("{id}_0_obman_test_rgb_{id}.jpg.png", "{id}_0_*_rgb_{id}.jpg.png", "{id}.png")
    MESH_SUFFIXES = (".glb", ".obj", ".ply", ".off")

    thread_safe = True  # reconstruct() only reads files: callers may run it in threads

    def __init__(self, folder: str | Path, size: int = 256, K: np.ndarray | None = None):
        self.folder, self.size = Path(folder), size
        self.K = None if K is None else np.asarray(K, np.float32)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such folder of precomputed renders")
        self._names: list[str] | None = None  # the folder's file names, listed once (and again when it changes)
        self._listed_at = None

    def _listing(self) -> list[str]:
        mtime = self.folder.stat().st_mtime_ns
        if self._names is None or mtime != self._listed_at:
            self._names, self._listed_at = sorted(os.listdir(self.folder)), mtime
        return self._names

    def find_render(self, sid: str) -> Path | None:
        """The render of sample `sid`: the first pattern of RENDER_PATTERNS that names a file (exact names are
        checked directly; the wildcard one against the folder's listing, read once, not once per id)."""
        for pattern in self.RENDER_PATTERNS:
            name = pattern.format(id=sid)
            if "*" not in name:
                if (self.folder / name).is_file():
                    return self.folder / name
                continue
            prefix = name.split("*", 1)[0]
            names = self._listing()
            start = bisect.bisect_left(names, prefix)
            for candidate in itertools.islice(names, start, None):
                if not candidate.startswith(prefix):
                    break
                if fnmatch.fnmatchcase(candidate, name) and (self.folder / candidate).is_file():
                    return self.folder / candidate
        return None

    def find_mesh(self, sid: str) -> Path | None:
        for suffix in self.MESH_SUFFIXES:
            if (self.folder / f"{sid}{suffix}").is_file():
                return self.folder / f"{sid}{suffix}"
        return None

    def reconstruct(self, image_or_id, K=None, views: bool = False) -> Reconstruction:
        t0 = time.perf_counter()
        sid = Path(str(image_or_id)).name.split(".")[0]
        render_path, mesh_path = self.find_render(sid), self.find_mesh(sid)
        mesh = None
        if mesh_path is not None:
            try:
                mesh = checked_mesh(trimesh.load(mesh_path, force="mesh", process=True))
            except Exception as err:  # noqa: BLE001 - a broken file is reported, not raised
                return nothing_reconstructed(f"{mesh_path}: unreadable mesh ({err})", self.size)
        if render_path is None:
            K = K if K is not None else self.K
            if mesh is None or K is None:
                return nothing_reconstructed(f"{self.folder}: no render or mesh for id {sid}", self.size)
            return finish(mesh, K, self.size, views, {}, t0, f"mesh {mesh_path.name}")
        render = as_rgb_array(render_path, self.size)
        if not render.any():
            return nothing_reconstructed(f"{render_path}: the render is empty", self.size)
        strip = render_views(mesh, K if K is not None else self.K) if views and mesh is not None and \
            (K is not None or self.K is not None) else None
        return Reconstruction(True, f"precomputed {render_path.name}", mesh, render, strip,
                              None if K is None else np.asarray(K, np.float32),
                              {"total": time.perf_counter() - t0})
