"""The whole OCC-MLLM-CoT training recipe in one command: data, the 3D expert, seven VLM stages, evaluation.

    python train/run_all.py --preset smoke --out runs/smoke                  # every stage, tiny model, minutes on CPU
    python train/run_all.py --preset default --out runs/default              # the shipped default model (one GPU)
    python train/run_all.py --preset real --model /models/InternVL2-1B --data data/synth --out runs/real --lora
    python train/run_all.py --preset smoke --dry-run                         # print the plan, train nothing
    python train/run_all.py --preset smoke --stages 1 2 --out runs/x stages.1.epochs=3 sft.batch_size=4
    accelerate launch --num_processes 2 train/run_all.py --preset default --out runs/ddp    # DDP (or torchrun)
    torchrun --nproc_per_node 2 train/run_all.py --preset default --out runs/fsdp --fsdp    # FSDP2 instead of DDP
On the app's annotations (python -m data_tools.export --db data/annotations --out export), from the shipped default
model, each from a fresh --out:
    python train/run_all.py --preset smoke --stages 1 --data export --out runs/sft      # SFT on the corrected answers
    python train/run_all.py --preset smoke --stages 3a --data export --out runs/mpo    # MPO on the preference pairs
    python train/run_all.py --preset smoke --stages 4a --data export --out runs/score  # SCoRe on the judged items

Stages (the seed's table, ../shared/seed/NOTES.md; `starts` = the stage whose model it continues):
    0   3D expert (occmllm.recon.train_expert)                    on the photos + shapes
    1   SFT Q1                      projector + LM        starts base
    2   SFT Q1+Q6 (two turns)       projector + LM        starts 1
    3a  MPO (trl DPOTrainer)        all                   starts 2
    3b  SFT Q1, LM frozen           vision + projector    starts 3a
    4a  SCoRe self-correction RL    projector + LM        starts 2
    4b  SFT Q1, LM frozen           vision + projector    starts 4a
    4c  SFT CoT mix (Q0 / Q1+Q6)    projector + LM        starts 4b   <- the final model (OUT/final)
After every stage its model is evaluated on the test split (occmllm.evaluate: Description / Reflection / Decision,
and Decision on the images with under 40% of the object visible) into OUT/results.md and OUT/results.json;
`evaluate.fuse=true` adds the Decision with every photo also read through its 3D render, photo and render decided
together (occmllm.evaluate --fuse); `evaluate.fuse=[1,4c]` only after those stages (each fused pass reads every test
photo's render: ~85 s on an H100 for 2,400 photos).
A run started again skips the stages that have OUT/stage_X/DONE and continues the one that was running from its
last checkpoint. Bad data or a bad model folder stops the run before any training, with file:line.
A stage whose `starts` stage is neither in this run nor done in OUT starts from the base model, and says so (e.g.
`--stages 3a` alone: MPO on the base model). Data without a test split (an export) are not evaluated, with a note;
`evaluate.enabled=true` then stops the run, `false` skips evaluation on any data.
On an export of the app (data_tools.export) the base model is the shipped default model, whose answers the annotators
judged (occmllm/default_model/weights; --model or the preset's model.path for another); stage 1 (and the other Q1
SFT stages) learns the corrected answers (sft.jsonl), 3a the preference pairs (preferences.jsonl), 4a scores its
attempts against every judged item's accepted or corrected answer (labels.jsonl; sft.jsonl in an export without it)
and adds `correction_weight` times a supervised term on the annotated self-corrections (self_correction.jsonl: the
correction after a wrong first answer; train/score.py); renders and clarity.relabel are off there (no renders, and the
annotators' clarity answers are the labels).
SFT stages encode every sample once and keep it in GPU (or host) memory when it fits (`sft.cache=auto|gpu|cpu|none`);
`stages.ID.hflip=true` mirrors images at random, `augment=true` also zooms, moves, turns and recolours them,
`compile=true` runs the forward pass through torch.compile on CUDA. `renders: true|oracle|expert|both` adds every Q1
sample again on the object's ground-truth render and/or the learned expert's (made before the stage by
data_tools.expert_renders with the run's 3D expert, `data.generate.workers` processes; resumable).
Numbers in overrides may be written 3e-4.
With `clarity.relabel: true` the clarity answers that stages 2, 3a and 4c learn are made by stage 1's model on
`clarity.n` freshly generated photos it never trained on (OUT/clarity_data): `clarity.rule: answer`, the seed's, "No."
where it answered Q1 wrongly; `route` (the default preset), "No." where it is least sure (see make_clarity_data);
otherwise they are the generator's visibility labels.
On a GPU, the work later steps need and the CPU can do (the test photos' expert renders, the clarity photos and their
renders) runs beside stage 1 (`prefetch: auto|true|false`; its output in OUT/prefetch.log). The whole run's wall
clock, piece by piece, goes to OUT/timing.json and under the results table.
Every stage logs its metrics (loss, learning rate, rewards, KL, the evaluation after it) to a tracker as well as to
its loss.csv: `--report-to trackio` (the default; OUT/trackio, dashboard `TRACKIO_DIR=OUT/trackio trackio show`),
`tensorboard` (OUT/tensorboard) or `none`, or the preset's `report_to` (train/tracking.py). results.md shows each
stage's loss curve and the metrics stage by stage as PNGs in OUT/plots (train/plots.py); OUT/run.json names the
preset, the command and the times, for the app's Runs tab (`python -m demo --runs DIR`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python train/run_all.py` from anywhere
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml  # noqa: E402

from train import tracking  # noqa: E402
from train.common import TrainError  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class Stage:
    id: str
    kind: str  # expert | sft | mpo | score
    what: str
    data: tuple[str, ...] = ()  # data kinds (train.data.KINDS)
    parts: tuple[str, ...] = ()
    starts: str | None = None  # the stage whose model this one continues ("base" = the base model)
    epochs: float = 1
    lr: float = 4e-5
    weight_decay: float = 0.01


STAGES = [
    Stage("0", "expert", "3D expert"),
    Stage("1", "sft", "SFT Q1", ("Q1",), ("projector", "lm"), "base", 2),
    Stage("2", "sft", "SFT Q1+Q6", ("Q1_Q6",), ("projector", "lm"), "1", 2),
    Stage("3a", "mpo", "MPO clarity pairs", ("dpo",), ("vision", "projector", "lm"), "2", 1, 5e-6, 0.05),
    Stage("3b", "sft", "SFT Q1, LM frozen", ("Q1",), ("vision", "projector"), "3a", 4),
    Stage("4a", "score", "SCoRe self-correction", ("Q1",), ("projector", "lm"), "2", 1),
    Stage("4b", "sft", "SFT Q1, LM frozen", ("Q1",), ("vision", "projector"), "4a", 6),
    Stage("4c", "sft", "SFT CoT mix", ("cot",), ("projector", "lm"), "4b", 6),
]
BY_ID = {s.id: s for s in STAGES}
FINAL = "4c"


# --- configuration ---------------------------------------------------------------------------------
def load_preset(name: str) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise TrainError(f"{path}: no such preset (known: {known})")
    return load_yaml(path.read_text()) or {}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, but `3e-4` and `1e3` are numbers (PyYAML wants `3.0e-4`), as users write them."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def apply_override(config: dict, text: str) -> None:
    """`a.b.c=value` (value parsed as YAML) sets config["a"]["b"]["c"]."""
    if "=" not in text:
        raise TrainError(f"override {text!r}: expected key=value, e.g. stages.1.epochs=3")
    key, value = text.split("=", 1)
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node.setdefault(part, {})
    node[last] = load_yaml(value)


def stage_settings(config: dict, stage: Stage) -> dict:
    """The settings of one stage: seed table < preset's `sft`/`mpo`/`score` block < preset's `stages.ID` block."""
    settings = {} if stage.kind == "expert" else {"parts": list(stage.parts), "lr": stage.lr,
                                                  "weight_decay": stage.weight_decay}
    if stage.kind == "score":
        settings.update(stage1_epochs=stage.epochs, stage2_epochs=stage.epochs)
    elif stage.kind != "expert":
        settings["epochs"] = stage.epochs
    settings.update(config.get(stage.kind, {}) or {})
    settings.update((config.get("stages", {}) or {}).get(stage.id, {}) or {})
    settings.setdefault("seed", config.get("seed", 0))
    if stage.kind != "expert":
        settings.setdefault("lora", bool(config.get("lora", False)))
        settings.setdefault("bf16", bool(config.get("bf16", False)))
    return settings


def stage_order(requested: list[str] | None, start_from: str | None) -> list[Stage]:
    ids = [s.id for s in STAGES]
    for stage_id in (requested or []) + ([start_from] if start_from else []):
        if stage_id not in BY_ID:
            raise TrainError(f"unknown stage {stage_id!r}; stages are {' '.join(ids)}")
    chosen = requested or ids
    if start_from:
        chosen = [i for i in chosen if ids.index(i) >= ids.index(start_from)]
    return [BY_ID[i] for i in ids if i in chosen]


# --- phases ----------------------------------------------------------------------------------------
def make_data(config: dict, data: str | None, out: Path) -> Path:
    """The dataset folder: --data, the preset's `data.dir`, or one generated by data_tools.synth into OUT/data."""
    folder = data or (config.get("data", {}) or {}).get("dir")
    if folder:
        return Path(folder)
    generate = (config.get("data", {}) or {}).get("generate") or {}
    folder = out / "data"
    if (folder / "meta.json").is_file():
        return folder
    synthesize(folder, config.get("seed", 0), generate, ">> generating data:")
    return folder


