"""Training on an export of the app: annotation store -> data_tools.export -> train/run_all.py stages 1, 3a and 4a.

    make_export(folder, dataset)                        # an export the way the app makes one (Store, judgments)
    train_each_stage_on_export(export_folder, tmp_path)  # stages 1, 3a, 4a, each from a fresh --out, tiny model

`train_each_stage_on_export` is meant for any export (the browser test passes one made in Chromium): it asserts that
every stage ran from the model it was given, trained exactly the parts the seed's table says, and read the export's
files (4a: the labels and the annotated self-corrections). The export needs at least one correction (sft.jsonl, read
by stage 1) and one preference pair (preferences.jsonl, stage 3a).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from occmllm import prompts

# a few optimizer steps a stage: enough to move every trained weight, seconds on a CPU
TINY_RUN = ["stages.1.max_steps=2", "stages.3a.max_steps=2", "stages.4a.max_steps=3", "stages.4a.batch_size=4",
            "stages.4a.max_new_tokens=4"]


def make_export(folder: Path, dataset: Path, n: int = 12) -> Path:
    """The export of a Store whose items are the first `n` Q1 photos of `dataset` (a toy dataset's train split), each
    with two candidate answers, judged by one annotator through the app's queue: A or B accepted, a wrong answer
    accepted and corrected, both bad and corrected; then `data_tools.export.export(store, folder / "export")`."""
    from occmllm.export import export
    from occmllm.store import Store, items_from_dataset

    store = Store(folder / "annotations")
    items = [i for i in items_from_dataset(dataset, split="train") if i.question == prompts.Q1][:n]
    store.add_items(items)
    plan = {}  # item id -> (choice, correction)
    for index, item in enumerate(items):
        right = prompts.parse_object(item.reference)
        wrong, other = [c for c in prompts.CLASSES if c != right][index % 5: index % 5 + 2]
        a, b, choice, correction = {
            0: (right, wrong, "A", None),  # the model's first answer right, accepted
            1: (wrong, right, "B", None),  # the second right, accepted
            2: (wrong, other, "both_bad", right),  # both wrong, corrected
            3: (wrong, other, "A", right),  # a wrong answer preferred, then corrected
        }[index % 4]
        store.set_candidates(item, prompts.identify_answer(a), prompts.identify_answer(b), "sample:0", "sample:1",
                             "default")
        plan[item.id] = (choice, correction and prompts.identify_answer(correction))
    while (item := store.next_item("ann")) is not None:
        choice, correction = plan[item.id]
        store.add_judgment("ann", item, choice, correction)
    export(store, folder / "export")
    return folder / "export"


def run_all(args: list) -> tuple[int, str]:
    """train/run_all.py in this process; (exit code, everything it printed)."""
    from train import run_all as recipe

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = recipe.main([str(a) for a in args])
    return code, text.getvalue()


def tiny_model(folder: Path) -> Path:
    from occmllm.default_model import DefaultModelConfig, build_default_model
    from tests.train.conftest import TINY

    if not (folder / "config.json").is_file():
        build_default_model(folder, DefaultModelConfig(**TINY))
    return folder


def train_each_stage_on_export(export_folder: Path, tmp_path: Path, model: Path | None = None) -> dict[str, str]:
    """`run_all.py --preset smoke --stages S --data EXPORT --model MODEL --out FRESH` for S = 1, 3a and 4a (a tiny
    model built in tmp_path unless `model` is given); asserts that each stage trained from MODEL exactly its parts
    (stages 3a and 4a start from it, with no stage 2, and say so), with no evaluation (an export has no test split),
    and that 4a read the export's labels and self-corrections. Returns each stage's console output."""
    from train.recipe_config import load_preset, stage_settings
    from train.run_all import BY_ID
    from train.data import DataDir, SCORE_EXPORT_ENTRIES
    from tests.train.test_stages import assert_trained_exactly, weights

    export_folder, tmp_path = Path(export_folder), Path(tmp_path)
    model = Path(model) if model else tiny_model(tmp_path / "tiny_model")
    export = DataDir(export_folder, SCORE_EXPORT_ENTRIES)
    assert export.is_export, f"{export_folder} is not an export of the app (no annotated_* entry in its meta.json)"
    printed = {}
    for stage in ("1", "3a", "4a"):
        out = tmp_path / f"run_{stage}"
        assert not out.exists(), f"{out}: not a fresh --out"
        code, text = run_all(["--preset", "smoke", "--stages", stage, "--data", export_folder, "--model", model,
                              "--out", out, *TINY_RUN])
        assert code == 0, text[-4000:]
        printed[stage] = text
        assert "no evaluation: " in text and (out / f"stage_{stage}" / "DONE").is_file(), text[-2000:]
        if stage != "1":  # no stage 2 before them: they start from the base model, and say so
            assert f"stage {stage} starts from the base model {model}" in text, text[-2000:]
        assert "on the export: " in text, text[-2000:]
        parts = set(stage_settings(load_preset("smoke"), BY_ID[stage])["parts"])
        assert_trained_exactly(weights(model), weights(out / f"stage_{stage}" / "model"), parts)

    score = export.require("Q1", "train")  # 4a: the labels (every judged identify item), else the corrections
    assert f"({score.annotation.name})" in printed["4a"]
    if export.source("self_correction", "train"):  # the supervised term on the annotated corrections was trained
        header, *rows = (tmp_path / "run_4a" / "stage_4a" / "loss.csv").read_text().splitlines()
        column = header.split(",").index("correction")
        assert rows and all(float(row.split(",")[column]) > 0 for row in rows), rows
    return printed
