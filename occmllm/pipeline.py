"""The OCC-MLLM-CoT steps for one photo, as a generator of step events (a UI shows each step as soon as it is done).

    from occmllm.pipeline import run_cot, cot
    for event in run_cot(vlm, "photo.jpg", expert=LearnedExpert()):
        if isinstance(event, Step):        # one event per step as it finishes
            print(event.name, event.parsed)
        else:                              # the Trace: the last event
            print(event.final)
    trace = cot(vlm, "photo.jpg")          # just the Trace

Steps (../shared/seed/NOTES.md, "Inference as the original code runs it"):
  describe    (optional) the three attribute questions, each in its own conversation
  identify    Q1 on the photo (greedy unless `sampling` is given)
  reflect     Q6 in the same conversation (the image prefix's KV cache is reused where the model allows)
  reconstruct when the clarity answer is "No" (or `force_3d`): expert.reconstruct(photo) -> mesh + render (+ the
              expert's extra views, where it made them), written to `out_dir` as mesh.glb, render.png, views.png
  identify_3d Q1 on the render, in a new conversation
  decide      the answer shown: the render's answer when routed to 3D and a render exists, else the Q1 answer; with
              `fuse=True` and a render: the class the photo and the render support together (the model's Q1
              class probabilities on both, multiplied: `VLM.class_posterior`). Routed to 3D with no expert (or no
              render): "3D required", and the note says that the first answer was kept and why.
              Scoring is stricter (`metrics.decide`, the seed's rule as occmllm.evaluate counts it): a missing render
              after "No", or a clarity answer that is neither yes nor no, is wrong there, while the trace still
              shows the first answer.
With `probabilities=True` the identify steps also carry the model's probabilities of the eight classes
(`info["classes"]`) and the self-assessment its probabilities of "Yes." and "No." (`info["clarity"]`, normalised over
the two), so that a reader sees when the model is guessing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from occmllm import prompts
from occmllm.images import load_image
from occmllm.metrics import decide


@dataclass
class Step:
    """One step's event: its name, the heading of the paper's figure, the prompt, the raw and parsed answer, seconds.
    Every field is serialised in the Trace's JSON."""

    name: str
    heading: str
    prompt: str | None = None
    raw: str | None = None
    parsed: str | None = None
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)  # {"render": .../render.png, "mesh": .../mesh.glb, "views": ...}
    info: dict = field(default_factory=dict)  # e.g. reused KV tokens, reconstruction message, candidates


