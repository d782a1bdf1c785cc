"""Every stage's metrics in a tracker (train/tracking.py): trackio by default, TensorBoard, none; the tracker writes
only under the run folder and never reaches for the network; a tracker that is not installed is said, not fatal;
results.md shows the pictures."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from train import run_all

REPO = Path(__file__).resolve().parents[2]

# put in front of every Python process of the run (run_all, data_tools, trackio's process): any connection to an
# internet address is written down and refused
NETWORK_GUARD = textwrap.dedent("""
    import os, socket
    _connect = socket.socket.connect
    def _guard(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            with open(os.environ["NETWORK_LOG"], "a") as log:
                log.write(f"{os.getpid()} {address}\\n")
            raise OSError(f"network used: {address}")
        return _connect(self, address)
    socket.socket.connect = _guard
""")


def loss_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trackio_logs(folder: Path, project: str, run: str) -> list[dict]:
    """What trackio stored for one run, read back by trackio itself in a process of its own (its folder is fixed
    when it is imported)."""
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps({'runs': SQLiteStorage.get_runs(sys.argv[1]), "
            "'logs': SQLiteStorage.get_logs(sys.argv[1], sys.argv[2])}))")
    env = {**os.environ, "TRACKIO_DIR": str(folder), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, project, run], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_trackio_gets_every_step_and_the_evaluation_offline_and_only_under_the_run_folder(toy_data, tiny_model,
                                                                                          tmp_path):
    pytest.importorskip("trackio")
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "XDG_CACHE_HOME", "TRACKIO_DIR")}
    env.update(HOME=str(home), MPLCONFIGDIR=str(tmp_path / "matplotlib"), NETWORK_LOG=str(tmp_path / "network.log"), HF_HUB_OFFLINE="1",
               TRACKIO_SPACE_ID="someone/somewhere",  # a Space named in the environment is not used
               PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]))
    done = subprocess.run([sys.executable, str(REPO / "train" / "run_all.py"), "--preset", "smoke", "--data",
                           str(toy_data), "--model", str(tiny_model), "--out", str(out), "--stages", "1", "4a",
                           "stages.1.renders=false", "evaluate.expert=none", "evaluate.limit=8"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trackio in" in done.stdout and "trackio show" in done.stdout  # where the metrics went, said on start
    assert not (tmp_path / "network.log").exists(), (tmp_path / "network.log").read_text()
    assert not any(home.rglob("*")), list(home.rglob("*"))  # nothing in ~/.cache or elsewhere in the home folder
    stored = trackio_logs(out / "trackio", "run", "stage_1")
    assert {"stage_1", "stage_4a"} <= set(stored["runs"])
    logged = {row["step"]: row for row in stored["logs"] if "train/loss" in row}
    rows = loss_rows(out / "stage_1" / "loss.csv")
    assert sorted(logged) == [int(r["step"]) for r in rows]  # every optimizer step
    for row in rows:
        assert logged[int(row["step"])]["train/loss"] == pytest.approx(float(row["loss"]), rel=1e-4)
        assert logged[int(row["step"])]["train/lr"] == pytest.approx(float(row["lr"]), rel=1e-4)
    results = json.loads((out / "results.json").read_text())
    evaluation = next(row for row in stored["logs"] if "eval/decision" in row)
    assert evaluation["eval/decision"] == pytest.approx(results["1"]["decision"])
    assert evaluation["eval/decision_visible_under_40"] == pytest.approx(results["1"]["decision_visible_under_40"])
    assert evaluation["step"] == int(rows[-1]["step"])  # at the stage's last step
    score = trackio_logs(out / "trackio", "run", "stage_4a")["logs"]  # SCoRe's rewards and KL
    score_rows = loss_rows(out / "stage_4a" / "loss.csv")
    assert [r["train/reward2"] for r in score if "train/reward2" in r] == \
        pytest.approx([float(r["reward2"]) for r in score_rows])
    assert all("train/kl1" in r for r in score if "train/loss" in r)
    info = json.loads((out / "run.json").read_text())
    assert info["preset"] == "smoke" and info["report_to"] == "trackio" and info["stages"] == ["1", "4a"]
    assert info["finished"] >= info["started"]


def test_tensorboard_event_files_hold_the_loss_and_the_mpo_rewards(toy_data, tiny_model, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    code = run_all.main(["--preset", "smoke", "--data", str(toy_data), "--model", str(tiny_model), "--out", str(out),
                         "--stages", "3a", "--report-to", "tensorboard", "evaluate.enabled=false"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert not (out / "trackio").exists()
    events = EventAccumulator(str(out / "tensorboard" / "stage_3a"))
    events.Reload()
    rows = loss_rows(out / "stage_3a" / "loss.csv")
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == \
        [(int(r["step"]), round(float(r["loss"]), 4)) for r in rows]
    # everything trl logs goes to the tracker, also what loss.csv has no column for
    assert {"train/rewards/accuracies", "train/rewards/margins", "train/rewards/chosen", "train/grad_norm"} <= \
        set(events.Tags()["scalars"])


def test_none_writes_no_tracker_files_and_a_missing_tracker_is_said_not_fatal(toy_data, tiny_model, tmp_path,
                                                                              capsys, monkeypatch):
    out = tmp_path / "none"
    code = run_all.main(["--preset", "smoke", "--data", str(toy_data), "--model", str(tiny_model), "--out", str(out),
                         "--stages", "1", "--report-to", "none", "evaluate.enabled=false"])
    assert code == 0
    assert not (out / "trackio").exists() and not (out / "tensorboard").exists()
    assert (out / "stage_1" / "loss.csv").is_file()

    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else find_spec(name, *a))
    capsys.readouterr()
    out = tmp_path / "missing"
    code = run_all.main(["--preset", "smoke", "--data", str(toy_data), "--model", str(tiny_model), "--out", str(out),
                         "--stages", "1", "evaluate.enabled=false"])  # trackio: the default
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "the trackio package is not installed (pip install trackio)" in captured.err
    assert (out / "stage_1" / "DONE").is_file() and not (out / "trackio").exists()

    code = run_all.main(["--preset", "smoke", "--out", str(tmp_path / "bad"), "report_to=wandb", "--dry-run"])
    assert code == 2 and "report_to: 'wandb' is not one of trackio, tensorboard, none" in capsys.readouterr().err


def test_results_md_shows_each_stages_loss_curve_and_the_metrics_as_pictures(toy_data, tiny_model, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "pics"
    code = run_all.main(["--preset", "smoke", "--data", str(toy_data), "--model", str(tiny_model), "--out", str(out),
                         "--stages", "1", "2", "--report-to", "none", "evaluate.expert=none", "evaluate.limit=8"])
    assert code == 0, capsys.readouterr().err[-3000:]
    text = (out / "results.md").read_text()
    assert "![Loss of each stage](plots/losses.png)" in text and "![The metrics stage by stage](plots/metrics.png)" in text
    assert text.index("| 2 |") < text.index("plots/losses.png")  # under the table
    for name in ("losses.png", "metrics.png"):
        image = Image.open(out / "plots" / name).convert("L")
        assert image.width > 500 and image.getextrema()[0] < 100  # drawn: lines and text, not a blank page
