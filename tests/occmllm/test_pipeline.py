"""The CoT pipeline's step events and Trace, with a stand-in 3D expert, on tiny models of each family."""

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


def test_unclear_answer_routes_to_render(tiny_vlms, monkeypatch):
    vlm = tiny_vlms["llava"]
    answers = iter(["The object is bottle.", "No.", "The object is jar."])
    monkeypatch.setattr(vlm, "chat", lambda *a, **k: (lambda ans: (ans, [(a[1], ans)]))(next(answers)))
    trace = cot(vlm, PHOTO, expert=BoxExpert())
    assert trace.final == "jar" and trace.used_3d and trace.step("decide").heading == prompts.THREE_D_REQUIRED


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