def synthesize(folder: Path, seed: int, generate: dict, message: str, log: Path | None = None) -> None:
    """occmllm.synth.generate into FOLDER with the preset's `data.generate` settings (resumes a folder it started), in
    a fresh process: the generator forks its workers, which a process holding torch's threads must not do. Its
    progress goes to `log` when given (a run in the background), else to the console."""
    print(message, f"occmllm.synth.generate({folder}, seed={seed}, " +
          ", ".join(f"{k}={v!r}" for k, v in generate.items()) + ")", flush=True)
    worker = multiprocessing.get_context("spawn").Process(target=_generate_data, args=(folder, seed, generate, log))
    worker.start()
    worker.join()
    if worker.exitcode:
        where = f": see {log}" if log else ""
        raise TrainError(f"generating {folder} failed (exit code {worker.exitcode}){where}")


def _generate_data(folder: Path, seed: int, settings: dict, log: Path | None) -> None:
    """The body of synthesize's process; exits 2 with the message on bad settings, as the command line does."""
    if log is not None:
        stream = open(log, "a", buffering=1)
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    from occmllm.synth import limit_threads

    limit_threads()
    from occmllm.synth.generate import SynthError, generate

    try:
        generate(folder, seed=seed, **settings)
    except (SynthError, TypeError) as e:  # TypeError: a setting generate() does not have
        print(f"error: data.generate: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


CLARITY_KINDS = ("Q1_Q6", "dpo", "cot")  # the data kinds whose answers include the clarity label


def check_clarity_spec(spec: dict) -> str:
    """The preset's `clarity` settings, checked before anything trains; returns the rule."""
    rule = spec.get("rule", "answer")
    if rule not in ("answer", "route"):
        raise TrainError(f"clarity.rule: {rule!r} is not one of answer, route")
    share = spec.get("max_unclear", 0.5)
    if not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise TrainError(f"clarity.max_unclear: {share!r} is not a share of the photos in (0, 1]")
    return rule


def make_clarity_data(config: dict, out: Path, model: Path, eval_settings: dict, expert: Path | None = None,
                      rank0: bool = True) -> Path | None:
    """The clarity labels that the stages reading Q1+Q6 conversations learn, made on photos the model never trained
    on: a second dataset of `clarity.n` photos (data_tools.synth, seed + 1000, all in the train split) in
    OUT/clarity_data, the stage-1 model's Q1 answer on each, and its clarity files (Q1_Q6, DPO pairs, CoT mix)
    rewritten from those answers (data_tools.relabel). `clarity.rule`:
    - `answer` (the seed's, NOTES.md): "No." where the model answered Q1 wrongly;
    - `route`: "No." where the model is least sure of its Q1 answer (its log-probability), as many photos as make
      the most answers right when those read the 3D expert's render instead of the photo (the render's answers are
      the model's own on the expert's renders of these photos; at most `clarity.max_unclear` of them): the clarity
      answer then says when the 3D route helps, something the model can learn from the image.
    None when the preset does not ask for relabelling (`clarity.relabel`); the stages then read the generator's
    visibility labels."""
    spec = config.get("clarity", {}) or {}
    if not spec.get("relabel"):
        return None
    rule = check_clarity_spec(spec)
    folder = out / "clarity_data"
    marker = folder / "RELABELLED"
    if marker.is_file():
        return folder
    make_clarity_photos(config, out, expert, rank0)

    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from occmllm.expert_renders import FOLDER
    from occmllm.relabel import relabel, routing_threshold, set_clear, write_relabelled
    from occmllm import prompts
    from occmllm.evaluate import read_test_set, thread_map
    from occmllm.images import load_image
    from occmllm.vlm import VLM
    from train.data import DataDir

    source = DataDir(folder).require("Q1", "train")
    items = read_test_set(source.annotation, source.image_root)
    vlm = VLM.load(model)
    size = eval_settings.get("batch_size", 32)
    predictions, logprob, on_render = {}, {}, {}
    renders = folder / "train" / FOLDER
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
        rendered = [i for i in batch if (renders / f"{i.id}.png").is_file()]
        answers = vlm.generate_batch(thread_map(lambda i: load_image(renders / f"{i.id}.png"), rendered),
                                     [prompts.Q1] * len(rendered))
        on_render.update((item.id, answer) for item, answer in zip(rendered, answers))
    manifest_path = folder / "train" / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path)
    m = relabel(manifest, predictions, "error", f"run_all: {model}")
    summary = {"model": str(model), "rule": rule, "photos": len(m), "q1_right": int(m["clear"].sum())}
    if rule == "route":
        ids, classes = list(manifest["id"]), list(manifest["class"])
        photo_right = np.array(m["clear"], bool)
        render_right = np.array([prompts.parse_object(on_render.get(i, "")) == c for i, c in zip(ids, classes)])
        confidence = np.array([logprob[i] for i in ids])
        threshold, routed, accuracy = routing_threshold(confidence, photo_right, render_right,
                                                        spec.get("max_unclear", 0.5))
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
    expert's renders of them (both resumable: done once)."""
    spec = config.get("clarity", {}) or {}
    folder = out / "clarity_data"
    if not (folder / "meta.json").is_file():
        generate = dict((config.get("data", {}) or {}).get("generate") or {})
        generate.update(n=spec.get("n", 8000), split_test=0)
        if background:
            generate["workers"] = background_workers()
        synthesize(folder, config.get("seed", 0) + 1000, generate,
                   ">> clarity labels: generating photos stage 1 never saw:",
                   log=out / "prefetch.log" if background else None)
    if check_clarity_spec(spec) == "route":
        make_expert_renders(folder, expert, None, config, rank0, background=background)