@dataclass
class Trace:
    """Everything one CoT run did: the steps, the final answer, whether 3D was used, timings and files. The last
    event of `run_cot`, after its steps."""

    image: str | None
    model: str
    model_trained: bool
    steps: list[Step] = field(default_factory=list)
    final: str | None = None  # the answer shown (parsed class or UNPARSED); metrics.decide scores the steps
    final_text: str | None = None  # the raw answer the final class comes from
    used_3d: bool = False  # an expert was called
    required_3d: bool = False  # routed to 3D: the clarity answer was "No" (or 3D was forced), expert or not
    render_missing: bool = False
    seconds: float = 0.0

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(asdict(self), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        data = json.loads(text)
        data["steps"] = [Step(**s) for s in data.get("steps", [])]
        return cls(**data)


@dataclass
class Sampling:
    """Sampled decoding instead of greedy: temperature and top-p for every step."""

    temperature: float = 1.0
    top_p: float = 1.0


def _ask(vlm, image, question, history, sampling: Sampling | None):
    """(answer, history with this turn, info) greedy via vlm.chat, or one sample via vlm.sample."""
    if sampling is None:
        answer, history = vlm.chat(image, question, history=history, return_history=True)
        return answer, history, {"reused_tokens": vlm.last_reused_tokens}
    best = vlm.sample(image, question, n=1, temperature=sampling.temperature, top_p=sampling.top_p, history=history)[0]
    return best.text, list(history or []) + [(question, best.text)], {"logprob": best.logprob}


def fuse_posteriors(photo: np.ndarray, render: np.ndarray) -> int:
    """Index of the class that the photo's and the render's class probabilities support together (their product)."""
    return int(np.argmax(np.log(np.asarray(photo) + 1e-12) + np.log(np.asarray(render) + 1e-12)))


def _rounded(posterior: np.ndarray) -> dict[str, float]:
    """Class probabilities as a step shows them: {class: p} to 4 places."""
    return dict(zip(prompts.CLASSES, np.round(posterior, 4).tolist()))


def run_cot(vlm, image, expert=None, describe: bool = False, force_3d: bool = False, sampling: Sampling | None = None,
            out_dir: str | Path | None = None, fuse: bool = False,
            probabilities: bool = False) -> Iterator[Step | Trace]:
    """Yield a `Step` as each step finishes, then the `Trace` (tell them apart with isinstance). `image`: path, bytes, PIL image or array. `expert`:
    anything with `reconstruct(image) -> Reconstruction` (occmllm.recon); without one, a "No" cannot be routed to 3D
    and the Q1 answer stands (the trace says so). `out_dir`: where render.png, mesh.glb and views.png (when the
    expert made extra views) are written. `fuse`: when
    a render was read, decide by the photo and the render together instead of the render alone (with `force_3d`:
    every photo is also read through its 3D render). `probabilities`: add the eight classes' probabilities to the
    identify steps' info ("classes") and the probabilities of "Yes." and "No." to the self-assessment's ("clarity")."""
    start = time.perf_counter()
    source = str(image) if isinstance(image, (str, Path)) else None
    photo = load_image(image)
    trace = Trace(image=source, model=vlm.name, model_trained=vlm.trained)

    if describe:
        for attribute, question in prompts.ATTRIBUTE_QUESTIONS.items():
            t0 = time.perf_counter()
            raw, _, info = _ask(vlm, photo, question, None, sampling)
            step = Step("describe", prompts.STEP_DESCRIBE, question, raw, prompts.parse_yes_no(raw),
                        time.perf_counter() - t0, info={**info, "attribute": attribute})
            trace.steps.append(step)
            yield step

    t0 = time.perf_counter()
    raw_q1, history, info = _ask(vlm, photo, prompts.Q1, None, sampling)
    q1 = prompts.parse_object(raw_q1)
    posteriors = {}  # the model's class probabilities (VLM.class_posterior) of "photo" / "render", computed once
    if probabilities:
        posteriors["photo"] = vlm.class_posterior([photo])[0]
        info = {**info, "classes": _rounded(posteriors["photo"])}
    step = Step("identify", prompts.STEP_IDENTIFY, prompts.Q1, raw_q1, q1, time.perf_counter() - t0, info=info)
    trace.steps.append(step)
    yield step

    t0 = time.perf_counter()
    before_q6 = history
    raw_q6, history, info = _ask(vlm, photo, prompts.Q6, history, sampling)
    clarity = prompts.parse_yes_no(raw_q6)
    if probabilities:  # how sure the self-assessment is: P("Yes.") against P("No."), from the conversation's cache
        p_yes = float(vlm.clear_probability([photo], [before_q6])[0])
        info = {**info, "clarity": {prompts.YES: round(p_yes, 4), prompts.NO: round(1 - p_yes, 4)}}
    step = Step("reflect", prompts.STEP_REFLECT, prompts.Q6, raw_q6, clarity, time.perf_counter() - t0, info=info)
    trace.steps.append(step)
    yield step

    render_answer, render_raw = None, None
    routed = clarity == prompts.NO or force_3d
    trace.required_3d = routed
    if routed and expert is None:
        trace.render_missing = True
        step = Step("reconstruct", prompts.STEP_3D, info={"ok": False, "message": "no 3D expert configured"})
        trace.steps.append(step)
        yield step
    elif routed:
        t0 = time.perf_counter()
        reconstruction = expert.reconstruct(source if source is not None else np.asarray(photo))
        files = {}
        if out_dir is not None and reconstruction.ok:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(reconstruction.render).save(out / "render.png")
            files["render"] = str(out / "render.png")
            if reconstruction.mesh is not None:
                files["mesh"] = str(reconstruction.save_glb(out / "mesh.glb"))
            if reconstruction.views is not None:
                Image.fromarray(reconstruction.views).save(out / "views.png")
                files["views"] = str(out / "views.png")
        step = Step("reconstruct", prompts.STEP_3D, seconds=time.perf_counter() - t0, files=files,
                    info={"ok": reconstruction.ok, "message": reconstruction.message,
                          "timings": dict(reconstruction.timings)})
        trace.steps.append(step)
        yield step
        trace.used_3d = True
        if reconstruction.ok:
            t0 = time.perf_counter()
            render = Image.fromarray(reconstruction.render)
            vlm.forget()  # a new conversation on a new image
            render_raw, _, info = _ask(vlm, render, prompts.Q1, None, sampling)
            render_answer = prompts.parse_object(render_raw)
            if probabilities:
                posteriors["render"] = vlm.class_posterior([render])[0]
                info = {**info, "classes": _rounded(posteriors["render"])}
            step = Step("identify_3d", prompts.STEP_IDENTIFY, prompts.Q1, render_raw, render_answer,
                        time.perf_counter() - t0, files=dict(files), info=info)
            trace.steps.append(step)
            yield step
        else:
            trace.render_missing = True

    fused = None
    if fuse and render_answer is not None:
        t0 = time.perf_counter()
        if len(posteriors) < 2:  # not shown with the steps: both now, in one batch
            posteriors["photo"], posteriors["render"] = vlm.class_posterior([photo, render])
        fused = prompts.CLASSES[fuse_posteriors(posteriors["photo"], posteriors["render"])]
        fuse_info = {"fused": fused, "seconds": time.perf_counter() - t0, "photo": _rounded(posteriors["photo"]),
                     "render": _rounded(posteriors["render"])}
    if fused is not None:
        trace.final, trace.final_text = fused, prompts.identify_answer(fused)
    elif clarity == prompts.NO:
        trace.final = decide(q1, clarity, render_answer, trace.render_missing)
        trace.final_text = render_raw
        if trace.render_missing:  # a UI still wants an answer: say which one and why
            trace.final, trace.final_text = q1, raw_q1
    else:
        trace.final, trace.final_text = q1, raw_q1
    # the heading is the model's call (its clarity answer); Force 3D reads the render without making it required
    required = routed and (clarity == prompts.NO or not force_3d)
    heading = prompts.THREE_D_REQUIRED if required else prompts.NO_3D_REQUIRED
    why = "3D was required" if required else "3D was forced"
    note = ""
    if routed and expert is None:
        note = f"{why} but no 3D expert is configured: the first answer was kept"
    elif routed and trace.render_missing:
        note = f"{why} but the expert made no render: the first answer was kept"
    elif not required and render_answer is not None:  # forced after "Yes.": the render was read, not taken
        note = (f"3D forced: the render reads {render_answer}, but the model called the photo clear, so its first "
                "answer stands")
    info = {"note": note} if note else {}
    if fused is not None:
        info = {"note": "photo and render read together", **fuse_info}
    step = Step("decide", heading, raw=trace.final_text, parsed=trace.final, info=info)
    trace.steps.append(step)
    yield step
    trace.seconds = time.perf_counter() - start
    yield trace


def cot(vlm, image, **kwargs) -> Trace:
    """Run every step of `run_cot` and return the Trace."""
    for event in run_cot(vlm, image, **kwargs):
        pass
    return event
