"""data_tools.synth: determinism, labels that agree with the masks, valid seed-format files, occlusion, resume, and
clear messages for bad input. Tens of samples, a few seconds each."""

import errno
import filecmp
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_tools import validate
from data_tools.synth import __main__ as synth
from occmllm.synth import writer
from occmllm.synth.scene import make_sample
from occmllm import formats
from occmllm.contact_sheet import LABEL_H
from occmllm.dataset import SynthDataset
from occmllm.prompts import CLASSES, identify_answer, parse_object
from occmllm.render import project, render_object

N, SEED = 16, 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    assert synth.main(["--out", str(out), "--n", str(N), "--seed", str(SEED), "--workers", "2",
                       "--split-test", "0.3"]) == 0
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".synth" not in p.parts)


def test_same_seed_same_bytes_with_one_or_two_workers(dataset, tmp_path):
    again = tmp_path / "again"
    assert synth.main(["--out", str(again), "--n", str(N), "--seed", str(SEED), "--workers", "1",
                       "--split-test", "0.3"]) == 0
    files = _files(dataset)
    assert files == _files(again)
    assert len([f for f in files if f.suffix == ".npz"]) == N
    mismatch = [f for f in files if not filecmp.cmp(dataset / f, again / f, shallow=False)]
    assert mismatch == []
    other = tmp_path / "other_seed"
    synth.main(["--out", str(other), "--n", "2", "--seed", str(SEED + 1), "--workers", "1", "--split-test", "0.3"])
    first = sorted((other / "train" / "images").glob("*.jpg")) + sorted((other / "test" / "images").glob("*.jpg"))
    assert (dataset / first[0].relative_to(other)).read_bytes() != first[0].read_bytes()


def test_labels_agree_with_masks_and_mesh(dataset):
    total = 0
    for split in writer.SPLITS:
        ds = SynthDataset(dataset, split)
        total += len(ds)
        for row in ds.manifest.to_dict("records"):
            amodal, visible = ds.load_masks(row["id"])
            assert not (visible & ~amodal).any()
            assert amodal.sum() == row["amodal_pixels"] > 0
            assert row["visible_fraction"] == pytest.approx(visible.sum() / amodal.sum(), abs=1e-6)
            assert row["clear"] == (row["visible_fraction"] >= 0.5)
            assert row["class"] in CLASSES and row["split"] == split
            # the object render is grey on black exactly where the amodal mask is
            render = ds.load_render(row["id"])
            assert ((render.max(-1) > 0) == amodal).mean() > 0.995
            assert np.abs(render.astype(int) - render.mean(-1, keepdims=True)).max() <= 1
            shape = ds.load_shape(row["id"])
            assert shape.occupancy.shape == (32, 32, 32) and shape.occupancy.any()
            assert shape.labels["id"] == row["id"]
            uv = project(shape.vertices, shape.K)
            assert uv.min() > -20 and uv.max() < 276  # the object is in view
            # occupied cells project into the amodal mask
            cells = shape.cell_centres()[shape.occupancy]
            px = np.clip(project(cells, shape.K).astype(int), 0, 255)
            assert amodal[px[:, 1], px[:, 0]].mean() > 0.95
    assert total == N


def test_render_object_reproduces_the_stored_render(dataset):
    ds = SynthDataset(dataset, "train")
    sid = ds.ids[0]
    shape = ds.load_shape(sid)
    again = render_object(shape.vertices, shape.faces, shape.K)
    assert np.abs(again.astype(int) - ds.load_render(sid).astype(int)).max() <= 1


def test_every_written_file_validates(dataset):
    report = validate.validate([dataset / "meta.json"])
    assert report.errors == []
    meta = formats.read_meta(dataset / "meta.json")
    assert set(meta) == {f"{s}_{k}" for s in writer.SPLITS
                         for k in ("Q1", "Q1_Q6", "Q1_Q6_balanced_dpo", "Q1_Q6_Q0_balanced", "attributes")}
    test = pd.read_parquet(dataset / "test" / "manifest.parquet").set_index("id")
    for conv in formats.read_conversations(dataset / "test_Q1_Q6.jsonl"):
        assert conv.turns("gpt")[0] == identify_answer(test.at[conv.id, "class"])
        assert conv.turns("gpt")[1] == ("Yes." if test.at[conv.id, "clear"] else "No.")
    pairs = formats.read_preferences(dataset / "train_Q1_Q6_balanced_dpo.jsonl")
    assert sum(p.chosen == "Yes." for p in pairs) == sum(p.chosen == "No." for p in pairs)
    attrs = formats.read_conversations(dataset / "train_attributes.jsonl")
    train = pd.read_parquet(dataset / "train" / "manifest.parquet").set_index("id")
    for conv in attrs:
        assert conv.turns("gpt") == [("Yes" if train.at[conv.id, a] else "No") for a in ("round", "thin", "long")]


