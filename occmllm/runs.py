"""Training runs read back from their folders (`python train/run_all.py --out OUT`), for results.md's pictures and
the app's Runs tab. Reading never raises on what a folder holds: a run that is half written, from an older version
of run_all, or a folder that is no run at all comes back with `notes` that say so.

What a run folder holds (every file optional; train/run_all.py writes them):
    run.json          {"format", "preset", "command", "report_to", "stages" (planned), "started", "resumed" [times],
                       "finished", "data", "model"} (run_all since its Runs tab; older runs have none)
    results.json      {stage id: {"what", "description", "reflection", "decision", "decision_visible_under_40",
                       "n_visible_under_40", "routed_to_3d", "n", "minutes", ...}}, one row per finished stage
    timing.json       {"total_s", "minutes", "resumed", "pieces": {piece: seconds}}
    stage_ID/DONE     the stage finished (its results row)
    stage_ID/loss.csv every optimizer step (step, loss, lr; SCoRe's reward1/2, kl1/2; MPO's rewards/...); the 3D
                      expert's are in stage_0/model/loss.csv and eval.csv
    final/            the final model (stage 4c's), stage_ID/model/ each stage's
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# the evaluation after each stage, in results.json's names -> what the results table calls them
METRICS = {"decision": "Decision", "description": "Description", "reflection": "Reflection",
           "routed_to_3d": "routed to 3D", "decision_visible_under_40": "Decision (visible < 40%)"}
NEITHER_BETTER_NOR_WORSE = {"routed_to_3d"}  # every other metric: higher is better
FINAL = "4c"  # the last stage of the recipe: its model is the run's final one (OUT/final)


def stage_folder(run: Path, stage_id: str) -> Path:
    """OUT/stage_{id}: a stage's folder in a run (DONE, loss.csv, model/)."""
    return Path(run) / f"stage_{stage_id}"


def stage_key(stage_id: str) -> tuple[int, str]:
    """Stages in the recipe's order: 0, 1, 2, 3a, 3b, 4a, 4b, 4c (ids that are no stage's sort last)."""
    match = re.fullmatch(r"(\d+)([a-z]*)", stage_id)
    return (int(match[1]), match[2]) if match else (10**6, stage_id)


@dataclass
class Run:
    path: Path
    is_run: bool = False
    preset: str | None = None
    started: str | None = None  # ISO time
    finished: str | None = None
    report_to: str | None = None
    planned: list[str] = field(default_factory=list)  # the stages run.json names (empty for an older run)
    done: list[str] = field(default_factory=list)  # stages with a DONE marker
    results: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # run.json as written
    notes: list[str] = field(default_factory=list)
    _curves: dict | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def final_stage(self) -> str | None:
        """The last stage with a Decision (the final model's when 4c is done)."""
        scored = [s for s in self.results if number(self.row(s).get("decision")) is not None]
        return max(scored, key=stage_key) if scored else None

    @property
    def final_decision(self) -> float | None:
        stage = self.final_stage
        return self.results[stage]["decision"] if stage else None

    @property
    def final_model(self) -> Path | None:
        """OUT/final, else the model of the last finished stage that has one (a VLM, not the 3D expert)."""
        if (self.path / "final" / "config.json").is_file():
            return self.path / "final"
        for stage in sorted(self.done, key=stage_key, reverse=True):
            model = stage_folder(self.path, stage) / "model"
            if stage != "0" and (model / "config.json").is_file():
                return model
        return None

    def summary(self) -> dict:
        """One line of the runs table."""
        decision = self.final_decision
        stages = f"{len(self.done)}/{len(self.planned)}" if self.planned else str(len(self.done))
        return {"run": self.name, "preset": self.preset or "?", "date": (self.started or "?")[:16].replace("T", " "),
                "stages done": stages if self.is_run else "",
                "final Decision": "-" if decision is None else f"{decision:.4f}",
                "note": "; ".join(self.notes)}

    def row(self, stage: str) -> dict:
        """results.json's row of a stage ({} when there is none or it is not a row)."""
        row = self.results.get(stage)
        return row if isinstance(row, dict) else {}

    def results_frame(self) -> pd.DataFrame:
        """The results table: one row per stage, the evaluation's metrics, n and minutes."""
        rows = []
        for stage in sorted(self.results, key=stage_key):
            row = self.row(stage)
            rows.append({"stage": stage, "what": row.get("what", ""),
                         **{label: number(row.get(key)) for key, label in METRICS.items()},
                         "n": row.get("n"), "minutes": row.get("minutes")})
        return pd.DataFrame(rows, columns=["stage", "what", *METRICS.values(), "n", "minutes"])

    def timing_frame(self) -> pd.DataFrame:
        """timing.json's pieces and the whole run, in seconds (what is not a number left out)."""
        pieces = self.timing.get("pieces")
        pieces = dict(pieces) if isinstance(pieces, dict) else {}
        pieces["whole run"] = self.timing.get("total_s")
        pieces = {str(k): number(v) for k, v in pieces.items() if number(v) is not None}
        return pd.DataFrame({"piece": list(pieces), "seconds": list(pieces.values())})

    def curves(self) -> dict[str, pd.DataFrame]:
        """{stage id: its loss.csv as numbers} for every stage that logged one (stage 0: the 3D expert's, with its
        eval.csv's grid IoU joined on the step). Read once."""
        if self._curves is not None:
            return self._curves
        out = self._curves = {}
        for folder in sorted(self.path.glob("stage_*"), key=lambda p: stage_key(p.name[6:])):
            stage = folder.name[6:]
            path = folder / "loss.csv"
            if stage == "0" and not path.is_file():
                path = folder / "model" / "loss.csv"
            if not path.is_file():
                continue
            frame = read_csv(path, self.notes)
            if frame is None or frame.empty or "step" not in frame:
                continue
            evals = read_csv(path.with_name("eval.csv"), self.notes) if stage == "0" else None
            if evals is not None and not evals.empty and "step" in evals:
                frame = frame.merge(evals.drop(columns=[c for c in ("seconds",) if c in evals]).rename(
                    columns={"grid_iou": "test_grid_iou"}), on="step", how="outer").sort_values("step")
            out[stage] = frame.reset_index(drop=True)
        return out


