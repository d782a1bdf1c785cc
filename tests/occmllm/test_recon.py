"""Tests for occmllm.recon: the learned expert trains, GLB files face the right way, the oracle and folder experts
find their files, and bad input gives "nothing reconstructed" instead of a crash.

    pytest tests/occmllm/test_recon.py -x -q
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from occmllm.images import as_rgb_array
from occmllm.recon import NOTHING, FolderExpert, LearnedExpert, OracleExpert, Reconstruction
from occmllm.recon.experts import SHIPPED, WEIGHTS, weights_folder
from occmllm.recon.geometry import FrustumBox, frustum_to_camera, mesh_from_grid, voxelize
from occmllm.recon.model import OccupancyNet, OccupancyNetConfig
from occmllm.recon.scores import compare_meshes
from occmllm.recon.train import ExpertTrainConfig, train_expert
from occmllm.render import render_object

K = np.array([[280.0, 0, 128], [0, 280.0, 128], [0, 0, 1]], dtype=np.float32)
TINY = OccupancyNetConfig(n_xy=16, n_depth=16, crop=32, box_input=64, width=8)


def random_object(rng: np.random.Generator) -> trimesh.Trimesh:
    """A box or a cylinder, turned at random, 0.4-0.6 m in front of the camera."""
    if rng.random() < 0.5:
        mesh = trimesh.creation.box(extents=rng.uniform(0.04, 0.12, 3))
    else:
        mesh = trimesh.creation.cylinder(radius=rng.uniform(0.02, 0.05), height=rng.uniform(0.06, 0.15), sections=24)
    mesh.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
    mesh.apply_translation([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.4, 0.6)])
    return mesh


def write_dataset(root, n: int = 12, split: str = "train", seed: int = 0):
    """A tiny dataset in the synthetic layout: photo = the object over noise with a skin-coloured block ("hand")
    covering part of it; renders/{id}.png = the object alone; shapes/{id}.npz = mesh + K."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "renders", "shapes"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sid = f"{i:08d}"
        mesh = random_object(rng)
        render = render_object(mesh.vertices, mesh.faces, K)
        photo = rng.integers(0, 90, (256, 256, 3)).astype(np.uint8)
        photo[render.any(2)] = render[render.any(2)]
        ys, xs = np.nonzero(render.any(2))
        y0, x0 = int(ys.mean()), int(xs.mean())
        photo[y0:y0 + 40, x0 - 30:x0 + 30] = (224, 172, 140)
        Image.fromarray(photo).save(root / split / "images" / f"{sid}.jpg")
        Image.fromarray(render).save(root / split / "renders" / f"{sid}.png")
        np.savez(root / split / "shapes" / f"{sid}.npz", vertices=mesh.vertices.astype(np.float32),
                 faces=mesh.faces.astype(np.int32), K=K)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"))


def test_training_lowers_the_loss_and_changes_every_parameter(dataset, tmp_path):
    import csv

    torch.manual_seed(0)
    before = {k: v.clone() for k, v in OccupancyNet(TINY).state_dict().items()}
    out = train_expert(dataset, tmp_path / "run", ExpertTrainConfig(steps=30, batch_size=8, lr=3e-3, network=TINY,
                                                                      progress=False, save_every=15, workers=1))
    rows = list(csv.DictReader(open(out / "loss.csv")))
    assert len(rows) == 30
    first = np.mean([float(r["bce"]) for r in rows[:5]])
    last = np.mean([float(r["bce"]) for r in rows[-5:]])
    assert last < first * 0.9, (first, last)
    after = OccupancyNet.from_pretrained(out).state_dict()
    unchanged = [k for k, v in after.items() if v.is_floating_point() and "running" not in k
                 and torch.equal(v, before[k])]
    assert not unchanged, unchanged
    # resuming continues from the checkpoint instead of starting again
    train_expert(dataset, out, ExpertTrainConfig(steps=35, batch_size=8, lr=3e-3, network=TINY, progress=False,
                                                 workers=1))
    assert len(list(csv.DictReader(open(out / "loss.csv")))) == 35

    expert = LearnedExpert(out, threshold=0.3, min_objectness=0.0)
    rec = expert.reconstruct(dataset / "train" / "images" / "00000000.jpg")
    assert isinstance(rec, Reconstruction)
    if rec.ok:  # a 30-step model may or may not find a surface; either way the result is well-formed
        assert rec.render.shape == (256, 256, 3) and rec.render.dtype == np.uint8 and rec.glb
    else:
        assert rec.message.startswith(NOTHING) and rec.glb is None