def background_workers() -> int:
    """Processes for work done beside a GPU stage: the cores less a few for the training process."""
    return max(1, (os.cpu_count() or 1) - 4)


class Prefetch:
    """Work that later steps need and that can run on the CPU while stage 1 trains on the GPU (the stage is bound by
    the GPU then; done one after the other, this work added about 105 s to the default preset on an H100): the 3D
    expert's renders of the test photos (the first evaluation reads them), the clarity photos and their renders.
    A thread of this process, its work in worker processes; its console output goes to OUT/prefetch.log. Everything
    it makes is marked done on disk, so the steps that need it find it made (`join` first) or make it themselves."""

    def __init__(self, tasks: list):
        import threading

        self.tasks, self.error = tasks, None
        self.thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for task in self.tasks:
                task()
        except BaseException as error:  # noqa: BLE001 - raised again in join()
            self.error = error

    def join(self) -> None:
        if self.thread.is_alive():
            print(">> waiting for the work done beside stage 1 (test renders, clarity photos)", flush=True)
        self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def check_prefetch(config: dict):
    """The preset's `prefetch` (true, false or auto), checked before anything trains."""
    wanted = config.get("prefetch", "auto")
    if wanted not in (True, False, "auto"):
        raise TrainError(f"prefetch: {wanted!r} is not one of true, false, auto")
    return wanted


