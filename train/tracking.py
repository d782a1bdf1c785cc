"""Where a run's metrics go besides each stage's loss.csv: an existing tracker, chosen by `run_all.py --report-to`
(or the preset's `report_to`), all of it under the run folder OUT:

    trackio      (the default) local-first, one SQLite file in OUT/trackio; its dashboard (a Gradio app):
                     TRACKIO_DIR=OUT/trackio trackio show --project NAME      (NAME: the run folder's name)
    tensorboard  event files in OUT/tensorboard/stage_ID:   tensorboard --logdir OUT/tensorboard
    none         loss.csv and results.json only

One tracker run per stage (named stage_ID, its settings as the run's config). Every training loop logs through
`log`: the SFT, SCoRe and MPO rows that go to loss.csv (train/loss, train/lr, train/reward1, train/kl1, trl's
train/rewards/accuracies...), the 3D expert's losses and grid IoU, and run_all the evaluation after the stage
(eval/decision, eval/description, eval/reflection, eval/decision_visible_under_40, eval/routed_to_3d) at the stage's
last step. occmllm/runs.py (results.md's pictures, the app's Runs tab) reads the run folder's own files (loss.csv,
results.json, timing.json), so those work whichever tracker was chosen.

Nothing is written outside OUT and nothing goes to the network: trackio runs in a child process
(`python -m train.tracking --trackio DIR`, fed JSON lines on its stdin) whose environment sets TRACKIO_DIR=OUT/trackio
(trackio reads it once, at import: a process that trains two runs would otherwise write the second into the first's
folder), HF_HUB_OFFLINE=1 and none of trackio's Space, server, bucket or webhook variables; no system-metrics threads.
Its console output goes to OUT/tracker.log. A tracker that is not installed, or that fails, is said once on the
console and the run goes on with loss.csv only: tracking never stops training.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPORT_TO = ("trackio", "tensorboard", "none")
DEFAULT = "trackio"
REPO = Path(__file__).resolve().parents[1]
# trackio's variables that send metrics elsewhere than a local folder (a Space, a server, a bucket, a webhook)
REMOTE_VARIABLES = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_WRITE_TOKEN", "TRACKIO_BUCKET_ID",
                    "TRACKIO_DATASET_ID", "TRACKIO_WEBHOOK_URL", "TRACKIO_WEBHOOK_MIN_LEVEL")
PACKAGE = {"trackio": "trackio", "tensorboard": "tensorboard"}

_active: Tracker | None = None


def check_report_to(kind) -> str:
    """The tracker's name, checked before anything is made."""
    kind = "none" if kind in (None, False) else str(kind)
    if kind not in REPORT_TO:
        from train.common import TrainError

        raise TrainError(f"report_to: {kind!r} is not one of {', '.join(REPORT_TO)}")
    return kind


def missing(kind: str) -> str | None:
    """Why `kind` cannot be used here (its package is not installed), or None."""
    package = PACKAGE.get(kind)
    if package and importlib.util.find_spec(package) is None:
        return (f"--report-to {kind}: the {package} package is not installed (pip install {package}); this run's "
                "metrics go to loss.csv and results.json only")
    return None


def numeric(metrics: dict) -> dict[str, float]:
    """The numbers of a row (ints, floats, bools, 0-d tensors and arrays) as floats; text and None left out."""
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            out[str(key)] = float(value)
    return out


