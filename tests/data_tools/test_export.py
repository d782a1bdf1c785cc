"""data_tools.export: the rules that turn judgments into training data, and that the export validates."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import validate
from data_tools.export import main
from occmllm.export import export, export_zip
from occmllm import formats, prompts
from occmllm.store import Item, Store, StoreError

JAR, BOTTLE, BOWL = (prompts.identify_answer(c) for c in ("jar", "bottle", "bowl"))


def item(tmp_path: Path, i: int, a=JAR, b=BOTTLE, question=prompts.Q1) -> Item:
    (tmp_path / "img").mkdir(exist_ok=True)
    path = tmp_path / "img" / f"{i:08d}.jpg"
    Image.fromarray(np.full((16, 16, 3), 10 + i, np.uint8)).save(path)
    return Item(f"item{i}", str(path), question, a, b, "sample:0", "sample:1", "tiny")


def judge(store: Store, votes: dict[str, list[tuple[str, str | None]]], overlap: int = 1) -> None:
    for name, choices in votes.items():
        for choice, correction in choices:
            store.add_judgment(name, store.next_item(name, overlap=overlap), choice, correction)


def pairs_of(out: Path) -> list[formats.PreferencePair]:
    path = out / "preferences.jsonl"
    return formats.read_preferences(path) if path.exists() else []


def test_rules_ties_both_bad_and_winner(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0), item(tmp_path, 1), item(tmp_path, 2), item(tmp_path, 3)])
    judge(store, {"ann": [("B", None), ("tie", None), ("both_bad", BOWL), ("both_bad", None)]})
    summary = export(store, tmp_path / "out")
    pairs = pairs_of(tmp_path / "out")
    got = {(p.chosen, p.rejected) for p in pairs}
    assert got == {(BOTTLE, JAR), (BOWL, JAR), (BOWL, BOTTLE)}, "B better -> (B, A); tie -> none; both bad + fix -> 2"
    assert summary.left_out == {"ties": 1, "'both bad' without a correction": 1}
    sft = formats.read_conversations(tmp_path / "out" / "sft.jsonl")
    assert [c.turns("gpt") for c in sft] == [[BOWL]]
    fixes = formats.read_conversations(tmp_path / "out" / "self_correction.jsonl")
    assert len(fixes) == 1 and fixes[0].turns("gpt")[-1] == BOWL
    assert all((tmp_path / "out" / "images" / p.image).exists() for p in pairs)


def test_majority_vote_and_no_majority(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0), item(tmp_path, 1)])
    judge(store, {"ann": [("A", None), ("A", None)], "bob": [("A", None), ("B", None)],
                  "cat": [("B", None)]}, overlap=3)
    summary = export(store, tmp_path / "out")
    # item0: A, A, B -> A wins; item1: A, B -> no majority
    assert [(p.chosen, p.rejected) for p in pairs_of(tmp_path / "out")] == [(JAR, BOTTLE)]
    assert summary.left_out == {"items without a majority": 1}


def test_duplicates_merged(tmp_path):
    """The same photo uploaded twice (two items) and judged the same way gives one pair and one image."""
    store = Store(tmp_path / "data")
    first = item(tmp_path, 0)
    copy = Item("again", first.image, first.question, first.candidate_a, first.candidate_b)
    store.add_items([first, copy])
    judge(store, {"ann": [("A", None), ("A", None)]})
    summary = export(store, tmp_path / "out")
    assert summary.pairs == 1 and summary.images == 1


def test_correction_beyond_winner_and_unreadable_answers(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0), item(tmp_path, 1, a="zxq blorp", b=JAR)])
    judge(store, {"ann": [("A", BOWL), ("B", None)]})
    summary = export(store, tmp_path / "out")
    got = {(p.chosen, p.rejected) for p in pairs_of(tmp_path / "out")}
    assert got == {(JAR, BOTTLE), (BOWL, JAR), (BOWL, BOTTLE)}
    assert summary.left_out == {"pairs with an answer that is not a class / yes-no": 1}


def test_export_validates_and_trl_matches(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0), item(tmp_path, 1, a="Yes.", b="No.", question=prompts.Q6_PREFERENCE)])
    judge(store, {"ann": [("both_bad", BOWL), ("B", None)]})
    out = tmp_path / "out"
    export(store, out)
    report = validate.validate([out / "meta.json", out / "preferences_trl.jsonl"])
    assert report.errors == [], report.errors
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) == {"annotated_preferences", "annotated_sft", "annotated_self_correction", "annotated_labels"}
    labels = formats.read_conversations(out / "labels.jsonl")  # the identify item's answer: the correction
    assert [c.turns("gpt") for c in labels] == [[BOWL]] and report.errors == []
    trl = [json.loads(line) for line in (out / "preferences_trl.jsonl").read_text().splitlines()]
    seed = pairs_of(out)
    assert [formats.from_trl_preference(r, "images").to_dict() for r in trl] == [p.to_dict() for p in seed]
    assert all((out / r["images"][0]).exists() for r in trl)


def test_cli_and_zip(tmp_path, capsys):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0)])
    judge(store, {"ann": [("A", None)]})
    assert main(["--db", str(tmp_path / "data" / "annotations.sqlite"), "--out", str(tmp_path / "out")]) == 0
    assert "1 preference pairs" in capsys.readouterr().out
    summary = export_zip(store, tmp_path / "export.zip")
    names = zipfile.ZipFile(tmp_path / "export.zip").namelist()
    assert {"meta.json", "preferences.jsonl", "preferences_trl.jsonl", "summary.json"} <= set(names)
    assert any(n.startswith("images/") for n in names) and summary.pairs == 1


def test_nothing_to_export(tmp_path, capsys):
    store = Store(tmp_path / "data")
    store.add_items([item(tmp_path, 0)])
    judge(store, {"ann": [("tie", None)]})
    with pytest.raises(StoreError, match="nothing to export"):
        export(store, tmp_path / "out")
    assert main(["--db", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    assert "no annotation database" in capsys.readouterr().err


def test_export_is_training_data_for_the_mpo_and_sft_stages(tmp_path, capsys):
    """The exported folder, as it is, is `--data` of train/run_all.py: the smoke preset's MPO stage (3a) trains on its
    preference pairs and an SFT stage (1) on its corrected answers (tiny model, a few seconds)."""
    from occmllm.default_model import DefaultModelConfig, build_default_model
    from tests.train.conftest import TINY
    from train import run_all

    store = Store(tmp_path / "data")
    questions = [prompts.Q1, prompts.Q6_PREFERENCE]
    store.add_items([item(tmp_path, i, *((JAR, BOTTLE) if i % 2 == 0 else ("Yes.", "No.")), question=questions[i % 2])
                     for i in range(8)])
    judge(store, {"ann": [("A", None), ("B", None), ("both_bad", BOWL), ("A", None)] * 2})
    summary = export(store, tmp_path / "export")
    assert summary.pairs >= 4 and summary.sft >= 1

    out = tmp_path / "run"
    model = build_default_model(tmp_path / "tiny", DefaultModelConfig(**TINY))
    import shutil

    shutil.copytree(model, out / "stage_2" / "model")  # stage 3a continues stage 2's model
    for stage in ("3a", "1"):
        code = run_all.main(["--preset", "smoke", "--stages", stage, "--data", str(tmp_path / "export"), "--model",
                             str(model), "--out", str(out), "evaluate.enabled=false"])
        text = capsys.readouterr()
        assert code == 0, text.out + text.err
        assert (out / f"stage_{stage}" / "DONE").is_file() and (out / f"stage_{stage}" / "model" / "config.json").is_file()