def start_prefetch(stages: list[Stage], stage: Stage, config: dict, out: Path, data_dir: Path, expert: Path | None,
                   eval_settings: dict, evaluate: bool) -> Prefetch | None:
    """The Prefetch to start before `stage` trains: only before stage 1, for the work this run will need, when the
    preset's `prefetch` is true, or `auto` (the default) and there is a GPU (on a CPU the stage needs the cores)."""
    import torch

    wanted = check_prefetch(config)
    if stage.id != "1" or not (wanted is True or (wanted == "auto" and torch.cuda.is_available())):
        return None
    tasks = []
    if evaluate and eval_settings.get("expert", "learned") == "learned" and expert:
        tasks.append(lambda: make_expert_renders(data_dir, expert, None, config, True, "test", background=True))
    clarity = config.get("clarity", {}) or {}
    if clarity.get("relabel") and any(set(s.data) & set(CLARITY_KINDS) for s in stages) and \
            not (out / "clarity_data" / "RELABELLED").is_file():
        tasks.append(lambda: make_clarity_photos(config, out, expert, True, background=True))
    if not tasks:
        return None
    print(f">> beside stage 1, on the CPU: {len(tasks)} task(s) (log: {out / 'prefetch.log'})", flush=True)
    return Prefetch(tasks)


def base_model_path(config: dict, model: str | None, out: Path, export: bool) -> Path:
    """--model, the preset's `model.path`, for an export of the app the shipped default model (whose answers the
    annotators judged: occmllm/default_model/weights), else OUT/base (the default architecture, built untrained)."""
    from occmllm.default_model import WEIGHTS_DIR

    path = model or (config.get("model", {}) or {}).get("path")
    if path:
        return Path(path)
    if export and (WEIGHTS_DIR / "config.json").is_file():
        return WEIGHTS_DIR
    return out / "base"


def make_base_model(config: dict, model: str | None, out: Path, export: bool = False) -> Path:
    """The base model folder (base_model_path), built untrained into OUT/base when it is that one."""
    from occmllm.default_model import WEIGHTS_DIR

    folder = base_model_path(config, model, out, export)
    if folder == WEIGHTS_DIR:
        print(f">> base model: the shipped default model ({folder}), the one whose answers the annotators judged "
              "(--model PATH for another)", flush=True)
    if folder == out / "base" and not (folder / "config.json").is_file():
        from occmllm.default_model import DefaultModelConfig, build_default_model

        build_default_model(folder, DefaultModelConfig(**((config.get("model", {}) or {}).get("build") or {})))
    return folder


def is_export(data_dir: Path) -> bool:
    """Whether a data folder is an export of the app's annotations (python -m data_tools.export)."""
    from train.data import DataDir

    return (Path(data_dir) / "meta.json").is_file() and DataDir(data_dir).is_export


def data_for(stage: Stage, data_dir: Path):
    """The DataDir a stage reads: on an export, SCoRe (4a) reads the judged items' labels as its Q1 data."""
    from train.data import EXPORT_ENTRIES, SCORE_EXPORT_ENTRIES, DataDir

    return DataDir(data_dir, SCORE_EXPORT_ENTRIES if stage.kind == "score" else EXPORT_ENTRIES)


def starts_from(stage: Stage, run_ids: set[str], out: Path) -> str | None:
    """The stage whose model `stage` continues: its `starts` when that stage is in this run or has a model in OUT,
    else "base" (e.g. `--stages 3a` on a fresh OUT: MPO on the base model, with no stage 2 before it)."""
    if stage.starts in (None, "base") or stage.starts in run_ids:
        return stage.starts
    return stage.starts if (out / f"stage_{stage.starts}" / "model" / "config.json").is_file() else "base"


def check_inputs(stages: list[Stage], data_dir: Path, base: Path, evaluate: bool) -> None:
    """Everything that can be checked before training: the model folder and every data file a stage reads."""
    from train.common import check_model_folder
    from train.data import DataDir, check_sources

    check_model_folder(base)
    sources = []
    for stage in stages:
        data = data_for(stage, data_dir)
        sources += [data.require(kind, "train") for kind in stage.data]
        if stage.kind == "score" and data.source("self_correction", "train"):
            sources.append(data.source("self_correction", "train"))
    data = DataDir(data_dir)
    if evaluate:
        if data.source("Q1", "test") is None:
            raise TrainError(f"evaluate.enabled is true, but {data_dir} has no test split to evaluate on (no "
                             f"test_Q1.jsonl in {data.meta_path}): evaluate.enabled=false, or data with a test split")
        sources.append(data.require("Q1", "test"))
    check_sources(sources, data.meta_path)


