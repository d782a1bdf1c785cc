"""python train/run_all.py as a user runs it: the plan, bad input stopped before training, a killed run resumed,
and the smoke preset end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from occmllm import prompts
from train import run_all

REPO = Path(__file__).resolve().parents[2]


def run(args, capsys) -> tuple[int, str]:
    code = run_all.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_dry_run_prints_every_stage_in_order(capsys, tmp_path):
    code, text = run(["--preset", "smoke", "--dry-run", "--out", tmp_path, "stages.1.epochs=7"], capsys)
    assert code == 0
    lines = [line.split()[1] for line in text.splitlines() if line.strip().startswith("stage ")]
    assert lines == ["0", "1", "2", "3a", "3b", "4a", "4b", "4c"]
    assert '"epochs": 7' in next(line for line in text.splitlines() if line.strip().startswith("stage 1 "))
    code, text = run(["--preset", "smoke", "--dry-run", "--from", "4a", "--lora"], capsys)
    assert [line.split()[1] for line in text.splitlines() if line.strip().startswith("stage ")] == ["4a", "4b", "4c"]
    assert '"lora": true' in text
    code, text = run(["--preset", "default", "--dry-run", "--out", tmp_path, "--stages", "1", "2"], capsys)
    assert code == 0 and "3D expert: learned:g2 (stages.0.expert=learned:g2; stage 0 is not in this run)" in text


def _break_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text
    path.write_text("".join(lines))


@pytest.mark.parametrize("problem", ["broken line", "missing image", "empty split", "unknown class", "model folder"])
def test_bad_input_stops_before_training_with_file_and_line(problem, toy_copy, tiny_model, tmp_path, capsys):
    model = tiny_model
    if problem == "broken line":
        _break_line(toy_copy / "train_Q1.jsonl", 3, '{"id": "00000002", "image": "00000002.jpg", "conv\n')
        expected = "train_Q1.jsonl:3:"
    elif problem == "missing image":
        (toy_copy / "train" / "images" / "00000004.jpg").unlink()
        expected = "train_Q1.jsonl:5: image '00000004.jpg' not found"
    elif problem == "empty split":
        (toy_copy / "train_Q1.jsonl").write_text("")
        expected = "train_Q1.jsonl"
    elif problem == "unknown class":
        text = (toy_copy / "train_Q1.jsonl").read_text().splitlines(keepends=True)
        _break_line(toy_copy / "train_Q1.jsonl", 2, text[1].replace("The object is ", "The object is spoon").replace(
            "spoon" + text[1].split("The object is ")[1].split(".")[0], "spoon"))
        expected = "train_Q1.jsonl:2: unknown class 'spoon'"
    else:
        model = tmp_path / "not_a_model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
        expected = "not a vision-language model"
    out = tmp_path / "run"
    code, text = run(["--preset", "smoke", "--data", toy_copy, "--model", model, "--out", out, "--stages", "1"], capsys)
    assert code == 2
    assert expected in text, text
    assert "Traceback" not in text
    assert not (out / "stage_1").exists()  # nothing trained


@pytest.mark.parametrize("setting, expected", [("clarity.rule=rout", "clarity.rule: 'rout' is not one of"),
                                               ("clarity.max_unclear=1.5", "clarity.max_unclear: 1.5 is not a share")])
def test_a_bad_clarity_setting_stops_before_stage_1_trains(setting, expected, toy_data, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    code, text = run(["--preset", "smoke", "--data", toy_data, "--model", tiny_model, "--out", out, "--stages", "1", "2",
                      "clarity.relabel=true", setting], capsys)
    assert code == 2 and expected in text, text
    assert not (out / "stage_1").exists()  # stopped before stage 1, not when stage 2 needed the labels


def test_killed_run_resumes_mid_stage_and_skips_finished_stages(toy_data, tiny_model, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "train" / "run_all.py"), "--preset", "smoke", "--data", str(toy_data),
               "--model", str(tiny_model), "--out", str(out), "--stages", "1", "2",
               "stages.1.epochs=40", "stages.1.save_every=4", "stages.1.renders=false", "evaluate.enabled=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    progress = out / "stage_1" / "checkpoint" / "progress.json"
    deadline = time.time() + 120
    while not progress.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # killed mid-stage, right after a checkpoint
    process.wait()
    assert progress.is_file(), "no checkpoint was written"
    saved_step = json.loads(progress.read_text())["step"]
    assert not (out / "stage_1" / "DONE").exists()

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"resuming from step {saved_step}/" in finished.stdout + finished.stderr
    steps = [int(line.split(",")[0]) for line in (out / "stage_1" / "loss.csv").read_text().splitlines()[1:]]
    assert steps[-1] == 80 and set(steps) == set(range(1, 81))  # every step logged, the run finished its schedule
    assert (out / "stage_1" / "DONE").is_file() and (out / "stage_2" / "DONE").is_file()

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 2


def test_smoke_preset_end_to_end(tmp_path, capsys):
    """Every stage, with data from data_tools.synth and the tiny default architecture; results and a final model."""
    from occmllm.vlm import VLM

    out = tmp_path / "smoke"
    code, text = run(["--preset", "smoke", "--out", out, "evaluate.fuse=[1,4c]"], capsys)
    assert code == 0, text[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert all(0 <= results[stage]["decision_fused"] <= 1 for stage in ("1", "4c"))  # fused after these stages only
    assert not any("decision_fused" in row for stage, row in results.items() if stage not in ("1", "4c"))
    assert "photo + render fused" in (out / "results.md").read_text()
    made = json.loads((out / "data" / "test" / "expert_renders" / "COMPLETE_all").read_text())  # test renders made once
    assert made["expert"] == str(out / "stage_0" / "model") and "expert renders of the test photos" in text
    assert text.count("expert renders of the test photos") == 1
    assert list(results) == ["0", "1", "2", "3a", "3b", "4a", "4b", "4c"]
    timing = json.loads((out / "timing.json").read_text())  # the whole run's wall clock, piece by piece
    assert not timing["resumed"] and {"data", "stage 1", "evaluate 4c"} <= timing["pieces"].keys()
    assert sum(timing["pieces"].values()) <= timing["total_s"] + 1
    assert f"Whole run: {timing['total_s']:.0f} s" in (out / "results.md").read_text()
    for stage, row in results.items():
        assert (out / f"stage_{stage}" / "DONE").is_file()
        if stage != "0":
            assert {"description", "reflection", "decision", "decision_visible_under_40"} <= row.keys()
            assert 0 <= row["decision_exact"] <= 1 and 0 <= row["description_exact"] <= row["description"] + 1e-9
            assert (out / f"stage_{stage}" / "loss.csv").is_file()
    expert_config = json.loads((out / "stage_0" / "model" / "config.json").read_text())  # the 3D expert was trained
    assert expert_config["width"] == 16  # at the preset's width
    from safetensors import safe_open

    weights = out / "stage_0" / "model" / "model.safetensors"
    with safe_open(str(weights), "pt") as tensors:  # stored as the shipped experts are, before anything rendered
        floats = {str(t.dtype) for t in map(tensors.get_tensor, tensors.keys()) if t.is_floating_point()}
    assert floats == {"torch.float16"}
    record = json.loads((out / "final" / "occmllm_expert.json").read_text())
    import hashlib

    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()  # the file that ships
    assert "| 4c |" in (out / "results.md").read_text()
    vlm = VLM.load(out / "final")
    assert vlm.trained and isinstance(vlm.chat(out / "data" / "test" / "images" / sorted(
        os.listdir(out / "data" / "test" / "images"))[0], prompts.Q1), str)
    # the final model names the expert it was trained with, and the app and the CLIs take that one with it
    from occmllm.expert_renders import expert_for_model

    spec, note = expert_for_model(out / "final")
    assert spec == f"learned:{out / 'stage_0' / 'model'}" and "trained with" in note


def test_a_model_is_used_with_the_expert_it_was_trained_with(tiny_model, tmp_path):
    """occmllm_expert.json: a shipped expert is found again by its weights wherever the run was (learned:g2, or plain
    `learned` for the default one); a trained expert's folder that is gone falls back to `learned` with a message
    naming it; no record: `learned`; `python -m occmllm.infer` says which it took."""
    import shutil
    import subprocess
    import sys

    from occmllm.expert_renders import MODEL_EXPERT, expert_for_model, record_model_expert
    from occmllm.shipped import DEFAULT_EXPERT, EXPERTS

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert expert_for_model(model) == ("learned", None)
    other = next(name for name in EXPERTS if name != DEFAULT_EXPERT)
    record_model_expert(model, f"learned:{other}")
    assert json.loads((model / MODEL_EXPERT).read_text())["expert"] == str(EXPERTS[other])
    assert expert_for_model(model)[0] == f"learned:{other}"
    record_model_expert(model, "learned")
    assert expert_for_model(model) == ("learned", None)
    own = tmp_path / "own_expert"
    shutil.copytree(EXPERTS[DEFAULT_EXPERT], own)
    (own / "model.safetensors").write_bytes((own / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    record_model_expert(model, f"learned:{own}")
    assert expert_for_model(model)[0] == f"learned:{own}"
    shutil.rmtree(own)
    spec, note = expert_for_model(model)
    assert spec == "learned" and str(own) in note and "no longer there" in note

    record_model_expert(model, f"learned:{other}")  # the CLI says which expert it took, and why
    photo = sorted((REPO / "demo" / "examples").glob("*.jpg"))[0]
    shown = subprocess.run([sys.executable, "-m", "occmllm.infer", str(photo), "--model", str(model)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"3D expert: learned:{other} (the expert this model was trained with" in shown.stdout


def test_ship_default_names_the_shipped_expert_the_model_was_trained_with(tiny_model, tmp_path, monkeypatch, capsys):
    """train/ship_default.py copies a run's final model into the package folder; a recorded expert that is a shipped
    one (matched by its weights) is written by name instead of the training machine's folder, and the app's choice
    for the shipped model is then plain `learned` when that expert is the default. Not trained, or too big: refused."""
    import shutil

    import occmllm.default_model as default_model
    from occmllm.expert_renders import MODEL_EXPERT, expert_for_model, record_model_expert
    from occmllm.shipped import DEFAULT_EXPERT
    from train import ship_default

    run_dir = tmp_path / "run"
    final = run_dir / "final"
    shutil.copytree(tiny_model, final)
    record_model_expert(final, f"learned:{DEFAULT_EXPERT}")
    box = json.loads((final / MODEL_EXPERT).read_text())
    box["expert"] = "/root/somewhere/occmllm/recon/weights_on_the_box"  # the GPU box's absolute folder
    (final / MODEL_EXPERT).write_text(json.dumps(box))
    package = tmp_path / "package" / "weights"
    monkeypatch.setattr(default_model, "WEIGHTS_DIR", package)
    assert ship_default.main([str(run_dir)]) == 2  # the tiny model's marker says untrained
    assert "not a trained default-model folder" in capsys.readouterr().err and not package.exists()

    marker = json.loads((final / default_model.MARKER).read_text())
    (final / default_model.MARKER).write_text(json.dumps({**marker, "trained": True}))
    assert ship_default.main([str(run_dir)]) == 0
    shipped = json.loads((package / MODEL_EXPERT).read_text())
    assert shipped == {"expert": DEFAULT_EXPERT, "weights_sha256": box["weights_sha256"]}
    assert (package / "model.safetensors").read_bytes() == (final / "model.safetensors").read_bytes()
    assert expert_for_model(package) == ("learned", None)
    assert f"shipped expert {DEFAULT_EXPERT}" in capsys.readouterr().out

    monkeypatch.setattr(ship_default, "MAX_BYTES", 1000)
    assert ship_default.main([str(final)]) == 2 and "over the 30 MB" in capsys.readouterr().err
    assert (package / "model.safetensors").is_file()  # a refused copy leaves the shipped one as it was


def test_clarity_labels_are_stage_1s_own_correctness_on_new_photos(toy_data, tmp_path, capsys):
    """clarity.relabel: stage 2 learns "No." exactly where stage 1's model answers Q1 wrongly, on photos of another
    seed that stage 1 never trained on."""
    from occmllm.formats import read_conversations
    from occmllm.images import load_image
    from occmllm.vlm import VLM

    out = tmp_path / "relabel"
    code, text = run(["--preset", "smoke", "--data", toy_data, "--out", out, "--stages", "1", "2",
                      "clarity.relabel=true", "clarity.n=16", "evaluate.enabled=false"], capsys)
    assert code == 0, text[-3000:]
    labelled = out / "clarity_data"
    summary = json.loads((labelled / "RELABELLED").read_text())
    assert summary["photos"] == 16 and summary["clear"] + summary["unclear"] == 16
    assert json.loads((labelled / ".synth" / "settings.json").read_text())["seed"] == 1000  # not stage 1's photos
    stage1 = VLM.load(out / "stage_1" / "model")
    conversations = read_conversations(labelled / "train_Q1_Q6.jsonl")
    assert len(conversations) == 16
    images = [load_image(labelled / "train" / "images" / c.images[0]) for c in conversations]
    answers = stage1.generate_batch(images, [prompts.Q1] * len(images))
    for conv, answer in zip(conversations, answers):
        label, clarity = conv.turns("gpt")
        assert clarity == prompts.clarity_answer(prompts.parse_object(answer) == prompts.parse_object(label))
    assert (out / "stage_2" / "DONE").is_file()  # stage 2 trained on them


def test_clarity_rule_route_says_no_where_the_model_is_least_sure(toy_data, tmp_path, capsys):
    """clarity.rule=route: "No." on exactly the photos whose Q1 answer stage 1 gives a log-probability under the
    threshold chosen with the expert's renders of these photos (made first), and the threshold is the one
    data_tools.relabel.routing_threshold picks from the photo and render answers."""
    import numpy as np

    from occmllm.relabel import routing_threshold
    from occmllm.formats import read_conversations
    from occmllm.images import load_image
    from occmllm.vlm import VLM

    out = tmp_path / "route"
    code, text = run(["--preset", "smoke", "--data", toy_data, "--out", out, "--stages", "1", "2",
                      "clarity.relabel=true", "clarity.n=16", "clarity.rule=route", "evaluate.enabled=false"], capsys)
    assert code == 0, text[-3000:]
    labelled = out / "clarity_data"
    summary = json.loads((labelled / "RELABELLED").read_text())
    assert summary["rule"] == "route" and summary["photos"] == 16
    stage1 = VLM.load(out / "stage_1" / "model")
    conversations = read_conversations(labelled / "train_Q1_Q6.jsonl")
    ids = [Path(c.images[0]).stem for c in conversations]
    photos = [load_image(labelled / "train" / "images" / c.images[0]) for c in conversations]
    answers, logprobs = stage1.generate_batch(photos, [prompts.Q1] * len(photos), with_logprobs=True)
    classes = [prompts.parse_object(c.turns("gpt")[0]) for c in conversations]
    renders = [labelled / "train" / "expert_renders" / f"{i}.png" for i in ids]
    assert all(r.is_file() for r in renders)  # the expert rendered every toy photo
    on_render = stage1.generate_batch([load_image(r) for r in renders], [prompts.Q1] * len(renders))
    threshold, routed, _ = routing_threshold(
        logprobs, [prompts.parse_object(a) == c for a, c in zip(answers, classes)],
        [prompts.parse_object(a) == c for a, c in zip(on_render, classes)], 0.5)
    assert summary["unclear"] == routed
    for conv, score in zip(conversations, logprobs):
        assert conv.turns("gpt")[1] == prompts.clarity_answer(bool(score >= threshold))
    assert np.isclose(summary["logprob_threshold"], round(threshold, 4)) or not np.isfinite(threshold)


def test_evaluate_after_scores_only_the_stages_it_names(toy_data, tiny_model, tmp_path, capsys):
    """evaluate.after=[2]: stage 1 trains and keeps its row (time, no scores), stage 2 is scored; a stage id the recipe
    does not have stops the run before anything is made."""
    out = tmp_path / "after"
    code, text = run(["--preset", "smoke", "--data", toy_data, "--model", tiny_model, "--out", out, "--stages", "1",
                      "2", "evaluate.after=[2]"], capsys)
    assert code == 0, text[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["1", "2"] and (out / "stage_1" / "DONE").is_file()
    assert "description" not in results["1"] and results["1"]["minutes"] >= 0
    assert 0 <= results["2"]["description"] <= 1 and 0 <= results["2"]["decision"] <= 1
    assert text.count(">> evaluating stage") == 1 and ">> evaluating stage 2" in text
    timing = json.loads((out / "timing.json").read_text())
    assert "evaluate 2" in timing["pieces"] and "evaluate 1" not in timing["pieces"]
    assert "| 1 | SFT Q1 | - | - | - |" in (out / "results.md").read_text()

    typo = tmp_path / "typo"
    code, text = run(["--preset", "smoke", "--data", toy_data, "--model", tiny_model, "--out", typo, "--stages", "1",
                      "evaluate.after=[1,4d]"], capsys)
    assert code == 2 and "evaluate.after names 4d, not a stage of the recipe" in text
    assert not typo.exists()


def test_numbers_written_the_usual_way_are_numbers():
    from train.recipe_config import apply_override

    config: dict = {}
    for text in ("stages.1.lr=3e-4", "sft.lr=1.0e-3", "sft.batch_size=256", "stages.1.hflip=true", "sft.cache=gpu"):
        apply_override(config, text)
    assert config == {"stages": {"1": {"lr": 3e-4, "hflip": True}}, "sft": {"lr": 1e-3, "batch_size": 256,
                                                                             "cache": "gpu"}}


@pytest.mark.parametrize("preset", ["smoke", "default", "real", "annotations"])
def test_every_stage_setting_of_a_preset_is_known_to_its_trainer(preset):
    """A typo in a preset would otherwise stop a GPU run after its data were made; here it fails in a second."""
    from occmllm.recon.train import ExpertTrainConfig
    from train import expert as train_expert_stage
    from train.mpo import MPOConfig
    from train.recipe_config import load_preset, settings_as, stage_settings
    from train.score import SCoReConfig
    from train.sft import SFTConfig

    config = load_preset(preset)
    for stage in run_all.STAGES:
        settings = stage_settings(config, stage)
        if stage.kind == "expert":  # train.expert reads `expert` (`shipped`) itself, the rest is ExpertTrainConfig's
            train_expert_stage.chosen_expert(settings)
            assert isinstance(ExpertTrainConfig.from_dict(settings), ExpertTrainConfig)
            continue
        for key in ("limit", "renders", "extra_data"):  # read by the stage's data, not by its trainer
            settings.pop(key, None)
        cls = {"sft": SFTConfig, "mpo": MPOConfig, "score": SCoReConfig}[stage.kind]
        assert isinstance(settings_as(cls, settings), cls)


def test_a_stage_on_expert_renders_makes_them_first_with_the_runs_expert(toy_copy, tmp_path, capsys):
    """renders: expert with no expert renders in the data: run_all makes them (the shipped expert here, no stage 0),
    the stage trains on photos + renders, and a rerun of the stage reuses them. Photos the expert finds nothing in
    stop the run with a message."""
    from occmllm.expert_renders import expert_identity

    from occmllm.recon.experts import WEIGHTS

    out = tmp_path / "er"
    args = ["--preset", "smoke", "--out", out, "--stages", "1", "stages.1.renders=expert", "evaluate.enabled=false"]
    code, text = run(args, capsys)
    assert code == 0, text[-3000:]
    folder = out / "data" / "train" / "expert_renders"
    renders = sorted(folder.glob("*.png"))
    photos = sorted((out / "data" / "train" / "images").glob("*"))
    assert 0 < len(renders) <= len(photos) and "expert renders of the training photos" in text
    assert json.loads((folder / "expert.json").read_text())["weights_sha256"] == \
        expert_identity(str(WEIGHTS))["weights_sha256"]
    assert (out / "stage_1" / "DONE").is_file()
    code, text = run(args + ["--from", "1"], capsys)  # the renders are there: not made again
    assert code == 0 and "expert renders of the training photos" not in text
    # the toy dataset's photos are flat colours: nothing to reconstruct, a clear stop
    code, text = run(["--preset", "smoke", "--data", toy_copy, "--out", tmp_path / "toy", "--stages", "1",
                      "stages.1.renders=expert", "evaluate.enabled=false"], capsys)
    assert code == 2 and "reconstructed nothing on the 32 training photos" in text


def test_stage_0_takes_a_shipped_expert_by_name(toy_data, tiny_model, tmp_path, capsys):
    """stages.0.shipped=v5: the run goes on with the wider shipped expert (its DONE row names it) and trains none;
    a name that is no shipped expert and no folder stops the run with a message."""
    from occmllm.recon.experts import SHIPPED

    out = tmp_path / "v5"
    base = ["--preset", "smoke", "--data", toy_data, "--model", tiny_model, "--stages", "0", "evaluate.enabled=false"]
    code, text = run(base + ["--out", out, "stages.0.shipped=v5"], capsys)
    assert code == 0, text[-3000:]
    assert Path(json.loads((out / "stage_0" / "DONE").read_text())["model"]) == SHIPPED["v5"]
    assert not (out / "stage_0" / "model").exists()
    code, text = run(base + ["--out", tmp_path / "bad", "stages.0.shipped=v9"], capsys)
    assert code != 0 and "stages.0.shipped=v9" in text and "no shipped expert of that name" in text
    code, text = run(base + ["--out", tmp_path / "empty", f"stages.0.shipped={tmp_path}"], capsys)
    assert code != 0 and "holds no model.safetensors" in text


def test_under_torchrun_only_rank_0_trains_the_3d_expert(toy_data, tiny_model, tmp_path):
    """A second process of a multi-GPU run (RANK=1) does not train stage 0 into the same folder: it waits for rank 0's
    DONE marker and goes on with the expert that names."""
    out = tmp_path / "ddp"
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(REPO / "train" / "run_all.py"), "--preset", "smoke", "--data",
                                str(toy_data), "--model", str(tiny_model), "--out", str(out), "--stages", "0",
                                "evaluate.enabled=false"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    time.sleep(8)
    assert process.poll() is None, process.communicate()[0][-2000:]  # still waiting for rank 0
    assert not (out / "stage_0" / "model").exists()  # and trained nothing
    (out / "stage_0").mkdir(parents=True, exist_ok=True)  # what rank 0 writes when its expert is saved
    (out / "stage_0" / "DONE").write_text(json.dumps({"what": "3D expert", "model": str(out / "expert")}) + "\n")
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-2000:]
    assert not (out / "stage_0" / "model").exists()


def test_work_for_later_steps_runs_beside_stage_1(toy_copy, tmp_path, capsys):
    """prefetch=true (on a GPU the default): the test photos' expert renders, the clarity photos and their renders are
    made in the background while stage 1 trains; the evaluation and the clarity labels then find them made. (A copy
    of the data: renders another test left in the shared one would be found made.)"""
    out = tmp_path / "prefetch"
    code, text = run(["--preset", "smoke", "--data", toy_copy, "--out", out, "--stages", "0", "1", "2", "prefetch=true",
                      "stages.0.shipped=true", "clarity.relabel=true", "clarity.n=16", "clarity.rule=route",
                      "evaluate.limit=8"], capsys)
    assert code == 0, text[-3000:]
    assert "beside stage 1, on the CPU: 2 task(s)" in text
    background = text.index("(in the background)")
    assert background < text.index(">> evaluating stage 1") and background < text.index(">> clarity labels: {")
    assert text.count("expert renders of clarity_data/train (in the background)") == 2  # started and finished, once
    assert "generating photos stage 1 never saw" in text and "made in" in (out / "prefetch.log").read_text()
    assert text.count("expert renders of data/test (in the background)") == 2
    assert json.loads((out / "clarity_data" / "RELABELLED").read_text())["photos"] == 16
    assert (out / "clarity_data" / "train" / "expert_renders" / "COMPLETE_all").is_file()
    rows = json.loads((out / "results.json").read_text())
    assert set(rows) == {"0", "1", "2"} and rows["2"]["n"] == 8
    code, text = run(["--preset", "smoke", "--out", out, "--stages", "1", "prefetch=maybe"], capsys)
    assert code == 2 and "prefetch: 'maybe' is not one of true, false, auto" in text


def test_fsdp_is_asked_for_by_flag_or_preset_and_refused_with_lora(monkeypatch, tmp_path, capsys):
    """--fsdp sets what `accelerate launch --use_fsdp --fsdp_version 2` sets (read by every stage's Accelerator);
    with LoRA it stops before anything is made."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the flag writes the environment: keep it to this test
    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION"):
        os.environ.pop(name, None)
    code, text = run(["--preset", "smoke", "--out", tmp_path / "f", "--fsdp", "--dry-run"], capsys)
    assert code == 0 and "fsdp: True" in text
    assert os.environ["ACCELERATE_USE_FSDP"] == "true" and os.environ["FSDP_VERSION"] == "2"
    code, text = run(["--preset", "smoke", "--out", tmp_path / "g", "--lora", "fsdp=true"], capsys)
    assert code == 2 and "FSDP with LoRA is not supported" in text and not (tmp_path / "g").exists()


def test_a_second_run_on_the_same_data_replaces_another_experts_renders(tmp_path, capsys):
    """Two runs with different 3D experts on one data folder: the second makes the renders again with its own expert
    (they are derived data) instead of stopping after its first stages; the command line still refuses without
    --overwrite."""
    from data_tools import expert_renders as command
    from occmllm.expert_renders import expert_identity
    from occmllm.recon.experts import SHIPPED
    from train.expert import make_expert_renders

    out = tmp_path / "first"
    code, text = run(["--preset", "smoke", "--out", out, "--stages", "1", "stages.1.renders=expert",
                      "evaluate.enabled=false"], capsys)
    assert code == 0, text[-3000:]
    data = out / "data"
    make_expert_renders(data, SHIPPED["v5"], None, {}, rank0=True)
    text = capsys.readouterr().out
    record = json.loads((data / "train" / "expert_renders" / "expert.json").read_text())
    assert "holds the renders of another expert" in text and "replaced by this run's expert's" in text
    assert record["weights_sha256"] == expert_identity(str(SHIPPED["v5"]))["weights_sha256"]
    assert command.main(["--data", str(data), "--split", "train", "--expert", "learned"]) == 2


def test_a_run_or_a_stage_without_stage_0_renders_with_the_presets_expert(tmp_path, capsys):
    """`--stages 1` (no stage 0 in the run) and `python -m train.sft --stage 1` alone make the training photos' renders
    with the expert the preset's stage 0 chooses (the default preset's learned:g2), not the app's default expert: a
    partial run trains and evaluates on what the whole recipe would."""
    from occmllm.expert_renders import expert_identity
    from occmllm.recon.experts import SHIPPED
    from train import sft

    def made_by(data: Path) -> str:
        return json.loads((data / "train" / "expert_renders" / "expert.json").read_text())["weights_sha256"]

    out = tmp_path / "run"
    code, text = run(["--preset", "smoke", "--out", out, "--stages", "1", "stages.1.renders=expert",
                      "evaluate.enabled=false", "stages.0.expert=learned:v5"], capsys)
    assert code == 0, text[-3000:]
    assert made_by(out / "data") == expert_identity(str(SHIPPED["v5"]))["weights_sha256"]
    assert "the preset's stages.0.expert=learned:v5" in text
    code = sft.main(["--preset", "smoke", "--stage", "1", "--data", str(out / "data"), "--model",
                     str(out / "stage_1" / "model"), "--out", str(tmp_path / "alone"), "stages.1.renders=expert",
                     "stages.0.expert=learned:g2"])
    text = capsys.readouterr().out
    assert code == 0, text[-3000:]
    assert made_by(out / "data") == expert_identity(str(SHIPPED["g2"]))["weights_sha256"]
    assert "replaced by this run's expert's" in text and (tmp_path / "alone" / "model" / "config.json").is_file()


def test_a_time_limit_cuts_stage_budgets_to_what_the_run_has_left():
    from train.run_folder import budget_within_limit

    # 900 s limit, 250 s gone, 125 s of later budgets, 120 s reserve: 405 s left for a stage that asked for 540
    assert budget_within_limit(540, elapsed=250, limit=900, later_budgets=125, reserve=120) == 405
    assert budget_within_limit(300, elapsed=250, limit=900, later_budgets=125, reserve=120) == 300  # fits: unchanged
    assert budget_within_limit(540, elapsed=890, limit=900, later_budgets=125, reserve=120) == 10  # over: the floor
    assert budget_within_limit(5, elapsed=890, limit=900, later_budgets=0, reserve=0) == 5  # never above its own


def test_a_run_under_a_time_limit_stops_stage_1_in_time(toy_data, tiny_model, tmp_path, capsys):
    """Stage 1 asks for an hour and many epochs; --time-limit 1 leaves it the shortest budget (10 s), which the
    trainer keeps to, and the results row says what it got; stage 2 has no time budget and is not touched."""
    out = tmp_path / "limited"
    t0 = time.time()
    code, text = run(["--preset", "smoke", "--data", toy_data, "--model", tiny_model, "--out", out, "--stages", "1",
                      "2", "--time-limit", "1", "stages.1.epochs=100000", "stages.1.time_budget_s=3600",
                      "stages.1.renders=false", "evaluate.enabled=false"], capsys)
    assert code == 0, text[-3000:]
    assert ">> stage 1: time budget 3600 -> 10 s, to end within the time limit of 1 s" in text
    assert "[1] time budget 10 s:" in text  # the trainer fitted its steps to the cut budget
    results = json.loads((out / "results.json").read_text())
    assert results["1"]["time_budget_s"] == 10 and "time_budget_s" not in results["2"]
    assert results["1"]["minutes"] < 1 and time.time() - t0 < 120
    assert "Time budgets cut to end within the run's time limit: stage 1 10 s." in (out / "results.md").read_text()
