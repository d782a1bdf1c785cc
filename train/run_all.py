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

Each stage alone, with the preset's settings of that stage (train/recipe_config.py):
    python -m train.sft --preset smoke --stage 1 --data DIR --model START --out OUT     # also train.mpo, train.score
    python -m train.expert --preset smoke --data DIR --out OUT                          # stage 0

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
photo's render; train/evaluation.py); `evaluate.after=[2,4c]` evaluates after those stages only (each evaluation reads
every test photo; the default preset's seven take about 85 s of its 20 minutes).
A run started again skips the stages that have OUT/stage_X/DONE and continues the one that was running from its
last checkpoint. Bad data or a bad model folder stops the run before any training, with file:line.
A stage whose `starts` stage is neither in this run nor done in OUT starts from the base model, and says so (e.g.
`--stages 3a` alone: MPO on the base model). Data without a test split (an export) are not evaluated, with a note;
`evaluate.enabled=true` then stops the run, `false` skips evaluation on any data. On several processes rank 0
evaluates while the others wait at a barrier after the stage; `dist_timeout_minutes` (the real preset: 240) sets the
process group's timeout, NCCL's 10 minutes otherwise, which a long evaluation would exceed.
`global_batch` (in a stage's settings) fixes the samples per optimizer step whatever the number of processes:
grad_accum = global_batch / (batch_size x processes), an error when it does not divide (train/common.py).
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
where it answered Q1 wrongly; `route` (the default preset), "No." where it is least sure (train/clarity_labels.py);
otherwise they are the generator's visibility labels.
On a GPU, the work later steps need and the CPU can do (the test photos' expert renders, the clarity photos and their
renders) runs beside stage 1 (`prefetch: auto|true|false`; its output in OUT/prefetch.log; train/prefetch.py). The
whole run's wall clock, piece by piece, goes to OUT/timing.json and under the results table (train/run_folder.py).
`--time-limit SECONDS` (or `time_limit_s`) makes a run end in time on a box of any speed, e.g. a GPU lent for a fixed
time: each stage with a `time_budget_s` gets at most the time left less the later stages' budgets and
`time_limit_reserve_s` (default 120 s: encoding, clarity labels, MPO, SCoRe, evaluations), and says so; with
`stages.1.time_budget_s` set high, stage 1 takes whatever the limit leaves (train/run_folder.py:budget_within_limit).
Every stage logs its metrics (loss, learning rate, rewards, KL, the evaluation after it) to a tracker as well as to
its loss.csv: `--report-to trackio` (the default; OUT/trackio, dashboard `TRACKIO_DIR=OUT/trackio trackio show`),
`tensorboard` (OUT/tensorboard) or `none`, or the preset's `report_to` (train/tracking.py). results.md shows each
stage's loss curve and the metrics stage by stage as PNGs in OUT/plots (train/plots.py); OUT/run.json names the
preset, the command and the times, for the app's Runs tab (`python -m demo --runs DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python train/run_all.py` from anywhere
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from occmllm.runs import FINAL, stage_folder  # noqa: E402
from train import tracking  # noqa: E402
from train.clarity_labels import check_clarity_spec, clarity_data, reads_clarity_labels  # noqa: E402
from train.common import (TrainError, fsdp_requested, start_process_group, use_fsdp,  # noqa: E402
                          wait_for_all_ranks)
from train.evaluation import check_evaluate_after, evaluate_stage, evaluates, evaluates_after  # noqa: E402
from train.expert import make_expert_renders, plan_expert, preset_expert  # noqa: E402
from train.inputs import (base_model_path, check_inputs, data_folder, data_settings, is_export,  # noqa: E402
                          prepare_inputs, reads_expert_renders)
from train.prefetch import check_prefetch, start_prefetch  # noqa: E402
from train.recipe_config import Stage, load_config, report_to, stage_settings  # noqa: E402
from train.run_folder import (RunClock, budget_within_limit, finished_expert, is_done, mark_done,  # noqa: E402
                              read_results, start_model, starts_from, time_limit_reserve, wait_for, write_results,
                              write_run_info)

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
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="end the run within SECONDS of its start "
                        "(data included; a resumed run: of this process's start): every stage with a time_budget_s "
                        "gets at most what is left less the later stages' budgets and time_limit_reserve_s (the "
                        "preset's, else 120 s) for the work without a budget; with a large stages.1.time_budget_s, "
                        "stage 1 takes the rest of the time, however fast the box (the preset's time_limit_s "
                        "otherwise)")
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
    """The recipe, top to bottom: configuration, inputs, each stage (trained, evaluated, marked done), the final
    model."""
    # --- configuration ---
    config = load_config(args.preset, args.overrides, lora=args.lora, fsdp=args.fsdp, seed=args.seed,
                         report_to=args.report_to, time_limit_s=args.time_limit)
    out = Path(args.out or REPO / "runs" / Path(args.preset).stem)
    stages = stage_order(args.stages, args.start_from)
    if config.get("fsdp"):
        use_fsdp()
    if fsdp_requested() and config.get("lora"):
        raise TrainError("FSDP with LoRA is not supported: LoRA trains few parameters, so plain DDP (no --fsdp) "
                         "fits where FSDP would")
    check_evaluate_after(config.get("evaluate", {}) or {}, [s.id for s in STAGES])  # a typo stops even a dry run
    if args.dry_run:
        print_plan(stages, config, out, args.data, args.model)
        return 0
    start_process_group(config.get("dist_timeout_minutes"))  # multi-GPU: a rank may wait long for rank 0's work
    out.mkdir(parents=True, exist_ok=True)
    clock = RunClock(out)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with tracking.session(report_to(config) if rank0 else "none", out) as tracker:  # closed however the run ends
        if rank0:
            write_run_info(out, args, report_to(config), [s.id for s in stages])
            print(f">> metrics: loss.csv of each stage and {tracker.describe()}", flush=True)

        # --- data and base model (rank 0 makes them, other processes wait); every input checked before training ---
        check_clarity_spec(config.get("clarity", {}) or {})  # the settings first: before any data is made
        check_prefetch(config)
        with clock.piece("data"):
            data_dir, base, export = prepare_inputs(config, args.data, args.model, out, rank0)
        eval_settings = config.get("evaluate", {}) or {}
        # off too when evaluate.after names no stage of this run: no test renders made beside stage 1 for nothing
        evaluate = evaluates(eval_settings, data_dir, rank0) and any(evaluates_after(s, eval_settings) for s in stages)
        if export and (config.get("clarity") or {}).get("relabel"):  # the annotators' answers are the export's labels
            print(">> clarity.relabel is off on an export: its preference pairs are the annotators' own", flush=True)
            config["clarity"] = {**config["clarity"], "relabel": False}
        check_inputs(stages, data_dir, base, evaluate)
        results = read_results(out)

        # --- the stages ---
        expert = finished_expert(out)  # stage 0's DONE row names the expert it made or chose (the shipped one)
        if expert is None and not any(stage.kind == "expert" for stage in stages):
            expert = preset_expert(config)  # a run without stage 0 renders and evaluates with the preset's expert
        prefetch = None
        for index, stage in enumerate(stages):
            folder = stage_folder(out, stage.id)
            if is_done(out, stage.id):
                print(f">> stage {stage.id} ({stage.what}): done, skipped")
                continue
            if stage.kind == "expert" and not rank0:  # one process trains the expert (one file set); the others wait
                wait_for(folder / "DONE")
                expert = finished_expert(out)
                continue
            start, starts = start_model(stage, {s.id for s in stages}, base, out)
            stage_data = data_dir
            if reads_clarity_labels(stage, config):  # made by stage 1's model, after the work done beside it
                with clock.piece("clarity labels"):
                    if prefetch is not None:
                        prefetch.join()
                    stage_data = clarity_data(stage, config, out, expert, rank0)
            print(f">> stage {stage.id}: {stage.what}", flush=True)
            t0 = time.time()
            settings = data_settings(stage, stage_settings(config, stage), export)
            if reads_expert_renders(stage, settings):
                with clock.piece(f"stage {stage.id} expert renders"):
                    make_expert_renders(stage_data, expert, settings.get("limit"), config, rank0)
            if rank0 and prefetch is None:
                prefetch = start_prefetch(stages, stage, config, out, data_dir, expert, evaluate)
            cut = fit_time_budget(stage, settings, stages[index + 1:], config, out, clock)
            tracker.start_stage(stage.id, {"what": stage.what, "kind": stage.kind, "starts": starts, **settings})
            with clock.piece(f"stage {stage.id}"):
                model = run_stage(stage, settings, start, stage_data, folder)
            row = {"what": stage.what, "minutes": round((time.time() - t0) / 60, 2), **cut}
            if stage.kind == "expert":
                expert = model
                row["model"] = str(model)
            elif evaluate and rank0 and evaluates_after(stage, eval_settings):
                with clock.piece(f"evaluate {stage.id}"):
                    if prefetch is not None:
                        prefetch.join()
                    row.update(evaluate_stage(stage, model, data_dir, expert, config))
            tracker.log({("time/" if key == "minutes" else "eval/") + key: value for key, value in row.items()})
            tracker.end_stage()
            if rank0:
                results[stage.id] = row
                write_results(out, results)
                mark_done(out, stage.id, row)
            print(f">> stage {stage.id} finished in {row['minutes']} min: {json.dumps(row)}", flush=True)
            if stage.kind != "expert":  # (stage 0: only rank 0 gets here, the others went on after its DONE file)
                wait_for_all_ranks()  # the others wait here, not in the next stage's collectives, while rank 0 evaluates
        if prefetch is not None:
            prefetch.join()

        # --- the final model ---
        final_model = stage_folder(out, FINAL) / "model"
        if rank0 and (final_model / "config.json").is_file():
            shutil.copytree(final_model, out / "final", dirs_exist_ok=True)
            if expert is not None:  # the app and the command lines take the same expert with it (expert_for_model)
                from occmllm.expert_renders import record_model_expert

                record_model_expert(out / "final", f"learned:{expert}")
            print(f">> final model: {out / 'final'}   results: {out / 'results.md'}")
        if rank0:
            clock.finish()
    return 0


