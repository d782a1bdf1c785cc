"""The CoT pipeline's step events and Trace, with a stand-in 3D expert, on tiny models of each family."""

import dataclasses
import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from occmllm import prompts
from occmllm.infer import main as infer_main
from occmllm.pipeline import Step, Trace, cot, run_cot
from occmllm.recon import Reconstruction, nothing_reconstructed
from tests.occmllm.tiny_models import FAMILIES

PHOTO = Image.new("RGB", (64, 64), (90, 90, 200))


class BoxExpert:
    """Reconstructs a box and 'renders' a grey square; counts its calls."""

    def __init__(self, ok=True):
        self.ok, self.calls = ok, 0

    def reconstruct(self, image, K=None, views=False):
        self.calls += 1
        if not self.ok:
            return nothing_reconstructed("test expert says no", 64)
        render = np.zeros((64, 64, 3), np.uint8)
        render[16:48, 16:48] = 180
        return Reconstruction(True, "box", trimesh.creation.box((0.1, 0.1, 0.1)), render)


@pytest.mark.parametrize("family", FAMILIES)
def test_steps_in_order_and_trace_round_trip(tiny_vlms, family, tmp_path):
    expert = BoxExpert()
    events = list(run_cot(tiny_vlms[family], PHOTO, expert=expert, describe=True, force_3d=True, out_dir=tmp_path))
    trace = events[-1]
    assert isinstance(trace, Trace) and all(isinstance(e, Step) for e in events[:-1])
    names = [e.name for e in events[:-1]]
    assert names == ["describe"] * 3 + ["identify", "reflect", "reconstruct", "identify_3d", "decide"]
    assert expert.calls == 1 and trace.used_3d and not trace.render_missing
    identify, reflect = trace.step("identify"), trace.step("reflect")
    assert identify.prompt == prompts.Q1 and reflect.prompt == prompts.Q6
    assert identify.parsed == prompts.parse_object(identify.raw)
    assert (tmp_path / "render.png").is_file() and (tmp_path / "mesh.glb").is_file()
    assert trace.step("reconstruct").files["mesh"].endswith("mesh.glb")
    assert Trace.from_json(trace.to_json()) == trace
    assert trace.model_trained is (family != "internvl")  # the internvl one is a default-model factory build
    assert trace.seconds > 0


def test_events_carry_only_their_declared_fields_and_the_expert_views_are_written(tiny_vlms, tmp_path):
    """Consumers tell the events apart by type and read declared fields only; the extra views an expert made are
    written beside the render and named in the reconstruct and identify_3d steps' files."""
    class ViewsExpert(BoxExpert):
        def reconstruct(self, image, K=None, views=False):
            box = super().reconstruct(image)
            return dataclasses.replace(box, views=np.full((64, 256, 3), 90, np.uint8))

    events = list(run_cot(tiny_vlms["llava"], PHOTO, expert=ViewsExpert(), force_3d=True, out_dir=tmp_path))
    for event in events:
        assert set(vars(event)) == {f.name for f in dataclasses.fields(event)}, type(event).__name__
    trace = events[-1]
    views = tmp_path / "views.png"
    assert np.asarray(Image.open(views)).shape == (64, 256, 3)
    assert trace.step("reconstruct").files["views"] == trace.step("identify_3d").files["views"] == str(views)
    assert list(trace.step("reconstruct").files) == ["render", "mesh", "views"]
    assert "views" not in cot(tiny_vlms["llava"], PHOTO, expert=BoxExpert(), force_3d=True,
                              out_dir=tmp_path / "plain").step("reconstruct").files  # no views made, none written


def test_no_expert_or_failed_reconstruction_is_reported(tiny_vlms):
    trace = cot(tiny_vlms["llava"], PHOTO, expert=None, force_3d=True)
    assert trace.render_missing and trace.step("reconstruct").info["message"] == "no 3D expert configured"
    failing = BoxExpert(ok=False)
    trace = cot(tiny_vlms["llava"], PHOTO, expert=failing, force_3d=True)
    assert failing.calls == 1 and trace.render_missing and trace.step("identify_3d") is None
    assert "nothing reconstructed" in trace.step("reconstruct").info["message"]


