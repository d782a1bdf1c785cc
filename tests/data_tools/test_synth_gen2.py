"""data_tools.synth generation 2 (the default): every output with sane labels, determinism over --workers, resume,
generation 1 unchanged and still reachable, the warning when no background photo package is installed, and photos
that differ from generation 1's in the ways generation 2 promises (coloured products, varied shapes, photo and room
backgrounds). Tens of samples, seconds each."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_tools import validate
from data_tools.synth import __main__ as synth
from occmllm.synth import writer
from occmllm.synth.gen2 import photos
from occmllm import formats
from occmllm.dataset import SynthDataset
from occmllm.prompts import CLASSES
from occmllm.render import Light, Part, project, render_scene

N, SEED = 16, 11
ARGS = ["--n", str(N), "--seed", str(SEED), "--split-test", "0.3"]


@pytest.fixture(scope="module")
def gen2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen2") / "data"
    assert synth.main(["--out", str(out), *ARGS, "--workers", "2"]) == 0
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".synth" not in p.parts)


def _same(a: Path, b: Path) -> list[Path]:
    files = _files(a)
    assert files == _files(b)
    return [f for f in files if not filecmp.cmp(a / f, b / f, shallow=False)]


def test_generation_2_is_the_default_and_meta_records_it(gen2):
    meta = json.loads((gen2 / "meta.json").read_text())
    assert meta and all(entry["generation"] == 2 for entry in meta.values())
    assert validate.validate([gen2 / "meta.json"]).errors == []
    rows = pd.concat([pd.read_parquet(gen2 / s / "manifest.parquet") for s in writer.SPLITS])
    assert len(rows) == N and (rows["generation"] == 2).all()
    assert rows["variant"].str.split(":").str[0].eq(rows["class"]).all()  # a variant of its own class


def test_labels_agree_with_masks_and_occupancy_lies_in_its_bounds(gen2):
    for split in writer.SPLITS:
        ds = SynthDataset(gen2, split)
        for row in ds.manifest.to_dict("records"):
            amodal, visible = ds.load_masks(row["id"])
            assert not (visible & ~amodal).any()
            assert amodal.sum() == row["amodal_pixels"] > 0
            assert row["visible_fraction"] == pytest.approx(visible.sum() / amodal.sum(), abs=1e-6)
            assert row["visible_fraction"] >= 0.0 and row["clear"] == (row["visible_fraction"] >= 0.5)
            shape = ds.load_shape(row["id"])
            assert shape.occupancy.shape == (32, 32, 32) and shape.occupancy.any()
            lo, hi = shape.bounds
            assert (shape.vertices >= lo - 1e-5).all() and (shape.vertices <= hi + 1e-5).all()
            cells = shape.cell_centres()[shape.occupancy]
            px = np.clip(project(cells, shape.K).astype(int), 0, 255)
            assert amodal[px[:, 1], px[:, 0]].mean() > 0.95
            render = ds.load_render(row["id"])  # the object alone stays grey on black, as the 3D expert expects
            assert ((render.max(-1) > 0) == amodal).mean() > 0.995
    for conv in formats.read_conversations(gen2 / "train_Q1.jsonl"):
        assert conv.turns("gpt")


def test_same_bytes_with_one_worker_and_after_resume(gen2, tmp_path, capsys):
    again = tmp_path / "again"
    assert synth.main(["--out", str(again), *ARGS, "--workers", "1"]) == 0
    assert _same(gen2, again) == []
    # resume: a run killed while writing sample 2 left no shape file and a torn image; the rerun redoes only it
    split = "test" if (again / "test" / "shapes" / "00000002.npz").exists() else "train"
    (again / split / "shapes" / "00000002.npz").unlink()
    (again / split / "images" / "00000002.jpg").write_bytes(b"torn")
    capsys.readouterr()
    assert synth.main(["--out", str(again), *ARGS, "--workers", "2"]) == 0
    assert f"resuming: {N - 1} of {N}" in capsys.readouterr().out
    assert _same(gen2, again) == []
    # a folder of one generation is not resumed as the other
    assert synth.main(["--out", str(again), *ARGS, "--generation", "1"]) == 2
    assert "--generation 2 (now 1)" in capsys.readouterr().err


def test_generation_1_is_reachable_and_unchanged(tmp_path):
    from occmllm.synth.scene import is_test, make_sample

    out = tmp_path / "g1"
    assert synth.main(["--out", str(out), "--n", "4", "--seed", "3", "--generation", "1", "--workers", "1"]) == 0
    assert all(e["generation"] == 1 for e in json.loads((out / "meta.json").read_text()).values())
    ref = tmp_path / "ref"
    writer.make_dirs(ref)
    for i in range(4):  # the first generation's own functions, called directly, give the same files
        split = "test" if is_test(3, i, 0.1) else "train"
        writer.write_sample(ref, split, make_sample(3, i))
        for kind in writer.KINDS:
            a, b = writer.sample_path(out, split, kind, f"{i:08d}"), writer.sample_path(ref, split, kind, f"{i:08d}")
            assert a.read_bytes() == b.read_bytes()
    assert "generation" not in pd.read_parquet(out / "train" / "manifest.parquet").columns


def test_missing_background_photos_warn_once_and_fall_back_to_rooms(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(photos.ENV, str(tmp_path / "no-such-folder" / "*.jpg"))
    out = tmp_path / "rooms"
    assert synth.main(["--out", str(out), "--n", "6", "--seed", "2", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: no real background photos found") == 1 and "apt-get install mate-backgrounds" in err
    rows = pd.concat([pd.read_parquet(out / s / "manifest.parquet") for s in writer.SPLITS])
    assert (rows["background"] == "room").all()


@pytest.mark.skipif(not photos.available(), reason="mate-backgrounds is not installed")
def test_generation_2_looks_different_from_generation_1():
    """Coloured products (generation 1's objects are grey), several shape variants per class, photo and room
    backgrounds, both framings."""
    from occmllm.synth.gen2.scene import make_sample as make2
    from occmllm.synth.scene import make_sample as make1

    def colourfulness(sample):
        px = sample.photo[sample.visible & (sample.render.max(-1) > 0)].astype(float)
        return float((px.max(1) - px.min(1)).mean())

    s2 = [make2(4, i, cls=CLASSES[i % 8]) for i in range(32)]
    s1 = [make1(4, i, cls=CLASSES[i % 8]) for i in range(16)]
    assert np.median([colourfulness(s) for s in s2]) > 2 * np.median([colourfulness(s) for s in s1])
    variants = {s.labels["variant"] for s in s2}
    assert len(variants) >= 14
    backgrounds = {s.labels["background"].split(":")[0] for s in s2}
    assert backgrounds == {"photo", "room"}
    assert {s.labels["framing"] for s in s2} == {"close", "wide"}


def test_textured_render_shows_the_texture_and_its_highlight():
    v = np.array([[-0.05, -0.05, 0.3], [0.05, -0.05, 0.3], [0.05, 0.05, 0.3], [-0.05, 0.05, 0.3]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    atlas = np.zeros((64, 64, 3), np.uint8)
    atlas[:, :32] = (255, 0, 0)  # left half red, right half blue
    atlas[:, 32:] = (0, 0, 255)
    K = np.array([[300, 0, 64], [0, 300, 64], [0, 0, 1.0]])
    light = [Light((0, 0, 1), 1.0)]
    rgba, depth = render_scene([Part(v, f, (1, 1, 1), uv=uv, texture_rect=(0, 0, 1, 1), specular=0.0)], K, 128,
                               lights=light, ambient=0.0, texture=atlas)
    assert (depth > 0).sum() == 100 * 100
    left, right = rgba[64, 20:60, :3].astype(int), rgba[64, 70:110, :3].astype(int)
    assert (left[:, 0] > 200).all() and (left[:, 2] < 30).all()
    assert (right[:, 2] > 200).all() and (right[:, 0] < 30).all()
    shiny, _ = render_scene([Part(v, f, (1, 1, 1), uv=uv, texture_rect=(0, 0, 1, 1), specular=0.6)], K, 128,
                            lights=light, ambient=0.0, texture=atlas)
    assert shiny[64, 30, 1] > 100 > rgba[64, 30, 1]  # the highlight is added on top of the red print


def test_resuming_with_other_background_photos_is_refused(tmp_path, monkeypatch, capsys):
    """The photo bank decides a generation-2 sample's bytes: a folder is only resumed with the same photos."""
    out = tmp_path / "bank"
    monkeypatch.setenv(photos.ENV, str(tmp_path / "none" / "*.jpg"))
    assert synth.main(["--out", str(out), "--n", "2", "--seed", "1", "--workers", "1"]) == 0
    monkeypatch.setenv(photos.ENV, photos.DEBIAN_PHOTOS["mate-backgrounds"])
    if not photos.available():
        pytest.skip("mate-backgrounds is not installed")
    capsys.readouterr()
    assert synth.main(["--out", str(out), "--n", "4", "--seed", "1", "--workers", "1"]) == 2
    assert "0 background photos (now 12" in capsys.readouterr().err
