"""The evaluation after each stage (the preset's `evaluate` block): occmllm.evaluate on the test split, the paper's
Description / Reflection / Decision and the Decision on the photos with under 40% of the object visible, routed to the
run's 3D expert; `fuse: true` (or a list of stage ids) also decides on every photo and its render together;
`after: [stage ids]` evaluates after those stages only (default: after every stage).

    python train/run_all.py --preset smoke --out runs/smoke evaluate.fuse=[1,4c] evaluate.limit=16
"""

from __future__ import annotations

from pathlib import Path


def evaluates(eval_settings: dict, data_dir: Path, rank0: bool) -> bool:
    """`evaluate.enabled`, or when it is not set whether the data have a test split (an export of the app has none)."""
    enabled = eval_settings.get("enabled")
    if enabled is not None:
        return enabled
    from train.data import DataDir

    enabled = DataDir(data_dir).source("Q1", "test") is not None
    if not enabled and rank0:
        print(f">> no evaluation: {data_dir} has no test split (test_Q1.jsonl; an export of the app has none)",
              flush=True)
    return enabled


def evaluate_stage(stage, model: Path, data_dir: Path, expert: Path | None, config: dict) -> dict:
    """The results row of a stage's model: the learned expert's renders of the test photos made first (once: every
    stage reads them), then the evaluation, fused after the stages `evaluate.fuse` names."""
    from train.expert import make_expert_renders

    eval_settings = config.get("evaluate", {}) or {}
    fuse = fuses_after(stage, eval_settings)
    if eval_settings.get("expert", "learned") == "learned" and expert:  # the routed and fused photos' renders
        make_expert_renders(data_dir, expert, None, config, True, "test")
    print(f">> evaluating stage {stage.id} on the test split", flush=True)
    return evaluate_model(model, data_dir, expert, {**eval_settings, "fuse": fuse})


def stage_ids(value) -> set[str]:
    """A setting that names stages (`evaluate.after`, `evaluate.fuse`) as a set of ids: a list, or one id alone."""
    return {str(s) for s in value} if isinstance(value, (list, tuple)) else {str(value)}


def evaluates_after(stage, eval_settings: dict) -> bool:
    """Whether the model of `stage` is evaluated: after every stage, or with `evaluate.after` (stage ids) only after
    those (each evaluation reads every test photo; the others' rows keep their time and no scores)."""
    after = eval_settings.get("after")
    return after is None or stage.id in stage_ids(after)


def check_evaluate_after(eval_settings: dict, recipe_ids: list[str]) -> None:
    """`evaluate.after` names stages of the recipe, else a TrainError before anything runs."""
    from train.common import TrainError

    after = eval_settings.get("after")
    if after is None:
        return
    if not isinstance(after, (list, tuple, str, int)) or isinstance(after, bool):
        raise TrainError(f"evaluate.after: {after!r} is not a list of stage ids (e.g. evaluate.after=[2,4c])")
    unknown = sorted(stage_ids(after) - set(recipe_ids))
    if unknown:
        raise TrainError(f"evaluate.after names {', '.join(unknown)}, not a stage of the recipe "
                         f"({', '.join(recipe_ids)})")


def fuses_after(stage, eval_settings: dict) -> bool:
    """Whether the evaluation after `stage` also fuses photo and render: `evaluate.fuse` true, or a list of stage
    ids."""
    fuse = eval_settings.get("fuse")
    if isinstance(fuse, (list, tuple)):
        return stage.id in stage_ids(fuse)
    return bool(fuse)


def evaluation_expert(route: str, expert: Path | None, data_dir: Path):
    """The 3D expert the evaluation routes to: `oracle`, `learned` (the run's expert; its precomputed renders of
    the test photos when make_expert_renders wrote them for this expert: the same images, made once), or None."""
    if route == "oracle":
        from occmllm.recon import OracleExpert

        return OracleExpert(data_dir, "test")
    if route != "learned" or expert is None or not (Path(expert) / "config.json").is_file():
        return None
    import json

    from occmllm.dataset import EXPERT_RENDERS, kind_folder

    marker = kind_folder(data_dir, "test", EXPERT_RENDERS) / "COMPLETE_all"
    if marker.is_file() and json.loads(marker.read_text()).get("expert") == str(expert):
        from occmllm.recon import FolderExpert

        return FolderExpert(marker.parent)
    from occmllm.recon import LearnedExpert

    return LearnedExpert(expert)


def evaluate_model(model: Path, data_dir: Path, expert: Path | None, settings: dict) -> dict:
    """occmllm.evaluate on the test split: the paper's three scores and Decision under 40% visible."""
    from occmllm import metrics
    from occmllm.dataset import manifest_rows
    from occmllm.evaluate import evaluate, read_test_set
    from occmllm.vlm import VLM
    from train.data import DataDir

    source = DataDir(data_dir).require("Q1", "test")
    items = read_test_set(source.annotation, source.image_root)[: settings.get("limit")]
    vlm = VLM.load(model)
    expert_model = evaluation_expert(settings.get("expert", "learned"), expert, data_dir)
    fuse = bool(settings.get("fuse")) and expert_model is not None  # (fuses_after() has picked the stages)
    results, records = evaluate(vlm, items, expert=expert_model, batch_size=settings.get("batch_size", 32),
                                manifest=manifest_rows(Path(source.image_root).parent), progress=True, fuse=fuse)
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
        row.update(decision_fused=fused["decision"],
                   decision_fused_visible_under_40=fused["visible_under_40"]["decision"])
    return row