def number(value) -> float | None:
    """A metric as a number, or None (missing, or something else written where a number belongs)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_csv(path: Path, notes: list[str] | None = None) -> pd.DataFrame | None:
    """A loss.csv as numbers (cells that are not numbers: NaN), or None with a note when it cannot be read; a row
    cut short by a run killed mid-write is dropped."""
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        if notes is not None:
            notes.append(f"{path.name} unreadable ({error})")
        return None
    if not rows:
        return None
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    frame = pd.DataFrame(body, columns=header)
    return frame.apply(pd.to_numeric, errors="coerce")


def _read_json(path: Path, notes: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        notes.append(f"{path.name} unreadable ({error}): half written?")
        return None


def read_run(path: str | Path) -> Run:
    """The run in `path`, with notes on what is missing or odd; never raises on the folder's contents."""
    path = Path(path)
    run = Run(path)
    if not path.is_dir():
        run.notes.append("not a folder")
        return run
    info = _read_json(path / "run.json", run.notes)
    results = _read_json(path / "results.json", run.notes)
    timing = _read_json(path / "timing.json", run.notes)
    stage_dirs = [p for p in path.glob("stage_*") if p.is_dir()]
    run.is_run = any(x is not None for x in (info, results, timing)) or bool(stage_dirs) or \
        (path / "run.json").is_file() or (path / "results.json").is_file()
    if not run.is_run:
        run.notes.append("not a run: no run.json, results.json, timing.json or stage_* folder")
        return run
    run.info = info if isinstance(info, dict) else {}
    run.results = {str(k): v for k, v in results.items()} if isinstance(results, dict) else {}
    run.timing = timing if isinstance(timing, dict) else {}
    run.done = sorted((p.name[6:] for p in stage_dirs if (p / "DONE").is_file()), key=stage_key)
    run.preset = run.info.get("preset")
    run.report_to = run.info.get("report_to")
    run.planned = [str(s) for s in run.info.get("stages") or []]
    run.started = run.info.get("started")
    run.finished = run.info.get("finished")
    if info is None and not (path / "run.json").is_file():
        run.notes.append("from an older run_all (no run.json): preset unknown")
        newest = max((p.stat().st_mtime for p in [path, *path.iterdir()]), default=path.stat().st_mtime)
        run.started = time.strftime("%Y-%m-%dT%H:%M", time.localtime(newest))
    finished = run.finished or (not run.planned and run.timing)
    if run.planned and not finished:
        left = [s for s in run.planned if s not in run.done]
        if left:
            run.notes.append(f"unfinished: {len(run.planned) - len(left)} of {len(run.planned)} stages done "
                             f"(stage {left[0]} running or stopped)")
    elif not finished and not run.timing:
        run.notes.append("unfinished: no timing.json (running or stopped)")
    if not run.results and run.is_run and finished:
        run.notes.append("no evaluation (results.json has no stage rows)")
    return run


