"""train/gpu_box.sh as it is used on an offline GPU box: `start` checks the environment and starts the recipe in
its own process session, a second `start` does not start it twice, `wait` collects the results in parts that put
back together into the trained model."""

from __future__ import annotations

import json
import os
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
    assert "stage_4c/loss.csv" in stages and ".safetensors" not in stages