def run_stage(stage: Stage, settings: dict, start: Path | None, data_dir: Path, folder: Path) -> Path:
    """Train one stage into `folder`; returns its model folder (the expert's folder for stage 0)."""
    from train.data import read_pairs, read_samples

    settings = dict(settings)
    limit, renders = settings.pop("limit", None), settings.pop("renders", False)
    data = data_for(stage, data_dir)
    if stage.kind == "expert":
        from train.expert import train_stage_expert

        return train_stage_expert(data_dir, folder, settings)
    if stage.kind == "mpo":
        from train.mpo import MPOConfig, train_mpo

        from occmllm.formats import FormatError

        try:
            pairs = [p for kind in stage.data for p in read_pairs(data.require(kind, "train"), limit)]
        except FormatError as error:  # e.g. relabelled clarity with every answer right: nothing to balance
            raise TrainError(f"stage {stage.id}: no preference pairs: {error}") from None
        if data.is_export:
            print(f">> stage {stage.id} on the export: {len(pairs)} preference pairs "
                  f"({data.require('dpo', 'train').annotation.name})", flush=True)
        return train_mpo(start, folder, pairs, _config(MPOConfig, settings), stage.id)
    samples = [s for kind in stage.data for s in read_samples(data.require(kind, "train"), limit, renders)]
    for kind in settings.pop("extra_data", []) or []:  # e.g. [attributes]: the paper's "Supervise Description"
        samples += read_samples(data.require(kind, "train"), limit)
    if stage.kind == "score":
        from train.score import SCoReConfig, train_score

        config = _config(SCoReConfig, settings)
        fixes = data.source("self_correction", "train")  # an export's: [Q1, wrong answer, check again, correction]
        corrections = read_samples(fixes, limit) if fixes and config.correction_weight else []
        if data.is_export:
            print(f">> stage {stage.id} on the export: {len(samples)} labelled items "
                  f"({data.require('Q1', 'train').annotation.name}), {len(corrections)} annotated self-corrections"
                  f"{f' ({fixes.annotation.name}, weight {config.correction_weight})' if corrections else ''}",
                  flush=True)
        return train_score(start, folder, samples, config, stage.id, corrections)
    from train.sft import SFTConfig, train_sft

    if data.is_export:
        print(f">> stage {stage.id} on the export: {len(samples)} conversations "
              f"({', '.join(data.require(kind, 'train').annotation.name for kind in stage.data)})", flush=True)
    return train_sft(start, folder, samples, _config(SFTConfig, settings), stage.id)