_read: dict[Path, tuple[tuple, Run]] = {}  # read_run_again's runs, with the state of the files they were read from


def read_run_again(path: str | Path) -> Run:
    """read_run, from memory while none of the run's files changed (a viewer that shows a run again and again: its
    results and curves are parsed once per change)."""
    path = Path(path)
    state = _files_state(path)
    known = _read.get(path)
    if known is not None and known[0] == state:
        return known[1]
    run = read_run(path)
    _read[path] = (state, run)
    return run


def _files_state(path: Path) -> tuple:
    """(name, size, mtime) of the files read_run and Run.curves read, and of the folders they are in."""
    files = [path] + [path / name for name in ("run.json", "results.json", "timing.json")]  # a folder: its entries
    for stage in path.glob("stage_*"):
        files += [stage, stage / "DONE", stage / "loss.csv", stage / "eval.csv", stage / "model" / "loss.csv",
                  stage / "model" / "config.json"]
    files.append(path / "final" / "config.json")
    state = []
    for file in sorted(files):
        try:
            info = file.stat()
            state.append((str(file), info.st_size, info.st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


def find_runs(root: str | Path) -> list[Run]:
    """Every folder directly under `root`, as runs (newest first; folders that are no run last, with their note)."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [read_run_again(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(runs, key=lambda r: (not r.is_run, "" if r.started is None else _negate(r.started), r.name))


def _negate(text: str) -> str:
    """A sort key that puts later ISO times first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def compare(a: Run, b: Run) -> pd.DataFrame:
    """Stage by stage, every metric of A and B and B - A (`better`: +1 where B is better, -1 worse, 0 equal or not
    comparable; routed to 3D is neither)."""
    rows = []
    for stage in sorted(set(a.results) | set(b.results), key=stage_key):
        row_a, row_b = a.row(stage), b.row(stage)
        for key, label in METRICS.items():
            va, vb = number(row_a.get(key)), number(row_b.get(key))
            if va is None and vb is None:
                continue
            diff = vb - va if va is not None and vb is not None else None
            sign = 0 if diff is None or math.isclose(diff, 0, abs_tol=1e-9) else (1 if diff > 0 else -1)
            rows.append({"stage": stage, "what": row_b.get("what") or row_a.get("what", ""), "metric": label,
                         "A": va, "B": vb, "B - A": diff,
                         "better": 0 if key in NEITHER_BETTER_NOR_WORSE else sign})
    return pd.DataFrame(rows, columns=["stage", "what", "metric", "A", "B", "B - A", "better"])


def metrics_frame(runs: list[Run], keys: list[str] | None = None) -> pd.DataFrame:
    """Long format for a plot of the metrics stage by stage: stage, order, metric, value, run."""
    keys = keys or list(METRICS)
    rows = []
    for run in runs:
        for stage in sorted(run.results, key=stage_key):
            row = run.row(stage)
            for key in keys:
                if number(row.get(key)) is not None:
                    rows.append({"stage": stage, "order": _order(stage), "metric": METRICS.get(key, key),
                                 "value": number(row[key]), "run": run.name})
    return pd.DataFrame(rows, columns=["stage", "order", "metric", "value", "run"])


def _order(stage: str) -> int:
    number, letters = stage_key(stage)
    return number * 100 + (ord(letters[0]) - ord("a") + 1 if letters else 0)


def curve_frame(runs: list[Run], stage: str, column: str = "loss") -> pd.DataFrame:
    """Long format for a plot of one stage's logged `column` against the step: step, value, run."""
    frames = []
    for run in runs:
        frame = run.curves().get(stage)
        if frame is None or column not in frame:
            continue
        part = frame[["step", column]].dropna().rename(columns={column: "value"})
        frames.append(part.assign(run=run.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "value", "run"])