def fit_time_budget(stage: Stage, settings: dict, later: list[Stage], config: dict, out: Path, clock: RunClock
                    ) -> dict:
    """Under a time limit (--time-limit / time_limit_s), cut this stage's time_budget_s in `settings` to what the run
    has left (run_folder.budget_within_limit); returns {"time_budget_s": the cut budget} for its results row when it
    was cut, else {}. Under torchrun every process computes it from its own clock and stops at rank 0's step anyway
    (train.sft.Budget)."""
    limit, budget = config.get("time_limit_s"), settings.get("time_budget_s")
    if not limit or not budget:
        return {}
    later_budgets = sum(float(stage_settings(config, s).get("time_budget_s") or 0) for s in later
                        if not is_done(out, s.id))
    reserve = time_limit_reserve(config)
    elapsed = time.time() - clock.start
    fitted = round(budget_within_limit(float(budget), elapsed, float(limit), later_budgets, reserve), 1)
    if fitted >= budget:
        return {}
    print(f">> stage {stage.id}: time budget {budget:.0f} -> {fitted:.0f} s, to end within the time limit of "
          f"{limit:.0f} s ({elapsed:.0f} s gone; later stages' budgets {later_budgets:.0f} s, reserve {reserve:.0f} s)",
          flush=True)
    settings["time_budget_s"] = fitted
    return {"time_budget_s": fitted}