def _config(cls, settings: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(settings) - names
    if unknown:
        raise TrainError(f"unknown setting(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(names)}")
    return cls(**settings)


def wait_for(marker: Path) -> None:
    """Other ranks of a multi-GPU run: wait until rank 0 has written `marker` (data it makes for all of them)."""
    while not marker.is_file():
        time.sleep(5)


def make_expert_renders(data_dir: Path, expert: Path | None, limit: int | None, config: dict, rank0: bool,
                        split: str = "train", background: bool = False) -> None:
    """The 3D expert's render of every photo of a split (the training photos a stage reads with `renders:
    expert|both`; the test photos for `evaluate.fuse`), made once by data_tools.expert_renders with the run's expert
    (stage 0's, else the shipped one), the network on the GPU when there is one; resumable. Other ranks wait."""
    from occmllm.expert_renders import FOLDER, render_split

    folder = Path(data_dir) / split / FOLDER
    marker = folder / f"COMPLETE_{limit or 'all'}"
    if not rank0:
        wait_for(marker)
        return
    if marker.is_file() and json.loads(marker.read_text()).get("expert") == str(expert):
        return
    import torch

    workers = ((config.get("data") or {}).get("generate") or {}).get("workers") or os.cpu_count() or 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if background:  # beside a GPU stage: all on the CPU, fewer processes, no progress bar
        workers, device = background_workers(), "cpu"
    photos = "training" if split == "train" else split
    where = f"{Path(data_dir).name}/{split} (in the background)" if background else f"the {photos} photos"
    print(f">> expert renders of {where}: {expert or 'the shipped expert'}, {workers} workers, "
          f"network on {device}", flush=True)
    t0 = time.time()
    try:
        counts = render_split(Path(data_dir), split, str(expert) if expert else None, workers, limit, device=device,
                              progress=not background)
    except ValueError as error:
        raise TrainError(f"expert renders: {error}") from None
    print(f">> expert renders{' of ' + where if background else ''}: {counts} in {time.time() - t0:.1f} s",
          flush=True)
    if counts["rendered"] + counts["skipped"] == 0 and split == "train":  # (a test photo without: the route's answer)
        raise TrainError(f"expert renders: the 3D expert ({expert or 'shipped'}) reconstructed nothing on the "
                         f"{counts['nothing']} training photos of {data_dir}: `renders: expert|both` cannot be used "
                         f"with these photos (use renders: oracle, or an expert trained on such photos)")
    marker.write_text(json.dumps({"expert": str(expert), **counts}) + "\n")


def evaluation_expert(route: str, expert: Path | None, data_dir: Path):
    """The 3D expert the evaluation routes to: `oracle`, `learned` (the run's expert; its precomputed renders of
    the test photos when make_expert_renders wrote them for this expert: the same images, made once), or None."""
    if route == "oracle":
        from occmllm.recon import OracleExpert

        return OracleExpert(data_dir, "test")
    if route != "learned" or expert is None or not (Path(expert) / "config.json").is_file():
        return None
    from occmllm.expert_renders import FOLDER

    marker = Path(data_dir) / "test" / FOLDER / "COMPLETE_all"
    if marker.is_file() and json.loads(marker.read_text()).get("expert") == str(expert):
        from occmllm.recon import FolderExpert

        return FolderExpert(marker.parent)
    from occmllm.recon import LearnedExpert

    return LearnedExpert(expert)


def evaluate_model(model: Path, data_dir: Path, expert: Path | None, settings: dict) -> dict:
    """occmllm.evaluate on the test split: the paper's three scores and Decision under 40% visible."""
    from occmllm import metrics
    from occmllm.evaluate import evaluate, read_manifest, read_test_set
    from occmllm.vlm import VLM
    from train.data import DataDir

    source = DataDir(data_dir).require("Q1", "test")
    items = read_test_set(source.annotation, source.image_root)[: settings.get("limit")]
    vlm = VLM.load(model)
    expert_model = evaluation_expert(settings.get("expert", "learned"), expert, data_dir)
    fuse = bool(settings.get("fuse")) and expert_model is not None  # (fuses_after() has picked the stages)
    results, records = evaluate(vlm, items, expert=expert_model, batch_size=settings.get("batch_size", 32),
                                manifest=read_manifest(source.image_root), progress=True, fuse=fuse)
    summary = metrics.summary(results)
    hidden = metrics.mostly_hidden(results)
    row = {"n": summary["n"], "description": summary["description"], "reflection": summary["reflection"],
           "decision": summary["decision"], "decision_visible_under_40": metrics.decision(hidden) if hidden else None,
           "n_visible_under_40": len(hidden), "3d_plus": summary["3d_plus"], "routed_to_3d": summary["routed_to_3d"]}
    if summary.get("strict"):  # the seed's exact-string comparison, beside the parsed scores
        row.update(description_exact=summary["strict"]["acc1"], reflection_exact=summary["strict"]["acc6"],
                   decision_exact=summary["strict"]["decision"])
    if fuse:  # every test photo also read through its render, photo and render decided together
        from occmllm.evaluate import fused_summary

        fused = fused_summary(results, records)
        row.update(decision_fused=fused["decision"], decision_fused_visible_under_40=fused["visible_under_40"]["decision"])
    return row


def fuses_after(stage: Stage, eval_settings: dict) -> bool:
    """Whether the evaluation after `stage` also fuses photo and render: `evaluate.fuse` true, or a list of stage ids."""
    fuse = eval_settings.get("fuse")
    if isinstance(fuse, (list, tuple)):
        return stage.id in {str(s) for s in fuse}
    return bool(fuse)


class RunClock:
    """Wall-clock seconds of a run's pieces (data, each stage's training and evaluation, the clarity labels), written
    to OUT/timing.json and under the results table: what a time target is checked against. A resumed run counts only
    what this process did (`resumed`)."""

    def __init__(self, out: Path):
        self.out, self.start, self.pieces = out, time.time(), {}
        self.resumed = any(out.glob("stage_*/DONE"))

    @contextlib.contextmanager
    def piece(self, name: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.pieces[name] = round(self.pieces.get(name, 0.0) + time.time() - t0, 1)

    def finish(self) -> dict:
        total = round(time.time() - self.start, 1)
        record = {"total_s": total, "minutes": round(total / 60, 2), "resumed": self.resumed, "pieces": self.pieces}
        (self.out / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
        info = self.out / "run.json"
        if info.is_file():
            info.write_text(json.dumps({**json.loads(info.read_text()), "finished": now_iso(), "total_s": total},
                                       indent=2) + "\n")
        results = self.out / "results.md"
        if results.is_file():
            note = " (resumed: this process only)" if self.resumed else " (one piece, data generation included)"
            pieces = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.pieces.items() if seconds >= 0.5)
            results.write_text(results.read_text() + f"\nWhole run: {total:.0f} s = {total / 60:.1f} min{note}. "
                               f"Pieces: {pieces}.\n")
        print(f">> whole run: {total:.0f} s ({total / 60:.1f} min){' in this process' if self.resumed else ''}; "
              f"pieces in {self.out / 'timing.json'}", flush=True)
        return record


def write_results(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    fused = any("decision_fused" in row for row in results.values())
    extra = " Decision, photo + render fused | fused (visible < 40%) |" if fused else ""
    lines = [f"| stage | what | Description | Reflection | Decision | Decision (visible < 40%) |{extra} "
             "exact strings: Description / Reflection / Decision | n | minutes |",
             "|---|---|---|---|---|---|" + ("---|---|" if fused else "") + "---|---|---|"]
    for stage_id, row in results.items():
        cells = (f" {fmt(row.get('decision_fused'))} | {fmt(row.get('decision_fused_visible_under_40'))} |"
                 if fused else "")
        lines.append(f"| {stage_id} | {row.get('what', '')} | {fmt(row.get('description'))} | "
                     f"{fmt(row.get('reflection'))} | {fmt(row.get('decision'))} | "
                     f"{fmt(row.get('decision_visible_under_40'))} ({row.get('n_visible_under_40', 0)}) |{cells} "
                     f"{fmt(row.get('description_exact'))} / {fmt(row.get('reflection_exact'))} / "
                     f"{fmt(row.get('decision_exact'))} | {row.get('n', '-')} | {row.get('minutes', '-')} |")
    try:  # the pictures beside the table: each stage's loss curve, the metrics stage by stage (OUT/plots)
        from train.plots import draw_plots, markdown

        pictures = markdown(out, draw_plots(out))
    except ImportError as error:
        pictures = f"\nNo pictures: {error} (pip install matplotlib, then python train/plots.py {out}).\n"
    (out / "results.md").write_text("\n".join(lines) + "\n" + pictures)


def print_plan(stages: list[Stage], config: dict, out: Path, data: str | None, model: str | None) -> None:
    print(f"preset -> {out}")
    print(f"  data : {data or (config.get('data') or {}).get('dir') or 'generate: ' + json.dumps((config.get('data') or {}).get('generate', {}))}")
    base = base_model_path(config, model, out, bool(data) and is_export(Path(data)))
    print(f"  model: {base if base != out / 'base' else 'build default architecture: ' + json.dumps((config.get('model') or {}).get('build', {}))}")
    print(f"  track: {report_to(config)}")
    print(f"  lora : {bool(config.get('lora'))}   fsdp: {bool(config.get('fsdp'))}   prefetch: {config.get('prefetch', 'auto')}   seed: {config.get('seed', 0)}   evaluate: {json.dumps(config.get('evaluate', {}))}")
    clarity = config.get("clarity", {}) or {}
    rule = {"route": "route to 3D where stage 1 is least sure", "answer": "stage 1's answers"}.get(
        clarity.get("rule", "answer"), clarity.get("rule"))
    print("  clarity labels: " + (f"{rule}, on {clarity.get('n', 8000)} new photos (OUT/clarity_data)"
                                  if clarity.get("relabel") else "the generator's visibility labels"))
    for stage in stages:
        done = " (done, skipped)" if (out / f"stage_{stage.id}" / "DONE").is_file() else ""
        settings = stage_settings(config, stage)
        starts = starts_from(stage, {s.id for s in stages}, out)
        print(f"  stage {stage.id:<3} {stage.kind:<6} {stage.what:<24} starts {starts or '-':<5} "
              f"data {','.join(stage.data) or 'photos+shapes':<8} {json.dumps(settings)}{done}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python train/run_all.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", default="smoke", help="train/configs/NAME.yaml (smoke, default, real) or a path")
    parser.add_argument("--stages", nargs="+", help="only these stages (0 1 2 3a 3b 4a 4b 4c)")
    parser.add_argument("--from", dest="start_from", help="this stage and the ones after it")
    parser.add_argument("--model", help="base model folder (default: the preset's; smoke/default build one; on an "
                        "export of the app, the shipped default model)")
    parser.add_argument("--data", help="dataset folder with meta.json: data_tools.synth's or the app's export "
                        "(default: generated with data_tools.synth)")
    parser.add_argument("--out", default=None, help="output folder (default runs/PRESET)")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters (peft) instead of full fine-tuning")
    parser.add_argument("--fsdp", action="store_true", help="under torchrun / accelerate launch on several GPUs: "
                        "shard the model with FSDP2 instead of DDP (full fine-tuning; same as the preset's fsdp: true "
                        "or `accelerate launch --use_fsdp --fsdp_version 2`)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--report-to", choices=tracking.REPORT_TO, help="where every stage's metrics go besides "
                        "loss.csv: trackio (the default: OUT/trackio, local, no network), tensorboard "
                        "(OUT/tensorboard) or none; the preset's `report_to` otherwise")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. stages.1.epochs=3 sft.batch_size=4")
    args = parser.parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if args.stages:  # `--stages 1 2 key=value`: the overrides after the stage list are overrides
        args.overrides = [a for a in args.stages if "=" in a] + args.overrides
        args.stages = [a for a in args.stages if "=" not in a]
    try:
        return run(args)
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args) -> int:
    with contextlib.ExitStack() as closing:  # the tracker is closed (everything written) however the run ends
        return _run(args, closing)


def report_to(config: dict) -> str:
    """The tracker of a run: --report-to (set into the config), the preset's `report_to`, else trackio."""
    return tracking.check_report_to(config.get("report_to", tracking.DEFAULT))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_run_info(out: Path, args, config: dict, stages: list[Stage]) -> None:
    """OUT/run.json: what the app's Runs tab lists (preset, date, command; occmllm/runs.py reads it). A resumed run
    keeps its first start and adds this one to `resumed`."""
    path = out / "run.json"
    try:
        info = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        info = {}
    if info:
        info["resumed"] = [*info.get("resumed", []), now_iso()]
        info["stages"] = [s for s in dict.fromkeys([*info.get("stages", []), *(s.id for s in stages)])]
        info.pop("finished", None)
    else:
        info = {"format": 1, "preset": args.preset, "started": now_iso(),
                "stages": [s.id for s in stages]}
    import shlex

    info.update(command="python train/run_all.py " + shlex.join(getattr(args, "argv", [])),
                report_to=report_to(config), data=args.data, model=args.model)
    path.write_text(json.dumps(info, indent=2) + "\n")


def _run(args, closing: contextlib.ExitStack) -> int:
    # --- configuration ---
    config = load_preset(args.preset)
    for override in args.overrides:
        apply_override(config, override)
    if args.lora:
        config["lora"] = True
    if args.fsdp:
        config["fsdp"] = True
    if args.seed is not None:
        config["seed"] = args.seed
    if args.report_to:
        config["report_to"] = args.report_to
    report_to(config)  # checked before anything is made
    out = Path(args.out or REPO / "runs" / Path(args.preset).stem)
    stages = stage_order(args.stages, args.start_from)
    from train.common import fsdp_requested, use_fsdp

    if config.get("fsdp"):
        use_fsdp()
    if fsdp_requested() and config.get("lora"):
        raise TrainError("FSDP with LoRA is not supported: LoRA trains few parameters, so plain DDP (no --fsdp) "
                         "fits where FSDP would")
    if args.dry_run:
        print_plan(stages, config, out, args.data, args.model)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    clock = RunClock(out)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    tracker = closing.enter_context(tracking.session(report_to(config) if rank0 else "none", out))
    if rank0:
        write_run_info(out, args, config, stages)
        print(f">> metrics: loss.csv of each stage and {tracker.describe()}", flush=True)
    eval_settings = config.get("evaluate", {}) or {}
    evaluate = eval_settings.get("enabled")  # not set: evaluate when the data have a test split

    # --- data and base model; every input checked before anything trains ---
    check_clarity_spec(config.get("clarity", {}) or {})  # the settings first: before any data is made
    check_prefetch(config)
    if rank0:
        with clock.piece("data"):
            data_dir = make_data(config, args.data, out)
            export = is_export(data_dir)
            base = make_base_model(config, args.model, out, export)
    else:  # other DDP processes wait for rank 0 to generate the data and build the base model
        data_dir = Path(args.data or (config.get("data") or {}).get("dir") or out / "data")
        wait_for(data_dir / "meta.json")
        export = is_export(data_dir)
        base = base_model_path(config, args.model, out, export)
        wait_for(base / "config.json")
    if evaluate is None:
        from train.data import DataDir

        evaluate = DataDir(data_dir).source("Q1", "test") is not None
        if not evaluate and rank0:
            print(f">> no evaluation: {data_dir} has no test split (test_Q1.jsonl; an export of the app has none)",
                  flush=True)
    if export and (config.get("clarity") or {}).get("relabel"):  # the annotators' answers are the export's labels
        print(">> clarity.relabel is off on an export: its preference pairs are the annotators' own", flush=True)
        config["clarity"] = {**config["clarity"], "relabel": False}
    check_inputs(stages, data_dir, base, evaluate)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}

    # --- the stages ---
    expert = None
    if (out / "stage_0" / "DONE").is_file():  # its row names the expert it made or chose (the shipped one)
        expert = Path(json.loads((out / "stage_0" / "DONE").read_text()).get("model") or out / "stage_0" / "model")
    prefetch = None
    for stage in stages:
        folder = out / f"stage_{stage.id}"
        done = folder / "DONE"
        if done.is_file():
            print(f">> stage {stage.id} ({stage.what}): done, skipped")
            continue
        if stage.kind == "expert" and not rank0:  # one process trains the expert (one file set); the others wait
            wait_for(done)
            expert = Path(json.loads(done.read_text()).get("model") or folder / "model")
            continue
        start, starts = None, starts_from(stage, {s.id for s in stages}, out)
        if starts != stage.starts:
            print(f">> stage {stage.id} starts from the base model {base}: stage {stage.starts}, whose model it "
                  f"continues in the full recipe, is neither in this run nor done in {out}", flush=True)
        if starts:
            start = base if starts == "base" else out / f"stage_{starts}" / "model"
            if not (start / "config.json").is_file():
                raise TrainError(f"stage {stage.id} starts from stage {starts}, which has no model in {start}: "
                                 f"run it first (or use --from {starts})")
        stage_data = data_dir
        if set(stage.data) & set(CLARITY_KINDS) and (config.get("clarity", {}) or {}).get("relabel"):
            labeller = out / "stage_1" / "model"
            if not (labeller / "config.json").is_file():
                raise TrainError(f"stage {stage.id} reads clarity labels made by stage 1's model, and {labeller} "
                                 "has none: run stage 1 first")
            if rank0:
                with clock.piece("clarity labels"):
                    if prefetch is not None:
                        prefetch.join()
                    stage_data = make_clarity_data(config, out, labeller, eval_settings, expert, rank0)
            else:
                stage_data = out / "clarity_data"
                wait_for(stage_data / "RELABELLED")
        print(f">> stage {stage.id}: {stage.what}", flush=True)
        t0 = time.time()
        settings = stage_settings(config, stage)
        if export and settings.get("renders"):  # the app's photos come without the generator's or expert's renders
            print(f">> stage {stage.id}: renders={settings['renders']} is off on an export (its photos have no "
                  "renders)", flush=True)
            settings["renders"] = False
        if settings.get("renders") in ("expert", "both") and stage.kind != "expert":
            with clock.piece(f"stage {stage.id} expert renders"):
                make_expert_renders(stage_data, expert, settings.get("limit"), config, rank0)
        if rank0 and prefetch is None:
            prefetch = start_prefetch(stages, stage, config, out, data_dir, expert, eval_settings, evaluate)
        tracker.start_stage(stage.id, {"what": stage.what, "kind": stage.kind, "starts": starts, **settings})
        with clock.piece(f"stage {stage.id}"):
            model = run_stage(stage, settings, start, stage_data, folder)
        minutes = round((time.time() - t0) / 60, 2)
        row = {"what": stage.what, "minutes": minutes}
        if stage.kind == "expert":
            expert = model
            row["model"] = str(model)
        elif evaluate and rank0:
            with clock.piece(f"evaluate {stage.id}"):
                if prefetch is not None:
                    prefetch.join()
                fuse = fuses_after(stage, eval_settings)
                if eval_settings.get("expert", "learned") == "learned" and expert:  # the routed and fused photos'
                    make_expert_renders(data_dir, expert, None, config, rank0, "test")  # once: every stage reads them
                print(f">> evaluating stage {stage.id} on the test split", flush=True)
                row.update(evaluate_model(model, data_dir, expert, {**eval_settings, "fuse": fuse}))
        tracker.log({("time/" if key == "minutes" else "eval/") + key: value for key, value in row.items()})
        tracker.end_stage()
        if rank0:
            results[stage.id] = row
            write_results(out, results)
            folder.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(row) + "\n")
        print(f">> stage {stage.id} finished in {minutes} min: {json.dumps(row)}", flush=True)

    if prefetch is not None:
        prefetch.join()

    # --- the final model ---
    final_model = out / f"stage_{FINAL}" / "model"
    if rank0 and (final_model / "config.json").is_file():
        shutil.copytree(final_model, out / "final", dirs_exist_ok=True)
        print(f">> final model: {out / 'final'}   results: {out / 'results.md'}")
    if rank0:
        clock.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
