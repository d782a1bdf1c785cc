"""InternVL2 chat-layout checkpoints (the paper's released models) open through occmllm.convert exactly as InternVL's
own `model.chat` reads them.

The fixtures in tests/fixtures/internvl2_chat/<family>/checkpoint are tiny random checkpoints built with InternVL's
`internvl_chat` code and saved in the chat layout (config, weights, tokenizer files; no code). Their `expected.json`
holds what the reference (`InternVLChatModel.chat` under transformers 4.44.2, float32, CPU) saw and said on the photos
in tests/fixtures/internvl2_chat/photos: the token ids of each turn's prompt, the tiles, the logits, the greedy
answers. How they were measured: tests/fixtures/internvl2_chat/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from occmllm import prompts
from occmllm.convert import ConversionError, convert, converted_folder, is_chat_layout
from occmllm.images import load_image
from occmllm.vlm import VLM, ModelLoadError, check_model_folder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "internvl2_chat"
FAMILIES = ("qwen2", "internlm2", "internlm2_5", "phi3")  # InternVL2-1B, -2B, -8B (InternLM2.5), -4B
REPO = Path(__file__).resolve().parents[2]


def expected(family: str) -> dict:
    return json.loads((FIXTURES / family / "expected.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {family: convert(FIXTURES / family / "checkpoint", root / family, progress=False) for family in FAMILIES}


def fresh(folder: Path) -> VLM:
    """A newly loaded model: InternLM2.5's dynamic-NTK RoPE keeps state between calls in both implementations, so
    every measurement starts from a fresh load, as the reference's did."""
    return VLM.load(folder, device="cpu", dtype=torch.float32, max_new_tokens=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_are_token_identical_to_model_chat(converted, family):
    """Both turns of the seed's conversation (Q1 on the photo, then Q6 after the reference's first answer) give the
    very token ids `model.chat` fed its model: system message, template, `<img><IMG_CONTEXT>*N</img>`, BOS."""
    vlm = fresh(converted[family])
    for entry in expected(family)["photos"]:
        image = load_image(FIXTURES / "photos" / entry["photo"])
        turns = [(prompts.Q1, None), (prompts.Q6, [(prompts.Q1, entry["answers"][0])])]
        ids = [vlm._inputs([image], [vlm._prompt(q, h)])["input_ids"][0].tolist() for q, h in turns]
        assert ids == entry["input_ids"], entry["photo"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_greedy_answers_match_model_chat(converted, family):
    reference = expected(family)
    for entry in reference["photos"]:
        image = load_image(FIXTURES / "photos" / entry["photo"])
        vlm = fresh(converted[family])
        answer, history = vlm.chat(image, prompts.Q1, return_history=True)
        assert [answer, vlm.chat(image, prompts.Q6, history=history)] == entry["answers"], entry["photo"]
        # the second turn reuses the first's KV cache, except past a dynamic-NTK RoPE's 48 positions (InternLM2.5's
        # fixture), where a recompute uses other frequencies than the cached prefix had
        assert (vlm.last_reused_tokens > 0) == (family != "internlm2_5")

        vlm = fresh(converted[family])
        inputs = vlm._inputs([image], [vlm._prompt(prompts.Q6, [(prompts.Q1, entry["answers"][0])])])
        assert inputs["pixel_values"].shape[0] == entry["tiles"]
        assert float(inputs["pixel_values"].sum()) == pytest.approx(entry["pixel_sum"], rel=1e-5)
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0, -1]
        want = torch.tensor(entry["last_logits"])
        assert (logits - want).abs().max() < 1e-3, entry["photo"]  # measured: <= 3e-5 (scale ~5)
        assert int(logits.argmax()) == int(want.argmax())


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_encodes_like_the_original(converted, family):
    """The fast tokenizer gives the original (slow) tokenizer's ids. Not compared: text that starts with a space
    (Phi-3's Llama tokenizer adds a second '▁' there; a prompt always starts with the template's special token) and
    decoding of lone byte pieces (no prompt or greedy answer holds them)."""
    vlm = fresh(converted[family])
    checked = 0
    for probe in expected(family)["tokenizer_probe"]:
        if "decode_ids" in probe or probe["text"][:1].isspace():
            continue
        assert vlm.tokenizer(probe["text"])["input_ids"] == probe["ids"], probe["text"]
        assert vlm.tokenizer(probe["text"], add_special_tokens=False)["input_ids"] == probe["ids_no_special"]
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_batched_answers_equal_one_at_a_time(converted, family):
    """What occmllm.evaluate does (left-padded batches of photos with different tile counts) gives the same answers
    as the one-photo loop. (InternLM2.5's fixture triggers dynamic RoPE at 48 positions, where padding changes the
    frequencies; the real model's 32,768 are never reached.)"""
    vlm = fresh(converted[family])
    images = [load_image(FIXTURES / "photos" / e["photo"]) for e in expected(family)["photos"]]
    batch = vlm.generate_batch(images, [prompts.Q1] * len(images))
    assert batch == [e["answers"][0] for e in expected(family)["photos"]]


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_scores_count_the_answer_tokens_as_they_follow_the_prompt(converted, family):
    """The class probabilities' scores (VLM.answer_logprobs): each answer's tokens as they follow the prompt in one
    tokenization, whether scored from the prompt's KV cache or by full passes (SentencePiece tokenizers give an
    answer alone a leading-space token that is not there after the prompt; it is not counted)."""
    vlm = fresh(converted[family])
    image = load_image(FIXTURES / "photos" / expected(family)["photos"][0]["photo"])
    answers = [prompts.identify_answer(c) for c in ("jar", "cellphone")]
    prompt = vlm._prompt(prompts.Q1, None)
    scores = vlm.answer_logprobs([image], prompts.Q1, answers)
    with torch.inference_mode():
        full = vlm._full_answer_logprobs([image], [prompt], answers, 64)  # the way taken where a cache cannot be
    for k, answer in enumerate(answers):
        ids = vlm._inputs([image], [prompt + answer])["input_ids"][0]
        head = len(vlm._inputs([image], [prompt])["input_ids"][0])
        with torch.inference_mode():
            logprobs = vlm.model(**vlm._inputs([image], [prompt + answer])).logits.float().log_softmax(-1)[0]
        assert ids[:head].tolist() == vlm._inputs([image], [prompt])["input_ids"][0].tolist()
        expected_score = sum(float(logprobs[t - 1, ids[t]]) for t in range(head, len(ids)))
        assert scores[0, k] == pytest.approx(expected_score, abs=1e-3), (family, answer)
        assert full[0, k] == pytest.approx(expected_score, abs=1e-3), (family, answer)


def test_tiling_at_448_matches_the_seed(converted):
    """The image processor a conversion writes tiles like InternVL2's load_image (448 px, 1-12 tiles by aspect ratio,
    plus a thumbnail, ImageNet mean and std): tile counts for many sizes, and the pixels of the photos."""
    from PIL import Image

    from occmllm.convert import TEMPLATES, build_processor

    config = json.loads((FIXTURES / "qwen2" / "checkpoint" / "config.json").read_text())
    config = dict(config, force_image_size=448, vision_config=dict(config["vision_config"], image_size=448))
    processor = build_processor(fresh(converted["qwen2"]).tokenizer, config, TEMPLATES["Hermes-2"], "s", 256)
    for case in json.loads((FIXTURES / "tiling_448.json").read_text())["cases"]:
        if "photo" in case:
            image = load_image(FIXTURES / "photos" / case["photo"])
        else:
            image = Image.new("RGB", (case["width"], case["height"]))
        pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        assert pixels.shape[0] == case["tiles"] and pixels.shape[-2:] == (448, 448), case
        if "tile_sums" in case:
            sums = pixels.sum((1, 2, 3))
            assert torch.allclose(sums, torch.tensor(case["tile_sums"]), rtol=1e-4, atol=5.0), case["photo"]


def test_load_converts_once_beside_the_source_and_reuses_it(tmp_path, capsys):
    source = Path(shutil.copytree(FIXTURES / "phi3" / "checkpoint", tmp_path / "outputdir-4b"))
    assert is_chat_layout(source) and check_model_folder(source)["template"] == "phi3-chat"
    first = VLM.load(source, device="cpu")
    assert "converting" in capsys.readouterr().err
    cache = source / "occmllm_native"
    assert (cache / "config.json").is_file() and json.loads((cache / "config.json").read_text())["model_type"] == "internvl"
    stamp = (cache / "model.safetensors").stat().st_mtime_ns
    second = VLM.load(source, device="cpu")
    assert "converting" not in capsys.readouterr().err
    assert (cache / "model.safetensors").stat().st_mtime_ns == stamp
    image = load_image(FIXTURES / "photos" / "wide.png")
    assert first.chat(image, prompts.Q1) == second.chat(image, prompts.Q1)
    os.utime(source / "model.safetensors", (1, 1))  # the source changed: converted again
    VLM.load(source, device="cpu")
    assert "converting" in capsys.readouterr().err


def test_read_only_source_converts_into_the_cache(tmp_path, monkeypatch):
    source = Path(shutil.copytree(FIXTURES / "qwen2" / "checkpoint", tmp_path / "models" / "outputdir-1b"))
    monkeypatch.setenv("OCCMLLM_CACHE", str(tmp_path / "cache"))
    source.chmod(0o555)
    try:
        if os.access(source, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        folder = converted_folder(source, progress=False)
        assert folder.parent == tmp_path / "cache" / "converted" and not (source / "occmllm_native").exists()
        assert converted_folder(source, progress=False) == folder
    finally:
        source.chmod(0o755)


def test_read_only_source_as_root_uses_the_cache(tmp_path, monkeypatch):
    """The cache location when the source folder is not writable (os.access says so), whoever runs the test."""
    import occmllm.convert as convert_module

    source = Path(shutil.copytree(FIXTURES / "qwen2" / "checkpoint", tmp_path / "ro" / "outputdir-1b"))
    monkeypatch.setenv("OCCMLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert_module.os, "access", lambda path, mode: Path(path) != source)
    folder = converted_folder(source, progress=False)
    assert folder.parent == tmp_path / "cache" / "converted" and folder.name.startswith("outputdir-1b-")
    vlm = VLM.load(source, device="cpu")
    assert vlm.model.config.model_type == "internvl" and not (source / "occmllm_native").exists()


def _chat_copy(tmp_path: Path, family: str, **changes) -> Path:
    folder = Path(shutil.copytree(FIXTURES / family / "checkpoint", tmp_path / f"{family}-changed"))
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "llm_arch":
            config["llm_config"]["architectures"] = [value]
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("changes, words", [
    ({"llm_arch": "MixtralForCausalLM"}, ["'MixtralForCausalLM'", "Qwen2ForCausalLM", "InternLM2ForCausalLM"]),
    ({"template": "vicuna_v1.1"}, ["'vicuna_v1.1'", "Hermes-2", "phi3-chat"]),
    ({"ps_version": "v1"}, ["pixel shuffle 'v1'"]),
])
def test_unsupported_folder_says_what_was_found_and_what_is_supported(tmp_path, changes, words):
    folder = _chat_copy(tmp_path, "qwen2", **changes)
    for call in (lambda: VLM.load(folder, device="cpu"), lambda: check_model_folder(folder)):
        with pytest.raises(ModelLoadError) as error:
            call()
        message = str(error.value)
        assert str(folder) in message and "supported" in message
        assert all(word in message for word in words), message
    with pytest.raises(ConversionError):
        convert(folder, tmp_path / "out")
    assert not (folder / "occmllm_native").exists()


def test_missing_weights_are_reported(tmp_path):
    folder = _chat_copy(tmp_path, "internlm2")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        VLM.load(folder, device="cpu")


def test_command_line_converts_and_refuses_clearly(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = lambda *args: subprocess.run([sys.executable, "-m", "occmllm.convert", *map(str, args)], cwd=REPO,
                                       capture_output=True, text=True, env=env, timeout=300)
    help_ = run("--help")
    assert help_.returncode == 0 and "chat-layout" in help_.stdout and "SRC" in help_.stdout.upper()
    done = run(FIXTURES / "internlm2" / "checkpoint", tmp_path / "native", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "InternLM2ForCausalLM" in done.stdout and "internlm2-chat" in done.stdout
    assert VLM.load(tmp_path / "native", device="cpu").model.config.text_config.model_type == "llama"
    again = run(FIXTURES / "internlm2" / "checkpoint", tmp_path / "native")
    assert again.returncode == 2 and "already holds a model" in again.stderr
    native = run(tmp_path / "native", tmp_path / "x")
    assert native.returncode == 2 and "not an InternVL chat-layout checkpoint" in native.stderr


def test_chat_template_renders_internvl2_prompt_with_system_message(converted):
    """The saved chat template, rendered directly: InternVL2's MPT layout (no newline after a separator), the
    system message, and a system message of the caller replacing it."""
    vlm = fresh(converted["phi3"])
    messages = [{"role": "user", "content": [{"type": "text", "text": "Q?\n"}, {"type": "image"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
                {"role": "user", "content": [{"type": "text", "text": "Again?"}]}]
    system = expected("phi3")["system_message"]
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (f"<|system|>\n{system}<|end|><|user|>\nQ?\n<IMG_CONTEXT><|end|><|assistant|>\nA.<|end|>"
                    "<|user|>\nAgain?<|end|><|assistant|>\n")
    custom = vlm.processor.apply_chat_template([{"role": "system", "content": "Be brief."}] + messages[:1],
                                               add_generation_prompt=True, tokenize=False)
    assert custom.startswith("<|system|>\nBe brief.<|end|><|user|>\n")


def test_sft_trains_a_chat_layout_checkpoint(tmp_path):
    """The training recipe takes the paper's layout as its base model: it is converted on load and the stage trains
    exactly the projector and the language model of it."""
    from safetensors.torch import load_file

    from tests.train.test_stages import assert_trained_exactly
    from tests.train.toy_data import make_toy_dataset
    from train.common import check_model_folder as train_check
    from train.data import DataDir, read_samples
    from train.sft import SFTConfig, train_sft

    source = Path(shutil.copytree(FIXTURES / "qwen2" / "checkpoint", tmp_path / "outputdir-1b"))
    train_check(source)
    data = make_toy_dataset(tmp_path / "data", n_train=8, n_test=2)
    samples = read_samples(DataDir(data).require("Q1", "train"), limit=8)
    out = train_sft(source, tmp_path / "run", samples, SFTConfig(parts=["projector", "lm"], lr=1e-3, batch_size=4,
                                                                 max_steps=2))
    before = load_file(str(source / "occmllm_native" / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert_trained_exactly({k: v.float() for k, v in before.items()}, {k: v.float() for k, v in after.items()},
                           {"projector", "lm"})
    trained = VLM.load(out, device="cpu")
    assert isinstance(trained.chat(load_image(FIXTURES / "photos" / "tall.png"), prompts.Q1), str)


def test_evaluate_and_the_training_recipe_take_a_chat_layout_folder(tmp_path, capsys):
    """`--model FOLDER` of occmllm.evaluate and train/run_all.py, with FOLDER in the paper's layout."""
    from occmllm.evaluate import main as evaluate_main
    from tests.train.toy_data import make_toy_dataset
    from train import run_all

    source = Path(shutil.copytree(FIXTURES / "internlm2" / "checkpoint", tmp_path / "outputdir-2b"))
    data = make_toy_dataset(tmp_path / "data", n_train=8, n_test=4)
    assert evaluate_main(["--data", str(data / "test_Q1.jsonl"), "--images", str(data / "test" / "images"),
                          "--model", str(source), "--out", str(tmp_path / "eval"), "--batch-size", "2"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["images"] == 4 and (source / "occmllm_native" / "config.json").is_file()
    code = run_all.main(["--preset", "smoke", "--data", str(data), "--model", str(source), "--out", str(tmp_path / "run"),
                         "--stages", "1", "evaluate.enabled=false"])
    assert code == 0, capsys.readouterr().err[-2000:]
    trained = json.loads((tmp_path / "run" / "stage_1" / "model" / "config.json").read_text())
    assert trained["model_type"] == "internvl" and trained["text_config"]["model_type"] == "llama"


@pytest.mark.parametrize("layout", ["sharded safetensors", "pytorch_model.bin"])
def test_sharded_and_bin_checkpoints_convert_to_the_same_weights(converted, tmp_path, layout):
    from safetensors.torch import load_file, save_file

    source = Path(shutil.copytree(FIXTURES / "phi3" / "checkpoint", tmp_path / "src"))
    tensors = load_file(str(source / "model.safetensors"))
    (source / "model.safetensors").unlink()
    names = sorted(tensors)
    if layout == "pytorch_model.bin":
        torch.save(tensors, source / "pytorch_model.bin")
    else:
        halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        for file, part in halves.items():
            save_file({n: tensors[n] for n in part}, str(source / file))
        (source / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {n: f for f, part in halves.items() for n in part}}))
    out = load_file(str(convert(source, tmp_path / "native", progress=False) / "model.safetensors"))
    want = load_file(str(converted["phi3"] / "model.safetensors"))
    assert out.keys() == want.keys() and all(torch.equal(out[k], want[k]) for k in want)
