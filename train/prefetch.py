"""Work that later steps of the recipe need and that the CPU can do while stage 1 trains on the GPU: the 3D expert's
renders of the test photos (the first evaluation reads them), the clarity photos and their renders (the clarity
labels, train/clarity_labels.py). The preset's `prefetch`: auto (the default: on a GPU), true or false.

    python train/run_all.py --preset default --out runs/default prefetch=false      # made after stage 1 instead
A thread of the run's process, its work in worker processes; its console output goes to OUT/prefetch.log. Everything
it makes is marked done on disk, so the steps that need it find it made (`join` first) or make it themselves.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from train.common import TrainError


def background_workers() -> int:
    """Processes for work done beside a GPU stage: the cores less a few for the training process."""
    return max(1, (os.cpu_count() or 1) - 4)


class Prefetch:
    """The tasks, one after the other in a thread; `join` waits for them and raises what one of them raised."""

    def __init__(self, tasks: list):
        self.tasks, self.error = tasks, None
        self.thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for task in self.tasks:
                task()
        except BaseException as error:  # noqa: BLE001 - raised again in join()
            self.error = error

    def join(self) -> None:
        if self.thread.is_alive():
            print(">> waiting for the work done beside stage 1 (test renders, clarity photos)", flush=True)
        self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def check_prefetch(config: dict):
    """The preset's `prefetch` (true, false or auto), checked before anything trains."""
    wanted = config.get("prefetch", "auto")
    if wanted not in (True, False, "auto"):
        raise TrainError(f"prefetch: {wanted!r} is not one of true, false, auto")
    return wanted


def start_prefetch(stages: list, stage, config: dict, out: Path, data_dir: Path, expert: Path | None,
                   evaluate: bool) -> Prefetch | None:
    """The Prefetch to start before `stage` trains: only before stage 1, for the work this run will need, when the
    preset's `prefetch` is true, or `auto` (the default) and there is a GPU (on a CPU the stage needs the cores)."""
    import torch

    from train.clarity_labels import make_clarity_photos, reads_clarity_labels
    from train.expert import make_expert_renders

    wanted = check_prefetch(config)
    if stage.id != "1" or not (wanted is True or (wanted == "auto" and torch.cuda.is_available())):
        return None
    tasks = []
    if evaluate and (config.get("evaluate", {}) or {}).get("expert", "learned") == "learned" and expert:
        tasks.append(lambda: make_expert_renders(data_dir, expert, None, config, True, "test", background=True))
    if any(reads_clarity_labels(s, config) for s in stages) and not (out / "clarity_data" / "RELABELLED").is_file():
        tasks.append(lambda: make_clarity_photos(config, out, expert, True, background=True))
    if not tasks:
        return None
    print(f">> beside stage 1, on the CPU: {len(tasks)} task(s) (log: {out / 'prefetch.log'})", flush=True)
    return Prefetch(tasks)