def stage_order(requested: list[str] | None, start_from: str | None) -> list[Stage]:
    ids = [s.id for s in STAGES]
    for stage_id in (requested or []) + ([start_from] if start_from else []):
        if stage_id not in BY_ID:
            raise TrainError(f"unknown stage {stage_id!r}; stages are {' '.join(ids)}")
    chosen = requested or ids
    if start_from:
        chosen = [i for i in chosen if ids.index(i) >= ids.index(start_from)]
    return [BY_ID[i] for i in ids if i in chosen]


def run_stage(stage: Stage, settings: dict, start: Path | None, data_dir: Path, folder: Path) -> Path:
    """Train one stage into `folder` with its module's trainer; returns its model folder (the expert's for stage 0)."""
    from train import expert, mpo, score, sft

    train_stage = {"expert": expert.train_stage_expert, "sft": sft.train_stage_sft, "mpo": mpo.train_stage_mpo,
                   "score": score.train_stage_score}[stage.kind]
    return train_stage(stage, settings, start, data_dir, folder)


def print_plan(stages: list[Stage], config: dict, out: Path, data: str | None, model: str | None) -> None:
    print(f"preset -> {out}")
    print(f"  data : {data or (config.get('data') or {}).get('dir') or 'generate: ' + json.dumps((config.get('data') or {}).get('generate', {}))}")
    base = base_model_path(config, model, out, is_export(data_folder(config, data, out)))
    print(f"  model: {base if base != out / 'base' else 'build default architecture: ' + json.dumps((config.get('model') or {}).get('build', {}))}")
    print(f"  track: {report_to(config)}")
    print(f"  lora : {bool(config.get('lora'))}   fsdp: {bool(config.get('fsdp'))}   prefetch: {config.get('prefetch', 'auto')}   seed: {config.get('seed', 0)}   evaluate: {json.dumps(config.get('evaluate', {}))}")
    clarity = config.get("clarity", {}) or {}
    rule = {"route": "route to 3D where stage 1 is least sure", "answer": "stage 1's answers"}.get(
        clarity.get("rule", "answer"), clarity.get("rule"))
    print("  clarity labels: " + (f"{rule}, on {clarity.get('n', 8000)} new photos (OUT/clarity_data)"
                                  if clarity.get("relabel") else "the generator's visibility labels"))
    print(f"  3D expert: {plan_expert(config, out, any(stage.kind == 'expert' for stage in stages))}")
    if config.get("time_limit_s"):
        print(f"  time limit: {config['time_limit_s']:.0f} s; time-budgeted stages cut to fit, with a reserve of "
              f"{time_limit_reserve(config):.0f} s for the rest")
    for stage in stages:
        done = " (done, skipped)" if is_done(out, stage.id) else ""
        settings = stage_settings(config, stage)
        starts = starts_from(stage, {s.id for s in stages}, out)
        print(f"  stage {stage.id:<3} {stage.kind:<6} {stage.what:<24} starts {starts or '-':<5} "
              f"data {','.join(stage.data) or 'photos+shapes':<8} {json.dumps(settings)}{done}")


if __name__ == "__main__":
    sys.exit(main())
