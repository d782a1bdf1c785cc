"""occmllm.evaluate end to end on a tiny synthetic test set: files written, metrics consistent, renders found."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from occmllm import metrics, prompts
from occmllm.evaluate import main as evaluate_main
from occmllm.formats import q1_conversation, read_predictions, write_jsonl


@pytest.fixture
def test_set(tmp_path):
    root = tmp_path / "synth" / "test"
    (root / "images").mkdir(parents=True)
    renders = tmp_path / "moho"
    renders.mkdir()
    rng = np.random.default_rng(0)
    records, rows = [], []
    for index in range(7):
        sid = f"{index:08d}"
        cls = prompts.CLASSES[index % len(prompts.CLASSES)]
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(root / "images" / f"{sid}.jpg")
        if index % 2 == 0:  # half the renders exist, named as the seed's MOHO outputs
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(
                renders / f"{sid}_0_obman_test_rgb_{sid}.jpg.png")
        records.append(q1_conversation(sid, f"{sid}.jpg", cls))
        rows.append({"id": sid, "class": cls, "visible_fraction": index / 7, "round": True, "thin": False,
                     "long": index % 2 == 1})
    write_jsonl(tmp_path / "synth" / "test_Q1.jsonl", records)
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return tmp_path / "synth", renders


@pytest.mark.parametrize("family", ["internvl", "qwen2_vl"])
def test_evaluate_writes_consistent_report(tiny_model_dirs, test_set, tmp_path, family):
    synth, renders = test_set
    out = tmp_path / "out"
    code = evaluate_main(["--data", str(synth / "test_Q1.jsonl"), "--images", str(synth / "test" / "images"),
                          "--model", str(tiny_model_dirs[family]), "--renders", str(renders), "--out", str(out),
                          "--batch-size", "3", "--describe"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    predictions = read_predictions(out / "predictions.json")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert report["images"] == 7 == len(predictions) == len(rows) and report["manifest"] is True
    assert sum(b["n"] for b in report["per_visible_fraction"].values()) == 7
    assert set(report["attributes"]) == {"round", "thin", "long"}
    results = [metrics.ImageResult(r["id"], r["label"], r["q1"], r["clarity"], r["render_answer"], r["render_missing"])
               for r in rows]
    assert report["decision"] == metrics.decision(results) and report["acc1"] == metrics.acc1(results)
    for row in rows:  # the Q1-wrong images looked at their render when one exists (odd ids have none)
        if not row["q1_correct"]:
            has_render = int(row["id"]) % 2 == 0
            assert ("answer_render" in row) == has_render and row["render_missing"] == (not has_render)
        # the seed's final predictions: the render's answer after "no", Q1's after "yes", nothing after anything else
        expected = (row.get("answer_render", "") if row["clarity"] == prompts.NO else
                    row["answer_q1"] if row["clarity"] == prompts.YES else "")
        assert predictions[row["id"]] == expected


def test_evaluate_bad_inputs(tiny_model_dirs, test_set, tmp_path, capsys):
    synth, _ = test_set
    (synth / "test" / "images" / "00000001.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    args = ["--data", str(synth / "test_Q1.jsonl"), "--images", str(synth / "test" / "images"), "--out", str(out),
            "--model", str(tiny_model_dirs["llava"])]
    assert evaluate_main(args) == 0  # an unreadable image counts as wrong, the run goes on
    row = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()][1]
    assert "not an image" in row["error"] and row["final_correct"] is False
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    assert evaluate_main(["--data", str(tmp_path / "bad.jsonl"), "--images", str(tmp_path)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err


def test_evaluate_fuse_reports_photo_and_render_read_together(tiny_model_dirs, test_set, tmp_path, capsys):
    """--fuse: every photo goes through the expert; where a render exists the fused class is the argmax of the
    photo's and the render's class probabilities multiplied (checked against VLM.class_posterior directly)."""
    from occmllm.vlm import VLM

    synth, renders = test_set
    out = tmp_path / "out"
    args = ["--data", str(synth / "test_Q1.jsonl"), "--images", str(synth / "test" / "images"),
            "--model", str(tiny_model_dirs["internvl"]), "--out", str(out), "--batch-size", "16"]
    with pytest.raises(SystemExit):
        evaluate_main(args + ["--fuse"])  # no expert: refused before loading anything
    assert "--fuse needs a 3D expert" in capsys.readouterr().err
    assert evaluate_main(args + ["--fuse", "--renders", str(renders)]) == 0
    assert "photo + render fused: Decision" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    vlm = VLM.load(tiny_model_dirs["internvl"])
    for row in rows:
        sid = row["id"]
        render = renders / f"{sid}_0_obman_test_rgb_{sid}.jpg.png"
        if render.is_file():
            p = vlm.class_posterior([Image.open(row["image"]).convert("RGB"), Image.open(render).convert("RGB")])
            assert row["fused"] == prompts.CLASSES[int(np.argmax(np.log(p[0]) + np.log(p[1])))]
        else:
            assert row["fused"] == row["q1"]
    assert report["fused"]["n"] == 7
    assert report["fused"]["decision"] == pytest.approx(np.mean([r["fused"] == r["label"] for r in rows]))
    hidden = [r for r in rows if int(r["id"]) / 7 < 0.4]
    assert report["fused"]["visible_under_40"]["n"] == len(hidden)
    assert report["fused"]["render_every_photo"] == pytest.approx(
        np.mean([r["render_answer"] == r["label"] for r in rows]))


def test_fused_summary_reports_the_other_routings_of_the_same_readings():
    """Four photos read both ways: right on both, photo only, render only, neither (render missing)."""
    from occmllm.evaluate import fused_summary

    results = [metrics.ImageResult("1", "jar", "jar", prompts.YES, "jar", visible_fraction=0.9),
               metrics.ImageResult("2", "can", "can", prompts.NO, "bowl", visible_fraction=0.2),
               metrics.ImageResult("3", "knife", "remote", prompts.YES, "knife", visible_fraction=0.3),
               metrics.ImageResult("4", "bowl", "jar", prompts.NO, None, render_missing=True, visible_fraction=0.5)]
    records = [{"fused": "jar"}, {"fused": "can"}, {"fused": "remote"}, {"fused": "jar"}]
    summary = fused_summary(results, records)
    assert summary["decision"] == 0.5  # photos 1 and 2
    assert summary["render_every_photo"] == 0.5  # photos 1 and 3
    assert summary["best_routing"] == 0.75  # 1, 2 (photo) and 3 (render)
    assert summary["visible_under_40"]["n"] == 2 and summary["visible_under_40"]["decision"] == 0.5
    assert summary["visible_under_40"]["decision_seed_rule"] == 0.0  # 2 routed to a wrong render, 3 kept a wrong Q1
