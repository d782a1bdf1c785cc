"""train/gpu_box.sh as it is used on an offline GPU box: `start` checks the environment and starts the recipe in
its own process session, a second `start` does not start it twice, `wait` collects the results in parts that put
back together into the trained model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def box(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "train" / "gpu_box.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def test_start_wait_collect_the_smoke_recipe(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "GL_LIBS": "none",
           "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "osmesa")}
    run, dest = tmp_path / "run", tmp_path / "results"
    started = box("start", str(run), "--preset", "smoke", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "offscreen rendering works" in started.stdout and "started" in started.stdout
    again = box("start", str(run), "--preset", "smoke", env=env)
    assert "started already" in again.stdout

    waited = box("wait", str(run), "500", str(dest), env=env)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "still running" not in waited.stdout
    assert "final model" in (dest / "run.log").read_text()
    assert "| 4c |" in (dest / "results.md").read_text()
    assert json.loads((dest / "timing.json").read_text())
    parts = sorted(dest.glob("final.tgz.*"))
    assert parts
    joined = tmp_path / "final.tgz"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    subprocess.run(["tar", "xzf", str(joined), "-C", str(tmp_path)], check=True)
    assert (tmp_path / "final" / "model.safetensors").is_file()
    stages = subprocess.run(["tar", "tzf", str(dest / "stages.tgz")], capture_output=True, text=True).stdout
    assert "stage_4c/loss.csv" in stages and ".safetensors" not in stages and ".tgz" not in stages
    # the smoke preset's stage 0 trains a 3D expert: it comes back too, in float16 like the shipped ones
    expert_parts = sorted(dest.glob("expert.tgz.*"))
    assert expert_parts
    (tmp_path / "expert.tgz").write_bytes(b"".join(p.read_bytes() for p in expert_parts))
    (tmp_path / "expert").mkdir()
    subprocess.run(["tar", "xzf", str(tmp_path / "expert.tgz"), "-C", str(tmp_path / "expert")], check=True)
    import torch
    from occmllm.recon.model import OccupancyNet

    trained = OccupancyNet.from_pretrained(run / "stage_0" / "model")
    fetched = OccupancyNet.from_pretrained(tmp_path / "expert")
    for (name, a), (_, b) in zip(trained.state_dict().items(), fetched.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2), name


def test_park_keeps_the_shipped_weights_out_of_the_upload_and_out_of_commits(tmp_path):
    """`park` (before a GPU call with a size limit) moves the weights aside so that even `git commit -a` does not
    record them as deleted; `unpark` puts them back as committed. Run in a clone, never on this checkout."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    shutil.copy(REPO / "train" / "gpu_box.sh", clone / "train" / "gpu_box.sh")  # this checkout's version of the tool
    parked = "occmllm/default_model/weights/model.safetensors"
    original = (clone / parked).read_bytes()
    env = {**os.environ, "PARK_DIR": str(tmp_path / "parked")}

    def run(*args):
        return subprocess.run(["bash", "train/gpu_box.sh", *args], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=120)

    assert run("park").returncode == 0
    assert not (clone / parked).exists() and (tmp_path / "parked" / parked).is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--", "occmllm"], cwd=clone, capture_output=True,
                            text=True).stdout
    assert status == "", status  # nothing that `git commit -a` would record about the weights
    back = run("unpark")
    assert back.returncode == 0 and "as committed" in back.stdout, back.stdout + back.stderr
    assert (clone / parked).read_bytes() == original
    # --keep-default: a call that runs the default model there sends it and parks the v5 expert alone
    v5 = "occmllm/recon/weights_v5/model.safetensors"
    assert run("park", "--keep-default").returncode == 0
    assert (clone / parked).read_bytes() == original and not (clone / v5).exists()
    assert run("unpark").returncode == 0 and (clone / v5).is_file()
    assert run("park", "--keep-everything").returncode == 2 and (clone / v5).is_file()
    # --keep weights_g4 --park weights_g2: a run that reads or continues g4 there sends it instead of g2, and unpark
    # puts g2 back too
    g2, g4 = "occmllm/recon/weights_g2/model.safetensors", "occmllm/recon/weights_g4/model.safetensors"
    assert run("park").returncode == 0 and not (clone / g4).exists() and (clone / g2).is_file()
    assert run("unpark").returncode == 0 and (clone / g4).is_file()
    assert run("park", "--keep", "weights_g4", "--park", "weights_g2").returncode == 0
    assert (clone / g4).is_file() and not (clone / g2).exists() and not (clone / v5).exists()
    back = run("unpark")
    assert back.returncode == 0 and (clone / g2).is_file() and (clone / v5).is_file(), back.stdout + back.stderr
    assert run("park", "--keep", "weights_x").returncode == 2 and run("park", "--park", "default").returncode == 2
