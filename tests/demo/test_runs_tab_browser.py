"""The Runs tab in a real browser (Playwright + Debian's Chromium, headless), on run folders made by train/run_all.py:
a smoke run with its curves drawn, two runs compared with their differences marked, a run killed mid-stage and a
folder that is no run listed with their notes, and "Open in Explore" answering with the run's final model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from occmllm import runs as run_folders
from tests.demo.conftest import BoxExpert, chromium_page, free_port
from train import run_all

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """runs/smoke: the smoke preset, every stage; runs/longer: stages 1 and 2 again on its data, stage 1 trained
    longer; runs/killed: killed while stage 1 trains; runs/notes: a folder of notes, no run."""
    root = tmp_path_factory.mktemp("runs")
    assert run_all.main(["--preset", "smoke", "--out", str(root / "smoke")]) == 0
    smoke = root / "smoke"
    common = ["--preset", "smoke", "--data", str(smoke / "data"), "--model", str(smoke / "base"), "--stages", "1", "2",
              "stages.1.renders=false", "evaluate.limit=16"]
    assert run_all.main(common + ["--out", str(root / "longer"), "stages.1.epochs=12"]) == 0
    killed = root / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "train" / "run_all.py"), *common, "--out", str(killed),
                                "stages.1.epochs=400", "--report-to", "none"],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and \
            len((killed / "stage_1" / "loss.csv").read_text().splitlines() if (killed / "stage_1" / "loss.csv").is_file() else []) < 5:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (root / "notes").mkdir()
    (root / "notes" / "ideas.txt").write_text("try a larger stage 1\n")
    return root


@pytest.fixture(scope="module")
def app_url(runs_root, tmp_path_factory):
    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    studio = Studio(StudioConfig(tmp_path_factory.mktemp("studio") / "data", expert="box",
                                 experts={"box": BoxExpert()}, runs_dir=runs_root))
    studio.model("default")
    app, url = serve(studio, port=free_port(), block=False, quiet=True)
    yield studio, url
    app.close()


@pytest.fixture(scope="module")
def page(app_url):
    with chromium_page(app_url[1]) as page:
        yield page


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.locator(f"{dropdown} [role=option][aria-label='{option}']").click()


def table_rows(page, table: str) -> dict[str, list[str]]:
    """{first cell: cells} of every body row of a table on the page."""
    rows = page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' tr, ' + sel + ' [role=row]')]
        .map(tr => [...tr.querySelectorAll('td, [role=gridcell]')].map(td => td.innerText.trim()))
        .filter(r => r.length)""", table)
    return {row[0]: row for row in rows}


def line_points(page, plot: str) -> list[int]:
    """The number of points of every line Vega drew in the plot (its SVG paths' segments)."""
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' svg .mark-line path')]
        .map(p => (p.getAttribute('d') || '').split(/[ML]/).filter(s => s.trim()).length)""", plot)


def first_read_slow(monkeypatch) -> list:
    """Make the next answer's first run-folder read take 3 s; returns the list of folders read from now on."""
    original, calls = run_folders.read_run_again, []

    def read(path):
        calls.append(path)
        if len(calls) == 1:
            time.sleep(3)
        return original(path)

    monkeypatch.setattr(run_folders, "read_run_again", read)
    return calls


def wait_until_quiet(calls: list) -> None:
    """Until no run folder has been read for 3 s (at most 30 s), then a second for the last answer to be drawn."""
    deadline, seen = time.time() + 30, -1
    while time.time() < deadline and len(calls) != seen:
        seen = len(calls)
        time.sleep(3)
    time.sleep(1)


def test_runs_are_listed_with_their_notes(page, runs_root):
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_function("() => document.querySelector('#runs-table') && "
                           "document.querySelector('#runs-table').innerText.includes('notes')", timeout=30000)
    rows = table_rows(page, "#runs-table")
    smoke = json.loads((runs_root / "smoke" / "results.json").read_text())
    # run, preset, date, stages done, final Decision, note
    assert rows["smoke"][1] == "smoke" and rows["smoke"][3] == "8/8" and rows["smoke"][5] == ""
    assert rows["smoke"][4] == f"{smoke['4c']['decision']:.4f}"
    assert rows["killed"][3] == "0/2" and rows["killed"][5] == "unfinished: 0 of 2 stages done (stage 1 running or stopped)"
    assert rows["notes"][5].startswith("not a run")


