"""Stage 0: the 3D expert (occmllm.recon's occupancy network), trained on the dataset's photos and shapes; and the
renders of a dataset's photos made with the run's expert, which later stages and the evaluation read.

    python train/run_all.py --preset smoke --stages 0                            # in the recipe
    python -m train.expert --preset smoke --data DIR --out OUT [stages.0.steps=50 ...]   # alone: OUT/model
    (the same as: python -m occmllm.recon.train, with the preset's settings)
A dataset without shapes (e.g. an export from the app) cannot train it: the stage then uses the expert shipped in
occmllm/recon/weights and says so. `stages.0.expert` names an expert to use instead of training one, in the spelling
of the app and the command lines (occmllm.recon.expert_from_spec): `learned` (the shipped expert
occmllm.recon.experts.DEFAULT, trained on the GPU by occmllm.recon's own recipe), `learned:NAME` another shipped
one (SHIPPED), `learned:FOLDER` any trained expert; `none` (or leaving it out) trains one. The older `stages.0.shipped=true|v5|FOLDER`
is still read, with a message naming the new spelling.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from train.common import TrainError


def chosen_expert(settings: dict) -> tuple[str, object, str] | None:
    """(setting, its value, the expert spec) of the expert stage 0 uses instead of training one, taken out of
    `settings`; None to train one. `shipped: true|v5|FOLDER` is the older spelling of `expert: learned[:v5|:FOLDER]`."""
    expert, shipped = settings.pop("expert", None), settings.pop("shipped", None)
    if shipped is not None:  # given, it decides (an override of the older key on a preset with the new one)
        spec = "none" if shipped is False else "learned" if shipped is True else f"learned:{shipped}"
        print(f">> stages.0.shipped={shipped} is the older spelling of stages.0.expert={spec}", file=sys.stderr)
        return None if spec == "none" else ("shipped", shipped, spec)
    if expert in (None, False, "none"):
        return None
    return "expert", expert, str(expert)


def chosen_folder(settings: dict) -> tuple[Path, str] | None:
    """(weights folder, "stages.0.KEY=VALUE") of the expert stage 0 uses instead of training one, taken out of
    `settings`; None to train one. TrainError when the setting names no learned expert's weights."""
    chosen = chosen_expert(settings)
    if not chosen:
        return None
    from occmllm.recon.experts import SHIPPED, learned_weights

    key, value, spec = chosen
    try:
        folder = learned_weights(spec)
    except (ValueError, FileNotFoundError) as error:
        raise TrainError(f"stages.0.{key}={value}: {error}") from None
    if not (folder / "model.safetensors").is_file():
        shipped = ", ".join(f"learned:{name}" for name in SHIPPED)
        raise TrainError(f"stages.0.{key}={value}: {folder} holds no model.safetensors (expected learned, "
                         f"{shipped} or learned:FOLDER, a learned expert's folder)")
    return folder, f"stages.0.{key}={value}"


def preset_expert(config: dict) -> Path | None:
    """The 3D expert of a run or a stage that goes without stage 0 (`--stages 1 2`, `--from 2`, `python -m train.sft
    --stage 1`): the one the preset's stage 0 chooses (the default preset's `expert: learned:g2`), so that its renders
    and evaluations are those of the whole recipe; None (the shipped default expert) when stage 0 would train one."""
    chosen = chosen_folder(stage0_settings(config))
    if chosen:
        print(f">> 3D expert without stage 0: {chosen[0]} (the preset's {chosen[1]})", flush=True)
        return chosen[0]
    return None


def plan_expert(config: dict, out: Path, stage0_in_run: bool) -> str:
    """In words, which 3D expert a run renders and evaluates with (the dry run's plan): a finished stage 0's, else
    the one stage 0 chooses (preset_expert when stage 0 is not in the run), else one stage 0 trains or the shipped
    default."""
    from train.run_folder import finished_expert

    done = finished_expert(out)
    if done is not None:
        return f"{done} (stage 0 done in OUT)"
    chosen = chosen_expert(stage0_settings(config))
    if chosen:
        key, value, spec = chosen
        return f"{spec} (stages.0.{key}={value}{'' if stage0_in_run else '; stage 0 is not in this run'})"
    return "trained by stage 0" if stage0_in_run else \
        "learned, the shipped default (stage 0 would train one; not in this run)"


def stage0_settings(config: dict) -> dict:
    """A copy of the preset's stage-0 settings as written (chosen_expert takes its keys out)."""
    return dict((config.get("stages") or {}).get("0") or {})