class Tracker:
    """One run_all process's tracker (`kind` in REPORT_TO) writing under `out`; `stage` opens one tracker run."""

    def __init__(self, kind: str, out: Path, project: str | None = None):
        self.kind, self.out = check_report_to(kind), Path(out)
        self.project = project or self.out.resolve().name
        self.stage_name, self.last_step = None, 0
        self._process, self._writer, self._warned = None, None, False
        problem = missing(self.kind)
        if problem:
            print(f"warning: {problem}", file=sys.stderr, flush=True)
            self.kind = "none"

    @property
    def folder(self) -> Path | None:
        return {"trackio": self.out / "trackio", "tensorboard": self.out / "tensorboard"}.get(self.kind)

    def describe(self) -> str:
        if self.kind == "trackio":
            return (f"trackio in {self.folder} (dashboard: TRACKIO_DIR={self.folder} trackio show --project "
                    f"{self.project})")
        if self.kind == "tensorboard":
            return f"TensorBoard in {self.folder} (tensorboard --logdir {self.folder})"
        return "none (loss.csv and results.json only)"

    # --- one tracker run per stage --------------------------------------------------------------
    def start_stage(self, name: str, config: dict | None = None) -> None:
        self.end_stage()
        self.stage_name, self.last_step = f"stage_{name}", 0
        config = json.loads(json.dumps(config or {}, default=str))
        if self.kind == "trackio":
            self._send({"op": "init", "name": self.stage_name, "config": config})
        elif self.kind == "tensorboard":
            self._open_tensorboard(config)

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log numbers at `step` (default: the stage's last step so far, e.g. its evaluation after training)."""
        if self.kind == "none" or self.stage_name is None:
            return
        values = numeric(metrics)
        if not values:
            return
        step = self.last_step if step is None else int(step)
        self.last_step = max(self.last_step, step)
        if self.kind == "trackio":
            self._send({"op": "log", "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
                        "step": step})
        elif self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)

    def end_stage(self) -> None:
        if self.stage_name is None:
            return
        if self.kind == "trackio":
            self._send({"op": "finish"})
        elif self._writer is not None:
            self._writer.close()
            self._writer = None
        self.stage_name = None

    def close(self) -> None:
        """End the open stage; wait for trackio's process to write everything (it exits on the end of its input)."""
        self.end_stage()
        if self._process is not None:
            process, self._process = self._process, None
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                code = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                code = "killed after 120 s"
            if code:
                self._warn(f"trackio's process ended with {code}: see {self.out / 'tracker.log'}")

    # --- backends --------------------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        if self.kind != "trackio":
            return
        try:
            if self._process is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                env = {k: v for k, v in os.environ.items() if k not in REMOTE_VARIABLES}
                env.update(TRACKIO_DIR=str(self.folder.resolve()), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                           GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=os.pathsep.join(
                               [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
                with open(self.out / "tracker.log", "a") as log:  # the child keeps its own handle
                    self._process = subprocess.Popen(
                        [sys.executable, "-m", "train.tracking", "--trackio", str(self.folder.resolve()), "--project",
                         self.project], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                        env=env, text=True)
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except OSError as error:  # the child died (see tracker.log): training goes on without it
            self._warn(f"trackio stopped taking metrics ({error}); see {self.out / 'tracker.log'}. The run goes on "
                       "with loss.csv")
            self.kind = "none"

    def _open_tensorboard(self, config: dict) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            self._warn(f"--report-to tensorboard: torch.utils.tensorboard cannot be imported ({error}); this run's "
                       "metrics go to loss.csv and results.json only")
            self.kind = "none"
            return
        self._writer = SummaryWriter(log_dir=str(self.folder / self.stage_name))
        self._writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def _warn(self, message: str) -> None:
        if not self._warned:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        self._warned = True


# --- the process-wide tracker that the training loops log to -------------------------------------
@contextlib.contextmanager
def session(kind: str, out: Path, project: str | None = None):
    """The tracker every `log` call of this process goes to until the block ends (then everything is written)."""
    global _active
    tracker = Tracker(kind, out, project)
    previous, _active = _active, tracker
    try:
        yield tracker
    finally:
        _active = previous
        tracker.close()


def log(metrics: dict, step: int | None = None, prefix: str = "train/") -> None:
    """Log `metrics` (names get `prefix`) to the open stage of the active tracker; nothing when there is none."""
    if _active is not None:
        _active.log({f"{prefix}{k}": v for k, v in metrics.items()}, step)


# --- trackio's process -----------------------------------------------------------------------------
def serve_trackio(project: str, lines) -> None:
    """Apply init / log / finish messages (JSON lines) with trackio's own API; TRACKIO_DIR is set by the parent."""
    import trackio

    open_run = False
    for line in lines:
        message = json.loads(line)
        op = message["op"]
        if op == "init":
            trackio.init(project=project, name=message["name"], config=message.get("config") or {},
                         resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False)
            open_run = True
        elif op == "log" and open_run:
            trackio.log({k: (float("nan") if v is None else v) for k, v in message["metrics"].items()},
                        step=message.get("step"))
        elif op == "finish" and open_run:
            trackio.finish()
            open_run = False
    if open_run:  # the parent ended (or was killed) mid-stage: keep what was logged
        trackio.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.tracking", description="trackio's process for "
                                     "train/run_all.py (started by it; reads JSON lines on stdin). Not for users.")
    parser.add_argument("--trackio", required=True, type=Path, help="the run's trackio folder (OUT/trackio)")
    parser.add_argument("--project", required=True)
    args = parser.parse_args(argv)
    if Path(os.environ.get("TRACKIO_DIR", "")).resolve() != args.trackio.resolve():
        sys.exit(f"TRACKIO_DIR must be {args.trackio} (it is {os.environ.get('TRACKIO_DIR')!r})")
    serve_trackio(args.project, sys.stdin)


if __name__ == "__main__":
    main()
