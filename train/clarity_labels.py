"""The clarity labels that the stages reading Q1+Q6 conversations learn (2, 3a and 4c), made by stage 1's model on
photos it never trained on, when the preset asks for it (`clarity.relabel: true`); otherwise those stages read the
generator's visibility labels.

    python train/run_all.py --preset smoke --stages 1 2 --out runs/x clarity.relabel=true clarity.rule=route
A second dataset of `clarity.n` photos (data_tools.synth, seed + 1000, all in the train split) in OUT/clarity_data,
stage 1's Q1 answer on each, and its clarity files (Q1_Q6, DPO pairs, CoT mix) rewritten from those answers
(data_tools.relabel); OUT/clarity_data/RELABELLED marks them made and holds a summary. `clarity.rule`:
- `answer` (the seed's, NOTES.md): "No." where the model answered Q1 wrongly;
- `route`: "No." where the model is least sure of its Q1 answer (its log-probability), as many photos as make the most
  answers right when those read the 3D expert's render instead of the photo (the render's answers are the model's own
  on the expert's renders of these photos; at most `clarity.max_unclear` of them): the clarity answer then says when
  the 3D route helps, something the model can learn from the image.
The questions are asked here rather than through occmllm.evaluate: the rule needs the log-probability of each Q1
answer, which occmllm.evaluate does not return, and none of its Q6 and fused readings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from occmllm.relabel import MAX_UNCLEAR
from train.common import TrainError

CLARITY_KINDS = ("Q1_Q6", "dpo", "cot")  # the data kinds whose answers include the clarity label


def reads_clarity_labels(stage, config: dict) -> bool:
    """Whether `stage` learns clarity answers that this run makes (`clarity.relabel`)."""
    return bool(set(stage.data) & set(CLARITY_KINDS)) and bool((config.get("clarity", {}) or {}).get("relabel"))


def check_clarity_spec(spec: dict) -> str:
    """The preset's `clarity` settings, checked before anything trains; returns the rule."""
    rule = spec.get("rule", "answer")
    if rule not in ("answer", "route"):
        raise TrainError(f"clarity.rule: {rule!r} is not one of answer, route")
    share = spec.get("max_unclear", MAX_UNCLEAR)
    if not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise TrainError(f"clarity.max_unclear: {share!r} is not a share of the photos in (0, 1]")
    return rule


def clarity_data(stage, config: dict, out: Path, expert: Path | None, rank0: bool) -> Path:
    """The data folder with the clarity labels `stage` reads (OUT/clarity_data): made by rank 0 with stage 1's model
    (once), waited for by the other processes of a multi-GPU run."""
    from train.run_folder import wait_for

    labeller = out / "stage_1" / "model"
    if not (labeller / "config.json").is_file():
        raise TrainError(f"stage {stage.id} reads clarity labels made by stage 1's model, and {labeller} "
                         "has none: run stage 1 first")
    if rank0:
        return make_clarity_data(config, out, labeller, expert, rank0)
    wait_for(out / "clarity_data" / "RELABELLED")
    return out / "clarity_data"