def train_stage_expert(stage, settings: dict, start: Path | None, data_dir: Path, folder: Path) -> Path:
    """Train (or resume) the expert into `folder/model`; returns the folder LearnedExpert loads (the one `expert`
    names, or the shipped one when the data have no shapes). `start` is unused: the expert starts from its own weights."""
    import torch

    from occmllm.dataset import kind_folder
    from occmllm.recon.train import ExpertTrainConfig, train_expert

    settings = dict(settings)
    chosen = chosen_folder(settings)
    if chosen:
        folder, setting = chosen
        print(f">> stage 0: using the 3D expert {folder} ({setting})")
        return folder
    for key in ("parts", "lr_schedule", "weight_decay", "epochs"):  # the VLM stages' settings, if a preset has them
        settings.pop(key, None)
    if not kind_folder(data_dir, "train", "shapes").is_dir():
        from occmllm.recon.experts import WEIGHTS

        print(f">> {data_dir}/train/shapes not found: no shapes to train the 3D expert on; using the shipped "
              f"expert {WEIGHTS}")
        return Path(WEIGHTS)
    settings.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    try:
        config = ExpertTrainConfig.from_dict(settings)
    except ValueError as error:
        raise TrainError(f"stage 0: {error}") from None
    from train import tracking

    def log(values: dict, step: int) -> None:  # losses and grid IoU as expert/NAME in the run's tracker
        tracking.log(values, step, prefix="expert/")

    return store_as_shipped(Path(train_expert(data_dir, folder / "model", config, on_log=log)))


def store_as_shipped(model: Path) -> Path:
    """The trained expert rewritten in float16, as the shipped experts are stored (OccupancyNet.save_pretrained
    half=True), before anything renders with it: the renders the later stages learn from then come from the very file
    that ships with the model (train/ship_default.py matches an expert by its SHA-256), and `gpu_box.sh wait` brings
    back those bytes. Weights beyond float16's range stay in float32, with a message."""
    from occmllm.recon.model import OccupancyNet

    half = model.with_name(model.name + ".half")
    try:
        OccupancyNet.from_pretrained(model).save_pretrained(half, half=True)
    except ValueError as error:
        shutil.rmtree(half, ignore_errors=True)
        print(f">> stage 0: the 3D expert stays in float32: {error}", flush=True)
        return model
    for name in ("config.json", "model.safetensors"):
        os.replace(half / name, model / name)
    half.rmdir()
    print(f">> stage 0: the 3D expert stored in float16, as the shipped ones: {model}", flush=True)
    return model


def make_expert_renders(data_dir: Path, expert: Path | None, limit: int | None, config: dict, rank0: bool,
                        split: str = "train", background: bool = False) -> None:
    """The 3D expert's render of every photo of a split (the training photos a stage reads with `renders:
    expert|both`; the test photos for `evaluate.fuse`), made once by data_tools.expert_renders with the run's expert
    (stage 0's, else the shipped one), the network on the GPU when there is one; resumable. Other ranks wait.
    `background`: beside a GPU stage (train/prefetch.py): on the CPU, fewer processes, no progress bar."""
    from occmllm.dataset import EXPERT_RENDERS, kind_folder
    from occmllm.expert_renders import other_expert, render_split
    from train.run_folder import wait_for

    folder = kind_folder(data_dir, split, EXPERT_RENDERS)
    marker = folder / f"COMPLETE_{limit or 'all'}"
    if not rank0:
        wait_for(marker)
        return
    if marker.is_file() and json.loads(marker.read_text()).get("expert") == str(expert):
        return
    import torch

    workers = ((config.get("data") or {}).get("generate") or {}).get("workers") or os.cpu_count() or 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if background:
        from train.prefetch import background_workers

        workers, device = background_workers(), "cpu"
    photos = "training" if split == "train" else split
    where = f"{Path(data_dir).name}/{split} (in the background)" if background else f"the {photos} photos"
    print(f">> expert renders of {where}: {expert or 'the shipped expert'}, {workers} workers, "
          f"network on {device}", flush=True)
    t0 = time.time()
    try:
        # another run's expert made the renders in this data folder: they are derived data, made again for this run
        other = other_expert(Path(data_dir), split, str(expert) if expert else None)
        if other:
            print(f">> {folder} holds the renders of {other}: replaced by this run's expert's", flush=True)
        counts = render_split(Path(data_dir), split, str(expert) if expert else None, workers, limit, device=device,
                              progress=not background, overwrite=bool(other))
    except ValueError as error:
        raise TrainError(f"expert renders: {error}") from None
    print(f">> expert renders{' of ' + where if background else ''}: {counts} in {time.time() - t0:.1f} s",
          flush=True)
    if counts["rendered"] + counts["skipped"] == 0 and split == "train":  # (a test photo without: the route's answer)
        raise TrainError(f"expert renders: the 3D expert ({expert or 'shipped'}) reconstructed nothing on the "
                         f"{counts['nothing']} training photos of {data_dir}: `renders: expert|both` cannot be used "
                         f"with these photos (use renders: oracle, or an expert trained on such photos)")
    marker.write_text(json.dumps({"expert": str(expert), **counts}) + "\n")


def main(argv: list[str] | None = None) -> int:
    from train.recipe_config import run_one_stage

    return run_one_stage(train_stage_expert, "expert", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