def test_a_smoke_run_shows_its_results_curves_and_times(page, runs_root):
    choose(page, "#run-choice", "smoke")
    page.wait_for_function("() => document.querySelector('#run-results').innerText.includes('SFT CoT mix')",
                           timeout=30000)
    results = json.loads((runs_root / "smoke" / "results.json").read_text())
    text = page.inner_text("#run-results")
    for stage in ("1", "2", "3a", "3b", "4a", "4b", "4c"):
        assert f"{results[stage]['decision']:.4f}" in text and results[stage]["what"] in text
    # the loss curve of stage 1, drawn: one line through every logged step
    page.wait_for_function("() => document.querySelectorAll('#run-curve svg .mark-line path').length > 0",
                           timeout=30000)
    steps = len(run_folders.read_run(runs_root / "smoke").curves()["1"])
    assert line_points(page, "#run-curve") == [steps] and steps > 1
    # the metrics stage by stage: one line per metric
    page.wait_for_function("() => document.querySelectorAll('#run-metrics svg .mark-line path').length >= 5",
                           timeout=30000)
    assert all(n == 7 for n in line_points(page, "#run-metrics"))  # stages 1 to 4c
    timing = json.loads((runs_root / "smoke" / "timing.json").read_text())
    assert f"{timing['pieces']['stage 1']}" in page.inner_text("#run-timing")
    assert "python train/run_all.py --preset smoke" in page.inner_text("#run-about")


def test_two_runs_side_by_side_with_the_differences_marked(page, runs_root):
    choose(page, "#run-choice", "smoke")
    choose(page, "#compare-choice", "longer")
    page.wait_for_selector("#run-results table.compare", timeout=30000)
    a = json.loads((runs_root / "smoke" / "results.json").read_text())
    b = json.loads((runs_root / "longer" / "results.json").read_text())
    rows = table_rows(page, "#run-results table.compare")
    for stage in ("1", "2"):
        before, after = a[stage]["decision"], b[stage]["decision"]
        cell = rows[stage][2]  # stage, what, Decision, ...
        assert cell.startswith(f"{before:.4f} → {after:.4f}")
        if after > before:
            assert f"▲ {after - before:+.4f}" in cell
        elif after < before:
            assert f"▼ {after - before:+.4f}" in cell
        else:
            assert "▲" not in cell and "▼" not in cell
    assert rows["4c"][2] == f"{a['4c']['decision']:.4f} → -"  # B has no stage 4c
    # stage 1's loss of both runs in one plot, each line through its own steps
    page.wait_for_function("() => document.querySelectorAll('#run-curve svg .mark-line path').length == 2",
                           timeout=30000)
    curves = [len(run_folders.read_run(runs_root / name).curves()["1"]) for name in ("smoke", "longer")]
    assert sorted(line_points(page, "#run-curve")) == sorted(curves) and curves[1] > curves[0]
    timing = page.inner_text("#run-timing")
    assert "A: smoke" in timing and "B: longer" in timing and "B - A" in timing


def test_the_last_choice_wins_when_two_are_made_quickly(page, runs_root, monkeypatch):
    """A run chosen, then at once a run to compare with: the page ends on the comparison even when the first
    choice's answer is the slower one (both choices' answers go through one queue, in the order they were made)."""
    choose(page, "#compare-choice", "(none)")
    page.wait_for_function("() => !document.querySelector('#run-results table.compare')", timeout=30000)
    calls = first_read_slow(monkeypatch)  # the first choice's answer is slow
    choose(page, "#run-choice", "longer")
    choose(page, "#compare-choice", "smoke")
    page.wait_for_selector("#run-results table.compare", timeout=30000)
    wait_until_quiet(calls)
    assert len(calls) >= 3  # the first choice's read and the comparison's two
    assert page.locator("#run-results table.compare").count() == 1
    page.wait_for_function("() => document.querySelectorAll('#run-curve svg .mark-line path').length == 2",
                           timeout=30000)


def test_a_run_chosen_again_while_the_first_answer_is_pending_is_shown(page, runs_root, monkeypatch):
    """The same dropdown changed twice before its first answer came: the page ends on the second run."""
    choose(page, "#compare-choice", "(none)")
    page.wait_for_function("() => !document.querySelector('#run-results table.compare')", timeout=30000)
    choose(page, "#run-choice", "longer")
    page.wait_for_function("() => !document.querySelector('#run-results').innerText.includes('SFT CoT mix')",
                           timeout=30000)
    calls = first_read_slow(monkeypatch)
    choose(page, "#run-choice", "smoke")
    choose(page, "#run-choice", "longer")
    wait_until_quiet(calls)
    assert [path.name for path in calls][-1] == "longer"
    assert "SFT CoT mix" not in page.inner_text("#run-results")  # longer has stages 1 and 2 only; smoke has 4c


def test_open_in_explore_answers_with_the_runs_final_model(page, app_url, runs_root, photo):
    studio, _ = app_url
    choose(page, "#run-choice", "smoke")
    page.click("#btn-open-run")
    page.wait_for_selector("#photo", state="visible", timeout=30000)  # the Explore tab is shown
    final = str(runs_root / "smoke" / "final")
    page.get_by_role("button", name="Settings").click()
    assert page.get_by_label("Model").input_value() == final
    page.set_input_files("#photo input[type=file]", photo)
    page.wait_for_selector("#photo img", timeout=40000)
    page.click("#run")
    page.wait_for_selector("#final .final-answer", timeout=60000)
    assert final in studio._models  # the run's model answered
