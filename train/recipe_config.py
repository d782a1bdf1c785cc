"""The recipe's settings: a preset (train/configs/NAME.yaml or a path), `key=value` overrides, and one stage's settings.

    python train/run_all.py --preset smoke --dry-run stages.1.epochs=3 sft.batch_size=4   # every stage's settings
    python -m train.sft --preset smoke --stage 1 --data DIR --model START --out OUT stages.1.epochs=3  # one stage alone
A stage's settings are the seed's table (train/run_all.py:STAGES) < the preset's block of its kind (`sft`, `mpo`,
`score`, `expert`) < the preset's `stages.ID` block; its trainer takes them as its dataclass config (SFTConfig,
MPOConfig, SCoReConfig; occmllm.recon.train.ExpertTrainConfig for stage 0), an unknown key being an error. Numbers
may be written 3e-4.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from train import tracking
from train.common import TrainError

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class Stage:
    """One row of the recipe's table (train/run_all.py:STAGES)."""

    id: str
    kind: str  # expert | sft | mpo | score
    what: str
    data: tuple[str, ...] = ()  # data kinds (train.data.KINDS)
    parts: tuple[str, ...] = ()
    starts: str | None = None  # the stage whose model this one continues ("base" = the base model)
    epochs: float = 1
    lr: float = 4e-5
    weight_decay: float = 0.01


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


def load_config(preset: str, overrides: list[str], **flags) -> dict:
    """The preset with its overrides applied, then the command line's flags that are set (lora, fsdp, seed,
    report_to: not None or False); the tracker is checked here, before anything is made."""
    config = load_preset(preset)
    for override in overrides:
        apply_override(config, override)
    config.update({key: value for key, value in flags.items() if value is not None and value is not False})
    report_to(config)
    return config


def report_to(config: dict) -> str:
    """The tracker of a run: --report-to (set into the config), the preset's `report_to`, else trackio."""
    return tracking.check_report_to(config.get("report_to", tracking.DEFAULT))


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


def settings_as(cls, settings: dict):
    """`cls(**settings)` for a trainer's dataclass config, an unknown key being a TrainError that names the known."""
    names = {f.name for f in fields(cls)}
    unknown = set(settings) - names
    if unknown:
        raise TrainError(f"unknown setting(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(names)}")
    return cls(**settings)


def run_one_stage(train_stage, kind: str, doc: str, argv: list[str] | None = None) -> int:
    """The command line of one stage alone (each stage module's main): the preset's settings of `--stage` as the
    recipe passes them, trained by `train_stage(stage, settings, start, data_dir, folder)` from --model on --data
    into --out (the model in OUT/model)."""
    from train.expert import make_expert_renders, preset_expert
    from train.inputs import check_inputs, data_settings, is_export, reads_expert_renders
    from train.run_all import STAGES

    ids = [s.id for s in STAGES if s.kind == kind]
    parser = argparse.ArgumentParser(prog=f"python -m train.{kind}",
                                     description=doc.split("\n")[0], epilog=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke", help="train/configs/NAME.yaml (smoke, default, real, "
                        "annotations) or a path")
    parser.add_argument("--stage", default=ids[0], choices=ids, help=f"whose settings and data (default {ids[0]})")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with meta.json (data_tools.synth's "
                        "or the app's export)")
    parser.add_argument("--model", type=Path, required=kind != "expert", help="the model to start from")
    parser.add_argument("--out", type=Path, required=True, help="output folder: OUT/model, loss.csv, checkpoints "
                        "(a rerun resumes)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. stages.1.epochs=3 sft.batch_size=4")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stage = next(s for s in STAGES if s.id == args.stage)
    try:
        config = load_config(args.preset, args.overrides)
        settings = data_settings(stage, stage_settings(config, stage), is_export(args.data))
        if kind != "expert":
            check_inputs([stage], args.data, args.model, evaluate=False)
        if reads_expert_renders(stage, settings):  # the preset's expert's, as the recipe makes them without stage 0
            make_expert_renders(args.data, preset_expert(config), settings.get("limit"), config, rank0=True)
        model = train_stage(stage, settings, args.model, args.data, args.out)
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f">> stage {stage.id} ({stage.what}): {model}")
    return 0