def make_clarity_data(config: dict, out: Path, model: Path, expert: Path | None = None, rank0: bool = True) -> Path:
    """OUT/clarity_data relabelled by `model` by the preset's `clarity` settings (see the module's docstring); made
    once."""
    spec = config.get("clarity", {}) or {}
    rule = check_clarity_spec(spec)
    folder = out / "clarity_data"
    marker = folder / "RELABELLED"
    if marker.is_file():
        return folder
    make_clarity_photos(config, out, expert, rank0)

    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from occmllm.dataset import EXPERT_RENDERS, manifest_path, sample_path
    from occmllm.relabel import relabel, routing_threshold, set_clear, write_relabelled
    from occmllm import prompts
    from occmllm.evaluate import read_test_set, thread_map
    from occmllm.images import load_image
    from occmllm.vlm import VLM
    from train.data import DataDir

    # --- stage 1's Q1 answer on every photo (for `route` also its log-probability, and its answer on the render) ---
    source = DataDir(folder).require("Q1", "train")
    items = read_test_set(source.annotation, source.image_root)
    vlm = VLM.load(model)
    size = (config.get("evaluate", {}) or {}).get("batch_size", 32)
    predictions, logprob, on_render = {}, {}, {}
    def render_of(item):  # the 3D expert's render of a clarity photo
        return sample_path(folder, "train", EXPERT_RENDERS, item.id)

    for start in tqdm(range(0, len(items), size), desc="clarity labels: Q1", unit="batch"):
        batch = items[start: start + size]
        photos = thread_map(lambda item: load_image(item.image), batch)  # decoded in threads
        if rule == "answer":
            predictions.update(zip((i.id for i in batch), vlm.generate_batch(photos, [prompts.Q1] * len(batch))))
            continue
        answers, scores = vlm.generate_batch(photos, [prompts.Q1] * len(batch), with_logprobs=True)
        predictions.update((item.id, answer) for item, answer in zip(batch, answers))
        logprob.update((item.id, float(score)) for item, score in zip(batch, scores))
        # the model's answer on the expert's render (no render: nothing reconstructed, counted wrong)
        rendered = [i for i in batch if render_of(i).is_file()]
        answers = vlm.generate_batch(thread_map(lambda i: load_image(render_of(i)), rendered),
                                     [prompts.Q1] * len(rendered))
        on_render.update((item.id, answer) for item, answer in zip(rendered, answers))

    # --- the labels: the rule applied, the clarity files rewritten ---
    manifest = pd.read_parquet(manifest_path(folder, "train"))
    m = relabel(manifest, predictions, "error", f"run_all: {model}")
    summary = {"model": str(model), "rule": rule, "photos": len(m), "q1_right": int(m["clear"].sum())}
    if rule == "route":
        ids, classes = list(manifest["id"]), list(manifest["class"])
        photo_right = np.array(m["clear"], bool)
        render_right = np.array([prompts.parse_object(on_render.get(i, "")) == c for i, c in zip(ids, classes)])
        confidence = np.array([logprob[i] for i in ids])
        threshold, routed, accuracy = routing_threshold(confidence, photo_right, render_right,
                                                        spec.get("max_unclear", MAX_UNCLEAR))
        m = set_clear(manifest, {i: bool(c >= threshold) for i, c in zip(ids, confidence)}, "error",
                      f"run_all route: {model}")
        summary.update(render_right=int(render_right.sum()), logprob_threshold=round(threshold, 4),
                       decision_photo=round(float(photo_right.mean()), 4), decision_routed=round(accuracy, 4))
    m, counts = write_relabelled(folder, "train", m)
    summary.update(clear=int(m["clear"].sum()), unclear=int((~m["clear"]).sum()),
                   changed_from_visibility=int((m["clear"] != m["clear_visibility"]).sum()))
    if not summary["clear"] or not summary["unclear"]:
        print(f"warning: every photo is labelled {'clear' if summary['clear'] else 'unclear'}: the balanced clarity "
              "files (MPO pairs, CoT mix) are empty; more photos (clarity.n) or a longer stage 1 would fix that",
              file=sys.stderr)
    marker.write_text(json.dumps(summary) + "\n")
    print(f">> clarity labels: {json.dumps(summary)}", flush=True)
    return folder


def make_clarity_photos(config: dict, out: Path, expert: Path | None, rank0: bool = True,
                        background: bool = False) -> None:
    """The clarity photos (OUT/clarity_data: `clarity.n` photos of seed + 1000) and, for the `route` rule, the 3D
    expert's renders of them (both resumable: done once). `background`: beside stage 1 (train/prefetch.py)."""
    from train.expert import make_expert_renders
    from train.inputs import synthesize

    spec = config.get("clarity", {}) or {}
    folder = out / "clarity_data"
    if not (folder / "meta.json").is_file():
        generate = dict((config.get("data", {}) or {}).get("generate") or {})
        generate.update(n=spec.get("n", 8000), split_test=0)
        if background:
            from train.prefetch import background_workers

            generate["workers"] = background_workers()
        synthesize(folder, config.get("seed", 0) + 1000, generate,
                   ">> clarity labels: generating photos stage 1 never saw:",
                   log=out / "prefetch.log" if background else None)
    if check_clarity_spec(spec) == "route":
        make_expert_renders(folder, expert, None, config, rank0, background=background)
