"""occmllm.runs reads run folders back as run_all wrote them, and folders that are half written, from an older
run_all or no run at all come back with a note instead of an error."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from occmllm import runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """root/a: stages 1 and 2 of run_all on a toy dataset; root/b: the same, stage 1 trained longer."""
    from occmllm.default_model import DefaultModelConfig, build_default_model
    from tests.train.conftest import TINY
    from tests.train.toy_data import make_toy_dataset
    from train import run_all

    root = tmp_path_factory.mktemp("runs")
    data = make_toy_dataset(root.parent / "toy", n_train=32, n_test=12)
    model = build_default_model(root.parent / "tiny", DefaultModelConfig(**TINY))
    for name, epochs in (("a", 1), ("b", 6)):
        code = run_all.main(["--preset", "smoke", "--data", str(data), "--model", str(model), "--out", str(root / name),
                             "--stages", "1", "2", "--report-to", "none", f"stages.1.epochs={epochs}",
                             "evaluate.expert=none"])
        assert code == 0
    return root


def test_a_run_reads_back_as_run_all_wrote_it(two_runs):
    run = runs.read_run(two_runs / "a")
    results = json.loads((two_runs / "a" / "results.json").read_text())
    assert run.is_run and run.notes == [] and run.preset == "smoke" and run.planned == run.done == ["1", "2"]
    assert run.final_stage == "2" and run.final_decision == results["2"]["decision"]
    assert run.final_model == two_runs / "a" / "stage_2" / "model"  # no 4c in this run: the last stage's model
    frame = run.results_frame()
    assert list(frame["stage"]) == ["1", "2"] and list(frame["Decision"]) == [results["1"]["decision"],
                                                                            results["2"]["decision"]]
    with open(two_runs / "a" / "stage_1" / "loss.csv", newline="") as f:
        logged = list(csv.DictReader(f))
    curve = run.curves()["1"]
    assert list(curve["step"]) == [int(r["step"]) for r in logged]
    assert list(curve["loss"]) == pytest.approx([float(r["loss"]) for r in logged])
    timing = json.loads((two_runs / "a" / "timing.json").read_text())
    pieces = run.timing_frame().set_index("piece")["seconds"]
    assert pieces["stage 1"] == timing["pieces"]["stage 1"] and pieces["whole run"] == timing["total_s"]


def test_two_runs_compared_stage_by_stage(two_runs):
    a, b = runs.read_run(two_runs / "a"), runs.read_run(two_runs / "b")
    table = runs.compare(a, b)
    for _, row in table.iterrows():
        key = next(k for k, label in runs.METRICS.items() if label == row["metric"])
        va, vb = a.results[row["stage"]][key], b.results[row["stage"]][key]
        assert (row["A"], row["B"]) == (va, vb) and row["B - A"] == pytest.approx(vb - va)
        expected = 0 if key == "routed_to_3d" or vb == va else (1 if vb > va else -1)
        assert row["better"] == expected
    assert len(table) == 2 * len(runs.METRICS)
    steps = runs.curve_frame([a, b], "1").groupby("run")["step"].max()
    assert steps["b"] > steps["a"]  # b trained stage 1 longer


def test_broken_older_and_foreign_folders_are_listed_with_a_note(two_runs, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(two_runs / "a", root / "good")
    half = shutil.copytree(two_runs / "a", root / "half")  # killed while writing its results, stage 2 unfinished
    (half / "results.json").write_text((half / "results.json").read_text()[:40])
    (half / "stage_2" / "DONE").unlink()
    (half / "timing.json").unlink()
    info = json.loads((half / "run.json").read_text())
    info.pop("finished")
    (half / "run.json").write_text(json.dumps(info))
    with open(half / "stage_1" / "loss.csv", "a") as f:
        f.write("99,0.5")  # a row cut short
    older = shutil.copytree(two_runs / "b", root / "older")
    (older / "run.json").unlink()  # run_all before run.json
    odd = shutil.copytree(two_runs / "a", root / "odd")  # JSON that is no run_all's: not rows, not numbers
    (odd / "results.json").write_text(json.dumps({"1": 0.5, "2": {"decision": "high"}}))
    (odd / "timing.json").write_text(json.dumps({"pieces": ["stage 1"], "total_s": "long"}))
    (odd / "stage_2" / "loss.csv").write_bytes(b"step,loss\n\x00\xff\xfe,\x00\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("compare with b\n")
    (root / "empty").mkdir()
    (root / "stray.txt").write_text("not a folder")

    found = {run.name: run for run in runs.find_runs(root)}
    assert set(found) == {"good", "half", "older", "odd", "notes", "empty"}
    odd_run = found["odd"]
    assert odd_run.final_decision is None and odd_run.results_frame()["Decision"].isna().all()
    assert odd_run.timing_frame().empty and runs.compare(odd_run, found["good"])["A"].isna().all()
    assert "2" not in odd_run.curves() or odd_run.curves()["2"]["loss"].isna().all()
    assert found["good"].notes == []
    assert any("results.json unreadable" in n and "half written" in n for n in found["half"].notes)
    assert "unfinished: 1 of 2 stages done (stage 2 running or stopped)" in found["half"].notes
    assert found["half"].final_decision is None and found["half"].summary()["final Decision"] == "-"
    assert list(found["half"].curves()["1"]["step"])[-1] != 99  # the cut row is left out
    assert found["older"].notes == ["from an older run_all (no run.json): preset unknown"]
    assert found["older"].final_decision == json.loads((older / "results.json").read_text())["2"]["decision"]
    for name in ("notes", "empty"):
        assert not found[name].is_run and found[name].notes[0].startswith("not a run")
    order = [run.name for run in runs.find_runs(root)]
    assert set(order[-2:]) == {"notes", "empty"}  # runs first
    assert runs.find_runs(tmp_path / "nowhere") == []


def test_a_run_is_read_again_only_when_its_files_change(tmp_path):
    """read_run_again (the Runs tab's reader): the same Run while nothing changed, a fresh one after a stage writes."""
    import json
    import os

    from occmllm import runs

    run = tmp_path / "r"
    (run / "stage_1").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"1": {"decision": 0.5, "what": "SFT"}}))
    (run / "stage_1" / "loss.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    first = runs.read_run_again(run)
    assert runs.read_run_again(run) is first and first.final_decision == 0.5
    (run / "results.json").write_text(json.dumps({"1": {"decision": 0.75, "what": "SFT"}}))
    later = os.stat(run / "results.json").st_mtime_ns + 10**9  # a later write, whatever the clock's resolution
    os.utime(run / "results.json", ns=(later, later))
    again = runs.read_run_again(run)
    assert again is not first and again.final_decision == 0.75
