"""The app's export (data_tools.export) as `--data` of train/run_all.py: stages 1, 3a and 4a each train on it from a
fresh --out, from the shipped default model or --model."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from occmllm import prompts

from tests.train.export_training import make_export, run_all, train_each_stage_on_export
from tests.train.toy_data import make_toy_dataset


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return make_export(root, make_toy_dataset(root / "dataset", n_train=16, n_test=4))


def test_the_export_has_every_file_the_stages_read(export_folder):
    meta = json.loads((export_folder / "meta.json").read_text())
    assert {"annotated_preferences", "annotated_sft", "annotated_self_correction"} <= meta.keys()
    assert not any(name.startswith("test_") for name in meta)  # no test split: the stages are not evaluated


def test_stages_1_3a_4a_each_train_on_an_export_from_a_fresh_out(export_folder, tiny_model, tmp_path):
    printed = train_each_stage_on_export(export_folder, tmp_path, tiny_model)
    if (export_folder / "labels.jsonl").is_file():  # every judged item's answer is a SCoRe label, not only corrections
        assert "(labels.jsonl)" in printed["4a"]


def test_an_export_trains_from_the_shipped_default_model(export_folder, tmp_path):
    """No --model: the base is the model whose answers the annotators judged (occmllm/default_model/weights)."""
    from occmllm.default_model import WEIGHTS_DIR

    out = tmp_path / "run"
    code, text = run_all(["--preset", "smoke", "--stages", "1", "--data", export_folder, "--out", out,
                          "stages.1.max_steps=1", "stages.1.batch_size=4"])
    assert code == 0, text[-3000:]
    assert f"base model: the shipped default model ({WEIGHTS_DIR})" in text
    assert not (out / "base").exists()  # no untrained model built
    trained = out / "stage_1" / "model"
    assert json.loads((trained / "config.json").read_text())["vision_config"] == \
        json.loads((WEIGHTS_DIR / "config.json").read_text())["vision_config"]
    before, after = load_file(str(WEIGHTS_DIR / "model.safetensors")), load_file(str(trained / "model.safetensors"))
    assert before.keys() == after.keys() and any(not before[k].equal(after[k]) for k in before)


def test_evaluation_asked_for_on_an_export_stops_before_training(export_folder, tiny_model, tmp_path):
    out = tmp_path / "run"
    code, text = run_all(["--preset", "smoke", "--stages", "1", "--data", export_folder, "--model", tiny_model,
                          "--out", out, "evaluate.enabled=true"])
    assert code == 2 and "evaluate.enabled is true, but" in text and "no test split" in text, text[-2000:]
    assert not (out / "stage_1").exists()


def test_the_self_correction_term_learns_the_correction_only(export_folder, tiny_model):
    """SCoRe's supervised term (train/score.py correction_loss) puts labels on the annotators' correction, never on
    the wrong first answer that it reads as context."""
    from occmllm.images import load_image
    from train.common import load_policy
    from train.data import DataDir, encode_sample, read_samples

    model, processor = load_policy(tiny_model)
    fix = read_samples(DataDir(export_folder).require("self_correction", "train"))[0]
    (question, wrong), (again, correction) = fix.turns
    assert again == prompts.strip_image(prompts.SECOND_ATTEMPT)
    encoded = encode_sample(processor, load_image(fix.image), fix.turns, last_only=True)
    learnt = processor.tokenizer.decode(encoded["labels"][encoded["labels"] != -100], skip_special_tokens=True)
    assert learnt.strip() == correction and wrong not in learnt
