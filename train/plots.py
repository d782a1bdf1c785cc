"""The pictures under a run's results table (OUT/results.md), as PNG files in OUT/plots, drawn with matplotlib (Agg)
from what occmllm.runs reads back from the run folder:

    plots/losses.png    each stage's loss curve (one panel per stage; the 3D expert's with its test grid IoU)
    plots/metrics.png   the evaluation stage by stage: Decision, Description, Reflection, routed to 3D, Decision
                        under 40% visible

    python train/plots.py runs/smoke          # (re)draw them for a run folder, e.g. one from an older run_all
"""

from __future__ import annotations

import argparse
import math
import textwrap
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python train/plots.py` from anywhere

from occmllm.runs import METRICS, Run, read_run, stage_key  # noqa: E402

FOLDER = "plots"


def draw_plots(out: Path) -> list[Path]:
    """Draw the run's pictures into OUT/plots; returns the files written (none when there is nothing to draw).
    Raises ImportError when matplotlib is missing (run_all says so in results.md and goes on)."""
    import matplotlib

    matplotlib.use("Agg")
    run = read_run(out)
    folder = Path(out) / FOLDER
    written = []
    curves = run.curves()
    if curves:
        folder.mkdir(exist_ok=True)
        written.append(_losses(run, curves, folder / "losses.png"))
    if any(run.row(s).get("decision") is not None for s in run.results):
        folder.mkdir(exist_ok=True)
        written.append(_metrics(run, folder / "metrics.png"))
    return written


def _losses(run: Run, curves: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = sorted(curves, key=stage_key)
    cols = min(4, len(stages))
    rows = math.ceil(len(stages) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat[len(stages):]:
        ax.axis("off")
    for ax, stage in zip(axes.flat, stages):
        frame = curves[stage]
        what = run.row(stage).get("what", "3D expert" if stage == "0" else "")
        loss = frame[["step", "loss"]].dropna() if "loss" in frame else frame.iloc[:0]
        ax.plot(loss["step"], loss["loss"], color="#4455cc", lw=0.8, alpha=0.45 if len(loss) > 20 else 1,
                label="loss")
        if len(loss) > 20:  # a moving average over ~5% of the steps
            ax.plot(loss["step"], loss["loss"].rolling(max(2, len(loss) // 20), min_periods=1).mean(),
                    color="#223399", lw=1.5, label="mean")
        ax.set_title(f"stage {stage}: {what}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if "test_grid_iou" in frame and frame["test_grid_iou"].notna().any():
            iou = frame[["step", "test_grid_iou"]].dropna()
            twin = ax.twinx()
            twin.plot(iou["step"], iou["test_grid_iou"], "o-", color="#cc6622", ms=3, lw=1)
            twin.set_ylabel("test grid IoU", fontsize=8, color="#cc6622")
            twin.tick_params(labelsize=7)
    fig.suptitle(f"{run.name}: loss by optimizer step", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _metrics(run: Run, path: Path) -> Path:
    import matplotlib.pyplot as plt

    stages = [s for s in sorted(run.results, key=stage_key) if run.row(s).get("decision") is not None]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    styles = {"decision": ("#223399", "o-", 2.2), "decision_visible_under_40": ("#cc3333", "s-", 1.6),
              "description": ("#44aa66", "^--", 1.2), "reflection": ("#aa66cc", "v--", 1.2),
              "routed_to_3d": ("#888888", "d:", 1.2)}
    for key, label in METRICS.items():
        values = [run.row(s).get(key) for s in stages]
        if all(v is None for v in values):
            continue
        color, style, width = styles[key]
        ax.plot(range(len(stages)), [math.nan if v is None else v for v in values], style, color=color, lw=width,
                ms=4, label=label)
    ax.set_xticks(range(len(stages)), [f"{s}\n" + textwrap.fill(str(run.row(s).get("what", "")), 13)
                                       for s in stages], fontsize=7)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("share of test photos", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{run.name}: the evaluation after each stage", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(out: Path, written: list[Path]) -> str:
    """The lines of results.md that show the pictures (paths relative to the run folder)."""
    titles = {"losses.png": "Loss of each stage", "metrics.png": "The metrics stage by stage"}
    return "".join(f"\n![{titles.get(p.name, p.stem)}]({p.relative_to(out).as_posix()})\n" for p in written)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python train/plots.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder (train/run_all.py --out)")
    args = parser.parse_args(argv)
    if not args.run.is_dir():
        sys.exit(f"error: {args.run}: no such folder")
    written = draw_plots(args.run)
    print("\n".join(str(p) for p in written) or f"{args.run}: nothing to draw (no loss.csv, no results.json)")


if __name__ == "__main__":
    main()