def test_half_precision_weights_are_half_the_file_and_the_same_predictions(tmp_path):
    """save_pretrained(half=True), as the shipped experts are stored: half the bytes, float32 again after loading,
    and the same occupancy to float16's precision; a weight beyond float16's range is refused, not stored as inf."""
    torch.manual_seed(0)
    model = OccupancyNet(TINY).eval()
    full, half = model.save_pretrained(tmp_path / "full"), model.save_pretrained(tmp_path / "half", half=True)
    size = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(full)
    loaded = OccupancyNet.from_pretrained(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 3, TINY.image_size, TINY.image_size)
    with torch.no_grad():
        a, b = model(x)["occupancy"].sigmoid(), loaded(x)["occupancy"].sigmoid()
    assert torch.allclose(a, b, atol=5e-3) and not torch.equal(a, b)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6
    with pytest.raises(ValueError, match="float16"):
        model.save_pretrained(tmp_path / "bad", half=True)


def test_the_cpu_expert_runs_channels_last_with_the_same_predictions(tmp_path):
    """LearnedExpert on a CPU keeps its network's weights channels-last (faster convolutions there): the occupancy,
    window and objectness are those of the network as saved, for a photo and its mirror image averaged."""
    torch.manual_seed(0)
    model = OccupancyNet(TINY).eval()
    for module in model.modules():  # BatchNorm statistics away from (0, 1), so that the layout matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    folder = model.save_pretrained(tmp_path / "expert")
    expert = LearnedExpert(folder, min_objectness=0.0)
    assert next(expert.model.shape_net.parameters()).is_contiguous(memory_format=torch.channels_last)
    photo = (np.random.default_rng(0).random((TINY.image_size, TINY.image_size, 3)) * 255).astype(np.uint8)
    box, prob, objectness, _ = expert.predict(photo)
    expert.model = OccupancyNet.from_pretrained(folder)  # the same weights, the default layout
    box0, prob0, objectness0, _ = expert.predict(photo)
    assert np.abs(prob - prob0).max() < 1e-4 and abs(objectness - objectness0) < 1e-5
    assert abs(box.u0 - box0.u0) < 1e-3 and abs(box.r - box0.r) < 1e-3


def test_a_trained_expert_widens_to_the_same_function_and_trains_on(dataset, tmp_path):
    from dataclasses import replace

    from occmllm.recon.model import widened

    torch.manual_seed(1)
    narrow = OccupancyNet(TINY)
    for module in narrow.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    narrow.eval()
    wide = widened(narrow, 12).eval()
    assert wide.config.width == 12 and sum(p.numel() for p in wide.parameters()) > 1.5 * sum(
        p.numel() for p in narrow.parameters())
    x = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    for key in ("occupancy", "raw"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="narrow"):
        widened(wide, 8)
    # --init with a larger width: training goes on from the widened expert and saves the new width
    narrow.save_pretrained(tmp_path / "narrow")
    settings = ExpertTrainConfig(steps=3, batch_size=4, network=replace(TINY, width=12), progress=False, workers=1,
                                 init=tmp_path / "narrow")
    out = train_expert(dataset, tmp_path / "wide", settings)
    trained = OccupancyNet.from_pretrained(out)
    assert trained.config.width == 12 and trained.config.n_xy == TINY.n_xy
    assert not torch.equal(trained.state_dict()["shape_net.head.weight"], wide.state_dict()["shape_net.head.weight"])


