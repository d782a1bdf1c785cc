"""What a run keeps in its folder OUT, and reads back when it is started again (train/run_all.py --out OUT):

    OUT/stage_X/DONE      a finished stage: its results row as JSON (stage 0's names the expert it made or chose)
    OUT/stage_X/model     the stage's model; OUT/stage_X/checkpoint the one a killed stage continues from
    OUT/results.json/.md  the evaluation after each stage, as a table (with the pictures of train/plots.py)
    OUT/run.json          preset, command, times: what the app's Runs tab lists (occmllm/runs.py reads it)
    OUT/timing.json       the run's wall clock, piece by piece (RunClock)
In a multi-GPU run rank 0 writes these and makes the data every process reads; the other ranks `wait_for` its markers.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from pathlib import Path

from occmllm.runs import stage_folder
from train.common import TrainError


def is_done(out: Path, stage_id: str) -> bool:
    return (stage_folder(out, stage_id) / "DONE").is_file()


def mark_done(out: Path, stage_id: str, row: dict) -> None:
    folder = stage_folder(out, stage_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "DONE").write_text(json.dumps(row) + "\n")


def finished_expert(out: Path) -> Path | None:
    """The 3D expert stage 0 made or chose (its DONE row names it), or None while stage 0 is not done."""
    if not is_done(out, "0"):
        return None
    row = json.loads((stage_folder(out, "0") / "DONE").read_text())
    return Path(row.get("model") or stage_folder(out, "0") / "model")


def wait_for(marker: Path) -> None:
    """Other ranks of a multi-GPU run: wait until rank 0 has written `marker` (data it makes for all of them)."""
    while not marker.is_file():
        time.sleep(5)


def starts_from(stage, run_ids: set[str], out: Path) -> str | None:
    """The stage whose model `stage` continues: its `starts` when that stage is in this run or has a model in OUT,
    else "base" (e.g. `--stages 3a` on a fresh OUT: MPO on the base model, with no stage 2 before it)."""
    if stage.starts in (None, "base") or stage.starts in run_ids:
        return stage.starts
    return stage.starts if (stage_folder(out, stage.starts) / "model" / "config.json").is_file() else "base"


def start_model(stage, run_ids: set[str], base: Path, out: Path) -> tuple[Path | None, str | None]:
    """(the model folder `stage` starts from, `starts_from`'s answer); says so when the stage starts from the base
    model instead of the one it continues in the full recipe, and stops the run when that model is missing."""
    starts = starts_from(stage, run_ids, out)
    if starts != stage.starts:
        print(f">> stage {stage.id} starts from the base model {base}: stage {stage.starts}, whose model it "
              f"continues in the full recipe, is neither in this run nor done in {out}", flush=True)
    if not starts:
        return None, starts
    start = base if starts == "base" else stage_folder(out, starts) / "model"
    if not (start / "config.json").is_file():
        raise TrainError(f"stage {stage.id} starts from stage {starts}, which has no model in {start}: "
                         f"run it first (or use --from {starts})")
    return start, starts


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}


def write_results(out: Path, results: dict) -> None:
    """OUT/results.json and OUT/results.md: the table of every evaluated stage, the pictures below it."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    fused = any("decision_fused" in row for row in results.values())
    extra = " Decision, photo + render fused | fused (visible < 40%) |" if fused else ""
    lines = [f"| stage | what | Description | Reflection | Decision | Decision (visible < 40%) |{extra} "
             "exact strings: Description / Reflection / Decision | n | minutes |",
             "|---|---|---|---|---|---|" + ("---|---|" if fused else "") + "---|---|---|"]
    for stage_id, row in results.items():
        cells = (f" {fmt(row.get('decision_fused'))} | {fmt(row.get('decision_fused_visible_under_40'))} |"
                 if fused else "")
        lines.append(f"| {stage_id} | {row.get('what', '')} | {fmt(row.get('description'))} | "
                     f"{fmt(row.get('reflection'))} | {fmt(row.get('decision'))} | "
                     f"{fmt(row.get('decision_visible_under_40'))} ({row.get('n_visible_under_40', 0)}) |{cells} "
                     f"{fmt(row.get('description_exact'))} / {fmt(row.get('reflection_exact'))} / "
                     f"{fmt(row.get('decision_exact'))} | {row.get('n', '-')} | {row.get('minutes', '-')} |")
    try:  # the pictures beside the table: each stage's loss curve, the metrics stage by stage (OUT/plots)
        from train.plots import draw_plots, markdown

        pictures = markdown(out, draw_plots(out))
    except ImportError as error:
        pictures = f"\nNo pictures: {error} (pip install matplotlib, then python train/plots.py {out}).\n"
    cut = [f"stage {stage_id} {row['time_budget_s']:.0f} s" for stage_id, row in results.items()
           if row.get("time_budget_s") is not None]
    if cut:  # run_all.fit_time_budget: the stage trained for less than its preset asked, to end within --time-limit
        lines += ["", "Time budgets cut to end within the run's time limit: " + ", ".join(cut) + "."]
    (out / "results.md").write_text("\n".join(lines) + "\n" + pictures)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_run_info(out: Path, args, report_to: str, stage_ids: list[str]) -> None:
    """OUT/run.json: what the app's Runs tab lists (preset, date, command; occmllm/runs.py reads it). A resumed run
    keeps its first start and adds this one to `resumed`."""
    path = out / "run.json"
    try:
        info = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        info = {}
    if info:
        info["resumed"] = [*info.get("resumed", []), now_iso()]
        info["stages"] = [s for s in dict.fromkeys([*info.get("stages", []), *stage_ids])]
        info.pop("finished", None)
    else:
        info = {"format": 1, "preset": args.preset, "started": now_iso(), "stages": list(stage_ids)}
    info.update(command="python train/run_all.py " + shlex.join(getattr(args, "argv", [])),
                report_to=report_to, data=args.data, model=args.model)
    path.write_text(json.dumps(info, indent=2) + "\n")


TIME_LIMIT_RESERVE_S = 120.0  # --time-limit: what a run needs besides its stages' time budgets (time_limit_reserve_s)
SHORTEST_BUDGET_S = 10.0  # a time-budgeted stage never gets less than this (or its own budget, when smaller)


def time_limit_reserve(config: dict) -> float:
    """Seconds a run under --time-limit keeps for the work without a time budget: the preset's time_limit_reserve_s."""
    return float(config.get("time_limit_reserve_s", TIME_LIMIT_RESERVE_S))


def budget_within_limit(budget: float, elapsed: float, limit: float, later_budgets: float, reserve: float) -> float:
    """A stage's training time budget, cut so that the run can end within `limit` seconds of its start: what is left
    after `elapsed`, less the time budgets of the stages after it and `reserve` (the work that has no budget: encoding
    the samples, clarity labels, MPO, SCoRe, evaluations, saving). Never more than `budget`, never less than
    SHORTEST_BUDGET_S (or `budget` when that is smaller)."""
    left = limit - elapsed - later_budgets - reserve
    return max(min(budget, SHORTEST_BUDGET_S), min(budget, left))


class RunClock:
    """Wall-clock seconds of a run's pieces (data, each stage's training and evaluation, the clarity labels), written
    to OUT/timing.json and under the results table: what a time target is checked against. A resumed run counts only
    what this process did (`resumed`)."""

    def __init__(self, out: Path):
        self.out, self.start, self.pieces = out, time.time(), {}
        self.resumed = any(out.glob("stage_*/DONE"))

    @contextlib.contextmanager
    def piece(self, name: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.pieces[name] = round(self.pieces.get(name, 0.0) + time.time() - t0, 1)

    def finish(self) -> dict:
        total = round(time.time() - self.start, 1)
        record = {"total_s": total, "minutes": round(total / 60, 2), "resumed": self.resumed, "pieces": self.pieces}
        (self.out / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
        info = self.out / "run.json"
        if info.is_file():
            info.write_text(json.dumps({**json.loads(info.read_text()), "finished": now_iso(), "total_s": total},
                                       indent=2) + "\n")
        results = self.out / "results.md"
        if results.is_file():
            note = " (resumed: this process only)" if self.resumed else " (one piece, data generation included)"
            pieces = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.pieces.items() if seconds >= 0.5)
            results.write_text(results.read_text() + f"\nWhole run: {total:.0f} s = {total / 60:.1f} min{note}. "
                               f"Pieces: {pieces}.\n")
        print(f">> whole run: {total:.0f} s ({total / 60:.1f} min){' in this process' if self.resumed else ''}; "
              f"pieces in {self.out / 'timing.json'}", flush=True)
        return record