def test_hand_hides_the_object_in_the_expected_share():
    fractions = np.array([make_sample(1, i).labels["visible_fraction"] for i in range(48)])
    assert (fractions < 0.999).mean() > 0.8  # the hand covers part of nearly every object
    assert 0.25 <= (fractions < 0.5).mean() <= 0.75  # and more than half of it in a good share
    assert (fractions > 0.7).mean() >= 0.15  # but some are clearly visible


def test_attributes_follow_the_written_rule():
    by_class = {}
    for i in range(40):
        s = make_sample(3, i, cls=CLASSES[i % 8])
        by_class.setdefault(s.cls, []).append(s.labels)
    for labels in by_class["can"] + by_class["bottle"] + by_class["jar"] + by_class["bowl"]:
        assert labels["round"]
    for labels in by_class["cellphone"] + by_class["knife"] + by_class["remote"] + by_class["camera"]:
        assert not labels["round"]
    for labels in by_class["knife"] + by_class["cellphone"]:
        assert labels["thin"]
    for labels in sum(by_class.values(), []):
        assert labels["thin"] == (labels["thickness"] <= 0.2 * labels["length"])
        assert labels["long"] == (labels["length"] >= 2.0 * labels["width"])


def test_resume_redoes_only_unfinished_samples(dataset, tmp_path, capsys):
    out = tmp_path / "resume"
    assert synth.main(["--out", str(out), "--n", "6", "--seed", str(SEED), "--workers", "1",
                       "--split-test", "0.3"]) == 0
    # simulate a run killed while writing sample 3: its shape file is missing, a temp file and a stale image remain
    split = "test" if (out / "test" / "shapes" / "00000003.npz").exists() else "train"
    (out / split / "shapes" / "00000003.npz").unlink()
    (out / split / "images" / "00000003.jpg").write_bytes(b"half a jpeg")
    (out / split / "shapes" / ".00000003.npz.999.tmp").write_bytes(b"partial")
    with open(out / ".synth" / "rows.jsonl", "a") as log:  # and the run's label log ends in a torn line
        log.write('{"id": "00000003", "spl')
    before = (out / split / "images" / "00000001.jpg").stat().st_mtime_ns if (out / split / "images" /
                                                                             "00000001.jpg").exists() else None
    assert synth.main(["--out", str(out), "--n", str(N), "--seed", str(SEED), "--workers", "1",
                       "--split-test", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "resuming: 5 of 16" in printed and "removed 1 partial" in printed
    assert not list(out.rglob("*.tmp"))
    files = _files(dataset)
    assert files == _files(out)
    assert all(filecmp.cmp(dataset / f, out / f, shallow=False) for f in files)
    if before is not None:
        assert (out / split / "images" / "00000001.jpg").stat().st_mtime_ns == before
    # resuming with other settings is refused
    assert synth.main(["--out", str(out), "--n", str(N), "--seed", "9"]) == 2
    assert "--seed 5 (now 9)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--n", "5", "--workers", "0"], "--workers must be at least 1"),
    (["--n", "5", "--split-test", "1.5"], "--split-test must be in [0, 1)"),
    (["--n", "5", "--clear-threshold", "0"], "--clear-threshold must be in (0, 1]"),
    (["--n", "five"], "invalid int value"),
])
def test_bad_flags_are_explained(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth.main(["--out", str(tmp_path / "x"), *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_folder_and_full_disk(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert synth.main(["--out", str(blocker / "data"), "--n", "2", "--workers", "1"]) == 2
    assert "cannot write here" in capsys.readouterr().err

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(writer, "_atomic_bytes", full)
    out = tmp_path / "full"
    assert synth.main(["--out", str(out), "--n", "2", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "re-run the same command to resume" in err
    assert not list(out.rglob("*.npz")) and not (out / "meta.json").exists()


def test_interrupt_keeps_complete_samples(tmp_path, capsys, monkeypatch):
    calls = []
    real = writer.write_sample

    def interrupted(root, split, sample):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(sample.index)
        return real(root, split, sample)

    monkeypatch.setattr(writer, "write_sample", interrupted)
    out = tmp_path / "ctrl_c"
    assert synth.main(["--out", str(out), "--n", "5", "--workers", "1"]) == 130
    assert "re-run the same command to resume" in capsys.readouterr().err
    assert len(list(out.rglob("*.npz"))) == 2 and not (out / "meta.json").exists()


def test_preview_puts_each_experts_render_beside_the_truth(dataset, tmp_path, capsys):
    """--experts: a panel per expert after photo | render | masks, the same object seen as the ground truth's render
    (its pixels overlap the true render's); --object-class keeps that class only; an absent class is a clear error."""
    from data_tools import preview
    from occmllm.dataset import SynthDataset

    ds = SynthDataset(dataset, "train")
    cls = ds.manifest["class"].iloc[0]
    n = int((ds.manifest["class"] == cls).sum())
    sheet = tmp_path / "experts.png"
    assert preview.main([str(dataset), "--with-render", "--experts", "v4", "--object-class", cls, "--cols", "1",
                         "--out", str(sheet)]) == 0
    img = np.asarray(Image.open(sheet).convert("RGB"))
    assert img.shape[:2] == (n * (256 + LABEL_H) + (n - 1) * 4, 4 * 256)
    first = ds.manifest[ds.manifest["class"] == cls].sort_values("visible_fraction")["id"].iloc[0]
    truth = ds.load_render(first).any(2)
    expert = img[LABEL_H:LABEL_H + 256, 3 * 256:].astype(int)
    drawn = (expert.max(2) - expert.min(2) < 8) & (expert.max(2) > 20)  # grey object pixels, not the yellow label
    assert (drawn & truth).sum() > 0.3 * drawn.sum() > 0
    assert preview.main([str(dataset), "--object-class", "teapot", "--out", str(tmp_path / "x.png")]) == 2
    assert "no samples of class 'teapot'" in capsys.readouterr().err


def test_preview_and_relabel(dataset, tmp_path, capsys):
    from data_tools import preview, relabel

    sheet = tmp_path / "sheet.png"
    assert preview.main([str(dataset), "--n", "6", "--cols", "3", "--out", str(sheet)]) == 0
    img = Image.open(sheet)
    assert img.size == (3 * 256 + 2 * 4, 2 * (256 + LABEL_H) + 4)

    work = tmp_path / "relabel"
    import shutil

    shutil.copytree(dataset, work)
    test = pd.read_parquet(work / "test" / "manifest.parquet")
    preds = {sid: identify_answer(cls if i % 2 == 0 else ("jar" if cls != "jar" else "can"))
             for i, (sid, cls) in enumerate(zip(test["id"], test["class"]))}
    formats.write_predictions(tmp_path / "preds.json", preds)
    assert relabel.main(["--data", str(work), "--split", "test", "--predictions", str(tmp_path / "preds.json")]) == 0
    after = pd.read_parquet(work / "test" / "manifest.parquet").set_index("id")
    for sid, answer in preds.items():
        assert after.at[sid, "clear"] == (parse_object(answer) == after.at[sid, "class"])
    for conv in formats.read_conversations(work / "test_Q1_Q6.jsonl"):
        assert conv.turns("gpt")[1] == ("Yes." if after.at[conv.id, "clear"] else "No.")
    assert validate.validate([work / "meta.json"]).errors == []
    # a prediction file that misses ids is refused unless told what to do
    del preds[next(iter(preds))]
    formats.write_predictions(tmp_path / "some.json", preds)
    assert relabel.main(["--data", str(work), "--split", "test", "--predictions", str(tmp_path / "some.json")]) == 2
    assert "have no prediction" in capsys.readouterr().err


def test_routing_threshold_routes_the_least_sure_photos_where_the_render_helps():
    import math

    from occmllm.relabel import routing_threshold

    confidence = [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    photo = [False, False, True, True, True, True]
    render = [True, True, False, True, False, False]
    # route the 2 least sure: 2 + 4 right of 6 (routing 4 gives 3 + 2)
    assert routing_threshold(confidence, photo, render) == (0.3, 2, 1.0)
    assert routing_threshold(confidence, photo, render, max_unclear=1 / 6) == (0.2, 1, 5 / 6)
    threshold, routed, accuracy = routing_threshold(confidence, [True] * 6, [False] * 6)  # the render never helps
    assert (threshold, routed, accuracy) == (-math.inf, 0, 1.0)
    threshold, routed, _ = routing_threshold([0.1, 0.5, 0.5, 0.9], [False, False, True, True], [True, True, False, True])
    assert (threshold, routed) == (0.5, 1)  # a tie at 0.5 is not split: neither of the two is routed