def test_training_under_torchrun_keeps_the_processes_in_step(dataset, tmp_path):
    """Two processes (DDP over gloo on the CPU): they draw different batches, end at the same step with the same
    weights (train_expert checks and raises otherwise), and rank 0 alone writes the log and the model, which then
    differs from the weights it started from."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", "-m", "occmllm.recon.train", "--data", str(dataset), "--out",
                             str(out), "--tiny", "--steps", "30", "--batch-size", "4", "--eval-every", "0",
                             "--workers", "1", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.count("saved the 3D expert to") == 1  # rank 0 only
    rows = list(csv.DictReader(open(out / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))  # one log, one row a step
    trained = OccupancyNet.from_pretrained(out)
    torch.manual_seed(0)
    start = OccupancyNet(trained.config)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), start.state_dict().values())
               if a.is_floating_point())
    # without DDP's gradient averaging the copies drift apart (so the processes drew different batches) and the
    # final check stops the run instead of saving one process's weights as if they were everybody's
    unsynced = tmp_path / "unsynced.py"
    unsynced.write_text("import sys, torch.nn.parallel\n"
                        "torch.nn.parallel.DistributedDataParallel = lambda module, **kwargs: module\n"
                        "from occmllm.recon.train import main\nmain(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", str(unsynced), "--data", str(dataset), "--out",
                             str(tmp_path / "unsynced"), "--tiny", "--steps", "10", "--batch-size", "4",
                             "--eval-every", "0", "--workers", "1", "--quiet"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "processes ended with different weights" in result.stdout + result.stderr


def test_ground_truth_cache_is_incremental_and_matches_in_parallel(dataset, tmp_path, monkeypatch):
    import occmllm.recon.data as recon_data

    first = recon_data.prepare_cache(dataset, "train", tmp_path / "a", workers=1, limit=5, progress=False)
    assert len(first["ids"]) == 5 and (tmp_path / "a" / "gt_train" / "shard_00000.npz").is_file()
    computed = []
    original = recon_data._prepare_chunk
    monkeypatch.setattr(recon_data, "_prepare_chunk", lambda paths: computed.extend(paths) or original(paths))
    grown = recon_data.prepare_cache(dataset, "train", tmp_path / "a", workers=1, progress=False)
    assert len(grown["ids"]) == 12 and len(computed) == 7  # only the 7 samples the cache did not have
    monkeypatch.setattr(recon_data, "_prepare_chunk", original)
    parallel = recon_data.prepare_cache(dataset, "train", tmp_path / "b", workers=2, progress=False)
    for name in ("extent", "solid", "surface", "lo", "side"):
        np.testing.assert_array_equal(grown[name], parallel[name])
    # the target is 1 inside the object, 1/2 on its surface cells, 0 far outside
    data = recon_data.DeviceDataset(dataset, "train", TINY, tmp_path / "b", workers=1, progress=False)
    index = torch.arange(4)
    target = data.targets_at(index, data.windows[index], data.K[index])
    assert target.shape == (4, TINY.n_depth, TINY.n_xy, TINY.n_xy)
    assert target.max() > 0.99 and target.min() == 0 and ((target > 0.3) & (target < 0.7)).any()
    # thin-part targets only ever raise a cell's target (surface cells of thin parts 1/2 -> 1)
    thin = recon_data.DeviceDataset(dataset, "train", TINY, tmp_path / "b", workers=1, progress=False,
                                    thin_targets=True)
    assert (thin.targets_at(index, data.windows[index], data.K[index]) >= target - 1e-6).all()


def test_photos_decode_once_into_a_cache_that_later_loads_map(dataset, tmp_path, monkeypatch):
    import occmllm.recon.data as recon_data

    ids = recon_data.list_ids(dataset, "train")
    direct = np.stack([as_rgb_array(dataset / "train" / "images" / f"{sid}.jpg", 256) for sid in ids])
    parallel = recon_data.load_images(dataset, "train", ids, tmp_path, workers=2, progress=False)
    np.testing.assert_array_equal(parallel, direct)
    assert (tmp_path / "images_train.npy").is_file() and not list(tmp_path.glob("*.partial.npy"))
    decoded = []  # a second load with the same ids (another torchrun process) decodes nothing
    monkeypatch.setattr(recon_data, "_decode_into", lambda task: decoded.append(task) or 0)
    np.testing.assert_array_equal(recon_data.load_images(dataset, "train", ids, tmp_path, 2, False), direct)
    assert decoded == []
    monkeypatch.undo()
    fewer = recon_data.load_images(dataset, "train", ids[:5], tmp_path, 1, False)  # other ids: decoded again
    np.testing.assert_array_equal(fewer, direct[:5])
    # the device dataset holds them channels-first, as decoded
    data = recon_data.DeviceDataset(dataset, "train", TINY, tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(data.images.permute(0, 2, 3, 1).numpy(), direct)


def test_thin_targets_keep_thin_parts_and_leave_thick_ones():
    from occmllm.recon.data import thin_as_inside

    volume = torch.zeros(1, 64, 64, 64, dtype=torch.uint8)
    volume[0, 10:30, 10:30, 10:30] = 1  # a thick block: surface shell 1, inside 2
    volume[0, 11:29, 11:29, 11:29] = 2
    volume[0, 40, 5:60, 5:60] = 1  # a plate one cell thick: surface cells only
    out = thin_as_inside(volume)
    assert (out[0, 40, 5:60, 5:60] == 2).all()  # the plate is now inside: it survives the 0.5 threshold
    assert torch.equal(out[0, :35], volume[0, :35])  # the block keeps its surface at 1/2
    assert out.dtype == volume.dtype and out.shape == volume.shape


def test_glb_is_y_up_centred_and_unit_sized():
    # a tall thin box standing upright in the camera frame: its long side along -y (image up) and its top face
    # (smallest y in OpenCV) marked by a small cap
    body = trimesh.creation.box(extents=(0.04, 0.2, 0.04))
    cap = trimesh.creation.box(extents=(0.02, 0.02, 0.02))
    cap.apply_translation((0, -0.11, 0))
    mesh = trimesh.util.concatenate([body, cap])
    mesh.apply_translation((0.1, 0.05, 0.5))
    rec = Reconstruction(True, "test", mesh, np.zeros((256, 256, 3), np.uint8))
    loaded = trimesh.load(io.BytesIO(rec.glb), file_type="glb", force="mesh")
    lo, hi = loaded.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    assert np.argmax(hi - lo) == 1 and abs((hi - lo).max() - 1.0) < 1e-6  # long axis is Y, 1 unit long
    top = loaded.vertices[loaded.vertices[:, 1] > hi[1] - 1e-6]
    assert np.abs(top[:, 0]).max() < 0.06  # the narrow cap is at +Y (up in the viewer): image-up became Y-up
    assert loaded.is_watertight is not None and loaded.volume > 0  # faces still point outwards


def test_nothing_reconstructed_gives_no_glb(tmp_path):
    assert mesh_from_grid(np.zeros((8, 8, 8)), lambda abc: abc) is None
    rec = Reconstruction(False, f"{NOTHING}: test")
    assert rec.glb is None
    with pytest.raises(ValueError, match=NOTHING):
        rec.save_glb(tmp_path / "x.glb")
    assert not (tmp_path / "x.glb").exists()


def test_mesh_from_grid_lands_on_the_voxelized_object():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    mesh.apply_translation((0.02, -0.01, 0.5))
    box = FrustumBox(u0=139.2, v0=122.4, r=34.0, z=0.5, d=0.1)
    grid = np.zeros((24, 24, 24))
    c, b, a = np.meshgrid(*[(np.arange(24) + 0.5) / 12 - 1] * 3, indexing="ij")
    points = frustum_to_camera(np.stack([a, b, c], -1), box, K)
    grid[np.linalg.norm(points - mesh.centroid, axis=-1) < 0.05] = 1
    rebuilt = mesh_from_grid(grid, lambda abc: frustum_to_camera(abc, box, K))
    scores = compare_meshes(rebuilt, mesh)
    assert scores["iou"] > 0.8 and scores["fscore"] > 0.9, scores
    # faces outward without an orientation check: closed, positive volume, normals pointing away from the centre
    assert rebuilt.is_watertight and rebuilt.volume > 0
    outward = np.einsum("ij,ij->i", rebuilt.face_normals, rebuilt.triangles_center - rebuilt.centroid)
    assert (outward > 0).mean() > 0.99


def test_voxelize_fills_the_inside():
    mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    grid = voxelize(mesh.vertices, mesh.faces, np.array([-0.61] * 3), 1.2 / 24, 24)
    assert 20 ** 3 <= grid.sum() <= 22 ** 3  # the cube's 20^3 cells, plus at most the one-cell shell it crosses
    assert grid[12, 12, 12] and not grid[0, 0, 0]


def test_oracle_reproduces_the_ground_truth_renders(dataset):
    expert = OracleExpert(dataset, "train")
    for sid in ("00000000", "00000003"):
        rec = expert.reconstruct(sid, views=True)
        truth = np.asarray(Image.open(dataset / "train" / "renders" / f"{sid}.png"))
        assert rec.ok and np.abs(rec.render.astype(int) - truth).mean() < 1.0
        assert rec.views.shape == (128, 512, 3) and rec.views.any()
    assert not expert.reconstruct("99999999").ok


def test_folder_expert_finds_the_seed_naming(tmp_path, dataset):
    render = np.asarray(Image.open(dataset / "train" / "renders" / "00000002.png"))
    Image.fromarray(render).save(tmp_path / "00000002_0_obman_test_rgb_00000002.jpg.png")
    mesh = trimesh.Trimesh(**{k: v for k, v in np.load(dataset / "train" / "shapes" / "00000002.npz").items()
                              if k in ("vertices", "faces")})
    mesh.export(tmp_path / "00000002.ply")
    expert = FolderExpert(tmp_path)
    rec = expert.reconstruct("/some/photos/00000002.jpg")
    assert rec.ok and np.array_equal(rec.render, render) and rec.mesh is not None and rec.glb
    missing = expert.reconstruct("00000005")
    assert not missing.ok and missing.message.startswith(NOTHING) and missing.glb is None


@pytest.mark.parametrize("name", [None, *SHIPPED])
def test_bad_input_gives_nothing_reconstructed(name):
    if not (weights_folder(name) / "model.safetensors").is_file():
        pytest.skip("no shipped weights")
    expert = LearnedExpert(name)
    rng = np.random.default_rng(0)
    blank = np.full((256, 256, 3), 128, np.uint8)
    t = np.linspace(0, 1, 256)[None, :, None]
    no_object = (np.array([40, 90, 160]) * (1 - t) + np.array([200, 180, 120]) * t
                 + rng.normal(0, 3, (256, 256, 3))).clip(0, 255).astype(np.uint8)
    for image in (blank, no_object, np.zeros((256, 256, 3), np.uint8)):
        rec = expert.reconstruct(image, views=True)
        assert not rec.ok and rec.message.startswith(NOTHING) and rec.glb is None and rec.mesh is None
        assert rec.render.shape == (256, 256, 3) and not rec.render.any()
    assert not expert.reconstruct(np.zeros((3, 4))).ok  # not an image: a message, not a traceback


def test_shipped_experts_load_by_name_and_folders_win(tmp_path, monkeypatch):
    """`learned:v5` (app, CLI) loads the wider shipped expert, `learned` the default one; a folder of that name in the
    working directory is taken as the folder it is."""
    from occmllm.recon import expert_from_spec

    assert weights_folder(None) == WEIGHTS == SHIPPED["g2"]  # the expert the shipped default model reads
    assert expert_from_spec("learned").config.width == 48
    assert expert_from_spec("learned:v4").config.width == 32
    assert expert_from_spec("learned:v5").config.width == 48
    assert LearnedExpert("v5").config.width == 48
    assert expert_from_spec("learned:g2").config.width == 48
    own = OccupancyNet(TINY)
    own.save_pretrained(tmp_path / "v5")
    monkeypatch.chdir(tmp_path)
    assert weights_folder("v5") == Path("v5") and LearnedExpert("v5").config.width == TINY.width
    with pytest.raises(FileNotFoundError, match="no shipped expert of that name .shipped: v4, v5, g2, g4"):
        expert_from_spec("learned:v9")


def test_shipped_expert_names_are_read_without_torch_and_match_the_folders():
    """The --help texts and the app's menu name the shipped experts from occmllm.shipped, which imports no torch (a
    --help stays fast), and every name there is a loadable expert folder; `learned` is the first menu entry."""
    import subprocess
    import sys

    from occmllm.shipped import DEFAULT_EXPERT, EXPERT_CHOICES, EXPERTS, LEARNED_HELP

    code = "import sys, occmllm.shipped; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert EXPERTS == SHIPPED and WEIGHTS == EXPERTS[DEFAULT_EXPERT]
    for folder in EXPERTS.values():
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert EXPERT_CHOICES[0] == "learned" and EXPERT_CHOICES[-1] == "none"
    assert {f"learned:{name}" for name in EXPERTS} - set(EXPERT_CHOICES) == {f"learned:{DEFAULT_EXPERT}"}
    assert all(name in LEARNED_HELP for name in EXPERTS) and f"shipped {DEFAULT_EXPERT} expert" in LEARNED_HELP


def test_zoomed_photos_keep_the_3d_targets_aligned(dataset, tmp_path):
    """The photo zoom/shift augmentation only changes the intrinsics: the object's outline in the zoomed photo
    still matches the outline of the 3D occupancy targets, and the box net's depth target maps back to metres."""
    import torch.nn.functional as F

    import occmllm.recon.data as recon_data

    config = OccupancyNetConfig(n_xy=32, n_depth=32, crop=64, box_input=64, width=8, z_per_focal=True)
    data = recon_data.DeviceDataset(dataset, "train", config, tmp_path, workers=1, progress=False)
    renders = np.stack([np.asarray(Image.open(dataset / "train" / "renders" / f"{sid}.png")) for sid in data.ids])
    data.images = torch.from_numpy(renders).permute(0, 3, 1, 2).contiguous()  # the object alone, as the photo
    model = OccupancyNet(config)
    generator = torch.Generator().manual_seed(0)
    overlap = {}
    for zoom, shift in ((0.0, 0.0), (0.3, 0.12)):
        batch = data.batch(torch.arange(12), generator, zoom=zoom, shift=shift, jitter=0.0)
        seen = model.crop(batch["images"].float().amax(1, keepdim=True), batch["u0"], batch["v0"], batch["r"])
        seen = F.avg_pool2d(seen, 2)[:, 0] > 20
        solid = (batch["occupancy"] > 0.3).any(1)
        overlap[zoom] = float(((seen & solid).sum((1, 2)) / (seen | solid).sum((1, 2))).mean())
        metres = model.depth_of(batch["box"][:, 3], batch["K"][:, 0, 0])
        torch.testing.assert_close(metres, batch["z"])
    assert overlap[0.0] > 0.75 and overlap[0.3] > overlap[0.0] - 0.05, overlap
    assert not torch.equal(batch["K"], data.K[:12])  # the zoom did change the intrinsics
