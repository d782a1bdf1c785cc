"""The VLM backend on tiny random checkpoints of each family, loaded by path as a user would."""

import json
import math
import shutil
import warnings

import pytest
from PIL import Image

from occmllm import prompts
from occmllm.vlm import VLM, ModelLoadError, to_messages
from tests.occmllm.tiny_models import FAMILIES

RED = Image.new("RGB", (80, 60), (200, 30, 30))
GREEN = Image.new("RGB", (50, 90), (20, 160, 40))


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_two_turns_reuse_gives_same_answer(tiny_vlms, family):
    vlm = tiny_vlms[family]
    assert vlm.device.type == "cpu" and str(vlm.model.dtype) == "torch.float32"
    answer, history = vlm.chat(RED, prompts.Q1, return_history=True)
    assert isinstance(answer, str) and history == [(prompts.Q1, answer)]
    second = vlm.chat(RED, prompts.Q6, history=history)
    reused = vlm.last_reused_tokens
    vlm.forget()
    assert vlm.chat(RED, prompts.Q6, history=history) == second
    assert vlm.last_reused_tokens == 0
    if family == "qwen2_vl":
        assert reused == 0  # M-RoPE: recomputed, by design
    else:
        assert reused > 0  # the image prefix was not encoded again
    vlm.chat(GREEN, prompts.Q1)
    assert vlm.last_reused_tokens == 0  # another image never reuses the cache


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_matches_one_at_a_time(tiny_vlms, family):
    vlm = tiny_vlms[family]
    batch = vlm.generate_batch([RED, GREEN], [prompts.Q1, prompts.Q1])
    vlm.forget()
    assert batch == [vlm.chat(RED, prompts.Q1), vlm.chat(GREEN, prompts.Q1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_logprobs_are_the_generated_tokens_probabilities(tiny_vlms, family):
    """generate_batch(with_logprobs=True): same answers, and each answer's log-probability equals a teacher-forced
    forward pass over the generated tokens (up to the first end-of-sequence token)."""
    import torch

    vlm = tiny_vlms[family]
    answers, logprobs = vlm.generate_batch([RED, GREEN], [prompts.Q1] * 2, max_new_tokens=4, with_logprobs=True)
    assert answers == vlm.generate_batch([RED, GREEN], [prompts.Q1] * 2, max_new_tokens=4)
    eos = vlm.model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    for image, logprob in zip([RED, GREEN], logprobs):
        inputs = vlm._inputs([image], [vlm._prompt(prompts.Q1, None)])
        with torch.inference_mode():
            ids = vlm.model.generate(**inputs, max_new_tokens=4, do_sample=False,
                                     pad_token_id=vlm.tokenizer.pad_token_id)[0, inputs["input_ids"].shape[1]:].tolist()
            ids = ids[: next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))]  # up to the first EOS
            length = inputs["input_ids"].shape[1]
            full = {}  # the prompt plus the generated tokens, one teacher-forced pass
            for key, value in inputs.items():
                if torch.is_tensor(value) and value.dim() == 2 and value.shape == (1, length):
                    extra = torch.tensor([ids]) if key == "input_ids" else torch.full(
                        (1, len(ids)), 1 if key == "attention_mask" else 0)
                    value = torch.cat([value, extra.to(value.dtype)], 1)
                full[key] = value
            logits = vlm.model(**full).logits[0].float().log_softmax(-1)
            expected = sum(float(logits[length - 1 + k, token]) for k, token in enumerate(ids))
        assert logprob < 0 and logprob == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("family", ["internvl", "llava"])
def test_sample_distinct_candidates_with_logprobs(tiny_vlms, family):
    candidates = tiny_vlms[family].sample(RED, prompts.Q1, n=3, temperature=1.5, max_new_tokens=6)
    texts = [c.text for c in candidates]
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(c.logprob < 0 and math.isfinite(c.logprob) and c.num_tokens >= 1 for c in candidates)
    assert [c.logprob for c in candidates] == sorted((c.logprob for c in candidates), reverse=True)


@pytest.mark.parametrize("family", ["internvl", "llava"])
def test_sample_batch_keeps_each_images_samples_apart(tiny_vlms, family):
    """Near temperature 0 sampling is greedy decoding: each image's samples are its own greedy answer."""
    vlm = tiny_vlms[family]
    greedy = vlm.generate_batch([RED, GREEN, GREEN], [prompts.Q1] * 3, max_new_tokens=6)
    sampled = vlm.sample_batch([RED, GREEN, GREEN], prompts.Q1, n=2, temperature=1e-4, max_new_tokens=6, max_rounds=1)
    assert [[c.text for c in found] for found in sampled] == [[answer] for answer in greedy]


def test_to_messages_places_image_like_the_seed():
    messages = to_messages(prompts.Q6, [(prompts.Q1, "The object is jar.")])
    assert messages[0]["content"] == [{"type": "text", "text": "What's the object in the hand?\n"}, {"type": "image"}]
    assert messages[1]["content"][0]["text"] == "The object is jar."
    assert messages[2]["content"] == [{"type": "text", "text": prompts.Q6}]
    assert to_messages("Describe.")[0]["content"][0] == {"type": "image"}  # no placeholder: image first


def test_default_model_is_small_and_says_untrained(tmp_path, monkeypatch):
    from occmllm.default_model import WEIGHTS_DIR

    monkeypatch.setenv("OCCMLLM_CACHE", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vlm = VLM.load_default()
    shipped = (WEIGHTS_DIR / "config.json").is_file()
    if not shipped:
        assert vlm.trained is False and "UNTRAINED" in vlm.describe()
        assert any("UNTRAINED" in str(w.message) for w in caught)
        size = sum(f.stat().st_size for f in (tmp_path / "default_untrained").iterdir())
        assert size < 30e6
    assert vlm.model_type == "internvl" and vlm.max_new_tokens <= 16
    tokens = vlm.tokenizer.tokenize(prompts.identify_answer("cellphone"))
    assert len(tokens) <= 6  # the project's words are single tokens


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_bad_model_folders(tiny_model_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        VLM.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="missing config.json"):
        VLM.load(tmp_path / "empty")
    text_only = _copy(tiny_model_dirs["llava"], tmp_path / "text_only")
    (text_only / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ModelLoadError, match="not a vision-language model"):
        VLM.load(text_only)
    no_weights = _copy(tiny_model_dirs["llava"], tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        VLM.load(no_weights)
    no_processor = _copy(tiny_model_dirs["internvl"], tmp_path / "no_processor")
    (no_processor / "processor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="image processor"):
        VLM.load(no_processor)
    broken = _copy(tiny_model_dirs["internvl"], tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="cannot load the model weights"):
        VLM.load(broken)
