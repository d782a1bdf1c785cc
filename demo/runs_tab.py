"""The Runs tab: what training did, read from the run folders under `python -m demo --runs DIR` (default runs/).

The runs found there with their preset, date and final Decision; for a chosen run its results table, its curves
(the logged loss, learning rate, rewards, KL of each stage, as Gradio plots) and the time of every piece; a second run
beside it with the differences marked; "Open in Explore" puts the run's final model into Explore's model box. Read
only: nothing here starts or stops training. Folders that are half written, from an older run_all or no run at all are
listed with a note (occmllm.runs reads them).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from demo import views
from occmllm import runs as run_folders

NONE = "(none)"
SKIP_CURVES = {"step", "epoch", "seconds", "stage"}  # columns of loss.csv that are no curve
# the Explore tab's button, clicked in the page after its model box got the run's model
SHOW_EXPLORE = """() => { const tab = [...document.querySelectorAll('button[role="tab"]')]
    .find(b => b.innerText.trim() === 'Explore'); if (tab) tab.click(); }"""


def build(root: str | Path, explore_model: gr.Dropdown | None = None, models: tuple[str, ...] = ("default",)) -> gr.Tab:
    """The Runs tab inside the app's Blocks; `explore_model`: Explore's model dropdown, which "Open in Explore" sets
    (its choices then: `models`, the ones Explore started with, and the run's model)."""
    root = Path(root)
    with gr.Tab("Runs", id="runs") as tab:
        with gr.Row():
            gr.Markdown(f"### Training runs in `{views.esc(root)}`\nRead from the run folders that "
                        "`python train/run_all.py --out DIR` writes; this tab never starts or stops training.",
                        elem_id="runs-title")
            refresh = gr.Button("Refresh", scale=0, elem_id="btn-runs-refresh")
        table = gr.Dataframe(label="Runs (newest first)", interactive=False, max_height=260, elem_id="runs-table")
        with gr.Row():
            chosen = gr.Dropdown([], label="Run", scale=3, elem_id="run-choice")
            other = gr.Dropdown([NONE], value=NONE, label="Compare with (B)", scale=3, elem_id="compare-choice",
                                info="e.g. the run before training on the annotators' export")
            open_button = gr.Button("Open in Explore", scale=1, elem_id="btn-open-run",
                                    interactive=explore_model is not None)
        about = gr.HTML("", elem_id="run-about")
        results = gr.HTML("", elem_id="run-results")
        with gr.Row():
            stage = gr.Dropdown([], label="Stage", scale=1, elem_id="curve-stage")
            column = gr.Dropdown(["loss"], value="loss", label="Curve", scale=1, elem_id="curve-column")
        with gr.Row(equal_height=False):
            curve = gr.LinePlot(None, x="step", y="value", color="run",
                                label="Logged curve", elem_id="run-curve")
            metrics = gr.LinePlot(None, x="stage", y="value",
                                  color="series", label="Metrics stage by stage", y_lim=[0, 1],
                                  elem_id="run-metrics")
        timing = gr.Dataframe(label="Time of every piece (seconds)", interactive=False, max_height=300,
                              elem_id="run-timing")

        def listing(current=None, current_other=None):
            try:
                return _listing(current, current_other)
            except Exception as error:  # noqa: BLE001 - a folder nobody foresaw: said on the page, not an error page
                return (pd.DataFrame([{"run": "", "note": f"cannot list {root}: {error}"}]), gr.update(), gr.update(),
                        *shown_error(error))

        def show(name, name_other, stage_id=None, curve_name="loss"):
            try:
                return _show(name, name_other, stage_id, curve_name)
            except Exception as error:  # noqa: BLE001 - as above
                return shown_error(error)

        def shown_error(error):
            return ("", views.banner(f"cannot show this run: {views.esc(error)}", "error"), gr.update(), gr.update(),
                    gr.update(), gr.update(), gr.update())

        def _listing(current=None, current_other=None):
            found = run_folders.find_runs(root)
            rows = pd.DataFrame([r.summary() for r in found],
                                columns=["run", "preset", "date", "stages done", "final Decision", "note"])
            names = [r.name for r in found if r.is_run]
            pick = current if current in names else (names[0] if names else None)
            pick_other = current_other if current_other in names else NONE
            if not found:
                rows = pd.DataFrame([{"run": "", "note": f"no run folders in {root} yet: python train/run_all.py "
                                      f"--out {root}/NAME"}])
            return (rows, gr.update(choices=names, value=pick), gr.update(choices=[NONE, *names], value=pick_other),
                    *show(pick, pick_other))

        def _show(name, name_other, stage_id=None, curve_name="loss"):
            a = run_folders.read_run_again(root / name) if name else None
            b = run_folders.read_run_again(root / name_other) if name_other and name_other != NONE else None
            if a is None:
                empty = pd.DataFrame(columns=["step", "value", "run"])
                return ("", views.banner("No run to show.", "info"), gr.update(choices=[], value=None),
                        gr.update(choices=["loss"], value="loss"), empty,
                        pd.DataFrame(columns=["stage", "value", "series"]), pd.DataFrame())
            pair = [a] + ([b] if b is not None else [])
            stages = sorted({s for r in pair for s in r.curves()}, key=run_folders.stage_key)
            first = next((s for s in stages if s != "0"), stages[0] if stages else None)  # a VLM stage first
            stage_id = stage_id if stage_id in stages else first
            columns = sorted({c for r in pair for c in (r.curves().get(stage_id, pd.DataFrame()).columns)
                              if c not in SKIP_CURVES}, key=lambda c: (c != "loss", c))
            curve_name = curve_name if curve_name in columns else (columns[0] if columns else "loss")
            curves = run_folders.curve_frame(pair, stage_id, curve_name) if stage_id else None
            return (about_html(pair), results_html(a, b), gr.update(choices=stages, value=stage_id),
                    gr.update(choices=columns or ["loss"], value=curve_name),
                    plot(curves if curves is not None else pd.DataFrame(columns=["step", "value", "run"]), "run"),
                    plot(metrics_plot(a, b), "series"), timing_frame(a, b))

        shown = [about, results, stage, column, curve, metrics, timing]
        view = "runs-view"  # every listener that redraws the view: answered in the order asked (views.in_order)
        refresh.click(listing, [chosen, other], [table, chosen, other, *shown], api_name="runs", **views.in_order(view))
        tab.select(listing, [chosen, other], [table, chosen, other, *shown], api_visibility="private",
                   **views.in_order(view))
        for box in (chosen, other):
            box.input(show, [chosen, other], shown, api_visibility="private", **views.follows_last(view))
        for box in (stage, column):
            box.input(show, [chosen, other, stage, column], shown, api_visibility="private", **views.follows_last(view))

        if explore_model is not None:
            def open_fn(name):
                run = run_folders.read_run_again(root / name) if name else None
                model = run.final_model if run else None
                if model is None:
                    return gr.update(), views.banner(f"{views.esc(name or 'no run')}: no trained model to open "
                                                     "(no final/ and no stage model)", "warn")
                choices = list(dict.fromkeys([*models, str(model)]))
                return (gr.update(choices=choices, value=str(model)),
                        views.banner(f"Explore now uses <code>{views.esc(model)}</code>.", "ok"))

            open_button.click(open_fn, [chosen], [explore_model, about], api_name="open_run").then(
                None, js=SHOW_EXPLORE)
    return tab


COLORS = {"Decision": "#223399", "Decision (visible < 40%)": "#cc3333", "Description": "#44aa66",
          "Reflection": "#aa66cc", "routed to 3D": "#888888", "Decision · A": "#8f9be0", "Decision · B": "#223399",
          "Decision (visible < 40%) · A": "#eda3a3", "Decision (visible < 40%) · B": "#cc3333"}


def plot(frame: pd.DataFrame, color: str):
    """A plot's new value with its legend naming the frame's series: Gradio's plot sets its colour scale when it is
    drawn and only swaps the data on a new value, so a series it did not have would not be drawn; a changed legend
    list draws it anew."""
    series = list(dict.fromkeys(frame[color])) if len(frame) else []
    colors = {name: COLORS[name] for name in series if name in COLORS}
    return gr.update(value=frame, colors_in_legend=series or None,
                     color_map=colors if len(colors) == len(series) and series else None)


def about_html(pair: list[run_folders.Run]) -> str:
    """A line per run: its preset, dates, tracker, command, final model, and notes as warnings."""
    parts = []
    for label, run in zip("AB", pair):
        model = run.final_model
        line = (f"<b>{label}: {views.esc(run.name)}</b> · preset {views.esc(run.preset or '?')} · started "
                f"{views.esc((run.started or '?').replace('T', ' '))}"
                + (f" · finished {views.esc(run.finished.replace('T', ' '))}" if run.finished else "")
                + (f" · tracker {views.esc(run.report_to)}" if run.report_to else "")
                + (f" · final model <code>{views.esc(model)}</code>" if model else " · no trained model")
                + (f"<br><code>{views.esc(run.info['command'])}</code>" if run.info.get("command") else ""))
        kind = "warn" if run.notes else "info"
        parts.append(views.banner(line + "".join(f"<br>{views.esc(n)}" for n in run.notes), kind))
    return "".join(parts)


def _cell(value) -> str:
    return "-" if not isinstance(value, (int, float)) or value != value else f"{value:.4f}"  # (NaN: missing)


def results_html(a: run_folders.Run, b: run_folders.Run | None) -> str:
    """The results table of A, or A and B side by side with B - A marked (green: B better, red: B worse)."""
    metrics = list(run_folders.METRICS.items())
    head = "".join(f"<th>{views.esc(label)}</th>" for _, label in metrics)
    rows = []
    if b is None:
        frame = a.results_frame()
        if frame.empty:
            return views.banner(f"{views.esc(a.name)}: no evaluation rows (results.json) yet.", "info")
        for _, row in frame.iterrows():
            cells = "".join(f"<td>{_cell(row[label])}</td>" for _, label in metrics)
            rows.append(f"<tr><td>{views.esc(row['stage'])}</td><td>{views.esc(row['what'])}</td>{cells}"
                        f"<td>{views.esc(row['n'] if pd.notna(row['n']) else '-')}</td>"
                        f"<td>{views.esc(row['minutes'] if pd.notna(row['minutes']) else '-')}</td></tr>")
        return (f'<table class="runs-results"><tr><th>stage</th><th>what</th>{head}<th>n</th><th>minutes</th></tr>'
                + "".join(rows) + "</table>" + RESULTS_CSS)
    frame = run_folders.compare(a, b)
    if frame.empty:
        return views.banner("Neither run has evaluation rows (results.json) to compare.", "info")
    for stage_id, part in frame.groupby("stage", sort=False):
        by_metric = {row["metric"]: row for _, row in part.iterrows()}
        cells = []
        for _, label in metrics:
            row = by_metric.get(label)
            if row is None:
                cells.append("<td>-</td>")
                continue
            diff = row["B - A"]
            mark = {1: ("better", "▲"), -1: ("worse", "▼")}.get(int(row["better"]), ("same", ""))
            change = (f' <span class="{mark[0]}">{mark[1]} {diff:+.4f}</span>' if diff is not None and pd.notna(diff)
                      and abs(diff) > 1e-9 else "")
            cells.append(f"<td>{_cell(row['A'])} → {_cell(row['B'])}{change}</td>")
        rows.append(f"<tr><td>{views.esc(stage_id)}</td><td>{views.esc(part['what'].iloc[0])}</td>{''.join(cells)}</tr>")
    return (f'<table class="runs-results compare"><caption>A = {views.esc(a.name)} → B = {views.esc(b.name)}; '
            '<span class="better">▲ B better</span>, <span class="worse">▼ B worse</span> (routed to 3D: neither)'
            f'</caption><tr><th>stage</th><th>what</th>{head}</tr>' + "".join(rows) + "</table>" + RESULTS_CSS)


RESULTS_CSS = """<style>
.runs-results { border-collapse: collapse; font-size: 0.9em; margin: 4px 0; }
.runs-results th, .runs-results td { border: 1px solid #ccd; padding: 3px 8px; text-align: right; }
.runs-results td:nth-child(2), .runs-results th:nth-child(2) { text-align: left; }
.runs-results caption { text-align: left; padding: 4px 0; }
.runs-results .better { color: #1a7f37; font-weight: 600; } .runs-results .worse { color: #c62828; font-weight: 600; }
</style>"""


def metrics_plot(a: run_folders.Run, b: run_folders.Run | None) -> pd.DataFrame:
    """Every metric stage by stage for one run; Decision and Decision under 40% for both runs of a comparison."""
    if b is None:
        frame = run_folders.metrics_frame([a])
        return frame.assign(series=frame["metric"])[["stage", "value", "series"]]
    frame = run_folders.metrics_frame([a, b], ["decision", "decision_visible_under_40"])
    label = {a.name: "A", b.name: "B"}
    return frame.assign(series=frame["metric"] + " · " + frame["run"].map(label))[["stage", "value", "series"]]


def timing_frame(a: run_folders.Run, b: run_folders.Run | None) -> pd.DataFrame:
    first = a.timing_frame().rename(columns={"seconds": f"A: {a.name}"})
    if b is None:
        return first if not first.empty else pd.DataFrame({"piece": ["(no timing.json: the run has not finished)"]})
    second = b.timing_frame().rename(columns={"seconds": f"B: {b.name}"})
    order = list(dict.fromkeys([*first["piece"], *second["piece"]]))  # A's pieces in run order, then B's others
    both = pd.DataFrame({"piece": order}).merge(first, on="piece", how="left").merge(second, on="piece", how="left")
    both["B - A"] = both.iloc[:, 2] - both.iloc[:, 1]
    return both.round(1)