def test_clear_answer_skips_3d(tiny_vlms, monkeypatch):
    vlm = tiny_vlms["llava"]
    answers = iter(["The object is jar.", "Yes."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    expert = BoxExpert()
    trace = cot(vlm, PHOTO, expert=expert)
    assert expert.calls == 0 and trace.final == "jar" and not trace.used_3d
    assert trace.step("decide").heading == prompts.NO_3D_REQUIRED


def test_forced_3d_on_a_clear_answer_reads_the_render_but_keeps_the_models_call(tiny_vlms, monkeypatch):
    """Force 3D (the app's setting, --force-3d) reconstructs and reads the render even after "Yes.", but 3D was not
    required by the model: the decide step says so, keeps the first answer (the seed's rule) and says why, and the
    app's final panel shows that reason."""
    from demo.views import final_html

    vlm = tiny_vlms["llava"]
    answers = iter(["The object is jar.", "Yes.", "The object is bowl."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    trace = cot(vlm, PHOTO, expert=BoxExpert(), force_3d=True)
    decide_step = trace.step("decide")
    assert trace.used_3d and trace.step("identify_3d").parsed == "bowl" and trace.final == "jar"
    assert decide_step.heading == prompts.NO_3D_REQUIRED
    assert decide_step.info["note"] == ("3D forced: the render reads bowl, but the model called the photo clear, so "
                                        "its first answer stands")
    assert "3D forced: the render reads bowl" in final_html(trace) and "3D required" not in final_html(trace)


def test_unclear_answer_routes_to_render(tiny_vlms, monkeypatch):
    vlm = tiny_vlms["llava"]
    answers = iter(["The object is bottle.", "No.", "The object is jar."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    trace = cot(vlm, PHOTO, expert=BoxExpert())
    assert trace.final == "jar" and trace.used_3d and trace.step("decide").heading == prompts.THREE_D_REQUIRED


def test_unclear_answer_without_expert_says_3d_was_required_and_the_first_answer_kept(tiny_vlms, monkeypatch):
    vlm = tiny_vlms["llava"]
    answers = iter(["The object is bottle.", "No."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    trace = cot(vlm, PHOTO, expert=None)
    decide_step = trace.step("decide")
    assert trace.final == "bottle" and trace.required_3d and not trace.used_3d and trace.render_missing
    assert decide_step.heading == prompts.THREE_D_REQUIRED
    assert "no 3D expert" in decide_step.info["note"] and "first answer was kept" in decide_step.info["note"]
    assert Trace.from_json(trace.to_json()).required_3d  # survives the JSON trace


def test_class_probabilities_on_the_identify_steps(tiny_vlms):
    vlm = tiny_vlms["internvl"]
    trace = cot(vlm, PHOTO, expert=BoxExpert(), force_3d=True, probabilities=True)
    for name in ("identify", "identify_3d"):
        probs = trace.step(name).info["classes"]
        assert list(probs) == list(prompts.CLASSES) and sum(probs.values()) == pytest.approx(1, abs=1e-3)
    expected = vlm.class_posterior([PHOTO])[0]
    assert list(trace.step("identify").info["classes"].values()) == pytest.approx(expected.tolist(), abs=1e-4)
    assert "classes" not in cot(vlm, PHOTO, expert=None).step("identify").info  # off unless asked for


@pytest.mark.parametrize("family", ["internvl", "qwen2_vl"])
def test_the_self_assessment_carries_its_yes_no_probabilities(tiny_vlms, family):
    """With probabilities the reflect step also says how sure the model is of its Yes / No: P("Yes.") against
    P("No.") after its own Q1 answer, the same as full passes over photo, Q1 turn, Q6 and each answer (InternVL
    reads them from the conversation's cache, Qwen2-VL's M-RoPE from full passes); the answer it gave is unchanged."""
    import torch

    vlm = tiny_vlms[family]
    trace = cot(vlm, PHOTO, expert=None, probabilities=True)
    reflect = trace.step("reflect")
    clarity = reflect.info["clarity"]
    assert list(clarity) == [prompts.YES, prompts.NO] and sum(clarity.values()) == pytest.approx(1, abs=1e-3)
    history = [(prompts.Q1, trace.step("identify").raw)]
    with torch.inference_mode():
        full = vlm._full_answer_logprobs([PHOTO], [vlm._prompt(prompts.Q6, history)],
                                         [prompts.clarity_answer(True), prompts.clarity_answer(False)], 64)[0]
    assert clarity[prompts.YES] == pytest.approx(1 / (1 + np.exp(full[1] - full[0])), abs=2e-4)
    assert reflect.raw == cot(vlm, PHOTO, expert=None).step("reflect").raw  # the answer is the same without them
    assert "clarity" not in cot(vlm, PHOTO, expert=None).step("reflect").info


def test_infer_cli(tiny_model_dirs, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    PHOTO.save(photo)
    (tmp_path / "bad.jpg").write_text("not an image")
    code = infer_main([str(photo), str(tmp_path / "bad.jpg"), "--model", str(tiny_model_dirs["internvl"]), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "bad.jpg: not an image file" in err
    trace = Trace.from_json(out.strip().splitlines()[0])
    assert trace.image == str(photo) and trace.model_trained is False  # a factory build is marked untrained
    assert infer_main([str(photo), "--model", str(tmp_path / "nothing")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    renders = tmp_path / "renders"  # a precomputed render of photo.jpg: --force-3d --fuse reads both
    renders.mkdir()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(renders / "photo.png")
    assert infer_main([str(photo), "--model", str(tiny_model_dirs["internvl"]), "--expert", f"folder:{renders}",
                       "--force-3d", "--fuse", "--json"]) == 0
    trace = Trace.from_json(capsys.readouterr().out.strip())
    decide_step = trace.step("decide")
    assert trace.used_3d and decide_step.info["fused"] == trace.final in prompts.CLASSES
    assert sum(decide_step.info["photo"].values()) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_logprobs_match_a_forward_pass_of_each_answer_alone(tiny_vlms, family):
    """Batched, padded scoring equals the log-probability of each answer's tokens computed one text at a time."""
    import torch

    vlm = tiny_vlms[family]
    other = Image.new("RGB", (64, 64), (200, 40, 40))
    answers = [prompts.identify_answer(c) for c in ("jar", "cellphone", "remote")]
    scores = vlm.answer_logprobs([PHOTO, other], prompts.Q1, answers, batch_size=4)  # batches split mid-image
    assert scores.shape == (2, 3) and np.all(scores < 0)
    prompt = vlm._prompt(prompts.Q1, None)
    for i, image in enumerate([PHOTO, other]):
        for k, answer in enumerate(answers):
            inputs = vlm._inputs([image], [prompt + answer])
            n = len(vlm.tokenizer(answer, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                logprobs = vlm.model(**inputs).logits.float().log_softmax(-1)[0]
            ids = inputs["input_ids"][0]
            expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
            assert scores[i, k] == pytest.approx(expected, abs=1e-3)
    posterior = vlm.class_posterior([PHOTO, other])
    assert posterior.shape == (2, len(prompts.CLASSES)) and np.allclose(posterior.sum(1), 1)
    # the scores above come from the prompt's KV cache wherever the family can reuse a prefix (not M-RoPE's)
    with torch.inference_mode():
        cached = vlm._cached_answer_logprobs([PHOTO, other], [prompt, prompt], answers)
    assert (cached is None) == (family == "qwen2_vl")
    if cached is not None:
        np.testing.assert_allclose(cached, scores, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_class_probabilities_right_after_an_answer_read_the_conversations_cache_and_match_a_fresh_reading(
        tiny_vlms, family):
    """The pipeline asks for the class probabilities right after the Q1 answer: they come from that conversation's
    KV cache (the image is not read again) and equal those of a model that never saw the photo; the conversation's
    next turn is unchanged by it."""
    import torch

    vlm = tiny_vlms[family]
    vlm.forget()
    fresh = vlm.class_posterior([PHOTO])
    q6_fresh = vlm.chat(PHOTO, prompts.Q6, history=[(prompts.Q1, vlm.chat(PHOTO, prompts.Q1))])
    vlm.forget()
    answer, history = vlm.chat(PHOTO, prompts.Q1, return_history=True)
    ids = vlm._inputs([PHOTO], [vlm._prompt(prompts.Q1, None)])["input_ids"]
    assert (vlm._conversation_prefix([PHOTO], ids) is None) == (family == "qwen2_vl")  # M-RoPE keeps no cache
    with torch.inference_mode():
        after = vlm.class_posterior([PHOTO])
    np.testing.assert_allclose(after, fresh, atol=1e-5)
    assert vlm.chat(PHOTO, prompts.Q6, history=history) == q6_fresh
    other = Image.new("RGB", (64, 64), (200, 40, 40))  # another image: its own reading, not the cached one
    vlm.forget()
    expected = vlm.class_posterior([other])
    vlm.chat(PHOTO, prompts.Q1)
    np.testing.assert_allclose(vlm.class_posterior([other]), expected, atol=1e-5)


@pytest.mark.parametrize("family", ["internvl", "smolvlm"])
def test_answer_logprobs_after_earlier_turns_match_full_passes(tiny_vlms, family):
    """Scoring the Q6 reply after each photo's own Q1 turn (bench_clarity's use): the same whether the prompts
    share their KV cache (histories of equal length) or not (unequal: full passes)."""
    import torch

    vlm = tiny_vlms[family]
    other = Image.new("RGB", (64, 64), (30, 160, 90))
    answers = [prompts.clarity_answer(True), prompts.clarity_answer(False)]
    for histories in ([[(prompts.Q1, "The object is jar.")], [(prompts.Q1, "The object is can.")]],
                      [[(prompts.Q1, "The object is jar.")], [(prompts.Q1, "I do not know what the object is.")]]):
        scores = vlm.answer_logprobs([PHOTO, other], prompts.Q6, answers, histories=histories)
        with torch.inference_mode():
            full = vlm._full_answer_logprobs([PHOTO, other], [vlm._prompt(prompts.Q6, h) for h in histories],
                                             answers, 64)
        np.testing.assert_allclose(scores, full, atol=1e-4)
        assert np.all(scores < 0)


def test_fused_decision_is_the_class_photo_and_render_support_together(tiny_vlms, monkeypatch):
    """With fuse=True the decision multiplies the photo's and the render's class probabilities: a class that is
    second on both beats one that is first on one view and nearly excluded by the other."""
    from occmllm import pipeline

    vlm = tiny_vlms["llava"]
    answers = iter(["The object is bottle.", "No.", "The object is jar."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    photo = np.full(len(prompts.CLASSES), 0.01)
    render = np.full(len(prompts.CLASSES), 0.01)
    bottle, jar, can = (prompts.CLASSES.index(c) for c in ("bottle", "jar", "can"))
    photo[[bottle, jar, can]] = 0.60, 0.001, 0.30
    render[[bottle, jar, can]] = 0.02, 0.70, 0.20
    monkeypatch.setattr(vlm, "class_posterior", lambda images: np.stack([photo, render]))
    trace = cot(vlm, PHOTO, expert=BoxExpert(), fuse=True)
    assert trace.final == "can" and trace.final_text == prompts.identify_answer("can")
    decide_step = trace.step("decide")
    assert decide_step.info["fused"] == "can" and decide_step.info["render"]["jar"] == pytest.approx(0.7)
    assert pipeline.fuse_posteriors(photo, render) == can
    answers = iter(["The object is bottle.", "No.", "The object is jar."])  # without fuse: the seed's rule
    assert cot(vlm, PHOTO, expert=BoxExpert()).final == "jar"
